"""Host driver: talk to a board (or its cosimulation) over a serial port, run test samples.

:class:`BoardLink` speaks the protocol of :mod:`hdl.protocol` over any object with
``write(bytes)`` and ``read(n) -> bytes`` (short on timeout), which is what a pyserial port is;
the cosimulation hands it a pseudo-terminal, so board and simulation share this code path.
:func:`run_samples` streams a bundle's test vectors, compares every result with the golden model
and returns the figures ``python -m boards run`` prints.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from hdl import protocol
from hdl.protocol import (
    MAX_PAYLOAD,
    Command,
    Error,
    EventFormat,
    FrameReader,
    Info,
    ProtocolError,
    Reply,
    Result,
    bundle_ident,
    encode_frame,
    sample_stream,
)
from models import golden

__all__ = ["BoardLink", "HostError", "RunReport", "batches", "format_report", "open_port",
           "run_samples", "sample_streams"]


class HostError(Exception):
    """The board cannot run this bundle (wrong bitstream, sample too large); one line."""


def open_port(port, *, baud=1_000_000, timeout=5.0):
    """Open a serial port (a device path or a pyserial URL) for :class:`BoardLink`."""
    import serial
    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=timeout)
    except (serial.SerialException, ValueError) as exc:
        raise HostError(f"Cannot open serial port {port!r}: {exc}") from None


class BoardLink:
    """The host side of the protocol: one request, one reply; or BATCH frames and a stream of
    results. Counts the bytes it sends and receives (:attr:`sent`, :attr:`received`)."""
    def __init__(self, port):
        self._port = port
        self._reader = FrameReader(self._read)
        self._info = None
        self.sent = 0
        self.received = 0

    def _read(self, n):
        data = self._port.read(n)
        self.received += len(data)
        return data

    def _write(self, frame):
        self._port.write(frame)
        self.sent += len(frame)

    @staticmethod
    def _check(command, code, reply, expect):
        if code == Reply.ERROR and len(reply) == 2:
            name = Error(reply[0]).name if reply[0] in Error._value2member_map_ else reply[0]
            raise ProtocolError(f"Board answered {Command(command).name} with error {name}",
                                code=reply[0])
        if code != expect:
            raise ProtocolError(f"Board answered {Command(command).name} with reply "
                                f"0x{code:02x}, expected 0x{int(expect):02x}")
        return reply

    def request(self, command, payload=b"", *, expect):
        """Send one frame; return the reply payload. An ERROR reply raises ProtocolError."""
        self._write(encode_frame(command, payload))
        code, reply = self._reader.read_frame()
        return self._check(command, code, reply, expect)

    def send_batch(self, packed):
        """Queue whole samples (packed events) in one BATCH frame; no reply of its own."""
        self._write(encode_frame(Command.BATCH, packed))

    def next_result(self):
        """The next sample's :class:`~hdl.protocol.Result` from the stream a BATCH starts (an
        ERROR reply, for a BATCH the board refused, raises ProtocolError)."""
        code, reply = self._reader.read_frame()
        return Result.unpack(self._check(Command.BATCH, code, reply, Reply.RESULT),
                             self.info().n_out)

    def info(self):
        """The board's :class:`~hdl.protocol.Info` (asked once, then remembered)."""
        if self._info is None:
            self._info = Info.unpack(self.request(Command.INFO, expect=Reply.INFO))
        return self._info

    def load(self, packed):
        """Append packed events to the board's buffer; return the number buffered."""
        step = MAX_PAYLOAD // self.info().event_bytes * self.info().event_bytes
        count = 0
        for start in range(0, len(packed), step):
            reply = self.request(Command.LOAD, packed[start:start + step], expect=Reply.LOADED)
            count = int.from_bytes(reply, "little")
        return count

    def run(self):
        """Run the buffered sample; return its :class:`~hdl.protocol.Result`."""
        return Result.unpack(self.request(Command.RUN, expect=Reply.RESULT), self.info().n_out)

    def read(self):
        """The result of the last run again."""
        return Result.unpack(self.request(Command.READ, expect=Reply.RESULT), self.info().n_out)


