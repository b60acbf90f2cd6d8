"""Read, write and validate bundles (DESIGN.md section 4, a contract).

A bundle is a folder with ``bundle.json`` (the network's structure and fixed-point parameters),
``weights.npz`` (signed integer weights and biases) and optionally ``vectors.npz`` (input events
and the golden spikes of the last layer). Every tool goes through this module; a malformed bundle
is rejected with a one-line :class:`BundleError` naming the offending field.

This module imports numpy only: the hardware generator uses it without torch.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "BundleError", "Leak", "Neuron", "Layer", "InputSpec", "Vectors", "Bundle",
    "load", "save", "FORMAT", "VERSION",
]

FORMAT = "snn-bundle"
VERSION = 1

KINDS = ("linear", "conv2d", "spike_pool", "flatten")
MODELS = ("lif", "lapicque")
RESETS = ("subtract", "zero", "none")
LEAKS = ("mul", "shift")
ENCODINGS = ("rate", "delta", "direct", "latency", "raw")
MAX_POTENTIAL_BITS = 32
MAX_FRAC_BITS = 16
MAX_WEIGHT_BITS = 16
MAX_INPUT_BITS = 16


class BundleError(ValueError):
    """A bundle that does not follow the contract; the message names the field."""


def _fail(where, message):
    raise BundleError(f"{where}: {message}")


def _int(where, value, *, lo=None, hi=None):
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(where, f"must be an integer, not {value!r}")
    if lo is not None and value < lo:
        _fail(where, f"must be at least {lo}, not {value!r}")
    if hi is not None and value > hi:
        _fail(where, f"must be at most {hi}, not {value!r}")
    return value


def _choice(where, value, allowed):
    if value not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        _fail(where, f"must be one of {names}, not {value!r}")
    return value


def _get(where, obj, key):
    if not isinstance(obj, dict):
        _fail(where, f"must be an object, not {type(obj).__name__}")
    if key not in obj:
        _fail(f"{where}.{key}", "is missing")
    return obj[key]


@dataclass(frozen=True)
class Leak:
    """Membrane leak: ``mul`` (``(u * beta) >> frac_bits``) or ``shift`` (``u - (u >> shift)``)."""
    mode: str
    beta: int | None = None
    frac_bits: int | None = None
    shift: int | None = None

    def to_json(self):
        if self.mode == "mul":
            return {"mode": "mul", "beta": self.beta, "frac_bits": self.frac_bits}
        return {"mode": "shift", "shift": self.shift}

    @classmethod
    def from_json(cls, where, obj, potential_bits):
        mode = _choice(f"{where}.mode", _get(where, obj, "mode"), LEAKS)
        if mode == "mul":
            frac_bits = _int(f"{where}.frac_bits", _get(where, obj, "frac_bits"),
                             lo=0, hi=MAX_FRAC_BITS)
            beta = _int(f"{where}.beta", _get(where, obj, "beta"), lo=0, hi=2 ** frac_bits)
            return cls("mul", beta=beta, frac_bits=frac_bits)
        shift = _int(f"{where}.shift", _get(where, obj, "shift"), lo=1, hi=potential_bits - 1)
        return cls("shift", shift=shift)

    @property
    def beta_float(self):
        """The decay factor this leak approximates."""
        if self.mode == "mul":
            return self.beta / 2 ** self.frac_bits
        return 1 - 2.0 ** -self.shift


@dataclass(frozen=True)
class Neuron:
    """Neuron parameters of one layer (DESIGN.md section 3)."""
    model: str = "lif"
    reset: str = "subtract"
    threshold: int = 64
    potential_bits: int = 16
    leak: Leak = field(default_factory=lambda: Leak("shift", shift=4))

    def to_json(self):
        return {"model": self.model, "reset": self.reset, "threshold": self.threshold,
                "potential_bits": self.potential_bits, "leak": self.leak.to_json()}

    @classmethod
    def from_json(cls, where, obj):
        model = _choice(f"{where}.model", _get(where, obj, "model"), MODELS)
        reset = _choice(f"{where}.reset", _get(where, obj, "reset"), RESETS)
        pbits = _int(f"{where}.potential_bits", _get(where, obj, "potential_bits"),
                     lo=2, hi=MAX_POTENTIAL_BITS)
        threshold = _int(f"{where}.threshold", _get(where, obj, "threshold"),
                         lo=0, hi=2 ** (pbits - 1) - 1)
        leak = Leak.from_json(f"{where}.leak", _get(where, obj, "leak"), pbits)
        return cls(model, reset, threshold, pbits, leak)

    @property
    def lo(self):
        return -2 ** (self.potential_bits - 1)

    @property
    def hi(self):
        return 2 ** (self.potential_bits - 1) - 1


@dataclass
class Layer:
    """One layer. ``in_shape``/``out_shape`` are tuples: ``(n,)`` or ``(C, H, W)``."""
    name: str
    kind: str
    in_shape: tuple
    out_shape: tuple
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    weight_bits: int | None = None
    neuron: Neuron | None = None
    kernel: int | None = None
    stride: int = 1
    padding: int = 0

    @property
    def n_in(self):
        return math.prod(self.in_shape)

    @property
    def n_out(self):
        return math.prod(self.out_shape)

    @property
    def has_neurons(self):
        return self.kind in ("linear", "conv2d")

    def bias_vector(self):
        """The bias of every output neuron (zeros where the layer has none), int64 ``[n_out]``."""
        if self.bias is None:
            return np.zeros(self.n_out, dtype=np.int64)
        if self.kind == "conv2d":
            return np.repeat(self.bias.astype(np.int64), self.out_shape[1] * self.out_shape[2])
        return self.bias.astype(np.int64)

    def to_json(self):
        d = {"name": self.name, "kind": self.kind}
        if self.kind == "linear":
            d.update({"in": self.in_shape[0], "out": self.out_shape[0]})
        elif self.kind == "conv2d":
            d.update({"in_shape": list(self.in_shape), "out_shape": list(self.out_shape),
                      "kernel": self.kernel, "stride": self.stride, "padding": self.padding})
        elif self.kind == "spike_pool":
            d["kernel"] = self.kernel
        if self.has_neurons:
            d.update({"weight": f"{self.name}.weight",
                      "bias": None if self.bias is None else f"{self.name}.bias",
                      "weight_bits": self.weight_bits, "neuron": self.neuron.to_json()})
        return d


@dataclass
class InputSpec:
    """The first layer's input events: shape, value bits and signedness, encoding, steps."""
    shape: tuple
    bits: int = 1
    signed: bool = False
    encoding: str = "rate"
    steps: int = 25

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def value_range(self):
        if self.signed:
            return -2 ** (self.bits - 1), 2 ** (self.bits - 1) - 1
        return 0, 2 ** self.bits - 1

    def to_json(self):
        return {"shape": list(self.shape), "bits": self.bits, "signed": self.signed,
                "encoding": self.encoding, "steps": self.steps}


