# amaranth: UnusedElaboratable=no
import random

import pytest
from amaranth import *

from hdl.queue import WORD_QUEUE_DEPTH, ReadQueue, full_rate_depth, read_queue_ref
from tests.sim import run_sim


def rtl_queue(issues, pops, *, depth, latency, width=8):
    """Drive a :class:`ReadQueue` cycle by cycle, as a memory of ``latency`` would.

    Returns ``(issued, words)``: the cycles in which a read was issued and the words taken
    from ``o`` (read ``n`` returns the word ``n``).
    """
    dut = ReadQueue(unsigned(width), depth=depth)
    issued, words = [], []

    async def testbench(ctx):
        pipe = [None] * latency                      # the memory's read pipeline
        for t, (want, pop) in enumerate(zip(issues, pops)):
            ctx.set(dut.o.ready, pop)
            issue = bool(want and ctx.get(dut.room))
            ctx.set(dut.issue, issue)
            arriving = pipe.pop(0)
            pipe.append(len(issued) % 2 ** width if issue else None)
            if issue:
                issued.append(t)
            ctx.set(dut.i.valid, arriving is not None)
            ctx.set(dut.i.payload, arriving or 0)
            if ctx.get(dut.o.valid) and pop:
                words.append(ctx.get(dut.o.payload))
            await ctx.tick()

    run_sim(dut, [testbench], watchdog_cycles=len(issues) + 10, name="read_queue")
    return issued, words


@pytest.mark.parametrize("depth", [1, 2, 3, WORD_QUEUE_DEPTH, 6])
@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_matches_reference(depth, stall):
    rng = random.Random(f"{depth}-{stall}")
    cycles = 400
    issues = [rng.random() < 0.8 for _ in range(cycles)]
    pops = [rng.random() >= stall for _ in range(cycles)]
    issued, words = rtl_queue(issues, pops, depth=depth, latency=1)
    assert issued == read_queue_ref(issues, pops, depth=depth)
    assert words == [n % 256 for n in range(len(words))]   # in order, none lost or repeated
    assert len(issued) - len(words) <= depth + 1         # what is left is held or in flight


@pytest.mark.parametrize("latency", [1, 2, 4])
@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_longer_reads_never_overflow(latency, stall):
    rng = random.Random(latency)
    cycles = 300
    issues = [True] * cycles
    pops = [rng.random() >= stall for _ in range(cycles)]
    issued, words = rtl_queue(issues, pops, depth=full_rate_depth(latency), latency=latency)
    assert words == [n % 256 for n in range(len(words))]
    assert len(issued) - len(words) <= full_rate_depth(latency)


@pytest.mark.parametrize("latency", [1, 2, 4])
def test_full_rate_depth(latency):
    # With a consumer that never stalls, full_rate_depth passes a read every cycle and one
    # slot fewer does not: the reason for WORD_QUEUE_DEPTH >= 3 after a one-cycle read.
    cycles = 60
    issued, _ = rtl_queue([True] * cycles, [True] * cycles,
                          depth=full_rate_depth(latency), latency=latency)
    assert len(issued) == cycles
    issued, _ = rtl_queue([True] * cycles, [True] * cycles,
                          depth=full_rate_depth(latency) - 1, latency=latency)
    assert len(issued) < cycles * 0.9


def test_reference_small_case():
    # Depth 2, consumer stalled for 3 cycles: two reads fill it. Room comes from registers
    # only, so the pop of cycle 3 frees a slot for a read in cycle 4, not in cycle 3.
    issues = [1, 1, 1, 1, 1, 1]
    pops = [0, 0, 0, 1, 1, 1]
    assert read_queue_ref(issues, pops, depth=2) == [0, 1, 4, 5]


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"shape": "x"}, TypeError, r"^Shape must be a shape, not 'x'$"),
    ({"depth": 0}, TypeError, r"^Depth must be a positive integer, not 0$"),
    ({"depth": True}, TypeError, r"^Depth must be a positive integer, not True$"),
])
def test_wrong_parameters(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        ReadQueue(**{"shape": unsigned(4), **kwargs})
