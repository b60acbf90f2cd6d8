"""cocotb side of tests/cosim/test_spram.py: random writes and reads through hdl.wload.SPRAM's
SB_SPRAM256KA instances, against a dictionary."""
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer


@cocotb.test()
async def writes_then_reads(dut):
    cfg = json.loads(os.environ["SPRAM_BENCH"])
    width, depth, seed = cfg["width"], cfg["depth"], cfg["seed"]
    rng = random.Random(seed)
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 0
    dut.we.value = 0
    dut.addr.value = 0
    dut.wdata.value = 0
    await ClockCycles(dut.clk, 2)
    model = {}
    # Both ends of every block, and random addresses across all of them.
    addrs = sorted({0, depth - 1, *(min(depth - 1, b * 16384 + d) for b in range(4)
                                      for d in (0, 16383)),
                    *(rng.randrange(depth) for _ in range(cfg["count"]))})
    for addr in addrs:
        value = rng.randrange(2 ** width)
        dut.addr.value, dut.we.value, dut.wdata.value = addr, 1, value
        await RisingEdge(dut.clk)
        model[addr] = value
    dut.we.value = 0
    checked = 0
    # A read every cycle: the next address goes out while the word read last is checked.
    order = rng.sample(addrs, len(addrs))
    dut.addr.value = order[0]
    for k, addr in enumerate(order):
        await RisingEdge(dut.clk)
        await Timer(1, unit="ns")
        dut.addr.value = order[(k + 1) % len(order)]
        await Timer(1, unit="ns")
        got = dut.rdata.value
        assert got.is_resolvable, f"rdata is {got} after reading address {addr}"
        assert got.to_unsigned() == model[addr], \
            f"address {addr}: read {got.to_unsigned():#x}, wrote {model[addr]:#x}"
        checked += 1
    assert checked == len(model)
    dut._log.info(f"{checked} words written and read back")
