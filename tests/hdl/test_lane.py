# amaranth: UnusedElaboratable=no
"""The linear engine's lane against its integer reference, the bit-count logic its scanner
decides with, and the step sequencer's waits."""
import random

import numpy as np
import pytest
from amaranth import *
from amaranth.sim import Simulator

from hdl.lane import LinearLane, few_bits, lane_ref
from hdl.weights import pack_linear
from models.synth import random_weights
from tests.sim import run_sim


def rtl_lane(packed, lane, events, *, value_shape, queue_depth, gap, seed=0):
    """Offer ``events`` ``[(addr, value, bank)]`` whenever ``room`` allows (with random gaps);
    return the accumulate operations ``[(post, delta, bank)]`` and whether ``busy`` cleared."""
    cb = 16
    dut = LinearLane(packed, lane, value_shape=value_shape, depth=packed.bank_size,
                     current_bits=cb, queue_depth=queue_depth)
    ops, idle = [], []
    expected = len(lane_ref(packed, lane, events, value_shape=value_shape))

    async def producer(ctx):
        rng = random.Random(seed)
        for addr, value, bank in events:
            while rng.random() < gap or not ctx.get(dut.room):
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"addr": addr, "value": value, "bank": bank})
            await ctx.tick()
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        while len(ops) < expected:
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                ops.append((payload.addr, payload.delta, payload.bank))
        for _ in range(20):                          # the lane empties: busy clears
            await ctx.tick()
        idle.append(ctx.get(dut.busy) == 0 and not ctx.get(dut.o.valid))

    rows = sum(packed.lane_data[lane].rows[a][1] + 4 for a, _, _ in events)
    run_sim(dut, [producer, consumer], name="lane", watchdog_cycles=4 * rows + 200)
    return ops, idle == [True]


@pytest.mark.parametrize("fmt, n_out, lanes, sparsity", [
    ("csr", 40, 3, 0.6), ("csr", 9, 1, 0.9),
    ("bitmap", 70, 1, 0.75),       # five chunks per row, some of them empty
    ("bitmap", 100, 2, 0.97),      # rows of one or no weight, chunks mostly empty
    ("bitmap", 30, 2, 0.5),        # one chunk per row: kept in the row word
    ("dense", 20, 3, 0.5),
])
@pytest.mark.parametrize("value_shape", [unsigned(0), unsigned(1), signed(4)])
@pytest.mark.parametrize("queue_depth, gap", [(2, 0.0), (8, 0.5)])
def test_lane_matches_reference(fmt, n_out, lanes, sparsity, value_shape, queue_depth, gap):
    rng = np.random.default_rng(n_out)
    w = random_weights(rng, (n_out, 24), sparsity=sparsity, weight_bits=6)
    packed = pack_linear(w, lanes=lanes, fmt=fmt, weight_bits=6)
    width = Shape.cast(value_shape).width
    lo, hi = ((-8, 8) if value_shape.signed else (0, 2 ** width)) if width else (1, 2)
    events = [(int(rng.integers(24)), int(rng.integers(lo, hi)), int(b))
              for b in (0, 1, 0) for _ in range(15)]
    lane = lanes - 1
    ops, idle = rtl_lane(packed, lane, events, value_shape=value_shape,
                         queue_depth=queue_depth, gap=gap)
    assert ops == lane_ref(packed, lane, events, value_shape=value_shape)
    assert idle


@pytest.mark.parametrize("width", [16, 13, 5])
def test_few_bits(width):
    """At most 0, 1 or 2 bits set: every word of up to 13 bits, and 16-bit words sampled (all
    of those with at most four bits set)."""
    m = Module()
    value = Signal(width)
    outs = [Signal(name=f"few{n}") for n in range(3)]
    m.d.comb += [out.eq(few_bits(value, n)) for n, out in enumerate(outs)]
    if width <= 13:
        words = range(2 ** width)
    else:
        words = [x for x in range(2 ** width) if bin(x).count("1") <= 4]
        words += random.Random(0).sample(range(2 ** width), 2000)

    async def testbench(ctx):
        for word in words:
            ctx.set(value, word)
            assert [ctx.get(out) for out in outs] == \
                [int(bin(word).count("1") <= n) for n in range(3)], word

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()


def test_step_sequencer_waits_for_lanes_and_sweep():
    """A closed step goes to the sweep only after its bank has drained (``busy``, and pushes of
    the last two cycles); a bank takes events again only after the sweep read its last row."""
    from hdl.linear import StepSequencer
    dut = StepSequencer(rows=3)
    log = []

    async def testbench(ctx):
        ctx.set(dut.room, 1)

        async def offer(work, last, first=0):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"work": work, "last": last, "first": first})
            while not ctx.get(dut.i.ready):
                await ctx.tick()
            log.append(("push", ctx.get(dut.bank)) if ctx.get(dut.push) else ("take",))
            await ctx.tick()
            ctx.set(dut.i.valid, 0)

        await offer(1, 0, first=1)
        ctx.set(dut.busy, 0b01)                      # a lane works on bank 0
        await offer(1, 1)                            # step 0 closed: bank 0
        for _ in range(5):
            assert not ctx.get(dut.o.valid)          # still busy
            await ctx.tick()
        ctx.set(dut.busy, 0)
        assert not ctx.get(dut.o.valid)              # `drained` is a register: from the next
        await ctx.tick()                             # cycle on
        assert ctx.get(dut.o.valid)
        assert (ctx.get(dut.o.p.bank), ctx.get(dut.o.p.first)) == (0, 1)
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        ctx.set(dut.o.ready, 0)
        await offer(1, 1)                            # step 1 into bank 1, closed at once
        assert not ctx.get(dut.i.ready)              # bank 0 is being swept
        for row in range(3):
            ctx.set(dut.i_read.valid, 1)
            ctx.set(dut.i_read.payload, {"row": row, "bank": 0})
            await ctx.tick()
        ctx.set(dut.i_read.valid, 0)
        assert not ctx.get(dut.i.ready)              # its last row read, registered: bank 0
        await ctx.tick()                             # is free from the next cycle on
        assert ctx.get(dut.i.ready)
        await offer(0, 1)                            # an empty step: taken, nothing pushed
        log.append(("sweep", ctx.get(dut.o.valid), ctx.get(dut.o.p.bank)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert log == [("push", 0), ("push", 0), ("push", 1), ("take",), ("sweep", 1, 1)]
