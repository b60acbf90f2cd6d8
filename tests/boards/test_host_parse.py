"""The host driver's side of the link against corrupted replies (boards/host.py).

:class:`boards.host.BoardLink` talks to any object with ``write(bytes)`` and ``read(n)`` (short
on timeout), which is what a serial port is; :class:`ScriptedPort` is such a port whose board
answers from a script of reply bytes. Every way a reply can be wrong must end in
:class:`hdl.protocol.ProtocolError` (or :class:`boards.host.HostError` for a board built for
another network), never in a wrong result taken as a good one.
"""
import random
import struct

import numpy as np
import pytest

from boards.host import BoardLink, HostError, batches, check_board, run_samples, sample_streams
from hdl import protocol
from hdl.protocol import (
    SYNC_REPLY,
    Command,
    Error,
    EventFormat,
    Info,
    ProtocolError,
    Reply,
    Result,
    bundle_ident,
    encode_frame,
)
from models.synth import random_linear_bundle


class ScriptedPort:
    """A serial port whose far end answers each written frame with the next scripted reply."""
    def __init__(self, replies):
        self._replies = list(replies)
        self._pending = b""
        self.written = []

    def write(self, data):
        self.written.append(bytes(data))
        if self._replies:
            self._pending += self._replies.pop(0)

    def read(self, n):
        data, self._pending = self._pending[:n], self._pending[n:]
        return data                                   # short (empty) read: a timeout


def reply(code, payload=b""):
    return encode_frame(code, payload, sync=SYNC_REPLY)


BUNDLE = random_linear_bundle(n_in=12, n_out=5, sparsity=0.5, seed=1, steps=4)
INFO = Info(protocol.VERSION, EventFormat.from_bundle(BUNDLE).nbytes, 12, 5, 64, 1_000_000,
            bundle_ident(BUNDLE))
RESULT = struct.pack("<HHI", 3, 4, 1234) + struct.pack("<5H", 1, 0, 2, 7, 0)


def test_good_replies_decode():
    port = ScriptedPort([b"\x00\xff" + reply(Reply.INFO, INFO.pack()),
                         reply(Reply.LOADED, struct.pack("<H", 9)), reply(Reply.RESULT, RESULT)])
    link = BoardLink(port)
    assert link.info() == INFO
    assert link.load(bytes(18)) == 9
    assert link.run() == Result(3, 4, 1234, (1, 0, 2, 7, 0))
    assert link._reader.skipped == 2                  # bytes before the sync are skipped
    assert port.written[2] == encode_frame(Command.RUN)


def _corrupt(frame, rng, positions):
    bad = bytearray(frame)
    for pos in positions:
        bad[pos] ^= rng.randrange(1, 256)
    return bytes(bad)


def _ask(frame, ask):
    """Ask the board (``info``, ``run`` or ``load``) and have it answer ``frame``."""
    link = BoardLink(ScriptedPort([reply(Reply.INFO, INFO.pack()), frame]))
    link.info()                                       # the board's INFO, asked once
    if ask == "info":
        link._info = None
        return link.info()
    return link.run() if ask == "run" else link.load(bytes(18))


FRAMES = [
    ("info", reply(Reply.INFO, INFO.pack())),
    ("run", reply(Reply.RESULT, RESULT)),
    ("load", reply(Reply.LOADED, struct.pack("<H", 9))),
]


@pytest.mark.parametrize("ask, frame", FRAMES, ids=[ask for ask, _ in FRAMES])
def test_every_single_byte_corruption_is_refused(ask, frame):
    # CRC-8 (0x07) detects every error burst of up to 8 bits: any one wrong byte, wherever it
    # is (sync, code, length, payload, checksum), must be refused. 20 wrong values per byte.
    rng = random.Random(ask)
    for pos in range(len(frame)):
        for _ in range(20):
            with pytest.raises(ProtocolError):
                _ask(_corrupt(frame, rng, [pos]), ask)


@pytest.mark.parametrize("ask, frame", FRAMES, ids=[ask for ask, _ in FRAMES])
def test_multi_byte_corruptions_are_refused_but_for_the_crc_blind_spot(ask, frame):
    # Several wrong bytes can keep the CRC-8 right, about one time in 256: the protocol's
    # limit. Whatever gets through decodes as a well-formed reply, never as an exception of
    # another kind.
    rng = random.Random(ask)
    through = 0
    for _ in range(1000):
        bad = _corrupt(frame, rng, rng.sample(range(1, len(frame)), rng.randrange(2, 5)))
        try:
            _ask(bad, ask)
            through += 1
        except ProtocolError:
            pass
    assert through <= 12, f"{through} of 1000 corrupted replies accepted"


