"""NIR in and out (models.nir): snnTorch's own export, round trips, and graphs written by nir.

* snnTorch networks with values that make the float math exact (as in test_snntorch_exact.py)
  go through snnTorch's ``export_to_nir`` and our importer; the golden model's spikes equal
  snnTorch's simulation on every layer, step and neuron.
* bundle -> NIR -> bundle is the identity: the zoo bundles come back byte for byte (with the
  vectors recomputed from their events), random bundles of every leak, reset and model too.
* Graphs written with the ``nir`` package alone (no torch): a float simulation of NIR's own
  semantics (reset to 0) equals the golden model of the imported bundle, missing shape metadata
  is inferred, and every refused node kind gives its one-line message (exit 2 from the CLI).
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nir

# snnTorch's exporter goes through nirtorch's deprecated extract_nir_graph, and writes beta = 1
# as tau = dt / 0 (infinite, which the importer reads as no leak).
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:nirtorch.*"),
              pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")]

from models import bundle as bundle_io  # noqa: E402
from models import golden  # noqa: E402
from models.nir import (  # noqa: E402
    REFUSED, ImportOptions, NIRError, export_bundle, import_graph, main, write_graph)

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "models" / "zoo"
DT = 1e-4


# -- snnTorch's export_to_nir -> our importer -> golden model == snnTorch --------------------------

# name: (beta, leak mode, frac_bits, unit, steps); ``unit`` keeps leaked potentials exact.
SNN_LEAKS = {
    "beta1": (1.0, "mul", 0, 1, 20),
    "shift1/2": (0.5, "shift", None, 2 ** 8, 8),
    "mul3/4": (0.75, "mul", 2, 2 ** 12, 6),
}


def snntorch_net(arch, beta, reset, unit, *, seed):
    """A Sequential of torch synapses and snn.Leaky with integer values (times ``unit``).

    Every Leaky gets per-neuron ``beta`` and ``threshold`` tensors: with scalars, snnTorch writes
    LIF nodes of shape () and its own ``export_to_nir`` fails in ``infer_types`` (snnTorch #410);
    the scalar case is checked below through snnTorch's node mapping without that call.
    """
    import snntorch as snn
    import torch
    gen = torch.Generator().manual_seed(seed)

    def leaky(shape, threshold):
        return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.full(shape, threshold),
                         reset_mechanism=reset, init_hidden=True)

    if arch == "mlp":
        modules = [torch.nn.Linear(64, 24), leaky((24,), 3 * unit),
                   torch.nn.Linear(24, 10), leaky((10,), 2 * unit)]
    else:
        modules = [torch.nn.Conv2d(1, 4, 3, padding=1), leaky((4, 8, 8), 3 * unit),
                   torch.nn.Conv2d(4, 6, 3, stride=2, padding=1), leaky((6, 4, 4), 3 * unit),
                   torch.nn.Flatten(start_dim=0), torch.nn.Linear(96, 10), leaky((10,), 2 * unit)]
    with torch.no_grad():
        for m in modules:
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                w = torch.randint(-3, 4, m.weight.shape, generator=gen).float()
                w[torch.rand(w.shape, generator=gen) < 0.5] = 0
                m.weight.copy_(w * unit)
                m.bias.copy_(torch.randint(-1, 2, m.bias.shape, generator=gen) * unit)
    return torch.nn.Sequential(*modules)


def snntorch_run(net, x):
    """snnTorch's simulation of ``net`` on ``x`` [T, B, ...]: spikes [B, T, n] per Leaky."""
    import snntorch as snn
    import torch
    from snntorch import utils
    utils.reset(net)
    steps = x.shape[0]
    record = {}
    with torch.no_grad():
        for t in range(steps):
            a = x[t]
            for index, m in enumerate(net):
                a = a.flatten(1) if isinstance(m, torch.nn.Flatten) else m(a)
                if isinstance(m, snn.Leaky):
                    record.setdefault(index, []).append(a.reshape(a.shape[0], -1).numpy())
    return [np.stack(v, axis=1).astype(np.int8) for _, v in sorted(record.items())]


def compare_snntorch(arch, leak_name, reset, *, samples=12, seed=0, graph=None):
    """Export with snnTorch, import, run both; return (compared, mismatches, bundle, trace)."""
    import torch
    from snntorch.export_nir import export_to_nir

    from models.encoders import encode
    beta, mode, frac_bits, unit, steps = SNN_LEAKS[leak_name]
    net = snntorch_net(arch, beta, reset, unit, seed=seed)
    in_shape = (64,) if arch == "mlp" else (1, 8, 8)
    encoding = "rate" if arch == "mlp" else "direct"
    images = torch.rand((samples, 1, 8, 8), generator=torch.Generator().manual_seed(seed + 1))
    x = encode(images, encoding, steps=steps, bits=2, seed=seed).reshape(
        (steps, samples) + in_shape)
    if graph is None:
        graph = export_to_nir(net, torch.zeros(in_shape))       # unbatched: snnTorch's Input
    theirs = snntorch_run(net, x)
    options = ImportOptions(reset=reset, leak=mode, frac_bits=frac_bits, weight_bits=16,
                            potential_bits=32, steps=steps, encoding=encoding,
                            input_bits=2 if encoding == "direct" else None, exact=True)
    bundle, _ = import_graph(graph, options)
    dense = x.numpy().reshape(steps, samples, -1).transpose(1, 0, 2).astype(np.int64)
    trace = golden.run(bundle, dense, keep_potentials=True)
    ours = [s for layer, s in zip(bundle.layers, trace.spikes) if layer.has_neurons]
    assert len(ours) == len(theirs)
    compared = mismatches = 0
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        compared += a.size
        mismatches += int((a != b).sum())
    return compared, mismatches, bundle, trace


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("leak_name", list(SNN_LEAKS))
@pytest.mark.parametrize("arch", ["mlp", "csnn"])
def test_snntorch_export_equals_golden(arch, leak_name, reset, tmp_path, record_property):
    import torch
    from snntorch.export_nir import export_to_nir
    beta, *_ = SNN_LEAKS[leak_name]
    net = snntorch_net(arch, beta, reset, SNN_LEAKS[leak_name][3], seed=0)
    in_shape = (64,) if arch == "mlp" else (1, 8, 8)
    # Through the file, as a user hands it over: nir.write, then our reader.
    path = write_graph(export_to_nir(net, torch.zeros(in_shape)), tmp_path / "snn.nir")
    compared, mismatches, bundle, trace = compare_snntorch(arch, leak_name, reset,
                                                           graph=str(path))
    record_property("spikes_compared", compared)
    record_property("mismatches", mismatches)
    print(f"{arch} {leak_name} {reset}: {compared} spikes compared, {mismatches} mismatches")
    assert mismatches == 0, f"{mismatches} of {compared} spikes differ"
    for layer, spikes, pots in zip(bundle.layers, trace.spikes, trace.potentials):
        if layer.has_neurons:           # something to disagree about, and no clamp
            assert 0 < spikes.mean() < 1, f"{layer.name} fires {spikes.mean():.3f}"
            assert pots.max() < layer.neuron.hi and pots.min() > layer.neuron.lo


def test_snntorch_comparison_detects_a_wrong_reset():
    """Importing a subtract-reset network as reset zero shows up as mismatches."""
    import torch
    from snntorch.export_nir import export_to_nir
    net = snntorch_net("mlp", 1.0, "subtract", 1, seed=0)
    graph = export_to_nir(net, torch.zeros(64))
    for node in graph.nodes.values():
        node.metadata = {}
    import models.nir as mnir
    bundle, _ = mnir.import_graph(graph, ImportOptions(reset="zero", weight_bits=16,
                                                       potential_bits=32, steps=20, exact=True))
    from models.encoders import encode
    images = torch.rand((12, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    x = encode(images, "rate", steps=20, seed=0).reshape(20, 12, 64)
    theirs = snntorch_run(net, x)
    dense = x.numpy().transpose(1, 0, 2).astype(np.int64)
    ours = [s for layer, s in zip(bundle.layers, golden.run(bundle, dense).spikes)
            if layer.has_neurons]
    assert sum(int((a != b).sum()) for a, b in zip(ours, theirs)) > 0


def test_snntorch_scalar_parameters_missing_shapes():
    """snnTorch #410: scalar Leaky parameters give LIF nodes of shape (); export_to_nir's final
    ``infer_types`` raises on them, and nirtorch's graph before it imports fine."""
    import nirtorch
    import snntorch as snn
    import torch
    from snntorch.export_nir import _extract_snntorch_module, export_to_nir
    net = snntorch_net("mlp", 0.5, "subtract", 2 ** 8, seed=3)
    scalar = torch.nn.Sequential(
        net[0], snn.Leaky(beta=0.5, threshold=3.0 * 2 ** 8, init_hidden=True),
        net[2], snn.Leaky(beta=0.5, threshold=2.0 * 2 ** 8, init_hidden=True))
    with pytest.raises(ValueError, match="Type inference error"):
        export_to_nir(scalar, torch.zeros(64))
    graph = nirtorch.extract_nir_graph(scalar, _extract_snntorch_module, torch.zeros(64),
                                       model_name="snntorch",
                                       ignore_submodules_of=[snn.RLeaky, snn.RSynaptic])
    lifs = [n for n in graph.nodes.values() if type(n).__name__ == "LIF"]
    assert lifs and all(np.asarray(n.v_threshold).shape in ((), (1,)) for n in lifs)
    compared, mismatches, _, _ = compare_snntorch("mlp", "shift1/2", "subtract", seed=3,
                                                  graph=graph)
    assert compared > 0 and mismatches == 0


@pytest.mark.parametrize("seed", [2, 5])
def test_snntorch_import_of_our_export_equals_golden(seed, record_property):
    """The other way: snnTorch's ``import_from_nir`` reads our export of a reset-zero bundle
    (NIR's own reset, which it builds as ``Leaky(reset_mechanism="zero")``) and its simulation
    equals the golden model on every layer and step."""
    import snntorch as snn
    import torch
    from snntorch.import_nir import import_from_nir

    from models.bundle import Leak, Neuron
    from models.synth import random_linear_bundle
    b = random_linear_bundle(n_in=16, n_out=6, hidden=12, layers=3, sparsity=0.3, seed=seed,
                             weight_bits=6, potential_bits=16, steps=8, bias=True,
                             neuron=Neuron("lif", "zero", 24, 16, Leak("shift", shift=1)))
    module = import_from_nir(export_bundle(b))
    leakies = [m for m in module.modules() if isinstance(m, snn.Leaky)]
    assert len(leakies) == len(b.neuron_layers)
    record = {id(m): [] for m in leakies}
    for m in leakies:
        m.register_forward_hook(lambda mod, _, out: record[id(mod)].append(out.numpy()))
    x = (np.random.default_rng(seed).random((10, 8, 16)) < 0.5).astype(np.int64)
    state = None
    with torch.no_grad():
        for t in range(8):
            _, state = module(torch.tensor(x[:, t], dtype=torch.float32), state)
    theirs = [np.stack(record[id(m)], axis=1) for m in leakies]
    ours = golden.run(b, x).spikes
    compared = sum(a.size for a in ours)
    mismatches = sum(int((a != c).sum()) for a, c in zip(ours, theirs))
    record_property("spikes_compared", compared)
    print(f"snnTorch import_from_nir, seed {seed}: {compared} spikes compared, "
          f"{mismatches} mismatches")
    assert mismatches == 0
    assert all(0 < a.mean() < 1 for a in ours)


# -- bundle -> NIR -> bundle ----------------------------------------------------------------------

def assert_same_bundle(a, b):
    assert a.to_json() == b.to_json()
    for la, lb in zip(a.layers, b.layers):
        if la.has_neurons:
            assert np.array_equal(la.weight, lb.weight)
            assert (la.bias is None) == (lb.bias is None)
            if la.bias is not None:
                assert np.array_equal(la.bias, lb.bias)


@pytest.mark.parametrize("name", sorted(p.name for p in ZOO.iterdir() if p.is_dir()))
def test_zoo_round_trip_is_identity(name, tmp_path):
    original = bundle_io.load(ZOO / name)
    path = write_graph(export_bundle(original), tmp_path / f"{name}.nir")
    nir.read(path)                                   # nir's own reader, with its type check
    back, report = import_graph(path, ImportOptions(exact=True))
    assert not report.roundings
    assert_same_bundle(original, back)
    back.vectors = golden.make_vectors(back, original.vectors.events, original.vectors.samples,
                                       labels=original.vectors.labels)
    out = bundle_io.save(back, tmp_path / name)
    for file in ("bundle.json", "weights.npz", "vectors.npz"):
        assert (out / file).read_bytes() == (ZOO / name / file).read_bytes(), file


def random_bundles():
    from models.bundle import Leak, Neuron
    from models.synth import random_csnn_bundle, random_linear_bundle
    cases = []
    for seed, (model, reset, leak) in enumerate([
            ("lif", "zero", Leak("shift", shift=3)), ("lapicque", "zero", Leak("mul", 0, 4)),
            ("lif", "none", Leak("mul", beta=64, frac_bits=6)),
            ("lapicque", "subtract", Leak("shift", shift=1))]):
        neuron = Neuron(model, reset, 40, 12, leak)
        cases.append(random_linear_bundle(n_in=20, n_out=6, hidden=12, layers=2, sparsity=0.5,
                                          seed=seed, weight_bits=5, potential_bits=12,
                                          neuron=neuron, bias=seed % 2 == 0, input_bits=3,
                                          input_signed=True, steps=5))
    cases.append(random_csnn_bundle(in_shape=(2, 10, 10), channels=(3,), kernel=5, stride=2,
                                    padding=2, pool=0, n_out=5, sparsity=0.5, seed=7, steps=4))
    cases.append(random_csnn_bundle(in_shape=(2, 10, 10), channels=(3, 4), kernel=3, stride=1,
                                    padding=1, pool=2, n_out=5, sparsity=0.5, seed=8, steps=4))
    return cases


@pytest.mark.parametrize("index", range(6))
def test_random_round_trip_is_identity(index, tmp_path):
    original = random_bundles()[index]
    path = write_graph(export_bundle(original, dt=1e-3), tmp_path / "g.nir")
    back, _ = import_graph(path, ImportOptions(exact=True))
    assert_same_bundle(original, back)


# -- graphs written by the nir package (no torch) --------------------------------------------------

def simulate_nir(graph, x, dt):
    """NIR's own float semantics, forward Euler with ``dt``, reset to ``v_reset`` in the step.

    ``x`` [S, T, *input shape] float; returns the spikes [S, T, n] of every LIF and IF in order.
    The reference the importer's mapping is checked against; written from the node equations
    in the nir package's docstrings, independent of models.nir.
    """
    order, succ = [], {a: b for a, b in graph.edges}
    name = next(n for n, node in graph.nodes.items() if type(node).__name__ == "Input")
    while name in succ:
        name = succ[name]
        order.append((name, graph.nodes[name]))
    samples, steps = x.shape[:2]
    state, out = {}, {}
    for t in range(steps):
        a = x[:, t].astype(np.float64)
        for name, node in order:
            kind = type(node).__name__
            if kind in ("Affine", "Linear"):
                a = a @ np.asarray(node.weight, dtype=np.float64).T
                if kind == "Affine":
                    a = a + node.bias
            elif kind in ("Conv2d", "SumPool2d"):
                if kind == "Conv2d":
                    w = np.asarray(node.weight, dtype=np.float64)
                    stride, pad = int(np.ravel(node.stride)[0]), int(np.ravel(node.padding)[0])
                    bias = np.asarray(node.bias, dtype=np.float64)
                else:
                    k = int(np.ravel(node.kernel_size)[0])
                    c = a.shape[1]
                    w = np.zeros((c, c, k, k))
                    w[range(c), range(c)] = 1
                    stride, pad = int(np.ravel(node.stride)[0]), int(np.ravel(node.padding)[0])
                    bias = np.zeros(c)
                kh = w.shape[2]
                ap = np.pad(a, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
                ho = (ap.shape[2] - kh) // stride + 1
                wo = (ap.shape[3] - kh) // stride + 1
                y = np.zeros((a.shape[0], w.shape[0], ho, wo))
                for i in range(ho):
                    for j in range(wo):
                        patch = ap[:, :, i * stride:i * stride + kh, j * stride:j * stride + kh]
                        y[:, :, i, j] = np.einsum("schw,kchw->sk", patch, w) + bias
                a = y
            elif kind == "Flatten":
                a = a.reshape(a.shape[0], -1)
            elif kind in ("LIF", "IF"):
                v = state.get(name, np.zeros_like(a))
                if kind == "LIF":
                    tau = np.broadcast_to(node.tau, a.shape[1:])
                    v = v + dt / tau * (node.v_leak - v + node.r * a)
                else:
                    v = v + node.r * a
                z = v > node.v_threshold
                state[name] = np.where(z, np.broadcast_to(node.v_reset, v.shape), v)
                a = z.astype(np.float64)
                out.setdefault(name, []).append(a.reshape(a.shape[0], -1))
    return [np.stack(v, axis=1).astype(np.int8) for v in out.values()]


def nir_graph(*pairs, shape, type_check=False):
    """A chain graph ``input -> pairs... -> output`` from ``(name, node)`` pairs."""
    nodes = {"input": nir.Input(np.array(shape))}
    nodes.update(pairs)
    nodes["output"] = nir.Output(np.array([1]))
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:])),
                        type_check=type_check)


