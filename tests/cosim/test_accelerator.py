"""The Verilog that ``gen`` emits equals the golden model, every step, on Icarus and Verilator.

Every case builds a random pruned network (``models.synth``), emits the top with
``gen.emit_verilog``, feeds several samples back to back under random ``valid`` gaps and
``ready`` stalls, and requires zero mismatches with spikes actually compared. Default cases are
small (16-64 neurons, a few steps and samples); the ``slow`` ones are larger.
"""
# amaranth: UnusedElaboratable=no
from dataclasses import replace

import numpy as np
import pytest

from models import golden
from models.bundle import Bundle, InputSpec, Layer, Leak, Neuron
from models.synth import random_events, random_linear_bundle, random_weights
from tests.cosim.conftest import assert_exact

STALL = {"in_gap": 0.3, "out_stall": 0.4}


def events_for(bundle, *, samples, density, seed, duplicates=False):
    spec = bundle.input
    return random_events(np.random.default_rng(seed), samples=samples, steps=spec.steps,
                         n_in=spec.size, density=density, bits=spec.bits, signed=spec.signed,
                         duplicates=duplicates)


def with_neuron(bundle, **changes):
    """``bundle`` with every layer's neuron parameters changed by ``changes``."""
    for layer in bundle.neuron_layers:
        layer.neuron = replace(layer.neuron, **changes)
    return bundle


def golden_trace(bundle, events, samples):
    dense = golden.events_to_dense(events, samples, bundle.input.steps, bundle.input.size)
    return golden.run(bundle, dense, keep_potentials=True)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.75, 0.95])
def test_sparsity(cosim, sparsity):
    bundle = random_linear_bundle(n_in=48, n_out=24, sparsity=sparsity, seed=11, steps=6)
    events = events_for(bundle, samples=3, density=0.25, seed=11)
    assert_exact(cosim(bundle, events, 3, seed=1, **STALL))


# Every update formula of DESIGN.md section 3 ("subtract" and "none" do not depend on the
# model; "zero" does) with both leaks.
@pytest.mark.parametrize("model, reset, leak", [
    ("lif", "subtract", Leak("mul", beta=200, frac_bits=8)),
    ("lif", "zero", Leak("shift", shift=2)),
    ("lapicque", "zero", Leak("mul", beta=230, frac_bits=8)),
    ("lapicque", "none", Leak("shift", shift=1)),
])
def test_neuron_models(cosim, model, reset, leak):
    bundle = with_neuron(random_linear_bundle(n_in=32, n_out=20, sparsity=0.5, seed=3, steps=8),
                         model=model, reset=reset, leak=leak)
    events = events_for(bundle, samples=2, density=0.3, seed=3)
    assert_exact(cosim(bundle, events, 2, seed=2, **STALL))


@pytest.mark.parametrize("bits, signed", [(3, False), (4, True)])
def test_input_values(cosim, bits, signed):
    bundle = random_linear_bundle(n_in=24, n_out=16, sparsity=0.5, seed=5, steps=5,
                                  input_bits=bits, input_signed=signed)
    events = events_for(bundle, samples=3, density=0.35, seed=5)
    if bits > 1:
        assert len(np.unique(events[:, 3])) > 2
    # Shuffled within steps, and extra value = 0 events: neither may change the result.
    assert_exact(cosim(bundle, events, 3, seed=3, shuffle=True, zero_events=0.3, **STALL))


def test_samples_and_empty_steps(cosim):
    bundle = random_linear_bundle(n_in=32, n_out=16, sparsity=0.5, seed=8, steps=6)
    events = events_for(bundle, samples=5, density=0.08, seed=8)
    events = events[events[:, 0] != 2]                   # sample 2: no input at all
    events = events[~((events[:, 0] == 3) & (events[:, 1] % 2 == 1))]
    trace = golden_trace(bundle, events, 5)
    out = trace.output
    assert (out.sum(axis=2) == 0).any() and (out.sum(axis=2) > 0).any()   # both kinds of step
    result = cosim(bundle, events, 5, seed=4, **STALL)
    assert_exact(result)
    assert result["samples"] == 5 and result["steps"] == 30
    assert len(result["cycles"]["per_sample"]) == 5


