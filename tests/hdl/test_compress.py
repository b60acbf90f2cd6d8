# amaranth: UnusedElaboratable=no
import random

import pytest

from hdl.compress import SpikeCompressor, compress_ref
from tests.sim import run_sim, stall_stream_get, stream_put


def random_words(rng, width, n, steps, density):
    words_per_step = -(-n // width)
    out = []
    for t in range(steps):
        for index in range(words_per_step):
            bits = 0
            for b in range(width):
                if index * width + b < n and rng.random() < density:
                    bits |= 1 << b
            out.append((bits, index, int(index == words_per_step - 1),
                        int(t % 3 == 0 and index == 0)))
    return out


def rtl_compress(words, *, width, n, stall, gap, seed=0):
    dut = SpikeCompressor(width=width, n=n)
    expect_len = len(compress_ref(words, width))
    results = []

    async def producer(ctx):
        rng = random.Random(seed)
        for bits, index, end, first in words:
            while rng.random() < gap:
                await ctx.tick()
            await stream_put(ctx, dut.i, {"bits": bits, "index": index, "end": end,
                                          "first": first})

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        for _ in range(expect_len):
            e = await stall_stream_get(ctx, dut.o, rng, stall)
            results.append((e.addr if e.value else 0, e.value, e.last, e.first))

    run_sim(dut, [producer, consumer], watchdog_cycles=20 * (len(words) + expect_len) + 100,
            name="compressor")
    return results


@pytest.mark.parametrize("width, n", [(1, 7), (4, 16), (8, 61), (16, 100)])
@pytest.mark.parametrize("stall, gap", [(0.0, 0.0), (0.5, 0.3)])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.6, 1.0])
def test_matches_reference(width, n, stall, gap, density):
    rng = random.Random(f"{width}-{n}-{density}")
    words = random_words(rng, width, n, steps=6, density=density)
    expect = compress_ref(words, width)
    assert rtl_compress(words, width=width, n=n, stall=stall, gap=gap) == expect
    assert any(e[2] for e in expect)                  # steps were closed


def test_reference_small_case():
    # Two steps of 4-bit words over 8 neurons, written out by hand.
    words = [(0b0101, 0, 0, 1), (0b1000, 1, 1, 0), (0, 0, 0, 0), (0, 1, 1, 0)]
    assert compress_ref(words, 4) == [(0, 1, 0, 1), (2, 1, 0, 0), (7, 1, 1, 0), (0, 0, 1, 0)]


def test_throughput_one_cycle_per_spike():
    # With no stalls, a step of w words and s spikes takes about max(w, s) + 1 cycles.
    width, n = 8, 64
    words = [(0xFF, i, int(i == 7), 0) for i in range(8)]
    dut = SpikeCompressor(width=width, n=n)
    cycles = []

    async def producer(ctx):
        for bits, index, end, first in words:
            await stream_put(ctx, dut.i, {"bits": bits, "index": index, "end": end,
                                          "first": first})

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        count = 0
        for cycle in range(200):
            await ctx.tick()
            if ctx.get(dut.o.valid):
                count += 1
                if ctx.get(dut.o.payload.last):
                    cycles.append(cycle)
                    return

    run_sim(dut, [producer, consumer], watchdog_cycles=400, name="compressor")
    assert cycles and cycles[0] <= 64 + 4


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"width": 0, "n": 4}, TypeError, r"^Width must be a positive integer, not 0$"),
    ({"width": 4, "n": "8"}, TypeError, r"^Neuron count must be a positive integer, not '8'$"),
    ({"width": 65, "n": 100}, ValueError, r"^Width must be at most 64, not 65$"),
])
def test_wrong_parameters(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        SpikeCompressor(**kwargs)
