"""``python -m models train|export|eval|sweep``: the snnTorch side from the command line.

* ``train``: train and prune a network (``--dataset digits|mnist|fashion``, default digits),
  write a checkpoint and its metrics;
* ``export``: quantize a checkpoint into a bundle folder with test vectors and fidelity metrics;
* ``eval``: run a bundle's vectors through the golden model (numpy only, no torch);
* ``sweep``: train over a beta x threshold grid and plot accuracy and spikes per inference;
* ``dse``: co-design exploration: a grid of model and hardware parameters on Dask, with the
  cycle model, cosimulation and ``boards fit`` in the loop (:mod:`models.dse`, docs/codesign.md);
* ``zoo``: retrain and re-export the committed bundles of ``models/zoo``.

Bad options and malformed inputs end with one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]

# The choices, spelled here so that parsing (and ``eval``) imports neither torch nor snnTorch;
# tests check them against models.nets and models.encoders.
ARCHS = ("mlp", "csnn")
SURROGATES = ("fast_sigmoid", "atan")
ENCODINGS = ("rate", "delta", "direct", "latency")
DATASETS = ("digits", "mnist", "fashion")

#: Defaults of the options that only some commands or settings use: parsed as ``None`` so that
#: one given where it would do nothing is refused rather than ignored.
OPTION_DEFAULTS = {"neuron": "lif", "beta": 0.9, "threshold": 1.0, "hidden": [128],
                   "channels": [8, 16], "direct_bits": 4, "delta_threshold": 0.25,
                   "frac_bits": 8, "qat_bits": 8}

#: The trained bundles under models/zoo: ``train`` options of each (export: 8-bit weights,
#: the whole 360-sample test split). ``python -m models zoo`` rebuilds them.
ZOO = {
    "digits_mlp": ["--arch", "mlp", "--neuron", "lif"],
    "digits_csnn": ["--arch", "csnn", "--neuron", "lif", "--prune-epochs", "20",
                    "--prune-scope", "global"],
    "digits_mlp_lapicque": ["--arch", "mlp", "--neuron", "lapicque"],
    "digits_csnn_lapicque": ["--arch", "csnn", "--neuron", "lapicque", "--prune-epochs", "20",
                             "--prune-scope", "global"],
    # MNIST and Fashion-MNIST: 28x28, direct 4-bit input (the board replays it, one frame per
    # sample), each trained in under 20 minutes of CPU on the 2-core machine.
    # Random shifts of up to 2 pixels; the output layer pruned less (0.55) and the first a
    # little more (0.76), 0.757 in all (docs/datasets.md).
    "mnist_mlp": ["--dataset", "mnist", "--arch", "mlp", "--encoding", "direct", "--steps", "6",
                  "--slope", "1", "--epochs", "40", "--prune-epochs", "30", "--lr", "0.003",
                  "--augment-shift", "2", "--sparsity", "0.76", "--layer-sparsity", "fc2=0.55"],
    # The CSNNs: a hidden linear layer before the output, and quantization-aware pruning
    # epochs: the float network computes with the export's 8-bit weights (docs/datasets.md).
    "mnist_csnn": ["--dataset", "mnist", "--arch", "csnn", "--channels", "16,32",
                   "--fc-hidden", "128", "--encoding", "direct", "--steps", "4", "--slope",
                   "2", "--epochs", "2", "--prune-epochs", "4", "--prune-scope", "global",
                   "--lr", "0.005", "--qat-epochs", "2"],
    "fashion_csnn": ["--dataset", "fashion", "--arch", "csnn", "--channels", "16,32",
                     "--fc-hidden", "128", "--encoding", "direct", "--steps", "4", "--slope",
                     "2", "--epochs", "2", "--prune-epochs", "4", "--prune-scope", "global",
                     "--lr", "0.005", "--qat-epochs", "2"],
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _floats(text):
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated numbers, not {text!r}") from None


def _ints(text):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers, not {text!r}") from None


def _layer_sparsity(text):
    pairs = []
    for item in text.split(","):
        name, eq, value = item.strip().partition("=")
        try:
            pairs.append((name.strip(), float(value)))
        except ValueError:
            eq = ""
        if not eq or not name.strip():
            raise argparse.ArgumentTypeError(
                f"must be LAYER=SPARSITY pairs separated by commas, not {text!r}")
    return tuple(pairs)


def _add_net_options(p):
    from .bundle import MODELS as NEURONS
    from .bundle import RESETS
    g = p.add_argument_group("network")
    g.add_argument("--arch", choices=ARCHS, default="mlp",
                   help="mlp: INPUTS-HIDDEN-10; csnn: conv-pool-conv-pool-linear "
                        "(default: %(default)s)")
    g.add_argument("--neuron", choices=NEURONS,
                   help=f"snn.Leaky (lif) or snn.Lapicque (default: {OPTION_DEFAULTS['neuron']})")
    g.add_argument("--beta", type=float, metavar="BETA",
                   help="membrane decay (lapicque: R=1, C=1/ln(1/BETA)) "
                        f"(default: {OPTION_DEFAULTS['beta']})")
    g.add_argument("--threshold", type=float, metavar="THETA",
                   help=f"firing threshold (default: {OPTION_DEFAULTS['threshold']})")
    g.add_argument("--reset", choices=RESETS, default="subtract",
                   help="reset mechanism (default: %(default)s)")
    g.add_argument("--surrogate", choices=SURROGATES, default="fast_sigmoid",
                   help="surrogate gradient (default: %(default)s)")
    g.add_argument("--slope", type=float, default=25.0, metavar="K",
                   help="fast sigmoid slope or arctan alpha (default: %(default)s)")
    g.add_argument("--hidden", type=_ints, metavar="N[,N...]",
                   help="mlp hidden widths (default: 128)")
    g.add_argument("--channels", type=_ints, metavar="C[,C...]",
                   help="csnn conv channels (default: 8,16)")
    g.add_argument("--fc-hidden", type=_ints, metavar="N[,N...]",
                   help="csnn: widths of hidden linear layers before the output "
                        "(default: none)")
    g.add_argument("--no-bias", dest="bias", action="store_false",
                   help="synapses without bias")


def _add_train_options(p, *, epochs=20, prune_epochs=10, sparsity=0.75):
    from .bundle import LEAKS as LEAK_MODES
    g = p.add_argument_group("training")
    g.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="digits: scikit-learn 8x8; mnist, fashion: 28x28, official splits, "
                        "from installed packages (docs/datasets.md) (default: %(default)s)")
    g.add_argument("--encoding", choices=ENCODINGS, default="rate",
                   help="input encoder (default: %(default)s)")
    g.add_argument("--steps", type=int, default=25, metavar="T",
                   help="timesteps per sample (default: %(default)s)")
    g.add_argument("--direct-bits", type=int, metavar="BITS",
                   help="event value bits of direct encoding "
                        f"(default: {OPTION_DEFAULTS['direct_bits']})")
    g.add_argument("--delta-threshold", type=float, metavar="D",
                   help="intensity change that makes a delta event "
                        f"(default: {OPTION_DEFAULTS['delta_threshold']})")
    g.add_argument("--epochs", type=int, default=epochs, metavar="N",
                   help="dense training epochs (default: %(default)s)")
    g.add_argument("--prune-epochs", type=int, default=prune_epochs, metavar="N",
                   help="pruning and fine-tuning epochs (default: %(default)s)")
    g.add_argument("--sparsity", type=float, default=sparsity, metavar="S",
                   help="target weight sparsity per layer (default: %(default)s)")
    g.add_argument("--prune-scope", choices=("layer", "global"), default="layer",
                   help="sparsity per layer, or of all weights ranked together "
                        "(default: %(default)s)")
    g.add_argument("--layer-sparsity", type=_layer_sparsity, default=(),
                   metavar="LAYER=S[,LAYER=S...]",
                   help="give the named synapse layers their own sparsity instead of "
                        "--sparsity, e.g. fc2=0.5 (prune scope layer) (default: none)")
    g.add_argument("--train-samples", type=int, default=0, metavar="N",
                   help="train on the first N samples of the training split, 0 for all "
                        "(default: %(default)s)")
    g.add_argument("--loss", choices=("mse_count", "ce_count"), default="mse_count",
                   help="spike counts towards 80 %% / 10 %% of the steps (mse_count), or their "
                        "cross-entropy (ce_count) (default: %(default)s)")
    g.add_argument("--batch", type=int, default=64, metavar="N",
                   help="batch size (default: %(default)s)")
    g.add_argument("--lr", type=float, default=5e-3, metavar="LR",
                   help="Adam learning rate (default: %(default)s)")
    g.add_argument("--leak", choices=LEAK_MODES, default="mul",
                   help="integer leak the float decay is snapped to (default: %(default)s)")
    g.add_argument("--frac-bits", type=int, metavar="F",
                   help=f"fraction bits of the mul leak (default: {OPTION_DEFAULTS['frac_bits']})")
    g.add_argument("--potential-bits", type=int, default=16, metavar="P",
                   help="membrane potential width (default: %(default)s)")
    g.add_argument("--qat-epochs", type=int, default=0, metavar="N",
                   help="quantization-aware training: the last N epochs compute with the "
                        "weights rounded to the export's grid, kept rounded (default: "
                        "%(default)s)")
    g.add_argument("--qat-bits", type=int, metavar="BITS",
                   help="weight bits of that grid, as export's --weight-bits "
                        f"(default: {OPTION_DEFAULTS['qat_bits']})")
    g.add_argument("--augment-shift", type=int, default=0, metavar="PIXELS",
                   help="move each training image by a random offset of up to PIXELS per axis, "
                        "drawn anew every epoch (default: %(default)s, none)")
    g.add_argument("--seed", type=int, default=0, metavar="SEED",
                   help="seed of weights, shuffling and training encodings (default: %(default)s)")
    g.add_argument("--threads", type=int, default=1, metavar="N",
                   help="torch CPU threads (default: %(default)s)")


def _resolve_options(args, parser):
    """Refuse options this command would ignore (one line, exit 2); fill in the defaults."""
    def given(dest):
        return getattr(args, dest, None) is not None

    def refuse(dest, why):
        parser.error(f"--{dest.replace('_', '-')} {why}")

    if args.command in ("sweep", "dse"):
        for dest, plural in (("neuron", "--neurons"), ("beta", "--betas"),
                             ("threshold", "--thresholds")):
            if given(dest):
                refuse(dest, f"is swept in a {args.command}: give {plural} instead")
    if args.arch == "csnn" and given("hidden"):
        refuse("hidden", "sets the mlp's widths, not the csnn's (use --channels)")
    if args.arch == "mlp" and given("fc_hidden"):
        refuse("fc_hidden", "adds linear layers to the csnn; the mlp's are --hidden")
    if args.arch == "mlp" and given("channels"):
        refuse("channels", "sets the csnn's convolutions, not the mlp's (use --hidden)")
    if args.encoding != "direct" and given("direct_bits"):
        refuse("direct_bits", f"applies to --encoding direct, not {args.encoding}")
    if args.encoding != "delta" and given("delta_threshold"):
        refuse("delta_threshold", f"applies to --encoding delta, not {args.encoding}")
    if args.leak != "mul" and given("frac_bits"):
        refuse("frac_bits", f"applies to --leak mul, not {args.leak}")
    if not getattr(args, "qat_epochs", 0) and given("qat_bits"):
        refuse("qat_bits", "applies with --qat-epochs, not without")
    for dest, value in OPTION_DEFAULTS.items():
        if hasattr(args, dest) and getattr(args, dest) is None:
            setattr(args, dest, value)


def _configs(args):
    from dataclasses import replace

    from .data import DATASET_INFO, TrainConfig
    from .encoders import input_gain
    from .nets import NetConfig, check_config
    ncfg = check_config(NetConfig(arch=args.arch,
                                  in_shape=DATASET_INFO[args.dataset]["shape"],
                                  hidden=tuple(args.hidden),
                                  channels=tuple(args.channels),
                                  fc_hidden=tuple(getattr(args, "fc_hidden", None) or ()),
                                  neuron=args.neuron,
                                  beta=args.beta, threshold=args.threshold, reset=args.reset,
                                  surrogate=args.surrogate, slope=args.slope, bias=args.bias))
    tcfg = TrainConfig(dataset=args.dataset, encoding=args.encoding, steps=args.steps,
                       direct_bits=args.direct_bits,
                       delta_threshold=args.delta_threshold, epochs=args.epochs,
                       prune_epochs=args.prune_epochs, batch=args.batch, lr=args.lr,
                       sparsity=args.sparsity, prune_scope=args.prune_scope,
                       leak=args.leak, frac_bits=args.frac_bits,
                       potential_bits=args.potential_bits, seed=args.seed,
                       threads=args.threads, train_samples=args.train_samples,
                       loss=args.loss, qat_epochs=args.qat_epochs,
                       qat_bits=args.qat_bits, augment_shift=args.augment_shift,
                       layer_sparsity=args.layer_sparsity).check()
    ncfg = replace(ncfg, input_gain=input_gain(tcfg.encoding, tcfg.direct_bits))
    return ncfg, tcfg


def _progress(line):
    print(line, file=sys.stderr, flush=True)


def _summary(prefix, metrics):
    layers = ", ".join(f"{name} {value:.1f}" for name, value in metrics.items())
    return f"{prefix}: {layers}"


def _train(args):
    from .data import save_checkpoint
    from .train import train
    ncfg, tcfg = _configs(args)
    data = "" if args.dataset == "digits" else f"{args.dataset}_"
    out = Path(args.output or f"runs/{data}{ncfg.arch}_{ncfg.neuron}.pt")
    net, metrics = train(ncfg, tcfg, progress=_progress)
    save_checkpoint(out, net, tcfg, metrics)
    mpath = out.with_suffix(".json")
    from .export import write_metrics
    write_metrics(mpath, metrics)
    print(f"dense accuracy {100 * metrics['dense_accuracy']:.2f}%, "
          f"pruned float accuracy {100 * metrics['float_accuracy']:.2f}%, "
          f"train time {metrics['train_seconds']:.1f} s "
          f"({metrics['train_cpu_seconds']:.1f} s CPU)")
    print(_summary("spikes per inference", metrics["spikes_per_inference"]))
    print(f"wrote {out} and {mpath}")
    return 0


def _export(args):
    from .export import export_checkpoint
    if args.dataset is not None:
        from .data import load_checkpoint
        _, tcfg, _ = load_checkpoint(args.checkpoint)
        if tcfg.dataset != args.dataset:
            raise ValueError(f"{args.checkpoint}: was trained on {tcfg.dataset}, not "
                             f"{args.dataset} (export uses the checkpoint's data set)")
    _, metrics = export_checkpoint(args.checkpoint, args.output,
                                   weight_bits=args.weight_bits,
                                   potential_bits=args.potential_bits,
                                   samples=args.samples, progress=_progress)
    print(f"float accuracy {100 * metrics['float_accuracy']:.2f}%, golden accuracy "
          f"{100 * metrics['golden_accuracy']:.2f}% (drop {metrics['accuracy_drop_points']:.2f} "
          f"points), agreement {100 * metrics['agreement']:.2f}% on {metrics['samples']} samples")
    print(_summary("golden spikes per inference", metrics["spikes_per_inference"]["golden"]))
    print(f"wrote {args.output}")
    return 0


def _eval(args):
    from .bundle import load
    from .export import golden_report
    bundle = load(args.bundle)
    if args.board_rate is not None:
        from .onboard import board_rate_report
        r = board_rate_report(bundle, args.board_rate, args.bits)
        print(f"{r['samples']} samples x {r['steps']} steps, spikes drawn on the board "
              f"({r['bits']}-bit intensities, base seed {r['seed']}): golden accuracy "
              f"{100 * r['accuracy']:.2f}% (exported spikes: {100 * r['exported_accuracy']:.2f}"
              f"%), same class as the exported spikes for "
              f"{100 * r['agreement_with_exported']:.2f}%")
        print(f"input spikes per inference {r['input_events_per_inference']:.1f} (exported "
              f"{r['exported_input_events_per_inference']:.1f}); on the link "
              f"{r['intensity_bytes_per_sample']} bytes per sample as intensities and seed, "
              f"{r['event_bytes_per_sample']:.1f} as events")
        if args.json:
            print(json.dumps(r, sort_keys=True))
        return 0
    report, _ = golden_report(bundle)
    acc = report.get("accuracy")
    print(f"{report['samples']} samples x {report['steps']} steps"
          + (f", golden accuracy {100 * acc:.2f}%" if acc is not None else "")
          + f", vectors {'match' if report['vectors_match'] else 'DIFFER from'} the golden model")
    print(_summary("spikes per inference", report["spikes_per_inference"])
          + f"; input events {report['input_events_per_inference']:.1f}")
    if args.json:
        out = {k: v for k, v in report.items() if k != "predictions"}
        print(json.dumps(out, sort_keys=True))
    return 0 if report["vectors_match"] else 1


def _sweep(args):
    from .sweep import run_sweep
    ncfg, tcfg = _configs(args)
    run_sweep(ncfg, tcfg, neurons=args.neurons, betas=args.betas, thresholds=args.thresholds,
              out=Path(args.output), plot=args.plot, weight_bits=args.weight_bits,
              progress=_progress)
    return 0


def _dse(args):
    from .dse import model_grid, paper_grid, run_dse
    from .nets import check_config
    ncfg, tcfg = _configs(args)
    for name, values, choices in (("neurons", args.neurons, ("lif", "lapicque")),
                                  ("encodings", args.encodings or [], ENCODINGS),
                                  ("surrogates", args.surrogates or [], SURROGATES),
                                  ("formats", args.formats, ("auto", "csr", "bitmap", "dense"))):
        bad = [v for v in values if v not in choices]
        if bad:
            raise ValueError(f"--{name}: {bad[0]!r} is not one of {', '.join(choices)}")
    if args.study == "paper":
        given = [f"--{name}" for name in ("encodings", "surrogates", "slopes", "sparsities")
                 if getattr(args, name)]
        if given:
            raise ValueError(f"--study paper sets the encodings and surrogates itself; drop "
                             f"{', '.join(given)}")
        grid = paper_grid(ncfg, tcfg, neurons=args.neurons, betas=args.betas,
                          thresholds=args.thresholds, weight_bits=args.weight_bits)
    else:
        grid = model_grid(ncfg, tcfg, neurons=args.neurons, betas=args.betas,
                          thresholds=args.thresholds,
                          encodings=args.encodings or [tcfg.encoding],
                          surrogates=args.surrogates or [ncfg.surrogate],
                          slopes=args.slopes or [ncfg.slope],
                          sparsities=args.sparsities or [tcfg.sparsity],
                          weight_bits=args.weight_bits)
    if not grid:
        raise ValueError("The grid is empty (Lapicque needs beta of at least 1/e)")
    for n, t, _ in grid:
        check_config(n)
        t.check()
    hardware = [{"lanes": lanes if len(lanes) > 1 else lanes[0],
                 "fmt": None if fmt == "auto" else fmt, "updates": updates,
                 "balance": bool(args.balance)}
                for lanes in args.lanes for fmt in args.formats for updates in args.updates]
    result = run_dse(grid, hardware=hardware, out=Path(args.output),
                     test_samples=args.test_samples, clock_mhz=args.clock, board=args.board,
                     measure=args.measure, cosim_samples=args.cosim_samples, sim=args.sim,
                     fit=not args.no_fit, scheduler=args.scheduler, workers=args.workers,
                     progress=_progress)
    summary = result["summary"]
    err = summary["model_error_abs_median"]
    print(f"{result['points']} model points x {len(result['hardware'])} hardware "
          f"configurations, {len(result['rows'])} rows, in {result['wall_seconds'] / 60:.1f} min"
          + (f"; cycle model error median {100 * err:.2f} %, max "
             f"{100 * summary['model_error_abs_max']:.2f} %" if err is not None else ""))
    print(f"wrote {Path(args.output) / 'dse.json'}, tables.md and plots")
    if result["failures"]:
        first = result["failures"][0]
        print(f"{len(result['failures'])} model points failed (rerun to retry them); first: "
              f"{first['error']}", file=sys.stderr)
        return 1
    return 0


def _zoo(args):
    names = args.names or list(ZOO)
    for name in names:
        if name not in ZOO:
            raise ValueError(f"Zoo bundle must be one of {', '.join(ZOO)}, not {name!r}")
    for name in names:
        ckpt = Path(args.runs) / f"{name}.pt"
        _progress(f"== {name}: python -m models train {' '.join(ZOO[name])} -o {ckpt}")
        status = main(["train", *ZOO[name], "-o", str(ckpt)])
        if status == 0:
            status = main(["export", str(ckpt), "-o", str(Path(args.output) / name)])
        if status != 0:
            return status
    return 0


def _parser():
    parser = _Parser(prog="python -m models",
                     description="Train, prune, quantize and export spiking networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train and prune a network (default: on the 8x8 digits)")
    _add_net_options(p)
    _add_train_options(p)
    p.add_argument("-o", "--output", metavar="CHECKPOINT",
                   help="checkpoint to write; metrics go beside it as .json "
                        "(default: runs/ARCH_NEURON.pt)")
    p.set_defaults(run=_train, subparser=p)

    p = sub.add_parser("export", help="quantize a checkpoint into a bundle with vectors")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint written by train")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="bundle folder to write")
    p.add_argument("--weight-bits", type=int, default=8, metavar="BITS",
                   help="signed weight width (default: %(default)s)")
    p.add_argument("--potential-bits", type=int, default=None, metavar="P",
                   help="membrane potential width (default: the checkpoint's)")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="test samples in vectors.npz (default: all 360 digits; the first 2000 "
                        "of mnist and fashion)")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="check that the checkpoint was trained on this data set (default: "
                        "the checkpoint's, which export always uses)")
    p.set_defaults(run=_export)

    p = sub.add_parser("eval", help="run a bundle's vectors through the golden model")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder with vectors.npz")
    p.add_argument("--json", action="store_true", help="also print the figures as JSON")
    p.add_argument("--board-rate", type=int, default=None, metavar="SEED",
                   help="rate-coded bundles: draw the test samples' spikes as the on-board "
                        "generator would from this base seed (models/onboard.py) and report "
                        "the golden accuracy with them")
    p.add_argument("--bits", type=int, default=4, metavar="BITS",
                   help="intensity bits for --board-rate (default: %(default)s)")
    p.set_defaults(run=_eval)

    p = sub.add_parser("sweep", help="beta x threshold sweep: accuracy and spikes, plotted")
    _add_net_options(p)
    _add_train_options(p, epochs=6, prune_epochs=0, sparsity=0.0)
    p.add_argument("--neurons", type=lambda s: s.split(","), default=["lif", "lapicque"],
                   metavar="M[,M]", help="neuron models to sweep (default: lif,lapicque)")
    p.add_argument("--betas", type=_floats, default=[0.5, 0.7, 0.8, 0.9, 0.95],
                   metavar="B[,B...]", help="decay values (default: 0.5,0.7,0.8,0.9,0.95)")
    p.add_argument("--thresholds", type=_floats, default=[0.5, 1.0, 2.0, 4.0],
                   metavar="T[,T...]", help="thresholds (default: 0.5,1,2,4)")
    p.add_argument("--weight-bits", type=int, default=8, metavar="BITS",
                   help="weight width of the golden model at every point (default: %(default)s)")
    p.add_argument("-o", "--output", metavar="DIR", default="runs/sweep",
                   help="folder for sweep.json and sweep.png (default: %(default)s)")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="also write the plot here (e.g. docs/sweep.png)")
    p.set_defaults(run=_sweep, subparser=p)

    from gen.cli import float_arg, int_arg
    p = sub.add_parser("dse", help="co-design exploration of model and hardware parameters "
                                   "on Dask (docs/codesign.md)")
    _add_net_options(p)
    _add_train_options(p, epochs=4, prune_epochs=2, sparsity=0.5)
    m = p.add_argument_group("model grid (each defaults to the single option above)")
    m.add_argument("--study", choices=("grid", "paper"), default="grid",
                   help="grid: the product of the options below; paper: the seed paper's "
                        "three experiments in one run: the --betas x --thresholds heat maps "
                        "(at --encoding, --surrogate), every encoding x neuron model (Table I) "
                        "and fast_sigmoid vs atan (each at its snnTorch slope) at the middle "
                        "of --betas and of --thresholds (default: grid)")
    m.add_argument("--neurons", type=lambda s: s.split(","), default=["lif", "lapicque"],
                   metavar="M[,M]", help="neuron models (default: lif,lapicque)")
    m.add_argument("--betas", type=_floats, default=[0.5, 0.9], metavar="B[,B...]",
                   help="decay values (default: 0.5,0.9)")
    m.add_argument("--thresholds", type=_floats, default=[0.5, 2.0], metavar="T[,T...]",
                   help="thresholds (default: 0.5,2)")
    m.add_argument("--encodings", type=lambda s: s.split(","), default=None, metavar="E[,E]",
                   help="input encodings (default: --encoding)")
    m.add_argument("--surrogates", type=lambda s: s.split(","), default=None, metavar="S[,S]",
                   help="surrogate gradients (default: --surrogate)")
    m.add_argument("--slopes", type=_floats, default=None, metavar="K[,K]",
                   help="surrogate slopes (default: --slope)")
    m.add_argument("--sparsities", type=_floats, default=None, metavar="S[,S]",
                   help="weight sparsities (default: --sparsity)")
    m.add_argument("--weight-bits", type=_ints, default=[8], metavar="B[,B]",
                   help="weight widths (default: 8)")
    m.add_argument("--test-samples", type=int_arg(1, 10 ** 7), default=None, metavar="N",
                   help="test samples of the golden figures (default: export's: all 360 "
                        "digits, the first 2000 of mnist and fashion)")
    h = p.add_argument_group("hardware grid")
    h.add_argument("--lanes", type=_ints, nargs="+", default=[[1], [2]], metavar="L[,L...]",
                   help="lane configurations: a number for every layer or one per neuron "
                        "layer (default: 1 2)")
    h.add_argument("--formats", type=lambda s: s.split(","), default=["auto"],
                   metavar="F[,F]", help="weight formats of linear layers (default: auto)")
    h.add_argument("--updates", type=_ints, default=[1], metavar="U[,U]",
                   help="neuron updates per cycle, as a multiple of the lanes (default: 1)")
    h.add_argument("--balance", action="store_true",
                   help="also size lanes per layer to each layer's work at the throughput of "
                        "every uniform lane count above 1 (the co-design comparison)")
    h.add_argument("--clock", type=float_arg(0.001, 10000.0), default=45.0, metavar="MHZ",
                   help="clock of the inferences/s figures (default: %(default)s, the UP5K's)")
    h.add_argument("--board", choices=("icebreaker", "ulx3s"), default="icebreaker",
                   help="board of the logic cell figures (default: %(default)s)")
    h.add_argument("--measure", type=int_arg(0, 10 ** 6), default=2, metavar="N",
                   help="(model, hardware) rows measured in cosimulation and boards fit, "
                        "spread over the table (default: %(default)s)")
    h.add_argument("--cosim-samples", type=int_arg(2, 10 ** 6), default=3, metavar="N",
                   help="test samples per measured row: the cycles per inference are the "
                        "intervals between their closes, from the second on "
                        "(default: %(default)s)")
    h.add_argument("--sim", choices=("icarus", "verilator"), default="icarus",
                   help="simulator of the measured rows (default: %(default)s)")
    h.add_argument("--no-fit", action="store_true", help="skip boards fit on measured rows")
    r = p.add_argument_group("running")
    r.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a running Dask scheduler (tcp://HOST:8786); default: a local cluster")
    r.add_argument("--workers", type=int_arg(1, 256), default=2, metavar="N",
                   help="workers of the local cluster (default: %(default)s)")
    p.add_argument("-o", "--output", metavar="DIR", default="runs/dse",
                   help="folder of dse.json, tables.md, plots and the cache "
                        "(default: %(default)s)")
    p.set_defaults(run=_dse, subparser=p)

    p = sub.add_parser("zoo", help="retrain and re-export the bundles of models/zoo")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"bundles to rebuild (default: all of {', '.join(ZOO)})")
    p.add_argument("-o", "--output", metavar="DIR", default="models/zoo",
                   help="folder of the bundles (default: %(default)s)")
    p.add_argument("--runs", metavar="DIR", default="runs/zoo",
                   help="folder of the checkpoints (default: %(default)s)")
    p.set_defaults(run=_zoo)
    # Listed here, parsed by models.nir (main hands them over before parsing).
    for name, text in NIR_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


# NIR graphs in and out (models.nir, numpy and the nir package only).
NIR_COMMANDS = {"nir-import": "quantize a NIR graph into a bundle (see docs/nir.md)",
                "nir-export": "write a bundle as a NIR graph"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in NIR_COMMANDS:
        from .nir import main as nir_main
        return nir_main(argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("train", "sweep", "dse"):
        _resolve_options(args, args.subparser)
    from .bundle import BundleError
    try:
        return args.run(args)
    except (ValueError, TypeError, BundleError) as exc:
        # CheckpointError and BundleError are ValueErrors; keep the message on one line.
        message = " ".join(str(exc).split())
        parser.exit(2, f"{parser.prog} {args.command}: error: {message}\n")