def check_board(info, bundle):
    """Raise :class:`HostError` unless the board was built for ``bundle``."""
    fmt = EventFormat.from_bundle(bundle)
    if info.version != protocol.VERSION:
        raise HostError(f"Board speaks protocol version {info.version}, this host "
                        f"{protocol.VERSION}")
    ident = bundle_ident(bundle)
    mismatch = [f"{what} {have} != {want}" for what, have, want in (
        ("inputs", info.n_in, bundle.input.size), ("outputs", info.n_out, bundle.n_out),
        ("event bytes", info.event_bytes, fmt.nbytes)) if have != want]
    if info.ident != ident:
        mismatch.append(f"ident 0x{info.ident:08x} != 0x{ident:08x}")
    if info.batch and info.steps != bundle.input.steps:
        mismatch.append(f"steps {info.steps} != {bundle.input.steps}")
    if mismatch:
        raise HostError(f"Board was built for another network ({'; '.join(mismatch)}): "
                        f"rebuild with this bundle")


@dataclass
class RunReport:
    """What a run measured; lists are per sample."""
    info: Info
    samples: list = field(default_factory=list)
    predicted: list = field(default_factory=list)
    golden: list = field(default_factory=list)
    labels: list | None = None
    counts: list = field(default_factory=list)
    counts_equal: list = field(default_factory=list)
    cycles: list = field(default_factory=list)
    events: list = field(default_factory=list)
    seconds: float = 0.0
    mode: str = "load-run"          # or "batch", "batch-replay"
    bytes_sent: int = 0
    bytes_received: int = 0

    @property
    def agreement(self):
        return float(np.mean(np.array(self.predicted) == np.array(self.golden)))

    @property
    def accuracy(self):
        if self.labels is None:
            return None
        return float(np.mean(np.array(self.predicted) == np.array(self.labels)))

    @property
    def all_equal(self):
        return self.agreement == 1.0 and all(self.counts_equal)

    def to_json(self):
        clock = self.info.clock_hz
        mean_cycles = float(np.mean(self.cycles)) if self.cycles else None
        return {
            "samples": self.samples, "predicted": self.predicted, "golden": self.golden,
            "labels": self.labels, "counts": self.counts, "cycles": self.cycles,
            "events": self.events, "counts_equal": self.counts_equal,
            "accuracy": self.accuracy, "agreement": self.agreement,
            "all_equal": self.all_equal, "clock_hz": clock, "mean_cycles": mean_cycles,
            "inferences_per_second_link": len(self.samples) / self.seconds if self.seconds
            else None,
            "inferences_per_second_accelerator": clock / mean_cycles if mean_cycles else None,
            "seconds": self.seconds, "mode": self.mode,
            "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
            "bytes_per_sample": ((self.bytes_sent + self.bytes_received) / len(self.samples)
                                 if self.samples else None),
        }


def sample_streams(bundle, count, *, replay=False):
    """The first ``count`` test samples of ``bundle`` as event streams (``[k, 4]`` each).

    With ``replay`` each is its first step only, and :class:`HostError` names the first sample
    whose steps are not all the same (only direct encoding repeats a sample every step).
    """
    v = bundle.vectors
    steps = bundle.input.steps
    ev = v.events[v.events[:, 0] < count]
    ev = ev[np.argsort(ev[:, 0], kind="stable")]
    bounds = np.searchsorted(ev[:, 0], np.arange(count + 1))
    out = []
    for s in range(count):
        rows = ev[bounds[s]:bounds[s + 1], 1:]
        if not replay:
            out.append(sample_stream(rows, steps))
            continue
        first = rows[rows[:, 0] == 0]
        key = first[np.lexsort((first[:, 2], first[:, 1]))][:, 1:]
        for t in range(1, steps):
            step = rows[rows[:, 0] == t]
            if len(step) != len(first) or not np.array_equal(
                    step[np.lexsort((step[:, 2], step[:, 1]))][:, 1:], key):
                raise HostError(f"Board replays one step per sample, but sample {s} changes at "
                                f"step {t} ({bundle.input.encoding} encoding): rebuild with "
                                f"--no-replay")
        out.append(sample_stream(first, 1))
    return out


