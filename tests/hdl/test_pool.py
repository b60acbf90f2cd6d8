# amaranth: UnusedElaboratable=no
import random

import numpy as np
import pytest
from amaranth import *

from hdl.lsb import CHUNK
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


def test_addresses_beyond_the_input_are_ignored():
    layer = pool_layer(3, 7, 5, 2)                     # 105 inputs on 7 address bits
    steps = random_steps(9, layer, 8)
    rng = random.Random(9)
    noisy = []
    for first, events in steps:                        # five spikes beyond, anywhere (or last)
        events = events + [(rng.randrange(layer.n_in, 128), 1) for _ in range(5)]
        rng.shuffle(events)
        noisy.append((first, events))
    assert rtl_pool(layer, noisy, gap=0.2, stall=0.3) == ref_pool(layer, steps)


def rtl_pool_timing(layer, steps, *, idle):
    """Cycles at which each step's last event is taken and its closing event leaves.

    The input is offered every cycle (after ``idle`` cycles), the output is always ready.
    """
    dut, taken, closed = SpikePool(layer), [], []
    producer = step_producer(dut, steps, gap=0.0, seed=0)

    async def delayed_producer(ctx):
        for _ in range(idle):
            await ctx.tick()
        await producer(ctx)

    async def monitor(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(closed) < len(steps):
            _, _, take, in_last, out, out_last = await ctx.tick().sample(
                dut.i.valid & dut.i.ready, dut.i.p.last, dut.o.valid, dut.o.p.last)
            cycle += 1
            if take and in_last:
                taken.append(cycle)
            if out and out_last:
                closed.append(cycle)

    run_sim(dut, [delayed_producer, monitor], name="pool_timing",
            watchdog_cycles=idle + 2 * sum(len(e) + layer.n_out for _, e in steps) + 100)
    return taken, closed


def test_latency_and_rate():
    """The docstring's figures: a step's words reach the compressor eight cycles after its last
    event (window map 3, bitmap 5), which then takes a cycle per spike or empty word and one to
    close; steps whose events outnumber that pass arrive and leave one event per cycle."""
    layer = pool_layer(4, 8, 8, 2)                     # 64 outputs: four 16-bit words
    words = -(-layer.n_out // CHUNK)
    # Four spikes into each of eight windows: 32 events, 8 output spikes, pass <= 8 + 4 + 1.
    busy = [(y * 8 + x + 64 * c, 1) for c in range(2) for y in range(4) for x in range(4)]
    steps = [(True, [(0, 1)])] + [(False, busy)] * 6
    taken, closed = rtl_pool_timing(layer, steps, idle=20)   # bitmaps cleared by then
    assert closed[0] - taken[0] == 3 + 5 + words + 1
    assert [b - a for a, b in zip(closed[3:], closed[4:])] == [len(busy)] * 3


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
