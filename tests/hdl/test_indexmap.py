# amaranth: UnusedElaboratable=no
import random

import pytest
from amaranth import *

from hdl.indexmap import IndexMap, index_map_ref
from tests.sim import run_sim, stall_stream_get, stream_put


def pool_stages(c, h, w, k):
    """The pool's window map, written with operators that integers share with Amaranth."""
    ho, wo = h // k, w // k
    return [
        lambda f: {"c": f["addr"] // (h * w), "r": f["addr"] % (h * w)},
        lambda f: {"c": f["c"], "oy": f["r"] // w // k, "ox": f["r"] % w // k},
        lambda f: {"addr": f["c"] * (ho * wo) + f["oy"] * wo + f["ox"],
                   "keep": (f["oy"] < ho) & (f["ox"] < wo)},
    ]


def position_major(c, h, w):
    """The convolution's bit order: input (c, y, x) is bit (y * W + x) * C + c."""
    return [
        lambda f: {"c": f["addr"] // (h * w), "pos": f["addr"] % (h * w)},
        lambda f: {"addr": f["pos"] * c + f["c"]},
    ]


def rtl_map(events, stages, *, n_in, n_out, value_shape, stall, gap, seed=0):
    dut = IndexMap(n_in, n_out, stages, value_shape=value_shape)
    results = []

    async def producer(ctx):
        rng = random.Random(seed)
        for addr, value, last, first in events:
            while rng.random() < gap:
                await ctx.tick()
            await stream_put(ctx, dut.i, {"addr": addr, "value": value, "last": last,
                                          "first": first})

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        for _ in events:
            e = await stall_stream_get(ctx, dut.o, rng, stall)
            results.append((e.addr if e.value else None, e.value, e.last, e.first))

    run_sim(dut, [producer, consumer], watchdog_cycles=10 * len(events) + 100, name="indexmap")
    return results


def random_events(rng, n_in, count, value_shape):
    lo = -2 ** (value_shape.width - 1) if value_shape.signed else 0
    hi = 2 ** (value_shape.width - (1 if value_shape.signed else 0)) - 1
    addr_top = 2 ** max(1, (n_in - 1).bit_length())      # also addresses >= n_in
    return [(rng.randrange(addr_top), rng.choice([0, rng.randint(lo, hi)]),
             int(rng.random() < 0.1), int(rng.random() < 0.05)) for _ in range(count)]


@pytest.mark.parametrize("kind, shape", [("pool", (2, 5, 6, 2)), ("pool", (1, 7, 7, 3)),
                                         ("conv", (3, 4, 5)), ("conv", (1, 3, 3))])
@pytest.mark.parametrize("stall, gap", [(0.0, 0.0), (0.5, 0.3)])
def test_matches_reference(kind, shape, stall, gap):
    if kind == "pool":
        c, h, w, k = shape
        stages, n_in, n_out = pool_stages(c, h, w, k), c * h * w, c * (h // k) * (w // k)
        value_shape = unsigned(1)
    else:
        c, h, w = shape
        stages, n_in, n_out = position_major(c, h, w), c * h * w, c * h * w
        value_shape = signed(4)
    rng = random.Random(f"{kind}{shape}")
    events = random_events(rng, n_in, 150, value_shape)
    expect = index_map_ref(stages, n_in, events)
    assert any(addr is not None for addr, *_ in expect)
    assert rtl_map(events, stages, n_in=n_in, n_out=n_out, value_shape=value_shape,
                   stall=stall, gap=gap) == expect


def test_latency_and_throughput():
    # Without stalls, event n leaves in cycle n + len(stages): one event per cycle.
    stages = position_major(2, 3, 3)
    dut = IndexMap(18, 18, stages)
    seen = []

    async def testbench(ctx):
        ctx.set(dut.o.ready, 1)
        for t in range(30):
            ctx.set(dut.i.valid, t < 20)
            ctx.set(dut.i.payload, {"addr": t % 18, "value": 1, "last": 0, "first": 0})
            if ctx.get(dut.o.valid):
                seen.append((t, ctx.get(dut.o.payload.addr)))
            await ctx.tick()

    run_sim(dut, [testbench], watchdog_cycles=100)
    assert dut.latency == 2
    assert seen == [(t + 2, (t % 18) % 9 * 2 + (t % 18) // 9) for t in range(20)]


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"n_in": 0}, TypeError, r"^Input count must be a positive integer, not 0$"),
    ({"n_out": "4"}, TypeError, r"^Output count must be a positive integer, not '4'$"),
    ({"stages": []}, TypeError, r"^Stages must be a non-empty sequence of callables, not \[\]$"),
    ({"stages": 3}, TypeError, r"^Stages must be a non-empty sequence of callables, not 3$"),
    ({"stages": [1]}, TypeError,
     r"^Stages must be a non-empty sequence of callables, not \[1\]$"),
    ({"value_shape": "x"}, TypeError, r"^Value shape must be a shape, not 'x'$"),
    ({"stages": [lambda f: {"x": f["addr"]}]}, ValueError,
     r"^The last stage must return an 'addr' field, not \['x'\]$"),
])
def test_wrong_parameters(kwargs, exc, message):
    params = {"n_in": 4, "n_out": 4, "stages": [lambda f: f], **kwargs}
    with pytest.raises(exc, match=message):
        IndexMap(params.pop("n_in"), params.pop("n_out"), params.pop("stages"), **params)
