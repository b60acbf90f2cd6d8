"""Lanes vs logic cells vs block RAMs vs Fmax vs cycles vs inferences/s on iCEBreaker and ULX3S.

For each lane count the accelerator of a bundle is built for each board (YoWASP, automatic
clock: the fastest PLL clock that meets timing), and the cycles per inference are measured by
running test samples through the host link's Verilog under Icarus (the counter the board itself
reports). Writes ``<bundle>.json`` (with its provenance; one row per board and lane count, a
build that does not fit or fails as a row with its ``error``; the logic cells each added lane
costs per board), ``<bundle>.md`` and, where matplotlib is installed, ``<bundle>.png`` into
``--results`` (default ``benchmarks/results/boards/``), and prints the table. The build and
cosimulation folders go to ``OUTPUT/<bundle name>/``.

    python benchmarks/bench_boards.py --bundle models/zoo/digits_mlp --lanes 1 2 4 8

Slow: each lane count is a cosimulation and one FPGA build per board, with retries at lower
clocks when timing fails (minutes each). The builds and cosimulations run in parallel on Dask's
local scheduler (``--jobs``, default: one per core). ``--reuse`` runs only what the output
folder lacks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.provenance import (  # noqa: E402
    PROVENANCE_KEYS, bundle_inputs, plan_sha256, provenance, rtlil_sha256, write_result,
)
from boards.build import BuildError, build, default_capacity  # noqa: E402
from boards.cosim import cosimulate  # noqa: E402
from gen.cli import lanes_arg  # noqa: E402
from hdl.link import HostLink  # noqa: E402
from hdl.protocol import EventFormat, bundle_ident, sample_stream  # noqa: E402
from models.bundle import load  # noqa: E402

# What the JSON holds (checked before writing and by tests/test_benchmark_results.py);
# bump SCHEMA when the layout changes.
SCHEMA = 3
# What builds and cosimulates the designs (not the CLI or the host driver), and what the designs
# are generated from (each design's RTLIL is fingerprinted: see designs()).
SOURCES = ("boards/build.py", "boards/cosim.py")
GATEWARE = ("hdl/*.py", "boards/top.py", "boards/pll.py")
ROW_KEYS = {"board", "lanes", "cycles", "error", "logic_cells", "logic_cells_total", "ffs",
            "bram", "bram_total", "dsp", "fmax_mhz", "clock_mhz", "timing_met",
            "inferences_per_s", "link_inferences_per_s", "build_seconds", "attempts"}
RESULT_KEYS = {
    "": {"provenance", "benchmark", "bundle", "boards", "lanes", "samples", "baud", "rows",
         "lane_cost"},
    "provenance": PROVENANCE_KEYS,
    "rows/*": ROW_KEYS,
}


def cycles_link(bundle, lanes):
    """The host link :func:`measure_cycles` cosimulates: LOAD and RUN (no BATCH, no replay),
    so its buffer holds every step of a sample, direct-encoded ones too."""
    from hdl.top import Accelerator
    return HostLink(Accelerator(bundle, lanes=lanes), n_in=bundle.input.size,
                    n_out=bundle.n_out, divisor=4,
                    capacity=default_capacity(bundle, replay=False),
                    timeout=10 ** 6, clock_hz=100_000_000, ident=bundle_ident(bundle))


def board_top(bundle, board_name, lanes, clock_hz, baud):
    """``(platform, top, clock_hz)`` of a board build at ``clock_hz``, as
    ``boards.build.build`` makes them (default variant; the default buffer capacity and replay
    for the bundle); the clock is the one the board makes for ``clock_hz``."""
    from boards.build import clock_for, host_link
    from boards.top import BoardTop, board
    from hdl.top import Accelerator
    b = board(board_name)
    pll, clock_hz, divisor = clock_for(b, clock_hz, baud)
    link = host_link(bundle, Accelerator(bundle, lanes=lanes), divisor=divisor,
                     capacity=default_capacity(bundle), clock_hz=clock_hz)
    return b.platform(None), BoardTop(link, clock_hz=clock_hz, pll=pll), clock_hz


# The data a result measured (its provenance's ``inputs``): the command's --bundle.
inputs = bundle_inputs


def designs(result):
    """The designs a result measured, ``{label: callable returning its fingerprint}``.

    Per lane count, the host link :func:`measure_cycles` cosimulated (``cosim lanes L``: its
    RTLIL); per row, the board top that was built (``<board> lanes L at F MHz``: the RTLIL and
    constraints of its build plan, :func:`benchmarks.provenance.plan_sha256`) at the clock of
    the build the row reports. A failed build's row records no clock: its design is the first
    attempt's, at the clock the command aimed for (``--aim-ice40``/``--aim-ecp5``, else the
    board's aim). The bundle is the command's ``--bundle``. The ULX3S variants differ only in
    the device the build scripts name, not in the RTLIL or constraints.
    """
    import functools

    from boards.build import NAME, next_attempt
    from boards.top import board
    args = parser().parse_args(result["provenance"]["command"][2:])
    bundle_dir = args.bundle if args.bundle.is_absolute() else REPO / args.bundle
    bundle = functools.cache(lambda: load(bundle_dir))
    aims = {"icebreaker": args.aim_ice40, "ulx3s": args.aim_ecp5}
    baud = result["baud"]
    out = {}
    for lanes in result["lanes"]:
        out[f"cosim lanes {tag(lanes)}"] = functools.partial(
            lambda lanes: rtlil_sha256(cycles_link(bundle(), lanes), name="board_link"), lanes)
    for row in result["rows"]:
        lanes, name = row["lanes"], row["board"]
        if row["clock_mhz"] is None:
            clock_hz = next_attempt([], board(name), aim_mhz=aims[name], baud=baud)[0]
        else:
            clock_hz = row["clock_mhz"] * 1e6

        def top_sha(lanes=lanes, name=name, clock_hz=clock_hz):
            platform, top, made = board_top(bundle(), name, lanes, clock_hz, baud)
            if abs(made - clock_hz) > 1e-3:
                raise ValueError(f"{name}: a {clock_hz / 1e6} MHz clock builds at "
                                 f"{made / 1e6} MHz now")
            return plan_sha256(platform, top, name=NAME)
        out[f"{name} lanes {tag(lanes)} at {clock_hz / 1e6:.6g} MHz"] = top_sha
    return out


def measure_cycles(bundle_dir, lanes, samples, folder):
    """Cycles per inference of ``samples`` test samples, from the host link's own counter
    (:func:`cycles_link`: the accelerator's cycles without the replay's bubbles)."""
    link = cycles_link(load(bundle_dir), lanes)
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


def cycles_task(bundle_dir, lanes, samples, out, reuse):
    """Cycles per inference at ``lanes`` (cached in ``out`` as JSON)."""
    cache = out / f"cycles_l{tag(lanes)}_s{samples}.json"
    if reuse and cache.exists():
        return json.loads(cache.read_text())
    start = time.monotonic()
    cycles = measure_cycles(bundle_dir, lanes, samples, out / f"cosim_l{tag(lanes)}")
    cache.write_text(json.dumps(cycles) + "\n")
    print(f"lanes {tag(lanes)}: {sum(cycles) / len(cycles):.0f} cycles per inference "
          f"({time.monotonic() - start:.0f} s)", flush=True)
    return cycles


def build_task(bundle_dir, board_name, lanes, baud, aim, folder, reuse):
    """The build report of ``board_name`` at ``lanes``, or ``{"error": message}`` when the
    design does not fit or the build fails (kept in ``folder/error.txt`` for ``--reuse``)."""
    error = folder / "error.txt"
    if reuse and (folder / "report.json").exists():
        return json.loads((folder / "report.json").read_text())
    if reuse and error.exists():
        return {"error": error.read_text().strip()}
    folder.mkdir(parents=True, exist_ok=True)
    error.unlink(missing_ok=True)
    what = f"{board_name} lanes {tag(lanes)}"
    try:
        report = build(load(bundle_dir), board_name=board_name, lanes=lanes, baud=baud,
                       aim_mhz=aim, build_dir=folder,
                       log=lambda text: print(f"  {what}: {text}", flush=True))
    except BuildError as exc:
        error.write_text(f"{exc}\n")
        print(f"  {what}: {exc}", flush=True)
        return {"error": str(exc)}
    r = report["resources"]
    print(f"  {what}: {r['logic_cells']} LC, {r['bram']} BRAM, Fmax {report['fmax_mhz']} MHz, "
          f"clock {report['clock_mhz']:.2f} MHz", flush=True)
    return report


def make_row(board_name, lanes, cycles, report, wire, baud):
    row = dict.fromkeys(ROW_KEYS)                  # a failed build leaves its figures None
    mean_cycles = sum(cycles) / len(cycles)
    row.update({"board": board_name, "lanes": list(lanes) if isinstance(lanes, tuple) else lanes,
                "cycles": mean_cycles})
    if "error" in report:
        row["error"] = report["error"]
        return row
    r = report["resources"]
    row.update({
        "logic_cells": r["logic_cells"], "logic_cells_total": r["logic_cells_total"],
        "ffs": r["ffs"], "bram": r["bram"], "bram_total": r["bram_total"],
        "dsp": r["dsp"], "fmax_mhz": report["fmax_mhz"],
        "clock_mhz": report["clock_mhz"], "timing_met": report["timing_met"],
        "inferences_per_s": report["clock_mhz"] * 1e6 / mean_cycles,
        "link_inferences_per_s": baud / 10 / wire,
        "build_seconds": sum(a["build_seconds"] for a in report["attempts"]),
        "attempts": [{k: a[k] for k in ("clock_mhz", "seed", "fmax_mhz", "timing_met")}
                     for a in report["attempts"]],
    })
    return row


def tag(lanes):
    """``lanes`` as text: ``2``, or ``2-1`` for one count per layer."""
    return "-".join(map(str, lanes)) if isinstance(lanes, (list, tuple)) else str(lanes)


def lane_cost(rows):
    """Per board: logic cells each added lane costs, between consecutive built lane counts and
    over the whole built range (a least-squares slope), or None with fewer than two builds.
    Rows with one lane count per layer are left out."""
    cost = {}
    for board_name in sorted({r["board"] for r in rows}):
        good = sorted((r["lanes"], r["logic_cells"]) for r in rows
                      if r["board"] == board_name and r["error"] is None
                      and isinstance(r["lanes"], int))
        if len(good) < 2:
            cost[board_name] = None
            continue
        steps = [{"from": a, "to": b, "logic_cells_per_lane": (lb - la) / (b - a)}
                 for (a, la), (b, lb) in zip(good, good[1:])]
        n = len(good)
        mx = sum(x for x, _ in good) / n
        my = sum(y for _, y in good) / n
        slope = (sum((x - mx) * (y - my) for x, y in good)
                 / sum((x - mx) ** 2 for x, _ in good))
        cost[board_name] = {"logic_cells_per_lane": slope, "steps": steps}
    return cost


def parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=REPO / "models/zoo/digits_mlp")
    p.add_argument("--boards", nargs="+", default=["icebreaker", "ulx3s"])
    p.add_argument("--lanes", nargs="+", type=lanes_arg(1, 64), default=[1, 2, 4, 8],
                   help="lane counts to build: L for every layer, or L,L,... one per neuron "
                        "layer (e.g. 2,1)")
    p.add_argument("--samples", type=int, default=8, help="samples for the cycle count")
    p.add_argument("--baud", type=int, default=3_000_000)
    p.add_argument("-o", "--output", type=Path, default=REPO / "build/bench_boards",
                   help="build and cosimulation folders (default: build/bench_boards)")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks/results/boards",
                   help="where the JSON, table and plot go (default: benchmarks/results/boards)")
    p.add_argument("--aim-ice40", type=float, help="first clock tried on iCE40, MHz")
    p.add_argument("--aim-ecp5", type=float, help="first clock tried on ECP5, MHz")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="builds and cosimulations at once (Dask local processes; default: "
                        "one per core)")
    p.add_argument("--reuse", action="store_true",
                   help="reuse cycle counts and build reports already in the output folder")
    return p


def main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: must be at least 1")
    prov = provenance(__file__, SOURCES, gateware=GATEWARE, schema=SCHEMA, inputs=inputs,
                      argv=argv)                                        # before measuring
    bundle = load(args.bundle)
    out = args.output / args.bundle.name
    out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    wire = link_bytes(bundle, args.samples)

    import dask
    aims = {"icebreaker": args.aim_ice40, "ulx3s": args.aim_ecp5}
    tasks = {}
    for lanes in args.lanes:
        key = tuple(lanes) if isinstance(lanes, list) else lanes
        tasks[("cycles", key)] = dask.delayed(cycles_task, pure=False)(
            args.bundle, lanes, args.samples, out, args.reuse)
        for board_name in args.boards:
            tasks[(board_name, key)] = dask.delayed(build_task, pure=False)(
                args.bundle, board_name, lanes, args.baud, aims[board_name],
                out / f"{board_name}_l{tag(lanes)}", args.reuse)
    start = time.monotonic()
    scheduler = "synchronous" if args.jobs == 1 else "processes"
    done = dict(zip(tasks, dask.compute(*tasks.values(), scheduler=scheduler,
                                        num_workers=args.jobs)))
    print(f"all builds and cosimulations: {time.monotonic() - start:.0f} s", flush=True)
    keys = [tuple(lanes) if isinstance(lanes, list) else lanes for lanes in args.lanes]
    rows = [make_row(board_name, lanes, done[("cycles", lanes)], done[(board_name, lanes)],
                     wire, args.baud)
            for lanes in keys for board_name in args.boards]
    cost = lane_cost(rows)
    name = args.bundle.name
    table = format_table(rows, cost, bundle, args)
    (args.results / f"{name}.md").write_text(table + "\n")
    write_report(args.results / f"{name}.json", rows, cost, args, prov)
    print(table)
    plot(rows, args.results / f"{name}.png")
    return 0


def write_report(path, rows, cost, args, prov):
    """Write the JSON: the rows, the lane cost, the run's settings and its provenance."""
    write_result(path, {"benchmark": "boards", "bundle": args.bundle.name,
                        "boards": list(args.boards), "lanes": list(args.lanes),
                        "samples": args.samples, "baud": args.baud, "rows": rows,
                        "lane_cost": cost},
                 provenance=prov, result_keys=RESULT_KEYS, designs=designs)


