"""The host link protocol: frames, checksum, event packing and reply decoding (no gateware).

Both directions use one frame shape (docs/boards.md has the full description)::

    sync (1) | code (1) | length (2, little-endian) | payload (length bytes) | crc (1)

``sync`` is :data:`SYNC_REQUEST` from the host and :data:`SYNC_REPLY` from the board; ``crc`` is
CRC-8 (polynomial 0x07, initial 0) over code, length and payload. All multi-byte fields are
little-endian. The board answers every frame it parses with exactly one reply frame.

This module is pure Python (numpy for event arrays): the host driver, the gateware in
:mod:`hdl.link` and the tests share its constants and reference functions.
"""
from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = [
    "COUNT_BITS",
    "FLAG_BATCH",
    "FLAG_RATE",
    "FLAG_REPLAY",
    "FLAG_WEIGHTS",
    "INFO_LENGTH",
    "MAX_PAYLOAD",
    "RESULT_HEAD",
    "SYNC_REPLY",
    "SYNC_REQUEST",
    "VERSION",
    "WEIGHTS_HEAD",
    "WEIGHTS_REPLY",
    "Command",
    "Error",
    "EventFormat",
    "FrameReader",
    "Info",
    "ProtocolError",
    "Reply",
    "Result",
    "bundle_ident",
    "crc8",
    "encode_frame",
    "sample_stream",
    "weights_frames",
]

VERSION = 2            # 2: BATCH, replay of direct input, steps and flags in INFO
SYNC_REQUEST = 0x5A
SYNC_REPLY = 0xA5
MAX_PAYLOAD = 0xFFFF
COUNT_BITS = 16        # width of a spike count, of the step counter, and of event indices
RESULT_HEAD = 8        # class (2), steps (2), cycles (4); the counts follow
INFO_LENGTH = 20
FLAG_BATCH = 0x01      # Info.flags: the board takes BATCH frames
FLAG_REPLAY = 0x02     # Info.flags: a BATCH sample is one step, replayed ``steps`` times
FLAG_WEIGHTS = 0x04    # Info.flags: weights are loaded at run time (WEIGHTS); ident is the layout's
FLAG_RATE = 0x08       # Info.flags: a sample is a seed and intensities; the board draws the spikes
WEIGHTS_HEAD = 8       # WEIGHTS payload: layout ident (4), byte offset (4), then image bytes
WEIGHTS_REPLY = 5      # WEIGHTS reply: image bytes written so far (4), whole image loaded (1)
CRC_POLY = 0x07


class Command(enum.IntEnum):
    """Request codes (host to board)."""
    INFO = 0x01        # no payload; reply INFO
    LOAD = 0x02        # packed events; reply LOADED (events buffered in total)
    RUN = 0x03         # no payload; runs the buffered sample, reply RESULT
    READ = 0x04        # no payload; reply RESULT of the last run again
    BATCH = 0x05       # whole samples; no reply of its own, a RESULT for each sample as it ends
    WEIGHTS = 0x06     # ident, offset, image bytes (boards with FLAG_WEIGHTS); reply WEIGHTS


class Reply(enum.IntEnum):
    """Reply codes (board to host)."""
    INFO = 0x81
    LOADED = 0x82
    RESULT = 0x83
    WEIGHTS = 0x84
    ERROR = 0xEE


class Error(enum.IntEnum):
    """Error codes in an ERROR reply (payload: code, then the request's command byte)."""
    CRC = 1            # checksum mismatch
    COMMAND = 2        # unknown command
    LENGTH = 3         # payload length not allowed for the command
    OVERFLOW = 4       # LOAD would exceed the event buffer
    SAMPLE = 5         # RUN on a buffer that is empty, or not opened by first / closed by last;
                       # BATCH whose events do not end a sample
    TIMEOUT = 6        # a frame stopped arriving half way
    NO_RESULT = 7      # READ before any RUN
    IDENT = 8          # WEIGHTS for another layout than the board's
    SEQUENCE = 9       # WEIGHTS at an offset other than 0 or the bytes written so far
    BUSY = 10          # WEIGHTS while samples are queued or running
    WEIGHTS = 11       # RUN or BATCH before the whole image is loaded


