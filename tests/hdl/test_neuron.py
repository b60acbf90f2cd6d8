# amaranth: UnusedElaboratable=no
import itertools
import random

import pytest

from hdl.neuron import NeuronUpdate, neuron_step
from models.bundle import Leak, Neuron
from tests.sim import run_sim, stall_stream_get, stream_put

NEURONS = [
    Neuron(model, reset, threshold, pbits, leak)
    for (model, reset), (threshold, pbits), leak in itertools.product(
        [("lif", "subtract"), ("lif", "zero"), ("lapicque", "zero"), ("lif", "none"),
         ("lapicque", "subtract")],
        [(100, 10), (1000, 16)],
        [Leak("mul", beta=230, frac_bits=8), Leak("mul", beta=16, frac_bits=4),
         Leak("shift", shift=3), Leak("shift", shift=1)])
]


def rtl_update(neuron, inputs, *, current_bits, stall):
    dut, results = NeuronUpdate(neuron, current_bits=current_bits), []

    async def producer(ctx):
        for u, s, i in inputs:
            await stream_put(ctx, dut.i, {"potential": u, "spike": s, "current": i})

    async def consumer(ctx):
        rng = random.Random(3)
        for _ in inputs:
            out = await stall_stream_get(ctx, dut.o, rng, stall)
            results.append((out.potential, out.spike))

    run_sim(dut, [producer, consumer], watchdog_cycles=10 * len(inputs) + 100)
    return results


@pytest.mark.parametrize("neuron", NEURONS, ids=lambda n: f"{n.model}-{n.reset}-"
                         f"{n.potential_bits}-{n.leak.mode}{n.leak.beta or n.leak.shift}")
@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_matches_reference(neuron, stall):
    rng = random.Random(f"{neuron}")
    cb = neuron.potential_bits + 2
    inputs = [(rng.randint(neuron.lo, neuron.hi), rng.randint(0, 1),
               rng.randint(-2 ** (cb - 1), 2 ** (cb - 1) - 1)) for _ in range(150)]
    inputs += [(neuron.hi, 0, 2 ** (cb - 1) - 1), (neuron.lo, 0, -2 ** (cb - 1)),
               (neuron.lo, 1, -2 ** (cb - 1)), (-1, 0, 0), (neuron.threshold, 1, 0)]
    expect = [neuron_step(neuron, u, s, i) for u, s, i in inputs]
    assert rtl_update(neuron, inputs, current_bits=cb, stall=stall) == expect


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"neuron": "lif"}, TypeError, r"^Neuron must be a models\.bundle\.Neuron, not 'lif'$"),
    ({"current_bits": 1}, TypeError, r"^Current bits must be an integer greater than 1, not 1$"),
    ({"current_bits": 8.0}, TypeError,
     r"^Current bits must be an integer greater than 1, not 8\.0$"),
    ({"neuron": Neuron(threshold=600, potential_bits=10)}, ValueError,
     r"^Threshold 600 is not representable as signed\(10\)$"),
])
def test_wrong_parameters(kwargs, exc, message):
    params = {"neuron": Neuron(), "current_bits": 12, **kwargs}
    with pytest.raises(exc, match=message):
        NeuronUpdate(params.pop("neuron"), **params)
