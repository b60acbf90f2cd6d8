"""On-board rate encoding: the reference of the spike generator a board top is to run.

A rate-coded sample sent as events costs one event per spike and step (about 490 events, 980
bytes, for a digits sample over 25 steps). Sent as intensities, it costs ``bits`` per pixel once
(32 bytes for the 64 digits pixels at 4 bits), and the board draws the spikes itself. The host
and the golden model must then draw exactly the spikes the board draws; this module is that
specification, in numpy, bit for bit; :mod:`hdl.rate` is the hardware (docs/boards.md, "Rate
input drawn on the board").

The generator is Marsaglia's 32-bit xorshift with shifts (13, 17, 5), one state per sample,
seeded with that sample's nonzero 32-bit ``seed``. Every step walks every input address in
order, 0 to ``n_in - 1``, and each address advances the state once, whatever its intensity
(so the draws do not depend on the image, and a board scans one address per cycle). Address
``a`` spikes at step ``t`` when the top ``bits`` bits of the state drawn for it are below its
intensity ``q`` (an integer in ``[0, 2^bits - 1]``): probability ``q / 2^bits``.

:func:`quantize` maps intensities in [0, 1] to ``q = min(round(x * 2^bits), 2^bits - 1)``, so an
intensity ``k / 2^bits`` is kept exactly (the digits' ``k/16`` at 4 bits) except 1, which
becomes ``(2^bits - 1) / 2^bits``. :func:`sample_seeds` is how the host numbers its samples'
seeds from one base seed (any nonzero seeds will do; the board takes what it is sent).
"""
from __future__ import annotations

import numpy as np

__all__ = ["MASK", "board_rate_report", "quantize", "rate_events", "sample_seeds",
           "board_intensities", "xorshift32"]

MASK = 0xFFFFFFFF


def xorshift32(state):
    """One step of the generator on a uint64 array (or int) of 32-bit states."""
    x = np.asarray(state, dtype=np.uint64)
    x = x ^ ((x << np.uint64(13)) & np.uint64(MASK))
    x = x ^ (x >> np.uint64(17))
    x = x ^ ((x << np.uint64(5)) & np.uint64(MASK))
    return x


def _check_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"Intensity bits must be an integer in [1, 8], not {bits!r}")


def quantize(images, bits):
    """Intensities in [0, 1] (any shape) -> integers ``min(round(x * 2^bits), 2^bits - 1)``."""
    _check_bits(bits)
    x = np.asarray(images, dtype=np.float64)
    if x.size and (np.isnan(x).any() or x.min() < 0 or x.max() > 1):
        raise ValueError(f"Intensities must lie in [0, 1], not [{np.nanmin(x)}, {np.nanmax(x)}]")
    return np.minimum(np.round(x * 2 ** bits), 2 ** bits - 1).astype(np.int64)


def sample_seeds(base, count):
    """Nonzero 32-bit seeds for ``count`` samples from a ``base`` seed: the host's numbering,
    ``(base * 2654435761 + k * 2246822519 + 1) mod 2^32`` for sample ``k``, 1 where that is 0."""
    if isinstance(base, bool) or not isinstance(base, (int, np.integer)) or base < 0:
        raise ValueError(f"Base seed must be a non-negative integer, not {base!r}")
    k = np.arange(count, dtype=np.uint64)
    seeds = (np.uint64(base % 2 ** 32) * np.uint64(2654435761) + k * np.uint64(2246822519)
             + np.uint64(1)) & np.uint64(MASK)
    return np.where(seeds == 0, np.uint64(1), seeds).astype(np.int64)