class ProtocolError(Exception):
    """A reply that is malformed, unexpected, or an ERROR reply from the board."""
    def __init__(self, message, *, code=None):
        super().__init__(message)
        self.code = code


def crc8(data, crc=0):
    """CRC-8, polynomial x^8 + x^2 + x + 1 (0x07), no reflection, no final XOR."""
    for byte in bytes(data):
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def encode_frame(code, payload=b"", *, sync=SYNC_REQUEST):
    """One frame: sync, code, length, payload, CRC-8."""
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"Payload must be at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    body = bytes([int(code)]) + struct.pack("<H", len(payload)) + payload
    return bytes([sync]) + body + bytes([crc8(body)])


class FrameReader:
    """Read frames from ``read(n) -> bytes`` (a serial port's ``read``; short on timeout).

    Bytes before a sync byte are skipped and counted in :attr:`skipped`.
    """
    def __init__(self, read, *, sync=SYNC_REPLY):
        self._read, self._sync = read, sync
        self.skipped = 0

    def _exactly(self, n, what):
        data = b""
        while len(data) < n:
            chunk = self._read(n - len(data))
            if not chunk:
                raise ProtocolError(f"Timed out waiting for {what} "
                                    f"({len(data)} of {n} bytes came)")
            data += chunk
        return data

    def read_frame(self):
        """Return ``(code, payload)`` of the next frame; :class:`ProtocolError` on a bad one."""
        while True:
            byte = self._exactly(1, "a reply")
            if byte[0] == self._sync:
                break
            self.skipped += 1
        head = self._exactly(3, "a reply header")
        code, length = head[0], struct.unpack("<H", head[1:])[0]
        payload = self._exactly(length, f"a {length}-byte reply payload")
        crc = self._exactly(1, "a reply checksum")[0]
        if crc != crc8(head + payload):
            raise ProtocolError(f"Reply 0x{code:02x} has checksum 0x{crc:02x}, "
                                f"expected 0x{crc8(head + payload):02x}")
        return code, payload


@dataclass(frozen=True)
class EventFormat:
    """How an input event of the accelerator (hdl.event.EventLayout) is packed into bytes.

    The layout is ``{addr, value, last, first}``, first field in the least significant bits;
    an event takes ``ceil(bits / 8)`` bytes, little-endian, upper padding bits zero.
    """
    n_in: int
    value_bits: int
    signed: bool

    @classmethod
    def from_bundle(cls, bundle):
        return cls(bundle.input.size, bundle.input.bits, bundle.input.signed)

    @property
    def addr_bits(self):
        return max(1, (self.n_in - 1).bit_length())        # hdl.event.addr_bits

    @property
    def bits(self):
        return self.addr_bits + self.value_bits + 2

    @property
    def nbytes(self):
        return (self.bits + 7) // 8

    def pack(self, events):
        """``events`` ``[k, 4]`` rows (addr, value, last, first) -> bytes."""
        ev = np.asarray(events, dtype=np.int64).reshape(-1, 4)
        addr, value, last, first = ev.T
        if len(ev) and (addr.min() < 0 or addr.max() >= self.n_in):
            raise ValueError(f"Event address must be in [0, {self.n_in}), not "
                             f"{int(addr.min() if addr.min() < 0 else addr.max())}")
        lo, hi = ((-2 ** (self.value_bits - 1), 2 ** (self.value_bits - 1) - 1) if self.signed
                  else (0, 2 ** self.value_bits - 1))
        if len(ev) and (value.min() < lo or value.max() > hi):
            bad = int(value.min() if value.min() < lo else value.max())
            raise ValueError(f"Event value must be in [{lo}, {hi}], not {bad}")
        words = (addr | ((value & ((1 << self.value_bits) - 1)) << self.addr_bits)
                 | (last << (self.addr_bits + self.value_bits))
                 | (first << (self.addr_bits + self.value_bits + 1)))
        out = bytearray()
        for word in words.tolist():
            out += int(word).to_bytes(self.nbytes, "little")
        return bytes(out)


