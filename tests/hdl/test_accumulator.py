# amaranth: UnusedElaboratable=no
import random

import pytest

from hdl.accumulator import READ_LATENCY, BankedAccumulator, accumulate_ref
from tests.sim import run_sim


def run_steps(dut, steps, *, gap, sweep_gap, seed=0):
    """Accumulate step ``t`` into bank ``t % 2`` while the sweep reads step ``t - 1``.

    ``steps`` is ``[[(addr, delta)]]``. Operations go out with random gaps (probability
    ``gap`` per cycle), sweep rows with ``sweep_gap``; a bank is swept once the producer has
    sent its step and ``busy`` is low, and refilled once its sweep has read every row.
    Returns the rows leaving ``o_sweep``, with the cycle each left in.
    """
    sent, swept, rows = [], [], []

    async def producer(ctx):
        rng = random.Random(seed)
        await ctx.tick().until(dut.i.ready)
        for t, ops in enumerate(steps):
            while t >= 2 and len(swept) < t - 1:
                await ctx.tick()
            for addr, delta in ops:
                while rng.random() < gap:
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"addr": addr, "delta": delta, "bank": t % 2})
                await ctx.tick()
                ctx.set(dut.i.valid, 0)
            sent.append(t)

    async def sweeper(ctx):
        rng = random.Random(seed + 1)
        for t in range(len(steps)):
            while len(sent) <= t or ctx.get(dut.busy) >> (t % 2) & 1:
                await ctx.tick()
            for row in range(dut.rows):
                while rng.random() < sweep_gap:
                    await ctx.tick()
                ctx.set(dut.i_sweep.valid, 1)
                ctx.set(dut.i_sweep.payload, {"row": row, "bank": t % 2})
                await ctx.tick()
                ctx.set(dut.i_sweep.valid, 0)
            swept.append(t)

    async def monitor(ctx):
        cycle = 0
        while len(rows) < len(steps) * dut.rows:
            _, _, valid, payload = await ctx.tick().sample(dut.o_sweep.valid, dut.o_sweep.payload)
            cycle += 1
            if valid:
                rows.append((cycle, tuple(payload[s] for s in range(len(payload)))))

    ops = sum(len(s) for s in steps)
    run_sim(dut, [producer, sweeper, monitor], name="accumulator",
            watchdog_cycles=4 * (ops + len(steps) * dut.rows) + dut.rows + 100)
    return rows


