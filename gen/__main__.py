"""Command line: ``python -m gen --neurons 64 --sparsity 0.75 [-o DIR]`` or ``--bundle DIR``."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from . import DEFAULT_NAME, emit_verilog, make_report, write_outputs
from .cli import OneLineParser, float_arg, int_arg

MAX_NEURONS = 4096


def build_parser():
    p = OneLineParser(
        prog="python -m gen",
        description="generate the Verilog of a sparsity-aware SNN accelerator, with its bundle "
                    "and report")
    src = p.add_argument_group("network (a random pruned layer, or --bundle)")
    src.add_argument("--neurons", type=int_arg(1, MAX_NEURONS), metavar="N",
                     help="output neurons of the random layer")
    src.add_argument("--sparsity", type=float_arg(0.0, 1.0, hi_open=True), metavar="S",
                     help="fraction of zero weights, in [0, 1) (default: 0.75)")
    src.add_argument("--inputs", type=int_arg(1, MAX_NEURONS), metavar="N",
                     help="input neurons (default: as --neurons)")
    src.add_argument("--layers", type=int_arg(1, 8), default=1, metavar="K",
                     help="linear layers of the random network (default: %(default)s)")
    src.add_argument("--bundle", type=Path, metavar="DIR",
                     help="build the network of this bundle instead of a random one")
    nrn = p.add_argument_group("random layer parameters")
    nrn.add_argument("--weight-bits", type=int_arg(2, 16), default=8,
                     metavar="B", help="signed weight width (default: %(default)s)")
    nrn.add_argument("--potential-bits", type=int_arg(4, 32), default=16,
                     metavar="B", help="signed membrane potential width (default: %(default)s)")
    nrn.add_argument("--input-bits", type=int_arg(1, 16), default=1,
                     metavar="B", help="input event value width (default: %(default)s)")
    nrn.add_argument("--signed-input", action="store_true",
                     help="input event values are signed")
    nrn.add_argument("--model", choices=("lif", "lapicque"), default="lif",
                     help="neuron model (default: %(default)s)")
    nrn.add_argument("--reset", choices=("subtract", "zero", "none"), default="subtract",
                     help="reset mechanism (default: %(default)s)")
    nrn.add_argument("--leak", choices=("shift", "mul"), default="shift",
                     help="leak: u - (u >> shift), or (u * beta) >> frac-bits "
                          "(default: %(default)s)")
    nrn.add_argument("--shift", type=int_arg(1, 31), default=3, metavar="K",
                     help="shift of the shift leak (default: %(default)s)")
    nrn.add_argument("--beta", type=float_arg(0.0, 1.0),
                     default=0.9, metavar="B",
                     help="decay of the mul leak, in [0, 1] (default: %(default)s)")
    nrn.add_argument("--frac-bits", type=int_arg(0, 16), default=8,
                     metavar="F", help="fraction bits of beta (default: %(default)s)")
    nrn.add_argument("--threshold", type=int_arg(0, 2 ** 31 - 1),
                     metavar="T", help="firing threshold (default: from the weights)")
    nrn.add_argument("--steps", type=int_arg(1, 100000), default=16, metavar="T",
                     help="timesteps per sample (default: %(default)s)")
    nrn.add_argument("--seed", type=int_arg(0, 2 ** 32 - 1), default=1,
                     metavar="SEED", help="seed of the random layer (default: %(default)s)")
    hw = p.add_argument_group("hardware")
    hw.add_argument("--lanes", type=int_arg(1, 16), default=1, metavar="L",
                    help="accumulate lanes per layer (default: %(default)s)")
    hw.add_argument("--updates", type=int, choices=(1, 2, 4, 8), default=1, metavar="K",
                    help="neuron updates per sweep cycle, as a multiple of the lanes: 1, 2, 4 "
                         "or 8 (default: %(default)s)")
    hw.add_argument("--format", choices=("auto", "csr", "bitmap", "dense"), default="auto",
                    help="weight memory format (default: %(default)s: fewest stored bits)")
    hw.add_argument("--dense", action="store_true",
                    help="build the dense baseline (visits every input and weight)")
    hw.add_argument("--density", type=float_arg(0.0, 1.0),
                    default=0.1, metavar="D",
                    help="input spike density the cycle estimate assumes (default: "
                         "%(default)s)")
    hw.add_argument("--status-port", action="store_true",
                    help="add a status port with cycle and synaptic-operation counters "
                         "(the contract's top has only the i and o streams)")
    hw.add_argument("--name", default=DEFAULT_NAME, metavar="NAME",
                    help="Verilog module name (default: %(default)s)")
    p.add_argument("-o", "--output", type=Path, default=Path("build"), metavar="DIR",
                   help="output folder (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def _random_bundle(args, parser):
    import numpy as np

    from models import golden
    from models.bundle import Leak, Neuron
    from models.synth import random_events, random_linear_bundle

    n_in = args.inputs or args.neurons
    neuron = None
    if args.threshold is not None or args.leak != "shift" or args.shift != 3 \
            or args.model != "lif" or args.reset != "subtract":
        if args.leak == "mul":
            leak = Leak("mul", beta=int(round(args.beta * 2 ** args.frac_bits)),
                        frac_bits=args.frac_bits)
        else:
            if args.shift >= args.potential_bits:
                parser.error(f"--shift must be less than --potential-bits "
                             f"({args.potential_bits}), not {args.shift}")
            leak = Leak("shift", shift=args.shift)
        threshold = args.threshold
        if threshold is None:
            threshold = min(64 * (2 ** (args.weight_bits - 1)) // 8,
                            2 ** (args.potential_bits - 1) - 1)
        if threshold > 2 ** (args.potential_bits - 1) - 1:
            parser.error(f"--threshold must be below 2^(potential-bits - 1) = "
                         f"{2 ** (args.potential_bits - 1)}, not {threshold}")
        neuron = Neuron(args.model, args.reset, threshold, args.potential_bits, leak)
    bundle = random_linear_bundle(
        n_in=n_in, n_out=args.neurons, sparsity=args.sparsity, seed=args.seed,
        weight_bits=args.weight_bits, potential_bits=args.potential_bits, neuron=neuron,
        input_bits=args.input_bits, input_signed=args.signed_input, steps=args.steps,
        layers=args.layers)
    # Test vectors beside the bundle, so anyone can check the build without torch.
    samples = 4
    events = random_events(np.random.default_rng(args.seed), samples=samples,
                           steps=args.steps, n_in=n_in, density=args.density or 0.1,
                           bits=args.input_bits, signed=args.signed_input)
    bundle.vectors = golden.make_vectors(bundle, events, samples)
    return bundle


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bundle is not None:
        if args.neurons is not None or args.sparsity is not None or args.inputs is not None:
            parser.error("--bundle cannot be combined with --neurons, --sparsity or --inputs")
    elif args.neurons is None:
        parser.error("give --neurons N (with --sparsity S) or --bundle DIR")
    if args.sparsity is None:
        args.sparsity = 0.75
    if not args.name.isidentifier():
        parser.error(f"--name must be a Verilog identifier, not {args.name!r}")
    if args.dense and args.format == "csr":
        parser.error("--dense needs --format dense or auto, not csr")

    # Check the output folder before any work, and write nothing if it is not usable.
    out = args.output
    if out.exists() and not out.is_dir():
        parser.error(f"output {str(out)!r} exists and is not a folder")
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK | os.X_OK):
        parser.error(f"output folder {str(out)!r} is not writable")

    from models.bundle import BundleError, load

    start = time.monotonic()
    if args.bundle is not None:
        try:
            bundle = load(args.bundle)
        except BundleError as exc:
            parser.error(f"bad bundle: {exc}")
    else:
        bundle = _random_bundle(args, parser)

    fmt = None if args.format == "auto" else args.format
    try:
        top, text = emit_verilog(bundle, lanes=args.lanes, fmt=fmt, dense=args.dense,
                                 status=args.status_port, updates=args.updates, name=args.name)
        report = make_report(top, density=args.density, name=args.name)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    try:
        write_outputs(out, verilog_text=text, bundle=bundle, report=report, name=args.name)
    except OSError as exc:
        parser.error(f"cannot write output folder {str(out)!r}: {exc.strerror or exc}")
    if not args.quiet:
        t = report["totals"]
        print(f"wrote {out / (args.name + '.v')} ({len(text.splitlines())} lines), "
              f"{out / 'bundle'}, {out / 'report.json'}")
        for layer in report["layers"]:
            if "lanes" in layer:
                print(f"  {layer['name']}: {layer['kind']} {layer['in']}->{layer['out']}, "
                      f"{layer.get('format', '-')}, {layer['lanes']} lanes, weights "
                      f"{layer['stored_weight_bits']} bits stored vs "
                      f"{layer['dense_weight_bits']} dense, current "
                      f"{layer.get('current_bits', '-')} bits")
        print(f"  weights: {t['stored_weight_bits']} bits stored, "
              f"{t['dense_weight_bits']} dense; "
              f"~{report['estimated_cycles_per_step']} cycles per step at input density "
              f"{args.density} ({time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