def test_saturating_potentials(cosim):
    neuron = Neuron("lif", "subtract", 20, 6, Leak("shift", shift=4))
    bundle = random_linear_bundle(n_in=24, n_out=16, sparsity=0.25, seed=9, steps=6,
                                  neuron=neuron, weight_bits=8, input_bits=3, input_signed=True)
    events = events_for(bundle, samples=2, density=0.5, seed=9)
    pots = golden_trace(bundle, events, 2).potentials[0]
    assert (pots == neuron.lo).any() and (pots == neuron.hi).any()     # the clamp is exercised
    assert_exact(cosim(bundle, events, 2, seed=5, **STALL))


@pytest.mark.parametrize("layers, lanes", [(2, 1), (3, [2, 1, 3])])
def test_multilayer(cosim, layers, lanes):
    bundle = random_linear_bundle(n_in=32, n_out=10, sparsity=0.5, seed=layers, steps=6,
                                  layers=layers, hidden=24)
    events = events_for(bundle, samples=2, density=0.3, seed=layers)
    hidden = golden_trace(bundle, events, 2).spikes[:-1]
    assert all(s.any() for s in hidden)                  # spikes cross every layer boundary
    result = cosim(bundle, events, 2, lanes=lanes, options={"trace": True}, seed=6, **STALL)
    assert_exact(result)
    assert result["hidden_spikes_compared"] == sum(int(s.sum()) for s in hidden)


@pytest.mark.parametrize("lanes, options", [
    (2, {}),
    (4, {"updates": 2}),
    (3, {"fmt": "dense"}),
    (2, {"fmt": "bitmap", "status": True}),
    (2, {"dense": True}),
])
def test_lanes_and_formats(cosim, lanes, options):
    bundle = random_linear_bundle(n_in=40, n_out=22, sparsity=0.7, seed=13, steps=5)
    events = events_for(bundle, samples=2, density=0.3, seed=13)
    assert_exact(cosim(bundle, events, 2, lanes=lanes, options=options, seed=7, **STALL))


