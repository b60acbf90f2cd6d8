# amaranth: UnusedElaboratable=no
import random

import pytest
from amaranth import *
from amaranth.sim import Simulator

from hdl.uart import UARTRx, UARTTx, baud_divisor, uart_decode, uart_encode
from tests.sim import run_sim, stall_stream_get


def rtl_rx(levels, divisor, count, *, stall):
    dut, got = UARTRx(divisor=divisor), []

    async def line(ctx):
        for level in levels:
            ctx.set(dut.rx, level)
            await ctx.tick()

    async def sink(ctx):
        rng = random.Random(3)
        for _ in range(count):
            got.append(await stall_stream_get(ctx, dut.o, rng, stall))

    run_sim(dut, [line, sink], watchdog_cycles=len(levels) + 20 * divisor, name="uart_rx")
    return bytes(got)


def rtl_tx(data, divisor, *, gap):
    dut, levels = UARTTx(divisor=divisor), []
    total = len(data) * (10 * divisor + gap + 2) + 4 * divisor

    async def source(ctx):
        rng = random.Random(5)
        for byte in data:
            for _ in range(rng.randrange(gap + 1)):
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, byte)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
        for _ in range(12 * divisor):
            await ctx.tick()

    async def line(ctx):
        async for _, _, tx in ctx.tick().sample(dut.tx):
            levels.append(tx)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(line, background=True)

    async def watchdog(ctx):
        for _ in range(total + 12 * divisor):
            await ctx.tick()
        raise TimeoutError("UARTTx made no progress")
    sim.add_testbench(watchdog, background=True)
    sim.run()
    return levels


@pytest.mark.parametrize("divisor", [4, 7, 16])
@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_rx_matches_reference(divisor, stall):
    rng = random.Random(divisor)
    data = bytes(rng.randrange(256) for _ in range(40)) + b"\x00\xff\x55"
    # Idle gaps between bytes, from none to a few bits; a 50% stalling consumer still takes
    # each byte well within one byte time, so nothing may be lost.
    gaps = [rng.randrange(3 * divisor) for _ in data]
    levels = uart_encode(data, divisor, gaps=gaps) + [1] * (12 * divisor)
    assert rtl_rx(levels, divisor, len(data), stall=stall) == data


def test_rx_tolerates_baud_mismatch():
    # The host runs 3% slow: every tenth bit is one cycle longer at divisor 16.
    divisor, data = 16, bytes(range(0, 256, 7))
    levels = []
    for byte in data:
        for index, bit in enumerate([0] + [(byte >> k) & 1 for k in range(8)] + [1]):
            levels += [bit] * (divisor + (1 if index % 2 else 0))
    levels += [1] * (12 * divisor)
    assert rtl_rx(levels, divisor, len(data), stall=0.0) == data


def test_rx_drops_byte_without_stop_bit_and_flags_it():
    divisor = 4
    good = uart_encode(b"\x12", divisor)
    bad = uart_encode(b"\x34", divisor)
    bad[-divisor:] = [0] * divisor                       # stop bit low
    levels = [1] * 8 + bad + [1] * (3 * divisor) + good + [1] * (12 * divisor)
    dut = UARTRx(divisor=divisor)
    got, errors = [], []

    async def line(ctx):
        for level in levels:
            ctx.set(dut.rx, level)
            await ctx.tick()

    async def watch(ctx):
        for _ in levels:
            valid, payload, error = (ctx.get(dut.o.valid), ctx.get(dut.o.payload),
                                     ctx.get(dut.error))
            ctx.set(dut.o.ready, 1)
            if valid:
                got.append(payload)
            errors.append(error)
            await ctx.tick()

    run_sim(dut, [line, watch], watchdog_cycles=len(levels) + 10, name="uart_rx_err")
    assert got == [0x12]
    assert sum(errors) == 1


@pytest.mark.parametrize("divisor", [4, 9])
@pytest.mark.parametrize("gap", [0, 30])
def test_tx_matches_reference(divisor, gap):
    rng = random.Random(divisor * 100 + gap)
    data = bytes(rng.randrange(256) for _ in range(30))
    levels = rtl_tx(data, divisor, gap=gap)
    assert uart_decode(levels, divisor) == data


def test_tx_to_rx_loopback():
    divisor = 5
    data = bytes(range(0, 256, 3))
    levels = rtl_tx(data, divisor, gap=0)
    assert rtl_rx(levels + [1] * 20 * divisor, divisor, len(data), stall=0.3) == data


def test_reference_round_trip():
    data = bytes(range(256))
    assert uart_decode(uart_encode(data, 6, gaps=[k % 5 for k in range(256)]), 6) == data


def test_reference_rejects_missing_stop_bit():
    levels = uart_encode(b"\xa5", 4)
    levels[-2:] = [0, 0]
    with pytest.raises(ValueError, match=r"^Byte starting at cycle 0 has no stop bit$"):
        uart_decode(levels + [0] * 8, 4)


@pytest.mark.parametrize("clk, baud, divisor", [(12e6, 1_000_000, 12), (30e6, 1_000_000, 30),
                                                (12e6, 115200, 104), (100e6, 3_000_000, 33)])
def test_baud_divisor(clk, baud, divisor):
    assert baud_divisor(clk, baud) == divisor


@pytest.mark.parametrize("args, exc, message", [
    ((12e6, 0), TypeError, r"^Baud rate must be a positive integer, not 0$"),
    ((12e6, 4_000_000), ValueError,
     r"^Baud rate 4000000 needs at least 4 clock cycles per bit, but the clock of 12 MHz "
     r"gives 3\.00$"),
    ((12e6, 2_500_000), ValueError,
     r"^Baud rate 2500000 is 4\.0% off at 12 MHz \(divisor 5\); at most 2% is allowed$"),
])
def test_baud_divisor_rejects(args, exc, message):
    with pytest.raises(exc, match=message):
        baud_divisor(*args)


@pytest.mark.parametrize("cls", [UARTRx, UARTTx])
@pytest.mark.parametrize("divisor", [3, 4.0, True])
def test_wrong_divisor(cls, divisor):
    with pytest.raises(TypeError, match=rf"^Divisor must be an integer of at least 4, "
                                        rf"not {divisor!r}$"):
        cls(divisor=divisor)