def test_bad_reply_crc():
    frame = bytearray(reply(Reply.RESULT, RESULT))
    frame[-1] ^= 0x01
    link = BoardLink(ScriptedPort([reply(Reply.INFO, INFO.pack()), bytes(frame)]))
    link.info()
    want = protocol.crc8(bytes(frame[1:-1]))
    with pytest.raises(ProtocolError, match=rf"^Reply 0x83 has checksum 0x{frame[-1]:02x}, "
                                            rf"expected 0x{want:02x}$"):
        link.run()


@pytest.mark.parametrize("code", [Reply.LOADED, Reply.INFO, 0x42])
def test_wrong_reply_code(code):
    link = BoardLink(ScriptedPort([reply(Reply.INFO, INFO.pack()), reply(code, RESULT)]))
    link.info()
    with pytest.raises(ProtocolError, match=rf"^Board answered RUN with reply 0x{int(code):02x}, "
                                            rf"expected 0x83$"):
        link.run()


@pytest.mark.parametrize("error, name", [(Error.SAMPLE, "SAMPLE"), (Error.CRC, "CRC"),
                                         (0x63, "99")])
def test_error_reply(error, name):
    link = BoardLink(ScriptedPort([reply(Reply.INFO, INFO.pack()),
                                   reply(Reply.ERROR, bytes([error, Command.RUN]))]))
    link.info()
    with pytest.raises(ProtocolError, match=rf"^Board answered RUN with error {name}$") as info:
        link.run()
    assert info.value.code == int(error)


def test_reply_lengths():
    link = BoardLink(ScriptedPort([reply(Reply.INFO, INFO.pack()[:-1])]))
    with pytest.raises(ProtocolError, match=r"^INFO reply must have 20 bytes, not 19$"):
        link.info()
    link = BoardLink(ScriptedPort([reply(Reply.INFO, INFO.pack()),
                                   reply(Reply.RESULT, RESULT + b"\x00\x00")]))
    link.info()
    with pytest.raises(ProtocolError, match=r"^RESULT reply must have 18 bytes for 5 outputs, "
                                            r"not 20$"):
        link.run()


def test_truncated_reply_times_out():
    link = BoardLink(ScriptedPort([reply(Reply.INFO, INFO.pack())[:9]]))
    with pytest.raises(ProtocolError, match=r"^Timed out waiting for a 20-byte reply payload "
                                            r"\(5 of 20 bytes came\)$"):
        link.info()
    with pytest.raises(ProtocolError, match=r"^Timed out waiting for a reply \(0 of 1"):
        BoardLink(ScriptedPort([])).info()


@pytest.mark.parametrize("change, message", [
    ({"ident": INFO.ident ^ 1}, rf"ident 0x{INFO.ident ^ 1:08x} != 0x{INFO.ident:08x}"),
    ({"n_out": 6}, r"outputs 6 != 5"),
    ({"n_in": 13}, r"inputs 13 != 12"),
    ({"event_bytes": 3}, rf"event bytes 3 != {INFO.event_bytes}"),
])
def test_board_for_another_network(change, message):
    info = Info(**{**INFO.__dict__, **change})
    with pytest.raises(HostError, match=rf"^Board was built for another network \({message}\): "
                                        rf"rebuild with this bundle$"):
        check_board(info, BUNDLE)
    check_board(INFO, BUNDLE)


def test_protocol_version_mismatch():
    with pytest.raises(HostError, match=r"^Board speaks protocol version 1, this host 2$"):
        check_board(Info(**{**INFO.__dict__, "version": 1}), BUNDLE)


def test_ident_covers_weights():
    other = random_linear_bundle(n_in=12, n_out=5, sparsity=0.5, seed=1, steps=4)
    assert bundle_ident(other) == INFO.ident
    other.layers[0].weight = np.array(other.layers[0].weight)
    other.layers[0].weight[0, 0] += 1
    assert bundle_ident(other) != INFO.ident


