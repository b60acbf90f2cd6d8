# amaranth: UnusedElaboratable=no
"""The host link in the Amaranth simulator: protocol, errors, and samples against golden."""
import random
import struct

import numpy as np
import pytest
from amaranth import *
from amaranth.sim import Simulator

from hdl import protocol
from hdl.link import HostLink, crc8_next
from hdl.protocol import (
    Command,
    Error,
    EventFormat,
    Reply,
    encode_frame,
    sample_stream,
)
from models import golden
from models.synth import random_events, random_linear_bundle
from tests.hdl.standin import StandIn
from tests.sim import run_sim

DIVISOR = 4


def small_bundle(seed=1, **kwargs):
    params = dict(n_in=12, n_out=5, sparsity=0.5, seed=seed, steps=4)
    params.update(kwargs)
    return random_linear_bundle(**params)


def make_link(bundle, *, capacity=64, timeout=2000, stall=True):
    acc = StandIn(bundle, stall=stall)
    return HostLink(acc, n_in=bundle.input.size, n_out=bundle.n_out, divisor=DIVISOR,
                    capacity=capacity, timeout=timeout, clock_hz=1_000_000, ident=0x12345678)


def rtl_link(link, script, *, budget=400_000):
    """Run ``script``: a list of (bytes to send, idle cycles after, replies expected).

    Returns the replies as ``(code, payload)``. The host sends bytes with random idle gaps.
    """
    replies = []

    async def host(ctx):
        rng = random.Random(11)
        ctx.set(link.rx, 1)
        for data, idle, expect in script:
            for byte in data:
                for _ in range(rng.randrange(3)):
                    await ctx.tick()
                for bit in [0] + [(byte >> k) & 1 for k in range(8)] + [1]:
                    ctx.set(link.rx, bit)
                    await ctx.tick().repeat(DIVISOR)
            await ctx.tick().repeat(idle) if idle else None
            for _ in range(expect):
                replies.append(await read_frame(ctx))

    async def read_byte(ctx):
        while ctx.get(link.tx):
            await ctx.tick()
        await ctx.tick().repeat(DIVISOR // 2)
        assert ctx.get(link.tx) == 0, "start bit glitch on tx"
        value = 0
        for k in range(8):
            await ctx.tick().repeat(DIVISOR)
            value |= ctx.get(link.tx) << k
        await ctx.tick().repeat(DIVISOR)
        assert ctx.get(link.tx) == 1, "missing stop bit on tx"
        return value

    async def read_frame(ctx):
        sync = await read_byte(ctx)
        assert sync == protocol.SYNC_REPLY
        head = bytes([await read_byte(ctx) for _ in range(3)])
        length = struct.unpack("<H", head[1:])[0]
        payload = bytes([await read_byte(ctx) for _ in range(length)])
        crc = await read_byte(ctx)
        assert crc == protocol.crc8(head + payload)
        return head[0], payload

    run_sim(link, [host], watchdog_cycles=budget, name="host_link")
    return replies


def load_frames(bundle, events, sample, fmt=None):
    fmt = fmt or EventFormat.from_bundle(bundle)
    rows = events[events[:, 0] == sample][:, 1:]
    return fmt.pack(sample_stream(rows, bundle.input.steps))


def test_crc8_next_matches_reference():
    crc, byte = Signal(8), Signal(8)
    out = crc8_next(crc, byte)
    rng = random.Random(2)
    pairs = [(rng.randrange(256), rng.randrange(256)) for _ in range(300)] + [(0, 0), (255, 255)]
    seen = []

    async def tb(ctx):
        for c, b in pairs:
            ctx.set(crc, c)
            ctx.set(byte, b)
            seen.append(ctx.get(out))

    sim = Simulator(Module())
    sim.add_testbench(tb)
    sim.run()
    assert seen == [protocol.crc8(bytes([b]), c) for c, b in pairs]


def test_info():
    bundle = small_bundle()
    link = make_link(bundle)
    (code, payload), = rtl_link(link, [(encode_frame(Command.INFO), 0, 1)])
    assert code == Reply.INFO
    info = protocol.Info.unpack(payload)
    assert info == protocol.Info(protocol.VERSION, EventFormat.from_bundle(bundle).nbytes,
                                 12, 5, 64, 1_000_000, 0x12345678)


@pytest.mark.parametrize("stall", [False, True])
def test_samples_equal_golden(stall):
    bundle = small_bundle(seed=4)
    rng = np.random.default_rng(4)
    samples = 3
    events = random_events(rng, samples=samples, steps=4, n_in=12, density=0.3)
    trace = golden.run(bundle, golden.events_to_dense(events, samples, 4, 12))
    counts = golden.spike_counts(trace.output)
    link = make_link(bundle, stall=stall)
    script, sizes = [], []
    for s in range(samples):
        payload = load_frames(bundle, events, s)
        # Two LOAD frames per sample: the buffer appends.
        n = len(payload) // link.event_bytes
        half = n // 2
        sizes.append((half, n))
        script += [(encode_frame(Command.LOAD, payload[:half * link.event_bytes]), 0, 1),
                   (encode_frame(Command.LOAD, payload[half * link.event_bytes:]), 0, 1),
                   (encode_frame(Command.RUN), 0, 1)]
    script.append((encode_frame(Command.READ), 0, 1))
    replies = rtl_link(link, script)
    for s, (half, n) in enumerate(sizes):
        loaded1, loaded2, (code, payload) = replies[3 * s:3 * s + 3]
        assert loaded1 == (Reply.LOADED, struct.pack("<H", half))
        assert loaded2 == (Reply.LOADED, struct.pack("<H", n))
        assert code == Reply.RESULT
        result = protocol.Result.unpack(payload, 5)
        assert result.counts == tuple(counts[s])
        assert result.predicted == golden.predict(trace.output)[s]
        assert result.steps == 4
        # At least one cycle per input event; the stand-in needs more per step.
        assert result.cycles >= n
    assert replies[-1] == (Reply.RESULT, replies[-2][1])


def test_cycle_count_of_known_schedule():
    """Without stalls the stand-in takes one cycle per input event, one for the update, then
    two per output event (an empty step is one event); the feed and the counters add nothing."""
    bundle = small_bundle(seed=5)
    rng = np.random.default_rng(5)
    events = random_events(rng, samples=1, steps=4, n_in=12, density=0.4)
    trace = golden.run(bundle, golden.events_to_dense(events, 1, 4, 12))
    stream = sample_stream(events[:, 1:], 4)
    steps_in = [int((stream[:, 2] == 1).sum())]
    per_step_in = np.diff(np.concatenate([[-1], np.flatnonzero(stream[:, 2] == 1)]))
    per_step_out = [max(1, int(s.sum())) for s in trace.output[0]]
    # Steps run back to back: accumulate (events), update (1), emit (2 per output event).
    expected = int(per_step_in.sum() + len(per_step_in) + 2 * sum(per_step_out))
    link = make_link(bundle, stall=False)
    replies = rtl_link(link, [
        (encode_frame(Command.LOAD, EventFormat.from_bundle(bundle).pack(stream)), 0, 1),
        (encode_frame(Command.RUN), 0, 1)])
    result = protocol.Result.unpack(replies[1][1], 5)
    assert steps_in == [4]
    assert result.cycles == expected


def frame_with_bad_crc(code, payload=b""):
    frame = bytearray(encode_frame(code, payload))
    frame[-1] ^= 0x5A
    return bytes(frame)


def error(code, cmd):
    return (Reply.ERROR, bytes([code, cmd]))


def test_malformed_frames_get_error_replies():
    bundle = small_bundle(seed=6, n_in=40)
    fmt = EventFormat.from_bundle(bundle)
    rng = np.random.default_rng(6)
    events = random_events(rng, samples=1, steps=4, n_in=40, density=0.1)
    good = fmt.pack(sample_stream(events[:, 1:], 4))
    n = len(good) // fmt.nbytes
    assert n >= 3 and fmt.nbytes == 2
    opens = fmt.pack([(1, 1, 0, 1)])            # first, no last
    closes = fmt.pack([(1, 1, 1, 0)])           # last, no first
    link = make_link(bundle, capacity=n)
    script = [
        (b"\x00\x13\x37" + encode_frame(Command.READ), 0, 1),     # garbage, then READ
        (frame_with_bad_crc(Command.INFO), 0, 1),
        (encode_frame(0x42), 0, 1),
        (encode_frame(0x42, b"abc"), 0, 1),
        (encode_frame(Command.INFO, b"x"), 0, 1),
        (encode_frame(Command.RUN, b"xy"), 0, 1),
        (encode_frame(Command.LOAD), 0, 1),
        (encode_frame(Command.LOAD, good[:-1]), 0, 1),              # not whole events
        (encode_frame(Command.RUN), 0, 1),                          # nothing loaded
        (frame_with_bad_crc(Command.LOAD, good), 0, 1),             # rolled back
        (encode_frame(Command.LOAD, opens), 0, 1),
        (encode_frame(Command.RUN), 0, 1),                          # not closed by last
        (encode_frame(Command.LOAD, good), 0, 1),                   # 1 + n > n: overflow
        (encode_frame(Command.LOAD, closes + closes), 0, 1),        # 3 events buffered
        (encode_frame(Command.RUN), 0, 1),                          # a two-step sample
        (encode_frame(Command.LOAD, closes), 0, 1),
        (encode_frame(Command.RUN), 0, 1),                          # not opened by first
    ]
    replies = rtl_link(link, script)
    assert replies[:14] == [
        error(Error.NO_RESULT, Command.READ),
        error(Error.CRC, Command.INFO),
        error(Error.COMMAND, 0x42),
        error(Error.COMMAND, 0x42),
        error(Error.LENGTH, Command.INFO),
        error(Error.LENGTH, Command.RUN),
        error(Error.LENGTH, Command.LOAD),
        error(Error.LENGTH, Command.LOAD),
        error(Error.SAMPLE, Command.RUN),
        error(Error.CRC, Command.LOAD),
        (Reply.LOADED, struct.pack("<H", 1)),
        error(Error.SAMPLE, Command.RUN),
        error(Error.OVERFLOW, Command.LOAD),
        (Reply.LOADED, struct.pack("<H", 3)),
    ]
    # The buffer kept only the good frames: address 1 twice in step 0, once in step 1.
    x = np.zeros((1, 2, 40), dtype=np.int64)
    x[0, 0, 1], x[0, 1, 1] = 2, 1
    trace = golden.run(bundle, x)
    assert replies[14][0] == Reply.RESULT
    result = protocol.Result.unpack(replies[14][1], 5)
    assert (result.steps, result.counts) == (2, tuple(golden.spike_counts(trace.output)[0]))
    assert replies[15:] == [(Reply.LOADED, struct.pack("<H", 1)),
                            error(Error.SAMPLE, Command.RUN)]


def test_rollback_then_good_sample():
    """A LOAD that fails leaves the buffer as it was: the sample still runs right."""
    bundle = small_bundle(seed=7)
    fmt = EventFormat.from_bundle(bundle)
    rng = np.random.default_rng(7)
    events = random_events(rng, samples=1, steps=4, n_in=12, density=0.3)
    good = fmt.pack(sample_stream(events[:, 1:], 4))
    half = (len(good) // 2) // fmt.nbytes * fmt.nbytes
    trace = golden.run(bundle, golden.events_to_dense(events, 1, 4, 12))
    link = make_link(bundle)
    replies = rtl_link(link, [
        (encode_frame(Command.LOAD, good[:half]), 0, 1),
        (frame_with_bad_crc(Command.LOAD, good[half:]), 0, 1),
        (encode_frame(Command.LOAD, good[half:]), 0, 1),
        (encode_frame(Command.RUN), 0, 1),
    ])
    assert replies[1] == error(Error.CRC, Command.LOAD)
    result = protocol.Result.unpack(replies[3][1], 5)
    assert result.counts == tuple(golden.spike_counts(trace.output)[0])


def test_timeout_drops_half_frame():
    bundle = small_bundle()
    link = make_link(bundle, timeout=300)
    frame = encode_frame(Command.LOAD, b"\x01\x02\x03\x04")
    replies = rtl_link(link, [
        (frame[:5], 0, 1),                                  # stops half way
        (encode_frame(Command.INFO), 0, 1),                 # the link has recovered
    ])
    assert replies[0] == error(Error.TIMEOUT, Command.LOAD)
    assert replies[1][0] == Reply.INFO


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"capacity": 0}, TypeError, r"^Capacity must be an integer of at least 1, not 0$"),
    ({"capacity": 65536}, ValueError, r"^Capacity must be at most 65535, not 65536$"),
    ({"n_out": 9}, ValueError, r"^Accelerator member 'o' has a 3-bit address, but 9 neurons "
                               r"need 4$"),
    ({"n_in": 40}, ValueError, r"^Accelerator member 'i' has a 4-bit address, but 40 neurons "
                               r"need 6$"),
    ({"divisor": 2}, TypeError, r"^Divisor must be an integer of at least 4, not 2$"),
    ({"ident": -1}, TypeError, r"^Ident must be an integer of at least 0, not -1$"),
])
def test_wrong_parameters(kwargs, exc, message):
    bundle = small_bundle()
    params = dict(n_in=12, n_out=5, divisor=4, capacity=64, timeout=100, clock_hz=10 ** 6)
    params.update(kwargs)
    with pytest.raises(exc, match=message):
        HostLink(StandIn(bundle), **params)


