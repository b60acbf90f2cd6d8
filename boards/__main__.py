"""Command line: ``python -m boards build|fit|run|program``.

``build``   bitstream for iCEBreaker or ULX3S from a bundle (or a random layer), report.json
``fit``     will it fit: resources from a quick synthesis, no place and route (boards.fit)
``run``     stream a bundle's test samples through a board on a serial port, compare with golden
``program`` load a built bitstream into the board with openFPGALoader
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from gen.cli import OneLineParser, check_bundle_options, float_arg, int_arg, lanes_arg

from .top import BOARDS

__all__ = ["main"]


def build_parser():
    p = OneLineParser(prog="python -m boards",
                      description="bitstreams, programming and a host driver for iCEBreaker "
                                  "(iCE40 UP5K) and ULX3S (ECP5) boards")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True

    b = sub.add_parser("build", help="build a bitstream and its resource/clock report")
    b.add_argument("--board", choices=sorted(BOARDS), default="icebreaker",
                   help="target board (default: %(default)s)")
    b.add_argument("--variant", choices=BOARDS["ulx3s"].variants, default=None,
                   help="ULX3S FPGA size (default: 85F)")
    src = b.add_argument_group("network (a bundle, or a random pruned layer as python -m gen)")
    src.add_argument("--bundle", type=Path, metavar="DIR", help="bundle folder")
    src.add_argument("--neurons", type=int_arg(1, 4096), metavar="N",
                     help="output neurons of a random layer")
    src.add_argument("--sparsity", type=float_arg(0.0, 1.0, hi_open=True), metavar="S",
                     help="fraction of zero weights of the random layer (default: 0.75)")
    src.add_argument("--inputs", type=int_arg(1, 4096), metavar="N",
                     help="inputs of the random layer (default: as --neurons)")
    src.add_argument("--steps", type=int_arg(1, 65535), metavar="T",
                     help="timesteps of the random layer (default: 16)")
    src.add_argument("--seed", type=int_arg(0, 2 ** 32 - 1), default=1, metavar="K",
                     help="seed of the random layer, and first place-and-route seed (retries "
                          "take K+1, K+2, ...) (default: %(default)s)")
    hw = b.add_argument_group("hardware")
    hw.add_argument("--lanes", type=lanes_arg(1, 16), default=1, metavar="L[,L...]",
                    help="accumulate lanes: one number for every layer (capped at a "
                         "convolution's output channels), or one per neuron layer, e.g. 2,1 "
                         "(default: %(default)s)")
    hw.add_argument("--clock", type=float_arg(1.0, 400.0), metavar="MHZ",
                    help="clock to build for, tried with up to 3 place-and-route seeds; a PLL "
                         "makes it from the oscillator (default: automatic, a clock that meets "
                         "timing, searched down from 48 MHz on iCE40, 125 on ECP5)")
    hw.add_argument("--baud", type=int_arg(1200, 12_000_000), default=3_000_000,
                    help="UART baud rate: the ULX3S's FT231X takes up to 3 Mbaud, the "
                         "iCEBreaker's FT2232H 12 Mbaud / n (default: %(default)s)")
    hw.add_argument("--no-replay", dest="replay", action="store_false",
                    help="direct-encoded bundles: the host sends every step, the board does "
                         "not replay the first (default: replay)")
    hw.add_argument("--weights", choices=("rom", "load"), default="rom",
                    help="rom: weights in the bitstream (default); load: memories filled at "
                         "run time over the link (boards run uploads them), in SPRAM on the "
                         "iCEBreaker, so one build runs any bundle of the same shape")
    hw.add_argument("--rate", type=int_arg(1, 8), metavar="BITS",
                    help="rate-coded bundles: the host sends each sample once, as a seed and "
                         "BITS-bit intensities, and the board draws the spikes (default: the "
                         "host sends the spikes)")
    hw.add_argument("--capacity", type=int_arg(1, 65535), metavar="N",
                    help="event buffer, events per sample (default: the largest test sample)")
    b.add_argument("-o", "--output", type=Path, default=Path("build/board"), metavar="DIR",
                   help="build folder (default: %(default)s)")
    b.add_argument("--program", action="store_true", help="program the board after the build")
    b.add_argument("--flash", action="store_true",
                   help="ULX3S: write the SPI flash instead of loading SRAM")
    b.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    b.set_defaults(handler=_cmd_build, subparser=b)

    f = sub.add_parser("fit", help="will a bundle fit a board: resources from a quick "
                                   "synthesis, in seconds, without place and route")
    f.add_argument("--board", choices=sorted(BOARDS), default="icebreaker",
                   help="target board (default: %(default)s)")
    f.add_argument("--variant", choices=BOARDS["ulx3s"].variants, default=None,
                   help="ULX3S FPGA size (default: 85F)")
    f.add_argument("--bundle", type=Path, required=True, metavar="DIR", help="bundle folder")
    f.add_argument("--lanes", type=lanes_arg(1, 16), default=1, metavar="L[,L...]",
                   help="accumulate lanes, as for build (default: %(default)s)")
    f.add_argument("--weights", choices=("rom", "load"), default="rom",
                   help="weights in the bitstream (rom) or loaded at run time (load, in SPRAM "
                        "on the iCEBreaker)")
    f.add_argument("--rate", type=int_arg(1, 8), metavar="BITS",
                   help="rate input drawn on the board from BITS-bit intensities, as for build")
    f.add_argument("--capacity", type=int_arg(1, 65535), metavar="N",
                   help="event buffer, events per sample (default: the largest test sample)")
    f.add_argument("--json", type=Path, metavar="FILE", help="also write the report here")
    f.add_argument("-o", "--output", type=Path, metavar="DIR",
                   help="keep the netlist and logs here (default: a temporary folder)")
    f.set_defaults(handler=_cmd_fit, subparser=f)

    r = sub.add_parser("run", help="run test samples on a board and compare with golden")
    r.add_argument("--port", required=True, metavar="PORT",
                   help="serial port (device path or pyserial URL)")
    r.add_argument("--bundle", type=Path, required=True, metavar="DIR",
                   help="the bundle the bitstream was built from (with vectors.npz)")
    r.add_argument("--baud", type=int_arg(1200, 12_000_000), default=3_000_000,
                   help="UART baud rate (default: %(default)s)")
    r.add_argument("--samples", type=int_arg(1, 10 ** 9), metavar="N",
                   help="run the first N samples (default: all)")
    r.add_argument("--timeout", type=float_arg(0.01, 3600.0), default=5.0, metavar="S",
                   help="seconds to wait for a reply (default: %(default)s)")
    r.add_argument("--seed", type=int_arg(0, 2 ** 32 - 1), default=None, metavar="S",
                   help="boards built with --rate: base seed of the samples' seeds (default: "
                        "1)")
    r.add_argument("--json", type=Path, metavar="FILE", help="write per-sample results here")
    r.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    r.set_defaults(handler=_cmd_run, subparser=r)

    g = sub.add_parser("program", help="load a built bitstream into a board")
    g.add_argument("--board", choices=sorted(BOARDS), default="icebreaker",
                   help="target board (default: %(default)s)")
    g.add_argument("-o", "--output", type=Path, metavar="DIR",
                   help="build folder holding the bitstream (default: build/board)")
    g.add_argument("--bitstream", type=Path, metavar="FILE",
                   help="bitstream file (default: the one in the build folder)")
    g.add_argument("--flash", action="store_true",
                   help="ULX3S: write the SPI flash instead of loading SRAM")
    g.set_defaults(handler=_cmd_program, subparser=g)
    return p


def _load_bundle(path, parser):
    from models.bundle import BundleError, load
    try:
        return load(path)
    except BundleError as exc:
        parser.error(str(exc))


def _random_bundle(args):
    import numpy as np

    from models import golden
    from models.synth import random_events, random_linear_bundle
    n_in = args.inputs or args.neurons
    bundle = random_linear_bundle(n_in=n_in, n_out=args.neurons, sparsity=args.sparsity,
                                  seed=args.seed, steps=args.steps)
    samples = 8
    events = random_events(np.random.default_rng(args.seed), samples=samples, steps=args.steps,
                           n_in=n_in, density=0.1)
    bundle.vectors = golden.make_vectors(bundle, events, samples)
    return bundle


def _bitstream(board_name, folder):
    ext = "bin" if BOARDS[board_name].family == "ice40" else "bit"
    report = folder / "report.json"
    if report.is_file():
        try:
            path = json.loads(report.read_text()).get("bitstream")
            if path:
                return Path(path)
        except (json.JSONDecodeError, OSError):
            pass
    return folder / f"snn_board.{ext}"


def _built_for(folder):
    """The board named in ``folder``'s report.json, or ``None`` (no report, or unreadable)."""
    try:
        return json.loads((folder / "report.json").read_text()).get("board")
    except (json.JSONDecodeError, OSError, AttributeError):
        return None