def lif(shape, *, decay, threshold, gain=1.0, v_leak=0.0, dt=DT):
    """A LIF whose Euler step of ``dt`` decays by ``decay`` with input gain ``gain``."""
    tau = dt / (1 - decay)
    full = (lambda v: np.full(shape, float(v))) if shape is not None else np.array
    return nir.LIF(tau=full(tau), r=full(gain * tau / dt), v_leak=full(v_leak),
                   v_threshold=full(threshold), v_reset=full(0.0))


def written_graph(dt=DT):
    """Conv (stride 2) -> LIF, SumPool-as-OR, SumPool-as-conv -> LIF, Flatten, Affine -> IF,
    Linear -> LIF with gain 2 and a v_leak: every mapping, float-exact at decay 1/2."""
    rng = np.random.default_rng(4)

    def ints(shape, lo=-3, hi=4):
        w = rng.integers(lo, hi, shape).astype(np.float64)
        w[rng.random(shape) < 0.4] = 0
        return w
    u = 2.0 ** 8
    return nir_graph(
        ("conv", nir.Conv2d(input_shape=(9, 9), weight=ints((4, 2, 3, 3)) * u, stride=1,
                            padding=1, dilation=1, groups=1, bias=ints((4,), -1, 2) * u)),
        ("conv.lif", lif((4, 9, 9), decay=0.5, threshold=3 * u, dt=dt)),
        ("pool", nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                               padding=np.array([0, 0]))),
        ("pool.or", nir.IF(r=np.ones((4, 4, 4)), v_threshold=np.full((4, 4, 4), 0.5))),
        ("sum", nir.SumPool2d(kernel_size=np.array([3, 3]), stride=np.array([1, 1]),
                              padding=np.array([1, 1]))),
        ("sum.if", nir.IF(r=np.ones((4, 4, 4)), v_threshold=np.full((4, 4, 4), 2.0))),
        ("flat", nir.Flatten(input_type=np.array([4, 4, 4]), start_dim=0)),
        ("fc1", nir.Affine(weight=ints((16, 64)), bias=ints((16,), -1, 2))),
        ("fc1.if", nir.IF(r=np.ones(16), v_threshold=np.full(16, 3.0))),
        ("fc2", nir.Linear(weight=ints((6, 16)) * u)),
        ("fc2.lif", lif((6,), decay=0.5, threshold=4 * u, gain=2.0, v_leak=u / 2, dt=dt)),
        shape=[2, 9, 9])