def test_rejects_component_without_ports():
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In

    class Other(wiring.Component):
        x: In(1)

        def elaborate(self, platform):
            return Module()
    with pytest.raises(TypeError, match=r"^Accelerator must have an In stream member 'i'"):
        HostLink(Other(), n_in=4, n_out=4, divisor=4, capacity=4, timeout=10, clock_hz=1)


def test_argmax_ties_go_to_lowest_index():
    """Neurons 1, 3 and 4 are copies of each other and fire most: the class must be 1."""
    bundle = small_bundle(seed=9)
    layer = bundle.layers[0]
    layer.weight[:] = -layer.weight.__abs__()          # the others hardly fire
    strong = np.abs(np.random.default_rng(9).integers(20, 100, size=12))
    for j in (1, 3, 4):
        layer.weight[j] = strong
        layer.bias[j] = layer.bias[1]
    rng = np.random.default_rng(9)
    events = random_events(rng, samples=1, steps=4, n_in=12, density=0.5)
    trace = golden.run(bundle, golden.events_to_dense(events, 1, 4, 12))
    counts = golden.spike_counts(trace.output)[0]
    assert counts[1] == counts[3] == counts[4] == counts.max() > 0
    link = make_link(bundle)
    replies = rtl_link(link, [
        (encode_frame(Command.LOAD, EventFormat.from_bundle(bundle).pack(
            sample_stream(events[:, 1:], 4))), 0, 1),
        (encode_frame(Command.RUN), 0, 1)])
    result = protocol.Result.unpack(replies[1][1], 5)
    assert result.counts == tuple(counts)
    assert result.predicted == 1