def sample_stream(rows, steps):
    """A sample's events in stream order (DESIGN.md section 5): ``[k, 4]`` (addr, value, last,
    first).

    ``rows`` are the sample's ``(step, addr, value)`` rows, sorted by step. Every step is closed
    by ``last`` on its final event; a step without events becomes one ``value = 0`` event; the
    sample's first event carries ``first``.
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    out = []
    for t in range(steps):
        step = rows[rows[:, 0] == t]
        if len(step) == 0:
            out.append((0, 0, 1, 0))
        else:
            out += [(int(a), int(v), 0, 0) for _, a, v in step]
            out[-1] = out[-1][:2] + (1, 0)
    out[0] = out[0][:3] + (1,)
    return np.array(out, dtype=np.int64)


@dataclass(frozen=True)
class Info:
    """The board's INFO reply: what the bitstream was built for."""
    version: int
    event_bytes: int
    n_in: int
    n_out: int
    capacity: int      # events of one buffer half (a LOAD buffer or one BATCH)
    clock_hz: int
    ident: int
    steps: int = 0     # steps per BATCH sample (0: no BATCH)
    flags: int = 0     # FLAG_BATCH, FLAG_REPLAY, FLAG_WEIGHTS, FLAG_RATE
    rate_bits: int = 0  # bits of an intensity where FLAG_RATE is set (hdl.rate), else 0

    _FORMAT = "<BBHHHIIHBB"

    @property
    def batch(self):
        return bool(self.flags & FLAG_BATCH)

    @property
    def replay(self):
        return bool(self.flags & FLAG_REPLAY)

    @property
    def rate(self):
        return bool(self.flags & FLAG_RATE)

    def pack(self):
        return struct.pack(self._FORMAT, self.version, self.event_bytes, self.n_in, self.n_out,
                           self.capacity, self.clock_hz, self.ident, self.steps, self.flags,
                           self.rate_bits)

    @classmethod
    def unpack(cls, payload):
        if len(payload) != INFO_LENGTH:
            raise ProtocolError(f"INFO reply must have {INFO_LENGTH} bytes, not {len(payload)}")
        return cls(*struct.unpack(cls._FORMAT, payload))


@dataclass(frozen=True)
class Result:
    """The board's RESULT reply for one sample."""
    predicted: int
    steps: int
    cycles: int
    counts: tuple

    @classmethod
    def unpack(cls, payload, n_out):
        if len(payload) != RESULT_HEAD + 2 * n_out:
            raise ProtocolError(f"RESULT reply must have {RESULT_HEAD + 2 * n_out} bytes for "
                                f"{n_out} outputs, not {len(payload)}")
        predicted, steps, cycles = struct.unpack("<HHI", payload[:RESULT_HEAD])
        counts = struct.unpack(f"<{n_out}H", payload[RESULT_HEAD:])
        return cls(predicted, steps, cycles, counts)


def bundle_ident(bundle):
    """32-bit identity of a bundle's network (structure and weights, not provenance).

    The board reports the identity it was built from, so the host can refuse to run a bundle on
    a bitstream made for another one.
    """
    import json
    obj = {"input": bundle.input.to_json(), "layers": [layer.to_json() for layer in bundle.layers]}
    crc = zlib.crc32(json.dumps(obj, sort_keys=True).encode())
    for layer in bundle.layers:
        if layer.has_neurons:
            crc = zlib.crc32(np.ascontiguousarray(layer.weight, dtype="<i4").tobytes(), crc)
            if layer.bias is not None:
                crc = zlib.crc32(np.ascontiguousarray(layer.bias, dtype="<i4").tobytes(), crc)
    return crc


def weights_frames(ident, image, *, chunk=1024):
    """The WEIGHTS frames that load ``image`` (bytes) on a board whose layout is ``ident``:
    ``chunk`` image bytes each, at offsets 0, chunk, 2 * chunk, ..."""
    if not image:
        raise ValueError("Weight image must not be empty")
    if not 1 <= chunk <= MAX_PAYLOAD - WEIGHTS_HEAD:
        raise ValueError(f"Chunk must be from 1 to {MAX_PAYLOAD - WEIGHTS_HEAD} bytes, "
                         f"not {chunk!r}")
    return [encode_frame(Command.WEIGHTS, struct.pack("<II", ident, start)
                         + bytes(image[start:start + chunk]))
            for start in range(0, len(image), chunk)]