def run_written(graph, tmp_path, dt=DT, *, samples=10, steps=8, **options):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, (samples, steps) + (2, 9, 9))
    path = write_graph(graph, tmp_path / "w.nir")
    bundle, report = import_graph(path, ImportOptions(
        exact=True, dt=dt, steps=steps, encoding="direct", input_bits=2, weight_bits=16,
        potential_bits=32, reset="zero", **options))
    theirs = simulate_nir(graph, x, dt)
    trace = golden.run(bundle, x.reshape(samples, steps, -1))
    return bundle, report, trace, theirs


@pytest.mark.parametrize("dt", [DT, 1e-3])
def test_written_graph_equals_nir_semantics(dt, tmp_path, record_property):
    graph = written_graph(dt)
    bundle, report, trace, theirs = run_written(graph, tmp_path, dt)
    assert [layer.kind for layer in bundle.layers] == [
        "conv2d", "spike_pool", "conv2d", "flatten", "linear", "linear"]
    pool = bundle.layers[2]
    assert (pool.kernel, pool.stride, pool.padding) == (3, 1, 1)
    assert np.array_equal(pool.weight[:, :, 1, 1], np.eye(4))       # one-per-channel ones
    fc2 = bundle.layers[-1]
    assert fc2.bias is not None and set(fc2.bias.tolist()) == {64}   # dt v_leak / tau = 128 / 2
    ours = [s for layer, s in zip(bundle.layers, trace.spikes)
            if layer.kind != "flatten"]
    compared = sum(s.size for s in ours)
    mismatches = sum(int((a != b).sum()) for a, b in zip(ours, theirs))
    record_property("spikes_compared", compared)
    print(f"written graph, dt {dt}: {compared} spikes compared, {mismatches} mismatches")
    assert mismatches == 0
    for s in ours:
        assert 0 < s.mean() < 1


