"""Read, write and validate bundles (DESIGN.md section 4, a contract).

A bundle is a folder with ``bundle.json`` (the network's structure and fixed-point parameters),
``weights.npz`` (signed integer weights and biases) and optionally ``vectors.npz`` (input events
and the golden spikes of the last layer). Every tool goes through this module; a malformed bundle
is rejected with a one-line :class:`BundleError` naming the offending field.

This module imports numpy only: the hardware generator uses it without torch.
"""
from __future__ import annotations

import difflib
import io
import json
import math
import tokenize
import zipfile
import zlib
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

# The fields each object of bundle.json may hold ("provenance" is free-form).
TOP_FIELDS = ("format", "version", "input", "layers", "readout", "provenance")
INPUT_FIELDS = ("shape", "bits", "signed", "encoding", "steps")
NEURON_FIELDS = ("model", "reset", "threshold", "potential_bits", "leak")
LEAK_FIELDS = {"mul": ("mode", "beta", "frac_bits"), "shift": ("mode", "shift")}
_SYNAPSES = ("weight", "bias", "weight_bits", "neuron")
LAYER_FIELDS = {
    "linear": ("name", "kind", "in", "out") + _SYNAPSES,
    "conv2d": ("name", "kind", "in_shape", "out_shape", "kernel", "stride", "padding") + _SYNAPSES,
    "spike_pool": ("name", "kind", "kernel"),
    "flatten": ("name", "kind"),
}
# The arrays of vectors.npz (DESIGN.md section 4); labels and predictions are optional.
VECTOR_ARRAYS = ("events", "spikes", "samples", "steps", "labels", "predictions")


class BundleError(ValueError):
    """A bundle that does not follow the contract; the message (one line) names the field."""
    def __init__(self, message):
        # The command lines print the message as their one line of error output.
        super().__init__(" ".join(line.strip() for line in str(message).splitlines()))


def _fail(where, message):
    raise BundleError(f"{where}: {message}")


