"""Lanes vs logic cells vs block RAMs vs Fmax vs cycles vs inferences/s on iCEBreaker and ULX3S.

For each lane count the accelerator of a bundle is built for each board (YoWASP, automatic
clock: the fastest PLL clock that meets timing), and the cycles per inference are measured by
running test samples through the host link's Verilog under Icarus (the counter the board itself
reports). Writes ``report.json`` (with its provenance; one row per board and lane count, a
failed build as a row with its ``error``), ``table.md`` and, where matplotlib is installed,
``lanes.png`` into ``OUTPUT/<bundle name>/``, and prints the table.

    python benchmarks/bench_boards.py --bundle models/zoo/digits_mlp --lanes 1 2 4 8

Slow: each lane count is a cosimulation and one FPGA build per board, with a retry at a
lower clock when timing fails (minutes each; tens of minutes for the digits MLP at lanes 1 2 4
8 on both boards). ``--reuse`` runs only what the output folder lacks.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.provenance import PROVENANCE_KEYS, provenance, write_result  # noqa: E402
from boards.build import BuildError, build, default_capacity, failure_message  # noqa: E402
from boards.cosim import cosimulate  # noqa: E402
from boards.top import BOARDS  # noqa: E402
from hdl.link import HostLink  # noqa: E402
from hdl.protocol import EventFormat, bundle_ident, sample_stream  # noqa: E402
from models.bundle import load  # noqa: E402

# What report.json holds (checked before writing and by tests/test_benchmark_results.py when
# a copy sits under benchmarks/results/); bump SCHEMA when the layout changes.
SCHEMA = 1
SOURCES = ("hdl/*.py", "boards/*.py")
ROW_KEYS = {"board", "lanes", "cycles", "error", "logic_cells", "logic_cells_total", "ffs",
            "bram", "bram_total", "dsp", "fmax_mhz", "clock_mhz", "timing_met",
            "inferences_per_s", "link_inferences_per_s", "build_seconds"}
RESULT_KEYS = {
    "": {"provenance", "benchmark", "bundle", "boards", "lanes", "samples", "baud", "rows"},
    "provenance": PROVENANCE_KEYS,
    "rows/*": ROW_KEYS,
}


def measure_cycles(bundle, bundle_dir, lanes, samples, folder):
    """Cycles per inference of ``samples`` test samples, from the host link's own counter."""
    from hdl.top import Accelerator
    link = HostLink(Accelerator(bundle, lanes=lanes), n_in=bundle.input.size,
                    n_out=bundle.n_out, divisor=4, capacity=default_capacity(bundle),
                    timeout=10 ** 6, clock_hz=100_000_000, ident=bundle_ident(bundle))
    result = cosimulate(link, bundle_dir, folder, samples=samples, wall_limit=3600)
    if result["returncode"] != 0 or not result.get("all_equal"):
        raise RuntimeError(f"cosimulation at {lanes} lanes failed:\n{result['output']}")
    return result["cycles"]