def reference(steps, *, depth, current_bits, sweep_width):
    commands = []
    for t, ops in enumerate(steps):
        commands += [("add", a, d, t % 2) for a, d in ops]
        commands += [("sweep", r, t % 2) for r in range(-(-depth // sweep_width))]
    return accumulate_ref(commands, depth=depth, current_bits=current_bits,
                          sweep_width=sweep_width)


@pytest.mark.parametrize("depth, current_bits, sweep_width", [
    (1, 4, 1), (4, 6, 1), (13, 8, 1), (16, 5, 4), (10, 7, 2),
])
@pytest.mark.parametrize("gap, sweep_gap", [(0.0, 0.0), (0.5, 0.5)])
@pytest.mark.parametrize("raw_outputs", [False, True])
def test_matches_reference(depth, current_bits, sweep_width, gap, sweep_gap, raw_outputs):
    rng = random.Random(f"{depth}-{current_bits}-{sweep_width}")
    hot = max(1, depth // 3)                         # many back-to-back hits on few addresses
    steps = [[(rng.randrange(hot) if rng.random() < 0.6 else rng.randrange(depth),
               rng.randint(-2 ** (current_bits - 2), 2 ** (current_bits - 2)))
              for _ in range(rng.choice([0, 5, 30]))] for _ in range(8)]
    dut = BankedAccumulator(depth, current_bits=current_bits, sweep_width=sweep_width,
                            raw_outputs=raw_outputs)
    got = [row for _, row in run_steps(dut, steps, gap=gap, sweep_gap=sweep_gap)]
    expect = reference(steps, depth=depth, current_bits=current_bits, sweep_width=sweep_width)
    assert got == expect
    assert any(any(row) for row in expect)


@pytest.mark.parametrize("schedule", [
    "A A", "A . A", "A . . A", "A A A A", "A B A B", "A . B A", "A a", "A a A a . A",
])
@pytest.mark.parametrize("raw_outputs", [False, True])
def test_forwarding_distances(schedule, raw_outputs):
    # One step of operations issued cycle by cycle ("." is a bubble). A and B are addresses 3
    # and 5 of bank 0; "a" is address 3 of bank 1, which must never be forwarded into bank 0.
    depth, cb = 8, 10
    dut = BankedAccumulator(depth, current_bits=cb, raw_outputs=raw_outputs)
    plan = [None if s == "." else {"A": (3, 0), "B": (5, 0), "a": (3, 1)}[s]
            for s in schedule.split()]
    deltas = [n + 1 for n in range(len(plan))]
    result = {}

    async def testbench(ctx):
        await ctx.tick().until(dut.i.ready)
        for slot, delta in zip(plan, deltas):
            ctx.set(dut.i.valid, slot is not None)
            if slot is not None:
                ctx.set(dut.i.payload, {"addr": slot[0], "delta": delta, "bank": slot[1]})
            await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for _ in range(3):
            await ctx.tick()
        for bank in range(2):
            for addr in (3, 5):
                ctx.set(dut.i_sweep.valid, 1)
                ctx.set(dut.i_sweep.payload, {"row": addr, "bank": bank})
                await ctx.tick()
                ctx.set(dut.i_sweep.valid, 0)
                await ctx.tick()
                result[bank, addr] = ctx.get(dut.o_sweep.payload[0])

    run_sim(dut, [testbench], watchdog_cycles=depth + 60)
    expect = {(b, a): 0 for b in range(2) for a in (3, 5)}
    for slot, delta in zip(plan, deltas):
        if slot is not None:
            expect[slot[1], slot[0]] += delta
    assert result == expect


@pytest.mark.parametrize("raw_outputs", [False, True])
def test_latency(raw_outputs):
    # An operation accepted in cycle t is visible to a sweep read from t + 3 on (busy says so
    # until then), and the sweep's currents leave READ_LATENCY cycles after the request.
    dut = BankedAccumulator(4, current_bits=8, raw_outputs=raw_outputs)
    trace = []

    async def testbench(ctx):
        await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"addr": 2, "delta": 7, "bank": 1})
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for cycle in range(1, 4):
            trace.append((cycle, ctx.get(dut.busy)))
            if cycle == 3:
                ctx.set(dut.i_sweep.valid, 1)
                ctx.set(dut.i_sweep.payload, {"row": 2, "bank": 1})
            await ctx.tick()
            ctx.set(dut.i_sweep.valid, 0)
        for _ in range(READ_LATENCY - 1):
            trace.append(("o", ctx.get(dut.o_sweep.valid)))
            await ctx.tick()
        trace.append(("o", ctx.get(dut.o_sweep.valid), ctx.get(dut.o_sweep.payload[0])))

    run_sim(dut, [testbench], watchdog_cycles=40)
    assert trace == [(1, 0b10), (2, 0b10), (3, 0), ("o", 0), ("o", 1, 7)]


def test_clears_after_reset():
    dut = BankedAccumulator(6, current_bits=4, sweep_width=2)
    waited = []

    async def testbench(ctx):
        for cycle in range(10):
            if ctx.get(dut.i.ready):
                waited.append(cycle)
                break
            await ctx.tick()

    run_sim(dut, [testbench], watchdog_cycles=40)
    assert waited == [dut.rows] == [3]


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"depth": 0}, TypeError, r"^Depth must be a positive integer, not 0$"),
    ({"current_bits": 1}, TypeError, r"^Current bits must be an integer of at least 2, not 1$"),
    ({"current_bits": 8.0}, TypeError,
     r"^Current bits must be an integer of at least 2, not 8\.0$"),
    ({"sweep_width": 0}, TypeError, r"^Sweep width must be a positive integer, not 0$"),
    ({"sweep_width": 3}, ValueError, r"^Sweep width must be a power of two, not 3$"),
    ({"depth": 2, "sweep_width": 4}, ValueError,
     r"^Sweep width must be at most the depth \(2\), not 4$"),
    ({"raw_outputs": 1}, TypeError, r"^Raw outputs must be None or a bool, not 1$"),
])
def test_wrong_parameters(kwargs, exc, message):
    params = {"depth": 8, "current_bits": 8, **kwargs}
    with pytest.raises(exc, match=message):
        BankedAccumulator(params.pop("depth"), **params)