def _input_options(args, parser, bundle):
    """The accelerator factory, buffer capacity and replay of ``--weights``, ``--rate``,
    ``--capacity`` and ``--no-replay``."""
    from .weights import accelerator_for
    accelerator = accelerator_for(args.weights, args.board)
    replay = None if args.replay else False
    if args.rate is None:
        return accelerator, args.capacity, replay
    from .rate import rate_accelerator, rate_capacity
    if bundle.input.encoding != "rate":
        parser.error(f"--rate needs a rate-coded bundle, not {bundle.input.encoding!r} input")
    if args.weights != "rom":
        parser.error("--rate cannot be combined with --weights load (rate input is built "
                     "with ROM weights)")
    if not args.replay:
        parser.error("--rate cannot be combined with --no-replay (the board replays a "
                     "sample's seed and intensities every step)")
    return (rate_accelerator(accelerator, args.rate),
            args.capacity or rate_capacity(bundle, args.rate), True)


def _cmd_build(args, parser):
    from .build import BuildError, ProgramError, build, program, summary
    if args.variant is not None and args.board != "ulx3s":
        parser.error(f"--variant applies to ulx3s, not {args.board}")
    if args.flash and not args.program:
        parser.error("--flash needs --program")
    if args.flash and args.board != "ulx3s":
        parser.error(f"--flash applies to ulx3s, not {args.board}")
    if args.bundle is not None:
        given = [option for option, value in (("--neurons", args.neurons),
                                              ("--sparsity", args.sparsity),
                                              ("--inputs", args.inputs),
                                              ("--steps", args.steps)) if value is not None]
        if given:
            parser.error(f"--bundle cannot be combined with {', '.join(given)} "
                         f"(options of the random layer)")
        bundle = _load_bundle(args.bundle, parser)
    elif args.neurons is None:
        parser.error("give --bundle DIR or --neurons N (with --sparsity S)")
    else:
        if args.sparsity is None:
            args.sparsity = 0.75
        if args.steps is None:
            args.steps = 16
        bundle = _random_bundle(args)
    check_bundle_options(parser, bundle, lanes=args.lanes)
    accelerator, capacity, replay = _input_options(args, parser, bundle)
    if args.bundle is None:
        from models.bundle import save
        save(bundle, args.output / "bundle")
    log = (lambda *a: None) if args.quiet else (lambda text: print(text, flush=True))
    try:
        report = build(bundle, board_name=args.board, variant=args.variant, lanes=args.lanes,
                       clock_mhz=args.clock, baud=args.baud, capacity=capacity,
                       build_dir=args.output, seed=args.seed, log=log, replay=replay,
                       accelerator=accelerator)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    except BuildError as exc:
        print(f"python -m boards build: error: {exc}", file=sys.stderr)
        return 1
    print(summary(report))
    print(f"report      {args.output / 'report.json'}")
    if not report["timing_met"]:
        hint = ("; ask for a lower --clock, or leave --clock out for the automatic search"
                if args.clock is not None else "")
        print(f"python -m boards build: error: timing not met "
              f"({report['clock_reason']}){hint}", file=sys.stderr)
        return 1
    if args.program:
        try:
            program(report["bitstream"], args.board, flash=args.flash)
        except ProgramError as exc:
            print(f"python -m boards build: error: {exc}", file=sys.stderr)
            return 1
        print(f"programmed  {args.board}")
    return 0


