# amaranth: UnusedElaboratable=no
"""The host link's WEIGHTS command in the Amaranth simulator, with the real accelerator built
for one bundle and loaded with another of the same shape."""
import struct

import numpy as np

from hdl import protocol
from hdl.link import HostLink
from hdl.protocol import Command, Error, EventFormat, Reply, encode_frame, sample_stream
from hdl.top import Accelerator
from models import golden
from models.bundle import Leak, Neuron
from models.synth import random_events, random_linear_bundle
from tests.hdl.test_link import DIVISOR, error, frame_with_bad_crc, rtl_link, rtl_stream

NEURON = Neuron("lif", "subtract", 30, 16, Leak("shift", shift=3))


def bundle(seed, sparsity):
    return random_linear_bundle(n_in=12, n_out=5, sparsity=sparsity, seed=seed, steps=3,
                                layers=2, hidden=6, neuron=NEURON)


def weights_link(board, *, steps=None):
    acc = Accelerator(board, weights="load")
    return HostLink(acc, n_in=12, n_out=5, divisor=DIVISOR, capacity=64, timeout=4000,
                    clock_hz=1_000_000, ident=0x12345678, steps=steps)


def weights_reply(written, whole):
    return (Reply.WEIGHTS, struct.pack("<IB", written, whole))


def frame(ident, offset, data):
    return encode_frame(Command.WEIGHTS, struct.pack("<II", ident, offset) + bytes(data))


def test_weights_protocol_and_errors():
    board, run = bundle(1, 0.75), bundle(2, 0.6)
    link = weights_link(board)
    store = Accelerator(run, weights="load").weight_store
    ident, image = link.info.ident, store.image()
    assert ident == store.ident != 0x12345678      # the layout's ident, not the one given
    assert link.info.flags & protocol.FLAG_WEIGHTS and link.weights
    half = len(image) // 2
    fmt = EventFormat.from_bundle(run)
    ev = random_events(np.random.default_rng(3), samples=1, steps=3, n_in=12, density=0.4)
    sample = fmt.pack(sample_stream(ev[:, 1:], 3))
    script = [
        (encode_frame(Command.INFO), 0, 1),
        (encode_frame(Command.LOAD, sample), 0, 1),
        (encode_frame(Command.RUN), 0, 1),                           # no weights yet
        (frame(ident ^ 1, 0, image[:8]), 0, 1),                     # another layout
        (frame(ident, 5, image[:8]), 0, 1),                         # not at 0 or written
        (encode_frame(Command.WEIGHTS, struct.pack("<II", ident, 0)), 0, 1),   # no image bytes
        (frame(ident, 0, image[:half]), 0, 1),
        (frame_with_bad_crc(Command.WEIGHTS, struct.pack("<II", ident, half) + image[half:]),
         0, 1),                                                      # wrote, then failed
        (frame(ident, half, image[half:]), 0, 1),                   # the image starts over
        (frame(ident, 0, image[:half]), 0, 1),
        (frame(ident, half, image[half:]), 0, 1),                   # whole
        (frame(ident, len(image), b"\x00"), 0, 1),                  # past the image
        (encode_frame(Command.RUN), 0, 1),
    ]
    replies = rtl_link(link, script, budget=2_000_000)
    assert protocol.Info.unpack(replies[0][1]) == link.info
    assert replies[1:12] == [
        (Reply.LOADED, struct.pack("<H", len(sample) // fmt.nbytes)),
        error(Error.WEIGHTS, Command.RUN),
        error(Error.IDENT, Command.WEIGHTS),
        error(Error.SEQUENCE, Command.WEIGHTS),
        error(Error.LENGTH, Command.WEIGHTS),
        weights_reply(half, 0),
        error(Error.CRC, Command.WEIGHTS),
        error(Error.SEQUENCE, Command.WEIGHTS),
        weights_reply(half, 0),
        weights_reply(len(image), 1),
        error(Error.OVERFLOW, Command.WEIGHTS),
    ]
    assert replies[12][0] == Reply.RESULT
    result = protocol.Result.unpack(replies[12][1], 5)
    x = golden.events_to_dense(ev, 1, 3, 12)
    assert result.counts == tuple(golden.spike_counts(golden.run(run, x).output)[0])
    assert sum(result.counts) > 0


def test_weights_refused_while_samples_run():
    """A WEIGHTS frame while a BATCH runs is refused (BUSY) and writes nothing: every result
    of the batch is the loaded network's."""
    board = bundle(3, 0.75)
    link = weights_link(board, steps=3)
    store = Accelerator(board, weights="load").weight_store
    image, ident = store.image(), store.ident
    fmt = EventFormat.from_bundle(board)
    samples = 4
    ev = random_events(np.random.default_rng(4), samples=samples, steps=3, n_in=12,
                       density=0.4)
    batch = b"".join(fmt.pack(sample_stream(ev[ev[:, 0] == s][:, 1:], 3))
                     for s in range(samples))
    assert len(batch) // fmt.nbytes <= 64
    frames = [
        (frame(ident, 0, image), 0),
        (encode_frame(Command.BATCH, batch), 1),
        (frame(ident, 0, bytes(len(image))), 1),                    # the batch is running
    ]
    replies = rtl_stream(link, frames, total=1 + samples + 1, budget=3_000_000)
    assert replies[0] == weights_reply(len(image), 1)
    assert error(Error.BUSY, Command.WEIGHTS) in replies[1:]
    got = [protocol.Result.unpack(p, 5).counts for code, p in replies[1:]
           if code == Reply.RESULT]
    x = golden.events_to_dense(ev, samples, 3, 12)
    assert got == [tuple(c) for c in golden.spike_counts(golden.run(board, x).output)]
    assert sum(map(sum, got)) > 0
