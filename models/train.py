"""Train a spiking network on scikit-learn's 8x8 digits, prune it and save a checkpoint.

The dataset ships inside scikit-learn (``sklearn.datasets.load_digits``: 1,797 images of 8x8
pixels, intensities 0..16), so nothing is downloaded. The split is fixed: ``train_test_split(
test_size=0.2, random_state=0, stratify=labels)``, which gives 1,437 training and 360 test
samples. Intensities are divided by 16 into ``[0, 1]`` and encoded by :mod:`models.encoders`.

Training has two phases on CPU, seeded (the same options and thread count give the same
checkpoint):

1. dense: ``epochs`` epochs of Adam on snnTorch's ``mse_count_loss`` (the correct class should
   fire on ``correct_rate`` of the steps, the others on ``incorrect_rate``), with the leak
   already snapped to its integer form (:func:`models.quantize.snap_leak`);
2. sparse: ``prune_epochs`` epochs of fine-tuning (Adam at half the rate) while magnitude
   pruning raises the weight sparsity to ``sparsity`` on a cubic schedule over the first half
   (Zhu and Gupta's gradual pruning), the second half fine-tuning the final mask. The sparsity
   is per layer (``prune_scope="layer"``) or of all weights ranked together (``"global"``).

A synapse feeding ``snn.Lapicque`` (input gain ``g = T/C``) starts from ``W / g`` and learns at
``lr / g`` (:func:`compensate_gain`), so that Lapicque and Leaky layers move their membranes
alike; the neuron model itself is snnTorch's, unchanged.

The training samples are re-encoded every epoch (a fresh rate-coding draw); the test split is
encoded once with ``test_seed``, the same events :mod:`models.export` writes into the bundle.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from snntorch import functional as SF

from . import encoders
from .nets import NetConfig, SpikingNet
from .quantize import (
    PRUNE_SCOPES,
    finish_pruning,
    gain_and_decay,
    prune_step,
    snap_leak,
    weight_sparsity,
)
from .quantize import check_options as check_quant_options

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "TrainConfig",
    "encode_split",
    "evaluate",
    "load_checkpoint",
    "load_digits_split",
    "run_sweep",
    "save_checkpoint",
    "train",
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


@torch.no_grad()
def compensate_gain(net: SpikingNet):
    """Scale each synapse's initial weights by ``1/g`` (``g``: its neuron's input gain).

    ``snn.Lapicque`` multiplies its input by ``g = T/C`` (``1 - decay`` for R = 1, about 0.1
    for beta = 0.9); with PyTorch's default initialisation its membrane would barely move and
    training would crawl. Starting from ``W / g`` gives the same initial membrane dynamics as a
    Leaky layer. Returns ``{name: g}``.
    """
    gains = {}
    for name, synapse in net.synapses.items():
        gains[name], _ = gain_and_decay(net.neurons[name])
        for param in synapse.parameters():
            param.div_(gains[name])
    return gains


def _cubic(step, steps, target):
    return target * (1 - (1 - step / steps) ** 3)


def train(ncfg: NetConfig, tcfg: TrainConfig, *, progress=None):
    """Train, prune and evaluate a network; return ``(net, metrics)``.

    ``progress`` is called with one line of text per epoch (default: print to stderr).
    """
    tcfg.check()
    if progress is None:
        def progress(line):
            print(line, file=sys.stderr, flush=True)
    torch.set_num_threads(tcfg.threads)
    torch.manual_seed(tcfg.seed)
    x_train, y_train, x_test, y_test = load_digits_split()
    net = SpikingNet(ncfg)
    leaks = snap_leak(net, tcfg.leak, tcfg.frac_bits, tcfg.potential_bits)
    loss_fn = SF.mse_count_loss(correct_rate=tcfg.correct_rate,
                                incorrect_rate=tcfg.incorrect_rate)
    x_test_enc = encode_split(x_test, tcfg, tcfg.test_seed)
    y_train_t = torch.as_tensor(y_train)
    shuffle = torch.Generator().manual_seed(tcfg.seed)
    history = []
    started, cpu_started = time.perf_counter(), time.process_time()
    dense_metrics = None
    gains = compensate_gain(net)
    phases = [("dense", tcfg.epochs, tcfg.lr), ("prune", tcfg.prune_epochs, tcfg.lr / 2)]
    epoch_index = 0
    for phase, epochs, lr in phases:
        if epochs == 0:
            continue
        if phase == "prune":
            dense_metrics = evaluate(net, x_test_enc, y_test)
        # Adam moves every parameter by about lr per step whatever its gradient's scale; a
        # synapse behind an input gain g moves the membrane by g times that, so its learning
        # rate is lr / g (for Lapicque, g = T/C; for Leaky, g = 1).
        optimiser = torch.optim.Adam([{"params": list(net.synapses[name].parameters()),
                                       "lr": lr / gains[name]} for name in net.synapses], lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
        ramp = max(1, math.ceil(epochs / 2))
        for epoch in range(epochs):
            t0 = time.perf_counter()
            if phase == "prune" and tcfg.sparsity > 0:
                prune_step(net, _cubic(min(epoch + 1, ramp), ramp, tcfg.sparsity),
                           tcfg.prune_scope)
            net.train()
            x_enc = encode_split(x_train, tcfg, tcfg.seed * 100003 + epoch_index)
            order = torch.randperm(x_enc.shape[1], generator=shuffle)
            total, count = 0.0, 0
            for lo in range(0, len(order), tcfg.batch):
                idx = order[lo:lo + tcfg.batch]
                out = net(x_enc[:, idx])
                loss = loss_fn(out, y_train_t[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            schedule.step()
            test = evaluate(net, x_test_enc, y_test)
            entry = {"phase": phase, "epoch": epoch_index + 1, "loss": total / count,
                     "test_accuracy": test["accuracy"],
                     "spikes_per_inference": test["spikes_total_per_inference"],
                     "weight_sparsity": weight_sparsity(net, total=True),
                     "seconds": time.perf_counter() - t0}
            history.append(entry)
            epoch_index += 1
            progress(f"{phase} epoch {epoch + 1}/{epochs}: loss {entry['loss']:.4f}, "
                     f"test {100 * entry['test_accuracy']:.2f}%, "
                     f"{entry['spikes_per_inference']:.0f} spikes/inference, "
                     f"sparsity {entry['weight_sparsity']:.3f}, {entry['seconds']:.1f} s")
    finish_pruning(net)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    final = evaluate(net, x_test_enc, y_test)
    if dense_metrics is None:
        dense_metrics = final
    metrics = {
        "train_seconds": seconds, "train_cpu_seconds": cpu_seconds,
        "load_average": list(os.getloadavg()),
        "train_samples": len(y_train), "test_samples": len(y_test),
        "dense_accuracy": dense_metrics["accuracy"],
        "float_accuracy": final["accuracy"],
        "spikes_per_inference": final["spikes_per_inference"],
        "spikes_total_per_inference": final["spikes_total_per_inference"],
        "input_events_per_inference": final["input_events_per_inference"],
        "weight_sparsity": weight_sparsity(net),
        "weight_sparsity_total": weight_sparsity(net, total=True),
        "leak": {name: lk.to_json() for name, lk in leaks.items()},
        "history": history,
    }
    return net, metrics


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


def run_sweep(ncfg: NetConfig, tcfg: TrainConfig, *, neurons=("lif", "lapicque"),
              betas=(0.5, 0.7, 0.8, 0.9, 0.95), thresholds=(0.5, 1.0, 2.0, 4.0), out,
              plot=None, weight_bits=8, progress=None):
    """Train one network per (neuron, beta, threshold); record accuracy and spikes.

    Every point is trained with ``tcfg`` (short and dense by default), then quantized to
    ``weight_bits`` and run through the golden model on the test split. Writes
    ``out/sweep.json`` and ``out/sweep.png`` (and ``plot`` if given); returns the points.
    Lapicque points with beta below 1/e have a negative decay in snnTorch and are skipped.
    """
    from dataclasses import replace

    from .export import build_bundle, write_metrics
    from .nets import check_config

    tcfg.check()
    if progress is None:
        def progress(line):
            print(line, file=sys.stderr, flush=True)
    for neuron in neurons:
        check_config(replace(ncfg, neuron=neuron, beta=0.9))
    for beta in betas:
        check_config(replace(ncfg, neuron="lif", beta=beta))
    for theta in thresholds:
        check_config(replace(ncfg, threshold=theta))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = []
    total = len(neurons) * len(betas) * len(thresholds)
    for neuron in neurons:
        for beta in betas:
            for theta in thresholds:
                if neuron == "lapicque" and beta < math.exp(-1):
                    continue
                cfg = replace(ncfg, neuron=neuron, beta=beta, threshold=theta)
                net, metrics = train(cfg, tcfg, progress=lambda line: None)
                _, gm = build_bundle(net, tcfg, weight_bits=weight_bits, train_metrics=metrics)
                point = {"neuron": neuron, "beta": beta, "threshold": theta,
                         "float_accuracy": metrics["float_accuracy"],
                         "golden_accuracy": gm["golden_accuracy"],
                         "agreement": gm["agreement"],
                         "spikes_per_inference": metrics["spikes_total_per_inference"],
                         "golden_spikes_per_inference": gm["spikes_total_per_inference"]["golden"],
                         "train_seconds": metrics["train_seconds"]}
                points.append(point)
                progress(f"[{len(points)}/{total}] {neuron} beta {beta} threshold {theta}: "
                         f"float {100 * point['float_accuracy']:.2f}%, golden "
                         f"{100 * point['golden_accuracy']:.2f}%, "
                         f"{point['spikes_per_inference']:.0f} spikes/inference")
    summary = {"net": ncfg.to_dict(), "train": asdict(tcfg), "weight_bits": weight_bits,
               "points": points}
    write_metrics(out / "sweep.json", summary)
    for path in [out / "sweep.png"] + ([Path(plot)] if plot else []):
        plot_sweep(points, path, title=f"{ncfg.arch}, {tcfg.encoding} input, {tcfg.steps} steps,"
                                       f" {tcfg.epochs} epochs")
    return points


def plot_sweep(points, path, *, title=""):
    """Heatmaps of accuracy and spikes per inference over beta x threshold, one row per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    neurons = sorted({p["neuron"] for p in points}, key=["lif", "lapicque"].index)
    fig, axes = plt.subplots(len(neurons), 2, figsize=(10, 3.6 * len(neurons)), squeeze=False)
    for row, neuron in enumerate(neurons):
        pts = [p for p in points if p["neuron"] == neuron]
        betas = sorted({p["beta"] for p in pts})
        thetas = sorted({p["threshold"] for p in pts})
        for col, (key, label, fmt) in enumerate((
                ("golden_accuracy", "golden accuracy (%)", "{:.1f}"),
                ("golden_spikes_per_inference", "spikes per inference", "{:.0f}"))):
            grid = np.full((len(betas), len(thetas)), np.nan)
            for p in pts:
                value = p[key] * (100 if key.endswith("accuracy") else 1)
                grid[betas.index(p["beta"]), thetas.index(p["threshold"])] = value
            ax = axes[row][col]
            im = ax.imshow(grid, origin="lower", aspect="auto",
                           cmap="viridis" if col == 0 else "magma_r")
            ax.set_xticks(range(len(thetas)), [f"{t:g}" for t in thetas])
            ax.set_yticks(range(len(betas)), [f"{b:g}" for b in betas])
            ax.set_xlabel("threshold")
            ax.set_ylabel("beta")
            ax.set_title(f"{neuron}: {label}")
            lo, hi = np.nanmin(grid), np.nanmax(grid)
            for (i, j), value in np.ndenumerate(grid):
                if not np.isnan(value):
                    # Light text on the dark end of each colour map (low for viridis, high
                    # for magma_r).
                    level = (value - lo) / (hi - lo) if hi > lo else 0.5
                    dark = level < 0.5 if col == 0 else level > 0.5
                    ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
            fig.colorbar(im, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Fixed metadata so that the same sweep gives the same bytes.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