def test_composed_synapses_equal_nir_semantics(tmp_path, record_property):
    """Synapses with no neuron between become one layer: a SumPool2d then a padded Conv2d (as
    Sinabs writes pooling), a Conv2d then a SumPool2d, an Affine then an Affine."""
    rng = np.random.default_rng(8)

    def ints(shape, lo=-2, hi=3):
        w = rng.integers(lo, hi, shape).astype(np.float64)
        w[rng.random(shape) < 0.3] = 0
        return w

    def conv(c_in, c_out, k, padding, bias=True):
        return nir.Conv2d(input_shape=None, weight=ints((c_out, c_in, k, k)), stride=1,
                          padding=padding, dilation=1, groups=1,
                          bias=ints((c_out,), -1, 2) if bias else np.zeros(c_out))

    def pool():
        return nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                             padding=np.array([0, 0]))

    def neuron(shape, threshold):
        return nir.IF(r=np.ones(shape), v_threshold=np.full(shape, float(threshold)))

    graph = nir_graph(
        ("c1", conv(2, 3, 3, 1)), ("c1.if", neuron((3, 8, 8), 2)),
        ("p1", pool()), ("c2", conv(3, 4, 3, 1)), ("c2.if", neuron((4, 4, 4), 4)),
        ("c3", conv(4, 5, 3, 0)), ("p3", pool()), ("c3.if", neuron((5, 1, 1), 4)),
        ("flat", nir.Flatten(input_type=np.array([5, 1, 1]), start_dim=0)),
        ("fc1", nir.Affine(weight=ints((7, 5)), bias=ints((7,), -1, 2))),
        ("fc2", nir.Affine(weight=ints((6, 7)), bias=ints((6,), -1, 2))),
        ("fc.if", neuron((6,), 2)), shape=[2, 8, 8])
    x = rng.integers(0, 2, (12, 10, 2, 8, 8))
    bundle, report = import_graph(graph, ImportOptions(exact=True, steps=10, weight_bits=16,
                                                       potential_bits=32, reset="zero"))
    assert [(layer.kind, layer.kernel, layer.stride, layer.padding) for layer in bundle.layers
            ] == [("conv2d", 3, 1, 1), ("conv2d", 6, 2, 2), ("conv2d", 4, 2, 0),
                  ("flatten", None, 1, 0), ("linear", None, 1, 0)]
    assert report.layers[1].startswith("p1: SumPool2d 'p1' + Conv2d 'c2' + IF 'c2.if'")
    theirs = simulate_nir(graph, x, DT)
    ours = [s for layer, s in zip(bundle.layers, golden.run(bundle, x.reshape(12, 10, -1)).spikes)
            if layer.has_neurons]
    compared = sum(a.size for a in ours)
    mismatches = sum(int((a != c).sum()) for a, c in zip(ours, theirs))
    record_property("spikes_compared", compared)
    print(f"composed synapses: {compared} spikes compared, {mismatches} mismatches")
    assert mismatches == 0
    for a in ours:
        assert 0 < a.mean() < 1