def format_table(rows, cost, bundle, args):
    head = ("| board | lanes | logic cells | FF | block RAM | DSP | Fmax (MHz) | clock (MHz) "
            "| timing | cycles/inference | inferences/s (accelerator) |")
    lines = [f"{args.bundle.name}: {[layer.kind for layer in bundle.layers]}, "
             f"{bundle.input.steps} steps, mean of {args.samples} test samples", "",
             head, "|" + " --- |" * (head.count("|") - 1)]
    for row in rows:
        if row["error"] is not None:
            lines.append(f"| {row['board']} | {tag(row['lanes']).replace('-', ',')} | "
                         f"{row['error']} | | | | | | | "
                         f"{row['cycles']:.0f} | |")
            continue
        lines.append(
            f"| {row['board']} | {tag(row['lanes']).replace('-', ',')} | {row['logic_cells']} / "
            f"{row['logic_cells_total']} | {row['ffs']} | {row['bram']} / {row['bram_total']} "
            f"| {row['dsp']} | {row['fmax_mhz']:.1f} | {row['clock_mhz']:.2f} | "
            f"{'met' if row['timing_met'] else 'MISSED'} | {row['cycles']:.0f} | "
            f"{row['inferences_per_s']:.0f} |")
    for board_name, c in cost.items():
        if c is not None:
            steps = ", ".join(f"{s['from']}->{s['to']}: {s['logic_cells_per_lane']:.0f}"
                              for s in c["steps"])
            lines += ["", f"{board_name}: {c['logic_cells_per_lane']:.0f} logic cells per "
                          f"added lane (least squares over the built lane counts; {steps})"]
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
        good = [r for r in rows if r["board"] == board_name and r["error"] is None
                and isinstance(r["lanes"], int)]
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
