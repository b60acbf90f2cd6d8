"""Sparse weight storage for the linear engine: formats, packing and their sizes in bits.

The engine has ``L`` lanes; lane ``k`` owns the output neurons ``j`` with ``j % L == k`` (its
bank) and keeps its own copy of the weights that target them, so the lanes never share a memory
port and never collide. Per lane and presynaptic row ``i``:

``csr``
    An entry memory holding, row after row, only the non-zero weights of the lane's bank as
    ``(post, weight)`` pairs (``post`` = ``j // L``, the neuron's index inside the bank), and a
    row memory holding ``(start, count)`` per row. Work per event = the non-zeros of its row.
``bitmap``
    Per row, one bit per neuron of the bank (in chunks of :data:`hdl.lsb.CHUNK` bits, so that
    finding the next set bit fits one cycle) in a bitmap memory, and the packed non-zero
    weights. The row memory holds ``(start, chunks)``: where the row's weights start and how
    many of its chunks to fetch (up to its last non-empty one; 0 for a row without weights in
    the bank), so a lane never reads the empty chunks at a row's end. A bank of at most one
    chunk keeps it in the row word instead: ``(start, chunk)``, and no bitmap memory.
``dense``
    Every weight, zeros included, ``n_out / L`` per row; ``post`` is implicit. This is the dense
    baseline: the same datapath, doing the work of every weight.

The sizes of the textbook formats (one lane) are given by :func:`csr_bits` and
:func:`bitmap_bits` so reports can compare the stored bits against them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from amaranth.utils import ceil_log2

from .lsb import CHUNK

__all__ = ["FORMATS", "csr_bits", "bitmap_bits", "dense_bits", "PackedLane", "PackedWeights",
           "pack_linear", "choose_format"]

FORMATS = ("csr", "bitmap", "dense")


def _bits(n):
    """Width of an unsigned counter that holds ``0 .. n`` inclusive."""
    return max(1, int(n).bit_length())


def csr_bits(weight, weight_bits):
    """Textbook CSR, one lane: ``nnz * (ceil_log2(n_out) + wbits) + (n_in + 1) * ptr``."""
    n_out, n_in = weight.shape
    nnz = int(np.count_nonzero(weight))
    return nnz * (max(1, ceil_log2(n_out)) + weight_bits) + (n_in + 1) * _bits(nnz)


def bitmap_bits(weight, weight_bits):
    """Textbook bitmap: one bit per weight plus the packed non-zeros."""
    nnz = int(np.count_nonzero(weight))
    return weight.size + nnz * weight_bits


def dense_bits(weight, weight_bits):
    return weight.size * weight_bits


@dataclass
class PackedLane:
    """Memory images of one lane: ``rows`` (start, count) and ``entries`` (post, weight)."""
    rows: list          # [(start, count)] per input row
    entries: list       # [(post, weight)] (post unused for dense and bitmap)
    chunks: list        # bitmap only: [[chunk bits]] per input row

    @property
    def spans(self):
        """Bitmap only: chunks to fetch per input row (up to its last non-empty one)."""
        return [max((c + 1 for c, bits in enumerate(row) if bits), default=0)
                for row in self.chunks]


@dataclass
class PackedWeights:
    """A linear layer's weights laid out for ``lanes`` lanes in ``fmt``."""
    fmt: str
    lanes: int
    n_in: int
    n_out: int
    weight_bits: int
    bank_size: int              # neurons per lane: ceil(n_out / L)
    lane_data: list             # [PackedLane]
    start_bits: int
    count_bits: int             # csr: (start, count) row words; bitmap: (start, chunks)
    post_bits: int
    chunk_width: int            # bitmap: bits per chunk
    chunks_per_row: int         # bitmap: chunks per row and lane
    capacity: int = 0           # entries a lane's memory holds (0: as many as it has)

    @property
    def entry_bits(self):
        """Width of one entry word."""
        return self.weight_bits + (self.post_bits if self.fmt == "csr" else 0)

    @property
    def entry_depth(self):
        """Words of a lane's entry memory: the :attr:`capacity`, or its most entries."""
        return self.capacity or max(1, max(len(lane.entries) for lane in self.lane_data))

    @property
    def inline_chunk(self):
        """Bitmap with one chunk per row: the chunk lives in the row word, no bitmap memory."""
        return self.fmt == "bitmap" and self.chunks_per_row == 1

    @property
    def row_bits(self):
        """Width of one row word: ``(start, count)`` (csr), ``(start, chunks)`` (bitmap) or
        ``(start, chunk)`` (bitmap, :attr:`inline_chunk`)."""
        if self.fmt == "dense":
            return 0
        return self.start_bits + (self.chunk_width if self.inline_chunk else self.count_bits)

    @property
    def bitmap_depth(self):
        """Words of the bitmap memory per lane: every chunk of every row (none inline)."""
        return self.n_in * self.chunks_per_row if self.fmt == "bitmap" and not self.inline_chunk \
            else 0

    @property
    def stored_bits(self):
        """Bits of weight storage as built: entry words plus row words, all lanes."""
        total = 0
        for lane in self.lane_data:
            total += len(lane.entries) * self.entry_bits + len(lane.rows) * self.row_bits
            total += self.bitmap_depth * self.chunk_width
        return total

    @property
    def max_row_work(self):
        """Largest number of entries any lane visits for one event."""
        return max((c for lane in self.lane_data for _, c in lane.rows), default=0)


