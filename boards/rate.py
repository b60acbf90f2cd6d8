"""The host side of rate input drawn on the board (``python -m boards build --rate BITS``).

A board built with ``--rate BITS`` has a :class:`hdl.rate.RateInput` in front of its
accelerator: it reports :data:`~hdl.protocol.FLAG_RATE` and ``rate_bits`` in INFO, and a BATCH
sample is that sample's seed and its ``BITS``-bit intensities, one stored step that the link
replays ``steps`` times while the encoder draws a new step of spikes on every pass.
:func:`run_rate_samples` sends the bundle's test images that way (from the data set the bundle
was trained on, :func:`models.onboard.board_intensities`) and compares every result with the
golden model run on the spikes :mod:`models.onboard` draws for the same seeds: the board's
spikes, not the bundle's exported ones.
"""
from __future__ import annotations

import time

from hdl import protocol
from hdl.protocol import bundle_ident
from models import golden, onboard

from .host import HostError, RunReport, batches

__all__ = ["DEFAULT_SEED", "check_rate_board", "rate_accelerator", "rate_capacity",
           "rate_streams", "run_rate_samples"]

DEFAULT_SEED = 1          # base seed of models.onboard.sample_seeds when none is given


def _check_bundle(bundle):
    if bundle.input.encoding != "rate":
        raise ValueError(f"--rate draws rate-coded input on the board: the bundle's input is "
                         f"{bundle.input.encoding!r} encoded, not 'rate'")


def rate_accelerator(base, bits):
    """The accelerator factory of a rate board: ``base`` (a factory ``(bundle, lanes)``, or
    ``None`` for :class:`hdl.top.Accelerator`) behind a :class:`hdl.rate.RateInput`."""
    from hdl.rate import RateInput

    def accelerator(bundle, lanes):
        _check_bundle(bundle)
        if base is None:
            from hdl.top import Accelerator
            inner = Accelerator(bundle, lanes=lanes)
        else:
            inner = base(bundle, lanes)
        return RateInput(inner, n_in=bundle.input.size, bits=bits)
    return accelerator


def rate_capacity(bundle, bits):
    """Events of a buffer half for any sample: the seed events and every input address (a
    power of two, at least 256, as :func:`boards.build.default_capacity`)."""
    from hdl.rate import seed_events
    _check_bundle(bundle)
    need = seed_events(bundle.input.size, bits) + bundle.input.size
    return min(65535, max(256, 1 << (need - 1).bit_length()))


def check_rate_board(info, bundle):
    """Raise :class:`HostError` unless the board draws rate input for ``bundle``."""
    fmt = protocol.EventFormat(bundle.input.size, info.rate_bits, False)
    if info.version != protocol.VERSION:
        raise HostError(f"Board speaks protocol version {info.version}, this host "
                        f"{protocol.VERSION}")
    if not (info.rate and info.batch and info.replay) or not 1 <= info.rate_bits <= 8:
        raise HostError(f"Board does not draw rate input (flags 0x{info.flags:02x}, rate bits "
                        f"{info.rate_bits})")
    ident = bundle_ident(bundle)
    mismatch = [f"{what} {have} != {want}" for what, have, want in (
        ("inputs", info.n_in, bundle.input.size), ("outputs", info.n_out, bundle.n_out),
        ("event bytes", info.event_bytes, fmt.nbytes),
        ("steps", info.steps, bundle.input.steps)) if have != want]
    if info.ident != ident:
        mismatch.append(f"ident 0x{info.ident:08x} != 0x{ident:08x}")
    if mismatch:
        raise HostError(f"Board was built for another network ({'; '.join(mismatch)}): "
                        f"rebuild with this bundle")


def rate_streams(q, seeds, *, n_in, bits):
    """Each sample packed as the board takes it: ``[(bytes, events), ...]``."""
    from hdl.rate import rate_sample
    return [rate_sample(row, int(seed), n_in=n_in, bits=bits) for row, seed in zip(q, seeds)]


def run_rate_samples(link, bundle, *, samples=None, seed=DEFAULT_SEED, log=None):
    """Run ``bundle``'s first test images on a rate board; compare with the golden model.

    The images are quantized to the board's intensity bits and sample ``k`` is seeded with
    :func:`models.onboard.sample_seeds` ``(seed, count)[k]``. Samples travel in BATCH frames
    that fill a buffer half, two in flight, as :func:`boards.host.run_samples` sends them.
    """
    info = link.info()
    _check_bundle(bundle)
    check_rate_board(info, bundle)
    bits, n_in, steps = info.rate_bits, bundle.input.size, bundle.input.steps
    try:
        q, labels = onboard.board_intensities(bundle, bits, samples)
    except ValueError as exc:
        raise HostError(str(exc)) from None
    count = len(q)
    seeds = onboard.sample_seeds(seed, count)
    events = onboard.rate_events(q, seeds, steps=steps, bits=bits)
    trace = golden.run(bundle, golden.events_to_dense(events, count, steps, n_in))
    gold_counts = golden.spike_counts(trace.output)
    gold_pred = golden.predict(trace.output)
    packed = rate_streams(q, seeds, n_in=n_in, bits=bits)
    report = RunReport(info, labels=[int(x) for x in labels], mode="batch-rate")

    # Consecutive samples in frames of at most a buffer half (and one frame's payload):
    # batches() counts a sample's events by its length.
    groups = batches([range(n) for _, n in packed], info.capacity, info.event_bytes)

    def record(s, result):
        equal = result.counts == tuple(int(c) for c in gold_counts[s])
        report.samples.append(s)
        report.predicted.append(result.predicted)
        report.golden.append(int(gold_pred[s]))
        report.counts.append(list(result.counts))
        report.counts_equal.append(bool(equal and result.steps == steps))
        report.cycles.append(result.cycles)
        report.events.append(packed[s][1])
        if log:
            log(f"sample {s}: class {result.predicted} (golden {int(gold_pred[s])}, label "
                f"{report.labels[s]}), {result.cycles} cycles, seed {int(seeds[s])}, counts "
                f"{'equal' if equal else 'DIFFER'}")

    frames = [b"".join(data for data, _ in packed[a:b]) for a, b in groups]
    sent0, received0 = link.sent, link.received
    began = time.monotonic()
    for k in range(min(2, len(frames))):
        link.send_batch(frames[k])
    for k, (a, b) in enumerate(groups):
        for s in range(a, b):
            record(s, link.next_result())
        if k + 2 < len(frames):                      # a half is free again: refill it
            link.send_batch(frames[k + 2])
    report.seconds = time.monotonic() - began
    report.bytes_sent = link.sent - sent0
    report.bytes_received = link.received - received0
    return report

