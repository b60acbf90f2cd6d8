"""Time of the golden model on the whole digits test split of the exported zoo bundles.

For each bundle (default: ``models/zoo/digits_mlp`` and, if present, ``models/zoo/digits_csnn``)
the vectors' events are expanded to dense inputs once, then :func:`models.golden.run` runs all
samples (vectorised over samples and neurons, one loop over timesteps) ``--repeats`` times. The
median is the figure; the run also checks that the recomputed output spikes equal the stored
ones, so the timed work is the real one.

    python -m benchmarks.bench_golden [--bundle DIR ...] [--repeats N] [-o FILE]

Writes ``benchmarks/results/golden.json`` (with its provenance) in a few seconds. numpy
only: no torch, no amaranth.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))       # run as a file: python benchmarks/bench_golden.py

from benchmarks.provenance import (  # noqa: E402
    PROVENANCE_KEYS, bundle_inputs, provenance, repo_path, write_result,
)
from models import bundle as bundle_io  # noqa: E402
from models import golden  # noqa: E402

DEFAULT = [ROOT / "models" / "zoo" / "digits_mlp", ROOT / "models" / "zoo" / "digits_csnn"]

# What golden.json holds (checked before writing and by tests/test_benchmark_results.py); bump
# SCHEMA when the layout changes. The timed code is the golden model and the bundle reader;
# neither imports hdl, so the result measured no hardware.
SCHEMA = 2
SOURCES = ("models/golden.py", "models/bundle.py")
GATEWARE = ()
RESULT_KEYS = {
    "": {"provenance", "machine", "results"},
    "provenance": PROVENANCE_KEYS,
    "machine": {"platform", "python", "numpy", "cpus", "load_average"},
    "results/*": {"bundle", "samples", "steps", "neurons", "median_seconds", "min_seconds",
                  "repeats", "events_to_dense_seconds", "samples_per_second", "accuracy",
                  "spikes_per_inference"},
}


def inputs(result):
    """The data a result measured (its provenance's ``inputs``): the command's ``--bundle``
    folders, or the default bundles that exist."""
    return bundle_inputs(result) or [repo_path(p) for p in DEFAULT if p.is_dir()]


def designs(result):
    """No hardware: the golden model is numpy (see ``benchmarks/provenance.py``)."""
    return {}


def bench(path, repeats):
    """Time the golden model on one bundle's vectors; return a dict of figures."""
    bundle = bundle_io.load(path)
    v = bundle.vectors
    if v is None:
        raise ValueError(f"{path}: has no vectors.npz")
    t0 = time.perf_counter()
    dense = golden.events_to_dense(v.events, v.samples, v.steps, bundle.input.size)
    expand = time.perf_counter() - t0
    times, trace = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        trace = golden.run(bundle, dense)
        times.append(time.perf_counter() - t0)
    if not np.array_equal(golden.spike_rows(trace.output), v.spikes):
        raise ValueError(f"{path}: the golden model no longer reproduces vectors.npz")
    preds = golden.predict(trace.output)
    spikes = {layer.name: float(s.sum()) / v.samples
              for layer, s in zip(bundle.layers, trace.spikes) if layer.has_neurons}
    return {
        "bundle": str(Path(path).relative_to(ROOT)) if Path(path).is_relative_to(ROOT)
        else str(path),
        "samples": int(v.samples), "steps": int(v.steps),
        "neurons": int(sum(layer.n_out for layer in bundle.neuron_layers)),
        "median_seconds": statistics.median(times), "min_seconds": min(times),
        "repeats": repeats, "events_to_dense_seconds": expand,
        "samples_per_second": v.samples / statistics.median(times),
        "accuracy": float((preds == v.labels).mean()) if v.labels is not None else None,
        "spikes_per_inference": spikes,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_golden",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", metavar="DIR",
                        help="bundle folder with vectors (repeatable; default: the zoo)")
    parser.add_argument("--repeats", type=int, default=5, metavar="N",
                        help="timed runs per bundle (default: %(default)s)")
    parser.add_argument("-o", "--output", default=str(ROOT / "benchmarks/results/golden.json"),
                        metavar="FILE", help="JSON to write (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    prov = provenance(__file__, SOURCES, gateware=GATEWARE, schema=SCHEMA, inputs=inputs,
                      argv=argv)                                        # before measuring
    paths = [Path(p) for p in args.bundle] if args.bundle else [p for p in DEFAULT if p.is_dir()]
    results = []
    for path in paths:
        try:
            r = bench(path, args.repeats)
        except (ValueError, bundle_io.BundleError) as exc:
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
        results.append(r)
        print(f"{r['bundle']}: {r['samples']} samples x {r['steps']} steps, median "
              f"{r['median_seconds']:.3f} s (min {r['min_seconds']:.3f} s, {args.repeats} runs), "
              f"{r['samples_per_second']:.0f} samples/s, accuracy {100 * r['accuracy']:.2f}%")
    out = Path(args.output)
    write_result(out, {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__, "cpus": os.cpu_count(),
                    "load_average": list(os.getloadavg())},
        "results": results}, provenance=prov,
        result_keys=RESULT_KEYS, designs=designs)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
