"""cocotb side of tests/cosim/test_rate.py: hdl.rate.RateEncoder's Verilog fed seed and
intensity events under random input gaps and output stalls; every output event against the
list the reference (models/onboard.py) makes, in order."""
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge


@cocotb.test()
async def encoder_against_reference(dut):
    cfg = json.loads(os.environ["RATE_BENCH"])
    ab, bits = cfg["addr_bits"], cfg["bits"]
    words = [a | (v << ab) | (last << (ab + bits)) | (first << (ab + bits + 1))
             for a, v, last, first in cfg["events"]]
    want = [tuple(e) for e in cfg["expected"]]
    rng = random.Random(cfg["seed"])
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    got = []
    sent = 0
    for _ in range(cfg["budget"]):
        # Drive this cycle's inputs, then sample at the edge what the design did with them.
        if sent < len(words):
            offer = rng.random() >= cfg["gap"] or int(dut.i__valid.value)
            dut.i__valid.value = int(bool(offer))
            dut.i__payload.value = words[sent]
        else:
            dut.i__valid.value = 0
        dut.o__ready.value = int(rng.random() >= cfg["stall"])
        await ReadOnly()
        took_in = int(dut.i__valid.value) and int(dut.i__ready.value)
        took_out = int(dut.o__valid.value) and int(dut.o__ready.value)
        if took_out:
            assert dut.o__payload.value.is_resolvable, f"o__payload is {dut.o__payload.value}"
            w = dut.o__payload.value.to_unsigned()
            got.append((w & ((1 << ab) - 1), (w >> ab) & 1, (w >> (ab + 1)) & 1,
                        (w >> (ab + 2)) & 1))
            n = len(got) - 1
            assert n < len(want) and got[n] == want[n], \
                f"output event {n}: {got[n]}, the reference {want[n] if n < len(want) else None}"
        await RisingEdge(dut.clk)
        if took_in:
            sent += 1
        if len(got) == len(want) and sent == len(words):
            break
    assert got == want, f"{len(got)} of {len(want)} events after {cfg['budget']} cycles"
    dut._log.info(f"{len(got)} output events equal to the reference, {sent} input events")