def test_written_graph_rounds_without_exact(tmp_path):
    """Without --exact the weights take the full 8-bit range and thresholds stay exact."""
    graph = written_graph()
    path = write_graph(graph, tmp_path / "w.nir")
    bundle, report = import_graph(path, ImportOptions(leak="shift"))
    assert not report.roundings                                 # 1/2 is a shift leak
    conv = bundle.layers[0]
    assert np.abs(conv.weight).max() == 127 and conv.weight_bits == 8
    assert conv.neuron.threshold == 127           # 3u * 127 / 3u: exact, as quantize()
    bundle, report = import_graph(path, ImportOptions(frac_bits=3))
    assert not report.roundings
    graph.nodes["conv.lif"] = lif((4, 9, 9), decay=0.3, threshold=3.0 * 2 ** 8)
    bundle, report = import_graph(graph, ImportOptions(frac_bits=3))
    assert report.roundings == ["node 'conv.lif' (LIF): decay 0.3 -> 0.25"]
    with pytest.raises(NIRError, match=r"^node 'conv.lif' \(LIF\): decay 0.3 is not exactly a "
                                       r"mul leak \(nearest 0.25\); --exact refuses rounding$"):
        import_graph(graph, ImportOptions(frac_bits=3, exact=True))


def test_missing_metadata_is_inferred(tmp_path):
    """Shapes absent from the graph come from the weights (snnTorch #410 and its kind)."""
    rng = np.random.default_rng(6)
    w1 = rng.integers(-2, 3, (5, 2, 3, 3)).astype(np.float64)
    w2 = rng.integers(-2, 3, (4, 5 * 4 * 4)).astype(np.float64)
    full = written = nir_graph(
        ("c", nir.Conv2d(input_shape=(4, 4), weight=w1, stride=1, padding="same", dilation=1,
                         groups=1, bias=np.zeros(5))),
        ("c.lif", lif(None, decay=0.5, threshold=np.array(2.0))),     # shape ()
        ("f", nir.Flatten(input_type=np.array([5, 4, 4]), start_dim=0)),
        ("a", nir.Linear(weight=w2)),
        ("a.lif", lif((1,), decay=0.5, threshold=2.0)),               # shape (1,)
        shape=[2, 4, 4])
    path = write_graph(written, tmp_path / "m.nir")         # scalar shapes write uncompressed
    reference, _ = import_graph(full, ImportOptions(exact=True))
    assert reference.layers[0].padding == 1                  # "same" with kernel 3
    assert_same_bundle(reference, import_graph(path, ImportOptions(exact=True))[0])
    # A Conv2d without input_shape (nir 1.0.8's reader cannot read one from a file, so in
    # memory): height and width come from the Input.
    written.nodes["c"].input_shape = None
    assert_same_bundle(reference, import_graph(written, ImportOptions(exact=True))[0])
    # In memory: no Input shape, no Conv2d input_shape (refused: nothing to infer H, W from),
    # no Flatten input_type, a batch of 1 in front of an MLP's input.
    mem = nir_graph(("c", nir.Conv2d(input_shape=(4, 4), weight=w1, stride=1, padding=1,
                                     dilation=1, groups=1, bias=np.zeros(5))),
                    ("c.lif", lif(None, decay=0.5, threshold=np.array(2.0))),
                    ("f", nir.Flatten(input_type=None, start_dim=0)),
                    ("a", nir.Linear(weight=w2)), ("a.lif", lif((1,), decay=0.5, threshold=2.0)),
                    shape=[2, 4, 4])
    mem.nodes["input"] = nir.Input(None)
    assert_same_bundle(reference, import_graph(mem, ImportOptions(exact=True))[0])
    mem.nodes["c"].input_shape = None
    with pytest.raises(NIRError, match=r"^node 'input' \(Input\): has no shape, and node 'c' "
                                       r"\(Conv2d\) has no input_shape to infer height and "
                                       r"width from$"):
        import_graph(mem)
    mlp = nir_graph(("a", nir.Linear(weight=w2)), ("a.lif", lif((1,), decay=0.5, threshold=2.0)),
                    shape=[1, 80])
    assert import_graph(mlp)[0].input.shape == (80,)


