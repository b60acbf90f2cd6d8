"""Command line: ``python -m gen --neurons 64 --sparsity 0.75 [-o DIR]`` or ``--bundle DIR``."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from . import DEFAULT_NAME, emit_verilog, make_report, write_outputs
from .cli import OneLineParser, check_bundle_options, float_arg, int_arg, lanes_arg

MAX_NEURONS = 4096


#: The random layer's options and their defaults. They are parsed with ``None`` defaults so
#: that a user who gives one with ``--bundle`` (where it would do nothing) is told so.
RANDOM_DEFAULTS = {
    "inputs": None, "layers": 1, "weight_bits": 8, "potential_bits": 16, "input_bits": 1,
    "signed_input": False, "model": "lif", "reset": "subtract", "leak": "shift", "shift": 3,
    "beta": 0.9, "frac_bits": 8, "threshold": None, "steps": 16, "seed": 1,
}
DEFAULT_DENSITY = 0.1


def _option(dest):
    return "--" + dest.replace("_", "-")


def build_parser():
    p = OneLineParser(
        prog="python -m gen",
        description="generate the Verilog of a sparsity-aware SNN accelerator, with its bundle "
                    "and report")
    d = RANDOM_DEFAULTS
    src = p.add_argument_group("network (a random pruned layer, or --bundle)")
    src.add_argument("--neurons", type=int_arg(1, MAX_NEURONS), metavar="N",
                     help="output neurons of the random layer")
    src.add_argument("--sparsity", type=float_arg(0.0, 1.0, hi_open=True), metavar="S",
                     help="fraction of zero weights, in [0, 1) (default: 0.75)")
    src.add_argument("--inputs", type=int_arg(1, MAX_NEURONS), metavar="N",
                     help="input neurons (default: as --neurons)")
    src.add_argument("--layers", type=int_arg(1, 8), metavar="K",
                     help=f"linear layers of the random network (default: {d['layers']})")
    src.add_argument("--bundle", type=Path, metavar="DIR",
                     help="build the network of this bundle instead of a random one")
    nrn = p.add_argument_group("random layer parameters (not with --bundle)")
    nrn.add_argument("--weight-bits", type=int_arg(2, 16), metavar="B",
                     help=f"signed weight width (default: {d['weight_bits']})")
    nrn.add_argument("--potential-bits", type=int_arg(4, 32), metavar="B",
                     help=f"signed membrane potential width (default: {d['potential_bits']})")
    nrn.add_argument("--input-bits", type=int_arg(1, 16), metavar="B",
                     help=f"input event value width (default: {d['input_bits']})")
    nrn.add_argument("--signed-input", action="store_true", default=None,
                     help="input event values are signed")
    nrn.add_argument("--model", choices=("lif", "lapicque"),
                     help=f"neuron model (default: {d['model']})")
    nrn.add_argument("--reset", choices=("subtract", "zero", "none"),
                     help=f"reset mechanism (default: {d['reset']})")
    nrn.add_argument("--leak", choices=("shift", "mul"),
                     help=f"leak: u - (u >> shift), or (u * beta) >> frac-bits "
                          f"(default: {d['leak']})")
    nrn.add_argument("--shift", type=int_arg(1, 31), metavar="K",
                     help=f"shift of the shift leak (default: {d['shift']})")
    nrn.add_argument("--beta", type=float_arg(0.0, 1.0), metavar="B",
                     help=f"decay of the mul leak, in [0, 1] (default: {d['beta']})")
    nrn.add_argument("--frac-bits", type=int_arg(0, 16), metavar="F",
                     help=f"fraction bits of beta of the mul leak (default: {d['frac_bits']})")
    nrn.add_argument("--threshold", type=int_arg(0, 2 ** 31 - 1),
                     metavar="T", help="firing threshold (default: from the weights)")
    nrn.add_argument("--steps", type=int_arg(1, 100000), metavar="T",
                     help=f"timesteps per sample (default: {d['steps']})")
    nrn.add_argument("--seed", type=int_arg(0, 2 ** 32 - 1), metavar="SEED",
                     help=f"seed of the random layer and its vectors (default: {d['seed']})")
    hw = p.add_argument_group("hardware")
    hw.add_argument("--lanes", type=lanes_arg(1, 16), default=1, metavar="L[,L...]",
                    help="accumulate lanes: one number for every layer (capped at a "
                         "convolution's output channels), or one per neuron layer "
                         "(default: %(default)s)")
    hw.add_argument("--updates", type=int, choices=(1, 2, 4, 8), default=None, metavar="K",
                    help="neuron updates per sweep cycle of linear layers, as a multiple of the "
                         "lanes: 1, 2, 4 or 8 (default: 1)")
    hw.add_argument("--format", choices=("auto", "csr", "bitmap", "dense"), default="auto",
                    help="weight memory format of linear layers (default: %(default)s: fewest "
                         "stored bits; convolutions keep their sparse kernels)")
    hw.add_argument("--dense", action="store_true",
                    help="build the dense baseline (visits every input and weight)")
    hw.add_argument("--density", type=float_arg(0.0, 1.0), metavar="D",
                    help="input spike density: of the random layer's test vectors, and, with "
                         "--bundle, the activity the cycle estimate assumes in every layer "
                         "instead of the bundle's vectors (default: "
                         f"{DEFAULT_DENSITY} for random layers and bundles without vectors)")
    hw.add_argument("--status-port", action="store_true",
                    help="add a status port with cycle and synaptic-operation counters "
                         "(the contract's top has only the i and o streams)")
    hw.add_argument("--trace", action="store_true",
                    help="add a trace port: the spikes of every layer but the last as one "
                         "stream, each event tagged with its layer (docs/verification.md)")
    hw.add_argument("--name", default=DEFAULT_NAME, metavar="NAME",
                    help="Verilog module name (default: %(default)s)")
    p.add_argument("-o", "--output", type=Path, default=Path("build"), metavar="DIR",
                   help="output folder (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def _check_options(args, parser):
    """Refuse every option that the rest of the command would ignore (one line, exit 2)."""
    given = [dest for dest in RANDOM_DEFAULTS if getattr(args, dest) is not None]
    if args.bundle is not None:
        if args.neurons is not None or args.sparsity is not None:
            parser.error("--bundle cannot be combined with --neurons or --sparsity")
        if given:
            names = ", ".join(_option(dest) for dest in given)
            parser.error(f"{names} shape{'s' if len(given) == 1 else ''} the random layer; "
                         f"with --bundle the network comes from the bundle")
    elif args.neurons is None:
        parser.error("give --neurons N (with --sparsity S) or --bundle DIR")
    leak = args.leak or RANDOM_DEFAULTS["leak"]
    if leak != "mul":
        for dest in ("beta", "frac_bits"):
            if getattr(args, dest) is not None:
                parser.error(f"{_option(dest)} sets the mul leak; add --leak mul or drop it")
    elif args.shift is not None:
        parser.error("--shift sets the shift leak, not --leak mul")
    for dest, value in RANDOM_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    if args.sparsity is None:
        args.sparsity = 0.75
    if not args.name.isidentifier():
        parser.error(f"--name must be a Verilog identifier, not {args.name!r}")
    if args.dense and args.format not in ("auto", "dense"):
        parser.error(f"--dense needs --format dense or auto, not {args.format}")
    if args.dense and args.updates not in (None, 1):
        parser.error("--updates sets the sparse engine's sweep; the dense baseline sweeps "
                     "one neuron per lane")


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
                           steps=args.steps, n_in=n_in, density=args.density or DEFAULT_DENSITY,
                           bits=args.input_bits, signed=args.signed_input)
    bundle.vectors = golden.make_vectors(bundle, events, samples)
    return bundle


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_options(args, parser)

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
        density = args.density if bundle.vectors is None or args.density is not None else None
        if density is None and bundle.vectors is None:
            density = DEFAULT_DENSITY
    else:
        bundle = _random_bundle(args, parser)
        density = None                      # the random vectors were drawn at --density
    check_bundle_options(parser, bundle, fmt=args.format, updates=args.updates,
                         lanes=args.lanes)

    fmt = None if args.format == "auto" else args.format
    try:
        top, text = emit_verilog(bundle, lanes=args.lanes, fmt=fmt, dense=args.dense,
                                 status=args.status_port, updates=args.updates, name=args.name,
                                 trace=args.trace)
        report = make_report(top, density=density, name=args.name)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    try:
        write_outputs(out, verilog_text=text, bundle=bundle, report=report, name=args.name)
    except OSError as exc:
        parser.error(f"cannot write output folder {str(out)!r}: {exc.strerror or exc}")
    if not args.quiet:
        print(summary(report, out, args.name, len(text.splitlines()), args.lanes,
                      time.monotonic() - start))
    return 0


def summary(report, out, name, lines, lanes, seconds):
    """The printed summary: files, then one line per layer, then the totals."""
    t = report["totals"]
    act = report["activity"]
    where = (f"the activity of the bundle's {act['samples']} test samples" if
             act["source"] == "vectors" else f"input density {act['density']}")
    text = [f"wrote {out / (name + '.v')} ({lines} lines), {out / 'bundle'}, "
            f"{out / 'report.json'}"]
    for layer in report["layers"]:
        head = f"  {layer['name']}: {layer['kind']} {layer['in']}->{layer['out']}"
        if "stored_weight_bits" in layer:
            asked = lanes if isinstance(lanes, int) else None
            capped = (f" (capped from {asked}: one per output channel)"
                      if asked is not None and layer["lanes"] < asked else "")
            plural = "s" if layer["lanes"] > 1 else ""
            head += (f", {layer['format']}, {layer['lanes']} lane{plural}{capped}, weights "
                     f"{layer['stored_weight_bits']} bits stored vs "
                     f"{layer['dense_weight_bits']} dense, current {layer['current_bits']} bits")
        elif layer["kind"] == "flatten":
            head += ", no hardware"
        if "estimated_cycles_per_step" in layer:
            head += (f", ~{layer['estimated_cycles_per_step']:.0f} cycles/step "
                     f"(bound {layer['lower_bound_cycles_per_step']:.0f})")
        text.append(head)
    if report.get("traced_layers"):
        text.append(f"  trace port: {', '.join(report['traced_layers'])} on trace__payload "
                    f"({report['ports']['trace__payload']} bits: addr, spike, last, layer)")
    text.append(f"  weights: {t['stored_weight_bits']} bits stored, {t['dense_weight_bits']} "
                f"dense; ~{report['estimated_cycles_per_step']:.0f} cycles per step "
                f"(slowest layer {report['bottleneck_layer']}), "
                f"~{report['estimated_cycles_per_sample']:.0f} per sample, at {where} "
                f"({seconds:.1f} s)")
    return "\n".join(text)


if __name__ == "__main__":
    sys.exit(main())
