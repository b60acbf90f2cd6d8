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

__all__ = ["BoardLink", "HostError", "RunReport", "format_report", "open_port", "run_samples"]


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
    """The host side of the protocol: one request, one reply."""
    def __init__(self, port):
        self._port = port
        self._reader = FrameReader(port.read)
        self._info = None

    def request(self, command, payload=b"", *, expect):
        """Send one frame; return the reply payload. An ERROR reply raises ProtocolError."""
        self._port.write(encode_frame(command, payload))
        code, reply = self._reader.read_frame()
        if code == Reply.ERROR and len(reply) == 2:
            name = Error(reply[0]).name if reply[0] in Error._value2member_map_ else reply[0]
            raise ProtocolError(f"Board answered {Command(command).name} with error {name}",
                                code=reply[0])
        if code != expect:
            raise ProtocolError(f"Board answered {Command(command).name} with reply "
                                f"0x{code:02x}, expected 0x{int(expect):02x}")
        return reply

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
            "seconds": self.seconds,
        }


def run_samples(link, bundle, *, samples=None, log=None):
    """Run test samples of ``bundle.vectors`` on the board; compare with the golden model.

    ``samples`` is a count (the first ones) or ``None`` for all.
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
    report = RunReport(info, labels=None if v.labels is None else
                       [int(x) for x in v.labels[:count]])
    start = time.monotonic()
    for s in range(count):
        stream = sample_stream(ev[ev[:, 0] == s][:, 1:], steps)
        if len(stream) > info.capacity:
            raise HostError(f"Sample {s} has {len(stream)} events but the board buffers "
                            f"{info.capacity}: rebuild with --capacity {len(stream)}")
        loaded = link.load(fmt.pack(stream))
        if loaded != len(stream):
            raise ProtocolError(f"Board buffered {loaded} events of sample {s}, "
                                f"sent {len(stream)}")
        result = link.run()
        equal = result.counts == tuple(int(c) for c in gold_counts[s])
        report.samples.append(s)
        report.predicted.append(result.predicted)
        report.golden.append(int(gold_pred[s]))
        report.counts.append(list(result.counts))
        report.counts_equal.append(bool(equal and result.steps == steps))
        report.cycles.append(result.cycles)
        report.events.append(len(stream))
        if log:
            label = "" if report.labels is None else f", label {report.labels[s]}"
            log(f"sample {s}: class {result.predicted} (golden {int(gold_pred[s])}{label}), "
                f"{result.cycles} cycles, counts {'equal' if equal else 'DIFFER'}")
    report.seconds = time.monotonic() - start
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
    ]
    return "\n".join(lines)