def _refused_graphs():
    """(node kind or case, graph, message) for every node kind and structure refused."""
    w = np.ones((3, 3))
    aff = ("fc", nir.Affine(weight=w, bias=np.zeros(3)))
    three = np.ones(3)
    cases = {
        "CubaLIF": nir.CubaLIF(tau_syn=three, tau_mem=three, r=three, v_leak=0 * three,
                               v_threshold=three),
        "CubaLI": nir.CubaLI(tau_syn=three, tau_mem=three, r=three, v_leak=0 * three),
        "LI": nir.LI(tau=three, r=three, v_leak=0 * three),
        "I": nir.I(r=three),
        "Delay": nir.Delay(delay=three),
        "Threshold": nir.Threshold(threshold=three),
        "Scale": nir.Scale(scale=three),
    }
    out = [(kind, nir_graph(aff, ("bad", node), shape=[3]), f"node 'bad' ({kind}): "
            + REFUSED[kind]) for kind, node in cases.items()]
    square = np.ones((1, 1, 4, 4))
    out.append(("AvgPool2d", nir_graph(
        ("bad", nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                              padding=np.array([0, 0]))), shape=[1, 4, 4]),
        "node 'bad' (AvgPool2d): " + REFUSED["AvgPool2d"]))
    out.append(("Conv1d", nir_graph(
        ("bad", nir.Conv1d(input_shape=4, weight=np.ones((1, 1, 3)), stride=1, padding=1,
                           dilation=1, groups=1, bias=np.zeros(1))), shape=[1, 4]),
        "node 'bad' (Conv1d): " + REFUSED["Conv1d"]))
    sub = nir.NIRGraph(nodes={"i": nir.Input(np.array([3])), "l": lif((3,), decay=0.5,
                                                                       threshold=1.0),
                              "w": nir.Linear(weight=w), "o": nir.Output(np.array([3]))},
                       edges=[("i", "l"), ("l", "w"), ("w", "l"), ("l", "o")], type_check=False)
    out.append(("NIRGraph", nir_graph(aff, ("bad", sub), shape=[3]),
                "node 'bad' (NIRGraph): " + REFUSED["NIRGraph"]))
    g = nir_graph(aff, ("fc.lif", lif((3,), decay=0.5, threshold=1.0)), shape=[3])
    g.edges.append(("fc.lif", "fc.lif"))
    out.append(("self-edge", g, "node 'fc.lif' (LIF): has an edge to itself (recurrence); the "
                                "bundle is feed-forward"))
    g = nir_graph(aff, ("fc.lif", lif((3,), decay=0.5, threshold=1.0)),
                  ("rec", nir.Linear(weight=w)), shape=[3])
    g.edges = [("input", "fc"), ("fc", "fc.lif"), ("fc.lif", "rec"), ("rec", "fc.lif"),
               ("fc.lif", "output")]
    out.append(("recurrence", g, "node 'fc.lif' (LIF): lies on a cycle 'fc.lif' -> 'rec' -> "
                                 "'fc.lif' (recurrence); the bundle is feed-forward"))
    g = nir_graph(aff, ("fc.lif", lif((3,), decay=0.5, threshold=1.0)),
                  ("skip", nir.Linear(weight=w)), shape=[3])
    g.edges = [("input", "fc"), ("input", "skip"), ("fc", "fc.lif"), ("skip", "fc.lif"),
               ("fc.lif", "output")]
    out.append(("branch", g, "node 'input' (Input): feeds 2 nodes ('fc', 'skip'); the bundle "
                             "is a chain of layers, not a branching graph"))
    g = nir_graph(aff, ("fc.lif", nir.LIF(tau=three, r=three, v_leak=0 * three,
                                          v_threshold=three, v_reset=three / 2)), shape=[3])
    out.append(("v_reset", g, "node 'fc.lif' (LIF): v_reset is 0.5; the bundle resets to 0 "
                              "(--reset zero) or by the threshold (--reset subtract)"))
    g = nir_graph(aff, ("fc.lif", lif((3,), decay=0.5, threshold=1.0)), shape=[3])
    g.nodes["fc.lif"].v_threshold = np.array([1.0, 2.0, 1.0])
    out.append(("thresholds", g, "node 'fc.lif' (LIF): v_threshold differs across neurons (1 "
                                 "to 2); the bundle holds one per layer"))
    g = nir_graph(aff, shape=[3])
    out.append(("no neuron", g, "node 'fc' (Affine): feeds node 'output' (Output), not a LIF or "
                                "IF; the bundle needs a neuron after every synapse"))
    g = nir_graph(("c1", nir.Conv2d(input_shape=(4, 4), weight=np.ones((1, 1, 3, 3)), stride=1,
                                    padding=1, dilation=1, groups=1, bias=np.zeros(1))),
                  ("c2", nir.Conv2d(input_shape=(4, 4), weight=np.ones((1, 1, 3, 3)), stride=1,
                                    padding=1, dilation=1, groups=1, bias=np.zeros(1))),
                  ("c2.lif", lif((1,), decay=0.5, threshold=1.0)), shape=[1, 4, 4])
    out.append(("padded composition", g, "node 'c2' (Conv2d): pads its input, which node 'c1' "
                "(Conv2d) computes with no neuron between; the two are one convolution only if "
                "the second has no padding, or the first tiles its input exactly without bias "
                "(a SumPool2d with kernel = stride dividing height and width)"))
    g = nir_graph(("l", lif((3,), decay=0.5, threshold=1.0)), shape=[3])
    out.append(("no synapse", g, "node 'l' (LIF): follows node 'input' (Input), not a synapse "
                                 "(Affine, Linear, Conv2d, SumPool2d); the bundle's neurons sit "
                                 "behind weights"))
    g = nir_graph(("c", nir.Conv2d(input_shape=(4, 4), weight=square, stride=1, padding=0,
                                   dilation=1, groups=1, bias=np.zeros(1))),
                  ("c.lif", lif((1,), decay=0.5, threshold=1.0)), shape=[1, 4, 4])
    g.nodes["c"].dilation = (2, 2)
    out.append(("dilation", g, "node 'c' (Conv2d): dilation is not 1; the bundle's "
                               "convolutions are dense"))
    return out


