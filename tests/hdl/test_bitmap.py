# amaranth: UnusedElaboratable=no
import random

import pytest
from amaranth import *

from hdl.bitmap import EventBitmap, bitmap_ref
from hdl.compress import compress_ref
from tests.sim import run_sim, stall_stream_get, stream_put


def random_events(seed, n, steps, value_shape):
    """Steps of events in any order: repeats, zero-value no-ops, indices beyond ``n``."""
    rng = random.Random(seed)
    lo = -2 ** (value_shape.width - 1) if value_shape.signed else 0
    hi = 2 ** (value_shape.width - value_shape.signed) - 1
    top = 2 ** max(1, (n - 1).bit_length())
    events = []
    for t in range(steps):
        density = rng.choice([0.0, 0.1, 0.5, 1.5])
        step = [(rng.randrange(n), rng.choice([v for v in range(lo, hi + 1) if v]))
                for _ in range(int(density * n))]
        step += [(rng.randrange(top), 0) for _ in range(rng.randint(0, 2))]
        step += [(rng.randrange(n, top), 1) for _ in range(rng.randint(0, 1)) if top > n]
        rng.shuffle(step)
        step = step or [(0, 0)]
        first = t % 3 == 0
        events += [(a, v, int(i == len(step) - 1), int(first and i == len(step) // 2))
                   for i, (a, v) in enumerate(step)]
    return events


def rtl_bitmap(events, *, n, chunk, value_shape=unsigned(1), dense=False, stall, gap, seed=0):
    """Run the bitmap; return ``(words, lookups)`` as they leave ``o`` and ``o_lookup``.

    With a value memory, every step's words are compressed (by the reference compressor) and
    looked up once the step's last word has left, as a compressor would.
    """
    dut = EventBitmap(n, value_shape=value_shape, chunk=chunk, dense=dense)
    steps = sum(e[2] for e in events)
    words, looked = [], []
    done_words = []                                  # steps whose last word has left

    async def producer(ctx):
        rng = random.Random(seed)
        for index, value, last, first in events:
            while rng.random() < gap:
                await ctx.tick()
            await stream_put(ctx, dut.i, {"addr": index, "value": value, "last": last,
                                          "first": first})

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        step = []
        while len(done_words) < steps:
            w = await stall_stream_get(ctx, dut.o, rng, stall)
            step.append((w.bits, w.index, w.end, w.first))
            if w.end:
                words.extend(step)
                done_words.append(step)
                step = []

    async def lookup_producer(ctx):
        rng = random.Random(seed + 2)
        for t in range(steps):
            while len(done_words) <= t:
                await ctx.tick()
            for addr, value, last, first in compress_ref(done_words[t], chunk):
                while rng.random() < gap:
                    await ctx.tick()
                await stream_put(ctx, dut.i_lookup, {"addr": addr, "value": value,
                                                     "last": last, "first": first})

    async def lookup_consumer(ctx):
        rng = random.Random(seed + 3)
        closed = 0
        while closed < steps:
            e = await stall_stream_get(ctx, dut.o_lookup, rng, stall)
            looked.append((e.addr, e.value, e.last, e.first))
            closed += e.last

    benches = [producer, consumer]
    if dut.keeps_values:
        benches += [lookup_producer, lookup_consumer]
    run_sim(dut, benches, name="bitmap",
            watchdog_cycles=30 * (len(events) + steps * (dut.words + n)) + 4 * n + 200)
    return words, looked


def expected_lookups(words, sums, chunk):
    out, t = [], 0
    for addr, value, last, first in compress_ref(words, chunk):
        out.append((addr, sums[t].get(addr, 0) if value else 0, last, first))
        t += last
    return out


@pytest.mark.parametrize("n, chunk", [(1, 1), (10, 4), (40, 16), (64, 16), (7, 8)])
@pytest.mark.parametrize("stall, gap", [(0.0, 0.0), (0.5, 0.3)])
def test_bits_match_reference(n, chunk, stall, gap):
    events = random_events(f"{n}-{chunk}", n, 10, unsigned(1))
    expect, _ = bitmap_ref(events, n, chunk=chunk)
    assert any(bits for bits, *_ in expect)
    words, _ = rtl_bitmap(events, n=n, chunk=chunk, stall=stall, gap=gap)
    assert words == expect


@pytest.mark.parametrize("n, chunk, value_shape, dense", [
    (12, 4, unsigned(3), False), (40, 16, signed(4), False), (9, 4, unsigned(1), True),
    (20, 8, signed(3), True),
])
@pytest.mark.parametrize("stall, gap", [(0.0, 0.0), (0.5, 0.3)])
def test_values_match_reference(n, chunk, value_shape, dense, stall, gap):
    events = random_events(f"{n}-{value_shape}", n, 8, value_shape)
    expect, sums = bitmap_ref(events, n, chunk=chunk, value_shape=value_shape, dense=dense)
    words, looked = rtl_bitmap(events, n=n, chunk=chunk, value_shape=value_shape, dense=dense,
                               stall=stall, gap=gap)
    assert words == expect
    assert looked == expected_lookups(expect, sums, chunk)
    assert any(v for _, v, _, _ in looked)


def test_same_word_back_to_back():
    # Every event hits word 0 in consecutive cycles: the transparent read must see each write.
    events = [(i % 4, 1, 0, 0) for i in range(12)] + [(3, 1, 1, 0)]
    events += [(b, 1, int(b == 0), 0) for b in (2, 2, 1, 1, 0)]
    expect, _ = bitmap_ref(events, 8, chunk=4)
    assert expect[0][0] == 0b1111 and expect[2][0] == 0b0111
    assert rtl_bitmap(events, n=8, chunk=4, stall=0.0, gap=0.0)[0] == expect


def test_latency_and_back_to_back_steps():
    # Steps of one event each at full rate: the first words leave five cycles after the
    # first `last` was accepted, and a step costs one cycle per word once the pipe is full.
    n, chunk = 32, 16
    dut = EventBitmap(n, chunk=chunk)
    accepted, emitted = [], []

    async def testbench(ctx):
        ctx.set(dut.o.ready, 1)
        for t in range(n + 60):
            step = len(accepted)
            ctx.set(dut.i.valid, step < 12)
            ctx.set(dut.i.payload, {"addr": step, "value": 1, "last": 1, "first": 0})
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                accepted.append(t)
            if ctx.get(dut.o.valid):
                emitted.append((t, ctx.get(dut.o.payload.index)))
            await ctx.tick()

    run_sim(dut, [testbench], watchdog_cycles=n + 100)
    assert emitted[0] == (accepted[0] + 5, 0)
    assert len(emitted) == 2 * 12
    # Two buffers: the receiver never waits more than a scan (two words) plus the fill.
    assert max(b - a for a, b in zip(accepted, accepted[1:])) <= 2 + 5


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"n": 0}, TypeError, r"^Bit count must be a positive integer, not 0$"),
    ({"n": True}, TypeError, r"^Bit count must be a positive integer, not True$"),
    ({"value_shape": "x"}, TypeError, r"^Value shape must be a shape, not 'x'$"),
    ({"value_shape": signed(1)}, ValueError,
     r"^Value shape must be at least 1 bit wide \(2 if signed\), not signed\(1\)$"),
    ({"chunk": 0}, TypeError, r"^Chunk must be a positive integer, not 0$"),
    ({"chunk": 12}, ValueError, r"^Chunk must be a power of two, not 12$"),
    ({"dense": 1}, TypeError, r"^Dense must be a bool, not 1$"),
])
def test_wrong_parameters(kwargs, exc, message):
    params = {"n": 16, **kwargs}
    with pytest.raises(exc, match=message):
        EventBitmap(params.pop("n"), **params)


@pytest.mark.parametrize("kwargs", [{"n": 1, "chunk": 1}, {"n": 40, "value_shape": signed(4)},
                                    {"n": 20, "dense": True}])
def test_converts_to_verilog(kwargs):
    from amaranth.back import verilog
    assert "module bitmap" in verilog.convert(EventBitmap(**kwargs), name="bitmap",
                                              emit_src=False)


def test_members():
    assert not hasattr(EventBitmap(8), "i_lookup")
    assert EventBitmap(8, value_shape=unsigned(2)).keeps_values
    assert EventBitmap(8, dense=True).keeps_values
    assert EventBitmap(40, chunk=16).words == 3
