"""The emitted Verilog at the edges of what a bundle allows, against the golden model.

Widths at the top of their ranges (potentials 24 and 32 bits, weights 12 and 16, inputs 8 and
16 bits signed, leak fractions 12 and 16 bits), the worst-case current of a layer (every input
at its largest magnitude with the sign that adds up: the current accumulator exactly full) with
the potential clamp hit on both sides, events for one address in one step adding up (linear and
conv), one-neuron layers, one-step samples and samples without any input. Every case runs on
Icarus under random stalls; multi-layer cases carry the trace port so hidden layers are
compared too.
"""
# amaranth: UnusedElaboratable=no
from dataclasses import replace

import numpy as np
import pytest

from hdl.engines import make_engines
from models import bundle as bundle_io
from models import golden
from models.bundle import Bundle, InputSpec, Layer, Leak, Neuron
from models.synth import random_linear_bundle, random_weights
from tests.cosim.conftest import assert_exact
from tests.cosim.test_accelerator import conv_bundle, events_for

STALL = {"in_gap": 0.3, "out_stall": 0.4}


def validated(bundle, tmp_path):
    """``bundle`` after a save/load round trip (the contract check a user's bundle gets)."""
    return bundle_io.load(bundle_io.save(bundle, tmp_path / "validated"))


def tune_thresholds(bundle, events, samples, quantile=80):
    """Set each neuron layer's threshold, in order, at a quantile of the potentials it reaches
    without firing, so that every layer fires on these events."""
    for layer in bundle.neuron_layers:
        keep = layer.neuron
        layer.neuron = replace(keep, threshold=keep.hi - 1)
        pots = run_golden(bundle, events, samples).potentials[bundle.layers.index(layer)]
        level = int(np.percentile(np.abs(pots), quantile))
        layer.neuron = replace(keep, threshold=max(1, min(keep.hi - 1, level)))
    return bundle


def run_golden(bundle, events, samples):
    dense = golden.events_to_dense(events, samples, bundle.input.steps, bundle.input.size)
    return golden.run(bundle, dense, keep_potentials=True)