REFUSED_CASES = _refused_graphs()


def test_every_refused_kind_is_covered():
    assert set(REFUSED) <= {case for case, _, _ in REFUSED_CASES}


@pytest.mark.parametrize("case, graph, message", REFUSED_CASES,
                         ids=[case for case, _, _ in REFUSED_CASES])
def test_refused(case, graph, message, tmp_path, capsys):
    with pytest.raises(NIRError) as info:
        import_graph(graph)
    assert str(info.value) == message
    # The same file through the command line: one line on stderr, exit status 2.
    path = write_graph(graph, tmp_path / "bad.nir")
    with pytest.raises(SystemExit) as exit_info:
        main(["nir-import", str(path), "-o", str(tmp_path / "b")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"python -m models nir-import: error: {message}\n"
    assert not (tmp_path / "b").exists()


# -- the command line ------------------------------------------------------------------------------

NO_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['snntorch'] = None; "
            "sys.argv = ['python -m models'] + sys.argv[1:]; "
            "runpy.run_module('models', run_name='__main__', alter_sys=True)")


def run_models(*args, cwd):
    """``python -m models ARGS`` with torch and snnTorch made unimportable."""
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_cli_round_trip_without_torch(tmp_path):
    out = run_models("nir-export", str(ZOO / "digits_csnn"), "-o", "g/csnn.nir", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("wrote g/csnn.nir: 13 nodes (1 Input, 2 Conv2d, 3 LIF, "
                                 "2 SumPool2d, 2 IF, 1 Flatten, 1 Affine, 1 Output)")
    out = run_models("nir-import", "g/csnn.nir", "-o", "csnn", "--exact", "--events",
                     str(ZOO / "digits_csnn" / "vectors.npz"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "pool1: SumPool2d + IF 'pool1.or' -> spike_pool 2" in out.stdout
    for file in ("bundle.json", "weights.npz", "vectors.npz"):
        assert (tmp_path / "csnn" / file).read_bytes() == (ZOO / "digits_csnn" / file) \
            .read_bytes(), file
    # torch really is unimportable in that interpreter: the checkpoint export needs it.
    out = run_models("export", "x.pt", "-o", "b", cwd=tmp_path)
    assert out.returncode != 0 and "torch" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--reset", "none"], "argument --reset: invalid choice: 'none' (choose from 'subtract', "
                          "'zero')"),
    (["--dt", "0"], "argument --dt: must be a positive number, not 0"),
    (["--weight-bits", "40"], "argument --weight-bits: must be in [2, 16], not 40"),
    (["--leak", "shift", "--frac-bits", "4"], "--frac-bits applies to --leak mul, not shift"),
    (["--input-bits", "3"], "--input-bits applies to --encoding direct or raw, not the default"),
    (["--samples", "3"], "--samples applies to --dataset"),
    (["--events", "EVENTS", "--dataset", "digits"], "argument --dataset: not allowed with "
                                                    "argument --events"),
    (["--encoding", "raw", "--dataset", "digits"], "--dataset encodes with --encoding rate, "
                                                   "delta, direct or latency, not raw"),
    (["--steps", "3", "--events", "EVENTS"], "EVENTS: holds 25 steps, and the bundle has 3 "
                                             "(give --steps 25)"),
])
def test_cli_usage_errors(args, message, tmp_path, capsys):
    path = write_graph(export_bundle(bundle_io.load(ZOO / "digits_mlp")), tmp_path / "g.nir")
    events = str(ZOO / "digits_mlp" / "vectors.npz")
    args = [events if a == "EVENTS" else a for a in args]
    with pytest.raises(SystemExit) as info:
        main(["nir-import", str(path), "-o", str(tmp_path / "b"), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith(message.replace("EVENTS", events) + "\n"), err


def test_cli_dataset_vectors(tmp_path, capsys):
    """--dataset encodes the test split as the checkpoint export did: the zoo's own events."""
    path = write_graph(export_bundle(bundle_io.load(ZOO / "digits_mlp")), tmp_path / "g.nir")
    assert main(["nir-import", str(path), "-o", str(tmp_path / "b"), "--exact", "--dataset",
                 "digits", "--samples", "30"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        f"wrote {tmp_path / 'b'}: 2 layers, 2 with neurons, vectors of 30 samples (golden "
        f"accuracy ")
    ours, zoo = bundle_io.load(tmp_path / "b").vectors, bundle_io.load(ZOO / "digits_mlp").vectors
    assert np.array_equal(ours.events, zoo.events[zoo.events[:, 0] < 30])
    assert np.array_equal(ours.labels, zoo.labels[:30])
    assert np.array_equal(ours.predictions, zoo.predictions[:30])


def test_cli_not_a_nir_file(tmp_path, capsys):
    (tmp_path / "x.nir").write_text("not hdf5")
    with pytest.raises(SystemExit) as info:
        main(["nir-import", str(tmp_path / "x.nir"), "-o", str(tmp_path / "b")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m models nir-import: error: {tmp_path / 'x.nir'}: is not a "
                          f"NIR (HDF5) file") and err.count("\n") == 1


def test_export_metadata_and_float_semantics(tmp_path):
    """nir-export writes snnTorch's LIF mapping and our integer parameters as metadata; NIR's
    own float reading of a reset-zero bundle equals the golden model."""
    from models.synth import random_linear_bundle
    from models.bundle import Leak, Neuron
    b = random_linear_bundle(n_in=16, n_out=5, hidden=10, layers=2, sparsity=0.3, seed=2,
                             weight_bits=6, potential_bits=16, steps=6, bias=True,
                             neuron=Neuron("lif", "zero", 30, 16, Leak("shift", shift=1)))
    graph = export_bundle(b)
    lif_node = graph.nodes[f"{b.layers[0].name}.lif"]
    assert np.allclose(lif_node.tau, DT / 0.5) and np.allclose(lif_node.r, 2.0)
    assert json.loads(graph.metadata["bundle_provenance"]) == b.provenance
    assert graph.nodes[b.layers[0].name].metadata == {"weight_bits": 6}
    rng = np.random.default_rng(0)
    x = (rng.random((8, 6, 16)) < 0.4).astype(np.int64)
    theirs = simulate_nir(graph, x, DT)
    ours = golden.run(b, x).spikes
    assert sum(s.sum() for s in ours) > 0
    assert all(np.array_equal(a, c) for a, c in zip(ours, theirs))
    assert math.isclose(float(lif_node.tau.flat[0]), 2e-4)


def test_options_override_metadata(tmp_path):
    """Options given win over the exporter's metadata; without metadata the defaults apply."""
    path = write_graph(export_bundle(bundle_io.load(ZOO / "digits_mlp_lapicque")),
                       tmp_path / "g.nir")
    b, _ = import_graph(path, ImportOptions(reset="zero", potential_bits=20, steps=7,
                                            weight_bits=12, exact=True))
    assert b.input.steps == 7
    for layer in b.neuron_layers:
        n = layer.neuron
        assert (n.reset, n.model, n.potential_bits, layer.weight_bits) == (
            "zero", "lapicque", 20, 12)
    graph = nir.read(path)
    for node in graph.nodes.values():
        node.metadata = {}
    graph.metadata = {}
    b, _ = import_graph(graph, ImportOptions(exact=True))
    assert (b.input.steps, b.input.encoding, b.provenance["source"]) == (25, "rate", "nir")
    for layer in b.neuron_layers:
        n = layer.neuron
        assert (n.reset, n.model, n.potential_bits, layer.weight_bits, n.leak.mode,
                n.leak.frac_bits) == ("zero", "lif", 16, 8, "mul", 8)