def direct_bundle(steps=3, samples=4, change=None):
    """A bundle whose samples repeat one step (direct encoding); ``change`` = (sample, step)
    gets one more event there."""
    from dataclasses import replace

    from models import golden
    from models.synth import random_events
    bundle = random_linear_bundle(n_in=12, n_out=5, sparsity=0.5, seed=2, steps=steps)
    bundle.input = replace(bundle.input, encoding="direct")
    one = random_events(np.random.default_rng(2), samples=samples, steps=1, n_in=12, density=0.4)
    rows = [(s, t, a, v) for s, _, a, v in one for t in range(steps)]
    if change:
        rows.append((*change, 11, 1))
    events = np.array(sorted(rows, key=lambda r: (r[0], r[1])), dtype=np.int64)
    bundle.vectors = golden.make_vectors(bundle, events, samples)
    return bundle, events


def test_replay_sends_the_first_step_and_refuses_a_sample_that_changes():
    bundle, events = direct_bundle()
    streams = sample_streams(bundle, 4, replay=True)
    for s, stream in enumerate(streams):
        first = events[(events[:, 0] == s) & (events[:, 1] == 0)]
        assert stream[:, 0].tolist() == first[:, 2].tolist() or len(first) == 0
        assert stream[-1, 2] == 1 and stream[0, 3] == 1 and stream[:, 2].sum() == 1
    assert [len(x) for x in sample_streams(bundle, 4)] == [3 * max(1, len(x)) for x in streams]
    changed, _ = direct_bundle(change=(2, 1))
    with pytest.raises(HostError, match=r"^Board replays one step per sample, but sample 2 "
                                        r"changes at step 1 \(direct encoding\): rebuild with "
                                        r"--no-replay$"):
        sample_streams(changed, 4, replay=True)


def test_batches_fill_a_buffer_half():
    streams = [np.zeros((n, 4)) for n in (3, 4, 2, 5, 1)]
    assert batches(streams, 8, 2) == [(0, 2), (2, 5)]                 # 7, then 2 + 5 + 1
    assert batches(streams, 5, 2) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    # One frame carries at most 65,535 bytes: 16,383 events of 4 bytes.
    assert batches([np.zeros((9000, 4))] * 2, 65535, 4) == [(0, 1), (1, 2)]
    with pytest.raises(HostError, match=r"^Sample 3 has 5 events but the board buffers 4: "
                                        r"rebuild with --capacity 5$"):
        batches(streams, 4, 2)


def test_batch_run_through_a_scripted_board():
    """The host sends two BATCH frames before reading, then one per answered batch, and takes
    the results in order; an ERROR in the stream stops it."""
    bundle, events = direct_bundle(samples=5)
    from models import golden
    trace = golden.run(bundle, golden.events_to_dense(events, 5, 3, 12))
    counts = golden.spike_counts(trace.output)
    fmt = EventFormat.from_bundle(bundle)
    sizes = [len(x) for x in sample_streams(bundle, 5, replay=True)]
    info = Info(protocol.VERSION, fmt.nbytes, 12, 5, max(sizes[0] + sizes[1], sizes[2]),
                1_000_000, bundle_ident(bundle), 3, protocol.FLAG_BATCH | protocol.FLAG_REPLAY)
    groups = batches(sample_streams(bundle, 5, replay=True), info.capacity, fmt.nbytes)

    def result(s):
        return reply(Reply.RESULT, struct.pack("<HHI", int(np.argmax(counts[s])), 3, 100)
                     + struct.pack("<5H", *counts[s]))

    script = [reply(Reply.INFO, info.pack())]
    script += [b"".join(result(s) for s in range(a, b)) for a, b in groups]
    port = ScriptedPort(script)
    report = run_samples(BoardLink(port), bundle)
    assert report.mode == "batch-replay" and report.all_equal
    assert [w[1] for w in port.written] == [Command.INFO] + [Command.BATCH] * len(groups)
    assert report.bytes_sent == sum(len(w) for w in port.written[1:])       # INFO not counted
    assert report.events == sizes
    bad = ScriptedPort([reply(Reply.INFO, info.pack()), result(0) + reply(
        Reply.ERROR, bytes([Error.CRC, Command.BATCH]))])
    with pytest.raises(ProtocolError, match=r"^Board answered BATCH with error CRC$"):
        run_samples(BoardLink(bad), bundle)
