"""Lowest set bit of a word: the find-first-set that every spike scan is built on.

The spike compressor, the bitmap weight format and the engines' input scans all walk a word of
flags lowest bit first: find the lowest set bit, use its index, clear it, repeat. This module
writes that once: :func:`lowest_set_bit` (a combinational priority encoder, lowest index wins),
:func:`clear_lowest` and the integer reference :func:`lsb_ref`.

:data:`CHUNK` is the word width the engines scan per cycle. On the iCE40 the encoder's carry
chain sets the clock: a 16-bit chunk kept a UP5K near 57 MHz, a 32-bit one dropped it to about
36 MHz (TOOLCHAIN.md, "Measured hardware figures"). Wider words are scanned 16 bits at a time.
"""
from amaranth import *
from amaranth.utils import exact_log2

__all__ = ["CHUNK", "CHUNK_BITS", "lowest_set_bit", "clear_lowest", "lsb_ref"]

#: Flags scanned per cycle: 16 keeps the iCE40 find-first-set within one cycle at board clocks.
CHUNK = 16
#: Bits of a flag's position inside a chunk (``index % CHUNK == index[:CHUNK_BITS]``).
CHUNK_BITS = exact_log2(CHUNK)


def lsb_ref(word):
    """Reference: index of the lowest set bit of the non-negative integer ``word``.

    Returns ``None`` for ``0``. (:func:`lowest_set_bit` gives index 0 and ``any = 0`` there.)
    """
    if word < 0:
        raise ValueError(f"Word must be non-negative, not {word!r}")
    return (word & -word).bit_length() - 1 if word else None


def lowest_set_bit(m, value, *, name="lsb"):
    """Add a priority encoder for ``value`` to ``m``; return ``(index, any)``.

    Combinational. ``index`` (``Signal(range(len(value)))``) is the position of the lowest set
    bit, 0 when no bit is set; ``any`` is high when some bit is set. Equal to :func:`lsb_ref`.
    Keep ``len(value) <= CHUNK`` on iCE40 (see the module documentation).
    """
    value = Value.cast(value)
    if len(value) < 1:
        raise ValueError(f"Value must be at least 1 bit wide, not {len(value)}")
    index = Signal(range(len(value)), name=f"{name}_index")
    found = Signal(name=f"{name}_any")
    # The last assignment wins: walk from the top bit down so the lowest set bit is kept.
    for b in reversed(range(len(value))):
        with m.If(value[b]):
            m.d.comb += index.eq(b)
    m.d.comb += found.eq(value.any())
    return index, found


def clear_lowest(value):
    """``value`` with its lowest set bit cleared (``value & (value - 1)``), as wide as ``value``."""
    value = Value.cast(value)
    return (value & (value - 1))[:len(value)]
