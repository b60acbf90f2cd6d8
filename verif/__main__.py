"""``python -m verif --bundle DIR``: emit the accelerator of a bundle, cosimulate it, print counts.

The stimulus is the bundle's ``vectors.npz`` when it has one, else random input events. Exit
status 0 when the Verilog equals the golden model on every step, 1 when it does not, 2 on bad
arguments or a bundle that does not load.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["build_parser", "main"]


def _prob(name):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, not {text!r}") from None
        if not 0 <= value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be in [0, 1), not {text}")
        return value
    return parse


def _positive(name):
    def parse(text):
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, not {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, not {value}")
        return value
    return parse


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m verif",
        description="emit the accelerator of a bundle and prove it equal to the golden model by "
                    "cosimulation of its Verilog")
    p.add_argument("--bundle", type=Path, required=True, metavar="DIR",
                   help="bundle folder (bundle.json, weights.npz, optional vectors.npz)")
    p.add_argument("--sim", choices=("icarus", "verilator"), default="icarus",
                   help="simulator (default: %(default)s)")
    p.add_argument("--lanes", type=_positive("--lanes"), default=1, metavar="L",
                   help="accumulate lanes per layer (default: %(default)s)")
    p.add_argument("--format", choices=("auto", "csr", "bitmap", "dense"), default="auto",
                   help="weight memory format (default: %(default)s)")
    p.add_argument("--dense", action="store_true", help="build the dense baseline")
    stim = p.add_argument_group("stimulus (random events, when the bundle has no vectors.npz)")
    stim.add_argument("--samples", type=_positive("--samples"), default=4, metavar="N",
                      help="samples (default: %(default)s)")
    stim.add_argument("--density", type=_prob("--density"), default=0.2, metavar="D",
                      help="probability of an input event per input and step "
                           "(default: %(default)s)")
    stim.add_argument("--random", action="store_true",
                      help="use random events even if the bundle has vectors.npz")
    run = p.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, metavar="S",
                     help="seed of the stimulus, stalls, shuffling (default: %(default)s)")
    run.add_argument("--in-gap", type=_prob("--in-gap"), default=0.3, metavar="P",
                     help="probability of an idle input cycle (default: %(default)s)")
    run.add_argument("--out-stall", type=_prob("--out-stall"), default=0.3, metavar="P",
                     help="probability the output is not ready in a cycle "
                          "(default: %(default)s)")
    run.add_argument("--shuffle", action="store_true",
                     help="shuffle the input events within each step")
    run.add_argument("--zero-events", type=float, default=0.0, metavar="R",
                     help="extra value=0 input events per event (default: %(default)s)")
    run.add_argument("--json", type=Path, metavar="FILE",
                     help="also write the full result (counts, cycles) to FILE")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="show the simulator's output")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.zero_events < 0:
        parser.error(f"--zero-events must be at least 0, not {args.zero_events}")

    from models import bundle as bundle_io
    from models.synth import random_events
    from verif.runner import CosimError, cosimulate

    try:
        bundle = bundle_io.load(args.bundle)
    except bundle_io.BundleError as exc:
        parser.error(str(exc))
    events = samples = None
    if bundle.vectors is None or args.random:
        spec = bundle.input
        events = random_events(np.random.default_rng(args.seed), samples=args.samples,
                               steps=spec.steps, n_in=spec.size, density=args.density,
                               bits=spec.bits, signed=spec.signed)
        samples = args.samples

    from gen import emit_verilog
    options = {"lanes": args.lanes, "dense": args.dense,
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
    print(f"mismatches      {result['mismatches']}")
    if cycles.get("mean_per_sample") is not None:
        print(f"cycles          {cycles['mean_per_sample']:.1f} per sample, "
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
