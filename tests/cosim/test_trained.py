"""Cosimulation of trained bundles from models/zoo and of random whole networks."""
import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest

from models import bundle as bundle_io
from models import golden
from models.bundle import Leak, Neuron
from models.synth import random_events, random_linear_bundle
from tests.cosim.conftest import assert_exact

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"


def first_samples(bundle, n):
    v = bundle.vectors
    assert v.samples >= n, f"the bundle has {v.samples} samples, not {n}"
    return v.events[v.events[:, 0] < n]


def check_predictions(bundle, result, events, n):
    x = golden.events_to_dense(events, n, bundle.input.steps, bundle.input.size)
    expect = [int(p) for p in golden.predict(golden.run(bundle, x).output)]
    assert result["dut_predictions"] == expect
    assert expect == [int(p) for p in bundle.vectors.predictions[:n]]
    return expect


@pytest.mark.parametrize("name, lanes", [
    ("digits_mlp", 4), pytest.param("digits_csnn", 4, marks=pytest.mark.slow)])
def test_trained_icarus(cosim, name, lanes):
    """A trained network on Icarus, every layer compared (the hidden ones on the trace port)."""
    b = bundle_io.load(ZOO / name)
    n = 5
    ev = first_samples(b, n)
    result = cosim(b, ev, n, lanes=lanes, options={"trace": True}, in_gap=0.2, out_stall=0.3,
                   seed=5)
    assert_exact(result)
    check_hidden(b, result, ev, n)
    preds = check_predictions(b, result, ev, n)
    labels = [int(x) for x in b.vectors.labels[:n]]
    assert sum(p == y for p, y in zip(preds, labels)) >= n // 2     # a trained network


def check_hidden(bundle, result, events, n):
    """Every traced layer was compared, spike for spike, against the golden model."""
    run = golden.run(bundle, golden.events_to_dense(events, n, bundle.input.steps,
                                                    bundle.input.size))
    want = {layer.name: int(spikes.sum())
            for layer, spikes in zip(bundle.layers[:-1], run.spikes[:-1])
            if layer.kind != "flatten"}
    assert {name: c["spikes_compared"] for name, c in result["hidden"].items()} == want
    assert result["hidden_steps_checked"] == result["hidden_steps"] == len(want) * n * \
        bundle.input.steps


# The volume run: the trained CSNN with every layer traced, on Verilator (~107,000 spikes
# compared for 20 samples: conv1 47,495, pool1 28,414, conv2 17,548, pool2 13,071, fc1 509).
@pytest.mark.verilator
@pytest.mark.parametrize("name, lanes, n", [
    ("digits_csnn", 8, 20),
    pytest.param("digits_csnn", 8, 200, marks=pytest.mark.slow),
    pytest.param("digits_mlp", 8, 360, marks=pytest.mark.slow)])
def test_trained_verilator(cosim, name, lanes, n):
    b = bundle_io.load(ZOO / name)
    ev = first_samples(b, n)
    result = cosim(b, ev, n, sim="verilator", lanes=lanes, options={"trace": True},
                   in_gap=0.1, out_stall=0.2, trace_stall=0.2, seed=6)
    assert_exact(result)
    check_hidden(b, result, ev, n)
    check_predictions(b, result, ev, n)


def random_network(seed):
    """A random multi-layer network: widths, sparsity, bit widths, neuron modes, input kind."""
    rng = random.Random(seed)
    pbits = rng.choice([8, 10, 12, 16])
    wbits = rng.choice([3, 4, 6, 8])
    leak = (Leak("mul", beta=rng.randrange(0, 2 ** 6 + 1), frac_bits=6) if rng.random() < 0.5
            else Leak("shift", shift=rng.randrange(1, 5)))
    model, reset = rng.choice([("lif", "subtract"), ("lif", "zero"), ("lapicque", "zero"),
                               ("lif", "none"), ("lapicque", "subtract")])
    threshold = rng.randrange(2 ** (wbits + 1), 2 ** (wbits + 3))
    neuron = Neuron(model, reset, min(threshold, 2 ** (pbits - 1) - 1), pbits, leak)
    bits, signed = rng.choice([(1, False), (2, False), (3, True), (4, True)])
    layers = rng.randrange(1, 4)
    b = random_linear_bundle(
        n_in=rng.randrange(6, 40), n_out=rng.randrange(3, 24), hidden=rng.randrange(8, 40),
        layers=layers, sparsity=rng.choice([0.0, 0.5, 0.75, 0.9, 0.95]), seed=seed,
        weight_bits=wbits, potential_bits=pbits, neuron=neuron, input_bits=bits,
        input_signed=signed, steps=rng.randrange(3, 7), bias=rng.random() < 0.7)
    hw = {"lanes": rng.randrange(1, 5), "options": {"updates": rng.choice([1, 2]),
                                                    "fmt": rng.choice([None, "csr", "bitmap"])}}
    ev = random_events(np.random.default_rng(seed), samples=3, steps=b.input.steps,
                       n_in=b.input.size, density=rng.uniform(0.1, 0.6), bits=bits,
                       signed=signed)
    # Lower the thresholds (on the golden model) until the last layer fires, so the case
    # compares spikes and not only empty steps.
    x = golden.events_to_dense(ev, 3, b.input.steps, b.input.size)
    while golden.run(b, x).output.sum() < 3 and b.layers[0].neuron.threshold > 1:
        for layer in b.layers:
            layer.neuron = dataclasses.replace(layer.neuron,
                                               threshold=layer.neuron.threshold // 2)
    return b, ev, hw


@pytest.mark.parametrize("seed", range(6))
def test_random_networks(cosim, seed):
    b, ev, hw = random_network(seed)
    result = cosim(b, ev, 3, in_gap=0.3, out_stall=0.4, seed=seed, **hw)
    assert_exact(result)


@pytest.mark.parametrize("seed, kernel, stride, padding, pool, signed", [
    (10, 3, 1, 1, 2, False), (11, 5, 1, 2, 2, True), (12, 3, 2, 0, 0, False),
    (13, 5, 2, 1, 0, True)])
def test_random_conv_networks(cosim, seed, kernel, stride, padding, pool, signed):
    from models.synth import random_csnn_bundle
    rng = random.Random(seed)
    bits = 3 if signed else 1
    b = random_csnn_bundle(in_shape=(2, 10, 10), channels=(rng.randrange(2, 6),),
                           kernel=kernel, stride=stride, padding=padding, pool=pool,
                           n_out=rng.randrange(4, 12), sparsity=rng.choice([0.0, 0.5, 0.75]),
                           seed=seed, steps=4, input_bits=bits, input_signed=signed)
    ev = random_events(np.random.default_rng(seed), samples=2, steps=4, n_in=b.input.size,
                       density=0.3, bits=bits, signed=signed)
    x = golden.events_to_dense(ev, 2, 4, b.input.size)
    while golden.run(b, x).output.sum() < 3 and b.layers[-1].neuron.threshold > 1:
        for layer in b.neuron_layers:
            layer.neuron = dataclasses.replace(layer.neuron,
                                               threshold=layer.neuron.threshold // 2)
    result = cosim(b, ev, 2, lanes=rng.randrange(1, 4), in_gap=0.3, out_stall=0.4, seed=seed)
    assert_exact(result)
