# amaranth: UnusedElaboratable=no
"""One linear engine against the golden model; bad parameters."""
import numpy as np
import pytest
from amaranth import unsigned

from hdl.linear import LinearEngine
from hdl.top import Accelerator
from models.bundle import Layer, Leak, Neuron
from models.synth import random_events, random_linear_bundle
from tests.hdl.test_top import check

LAYER = random_linear_bundle(n_in=8, n_out=6, sparsity=0.5, seed=0).layers[0]


@pytest.mark.parametrize("fmt", ["csr", "bitmap", "dense"])
def test_every_format_with_stalls(fmt):
    b = random_linear_bundle(n_in=30, n_out=18, sparsity=0.6, seed=4, steps=6)
    ev = random_events(np.random.default_rng(9), samples=3, steps=6, n_in=30, density=0.3)
    assert check(b, ev, 3, lanes=2, fmt=fmt, stall=0.6, gap=0.5, seed=3) > 0


def test_empty_steps_and_no_spikes():
    b = random_linear_bundle(n_in=10, n_out=5, sparsity=0.5, seed=1, steps=4,
                             neuron=Neuron("lif", "subtract", 2 ** 14, 16, Leak("shift", shift=2)),
                             bias=False)
    ev = np.zeros((0, 4), dtype=np.int64)
    # No events and an unreachable threshold: every step is an empty-step marker.
    assert check(b, ev, 2, lanes=1) == 0


@pytest.mark.parametrize("fmt", ["csr", "bitmap", "dense"])
def test_addresses_at_or_above_n_in_are_ignored(fmt):
    # 12 inputs, 4-bit addresses: 12..15 lie outside the contract and must touch no neuron.
    from models import golden
    from tests.hdl.test_top import rtl_top
    b = random_linear_bundle(n_in=12, n_out=9, sparsity=0.4, seed=5, steps=4)
    ev = random_events(np.random.default_rng(6), samples=2, steps=4, n_in=12, density=0.4)
    x = golden.events_to_dense(ev, 2, 4, 12)
    expect = golden.output_stream(golden.run(b, x).output)
    stream, rng = [], np.random.default_rng(7)
    for addr, value, last, first in golden.input_stream(ev, 2, 4):
        if not first and rng.random() < 0.5:            # an out-of-range event before this one
            stream.append((int(rng.integers(12, 16)), 1, 0, 0))
        stream.append((addr, value, last, first))
    assert sum(a >= 12 for a, *_ in stream) >= 5
    assert rtl_top(b, stream, len(expect), lanes=2, fmt=fmt, stall=0.3, gap=0.3) == expect


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"layer": "fc1"}, TypeError, r"^Layer must be a models\.bundle\.Layer of kind 'linear', "
                                  r"not 'fc1'$"),
    ({"lanes": 0}, TypeError, r"^Lanes must be a positive integer, not 0$"),
    ({"lanes": 2.0}, TypeError, r"^Lanes must be a positive integer, not 2\.0$"),
    ({"lanes": 17}, ValueError, r"^Lanes must be at most 16, not 17$"),
    ({"fifo_depth": 1}, TypeError, r"^FIFO depth must be an integer of at least 2, not 1$"),
    ({"fmt": "coo"}, ValueError, r"^Weight format must be one of 'csr', 'bitmap', 'dense', "
                                 r"not 'coo'$"),
    ({"fmt": "csr", "dense": True}, ValueError,
     r"^Dense baseline needs weight format 'dense', not 'csr'$"),
    ({"value_shape": "wide"}, TypeError, r"^Value shape must be a shape, not 'wide'$"),
])
def test_wrong_parameters(kwargs, exc, message):
    params = {"layer": LAYER, "value_shape": unsigned(1), **kwargs}
    with pytest.raises(exc, match=message):
        LinearEngine(params.pop("layer"), **params)


def test_wrong_top_parameters():
    b = random_linear_bundle(n_in=8, n_out=6, sparsity=0.5, seed=0, layers=2)
    with pytest.raises(TypeError, match=r"^Bundle must be a models\.bundle\.Bundle, not 3$"):
        Accelerator(3)
    with pytest.raises(ValueError, match=r"^Lanes must give one value per neuron layer \(2\), "
                                         r"not \[1, 2, 3\]$"):
        Accelerator(b, lanes=[1, 2, 3])
    conv = Layer("c", "linear", (8,), (6,), LAYER.weight, None, 8,
                 Neuron("lif", "subtract", 600, 8, Leak("shift", shift=2)))
    with pytest.raises(ValueError, match=r"^Threshold 600 is not representable as signed\(8\)$"):
        LinearEngine(conv)