@pytest.mark.parametrize("pbits, wbits, ibits, leak", [
    (24, 12, 8, Leak("mul", beta=3000, frac_bits=12)),
    (32, 16, 16, Leak("mul", beta=60000, frac_bits=16)),
    (32, 12, 8, Leak("shift", shift=7)),
    (24, 16, 16, Leak("mul", beta=2 ** 16, frac_bits=16)),            # beta = 1: no leak
], ids=["p24-w12-i8-f12", "p32-w16-i16-f16", "p32-w12-i8-shift", "p24-w16-i16-f16-beta1"])
def test_wide_formats(cosim, tmp_path, pbits, wbits, ibits, leak):
    """Two layers at wide formats; the hidden layer on the trace port."""
    rng = np.random.default_rng(pbits + wbits)
    n_in, hidden, n_out = 12, 10, 6
    w1 = random_weights(rng, (hidden, n_in), sparsity=0.3, weight_bits=wbits)
    w2 = random_weights(rng, (n_out, hidden), sparsity=0.3, weight_bits=wbits)
    big = 2 ** (wbits - 1) * 2 ** (ibits - 1)
    t1 = min(2 ** (pbits - 1) - 1, int(big * n_in * 0.1))
    t2 = min(2 ** (pbits - 1) - 1, int(2 ** (wbits - 1) * hidden * 0.15))
    layers = [Layer("fc1", "linear", (n_in,), (hidden,), w1,
                    rng.integers(-t1 // 4, t1 // 4 + 1, size=hidden), wbits,
                    Neuron("lif", "subtract", t1, pbits, leak)),
              Layer("fc2", "linear", (hidden,), (n_out,), w2, None, wbits,
                    Neuron("lapicque", "zero", t2, pbits, leak))]
    bundle = Bundle(InputSpec((n_in,), ibits, True, "raw", 6), layers,
                    provenance={"source": "extreme widths"})
    events = events_for(bundle, samples=3, density=0.5, seed=pbits)
    bundle = validated(tune_thresholds(bundle, events, 3), tmp_path)
    run = run_golden(bundle, events, 3)
    assert all(s.any() for s in run.spikes)
    # The formats are really used: potentials beyond 16 bits where the format allows them.
    assert np.abs(run.potentials[0]).max() >= 2 ** 15
    result = cosim(bundle, events, 3, lanes=2, options={"trace": True}, seed=21, **STALL)
    assert_exact(result)
    assert result["hidden_spikes_compared"] == int(run.spikes[0].sum()) > 0


@pytest.mark.parametrize("pbits, wbits, ibits, lanes", [(16, 8, 8, 1), (32, 16, 16, 3)])
def test_worst_case_current_and_the_clamp(cosim, tmp_path, pbits, wbits, ibits, lanes):
    """Every input at its largest magnitude, signs aligned with the weights: the current
    accumulator holds exactly its largest value, on both sides, and the potentials clamp high
    and low; spike timing after the low clamp shows the clamped value."""
    n_in = 8
    wmin, xmin = -2 ** (wbits - 1), -2 ** (ibits - 1)
    # Neuron 0: weights all at the most negative, neuron 1 all at the most positive, neuron 2
    # mixed signs; no bias.
    w = np.stack([np.full(n_in, wmin), np.full(n_in, -wmin - 1),
                  np.array([wmin, -wmin - 1] * (n_in // 2))]).astype(np.int64)
    hi = 2 ** (pbits - 1) - 1
    neuron = Neuron("lif", "none", hi - 1, pbits, Leak("shift", shift=pbits - 2))
    layer = Layer("fc", "linear", (n_in,), (3,), w, None, wbits, neuron)
    bundle = validated(Bundle(InputSpec((n_in,), ibits, True, "raw", 8), [layer],
                              provenance={"source": "worst-case current"}), tmp_path)
    steps = 8
    rows = []
    # Sample 0: inputs at the most negative value (neuron 0's current is the largest positive
    # one, neuron 1's nearly the most negative); sample 1: four steps at the most negative
    # value, then four at the most positive (neuron 1 climbs back from the low clamp).
    for s, pattern in enumerate([[xmin] * steps, [xmin] * 4 + [-xmin - 1] * 4]):
        for t, x in enumerate(pattern):
            rows += [(s, t, a, x) for a in range(n_in)]
    events = np.array(rows, dtype=np.int64)
    run = run_golden(bundle, events, 2)
    current = golden.layer_current(layer, golden.events_to_dense(events, 2, steps, n_in)[0, 0])
    (_, engine), = make_engines(bundle, lanes=lanes)
    bound = golden.current_bound(layer, -xmin)
    assert current[0] == bound                              # exactly the accumulator's largest
    assert engine.current_bits == golden.current_bits(layer, -xmin)
    assert bound.bit_length() + 1 == engine.current_bits   # ... in the fewest bits that hold it
    pots = run.potentials[0]
    assert (pots == neuron.hi).any() and (pots == neuron.lo).any()
    assert run.output[:, :, 0].sum() > 0 and run.output[1, 4:, 1].sum() > 0
    assert_exact(cosim(bundle, events, 2, lanes=lanes, seed=22, **STALL))


def with_added_duplicates(events, rng, share):
    """``events`` plus, for a ``share`` of them, a second event for the same address and step
    (value 1, or a small random value for multi-bit inputs), shuffled into place."""
    extra = events[rng.random(len(events)) < share].copy()
    rows = np.concatenate([events, extra])
    order = np.lexsort((rng.random(len(rows)), rows[:, 1], rows[:, 0]))
    return rows[order]


def test_duplicate_addresses_beyond_the_value_range_linear(cosim, tmp_path):
    """A linear layer adds every event up exactly, even where an address's sum leaves the
    input's value range, as long as the current stays within what its accumulator is sized
    for (docs/verification.md; beyond that see test_link_fuzz's strict xfail)."""
    bundle = random_linear_bundle(n_in=40, n_out=12, hidden=16, layers=2, sparsity=0.5,
                                  seed=31, steps=5, input_bits=3, input_signed=True)
    events = events_for(bundle, samples=3, density=0.2, seed=31)
    events = with_added_duplicates(events, np.random.default_rng(31), 0.5)
    dense = golden.events_to_dense(events, 3, 5, 40)
    assert np.abs(dense).max() > 4               # some address holds more than one event's value
    for layer in bundle.neuron_layers[:1]:
        assert np.abs(golden.layer_current(layer, dense.reshape(-1, 40))).max() \
            <= golden.current_bound(layer, 4)
    result = cosim(bundle, events, 3, lanes=2, options={"trace": True}, seed=23, **STALL)
    assert_exact(result)
    assert result["hidden_spikes_compared"] > 0


def split_events(events, rng):
    """Every event with a value of magnitude 2 or more split in two events for the same address
    and step whose values add up to it, shuffled within the step: the same input, delivered
    as duplicates (the sums stay in the input's value range)."""
    rows = []
    for s, t, a, v in events:
        if abs(v) >= 2:
            part = int(np.sign(v)) * int(rng.integers(1, abs(v)))
            rows += [(s, t, a, part), (s, t, a, v - part)]
        else:
            rows.append((s, t, a, v))
    rows = np.array(rows, dtype=np.int64).reshape(-1, 4)
    order = np.lexsort((rng.random(len(rows)), rows[:, 1], rows[:, 0]))
    return rows[order]


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_duplicate_addresses_add_up(cosim, kind):
    """The same input once as single events and once split into duplicates: the hardware adds
    the duplicates up (DESIGN.md section 5) and both runs equal the golden model."""
    if kind == "linear":
        bundle = random_linear_bundle(n_in=30, n_out=10, hidden=16, layers=2, sparsity=0.5,
                                      seed=32, steps=4, input_bits=4, input_signed=True)
    else:
        bundle = conv_bundle(53, in_shape=(2, 6, 6), channels=3, kernel=3, stride=1, padding=1,
                             pool=2, classes=6, steps=4, input_bits=3)
    events = events_for(bundle, samples=2, density=0.3, seed=53)
    split = split_events(events, np.random.default_rng(53))
    size = bundle.input.size
    assert np.array_equal(golden.events_to_dense(split, 2, 4, size),
                          golden.events_to_dense(events, 2, 4, size))
    assert len(split) > len(events) + 10
    assert all(s.any() for s in run_golden(bundle, split, 2).spikes)
    result = cosim(bundle, split, 2, lanes=2, options={"trace": True}, seed=24, **STALL)
    assert_exact(result)
    assert result["hidden_spikes_compared"] > 0


def test_one_neuron_layers(cosim, tmp_path):
    """1 input -> 1 hidden -> 1 output neuron, and a 1-neuron output after a wide layer."""
    for n_in, hidden, seed in [(1, 1, 41), (24, 1, 42)]:
        neuron = Neuron("lif", "subtract", 3, 8, Leak("shift", shift=2))
        w1 = np.full((hidden, n_in), 2, dtype=np.int64)
        w2 = np.full((1, hidden), 5, dtype=np.int64)
        bundle = validated(Bundle(InputSpec((n_in,), 2, False, "raw", 6), [
            Layer("fc1", "linear", (n_in,), (hidden,), w1, None, 4, neuron),
            Layer("fc2", "linear", (hidden,), (1,), w2, None, 4, neuron)],
            provenance={"source": "one neuron"}), tmp_path / str(seed))
        events = events_for(bundle, samples=3, density=0.5, seed=seed)
        run = run_golden(bundle, events, 3)
        assert run.output.any() and run.spikes[0].any()
        result = cosim(bundle, events, 3, lanes=1, options={"trace": True}, seed=seed, **STALL)
        assert_exact(result)
        assert result["hidden_spikes_compared"] == int(run.spikes[0].sum())


def test_one_step_samples(cosim):
    bundle = random_linear_bundle(n_in=20, n_out=8, hidden=12, layers=2, sparsity=0.4,
                                  seed=61, steps=1)
    for layer in bundle.neuron_layers:                # fire within the only step
        layer.neuron = Neuron("lif", "subtract", 2, 12, Leak("shift", shift=2))
    events = events_for(bundle, samples=12, density=0.4, seed=61)
    run = run_golden(bundle, events, 12)
    assert run.output.any()
    result = cosim(bundle, events, 12, lanes=2, options={"trace": True}, seed=25, **STALL)
    assert_exact(result)
    assert result["steps"] == 12


def test_samples_without_input(cosim):
    """Every sample empty: the biases alone drive the network (every step one empty event)."""
    bundle = random_linear_bundle(n_in=16, n_out=6, hidden=10, layers=2, sparsity=0.3,
                                  seed=71, steps=4)
    layer = bundle.neuron_layers[0]
    layer.bias = np.abs(layer.bias) + layer.neuron.threshold // 2 + 1    # hidden neurons fire
    events = np.zeros((0, 4), dtype=np.int64)
    run = run_golden(bundle, events, 3)
    assert run.spikes[0].any()
    assert run.output.any()
    result = cosim(bundle, events, 3, lanes=1, options={"trace": True}, seed=26, **STALL)
    assert_exact(result)
    assert result["steps_checked"] == 12 and result["input_events"] == 12   # one per step
    assert result["hidden_spikes_compared"] == int(run.spikes[0].sum()) > 0
