"""Cycles of the event-driven linear engine against the lower bound and the dense baseline.

Cosimulates (Icarus by default) a 256 x 256 layer over weight sparsity, input spike density and
lanes, every run checked bit for bit against the golden model, and prints per point: active
synaptic operations A, measured cycles, the lower bound of DESIGN.md section 7, their ratio, lane
utilisation, the dense baseline's cycles and the speedup against ideal (dense SOPs / A).

    python benchmarks/bench_lanes.py [--quick] [--sim icarus|verilator] [-o DIR]

Each sample runs one density for ``--steps`` steps; step 0 (pipeline fill) is not counted, the
others are measured as the interval between the closing output events of consecutive steps with
no backpressure. The dense baseline does the same work whatever the input, so it runs a shorter
stimulus (the lowest and highest density, 3 steps each); its spread across those steps is
reported. Writes ``lanes.json`` and ``lanes.png`` into the output folder.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gen import emit_verilog  # noqa: E402
from hdl import cycles  # noqa: E402
from models import bundle as bundle_io  # noqa: E402
from models.synth import random_events, random_linear_bundle  # noqa: E402
from verif.runner import cosimulate  # noqa: E402

N = 256
SPARSITIES = (0.0, 0.5, 0.75, 0.9)
DENSITIES = (0.02, 0.05, 0.10, 0.20, 0.50)
LANES = (1, 2, 4, 8)


def stimulus(seed, steps, densities):
    rng = np.random.default_rng(seed)
    rows = []
    for s, density in enumerate(densities):
        ev = random_events(rng, samples=1, steps=steps, n_in=N, density=density)
        ev[:, 0] = s
        rows.append(ev)
    return np.concatenate(rows)


def run_design(bundle, events, samples, *, lanes, updates, dense, sim, folder):
    _, text = emit_verilog(bundle, lanes=lanes, updates=updates, dense=dense)
    result = cosimulate(text, folder, sim=sim, events=events, samples=samples)
    if not result.get("passed") or result["mismatches"] != 0:
        raise SystemExit(f"cosimulation failed for lanes={lanes} dense={dense}: "
                         f"{result.get('first_mismatch') or result.get('error')}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="lanes 1 and 8, sparsity 0.75 only")
    p.add_argument("--sim", choices=("icarus", "verilator"), default="icarus")
    p.add_argument("--steps", type=int, default=5, help="steps per sample (default: 5)")
    p.add_argument("--updates", type=int, default=2,
                   help="neuron updates per cycle as a multiple of the lanes (default: 2)")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--replot", action="store_true",
                   help="redraw lanes.png from the output folder's lanes.json, no simulation")
    args = p.parse_args(argv)
    if args.replot:
        data = json.loads((args.output / "lanes.json").read_text())
        sp = sorted({r["sparsity"] for r in data["rows"]})
        ln = sorted({r["lanes"] for r in data["rows"]})
        plot(data["rows"], data["points"], sp, ln, args.output / "lanes.png")
        return 0
    sparsities = (0.75,) if args.quick else SPARSITIES
    lanes_list = (1, 8) if args.quick else LANES
    args.output.mkdir(parents=True, exist_ok=True)
    events = stimulus(7, args.steps, DENSITIES)
    samples = len(DENSITIES)
    dense_events = stimulus(8, 3, (DENSITIES[0], DENSITIES[-1]))
    points, runs = [], []
    started = time.monotonic()
    for sparsity in sparsities:
        b = random_linear_bundle(n_in=N, n_out=N, sparsity=sparsity, seed=3, steps=args.steps)
        w = b.layers[0].weight
        with tempfile.TemporaryDirectory() as tmp:
            bundle_io.save(b, tmp)
            for lanes in lanes_list:
                t0 = time.monotonic()
                sparse = run_design(b, events, samples, lanes=lanes, updates=args.updates,
                                    dense=False, sim=args.sim, folder=tmp)
                dense = run_design(b, dense_events, 2, lanes=lanes, updates=args.updates,
                                   dense=True, sim=args.sim, folder=tmp)
                dense_steps = [c for row in dense["cycles"]["per_step"] for c in row[1:]]
                dense_cycles = statistics.median(dense_steps)
                runs.append({"sparsity": sparsity, "lanes": lanes,
                             "spikes_compared": sparse["spikes_compared"]
                             + dense["spikes_compared"],
                             "mismatches": sparse["mismatches"] + dense["mismatches"],
                             "dense_cycles_per_step": [min(dense_steps), max(dense_steps)],
                             "seconds": round(time.monotonic() - t0, 1)})
                u = lanes * args.updates
                for s, density in enumerate(DENSITIES):
                    for t in range(1, args.steps):
                        act = events[(events[:, 0] == s) & (events[:, 1] == t)][:, 2]
                        a = cycles.step_work(w, act)
                        measured = sparse["cycles"]["per_step"][s][t]
                        bound = cycles.lower_bound(a, len(act), N, lanes=lanes, updates=u)
                        ideal = (N * N / a) if a else None
                        speedup = dense_cycles / measured
                        points.append({
                            "sparsity": sparsity, "density": density, "lanes": lanes,
                            "updates": u, "step": t, "events": int(len(act)),
                            "active_sops": a, "measured": measured, "lower_bound": bound,
                            "ratio": round(measured / bound, 4),
                            "utilisation": round(a / (lanes * measured), 4),
                            "dense": dense_cycles, "speedup": round(speedup, 3),
                            "ideal_speedup": None if ideal is None else round(ideal, 3),
                            "speedup_vs_ideal": None if ideal is None
                            else round(speedup / ideal, 4),
                        })
                print(f"sparsity {sparsity:4.2f} lanes {lanes}: cosim bit-exact "
                      f"({runs[-1]['spikes_compared']} spikes), {runs[-1]['seconds']} s",
                      flush=True)

    # Aggregate per (sparsity, density, lanes): medians over the measured steps.
    rows = []
    print(f"\n{'spars':>5} {'dens':>5} {'L':>2} {'A':>6} {'cycles':>6} {'bound':>6} "
          f"{'ratio':>6} {'util':>5} {'dense':>6} {'speedup':>8} {'x ideal':>7}")
    for sparsity in sparsities:
        for density in DENSITIES:
            for lanes in lanes_list:
                group = [q for q in points if q["sparsity"] == sparsity
                         and q["density"] == density and q["lanes"] == lanes]
                med = {k: statistics.median(q[k] for q in group)
                       for k in ("active_sops", "measured", "lower_bound", "ratio",
                                 "utilisation", "dense", "speedup")}
                fr = [q["speedup_vs_ideal"] for q in group if q["speedup_vs_ideal"] is not None]
                med["speedup_vs_ideal"] = statistics.median(fr) if fr else None
                rows.append({"sparsity": sparsity, "density": density, "lanes": lanes, **med})
                frac = med["speedup_vs_ideal"]
                frac = "-" if frac is None else f"{frac:.2f}"
                print(f"{sparsity:5.2f} {density:5.2f} {lanes:2d} {med['active_sops']:6.0f} "
                      f"{med['measured']:6.0f} {med['lower_bound']:6.0f} {med['ratio']:6.2f} "
                      f"{med['utilisation']:5.2f} {med['dense']:6.0f} {med['speedup']:8.1f} "
                      f"{frac:>7}")

    busy = [q for q in points if q["active_sops"] >= 64 * q["lanes"]]
    # Steps overlap in the pipeline, so one step's interval can fall below its own bound when
    # the step before it ran long; sums over the steps of a point do not have that effect.
    sums = {}
    for q in busy:
        key = (q["sparsity"], q["density"], q["lanes"])
        m_sum, b_sum = sums.get(key, (0, 0))
        sums[key] = (m_sum + q["measured"], b_sum + q["lower_bound"])
    low = [q for q in points if q["density"] <= 0.20 and q["speedup_vs_ideal"] is not None]
    summary = {
        "steps_with_64_sops_per_lane": len(busy),
        "max_ratio_there": max((q["ratio"] for q in busy), default=None),
        "max_summed_ratio_there": max((m / b for m, b in sums.values()), default=None),
        "min_utilisation_there": min((q["utilisation"] for q in busy), default=None),
        "steps_at_density_le_20pct": len(low),
        "min_speedup_vs_ideal_there": min((q["speedup_vs_ideal"] for q in low), default=None),
        "median_speedup_vs_ideal_there": statistics.median(q["speedup_vs_ideal"] for q in low)
        if low else None,
        "spikes_compared": sum(r["spikes_compared"] for r in runs),
        "mismatches": sum(r["mismatches"] for r in runs),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    print("\nsummary:", json.dumps(summary, indent=1))
    out = {"benchmark": "lanes", "n": N, "sim": args.sim, "steps": args.steps,
           "updates_multiple": args.updates, "summary": summary, "rows": rows,
           "points": points, "runs": runs}
    (args.output / "lanes.json").write_text(json.dumps(out, indent=1) + "\n")
    plot(rows, points, sparsities, lanes_list, args.output / "lanes.png")
    print(f"wrote {args.output / 'lanes.json'} and {args.output / 'lanes.png'}")
    return 0


def plot(rows, points, sparsities, lanes_list, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for lanes in lanes_list:
        pts = [q for q in points if q["lanes"] == lanes]
        ax1.scatter([q["active_sops"] / lanes for q in pts], [q["ratio"] for q in pts], s=10,
                    label=f"L={lanes}")
    ax1.axhline(1.25, color="k", ls="--", lw=0.8)
    ax1.axvline(64, color="grey", ls=":", lw=0.8)
    ax1.set_xscale("log")
    ax1.set_xlabel("active SOPs per lane in the step (A / L)")
    ax1.set_ylabel("measured cycles / lower bound")
    ax1.set_title("Steps against the lower bound (dashed: 1.25)")
    ax1.legend()
    lanes = max(lanes_list)
    for sparsity in sparsities:
        rs = [r for r in rows if r["sparsity"] == sparsity and r["lanes"] == lanes]
        line, = ax2.plot([r["density"] * 100 for r in rs], [r["speedup"] for r in rs], "o-",
                         label=f"sparsity {sparsity}")
        ideal = [N * N / r["active_sops"] if r["active_sops"] else np.nan for r in rs]
        ax2.plot([r["density"] * 100 for r in rs], ideal, ls=":", color=line.get_color())
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xticks([d * 100 for d in DENSITIES], [f"{d * 100:g}" for d in DENSITIES])
    ax2.minorticks_off()
    ax2.set_xlabel("input spike density (%)")
    ax2.set_ylabel("speedup over dense baseline")
    ax2.set_title(f"Speedup, L={lanes} (dotted: ideal = dense SOPs / A)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