def batches(streams, capacity, event_bytes):
    """Consecutive samples grouped into BATCH frames of at most ``capacity`` events (and one
    frame's payload); ``[(first sample, stop), ...]``."""
    limit = min(capacity, MAX_PAYLOAD // event_bytes)
    groups, start, used = [], 0, 0
    for s, stream in enumerate(streams):
        if len(stream) > limit:
            raise HostError(f"Sample {s} has {len(stream)} events but the board buffers "
                            f"{capacity}: rebuild with --capacity {len(stream)}")
        if used + len(stream) > limit:
            groups.append((start, s))
            start, used = s, 0
        used += len(stream)
    if start < len(streams):
        groups.append((start, len(streams)))
    return groups


def run_samples(link, bundle, *, samples=None, log=None, batch=True):
    """Run test samples of ``bundle.vectors`` on the board; compare with the golden model.

    ``samples`` is a count (the first ones) or ``None`` for all. A board that takes BATCH
    frames gets the samples in batches that fill a buffer half, two in flight, so one batch
    travels while the other runs (``batch=False``: LOAD and RUN, one sample at a time); a board
    that replays direct input gets each sample's first step only.
    """
    v = bundle.vectors
    if v is None:
        raise HostError("Bundle has no vectors.npz: there are no test samples to run")
    info = link.info()
    check_board(info, bundle)
    count = v.samples if samples is None else min(samples, v.samples)
    steps = bundle.input.steps
    ev = v.events[v.events[:, 0] < count]
    trace = golden.run(bundle, golden.events_to_dense(ev, count, steps, bundle.input.size))
    gold_counts = golden.spike_counts(trace.output)
    gold_pred = golden.predict(trace.output)
    fmt = EventFormat.from_bundle(bundle)
    batch = batch and info.batch
    replay = batch and info.replay
    streams = sample_streams(bundle, count, replay=replay)
    report = RunReport(info, labels=None if v.labels is None else
                       [int(x) for x in v.labels[:count]],
                       mode="batch-replay" if replay else "batch" if batch else "load-run")

    def record(s, result):
        equal = result.counts == tuple(int(c) for c in gold_counts[s])
        report.samples.append(s)
        report.predicted.append(result.predicted)
        report.golden.append(int(gold_pred[s]))
        report.counts.append(list(result.counts))
        report.counts_equal.append(bool(equal and result.steps == steps))
        report.cycles.append(result.cycles)
        report.events.append(len(streams[s]))
        if log:
            label = "" if report.labels is None else f", label {report.labels[s]}"
            log(f"sample {s}: class {result.predicted} (golden {int(gold_pred[s])}{label}), "
                f"{result.cycles} cycles, counts {'equal' if equal else 'DIFFER'}")

    sent0, received0 = link.sent, link.received
    start = time.monotonic()
    if batch:
        groups = batches(streams, info.capacity, fmt.nbytes)
        packed = [fmt.pack(np.concatenate(streams[a:b])) for a, b in groups]
        for k in range(min(2, len(groups))):
            link.send_batch(packed[k])
        for k, (a, b) in enumerate(groups):
            for s in range(a, b):
                record(s, link.next_result())
            if k + 2 < len(groups):                  # a half is free again: refill it
                link.send_batch(packed[k + 2])
    else:
        for s in range(count):
            if len(streams[s]) > info.capacity:
                raise HostError(f"Sample {s} has {len(streams[s])} events but the board "
                                f"buffers {info.capacity}: rebuild with --capacity "
                                f"{len(streams[s])}")
            loaded = link.load(fmt.pack(streams[s]))
            if loaded != len(streams[s]):
                raise ProtocolError(f"Board buffered {loaded} events of sample {s}, "
                                    f"sent {len(streams[s])}")
            record(s, link.run())
    report.seconds = time.monotonic() - start
    report.bytes_sent = link.sent - sent0
    report.bytes_received = link.received - received0
    return report


def format_report(report):
    """The printed summary of a :class:`RunReport`."""
    j = report.to_json()
    n = len(report.samples)
    cycles = np.array(report.cycles)
    lines = [f"samples      {n}"]
    if j["accuracy"] is not None:
        lines.append(f"accuracy     {j['accuracy']:.4f} (against labels)")
    lines += [
        f"agreement    {j['agreement']:.4f} with the golden model; spike counts equal in "
        f"{sum(report.counts_equal)}/{n}",
        f"cycles       mean {cycles.mean():.1f}, min {cycles.min()}, max {cycles.max()} "
        f"per inference at {report.info.clock_hz / 1e6:.2f} MHz",
        f"inferences/s {j['inferences_per_second_link']:.1f} through the host link, "
        f"{j['inferences_per_second_accelerator']:.0f} in the accelerator",
        f"link         {report.mode}, {j['bytes_per_sample']:.1f} bytes per sample "
        f"({report.bytes_sent} sent, {report.bytes_received} received)",
    ]
    return "\n".join(lines)