def link_bytes(bundle, samples):
    """Mean bytes on the wire per inference (LOAD + RUN frames and their replies)."""
    fmt, v = EventFormat.from_bundle(bundle), bundle.vectors
    sizes = [len(sample_stream(v.events[v.events[:, 0] == s][:, 1:], bundle.input.steps))
             for s in range(min(samples, v.samples))]
    per = [5 + n * fmt.nbytes + 5 + 2 + 5 + 5 + 8 + 2 * bundle.n_out + 5 for n in sizes]
    return sum(per) / len(per)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=REPO / "models/zoo/digits_mlp")
    p.add_argument("--boards", nargs="+", default=["icebreaker", "ulx3s"])
    p.add_argument("--lanes", nargs="+", type=int, default=[1, 2, 4, 8])
    p.add_argument("--samples", type=int, default=8, help="samples for the cycle count")
    p.add_argument("--baud", type=int, default=1_000_000)
    p.add_argument("-o", "--output", type=Path, default=REPO / "build/bench_boards")
    p.add_argument("--aim-ice40", type=float, help="first clock tried on iCE40, MHz")
    p.add_argument("--aim-ecp5", type=float, help="first clock tried on ECP5, MHz")
    p.add_argument("--reuse", action="store_true",
                   help="reuse cycle counts and build reports already in the output folder")
    args = p.parse_args(argv)
    prov = provenance(__file__, SOURCES, schema=SCHEMA, argv=argv)     # before measuring
    bundle = load(args.bundle)
    out = args.output / args.bundle.name
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    wire = link_bytes(bundle, args.samples)
    for lanes in args.lanes:
        start = time.monotonic()
        cache = out / f"cycles_l{lanes}_s{args.samples}.json"
        if args.reuse and cache.exists():
            cycles = json.loads(cache.read_text())
        else:
            cycles = measure_cycles(bundle, args.bundle, lanes, args.samples,
                                    out / f"cosim_l{lanes}")
            cache.write_text(json.dumps(cycles) + "\n")
        mean_cycles = sum(cycles) / len(cycles)
        print(f"lanes {lanes}: {mean_cycles:.0f} cycles per inference "
              f"({time.monotonic() - start:.0f} s)", flush=True)
        for board_name in args.boards:
            row = dict.fromkeys(ROW_KEYS)          # a failed build leaves its figures None
            row.update({"board": board_name, "lanes": lanes, "cycles": mean_cycles})
            folder = out / f"{board_name}_l{lanes}"
            try:
                tim = folder / "snn_board.tim"
                if args.reuse and (folder / "report.json").exists():
                    report = json.loads((folder / "report.json").read_text())
                elif args.reuse and tim.exists() and failure_message(
                        tim.read_text(), BOARDS[board_name].device()):
                    raise BuildError(failure_message(tim.read_text(),
                                                     BOARDS[board_name].device()))
                else:
                    aim = {"icebreaker": args.aim_ice40, "ulx3s": args.aim_ecp5}[board_name]
                    report = build(bundle, board_name=board_name, lanes=lanes, baud=args.baud,
                                   aim_mhz=aim,
                                   build_dir=folder,
                                   log=lambda text: print("  " + text, flush=True))
            except BuildError as exc:
                row["error"] = str(exc)
                print(f"  {board_name} lanes {lanes}: {exc}", flush=True)
                rows.append(row)
                continue
            r = report["resources"]
            row.update({
                "logic_cells": r["logic_cells"], "logic_cells_total": r["logic_cells_total"],
                "ffs": r["ffs"], "bram": r["bram"], "bram_total": r["bram_total"],
                "dsp": r["dsp"], "fmax_mhz": report["fmax_mhz"],
                "clock_mhz": report["clock_mhz"], "timing_met": report["timing_met"],
                "inferences_per_s": report["clock_mhz"] * 1e6 / mean_cycles,
                "link_inferences_per_s": args.baud / 10 / wire,
                "build_seconds": sum(a["build_seconds"] for a in report["attempts"]),
            })
            rows.append(row)
            print(f"  {board_name} lanes {lanes}: {r['logic_cells']} LC, {r['bram']} BRAM, "
                  f"Fmax {report['fmax_mhz']} MHz, clock {report['clock_mhz']:.2f} MHz, "
                  f"{row['inferences_per_s']:.0f} inf/s", flush=True)
            write_report(out / "report.json", rows, args, prov)     # keep what is done so far
    table = format_table(rows, bundle, args)
    (out / "table.md").write_text(table + "\n")
    write_report(out / "report.json", rows, args, prov)
    print(table)
    plot(rows, out / "lanes.png")
    return 0


def write_report(path, rows, args, prov):
    """Write ``report.json``: the rows so far, the run's settings and its provenance."""
    write_result(path, {"benchmark": "boards", "bundle": args.bundle.name,
                        "boards": list(args.boards), "lanes": list(args.lanes),
                        "samples": args.samples, "baud": args.baud, "rows": rows},
                 provenance=prov, result_keys=RESULT_KEYS)


def format_table(rows, bundle, args):
    head = ("| board | lanes | logic cells | FF | block RAM | DSP | Fmax (MHz) | clock (MHz) "
            "| timing | cycles/inference | inferences/s (accelerator) |")
    lines = [f"{args.bundle.name}: {[layer.kind for layer in bundle.layers]}, "
             f"{bundle.input.steps} steps, mean of {args.samples} test samples", "",
             head, "|" + " --- |" * (head.count("|") - 1)]
    for row in rows:
        if row["error"] is not None:
            lines.append(f"| {row['board']} | {row['lanes']} | {row['error']} | | | | | | | "
                         f"{row['cycles']:.0f} | |")
            continue
        lines.append(
            f"| {row['board']} | {row['lanes']} | {row['logic_cells']} / "
            f"{row['logic_cells_total']} | {row['ffs']} | {row['bram']} / {row['bram_total']} "
            f"| {row['dsp']} | {row['fmax_mhz']:.1f} | {row['clock_mhz']:.2f} | "
            f"{'met' if row['timing_met'] else 'MISSED'} | {row['cycles']:.0f} | "
            f"{row['inferences_per_s']:.0f} |")
    link = next((r["link_inferences_per_s"] for r in rows
                 if r["link_inferences_per_s"] is not None), None)
    if link:
        lines += ["", f"The {args.baud} baud host link carries at most {link:.0f} inferences/s "
                      f"of this network (events in, counts out)."]
    return "\n".join(lines)


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for board_name in sorted({r["board"] for r in rows}):
        good = [r for r in rows if r["board"] == board_name and r["error"] is None]
        if not good:
            continue
        lanes = [r["lanes"] for r in good]
        axes[0].plot(lanes, [r["logic_cells"] for r in good], "o-", label=board_name)
        axes[1].plot(lanes, [r["fmax_mhz"] for r in good], "o-", label=board_name)
        axes[2].plot(lanes, [r["inferences_per_s"] for r in good], "o-", label=board_name)
    for ax, title in zip(axes, ("logic cells", "Fmax (MHz)", "inferences/s")):
        ax.set_xlabel("lanes")
        ax.set_title(title)
        ax.set_xscale("log", base=2)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