def rate_events(intensities, seeds, *, steps, bits):
    """Spikes the board draws: events ``[n, 4]`` (sample, step, addr, 1), int64, sorted.

    ``intensities`` ``[S, n_in]`` integers in ``[0, 2^bits - 1]`` (:func:`quantize`), ``seeds``
    ``[S]`` nonzero 32-bit seeds, one per sample. The same layout as
    :func:`models.encoders.to_events`, so :func:`models.golden.events_to_dense` takes it.
    """
    _check_bits(bits)
    q = np.asarray(intensities)
    if q.ndim != 2:
        raise ValueError(f"Intensities must have shape [samples, n_in], not {list(q.shape)}")
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"Intensities must be integers, not {q.dtype}")
    if q.size and (q.min() < 0 or q.max() > 2 ** bits - 1):
        bad = int(q.min() if q.min() < 0 else q.max())
        raise ValueError(f"Intensity must be in [0, {2 ** bits - 1}], not {bad}")
    seeds = np.asarray(seeds)
    if seeds.shape != (q.shape[0],):
        raise ValueError(f"Seeds must be one per sample ({q.shape[0]}), not {list(seeds.shape)}")
    if seeds.size and (seeds.min() < 1 or seeds.max() > MASK):
        bad = int(seeds.min() if seeds.min() < 1 else seeds.max())
        raise ValueError(f"Seed must be in [1, {MASK}] (0 is the generator's fixed point), "
                         f"not {bad}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"Steps must be an integer of at least 1, not {steps!r}")
    samples, n_in = q.shape
    state = seeds.astype(np.uint64)
    spikes = np.zeros((samples, steps, n_in), dtype=bool)
    shift = np.uint64(32 - bits)
    for t in range(steps):
        for a in range(n_in):
            state = xorshift32(state)
            spikes[:, t, a] = (state >> shift).astype(np.int64) < q[:, a]
    rows = np.argwhere(spikes).astype(np.int64)
    return np.concatenate([rows, np.ones((len(rows), 1), dtype=np.int64)], axis=1)


def board_intensities(bundle, bits, count=None):
    """The quantized intensities of ``bundle``'s test samples, ``[count, n_in]`` (default: as
    many as its vectors hold), and their labels: the first test images of the data set the
    bundle was trained on (``provenance.dataset``), checked against the vectors' labels."""
    from .data import DATASET_INFO, load_split
    v = bundle.vectors
    if v is None or v.labels is None:
        raise ValueError("Rate input on the board needs the bundle's vectors.npz with labels")
    count = v.samples if count is None else min(count, v.samples)
    source = (bundle.provenance or {}).get("dataset")
    names = [name for name, info in DATASET_INFO.items() if info["source"] == source]
    if not names:
        raise ValueError(f"Rate input on the board: the bundle's data set {source!r} is not one "
                         f"of {', '.join(info['source'] for info in DATASET_INFO.values())}")
    _, _, x_test, y_test = load_split(names[0])
    labels = np.asarray(v.labels)[:count]
    if not np.array_equal(np.asarray(y_test[:count]), labels):
        raise ValueError(f"Rate input on the board: the vectors' labels are not the first "
                         f"{count} of the {source} test split")
    images = np.asarray(x_test[:count]).reshape(count, -1)
    if images.shape[1] != bundle.input.size:
        raise ValueError(f"Rate input on the board: the {source} images have "
                         f"{images.shape[1]} pixels, the bundle {bundle.input.size} inputs")
    return quantize(images, bits), labels


def board_rate_report(bundle, seed, bits):
    """Golden figures of a rate-coded bundle's test samples with the spikes this generator draws
    (base seed ``seed``, ``bits``-bit intensities) beside those of its exported spikes, and the
    bytes a sample takes on the host link either way (``python -m models eval --board-rate``)."""
    from hdl.protocol import EventFormat, sample_stream

    from . import golden
    if bundle.input.encoding != "rate":
        raise ValueError(f"--board-rate needs a rate-coded bundle, not {bundle.input.encoding!r}")
    try:
        q, labels = board_intensities(bundle, bits)
    except ValueError as exc:
        raise ValueError(str(exc).replace("Rate input on the board", "--board-rate")) from None
    v = bundle.vectors
    events = rate_events(q, sample_seeds(seed, v.samples), steps=v.steps, bits=bits)
    dense = golden.events_to_dense(events, v.samples, v.steps, bundle.input.size)
    preds = golden.predict(golden.run(bundle, dense).output)
    sent = np.asarray(v.events).reshape(-1, 4)
    stream = sum(len(sample_stream(sent[sent[:, 0] == s][:, 1:], v.steps))
                 for s in range(v.samples))
    return {"accuracy": float((preds == labels).mean()),
            "exported_accuracy": float((v.predictions == labels).mean()),
            "agreement_with_exported": float((preds == v.predictions).mean()),
            "input_events_per_inference": len(events) / v.samples,
            "exported_input_events_per_inference": len(sent) / v.samples,
            "event_bytes_per_sample": stream * EventFormat.from_bundle(bundle).nbytes
            / v.samples,
            "intensity_bytes_per_sample": -(-bundle.input.size * bits // 8) + 4,
            "samples": int(v.samples), "steps": int(v.steps), "bits": bits, "seed": seed}
