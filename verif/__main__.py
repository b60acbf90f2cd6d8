"""``python -m verif --bundle DIR``: emit the accelerator of a bundle, cosimulate it, print counts.

The stimulus is the bundle's ``vectors.npz`` when it has one, else random input events. Exit
status 0 when the Verilog equals the golden model on every step, 1 when it does not, 2 on bad
arguments or a bundle that does not load.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from gen.cli import OneLineParser, check_bundle_options, float_arg, int_arg, lanes_arg

__all__ = ["build_parser", "main"]

RANDOM_SAMPLES = 4
RANDOM_DENSITY = 0.2


def _first_samples(bundle, n, parser):
    """The first ``n`` samples of the bundle's vectors, after checking that their stored spikes
    are what the golden model gives (stale vectors are an error, as for the whole set)."""
    from models import golden
    v = bundle.vectors
    if n > v.samples:
        parser.error(f"--samples {n}: the bundle's vectors hold {v.samples} samples")
    events = v.events[v.events[:, 0] < n]
    x = golden.events_to_dense(events, n, v.steps, bundle.input.size)
    rows = golden.spike_rows(golden.run(bundle, x).output)
    if not np.array_equal(rows, v.spikes[v.spikes[:, 0] < n]):
        parser.error("vectors.npz spikes disagree with models.golden (stale vectors)")
    return events, n


def build_parser():
    p = OneLineParser(
        prog="python -m verif",
        description="emit the accelerator of a bundle and prove it equal to the golden model by "
                    "cosimulation of its Verilog")
    p.add_argument("--bundle", type=Path, required=True, metavar="DIR",
                   help="bundle folder (bundle.json, weights.npz, optional vectors.npz)")
    p.add_argument("--sim", choices=("icarus", "verilator"), default="icarus",
                   help="simulator (default: %(default)s)")
    p.add_argument("--lanes", type=lanes_arg(1, 16), default=1, metavar="L[,L...]",
                   help="accumulate lanes: one number for every layer, or one per neuron "
                        "layer (default: %(default)s)")
    p.add_argument("--format", choices=("auto", "csr", "bitmap", "dense"), default="auto",
                   help="weight memory format of linear layers (default: %(default)s)")
    p.add_argument("--dense", action="store_true", help="build the dense baseline")
    p.add_argument("--trace", action="store_true",
                   help="emit the top with its trace port and compare every hidden layer too, "
                        "step by step (gen --trace)")
    stim = p.add_argument_group("stimulus (the bundle's vectors.npz, else random events)")
    stim.add_argument("--samples", type=int_arg(1, 10 ** 9), metavar="N",
                      help="the first N samples of the vectors, or N random samples "
                           f"(default: all of the vectors, {RANDOM_SAMPLES} random)")
    stim.add_argument("--density", type=float_arg(0.0, 1.0, hi_open=True), metavar="D",
                      help="probability of a random input event per input and step "
                           f"(default: {RANDOM_DENSITY})")
    stim.add_argument("--random", action="store_true",
                      help="use random events even if the bundle has vectors.npz")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int_arg(0, 2 ** 32 - 1), default=0, metavar="S",
                     help="seed of the stimulus, stalls, shuffling (default: %(default)s)")
    run.add_argument("--in-gap", type=float_arg(0.0, 1.0, hi_open=True), default=0.3,
                     metavar="P",
                     help="probability of an idle input cycle (default: %(default)s)")
    run.add_argument("--out-stall", type=float_arg(0.0, 1.0, hi_open=True), default=0.3,
                     metavar="P",
                     help="probability the output is not ready in a cycle "
                          "(default: %(default)s)")
    run.add_argument("--shuffle", action="store_true",
                     help="shuffle the input events within each step")
    run.add_argument("--zero-events", type=float_arg(0.0, 100.0), default=0.0, metavar="R",
                     help="extra value=0 input events per event (default: %(default)s)")
    run.add_argument("--json", type=Path, metavar="FILE",
                     help="also write the full result (counts, cycles) to FILE")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="show the simulator's output")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    from models import bundle as bundle_io
    from models.synth import random_events
    from verif.runner import CosimError, cosimulate

    try:
        bundle = bundle_io.load(args.bundle)
    except bundle_io.BundleError as exc:
        parser.error(str(exc))
    check_bundle_options(parser, bundle, fmt=args.format, lanes=args.lanes)
    events = samples = None
    if bundle.vectors is None or args.random:
        spec = bundle.input
        samples = args.samples or RANDOM_SAMPLES
        events = random_events(np.random.default_rng(args.seed), samples=samples,
                               steps=spec.steps, n_in=spec.size,
                               density=RANDOM_DENSITY if args.density is None else args.density,
                               bits=spec.bits, signed=spec.signed)
    else:
        if args.density is not None:
            parser.error("--density sets random stimulus, and the bundle has vectors.npz; "
                         "add --random to use random events")
        if args.samples is not None:
            events, samples = _first_samples(bundle, args.samples, parser)

    from gen import emit_verilog
    options = {"lanes": args.lanes, "dense": args.dense, "trace": args.trace,
               "fmt": None if args.format == "auto" else args.format}
    started = time.monotonic()
    try:
        out = emit_verilog(bundle, **options)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    verilog = out[1] if isinstance(out, tuple) else out
    try:
        result = cosimulate(verilog, args.bundle, sim=args.sim, events=events, samples=samples,
                            seed=args.seed, in_gap=args.in_gap, out_stall=args.out_stall,
                            shuffle=args.shuffle, zero_events=args.zero_events,
                            verbose=args.verbose)
    except CosimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")

    cycles = result["cycles"]
    print(f"{args.sim}: {result['samples']} samples x {result['steps_per_sample']} steps "
          f"({result['stimulus']}), {result['input_events']} input events, lanes {args.lanes}")
    print(f"steps checked   {result['steps_checked']} / {result['steps']}")
    print(f"spikes compared {result['spikes_compared']}")
    for name, counts in result.get("hidden", {}).items():
        print(f"  {name:<13} {counts['spikes_compared']} spikes, {counts['steps_checked']} / "
              f"{counts['steps']} steps, {counts['mismatches']} mismatches (trace port)")
    print(f"mismatches      {result['mismatches']}")
    if cycles.get("mean_per_sample") is not None:
        every = (f"then {cycles['mean_interval_per_sample']:.1f} per sample close to close, "
                 if cycles.get("mean_interval_per_sample") is not None else "")
        print(f"cycles          first sample {cycles['first_sample_latency']}, {every}"
              f"{cycles['mean_per_step']:.1f} per step (max {cycles['max_per_step']}), "
              f"with in-gap {args.in_gap} and out-stall {args.out_stall}")
    print(f"time            {elapsed:.1f} s, log {result['log']}")
    if result["timeout"] or result["error"]:
        print(f"error: {result['error']}", file=sys.stderr)
    if result["first_mismatch"]:
        print(f"first mismatch: {result['first_mismatch']}", file=sys.stderr)
    if result["passed"] and result["spikes_compared"] == 0:
        print("warning: no spikes were compared; the stimulus does not exercise the network",
              file=sys.stderr)
    print("PASS: bit-exact" if result["passed"] else "FAIL")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
