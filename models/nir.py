"""NIR graphs in and out: the Neuromorphic Intermediate Representation <-> bundles.

:func:`import_graph` quantizes a NIR graph (from snnTorch, Norse, Sinabs, Rockpool, Spyx, or
written with the ``nir`` package) into a :class:`~models.bundle.Bundle`; :func:`export_bundle`
writes a bundle as a NIR graph. Both need numpy and the ``nir`` package (numpy + h5py) only,
never torch. docs/nir.md is the user's description; the rules in short:

* NIR neurons are continuous-time and the time step is not stored. A LIF
  (``tau dv/dt = (v_leak - v) + r I``) is read with the forward-Euler step of ``dt`` that
  snnTorch uses on export (``--dt``, default 1e-4 s, snnTorch's): decay ``1 - dt/tau``, input
  gain ``dt r / tau`` (1 for snnTorch's ``r = tau / dt``), and a constant ``dt v_leak / tau``
  folded into the bias. An IF (``dv/dt = r I``) has no time constant to relate a step to; it
  integrates ``r I`` per step without decay.
* NIR resets to ``v_reset`` (which must be 0); ``--reset zero`` is exactly that. NIR has no
  subtractive reset (snnTorch exports ``Leaky`` dropping its ``reset_mechanism``), so a
  network trained with snnTorch's default needs ``--reset subtract``. Either is DESIGN.md
  section 3's arithmetic: the reset of step t comes from the spike of step t-1.
* A chain ``Input -> (synapse+ -> neuron | Flatten)* -> Output``: a synapse (Affine, Linear,
  Conv2d, SumPool2d), or several in a row composed into one (:func:`_compose`), and the LIF or
  IF after it make one neuron layer. A SumPool2d is the convolution with a one-per-channel
  kernel of ones; a SumPool2d (kernel = stride, no padding) on spikes followed by an IF that
  fires on any input (``0 <= v_threshold < r``, reset to 0) is an OR over the window, the
  bundle's ``spike_pool``, and is read as one.
* The exporter writes the bundle's integer parameters into each node's ``metadata`` (the
  reset mode, neuron model, leak form, bit widths, input encoding and steps) so that the
  importer reads the same bundle back; the float parameters carry the arithmetic, and options
  given on the command line override the metadata.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bundle import LEAKS, MODELS, Bundle, InputSpec, Layer, Leak, Neuron

__all__ = ["NIRError", "ImportOptions", "ImportReport", "import_graph", "export_bundle",
           "read_graph", "write_graph", "main", "SUPPORTED", "REFUSED", "DEFAULT_DT"]

#: snnTorch's export step (``export_nir.py``: ``dt = 1e-4``).
DEFAULT_DT = 1e-4

#: Node types the importer maps.
SUPPORTED = ("Input", "Output", "Affine", "Linear", "Conv2d", "SumPool2d", "Flatten", "LIF", "IF")

#: Node types the importer refuses, and why (the second half of the one-line message).
REFUSED = {
    "CubaLIF": "a current-based synapse (a second state per neuron) has no bundle equivalent; "
               "the bundle's neurons integrate their input current directly",
    "CubaLI": "a current-based leaky integrator never spikes, and the bundle's layers all spike",
    "LI": "a leaky integrator never spikes; the bundle's readout counts the spikes of its last "
          "layer (read out a LIF layer instead)",
    "I": "an integrator never spikes, and the bundle's layers all spike",
    "AvgPool2d": "average pooling scales spikes by 1/(kernel area), which no integer synapse "
                 "holds exactly (write SumPool2d instead)",
    "Delay": "the bundle has no synaptic delays: layer l+1 at step t consumes the spikes of "
             "layer l at step t",
    "Threshold": "a stateless threshold is no bundle neuron (write an IF instead)",
    "Scale": "an elementwise scale between layers has no bundle layer (fold it into the weights)",
    "Conv1d": "the bundle's convolutions are two-dimensional",
    "NIRGraph": "a subgraph (snnTorch writes its recurrent RLeaky and RSynaptic so) holds "
                "recurrence, and the bundle is feed-forward",
}

_SYNAPSES = ("Affine", "Linear", "Conv2d", "SumPool2d")
_NEURONS = ("LIF", "IF")
# How far a float may sit from the integer it stands for and still count as that integer:
# snnTorch stores tau and r in float32 (relative precision 6e-8), so 1e-6 leaves room for a few
# roundings and none for a real fraction of a weight step.
_TOLERANCE = 1e-6


class NIRError(ValueError):
    """A graph the bundle cannot hold, or a bundle NIR cannot; the message is one line."""
    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


@dataclass
class ImportOptions:
    """What :func:`import_graph` is told; ``None`` takes the graph's metadata, then the default.

    Defaults: ``dt`` 1e-4, ``reset`` ``"zero"`` (NIR's own), ``steps`` 25, ``weight_bits`` 8,
    ``potential_bits`` 16, ``leak`` ``"mul"`` with ``frac_bits`` 8, ``encoding`` ``"rate"``
    (its input bits as :func:`models.encoders.input_spec` gives them, ``input_bits`` for
    ``direct`` and ``raw``).
    """
    dt: float | None = None
    reset: str | None = None
    steps: int | None = None
    weight_bits: int | None = None
    potential_bits: int | None = None
    leak: str | None = None
    frac_bits: int | None = None
    encoding: str | None = None
    input_bits: int | None = None
    exact: bool = False


DEFAULTS = {"dt": DEFAULT_DT, "reset": "zero", "steps": 25, "weight_bits": 8,
            "potential_bits": 16, "leak": "mul", "frac_bits": 8, "encoding": "rate",
            "input_bits": 4}


@dataclass
class ImportReport:
    """What the importer did: one line per layer, and the roundings it made."""
    layers: list = field(default_factory=list)
    roundings: list = field(default_factory=list)


# -- reading ------------------------------------------------------------------------------------

def read_graph(path):
    """Read a NIR file without nir's type check (the importer infers missing shapes itself)."""
    import nir
    path = Path(path)
    if not path.is_file():
        raise NIRError(f"{path}: no such file")
    try:
        return nir.read(path, type_check=False)
    except OSError as exc:
        raise NIRError(f"{path}: is not a NIR (HDF5) file ({exc})") from None
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise NIRError(f"{path}: is not a readable NIR graph ({type(exc).__name__}: {exc})") \
            from None


def write_graph(graph, path):
    """Write ``graph`` with nir's writer (uncompressed: scalar parameters then write too)."""
    import nir
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nir.write(path, graph, compression=None)
    return Path(path)


def _type(node):
    return type(node).__name__


def _where(name, node):
    return f"node {name!r} ({_type(node)})"


def _meta(node):
    """The node's metadata as plain Python values (h5py gives bytes and numpy scalars)."""
    out = {}
    for key, value in (getattr(node, "metadata", None) or {}).items():
        if isinstance(value, bytes):
            value = value.decode("utf8")
        elif isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def _chain(graph):
    """The graph's nodes from Input to Output as ``[(name, node)]``; refuse anything else."""
    nodes, edges = dict(graph.nodes), [tuple(e) for e in graph.edges]
    for name, node in nodes.items():
        kind = _type(node)
        if kind in REFUSED:
            raise NIRError(f"{_where(name, node)}: {REFUSED[kind]}")
        if kind not in SUPPORTED:
            raise NIRError(f"{_where(name, node)}: is not a node type the bundle maps "
                           f"(supported: {', '.join(SUPPORTED)})")
    for a, b in edges:
        for end in (a, b):
            if end not in nodes:
                raise NIRError(f"edge ({a!r}, {b!r}): names {end!r}, which is not a node")
        if a == b:
            raise NIRError(f"{_where(a, nodes[a])}: has an edge to itself (recurrence); the "
                           f"bundle is feed-forward")
    succ = {name: [] for name in nodes}
    pred = {name: [] for name in nodes}
    for a, b in dict.fromkeys(edges):                     # a repeated edge is one connection
        succ[a].append(b)
        pred[b].append(a)
    cycle = _find_cycle(nodes, succ)
    if cycle:
        path = " -> ".join(repr(n) for n in cycle + cycle[:1])
        raise NIRError(f"{_where(cycle[0], nodes[cycle[0]])}: lies on a cycle {path} "
                       f"(recurrence); the bundle is feed-forward")
    for name, node in nodes.items():
        if len(succ[name]) > 1:
            raise NIRError(f"{_where(name, node)}: feeds {len(succ[name])} nodes "
                           f"({', '.join(map(repr, succ[name]))}); the bundle is a chain of "
                           f"layers, not a branching graph")
    for name, node in nodes.items():
        if len(pred[name]) > 1:
            raise NIRError(f"{_where(name, node)}: receives {len(pred[name])} nodes "
                           f"({', '.join(map(repr, pred[name]))}); the bundle is a chain of "
                           f"layers, not a merging graph")
    inputs = [n for n, node in nodes.items() if _type(node) == "Input"]
    outputs = [n for n, node in nodes.items() if _type(node) == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRError(f"graph: has {len(inputs)} Input and {len(outputs)} Output nodes; the "
                       f"bundle has one of each")
    order, seen, name = [], set(), inputs[0]
    while True:
        if name in seen:
            raise NIRError(f"{_where(name, nodes[name])}: lies on a cycle (recurrence); the "
                           f"bundle is feed-forward")
        seen.add(name)
        order.append((name, nodes[name]))
        if not succ[name]:
            break
        name = succ[name][0]
    if order[-1][0] != outputs[0]:
        raise NIRError(f"{_where(*order[-1])}: ends the chain from {inputs[0]!r} without "
                       f"reaching the Output {outputs[0]!r}")
    for name, node in nodes.items():
        if name not in seen:
            # Any node off the chain is a cycle or a dangling piece (a chain has no merges).
            raise NIRError(f"{_where(name, node)}: is not on the path from the Input to the "
                           f"Output (a cycle or a disconnected part)")
    return order


def _find_cycle(nodes, succ):
    """One cycle of the graph as a list of node names (first in node order), or ``[]``."""
    state = {}                                     # 1: on the current path, 2: done

    def visit(name, path):
        state[name] = 1
        path.append(name)
        for nxt in succ[name]:
            if state.get(nxt) == 1:
                return path[path.index(nxt):]
            if nxt not in state:
                found = visit(nxt, path)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return []

    for name in nodes:
        if name not in state:
            found = visit(name, [])
            if found:
                return found
    return []


def _shape_of(types, key):
    value = (types or {}).get(key) if isinstance(types, dict) else None
    if value is None:
        return None
    value = np.asarray(value).reshape(-1)
    if value.size == 0:
        return None
    return tuple(int(v) for v in value)


def _pair(where, what, value):
    """A (h, w) pair from an int or a pair; refuse non-square ones (the bundle's are square)."""
    a = np.asarray(value).reshape(-1)
    if a.size == 1:
        a = np.repeat(a, 2)
    if a.size != 2:
        raise NIRError(f"{where}: {what} {a.tolist()} is not one number or a pair")
    if int(a[0]) != int(a[1]):
        raise NIRError(f"{where}: {what} {a.tolist()} is not square; the bundle's "
                       f"convolutions are")
    return int(a[0])


def _uniform(where, what, value, size):
    """The one value of a per-neuron parameter (scalar, [1] or [size]); refuse differing ones."""
    a = np.asarray(value, dtype=np.float64).reshape(-1)
    if a.size not in (1, size):
        raise NIRError(f"{where}: {what} has {a.size} entries for a layer of {size} neurons")
    if a.size and not (a == a[0]).all():
        raise NIRError(f"{where}: {what} differs across neurons ({a.min():g} to {a.max():g}); "
                       f"the bundle holds one per layer")
    return float(a[0])


def _conv_out(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def _synapse(name, node, shape):
    """``(kind, weight, bias, kernel, stride, padding, out_shape)`` in float, for ``shape``."""
    where = _where(name, node)
    kind = _type(node)
    if kind in ("Affine", "Linear"):
        w = np.asarray(node.weight, dtype=np.float64)
        if w.ndim != 2:
            raise NIRError(f"{where}: weight has shape {list(w.shape)}, not [out, in]")
        if len(shape) != 1 or w.shape[1] != shape[0]:
            raise NIRError(f"{where}: takes [{w.shape[1]}] but receives {list(shape)}"
                           + (" (a Flatten must come first)" if len(shape) > 1 else ""))
        b = np.asarray(node.bias, dtype=np.float64).reshape(-1) if kind == "Affine" else None
        if b is not None and b.size != w.shape[0]:
            raise NIRError(f"{where}: bias has {b.size} entries for {w.shape[0]} outputs")
        return "linear", w, b, None, 1, 0, (w.shape[0],)
    if len(shape) != 3:
        raise NIRError(f"{where}: needs a (C, H, W) input, not {list(shape)}")
    c, h, wd = shape
    if kind == "Conv2d":
        w = np.asarray(node.weight, dtype=np.float64)
        if w.ndim != 4:
            raise NIRError(f"{where}: weight has shape {list(w.shape)}, not [K, C, kh, kw]")
        if w.shape[2] != w.shape[3]:
            raise NIRError(f"{where}: kernel {list(w.shape[2:])} is not square; the bundle's "
                           f"convolutions are")
        if int(np.asarray(node.groups)) != 1:
            raise NIRError(f"{where}: groups {int(np.asarray(node.groups))}; the bundle's "
                           f"convolutions see every input channel (groups 1)")
        if _pair(where, "dilation", node.dilation) != 1:
            raise NIRError(f"{where}: dilation is not 1; the bundle's convolutions are dense")
        if w.shape[1] != c:
            raise NIRError(f"{where}: takes {w.shape[1]} channels but receives {list(shape)}")
        k = w.shape[2]
        stride = _pair(where, "stride", node.stride)
        padding = node.padding
        if isinstance(padding, bytes):
            padding = padding.decode("utf8")
        if isinstance(padding, str):
            if padding == "valid":
                padding = 0
            elif padding == "same" and stride == 1 and k % 2 == 1:
                padding = (k - 1) // 2
            else:
                raise NIRError(f"{where}: padding {padding!r} with kernel {k} and stride "
                               f"{stride} is not a symmetric padding")
        else:
            padding = _pair(where, "padding", padding)
        given = getattr(node, "input_shape", None)
        if given is not None and np.asarray(given).size:
            given = tuple(int(v) for v in np.asarray(given).reshape(-1))
            if given != (h, wd):
                raise NIRError(f"{where}: input_shape {list(given)} but receives {list(shape)}")
        bias = getattr(node, "bias", None)
        b = None if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
        if b is not None and b.size != w.shape[0]:
            raise NIRError(f"{where}: bias has {b.size} entries for {w.shape[0]} channels")
        if b is not None and not b.any():
            b = None                        # NIR's Conv2d always has a bias; zeros are none
    else:                                   # SumPool2d: the convolution with a kernel of ones
        k = _pair(where, "kernel_size", node.kernel_size)
        stride = _pair(where, "stride", node.stride)
        padding = _pair(where, "padding", node.padding)
        w = np.zeros((c, c, k, k))
        w[np.arange(c), np.arange(c)] = 1.0
        b = None
    out = (w.shape[0], _conv_out(h, k, stride, padding), _conv_out(wd, k, stride, padding))
    if out[1] < 1 or out[2] < 1:
        raise NIRError(f"{where}: kernel {k}, stride {stride}, padding {padding} leave nothing "
                       f"of the input {list(shape)}")
    return "conv2d", w, b, k, stride, padding, out


def _compose(a_where, b_where, a, b, a_in):
    """One synapse equal to synapse ``a`` (on input shape ``a_in``) followed by ``b``.

    ``a`` and ``b`` come from :func:`_synapse`. Two convolutions (or sum pools) compose into
    one with kernel ``(kB - 1) sA + kA``, stride ``sA sB`` and padding ``pA + pB sA``, exactly
    (output size included) when ``b`` has no padding; with padding, only when ``a`` has no bias
    and tiles its input (a SumPool2d with kernel = stride and no padding that divides the
    height and width), so that ``b``'s ring of zeros is the input's. Two linear maps compose as
    ``WB WA``, ``WB bA + bB``.
    """
    kind_a, wa, ba, ka, sa, pa, out_a = a
    kind_b, wb, bb, kb, sb, pb, out_b = b
    if kind_a == "linear":
        w = wb @ wa
        bias = None if ba is None and bb is None else (
            (wb @ ba if ba is not None else 0) + (bb if bb is not None else 0))
        return "linear", w, bias, None, 1, 0, out_b
    _, h, wd = a_in
    if pb and not (ba is None and ka == sa and pa == 0 and h % sa == 0 and wd % sa == 0):
        raise NIRError(f"{b_where}: pads its input, which {a_where} computes with no neuron "
                       f"between; the two are one convolution only if the second has no "
                       f"padding, or the first tiles its input exactly without bias (a "
                       f"SumPool2d with kernel = stride dividing height and width)")
    k = (kb - 1) * sa + ka
    w = np.zeros((wb.shape[0], wa.shape[1], k, k))
    for i in range(kb):
        for j in range(kb):
            w[:, :, i * sa:i * sa + ka, j * sa:j * sa + ka] += np.einsum(
                "om,mcyx->ocyx", wb[:, :, i, j], wa)
    bias = bb
    if ba is not None:
        bias = np.einsum("omyx,m->o", wb, ba) + (0 if bb is None else bb)
    stride, padding = sa * sb, pa + pb * sa
    if (_conv_out(h, k, stride, padding), _conv_out(wd, k, stride, padding)) != tuple(out_b[1:]):
        raise NIRError(f"{b_where}: with {a_where} before it and no neuron between, the two "
                       f"are no single convolution of the same output size")
    if bias is not None and not bias.any():
        bias = None
    return "conv2d", w, bias, k, stride, padding, out_b


def _neuron_floats(name, node, size, dt):
    """``(decay, gain, bias_add, threshold)`` of a LIF or IF per step of ``dt``."""
    where = _where(name, node)
    theta = _uniform(where, "v_threshold", node.v_threshold, size)
    v_reset = _uniform(where, "v_reset", node.v_reset if node.v_reset is not None else 0.0,
                       size)
    if v_reset != 0:
        raise NIRError(f"{where}: v_reset is {v_reset:g}; the bundle resets to 0 (--reset "
                       f"zero) or by the threshold (--reset subtract)")
    r = _uniform(where, "r", node.r, size)
    if _type(node) == "IF":
        if not math.isfinite(r) or r <= 0:
            raise NIRError(f"{where}: r is {r:g}; an IF needs a positive finite r")
        return 1.0, r, 0.0, theta
    tau = _uniform(where, "tau", node.tau, size)
    v_leak = _uniform(where, "v_leak", node.v_leak, size)
    if math.isinf(tau) and tau > 0:
        # No leak. snnTorch writes beta = 1 as tau = r = dt / 0 = inf, gain dt r / tau = 1.
        if not math.isinf(r):
            raise NIRError(f"{where}: tau is infinite but r is {r:g}: no input would reach "
                           f"the neuron (snnTorch writes r = tau / dt, also infinite)")
        return 1.0, 1.0, 0.0, theta
    if not tau > 0 or tau < dt * (1 - _TOLERANCE):
        raise NIRError(f"{where}: tau {tau:g} is below dt {dt:g}: the decay 1 - dt/tau per "
                       f"step would be negative (give the graph's --dt)")
    if not math.isfinite(r) or r <= 0:
        raise NIRError(f"{where}: r is {r:g}; a LIF needs a positive finite r")
    decay = min(max(1.0 - dt / tau, 0.0), 1.0)
    return decay, dt * r / tau, dt * v_leak / tau, theta


def _near_int(x):
    """Whether every value is an integer within float32 noise."""
    x = np.asarray(x, dtype=np.float64)
    return bool(np.all(np.abs(x - np.round(x)) <= _TOLERANCE * np.maximum(1.0, np.abs(x))))


def _leak(where, decay, mode, frac_bits, potential_bits, exact, report):
    if mode == "mul":
        lk = Leak("mul", beta=int(round(decay * 2 ** frac_bits)), frac_bits=frac_bits)
    elif decay == 1:
        lk = Leak("mul", beta=1, frac_bits=0)           # no leak (an IF): 1 - 2^-shift < 1
    else:
        if decay >= 1 - _TOLERANCE:
            raise NIRError(f"{where}: decay {decay:.9g} is too close to 1 for a shift leak "
                           f"(1 - 2^-shift); use --leak mul")
        shift = round(-math.log2(1 - decay))
        lk = Leak("shift", shift=min(max(shift, 1), potential_bits - 1))
    error = abs(lk.beta_float - decay)
    if error > _TOLERANCE:
        if exact:
            raise NIRError(f"{where}: decay {decay:.9g} is not exactly a {mode} leak "
                           f"(nearest {lk.beta_float:.9g}); --exact refuses rounding")
        report.roundings.append(f"{where}: decay {decay:.6g} -> {lk.beta_float:.6g}")
    return lk


def _input_spec(shape, encoding, steps, input_bits):
    if encoding == "delta":
        return InputSpec(tuple(shape), 2, True, "delta", steps)
    if encoding in ("direct", "raw"):
        return InputSpec(tuple(shape), input_bits, False, encoding, steps)
    return InputSpec(tuple(shape), 1, False, encoding, steps)


def _pick(option, meta, key):
    """The option if given, else the metadata's value, else the default."""
    if option is not None:
        return option
    if key in meta and meta[key] is not None:
        return meta[key]
    return DEFAULTS[key]


def _input_shape(order):
    """The Input's shape, or one inferred from the first synapse (snnTorch #410)."""
    name, node = order[0]
    shape = _shape_of(getattr(node, "input_type", None), "input")
    first = next(((n, nd) for n, nd in order[1:] if _type(nd) in _SYNAPSES + ("Flatten",)),
                 None)
    if first is not None:
        fname, fnode = first
        kind = _type(fnode)
        if kind in ("Affine", "Linear"):
            n_in = int(np.asarray(fnode.weight).shape[-1])
            if shape is None or (math.prod(shape) == n_in and len(shape) > 1
                                 and all(s == 1 for s in shape[:-1])):
                return (n_in,)                      # missing, or a leading batch of 1
        elif kind == "Conv2d":
            c = int(np.asarray(fnode.weight).shape[1])
            hw = getattr(fnode, "input_shape", None)
            if shape is not None and len(shape) == 4 and shape[0] == 1:
                shape = shape[1:]                   # a leading batch of 1
            if shape is None:
                if hw is None or not np.asarray(hw).size:
                    raise NIRError(f"{_where(name, node)}: has no shape, and "
                                   f"{_where(fname, fnode)} has no input_shape to infer "
                                   f"height and width from")
                return (c,) + tuple(int(v) for v in np.asarray(hw).reshape(-1))
        elif kind == "Flatten" and shape is None:
            shape = _shape_of(getattr(fnode, "input_type", None), "input")
    if shape is None:
        raise NIRError(f"{_where(name, node)}: has no shape and none can be inferred")
    return shape


def import_graph(graph, options=None):
    """Quantize a NIR graph (a ``nir.NIRGraph`` or a file path) into a bundle.

    Returns ``(bundle, report)``. Per neuron layer, as :func:`models.quantize.quantize` does:
    one scale ``s`` makes the threshold exact (``theta_q = floor(theta qmax / max|g W|)``)
    and rounds ``g W s`` and ``g b s``; with ``exact`` the scale is 1 and any value that is not
    an integer (within float32 noise) is refused instead of rounded. Raises :class:`NIRError`
    (one line, naming the node) for a graph the bundle cannot hold.
    """
    opts = options or ImportOptions()
    if isinstance(graph, (str, Path)):
        graph = read_graph(graph)
    order = _chain(graph)
    in_meta = _meta(order[0][1])
    shape = _input_shape(order)
    encoding = _pick(opts.encoding, in_meta, "encoding")
    steps = int(_pick(opts.steps, in_meta, "steps"))
    if opts.encoding is None and opts.input_bits is None and "bits" in in_meta:
        spec = InputSpec(tuple(shape), int(in_meta["bits"]), bool(in_meta.get("signed", 0)),
                         encoding, steps)
    else:
        spec = _input_spec(shape, encoding, steps,
                           DEFAULTS["input_bits"] if opts.input_bits is None else opts.input_bits)
    report = ImportReport()
    layers = []
    spikes = spec.bits == 1 and not spec.signed          # is the current tensor 0/1?
    body = order[1:-1]
    index = 0
    while index < len(body):
        name, node = body[index]
        kind = _type(node)
        where = _where(name, node)
        if kind == "Flatten":
            nd = len(shape)
            given = _shape_of(getattr(node, "input_type", None), "input")
            if given is not None and math.prod(given) != math.prod(shape):
                raise NIRError(f"{where}: input_type {list(given)} but receives {list(shape)}")
            start, end = int(np.asarray(node.start_dim)), int(np.asarray(node.end_dim))
            if (start % nd if -nd <= start < nd else None) != 0 or end % nd != nd - 1:
                raise NIRError(f"{where}: start_dim {start}, end_dim {end} on {list(shape)} "
                               f"does not flatten everything; the bundle's flatten does")
            layers.append(Layer(name, "flatten", tuple(shape), (math.prod(shape),)))
            shape = (math.prod(shape),)
            index += 1
            continue
        if kind in _NEURONS:
            prev = order[order.index((name, node)) - 1]
            raise NIRError(f"{where}: follows {_where(*prev)}, not a synapse (Affine, Linear, "
                           f"Conv2d, SumPool2d); the bundle's neurons sit behind weights")
        # A synapse, or a run of synapses that compose into one (a SumPool2d before or after a
        # Conv2d, Affine after Affine): the neuron after it completes the layer.
        run = [(name, node)]
        while index + len(run) < len(body) and _type(body[index + len(run)][1]) in _SYNAPSES:
            run.append(body[index + len(run)])
        nxt = body[index + len(run)] if index + len(run) < len(body) else order[-1]
        if _type(nxt[1]) not in _NEURONS:
            raise NIRError(f"{_where(*run[-1])}: feeds {_where(*nxt)}, not a LIF or IF; the "
                           f"bundle needs a neuron after every synapse")
        nname, nnode = nxt
        syn = _synapse(name, node, tuple(shape))
        for (aname, anode), (bname, bnode) in zip(run, run[1:]):
            syn = _compose(_where(aname, anode), _where(bname, bnode), syn,
                           _synapse(bname, bnode, tuple(syn[-1])), tuple(shape))
        lkind, w, b, k, stride, padding, out = syn
        size = math.prod(out)
        meta = {key: value for _, n in run + [nxt] for key, value in _meta(n).items()}
        dt = float(_pick(opts.dt, meta, "dt"))
        decay, gain, bias_add, theta = _neuron_floats(nname, nnode, size, dt)
        if (len(run) == 1 and kind == "SumPool2d" and _type(nnode) == "IF" and spikes
                and k == stride and padding == 0 and 0 <= theta < gain and bias_add == 0):
            # Any spike in the window fires, and reset to 0 leaves nothing: an OR.
            layers.append(Layer(name, "spike_pool", tuple(shape),
                                (shape[0], shape[1] // k, shape[2] // k), kernel=k))
            report.layers.append(f"{name}: SumPool2d + IF {nname!r} -> spike_pool {k}")
            shape = layers[-1].out_shape
            index += 2
            continue
        wbits = int(_pick(opts.weight_bits, meta, "weight_bits"))
        pbits = int(_pick(opts.potential_bits, meta, "potential_bits"))
        reset = _pick(opts.reset, meta, "reset")
        mode = _pick(opts.leak, meta, "leak")
        frac = int(_pick(opts.frac_bits, meta, "frac_bits")) if mode == "mul" else None
        model = meta.get("model", "lif") if meta.get("model") in MODELS else "lif"
        if mode not in LEAKS:
            raise NIRError(f"{_where(nname, nnode)}: leak {mode!r} is not one of "
                           f"{', '.join(LEAKS)}")
        lk = _leak(_where(nname, nnode), decay, mode, frac, pbits, opts.exact, report)
        w = w * gain
        if bias_add != 0:
            extra = np.full(w.shape[0], bias_add)
            b = extra if b is None else b * gain + extra
        elif b is not None:
            b = b * gain
        qmax, pmax = 2 ** (wbits - 1) - 1, 2 ** (pbits - 1) - 1
        if theta < 0:
            raise NIRError(f"{_where(nname, nnode)}: v_threshold {theta:g} is negative; the "
                           f"bundle's thresholds are at least 0")
        if opts.exact:
            scale = 1.0
        else:
            peak = float(np.abs(w).max(initial=0.0))
            if peak == 0:
                scale = 1.0
            elif theta == 0:
                scale = qmax / peak
            else:
                theta_q = min(math.floor(theta * qmax / peak), 2 ** (pbits - 2))
                if theta_q < 1:
                    raise NIRError(f"{_where(nname, nnode)}: threshold {theta:g} is below one "
                                   f"weight step of {wbits}-bit weights; raise --weight-bits")
                scale = theta_q / theta
        values = {"weights": w * scale, "threshold": np.float64(theta * scale)}
        if b is not None:
            values["bias"] = b * scale
        if opts.exact:
            for what, v in values.items():
                if not _near_int(v):
                    v = np.asarray(v).reshape(-1)
                    bad = v[np.abs(v - np.round(v)) > _TOLERANCE * np.maximum(1, np.abs(v))]
                    owner = nname if what == "threshold" else name
                    owner_node = nnode if what == "threshold" else node
                    raise NIRError(f"{_where(owner, owner_node)}: {what} are not integers "
                                   f"(e.g. {bad[0]:.9g}); --exact refuses rounding")
        w_q = np.round(values["weights"]).astype(np.int64)
        theta_q = int(round(float(values["threshold"])))
        b_q = None if b is None else np.round(values["bias"]).astype(np.int64)
        if np.abs(w_q).max(initial=0) > qmax:
            raise NIRError(f"{where}: weights reach {int(np.abs(w_q).max())}, beyond "
                           f"{wbits}-bit range (give --weight-bits)")
        if b_q is not None and np.abs(b_q).max(initial=0) > pmax:
            raise NIRError(f"{where}: bias reaches {int(np.abs(b_q).max())}, beyond "
                           f"{pbits}-bit potentials (give --potential-bits)")
        if theta_q > pmax:
            raise NIRError(f"{_where(nname, nnode)}: threshold {theta_q} does not fit "
                           f"{pbits}-bit potentials (give --potential-bits)")
        neuron = Neuron(model, reset, theta_q, pbits, lk)
        layers.append(Layer(name, lkind, tuple(shape), tuple(out), w_q, b_q, wbits, neuron,
                            k, stride, padding))
        synapses = " + ".join(f"{_type(n)} {m!r}" for m, n in run)
        report.layers.append(f"{name}: {synapses} + {_type(nnode)} {nname!r} -> {lkind} "
                             f"{list(shape)} -> {list(out)}, threshold {theta_q}, "
                             f"{lk.mode} leak {lk.beta_float:g}, scale {scale:g}")
        shape = tuple(out)
        spikes = True
        index += len(run) + 1
    provenance = {"source": "nir", "note": f"imported from a NIR graph of {len(order)} nodes"}
    saved = _meta(graph).get("bundle_provenance")
    if isinstance(saved, str):
        # Written by export_bundle: the bundle's own provenance comes back unchanged.
        try:
            saved = json.loads(saved)
        except ValueError:
            saved = None
        if isinstance(saved, dict):
            provenance = saved
    try:
        bundle = Bundle(spec, layers, provenance=provenance).validate()
    except ValueError as exc:
        raise NIRError(f"graph: {exc}") from None
    return bundle, report


# -- writing ------------------------------------------------------------------------------------

def export_bundle(bundle, *, dt=DEFAULT_DT):
    """The bundle as a ``nir.NIRGraph``; its float semantics equal the golden model's.

    Weights, biases and thresholds are the bundle's integers as floats. A layer with no leak
    (decay 1) becomes an IF with ``r = 1``; any other a LIF with snnTorch's mapping,
    ``tau = dt / (1 - decay)`` and ``r = tau / dt`` (input gain 1). A ``spike_pool`` becomes a
    SumPool2d and an IF with threshold 0.5: any spike in the window fires and the reset to 0
    leaves no state, an OR. Each node's metadata records what NIR cannot say (the reset mode,
    neuron model, leak form, bit widths, the input's encoding and steps); NIR's own reading of
    the graph (reset to 0) equals the bundle for ``reset "zero"`` with model ``"lif"``.
    """
    import nir
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise NIRError(f"dt must be a positive number, not {dt!r}")
    spec = bundle.input
    nodes = {"input": nir.Input(np.array(spec.shape),
                                metadata={"steps": spec.steps, "encoding": spec.encoding,
                                          "bits": spec.bits, "signed": int(spec.signed)})}
    names = ["input"]
    for layer in bundle.layers:
        for reserved in ("input", "output"):
            if layer.name == reserved or layer.name.startswith(reserved + "."):
                raise NIRError(f"layer {layer.name!r}: its name is the graph's {reserved!r} "
                               f"node")
        if layer.kind == "flatten":
            nodes[layer.name] = nir.Flatten(input_type=np.array(layer.in_shape), start_dim=0,
                                            end_dim=-1)
            names.append(layer.name)
            continue
        out = tuple(layer.out_shape)
        if layer.kind == "spike_pool":
            k = layer.kernel
            nodes[layer.name] = nir.SumPool2d(kernel_size=np.array([k, k]),
                                              stride=np.array([k, k]),
                                              padding=np.array([0, 0]))
            nodes[f"{layer.name}.or"] = nir.IF(r=np.ones(out), v_threshold=np.full(out, 0.5),
                                               v_reset=np.zeros(out))
            names += [layer.name, f"{layer.name}.or"]
            continue
        w = layer.weight.astype(np.float64)
        syn_meta = {"weight_bits": layer.weight_bits}
        if layer.kind == "linear":
            if layer.bias is None:
                nodes[layer.name] = nir.Linear(weight=w, metadata=syn_meta)
            else:
                nodes[layer.name] = nir.Affine(weight=w, bias=layer.bias.astype(np.float64),
                                               metadata=syn_meta)
        else:
            bias = (np.zeros(w.shape[0]) if layer.bias is None
                    else layer.bias.astype(np.float64))
            nodes[layer.name] = nir.Conv2d(input_shape=tuple(layer.in_shape[1:]), weight=w,
                                           stride=layer.stride, padding=layer.padding,
                                           dilation=1, groups=1, bias=bias, metadata=syn_meta)
        n = layer.neuron
        lk = n.leak
        meta = {"model": n.model, "reset": n.reset, "potential_bits": n.potential_bits,
                "leak": lk.mode, "dt": float(dt)}
        if lk.mode == "mul":
            meta["frac_bits"] = lk.frac_bits
        theta = np.full(out, float(n.threshold))
        decay = lk.beta_float
        if decay >= 1:
            nodes[f"{layer.name}.if"] = nir.IF(r=np.ones(out), v_threshold=theta,
                                               v_reset=np.zeros(out), metadata=meta)
            names += [layer.name, f"{layer.name}.if"]
        else:
            tau = dt / (1 - decay)
            nodes[f"{layer.name}.lif"] = nir.LIF(tau=np.full(out, tau), r=np.full(out, tau / dt),
                                                 v_leak=np.zeros(out), v_threshold=theta,
                                                 v_reset=np.zeros(out), metadata=meta)
            names += [layer.name, f"{layer.name}.lif"]
    nodes["output"] = nir.Output(np.array(bundle.layers[-1].out_shape))
    names.append("output")
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])), type_check=False,
                         metadata={"bundle_provenance": json.dumps(bundle.provenance)})
    return graph


# -- command line: python -m models nir-import | nir-export ---------------------------------------

#: The subcommands :mod:`models.__main__` hands to :func:`main`.
COMMANDS = ("nir-import", "nir-export")
ENCODINGS = ("rate", "delta", "direct", "latency", "raw")
# models.data.DATASETS, spelled here so that parsing imports no torch.
DATASETS = ("digits", "mnist", "fashion")


def _positive_float(text):
    import argparse
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _parser():
    from gen.cli import OneLineParser, int_arg
    parser = OneLineParser(prog="python -m models",
                           description="NIR graphs in and out (numpy and nir only, no torch).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("nir-import", help="quantize a NIR graph into a bundle")
    p.add_argument("graph", metavar="GRAPH", help="a .nir file (HDF5, as nir.write writes it)")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="bundle folder to write")
    p.add_argument("--dt", type=_positive_float, metavar="DT",
                   help="time step a LIF's tau is read with: decay 1 - DT/tau, gain DT r/tau "
                        f"(default: the graph's metadata, else {DEFAULT_DT:g}, snnTorch's)")
    p.add_argument("--reset", choices=("subtract", "zero"),
                   help="reset of every neuron layer: NIR's own is zero; snnTorch's Leaky "
                        "default is subtract, which its export drops (default: the graph's "
                        "metadata, else zero)")
    p.add_argument("--steps", type=int_arg(1, 1 << 20), metavar="T",
                   help="timesteps per sample (default: metadata, else 25)")
    p.add_argument("--weight-bits", type=int_arg(2, 16), metavar="B",
                   help="signed weight width (default: metadata, else 8)")
    p.add_argument("--potential-bits", type=int_arg(4, 32), metavar="P",
                   help="membrane potential width (default: metadata, else 16)")
    p.add_argument("--leak", choices=LEAKS,
                   help="integer leak the decay becomes (default: metadata, else mul)")
    p.add_argument("--frac-bits", type=int_arg(0, 16), metavar="F",
                   help="fraction bits of the mul leak (default: metadata, else 8)")
    p.add_argument("--exact", action="store_true",
                   help="keep integer-valued weights, biases and thresholds as they are and "
                        "refuse any rounding (of them or of the leak)")
    p.add_argument("--encoding", choices=ENCODINGS,
                   help="input encoding recorded in the bundle (default: metadata, else rate)")
    p.add_argument("--input-bits", type=int_arg(1, 16), metavar="BITS",
                   help="input event value bits for --encoding direct or raw (default: 4)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--events", metavar="NPZ",
                      help="input events to write vectors.npz from: an .npz with 'events' "
                           "[n, 4] (sample, step, addr, value) and optionally 'samples', "
                           "'steps', 'labels' (a bundle's vectors.npz is one)")
    data.add_argument("--dataset", choices=DATASETS,
                      help="encode this data set's test split with the bundle's encoding and "
                           "steps (as python -m models export does; needs torch) and write "
                           "vectors.npz with labels")
    p.add_argument("--samples", type=int_arg(1, 1 << 20), metavar="N",
                   help="test samples of --dataset (default: all)")

    p = sub.add_parser("nir-export", help="write a bundle as a NIR graph")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder")
    p.add_argument("-o", "--output", metavar="GRAPH", required=True, help=".nir file to write")
    p.add_argument("--dt", type=_positive_float, default=DEFAULT_DT, metavar="DT",
                   help="time step tau is written for: tau = DT / (1 - decay), r = tau / DT "
                        "(default: %(default)s, snnTorch's)")
    return parser


def _read_events(path, steps):
    """``(events, samples, labels)`` from an .npz file (see ``--events``)."""
    from . import bundle as bundle_io
    arrays = bundle_io._read_npz(Path(path))        # never unpickles; one-line errors
    if "events" not in arrays:
        raise NIRError(f"{path}: holds no 'events' array")
    events = np.asarray(arrays["events"])
    if (events.ndim != 2 or events.shape[1] != 4
            or not np.issubdtype(events.dtype, np.integer)):
        raise NIRError(f"{path}: 'events' must be an integer array [n, 4] (sample, step, addr, "
                       f"value), not {events.dtype} {list(events.shape)}")
    if "steps" in arrays and int(arrays["steps"]) != steps:
        raise NIRError(f"{path}: holds {int(arrays['steps'])} steps, and the bundle has {steps} "
                       f"(give --steps {int(arrays['steps'])})")
    samples = (int(arrays["samples"]) if "samples" in arrays
               else int(events[:, 0].max()) + 1 if len(events) else 1)
    return events.astype(np.int64), samples, arrays.get("labels")


def _dataset_events(name, spec, samples):
    """``(events, samples, labels)``: the test split of data set ``name``, encoded as
    ``python -m models export`` encodes it (the training configuration's test seed)."""
    if spec.encoding not in ("rate", "delta", "direct", "latency"):
        raise NIRError(f"--dataset encodes with --encoding rate, delta, direct or latency, not "
                       f"{spec.encoding}")
    try:
        import torch

        from .data import TrainConfig, encode_chunks, load_split
        from .encoders import to_events
    except ImportError as exc:
        raise NIRError(f"--dataset encodes with the snnTorch side of this project, which needs "
                       f"torch ({exc}); give --events instead") from None
    _, _, images, labels = load_split(name)
    if math.prod(images.shape[1:]) != spec.size:
        raise NIRError(f"--dataset {name}: images of {list(images.shape[1:])} do not fit the "
                       f"graph's input {list(spec.shape)}")
    tcfg = TrainConfig(dataset=name, encoding=spec.encoding, steps=spec.steps,
                       direct_bits=spec.bits if spec.encoding == "direct" else 4).check()
    n = len(labels) if samples is None else min(samples, len(labels))
    encoded = torch.cat([x for _, _, x in encode_chunks(images, tcfg, tcfg.test_seed, limit=n)],
                        dim=1)
    return to_events(encoded), n, np.asarray(labels[:n])


def _nir_import(args):
    from . import bundle as bundle_io
    from . import golden
    if args.frac_bits is not None and args.leak == "shift":
        raise NIRError("--frac-bits applies to --leak mul, not shift")
    if args.input_bits is not None and args.encoding not in ("direct", "raw"):
        raise NIRError(f"--input-bits applies to --encoding direct or raw, not "
                       f"{args.encoding or 'the default'}")
    options = ImportOptions(dt=args.dt, reset=args.reset, steps=args.steps,
                            weight_bits=args.weight_bits, potential_bits=args.potential_bits,
                            leak=args.leak, frac_bits=args.frac_bits, encoding=args.encoding,
                            input_bits=args.input_bits, exact=args.exact)
    if args.samples is not None and args.dataset is None:
        raise NIRError("--samples applies to --dataset")
    bundle, report = import_graph(args.graph, options)
    if args.events or args.dataset:
        events, samples, labels = (_read_events(args.events, bundle.input.steps) if args.events
                                   else _dataset_events(args.dataset, bundle.input,
                                                        args.samples))
        bundle.vectors = golden.make_vectors(bundle, events, samples, labels=labels)
    bundle_io.save(bundle, args.output)
    for line in report.layers:
        print(line)
    if report.roundings:
        print(f"leak rounded in {len(report.roundings)} layers: " + "; ".join(report.roundings))
    extra = ""
    if bundle.vectors is not None:
        v = bundle.vectors
        extra = f", vectors of {v.samples} samples"
        if v.labels is not None:
            extra += (f" (golden accuracy {100 * float(np.mean(v.predictions == v.labels)):.2f}"
                      f"%)")
    print(f"wrote {args.output}: {len(bundle.layers)} layers, "
          f"{len(bundle.neuron_layers)} with neurons{extra}")
    return 0


def _nir_export(args):
    from . import bundle as bundle_io
    bundle = bundle_io.load(args.bundle)
    graph = export_bundle(bundle, dt=args.dt)
    write_graph(graph, args.output)
    kinds = {}
    for node in graph.nodes.values():
        kinds[_type(node)] = kinds.get(_type(node), 0) + 1
    print(f"wrote {args.output}: {len(graph.nodes)} nodes ("
          + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")")
    return 0


def main(argv=None):
    """``python -m models nir-import|nir-export``; errors are one line, exit status 2."""
    from .bundle import BundleError
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return {"nir-import": _nir_import, "nir-export": _nir_export}[args.command](args)
    except (ValueError, TypeError, BundleError, OSError) as exc:
        message = " ".join(str(exc).split())
        parser.exit(2, f"{parser.prog} {args.command}: error: {message}\n")
