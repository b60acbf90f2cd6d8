# amaranth: UnusedElaboratable=no
import random

import numpy as np
import pytest
from amaranth import *

from hdl.pool import SpikePool, pool_ref
from models import golden
from models.bundle import Layer
from tests.sim import run_sim, step_producer


def pool_layer(c, h, w, k):
    return Layer("pool", "spike_pool", (c, h, w), (c, h // k, w // k), kernel=k)


def random_steps(seed, layer, steps):
    """Steps ``[(first, [(addr, value)])]`` of shuffled spikes, repeats and zero-value no-ops."""
    rng = random.Random(seed)
    out = []
    for t in range(steps):
        density = rng.choice([0, 0.05, 0.2, 0.6])
        events = [(a, 1) for a in range(layer.n_in) if rng.random() < density]
        events += [(a, rng.randint(0, 1)) for a, _ in events if rng.random() < 0.2]
        rng.shuffle(events)
        out.append((t % 3 == 0, events))
    return out


def ref_pool(layer, steps):
    """Expected output events, from :func:`models.golden.spike_pool`."""
    events = []
    for first, evs in steps:
        x = np.zeros((1, layer.n_in), dtype=np.int64)
        for a, v in evs:
            x[0, a] |= v
        addrs = np.flatnonzero(golden.spike_pool(layer, x)[0])
        assert list(addrs) == pool_ref(layer, [a for a, v in evs if v])
        if not len(addrs):
            events.append((0, 0, 1, int(first)))
        events += [(int(a), 1, int(n == len(addrs) - 1), int(first and n == 0))
                   for n, a in enumerate(addrs)]
    return events


def rtl_pool(layer, steps, *, gap, stall, seed=0):
    dut, results = SpikePool(layer), []

    producer = step_producer(dut, steps, gap=gap, seed=seed)

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        closed = 0
        while closed < len(steps):
            while rng.random() < stall:
                await ctx.tick()
            ctx.set(dut.o.ready, 1)
            p, = await ctx.tick().sample(dut.o.payload).until(dut.o.valid)
            ctx.set(dut.o.ready, 0)
            results.append((p.addr, p.value, p.last, p.first))
            closed += p.last

    events = sum(len(e) + 1 for _, e in steps)
    run_sim(dut, [producer, consumer], name="pool",
            watchdog_cycles=10 * (events + len(steps) * (layer.n_out + 20)) + 500)
    return results


@pytest.mark.parametrize("shape", [(1, 4, 4, 2), (3, 7, 5, 2), (2, 9, 9, 3), (2, 5, 6, 1),
                                   (4, 6, 6, 6), (1, 2, 17, 2)])
@pytest.mark.parametrize("gap, stall", [(0.0, 0.0), (0.4, 0.5)])
def test_matches_golden(shape, gap, stall):
    layer = pool_layer(*shape)
    steps = random_steps(sum(shape), layer, 8)
    expect = ref_pool(layer, steps)
    assert sum(v for _, v, _, _ in expect) > 0
    assert rtl_pool(layer, steps, gap=gap, stall=stall, seed=len(expect)) == expect


def test_short_steps_back_to_back():
    """Single-event steps at full rate: the buffers must not be reused before they drain."""
    layer = pool_layer(2, 4, 4, 2)
    rng = random.Random(4)
    steps = [(t == 0, [(rng.randrange(layer.n_in), 1)] if t % 2 else []) for t in range(30)]
    assert rtl_pool(layer, steps, gap=0.0, stall=0.7) == ref_pool(layer, steps)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_random_shapes(seed):
    rng = random.Random(seed)
    k = rng.randint(1, 4)
    layer = pool_layer(rng.randint(1, 4), rng.randint(k, 12), rng.randint(k, 12), k)
    steps = random_steps(seed, layer, 10)
    assert rtl_pool(layer, steps, gap=rng.choice([0, 0.3, 0.7]),
                    stall=rng.choice([0, 0.3, 0.8]), seed=seed) == ref_pool(layer, steps)


@pytest.mark.parametrize("layer, exc, message", [
    ("pool", TypeError,
     r"^Layer must be a models\.bundle\.Layer of kind 'spike_pool', not 'pool'$"),
    (Layer("f", "flatten", (2, 4, 4), (32,)), TypeError,
     r"^Layer must be a models\.bundle\.Layer of kind 'spike_pool', not Layer\(name='f'"),
    (Layer("p", "spike_pool", (32,), (16,), kernel=2), ValueError,
     r"^Input shape must be \(C, H, W\), not \(32,\)$"),
    (Layer("p", "spike_pool", (1, 4, 4), (1, 4, 4), kernel=0), TypeError,
     r"^Kernel must be a positive integer, not 0$"),
    (Layer("p", "spike_pool", (1, 4, 4), (1, 4, 4), kernel=None), TypeError,
     r"^Kernel must be a positive integer, not None$"),
    (Layer("p", "spike_pool", (1, 4, 3), (1, 1, 0), kernel=4), ValueError,
     r"^Kernel must be at most the input height and width \(3\), not 4$"),
    (Layer("p", "spike_pool", (1, 4, 4), (1, 4, 4), kernel=2), ValueError,
     r"^Output shape must be \(1, 2, 2\), not \(1, 4, 4\)$"),
])
def test_wrong_parameters(layer, exc, message):
    with pytest.raises(exc, match=message):
        SpikePool(layer)
