"""What training and export share: the digits data set, its encoding, and checkpoints.

The dataset ships inside scikit-learn (``sklearn.datasets.load_digits``: 1,797 images of 8x8
pixels, intensities 0..16), so nothing is downloaded. The split is fixed: ``train_test_split(
test_size=0.2, random_state=0, stratify=labels)``, which gives 1,437 training and 360 test
samples. Intensities are divided by 16 into ``[0, 1]`` and encoded by :mod:`models.encoders`
with a run's :class:`TrainConfig` (:func:`encode_split`); :func:`evaluate` gives the float
network's figures on encoded samples.

:mod:`models.train` writes a checkpoint (:func:`save_checkpoint`: the network and training
options, the pruned float weights, the training metrics) and :mod:`models.export` reads it back
(:func:`load_checkpoint`); the test split is encoded with the checkpoint's ``test_seed`` on
both sides, so the events export writes into a bundle are the ones training evaluated on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import encoders
from .nets import NetConfig, SpikingNet
from .quantize import PRUNE_SCOPES, snap_leak
from .quantize import check_options as check_quant_options

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "TrainConfig",
    "encode_split",
    "evaluate",
    "load_checkpoint",
    "load_digits_split",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "snn-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


@dataclass
class TrainConfig:
    """Encoding, optimisation, pruning and leak options (all stored in the checkpoint)."""
    encoding: str = "rate"
    steps: int = 25
    direct_bits: int = 4
    delta_threshold: float = 0.25
    epochs: int = 20
    prune_epochs: int = 10
    batch: int = 64
    lr: float = 5e-3
    correct_rate: float = 0.8
    incorrect_rate: float = 0.1
    sparsity: float = 0.75
    prune_scope: str = "layer"
    leak: str = "mul"
    frac_bits: int = 8
    potential_bits: int = 16
    seed: int = 0
    test_seed: int = 1
    threads: int = 1

    def check(self):
        """Raise ``ValueError`` naming the bad value if an option is out of range."""
        encoders.check_options(self.encoding, steps=self.steps, bits=self.direct_bits,
                               threshold=self.delta_threshold)
        check_quant_options(potential_bits=self.potential_bits, leak=self.leak,
                            frac_bits=self.frac_bits, sparsity=self.sparsity)
        if self.prune_scope not in PRUNE_SCOPES:
            raise ValueError(f"Prune scope must be one of {', '.join(PRUNE_SCOPES)}, "
                             f"not {self.prune_scope!r}")
        for name, lo, hi in (("epochs", 0, 10000), ("prune_epochs", 0, 10000),
                             ("batch", 1, 100000), ("threads", 1, 256),
                             ("seed", 0, 2 ** 31 - 1), ("test_seed", 0, 2 ** 31 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name.replace('_', ' ').capitalize()} must be an integer in "
                                 f"[{lo}, {hi}], not {value!r}")
        if self.epochs + self.prune_epochs < 1:
            raise ValueError("Epochs plus prune epochs must be at least 1, not 0")
        if self.sparsity > 0 and self.prune_epochs < 1:
            raise ValueError(f"Sparsity {self.sparsity} needs at least one prune epoch, not "
                             f"{self.prune_epochs}")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr <= 1):
            raise ValueError(f"Learning rate must be in (0, 1], not {self.lr!r}")
        for name in ("correct_rate", "incorrect_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"{name.replace('_', ' ').capitalize()} must be in [0, 1], "
                                 f"not {value!r}")
        return self


def load_digits_split():
    """The fixed digits split: ``(x_train, y_train, x_test, y_test)``, images ``[N, 1, 8, 8]``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.2,
                                                        random_state=0, stratify=labels)
    return x_train, y_train, x_test, y_test


def encode_split(images, tcfg: TrainConfig, seed):
    """Encode images ``[N, 1, 8, 8]`` with the checkpoint's encoder: ``[T, N, 1, 8, 8]``."""
    return encoders.encode(torch.as_tensor(images), tcfg.encoding, steps=tcfg.steps,
                           bits=tcfg.direct_bits, threshold=tcfg.delta_threshold, seed=seed)


@torch.no_grad()
def evaluate(net: SpikingNet, x, y=None, *, batch=512):
    """Run ``net`` on encoded inputs ``x`` ``[T, N, ...]``.

    Returns a dict: ``predictions`` (argmax of output spike counts, ties to the lowest index),
    ``accuracy`` (if labels ``y`` are given), ``spikes_per_inference`` (mean spikes per sample
    of every neuron layer over all steps) and ``input_events_per_inference``.
    """
    net.eval()
    preds, totals = [], None
    names = [stage.name for stage in net.stages]
    for lo in range(0, x.shape[1], batch):
        trace = net(x[:, lo:lo + batch], record=True)
        preds.append(trace[-1].sum(0).argmax(1))
        sums = [float(t.sum()) for t in trace]
        totals = sums if totals is None else [a + b for a, b in zip(totals, sums)]
    n = x.shape[1]
    preds = torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)
    neuron = {stage.name for stage in net.neuron_stages}
    result = {"predictions": preds,
              "spikes_per_inference": {name: total / n for name, total in zip(names, totals)
                                       if name in neuron},
              "input_events_per_inference": float((x != 0).sum()) / n}
    result["spikes_total_per_inference"] = sum(result["spikes_per_inference"].values())
    if y is not None:
        result["accuracy"] = float((preds == np.asarray(y)).mean())
    return result



def save_checkpoint(path, net: SpikingNet, tcfg: TrainConfig, metrics):
    """Write a checkpoint: configs, float weights (pruned), metrics. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().clone() for key, value in net.state_dict().items()}
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "net": net.cfg.to_dict(), "train": asdict(tcfg), "state_dict": state,
                "metrics": _plain(metrics)}, path)
    return path


def _plain(obj):
    """Metrics as JSON-friendly Python values (numpy arrays and scalars converted)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def load_checkpoint(path):
    """Read a checkpoint; return ``(net, tcfg, metrics)`` or raise :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch raises many kinds for a corrupt file)
        text = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        raise CheckpointError(f"{path}: is not a readable torch checkpoint ({reason})") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: format must be {CHECKPOINT_FORMAT!r}, not {found!r}")
    if obj.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: version must be {CHECKPOINT_VERSION}, "
                              f"not {obj.get('version')!r}")
    for key in ("net", "train", "state_dict"):
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"{path}: {key!r} is missing or not a mapping")
    try:
        ncfg = NetConfig.from_dict(obj["net"])
        known = TrainConfig.__dataclass_fields__
        tcfg = TrainConfig(**{k: v for k, v in obj["train"].items() if k in known}).check()
        net = SpikingNet(ncfg)
        snap_leak(net, tcfg.leak, tcfg.frac_bits, tcfg.potential_bits)
        net.load_state_dict(obj["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: {reason}") from None
    return net, tcfg, obj.get("metrics", {})
