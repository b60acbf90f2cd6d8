import numpy as np
import pytest

from hdl.weights import (FORMATS, bitmap_bits, choose_format, csr_bits, dense_bits,
                         pack_linear)
from models.synth import random_weights


def unpack(pw):
    """Rebuild the weight matrix from a packed layout, as the hardware walks it."""
    w = np.zeros((pw.n_out, pw.n_in), dtype=np.int64)
    for k, lane in enumerate(pw.lane_data):
        for i, (start, count) in enumerate(lane.rows):
            if pw.fmt == "bitmap":
                posts = [c * pw.chunk_width + b for c, bits in enumerate(lane.chunks[i])
                         for b in range(pw.chunk_width) if bits >> b & 1]
            else:
                posts = [p if pw.fmt == "csr" else n
                         for n, (p, _) in enumerate(lane.entries[start:start + count])]
            assert len(posts) == count
            for post, (_, weight) in zip(posts, lane.entries[start:start + count]):
                j = post * pw.lanes + k
                if j < pw.n_out:
                    w[j, i] = weight
                else:
                    assert weight == 0
    return w


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lanes", [1, 3, 8])
@pytest.mark.parametrize("shape, sparsity", [((10, 7), 0.0), ((64, 40), 0.75),
                                             ((37, 50), 0.95), ((8, 8), 1.0)])
def test_round_trip(fmt, lanes, shape, sparsity):
    w = random_weights(np.random.default_rng(0), shape, sparsity=sparsity, weight_bits=6)
    pw = pack_linear(w, lanes=lanes, fmt=fmt, weight_bits=6)
    assert np.array_equal(unpack(pw), w)
    if fmt != "dense":
        assert pw.max_row_work <= -(-shape[0] // lanes)
        assert sum(len(lane.entries) for lane in pw.lane_data) == np.count_nonzero(w)


def test_formulas_by_hand():
    # 4 outputs x 3 inputs, 5 non-zeros, 4-bit weights.
    w = np.array([[1, 0, 0], [0, 2, 0], [3, 0, -1], [0, 0, 4]])
    assert csr_bits(w, 4) == 5 * (2 + 4) + 4 * 3          # ptr holds 0..5: 3 bits
    assert bitmap_bits(w, 4) == 12 + 5 * 4
    assert dense_bits(w, 4) == 12 * 4


def test_stored_bits_track_formulas_one_lane():
    # One lane: the stored layout is within 5 % of the better textbook format.
    for sparsity in (0.5, 0.75, 0.9):
        w = random_weights(np.random.default_rng(1), (256, 256), sparsity=sparsity,
                           weight_bits=8)
        fmt = choose_format(w, lanes=1, weight_bits=8)
        stored = pack_linear(w, lanes=1, fmt=fmt, weight_bits=8).stored_bits
        best = min(csr_bits(w, 8), bitmap_bits(w, 8))
        assert stored <= 1.05 * best, (sparsity, fmt, stored, best)


def test_choose_format_prefers_fewest_bits():
    rng = np.random.default_rng(2)
    assert choose_format(random_weights(rng, (64, 64), sparsity=0.0, weight_bits=8),
                         lanes=1, weight_bits=8) == "dense"
    assert choose_format(random_weights(rng, (64, 64), sparsity=0.75, weight_bits=8),
                         lanes=1, weight_bits=8) == "bitmap"
    assert choose_format(random_weights(rng, (256, 256), sparsity=0.97, weight_bits=8),
                         lanes=1, weight_bits=8) == "csr"


def test_unknown_format():
    with pytest.raises(ValueError, match=r"^Weight format must be one of csr, bitmap, dense, "
                                         r"not 'coo'$"):
        pack_linear(np.zeros((2, 2), dtype=np.int64), lanes=1, fmt="coo", weight_bits=4)


@pytest.mark.parametrize("n_out, lanes", [(70, 1), (40, 2), (16, 1), (30, 2)])
def test_bitmap_layout(n_out, lanes):
    # A row word holds (start, chunks to fetch up to the last non-empty one) and the bitmap
    # memory every chunk; a bank of one chunk keeps it in the row word and has no bitmap memory.
    w = random_weights(np.random.default_rng(3), (n_out, 12), sparsity=0.8, weight_bits=4)
    pw = pack_linear(w, lanes=lanes, fmt="bitmap", weight_bits=4)
    for lane in pw.lane_data:
        for row, span in zip(lane.chunks, lane.spans):
            assert all(bits == 0 for bits in row[span:]) and (span == 0 or row[span - 1])
    inline = pw.chunks_per_row == 1
    assert pw.inline_chunk == inline
    assert pw.bitmap_depth == (0 if inline else 12 * pw.chunks_per_row)
    assert pw.row_bits == pw.start_bits + (pw.chunk_width if inline else pw.count_bits)
    assert pw.stored_bits == sum(len(lane.entries) * 4 + 12 * pw.row_bits
                                 + pw.bitmap_depth * pw.chunk_width for lane in pw.lane_data)
