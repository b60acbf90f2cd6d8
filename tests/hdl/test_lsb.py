# amaranth: UnusedElaboratable=no
import random

import pytest
from amaranth import *
from amaranth.sim import Simulator

from hdl.lsb import CHUNK, CHUNK_BITS, clear_lowest, lowest_set_bit, lsb_ref


def rtl_lsb(words, width):
    """``(index, any, cleared)`` of the encoder for each word (combinational, no clock)."""
    m = Module()
    value = Signal(width)
    index, found = lowest_set_bit(m, value)
    cleared = Signal(width)
    m.d.comb += cleared.eq(clear_lowest(value))
    results = []

    async def testbench(ctx):
        for word in words:
            ctx.set(value, word)
            results.append((ctx.get(index), ctx.get(found), ctx.get(cleared)))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    return results


def ref_lsb(word):
    index = lsb_ref(word)
    return (0 if index is None else index, int(word != 0), word & (word - 1) if word else 0)


@pytest.mark.parametrize("width", [1, 2, 5, 8])
def test_exhaustive(width):
    words = list(range(2 ** width))
    assert rtl_lsb(words, width) == [ref_lsb(w) for w in words]


@pytest.mark.parametrize("width", [CHUNK, 64])
def test_random(width):
    rng = random.Random(width)
    # Sparse and dense words, and every single-bit word (the encoder's edge cases).
    words = [rng.getrandbits(width) & rng.getrandbits(width) & rng.getrandbits(width)
             for _ in range(200)] + [1 << b for b in range(width)] + [2 ** width - 1]
    assert rtl_lsb(words, width) == [ref_lsb(w) for w in words]


def test_reference():
    assert [lsb_ref(w) for w in (0, 1, 2, 12, 0x8000, 0b1010_0000)] == [None, 0, 1, 2, 15, 5]
    assert 2 ** CHUNK_BITS == CHUNK


@pytest.mark.parametrize("call, exc, message", [
    (lambda: lsb_ref(-1), ValueError, r"^Word must be non-negative, not -1$"),
    (lambda: lowest_set_bit(Module(), Signal(0)), ValueError,
     r"^Value must be at least 1 bit wide, not 0$"),
])
def test_wrong_parameters(call, exc, message):
    with pytest.raises(exc, match=message):
        call()