def _cmd_fit(args, parser):
    from .build import BuildError
    from .fit import fit, format_fit
    if args.variant is not None and args.board != "ulx3s":
        parser.error(f"--variant applies to ulx3s, not {args.board}")
    bundle = _load_bundle(args.bundle, parser)
    check_bundle_options(parser, bundle, lanes=args.lanes)
    args.replay = True
    accelerator, capacity, replay = _input_options(args, parser, bundle)
    try:
        report = fit(bundle, board_name=args.board, variant=args.variant, lanes=args.lanes,
                     capacity=capacity, work_dir=args.output, accelerator=accelerator,
                     replay=replay)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    except BuildError as exc:
        print(f"python -m boards fit: error: {exc}", file=sys.stderr)
        return 1
    print(format_fit(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["verdict"] != "does not fit" else 1


def _cmd_run(args, parser):
    from hdl.protocol import FLAG_RATE, FLAG_WEIGHTS, ProtocolError

    from .host import BoardLink, HostError, format_report, open_port, run_samples
    from .rate import DEFAULT_SEED, run_rate_samples
    from .weights import LoadedBoardLink
    bundle = _load_bundle(args.bundle, parser)
    if bundle.vectors is None:
        parser.error(f"{args.bundle}: has no vectors.npz, so there are no test samples to run")
    log = None if args.quiet else (lambda text: print(text, flush=True))
    try:
        port = open_port(str(args.port), baud=args.baud, timeout=args.timeout)
        with port:
            link = BoardLink(port)
            flags = link.info().flags
            if flags & FLAG_WEIGHTS:
                # Weights loaded at run time: upload this bundle's before the samples.
                link = LoadedBoardLink(port, bundle, log=log)
                link.load_weights()
            if flags & FLAG_RATE:
                # The board draws the spikes: send seeds and intensities.
                report = run_rate_samples(link, bundle, samples=args.samples,
                                          seed=DEFAULT_SEED if args.seed is None else args.seed,
                                          log=log)
            elif args.seed is not None:
                raise HostError(f"--seed applies to a board built with --rate, and this one "
                                f"takes spike events (INFO flags 0x{flags:02x})")
            else:
                report = run_samples(link, bundle, samples=args.samples, log=log)
    except (HostError, ProtocolError) as exc:
        print(f"python -m boards run: error: {exc}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if not report.all_equal:
        print("python -m boards run: error: the board disagrees with the golden model",
              file=sys.stderr)
        return 1
    return 0


def _cmd_program(args, parser):
    from .build import ProgramError, program
    if args.flash and args.board != "ulx3s":
        parser.error(f"--flash applies to ulx3s, not {args.board}")
    if args.bitstream is not None and args.output is not None:
        parser.error("--bitstream cannot be combined with -o/--output (give one of them)")
    folder = args.output or Path("build/board")
    built_for = _built_for(folder) if args.bitstream is None else None
    if built_for is not None and built_for != args.board:
        parser.error(f"{folder} holds a {built_for} build, not {args.board} "
                     f"(give --board {built_for})")
    bitstream = args.bitstream or _bitstream(args.board, folder)
    try:
        program(bitstream, args.board, flash=args.flash)
    except ProgramError as exc:
        print(f"python -m boards program: error: {exc}", file=sys.stderr)
        return 1
    print(f"programmed {args.board} with {bitstream}")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args, args.subparser)


if __name__ == "__main__":
    sys.exit(main())