def conv_bundle(seed, *, in_shape, channels, kernel, stride, padding, pool, classes, steps,
                input_bits=1, input_signed=False, density=0.3):
    """A random conv2d -> [spike_pool] -> flatten -> [linear] network.

    Thresholds are set from the weights so that a fair share of neurons fire at ``density``.
    """
    rng = np.random.default_rng(seed)
    spec = InputSpec(tuple(in_shape), input_bits, input_signed, "raw", steps)
    max_x = spec.value_range[1] if not input_signed else -spec.value_range[0]
    c, h, w = in_shape
    ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    weight = random_weights(rng, (channels, c, kernel, kernel), sparsity=0.3, weight_bits=6)
    typical = np.abs(weight).reshape(channels, -1).sum(axis=1).mean() * density * max_x
    threshold = max(1, int(typical * 0.4))
    neuron = Neuron("lif", "subtract", threshold, 12, Leak("shift", shift=2))
    bias = rng.integers(-(threshold // 3), threshold // 3 + 1, size=channels)
    layers = [Layer("conv1", "conv2d", (c, h, w), (channels, ho, wo), weight, bias, 6, neuron,
                    kernel, stride, padding)]
    shape = (channels, ho, wo)
    if pool:
        layers.append(Layer("pool1", "spike_pool", shape,
                            (channels, ho // pool, wo // pool), kernel=pool))
        shape = layers[-1].out_shape
    n = int(np.prod(shape))
    layers.append(Layer("flat", "flatten", shape, (n,)))
    if classes:
        fc = random_weights(rng, (classes, n), sparsity=0.5, weight_bits=6)
        fc_threshold = max(1, int(np.abs(fc).sum(axis=1).mean() * 0.1))
        layers.append(Layer("fc", "linear", (n,), (classes,), fc, None, 6,
                            Neuron("lif", "subtract", fc_threshold, 12, Leak("shift", shift=3))))
    return Bundle(spec, layers, provenance={"source": "random conv", "seed": seed}).validate()


@pytest.mark.parametrize("case", ["conv-pool-linear", "conv-stride-signed"])
def test_conv_network(cosim, case):
    if case == "conv-pool-linear":
        bundle = conv_bundle(43, in_shape=(1, 8, 8), channels=4, kernel=3, stride=1, padding=1,
                             pool=2, classes=10, steps=5)
        lanes = 2
    else:
        bundle = conv_bundle(47, in_shape=(2, 7, 7), channels=3, kernel=3, stride=2, padding=0,
                             pool=0, classes=0, steps=5, input_bits=3, input_signed=True)
        lanes = 1
    events = events_for(bundle, samples=2, density=0.3, seed=43)
    trace = golden_trace(bundle, events, 2)
    assert all(s.any() for s in trace.spikes)            # every layer produces spikes
    options = {"trace": True} if case == "conv-pool-linear" else {}
    result = cosim(bundle, events, 2, lanes=lanes, options=options, seed=13, shuffle=True,
                   zero_events=0.2, **STALL)
    assert_exact(result)
    if options:                                          # conv1 and pool1 on the trace port
        assert list(result["hidden"]) == ["conv1", "pool1"]
        assert result["hidden_spikes_compared"] == sum(int(s.sum()) for s in trace.spikes[:2])


@pytest.mark.parametrize("in_gap, out_stall", [(0.0, 0.0), (0.7, 0.8)])
def test_backpressure_extremes(cosim, in_gap, out_stall):
    bundle = random_linear_bundle(n_in=32, n_out=16, sparsity=0.5, seed=17, steps=5, layers=2,
                                  hidden=16)
    events = events_for(bundle, samples=2, density=0.3, seed=17)
    result = cosim(bundle, events, 2, lanes=2, seed=8, in_gap=in_gap, out_stall=out_stall)
    assert_exact(result)
    assert result["cycles"]["mean_per_step"] > 0


def test_bundle_vectors(cosim):
    # The stimulus and golden spikes stored in vectors.npz, as a user's bundle carries them.
    bundle = random_linear_bundle(n_in=32, n_out=12, sparsity=0.6, seed=19, steps=5)
    events = events_for(bundle, samples=3, density=0.3, seed=19)
    bundle.vectors = golden.make_vectors(bundle, events, 3)
    result = cosim(bundle, seed=9, **STALL)
    assert_exact(result)
    assert result["stimulus"] == "vectors"
    assert result["spikes_compared"] == len(bundle.vectors.spikes)


def test_other_network_fails(cosim):
    # Hardware of one network checked against another (one bias changed) must fail.
    bundle = random_linear_bundle(n_in=32, n_out=16, sparsity=0.5, seed=23, steps=6)
    events = events_for(bundle, samples=2, density=0.3, seed=23)
    from tests.cosim.conftest import emit_top
    verilog = emit_top(bundle)
    before = golden_trace(bundle, events, 2).output
    other = random_linear_bundle(n_in=32, n_out=16, sparsity=0.5, seed=23, steps=6)
    layer = other.layers[0]
    for j in range(layer.n_out):                          # a neuron whose output changes
        layer.bias = bundle.layers[0].bias.copy()
        layer.bias[j] += layer.neuron.threshold
        after = golden_trace(other, events, 2).output
        if not np.array_equal(before, after):
            break
    assert not np.array_equal(before, after)
    result = cosim(other, events, 2, verilog=verilog, seed=10, expect_pass=False, **STALL)
    assert not result["passed"] and result["mismatches"] > 0
    first = result["first_mismatch"]
    assert first["kind"] in ("missing spike", "extra spike") and first["addr"] == j


def test_other_hidden_layer_fails_on_the_trace(cosim):
    """A traced top whose hidden layer differs from the golden model's in one neuron that the
    output layer never reads (its weights into the last layer are zero): the output stream
    agrees, only the trace port can tell, and it does."""
    bundle = random_linear_bundle(n_in=24, n_out=8, hidden=12, layers=2, sparsity=0.5,
                                  seed=29, steps=5)
    bundle.layers[1].weight[:, 3] = 0                     # hidden neuron 3 feeds nothing
    events = events_for(bundle, samples=2, density=0.3, seed=29)
    from tests.cosim.conftest import emit_top
    verilog = emit_top(bundle, trace=True)
    other = random_linear_bundle(n_in=24, n_out=8, hidden=12, layers=2, sparsity=0.5,
                                 seed=29, steps=5)
    other.layers[1].weight[:, 3] = 0
    other.layers[0].bias[3] += other.layers[0].neuron.threshold
    before, after = golden_trace(bundle, events, 2), golden_trace(other, events, 2)
    assert np.array_equal(before.output, after.output)
    assert not np.array_equal(before.spikes[0][:, :, 3], after.spikes[0][:, :, 3])
    result = cosim(other, events, 2, verilog=verilog, seed=11, expect_pass=False, **STALL)
    assert not result["passed"]
    assert result["mismatches"] == result["hidden_mismatches"] > 0     # the trace alone
    assert result["first_mismatch"]["layer"] == "fc1" and result["first_mismatch"]["addr"] == 3


# Verilator in the default run: this first case, the README's verify line (the trained MLP), the
# user-flag command lines and the trained CSNN's volume run (test_trained.py); the second case
# is in the slow set (each Verilator build is 20-50 s of the default run's budget).
@pytest.mark.verilator
@pytest.mark.parametrize("case", ["signed-2layer-lanes",
                                  pytest.param("lapicque-saturating", marks=pytest.mark.slow)])
def test_verilator(cosim, case):
    if case == "signed-2layer-lanes":
        bundle = random_linear_bundle(n_in=24, n_out=10, sparsity=0.6, seed=29, steps=6,
                                      layers=2, hidden=16, input_bits=4, input_signed=True)
        lanes = 2
    else:
        neuron = Neuron("lapicque", "zero", 24, 7, Leak("mul", beta=200, frac_bits=8))
        bundle = random_linear_bundle(n_in=24, n_out=16, sparsity=0.3, seed=31, steps=6,
                                      neuron=neuron, input_bits=3, input_signed=False)
        lanes = 1
    events = events_for(bundle, samples=3, density=0.3, seed=29)
    if case == "lapicque-saturating":
        pots = golden_trace(bundle, events, 3).potentials[0]
        assert (pots == neuron.lo).any() and (pots == neuron.hi).any()
    result = cosim(bundle, events, 3, sim="verilator", lanes=lanes, seed=11, shuffle=True,
                   zero_events=0.2, **STALL)
    assert_exact(result)


@pytest.mark.slow
@pytest.mark.parametrize("sim", ["icarus", pytest.param("verilator",
                                                        marks=pytest.mark.verilator)])
@pytest.mark.parametrize("sparsity, lanes", [(0.5, 1), (0.9, 4), (0.95, 8)])
def test_large(cosim, sim, sparsity, lanes):
    bundle = random_linear_bundle(n_in=256, n_out=64, sparsity=sparsity, seed=37, steps=12,
                                  layers=2, hidden=128)
    events = events_for(bundle, samples=6, density=0.15, seed=37)
    result = cosim(bundle, events, 6, sim=sim, lanes=lanes, seed=12, shuffle=True,
                   zero_events=0.1, **STALL)
    assert_exact(result)