def pack_linear(weight, *, lanes, fmt, weight_bits, capacity=None):
    """Lay out ``weight`` ``[n_out, n_in]`` for ``lanes`` lanes in format ``fmt``.

    ``capacity``: entries each lane's memory is built for (weights loaded at run time: any
    weights of the shape must fit), at least the most any lane has; default: the most.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Weight format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    weight = np.asarray(weight, dtype=np.int64)
    n_out, n_in = weight.shape
    bank = math.ceil(n_out / lanes)
    cw = min(CHUNK, bank)
    nchunks = math.ceil(bank / cw)
    lane_data = []
    for k in range(lanes):
        # Bank k: neurons k, k + L, k + 2L, ...; pad the last bank with zero weights.
        cols = np.zeros((n_in, bank), dtype=np.int64)
        sub = weight[k::lanes].T                        # [n_in, neurons of bank k]
        cols[:, :sub.shape[1]] = sub
        rows, entries, chunks = [], [], []
        for i in range(n_in):
            posts = range(bank) if fmt == "dense" else np.flatnonzero(cols[i])
            rows.append((len(entries), len(posts)))
            entries.extend((int(p), int(cols[i, p])) for p in posts)
            if fmt == "bitmap":
                bits = [0] * nchunks
                for p in posts:
                    bits[int(p) // cw] |= 1 << (int(p) % cw)
                chunks.append(bits)
        lane_data.append(PackedLane(rows, entries, chunks))
    max_entries = max(len(lane.entries) for lane in lane_data)
    if capacity is not None and capacity < max(1, max_entries):
        lane = max(range(lanes), key=lambda k: len(lane_data[k].entries))
        raise ValueError(f"Lane {lane} has {max_entries} weights, more than the capacity "
                         f"{capacity} its memory is built for")
    return PackedWeights(fmt, lanes, n_in, n_out, weight_bits, bank, lane_data,
                         start_bits=_bits(max(0, (capacity or max_entries) - 1)),
                         count_bits=_bits(nchunks if fmt == "bitmap" else bank),
                         post_bits=max(1, ceil_log2(bank)),
                         chunk_width=cw, chunks_per_row=nchunks, capacity=capacity or 0)


def choose_format(weight, *, lanes, weight_bits):
    """The hardware format that stores the fewest bits (ties: csr, bitmap, dense)."""
    sizes = {fmt: pack_linear(weight, lanes=lanes, fmt=fmt, weight_bits=weight_bits).stored_bits
             for fmt in FORMATS}
    return min(FORMATS, key=lambda fmt: (sizes[fmt], FORMATS.index(fmt)))