@dataclass
class Vectors:
    """Test vectors: input events ``[n, 4]`` (sample, step, addr, value) and golden spikes."""
    events: np.ndarray
    spikes: np.ndarray
    samples: int
    steps: int
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None


@dataclass
class Bundle:
    input: InputSpec
    layers: list
    readout: str = "spike_count"
    provenance: dict = field(default_factory=dict)
    vectors: Vectors | None = None

    @property
    def neuron_layers(self):
        return [layer for layer in self.layers if layer.has_neurons]

    @property
    def n_out(self):
        return self.layers[-1].n_out

    def to_json(self):
        return {"format": FORMAT, "version": VERSION, "input": self.input.to_json(),
                "layers": [layer.to_json() for layer in self.layers],
                "readout": self.readout, "provenance": self.provenance}

    def validate(self):
        """Check shapes and value ranges of the arrays against the structure."""
        _check_structure(self)
        return self


def _shape(where, value, ndim=None):
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        _fail(where, f"must be a list of positive integers, not {value!r}")
    if ndim is not None and len(value) != ndim:
        _fail(where, f"must have {ndim} entries, not {value!r}")
    return tuple(value)


def _conv_out(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def _parse_layer(where, obj, in_shape, arrays):
    name = _get(where, obj, "name")
    if not isinstance(name, str) or not name:
        _fail(f"{where}.name", f"must be a non-empty string, not {name!r}")
    kind = _choice(f"{where}.kind", _get(where, obj, "kind"), KINDS)
    if kind == "flatten":
        return Layer(name, kind, in_shape, (math.prod(in_shape),))
    if kind == "spike_pool":
        if len(in_shape) != 3:
            _fail(where, f"spike_pool needs a (C, H, W) input, not {list(in_shape)}")
        k = _int(f"{where}.kernel", _get(where, obj, "kernel"), lo=1)
        c, h, w = in_shape
        if h // k < 1 or w // k < 1:
            _fail(f"{where}.kernel", f"{k} is larger than the input {h}x{w}")
        return Layer(name, kind, in_shape, (c, h // k, w // k), kernel=k)

    if kind == "linear":
        n_in = _int(f"{where}.in", _get(where, obj, "in"), lo=1)
        n_out = _int(f"{where}.out", _get(where, obj, "out"), lo=1)
        if n_in != math.prod(in_shape):
            _fail(f"{where}.in", f"is {n_in} but the previous layer gives {math.prod(in_shape)}")
        lay_in, lay_out, w_shape = (n_in,), (n_out,), (n_out, n_in)
        kernel = stride = padding = None
    else:
        lay_in = _shape(f"{where}.in_shape", _get(where, obj, "in_shape"), 3)
        lay_out = _shape(f"{where}.out_shape", _get(where, obj, "out_shape"), 3)
        if lay_in != tuple(in_shape):
            _fail(f"{where}.in_shape", f"is {list(lay_in)} but the previous layer gives "
                                       f"{list(in_shape)}")
        kernel = _int(f"{where}.kernel", _get(where, obj, "kernel"), lo=1)
        stride = _int(f"{where}.stride", obj.get("stride", 1), lo=1)
        padding = _int(f"{where}.padding", obj.get("padding", 0), lo=0)
        expect = (lay_out[0],
                  _conv_out(lay_in[1], kernel, stride, padding),
                  _conv_out(lay_in[2], kernel, stride, padding))
        if lay_out != expect:
            _fail(f"{where}.out_shape", f"is {list(lay_out)} but kernel {kernel}, stride "
                                        f"{stride}, padding {padding} give {list(expect)}")
        w_shape = (lay_out[0], lay_in[0], kernel, kernel)

    wbits = _int(f"{where}.weight_bits", _get(where, obj, "weight_bits"), lo=2,
                 hi=MAX_WEIGHT_BITS)
    neuron = Neuron.from_json(f"{where}.neuron", _get(where, obj, "neuron"))
    wkey = _get(where, obj, "weight")
    if not isinstance(wkey, str) or wkey not in arrays:
        _fail(f"{where}.weight", f"names {wkey!r}, which weights.npz does not hold")
    weight = arrays[wkey]
    _check_int_array(f"weights.npz[{wkey!r}]", weight, w_shape, bits=wbits)
    bkey = obj.get("bias")
    bias = None
    if bkey is not None:
        if not isinstance(bkey, str) or bkey not in arrays:
            _fail(f"{where}.bias", f"names {bkey!r}, which weights.npz does not hold")
        bias = arrays[bkey]
        _check_int_array(f"weights.npz[{bkey!r}]", bias, (w_shape[0],),
                         bits=neuron.potential_bits)
    return Layer(name, kind, lay_in, lay_out, weight.astype(np.int64),
                 None if bias is None else bias.astype(np.int64), wbits, neuron,
                 kernel, stride if stride is not None else 1, padding or 0)


def _check_int_array(where, array, shape, *, bits):
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.integer):
        _fail(where, f"must be an integer array, not {getattr(array, 'dtype', type(array))}")
    if tuple(array.shape) != tuple(shape):
        _fail(where, f"must have shape {list(shape)}, not {list(array.shape)}")
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    if array.size and (array.min() < lo or array.max() > hi):
        bad = array.min() if array.min() < lo else array.max()
        _fail(where, f"holds {int(bad)}, outside signed {bits}-bit range [{lo}, {hi}]")


def _check_structure(bundle):
    if not bundle.layers:
        _fail("bundle.json: layers", "must hold at least one layer")
    if not bundle.layers[-1].has_neurons and bundle.layers[-1].kind != "flatten":
        _fail("bundle.json: layers", "must end with a linear, conv2d or flatten layer")
    if not any(layer.has_neurons for layer in bundle.layers):
        _fail("bundle.json: layers", "must hold at least one linear or conv2d layer")
    names = [layer.name for layer in bundle.layers]
    if len(set(names)) != len(names):
        _fail("bundle.json: layers", f"names must be unique, not {names}")


def parse(obj, arrays, vectors=None):
    """Build a :class:`Bundle` from parsed ``bundle.json`` and the arrays of ``weights.npz``."""
    where = "bundle.json"
    if not isinstance(obj, dict):
        _fail(where, "must hold a JSON object")
    if obj.get("format") != FORMAT:
        _fail(f"{where}: format", f"must be {FORMAT!r}, not {obj.get('format')!r}")
    if obj.get("version") != VERSION:
        _fail(f"{where}: version", f"must be {VERSION}, not {obj.get('version')!r}")
    inp = _get(where, obj, "input")
    shape = _shape(f"{where}: input.shape", _get(f"{where}: input", inp, "shape"))
    bits = _int(f"{where}: input.bits", _get(f"{where}: input", inp, "bits"),
                lo=1, hi=MAX_INPUT_BITS)
    signed = _get(f"{where}: input", inp, "signed")
    if not isinstance(signed, bool):
        _fail(f"{where}: input.signed", f"must be true or false, not {signed!r}")
    if signed and bits < 2:
        _fail(f"{where}: input.bits", f"must be at least 2 for signed input, not {bits}")
    encoding = _choice(f"{where}: input.encoding", inp.get("encoding", "raw"), ENCODINGS)
    steps = _int(f"{where}: input.steps", _get(f"{where}: input", inp, "steps"), lo=1)
    spec = InputSpec(shape, bits, signed, encoding, steps)
    layers_obj = _get(where, obj, "layers")
    if not isinstance(layers_obj, list):
        _fail(f"{where}: layers", "must be a list")
    layers, in_shape = [], shape
    for index, lobj in enumerate(layers_obj):
        layer = _parse_layer(f"{where}: layers[{index}]", lobj, in_shape, arrays)
        layers.append(layer)
        in_shape = layer.out_shape
    readout = obj.get("readout", "spike_count")
    _choice(f"{where}: readout", readout, ("spike_count",))
    provenance = obj.get("provenance", {})
    if not isinstance(provenance, dict):
        _fail(f"{where}: provenance", "must be an object")
    bundle = Bundle(spec, layers, readout, provenance)
    _check_structure(bundle)
    if vectors is not None:
        bundle.vectors = _parse_vectors(vectors, bundle)
    return bundle


def _parse_vectors(arrays, bundle):
    where = "vectors.npz"
    for key in ("events", "spikes", "samples", "steps"):
        if key not in arrays:
            _fail(f"{where}[{key!r}]", "is missing")
    samples = int(arrays["samples"])
    steps = int(arrays["steps"])
    events = np.asarray(arrays["events"])
    spikes = np.asarray(arrays["spikes"])
    for key, arr, cols in (("events", events, 4), ("spikes", spikes, 3)):
        if not np.issubdtype(arr.dtype, np.integer) or arr.ndim != 2 or arr.shape[1] != cols:
            _fail(f"{where}[{key!r}]", f"must be an integer array [n, {cols}], "
                                       f"not {arr.dtype} {list(arr.shape)}")
    if steps != bundle.input.steps:
        _fail(f"{where}['steps']", f"is {steps} but bundle.json says {bundle.input.steps}")
    if len(events):
        if events[:, 0].min() < 0 or events[:, 0].max() >= samples:
            _fail(f"{where}['events']", f"sample index outside [0, {samples})")
        if events[:, 1].min() < 0 or events[:, 1].max() >= steps:
            _fail(f"{where}['events']", f"step index outside [0, {steps})")
        if events[:, 2].min() < 0 or events[:, 2].max() >= bundle.input.size:
            _fail(f"{where}['events']", f"address outside [0, {bundle.input.size})")
        lo, hi = bundle.input.value_range
        if events[:, 3].min() < lo or events[:, 3].max() > hi:
            _fail(f"{where}['events']", f"value outside the input range [{lo}, {hi}]")
        order = events[:, 0] * steps + events[:, 1]
        if np.any(np.diff(order) < 0):
            _fail(f"{where}['events']", "must be sorted by sample, then step")
    labels = arrays["labels"] if "labels" in arrays else None
    predictions = arrays["predictions"] if "predictions" in arrays else None
    return Vectors(events.astype(np.int64), spikes.astype(np.int64), samples, steps,
                   labels, predictions)


def load(path):
    """Read and validate the bundle in folder ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: is not a bundle folder")
    jpath, wpath, vpath = path / "bundle.json", path / "weights.npz", path / "vectors.npz"
    for p in (jpath, wpath):
        if not p.is_file():
            raise BundleError(f"{p}: is missing")
    try:
        obj = json.loads(jpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{jpath}: is not valid JSON ({exc})") from None
    try:
        with np.load(wpath, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        vectors = None
        if vpath.is_file():
            with np.load(vpath, allow_pickle=False) as npz:
                vectors = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: cannot read arrays ({exc})") from None
    return parse(obj, arrays, vectors)


def save(bundle, path):
    """Write ``bundle`` into folder ``path`` (created if needed) after validating it."""
    bundle.validate()
    arrays = {}
    for layer in bundle.layers:
        if layer.has_neurons:
            arrays[f"{layer.name}.weight"] = np.asarray(layer.weight, dtype=np.int32)
            if layer.bias is not None:
                arrays[f"{layer.name}.bias"] = np.asarray(layer.bias, dtype=np.int32)
    obj = bundle.to_json()
    # Round-trip through the parser so that what is written is exactly what is accepted.
    parse(json.loads(json.dumps(obj)), arrays)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "bundle.json").write_text(json.dumps(obj, indent=2) + "\n")
    _savez(path / "weights.npz", arrays)
    if bundle.vectors is not None:
        v = bundle.vectors
        varrays = {"events": np.asarray(v.events, dtype=np.int32),
                   "spikes": np.asarray(v.spikes, dtype=np.int32),
                   "samples": np.int64(v.samples), "steps": np.int64(v.steps)}
        if v.labels is not None:
            varrays["labels"] = np.asarray(v.labels, dtype=np.int32)
        if v.predictions is not None:
            varrays["predictions"] = np.asarray(v.predictions, dtype=np.int32)
        _savez(path / "vectors.npz", varrays)
    return path


def _savez(path, arrays):
    # np.savez stores zip timestamps of "now"; write through a fixed-date zip so that the same
    # bundle gives the same bytes.
    import io
    import zipfile
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.array(arrays[key], order="C"),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