def _show(value, limit=60):
    """``repr(value)``, shortened: a corrupt file may hold a value of any size."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _at(where, key):
    """The path of field ``key`` inside ``where`` (``bundle.json: input`` -> ``input.bits``)."""
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"


def _int(where, value, *, lo=None, hi=None):
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(where, f"must be an integer, not {_show(value)}")
    if lo is not None and value < lo:
        _fail(where, f"must be at least {lo}, not {_show(value)}")
    if hi is not None and value > hi:
        _fail(where, f"must be at most {hi}, not {_show(value)}")
    return value


def _choice(where, value, allowed):
    if value not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        _fail(where, f"must be one of {names}, not {_show(value)}")
    return value


def _object(where, obj):
    if not isinstance(obj, dict):
        _fail(where, f"must be an object, not {type(obj).__name__}")
    return obj


def _get(where, obj, key):
    _object(where, obj)
    if key not in obj:
        _fail(_at(where, key), "is missing")
    return obj[key]


def _only(where, obj, fields, what):
    """Refuse a field of ``obj`` outside ``fields``: a misspelt optional field would be ignored."""
    for key in _object(where, obj):
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            _fail(_at(where, key), f"is not a field of {what}{hint}")


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
        _only(where, obj, LEAK_FIELDS[mode], f"a {mode} leak")
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
        _only(where, _object(where, obj), NEURON_FIELDS, "a neuron")
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
        _fail(where, f"must be a list of positive integers, not {_show(value)}")
    if ndim is not None and len(value) != ndim:
        _fail(where, f"must have {ndim} entries, not {_show(value)}")
    return tuple(value)


def _conv_out(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def _parse_layer(where, obj, in_shape, arrays):
    name = _get(where, obj, "name")
    if not isinstance(name, str) or not name:
        _fail(f"{where}.name", f"must be a non-empty string, not {_show(name)}")
    kind = _choice(f"{where}.kind", _get(where, obj, "kind"), KINDS)
    _only(where, obj, LAYER_FIELDS[kind], f"a {kind} layer")
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
        _fail(f"{where}.weight", f"names {_show(wkey)}, which weights.npz does not hold")
    weight = arrays[wkey]
    _check_int_array(f"weights.npz[{wkey!r}]", weight, w_shape, bits=wbits)
    bkey = obj.get("bias")
    bias = None
    if bkey is not None:
        if not isinstance(bkey, str) or bkey not in arrays:
            _fail(f"{where}.bias", f"names {_show(bkey)}, which weights.npz does not hold")
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
        _fail(where, f"must hold a JSON object, not {type(obj).__name__}")
    if obj.get("format") != FORMAT:
        _fail(f"{where}: format", f"must be {FORMAT!r}, not {_show(obj.get('format'))}")
    version = obj.get("version")
    if isinstance(version, bool) or version != VERSION:         # true == 1 in Python
        _fail(f"{where}: version", f"must be {VERSION}, not {_show(version)}")
    _only(where, obj, TOP_FIELDS, "a bundle")
    inp = _get(where, obj, "input")
    _only(f"{where}: input", inp, INPUT_FIELDS, "the input")
    shape = _shape(f"{where}: input.shape", _get(f"{where}: input", inp, "shape"))
    bits = _int(f"{where}: input.bits", _get(f"{where}: input", inp, "bits"),
                lo=1, hi=MAX_INPUT_BITS)
    signed = _get(f"{where}: input", inp, "signed")
    if not isinstance(signed, bool):
        _fail(f"{where}: input.signed", f"must be true or false, not {_show(signed)}")
    if signed and bits < 2:
        _fail(f"{where}: input.bits", f"must be at least 2 for signed input, not {bits}")
    encoding = _choice(f"{where}: input.encoding", inp.get("encoding", "raw"), ENCODINGS)
    steps = _int(f"{where}: input.steps", _get(f"{where}: input", inp, "steps"), lo=1)
    spec = InputSpec(shape, bits, signed, encoding, steps)
    layers_obj = _get(where, obj, "layers")
    if not isinstance(layers_obj, list):
        _fail(f"{where}: layers", f"must be a list, not {type(layers_obj).__name__}")
    layers, in_shape = [], shape
    for index, lobj in enumerate(layers_obj):
        layer = _parse_layer(f"{where}: layers[{index}]", lobj, in_shape, arrays)
        layers.append(layer)
        in_shape = layer.out_shape
    readout = obj.get("readout", "spike_count")
    _choice(f"{where}: readout", readout, ("spike_count",))
    provenance = obj.get("provenance", {})
    if not isinstance(provenance, dict):
        _fail(f"{where}: provenance", f"must be an object, not {type(provenance).__name__}")
    bundle = Bundle(spec, layers, readout, provenance)
    _check_structure(bundle)
    named = {key for layer in layers_obj for key in (layer.get("weight"), layer.get("bias"))}
    for key in arrays:
        if key not in named:
            # A layer whose field was lost would otherwise run without its weights or bias.
            _fail(f"weights.npz[{key!r}]", "is not named by any layer of bundle.json")
    if vectors is not None:
        bundle.vectors = _parse_vectors(vectors, bundle)
    return bundle


def _scalar(where, value, *, lo):
    array = np.asarray(value)
    if array.ndim != 0 or not np.issubdtype(array.dtype, np.integer):
        _fail(where, f"must be an integer scalar, not {array.dtype} {list(array.shape)}")
    return _int(where, int(array), lo=lo)


def _rows(where, array, columns):
    array = np.asarray(array)
    if (not np.issubdtype(array.dtype, np.integer) or array.ndim != 2
            or array.shape[1] != len(columns)):
        _fail(where, f"must be an integer array [n, {len(columns)}] "
                     f"({', '.join(columns)}), not {array.dtype} {list(array.shape)}")
    return array


def _column_range(where, array, column, name, hi):
    if len(array) and (array[:, column].min() < 0 or array[:, column].max() >= hi):
        bad = array[:, column].min() if array[:, column].min() < 0 else array[:, column].max()
        _fail(where, f"holds {name} {int(bad)}, outside [0, {hi})")


def _classes(where, array, samples, hi=None):
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.integer) or array.shape != (samples,):
        _fail(where, f"must be an integer array [{samples}] (one per sample), "
                     f"not {array.dtype} {list(array.shape)}")
    if array.min() < 0:
        _fail(where, f"holds {int(array.min())}, but a class is at least 0")
    if hi is not None and array.max() >= hi:
        _fail(where, f"holds {int(array.max())}, outside the output classes [0, {hi})")
    return array.astype(np.int64)


def _parse_vectors(arrays, bundle):
    where = "vectors.npz"
    for key in arrays:
        if key not in VECTOR_ARRAYS:
            _fail(f"{where}[{key!r}]", f"is not an array of the contract "
                                       f"({', '.join(VECTOR_ARRAYS)})")
    for key in ("events", "spikes", "samples", "steps"):
        if key not in arrays:
            _fail(f"{where}[{key!r}]", "is missing")
    samples = _scalar(f"{where}['samples']", arrays["samples"], lo=1)
    steps = _scalar(f"{where}['steps']", arrays["steps"], lo=1)
    if steps != bundle.input.steps:
        _fail(f"{where}['steps']", f"is {steps} but bundle.json says {bundle.input.steps}")
    events = _rows(f"{where}['events']", arrays["events"], ("sample", "step", "addr", "value"))
    spikes = _rows(f"{where}['spikes']", arrays["spikes"], ("sample", "step", "addr"))
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
        order = events[:, 0].astype(np.int64) * steps + events[:, 1]
        if np.any(np.diff(order) < 0):
            _fail(f"{where}['events']", "must be sorted by sample, then step")
    for column, (name, hi) in enumerate((("sample index", samples), ("step index", steps),
                                         ("address", bundle.n_out))):
        _column_range(f"{where}['spikes']", spikes, column, name, hi)
    labels = predictions = None
    if "labels" in arrays:
        labels = _classes(f"{where}['labels']", arrays["labels"], samples)
    if "predictions" in arrays:
        predictions = _classes(f"{where}['predictions']", arrays["predictions"], samples,
                               bundle.n_out)
    return Vectors(events.astype(np.int64), spikes.astype(np.int64), samples, steps,
                   labels, predictions)


# What a damaged zip archive or a damaged member may raise while it is read.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError,
               NotImplementedError, RuntimeError, OverflowError)
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")       # a zip's first entry, or an empty zip


def _read_json(path):
    def unique(pairs):
        # json keeps the last of two equal keys; a bundle that says two things is damaged.
        obj = {}
        for key, value in pairs:
            if key in obj:
                _fail(path, f"holds the field {_show(key)} twice in one object")
            obj[key] = value
        return obj

    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        _fail(path, f"cannot be read ({exc.strerror or exc})")
    except UnicodeDecodeError as exc:
        _fail(path, f"is not UTF-8 text ({exc})")
    if not text.strip():
        _fail(path, "is empty")
    try:
        return json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        _fail(path, f"is not valid JSON ({exc})")
    except RecursionError:
        _fail(path, "is not valid JSON (nested too deeply)")


def _read_npy(where, data):
    """The array in the bytes of one ``.npy`` member, checked against its own header."""
    fp = io.BytesIO(data)
    headers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(fp)
        if version not in headers:
            raise ValueError(f"format version {version[0]}.{version[1]}, which this tool does "
                             f"not read")
        shape, fortran, dtype = headers[version](fp)
    except (ValueError, TypeError, SyntaxError, EOFError, RecursionError,
            tokenize.TokenError) as exc:             # numpy parses the header as Python text
        _fail(where, f"is not a readable .npy array ({exc})")
    if any(size < 0 for size in shape):
        _fail(where, f"is not a readable .npy array (shape {list(shape)})")
    if dtype.hasobject:
        # np.load would unpickle it: arbitrary code.
        _fail(where, f"holds Python objects ({dtype}), not numbers")
    need, have = math.prod(shape) * dtype.itemsize, len(data) - fp.tell()
    if have != need:
        _fail(where, f"is truncated or damaged: its header announces {need} bytes of data, "
                     f"not {have}")
    if not need:
        return np.zeros(shape, dtype)
    array = np.frombuffer(data, dtype, math.prod(shape), fp.tell())
    return array.reshape(shape, order="F" if fortran else "C").copy()


def _read_npz(path):
    """The arrays of the ``.npz`` archive at ``path`` (a dict); never executes pickles."""
    try:
        with open(path, "rb") as fp:
            head = fp.read(len(_NPY_MAGIC))
    except OSError as exc:
        _fail(path, f"cannot be read ({exc.strerror or exc})")
    if not head:
        _fail(path, "is empty")
    if head == _NPY_MAGIC:
        _fail(path, "is a single .npy array, not an .npz archive of named arrays")
    if not head.startswith(_ZIP_MAGICS):
        _fail(path, "is not an .npz archive (it does not start as a zip file)")
    arrays = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename
                if not name.endswith(".npy") or name == ".npy":
                    _fail(path, f"holds {_show(name)}, which is not a .npy array")
                key = name[:-len(".npy")]
                if key in arrays:
                    _fail(path, f"holds {_show(name)} twice")
                try:
                    data = zf.read(info)                # checks the CRC
                except _ZIP_ERRORS as exc:
                    _fail(f"{path}[{key!r}]", f"cannot be read: the archive is truncated or "
                                              f"damaged ({exc})")
                arrays[key] = _read_npy(f"{path}[{key!r}]", data)
    except BundleError:
        raise
    except _ZIP_ERRORS as exc:
        _fail(path, f"cannot be read: the archive is truncated or damaged ({exc})")
    return arrays


def load(path):
    """Read and validate the bundle in folder ``path``.

    Any fault of the files, from a truncated archive to a misspelt field, raises a
    :class:`BundleError` whose one-line message names the file and the fault.
    """
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: is not a bundle folder")
    jpath, wpath, vpath = path / "bundle.json", path / "weights.npz", path / "vectors.npz"
    for p in (jpath, wpath, vpath):
        if p.exists() and not p.is_file():
            _fail(p, "is not a file")
        if not p.exists() and p != vpath:
            _fail(p, "is missing")
    obj = _read_json(jpath)
    arrays = _read_npz(wpath)
    vectors = _read_npz(vpath) if vpath.is_file() else None
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
    varrays = None
    if bundle.vectors is not None:
        v = bundle.vectors
        varrays = {"events": np.asarray(v.events, dtype=np.int32),
                   "spikes": np.asarray(v.spikes, dtype=np.int32),
                   "samples": np.int64(v.samples), "steps": np.int64(v.steps)}
        if v.labels is not None:
            varrays["labels"] = np.asarray(v.labels, dtype=np.int32)
        if v.predictions is not None:
            varrays["predictions"] = np.asarray(v.predictions, dtype=np.int32)
    # Round-trip through the parser so that what is written is exactly what is accepted; a
    # refused bundle writes nothing.
    parse(json.loads(json.dumps(obj)), arrays, varrays)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "bundle.json").write_text(json.dumps(obj, indent=2) + "\n")
    _savez(path / "weights.npz", arrays)
    if varrays is not None:
        _savez(path / "vectors.npz", varrays)
    return path


def _savez(path, arrays):
    # np.savez stores zip timestamps of "now"; write through a fixed-date zip so that the same
    # bundle gives the same bytes.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.array(arrays[key], order="C"),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
