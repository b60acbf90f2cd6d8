"""Cycles of the event-driven linear engine against the lower bound, its own estimate and the
dense baseline.

Cosimulates (Icarus by default) a 256 x 256 layer over weight sparsity (0, 0.5, 0.75, 0.9),
input spike density (0.02 to 0.5) and lanes (1, 2, 4, 8), every run checked bit for bit against
the golden model, and reports every measured step: active synaptic operations A, measured
cycles, the lower bound of DESIGN.md section 7 and which of its terms sets it, their ratio,
lane utilisation ``A / (L * cycles)``, the engine's own estimate (the engine contract's
``estimate_cycles``) and its error, the dense baseline's cycles and the speedup against ideal
(dense SOPs / A).

    python benchmarks/bench_lanes.py [--quick | --full] [--sim icarus|verilator] [-o DIR]

The default run takes about 5 minutes on an idle 2-core machine (10 under load): 16 sparse
designs, and the dense baseline once per lane count. The dense baseline visits every input
and every weight, zeros included, so its cycles depend on neither the weights nor the input;
it is measured at sparsity 0.75 and used for every sparsity. ``--full`` measures it at every
sparsity as well (about twice as long). ``--quick``: lanes 1 and 8 at sparsity 0.75 (1 to 2
minutes).

Each sample runs one density for ``--steps`` steps; step 0 (pipeline fill) is not counted, the
others are measured as the interval between the closing output events of consecutive steps with
no backpressure. Steps overlap in the pipeline, so one step's interval can fall a little below
its own bound when the step before it ran long. A step is work-bound when ``ceil(A / L)`` is
the largest term of its bound; the summary gives the share of work-bound steps within 1.10 of
the bound, the worst ratio and the utilisation, and the estimate's error (median and worst)
over all steps. Writes ``lanes.json`` (with its provenance) and ``lanes.png``.
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

from benchmarks.provenance import (  # noqa: E402
    PROVENANCE_KEYS, provenance, rtlil_sha256, write_result,
)
from gen import emit_verilog  # noqa: E402
from models import bundle as bundle_io  # noqa: E402
from models import golden  # noqa: E402
from models.synth import random_events, random_linear_bundle  # noqa: E402
from verif.runner import cosimulate  # noqa: E402

N = 256
SPARSITIES = (0.0, 0.5, 0.75, 0.9)
DENSITIES = (0.02, 0.05, 0.10, 0.20, 0.50)
LANES = (1, 2, 4, 8)
DENSE_AT = 0.75         # the sparsity whose design measures the dense baseline (without --full)
WITHIN = 1.10           # a work-bound step within this factor of its bound counts as "near"

# What lanes.json holds (checked before writing and by tests/test_benchmark_results.py); bump
# SCHEMA when the layout changes. The designs are generated from hdl/ (their RTLIL is
# fingerprinted: see designs()); no other source is recorded.
SCHEMA = 2
SOURCES = ()
GATEWARE = ("hdl/*.py",)
RESULT_KEYS = {
    "": {"provenance", "benchmark", "n", "sim", "steps", "updates_multiple", "sparsities",
         "densities", "lanes", "dense_measured_at", "summary", "rows", "points", "runs"},
    "provenance": PROVENANCE_KEYS,
    "summary": {"steps", "work_bound_steps", "work_bound_within_1_10",
                "work_bound_worst_ratio", "work_bound_min_utilisation",
                "work_bound_median_utilisation", "min_ratio", "median_ratio", "worst_ratio",
                "median_utilisation", "model_error_median", "model_error_worst",
                "model_error_worst_step", "work_bound_model_error_median",
                "work_bound_model_error_worst", "steps_at_density_le_20pct",
                "min_speedup_vs_ideal_there", "median_speedup_vs_ideal_there",
                "spikes_compared", "mismatches", "wall_seconds"},
    "rows/*": {"sparsity", "density", "lanes", "active_sops", "measured", "lower_bound",
               "ratio", "utilisation", "estimate", "model_error", "dense", "speedup",
               "speedup_vs_ideal"},
    "points/*": {"sparsity", "density", "lanes", "updates", "step", "events", "active_sops",
                 "out_events", "measured", "lower_bound", "bound_term", "work_bound", "ratio",
                 "utilisation", "estimate", "model_error", "dense", "speedup",
                 "ideal_speedup", "speedup_vs_ideal"},
    "runs/*": {"kind", "sparsity", "lanes", "spikes_compared", "mismatches",
               "cycles_per_step", "seconds"},
}


def stimulus(seed, steps, densities):
    rng = np.random.default_rng(seed)
    rows = []
    for s, density in enumerate(densities):
        ev = random_events(rng, samples=1, steps=steps, n_in=N, density=density)
        ev[:, 0] = s
        rows.append(ev)
    return np.concatenate(rows)


def run_design(bundle, events, samples, *, lanes, updates, dense, sim, folder):
    """Cosimulate one design; return ``(engine, result)`` (the engine of the emitted top)."""
    top, text = emit_verilog(bundle, lanes=lanes, updates=updates, dense=dense)
    result = cosimulate(text, folder, sim=sim, events=events, samples=samples)
    if not result.get("passed") or result["mismatches"] != 0:
        raise SystemExit(f"cosimulation failed for lanes={lanes} dense={dense}: "
                         f"{result.get('first_mismatch') or result.get('error')}")
    (_, engine), = top.engines
    return engine, result


def designs(result):
    """The designs a result measured, ``{label: callable returning its fingerprint}``: per
    run, the accelerator ``gen.emit_verilog`` made for it (``<kind> sparsity S lanes L``: its
    RTLIL under gen's top-level name), from the same seeded random bundle (``seed=3``, the
    result's ``n`` and ``steps``), lanes, ``updates_multiple`` and dense or sparse engine."""
    import functools

    from gen import DEFAULT_NAME
    from hdl.top import Accelerator
    make = functools.cache(lambda sparsity: random_linear_bundle(
        n_in=result["n"], n_out=result["n"], sparsity=sparsity, seed=3, steps=result["steps"]))

    def top_sha(kind, sparsity, lanes):
        # As gen.emit_verilog builds it (fmt, status and trace at their defaults).
        top = Accelerator(make(sparsity), lanes=lanes, dense=kind == "dense",
                          updates=result["updates_multiple"])
        return rtlil_sha256(top, name=DEFAULT_NAME)
    return {f"{r['kind']} sparsity {r['sparsity']} lanes {r['lanes']}":
            functools.partial(top_sha, r["kind"], r["sparsity"], r["lanes"])
            for r in result["runs"]}


def bound_term(sops, events, neurons, *, lanes, updates):
    """Which term of DESIGN.md section 7's bound is the largest (ties: work first)."""
    terms = {"sops": -(-sops // lanes), "events": events, "neurons": -(-neurons // updates)}
    return max(terms, key=terms.get)


def step_points(engine, bundle, events, result, *, sparsity, lanes, steps, dense_cycles):
    """Every measured step of one sparse run (step 0 of each density is not counted)."""
    x = golden.events_to_dense(events, len(DENSITIES), steps, N)
    out_spikes = np.count_nonzero(golden.run(bundle, x).output, axis=2)     # [samples, steps]
    points = []
    for s, density in enumerate(DENSITIES):
        active = x[s] != 0                                                  # [steps, N]
        n_events, sops = engine.work(active)
        bound, estimate = engine.estimate_cycles(active, out_spikes[s])
        for t in range(1, steps):
            a, e, b = int(sops[t]), int(n_events[t]), int(bound[t])
            measured = result["cycles"]["per_step"][s][t]
            ideal = (N * N / a) if a else None
            speedup = dense_cycles / measured
            term = bound_term(a, e, N, lanes=lanes, updates=engine.updates)
            points.append({
                "sparsity": sparsity, "density": density, "lanes": lanes,
                "updates": engine.updates, "step": t, "events": e, "active_sops": a,
                "out_events": int(out_spikes[s, t]), "measured": measured, "lower_bound": b,
                "bound_term": term, "work_bound": term == "sops",
                "ratio": round(measured / b, 4),
                "utilisation": round(a / (lanes * measured), 4),
                "estimate": int(estimate[t]),
                "model_error": round((int(estimate[t]) - measured) / measured, 4),
                "dense": dense_cycles, "speedup": round(speedup, 3),
                "ideal_speedup": None if ideal is None else round(ideal, 3),
                "speedup_vs_ideal": None if ideal is None else round(speedup / ideal, 4),
            })
    return points


def median_or_none(values):
    values = list(values)
    return statistics.median(values) if values else None


def summarise(points, runs, started):
    """The summary of every measured step, of the work-bound ones and of the cycle model."""
    work = [q for q in points if q["work_bound"]]
    err = [abs(q["model_error"]) for q in points]
    worst = max(points, key=lambda q: abs(q["model_error"]), default=None)
    low = [q for q in points if q["density"] <= 0.20 and q["speedup_vs_ideal"] is not None]
    return {
        "steps": len(points),
        "work_bound_steps": len(work),
        "work_bound_within_1_10": round(sum(q["ratio"] <= WITHIN for q in work) / len(work), 4)
        if work else None,
        "work_bound_worst_ratio": max((q["ratio"] for q in work), default=None),
        "work_bound_min_utilisation": min((q["utilisation"] for q in work), default=None),
        "work_bound_median_utilisation": median_or_none(q["utilisation"] for q in work),
        "min_ratio": min((q["ratio"] for q in points), default=None),
        "median_ratio": median_or_none(q["ratio"] for q in points),
        "worst_ratio": max((q["ratio"] for q in points), default=None),
        "median_utilisation": median_or_none(q["utilisation"] for q in points),
        "model_error_median": median_or_none(err),
        "model_error_worst": max(err, default=None),
        "model_error_worst_step": None if worst is None else {
            k: worst[k] for k in ("sparsity", "density", "lanes", "step", "measured",
                                  "estimate", "lower_bound")},
        "work_bound_model_error_median": median_or_none(abs(q["model_error"]) for q in work),
        "work_bound_model_error_worst": max((abs(q["model_error"]) for q in work),
                                            default=None),
        "steps_at_density_le_20pct": len(low),
        "min_speedup_vs_ideal_there": min((q["speedup_vs_ideal"] for q in low), default=None),
        "median_speedup_vs_ideal_there": median_or_none(q["speedup_vs_ideal"] for q in low),
        "spikes_compared": sum(r["spikes_compared"] for r in runs),
        "mismatches": sum(r["mismatches"] for r in runs),
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def aggregate(points, sparsities, lanes_list):
    """Medians over the measured steps per (sparsity, density, lanes), printed as a table."""
    rows = []
    print(f"\n{'spars':>5} {'dens':>5} {'L':>2} {'A':>6} {'cycles':>6} {'bound':>6} "
          f"{'ratio':>6} {'util':>5} {'est':>6} {'err':>6} {'dense':>6} {'speedup':>8} "
          f"{'x ideal':>7}")
    for sparsity in sparsities:
        for density in DENSITIES:
            for lanes in lanes_list:
                group = [q for q in points if q["sparsity"] == sparsity
                         and q["density"] == density and q["lanes"] == lanes]
                med = {k: statistics.median(q[k] for q in group)
                       for k in ("active_sops", "measured", "lower_bound", "ratio",
                                 "utilisation", "estimate", "model_error", "dense", "speedup")}
                med["speedup_vs_ideal"] = median_or_none(
                    q["speedup_vs_ideal"] for q in group if q["speedup_vs_ideal"] is not None)
                rows.append({"sparsity": sparsity, "density": density, "lanes": lanes, **med})
                frac = med["speedup_vs_ideal"]
                frac = "-" if frac is None else f"{frac:.2f}"
                print(f"{sparsity:5.2f} {density:5.2f} {lanes:2d} {med['active_sops']:6.0f} "
                      f"{med['measured']:6.0f} {med['lower_bound']:6.0f} {med['ratio']:6.2f} "
                      f"{med['utilisation']:5.2f} {med['estimate']:6.0f} "
                      f"{med['model_error']:+6.1%} {med['dense']:6.0f} {med['speedup']:8.1f} "
                      f"{frac:>7}")
    return rows


def print_summary(summary):
    s = summary
    print(f"\n{s['steps']} measured steps, {s['work_bound_steps']} work-bound "
          f"(ceil(A/L) the largest term of the bound)")
    if s["work_bound_steps"]:
        print(f"  work-bound: {s['work_bound_within_1_10']:.1%} within {WITHIN:.2f} x the "
              f"bound, worst {s['work_bound_worst_ratio']:.3f} x; utilisation median "
              f"{s['work_bound_median_utilisation']:.3f}, min "
              f"{s['work_bound_min_utilisation']:.3f}")
    if s["steps"]:
        print(f"  all steps: cycles / bound {s['min_ratio']:.3f} to {s['worst_ratio']:.3f} "
              f"(median {s['median_ratio']:.3f}), utilisation median "
              f"{s['median_utilisation']:.3f}")
        print(f"  estimate_cycles vs measured: |error| median {s['model_error_median']:.2%}, "
              f"worst {s['model_error_worst']:.2%} at {s['model_error_worst_step']}")
    print(f"  {s['spikes_compared']} spikes compared, {s['mismatches']} mismatches, "
          f"{s['wall_seconds']} s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] + " "
                                + __doc__.splitlines()[1])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="lanes 1 and 8, sparsity 0.75 only")
    size.add_argument("--full", action="store_true",
                      help="measure the dense baseline at every sparsity, not once per lane "
                           "count (about twice as long)")
    p.add_argument("--sim", choices=("icarus", "verilator"), default="icarus",
                   help="simulator (default: %(default)s)")
    p.add_argument("--steps", type=int, default=5, help="steps per sample (default: 5)")
    p.add_argument("--updates", type=int, default=2,
                   help="neuron updates per cycle as a multiple of the lanes (default: 2)")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results",
                   help="folder for lanes.json and lanes.png (default: benchmarks/results)")
    p.add_argument("--replot", action="store_true",
                   help="redraw lanes.png from the output folder's lanes.json, no simulation")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error(f"--steps must be at least 2 (step 0 is not measured), not {args.steps}")
    if args.replot:
        data = json.loads((args.output / "lanes.json").read_text())
        plot(data["rows"], data["points"], data["sparsities"], data["lanes"],
             args.output / "lanes.png")
        return 0
    prov = provenance(__file__, SOURCES, gateware=GATEWARE, schema=SCHEMA,
                      argv=argv)                                        # before measuring
    sparsities = (0.75,) if args.quick else SPARSITIES
    lanes_list = (1, 8) if args.quick else LANES
    dense_at = DENSE_AT if DENSE_AT in sparsities else sparsities[0]
    events = stimulus(7, args.steps, DENSITIES)
    dense_events = stimulus(8, 3, (DENSITIES[0], DENSITIES[-1]))
    started = time.monotonic()

    # Every design first; the points need the dense baseline of their lane count.
    sparse, dense, runs = {}, {}, []
    for sparsity in sparsities:
        b = random_linear_bundle(n_in=N, n_out=N, sparsity=sparsity, seed=3, steps=args.steps)
        with tempfile.TemporaryDirectory() as tmp:
            bundle_io.save(b, tmp)
            for lanes in lanes_list:
                kinds = ["sparse"] + (["dense"] if args.full or sparsity == dense_at else [])
                for kind in kinds:
                    t0 = time.monotonic()
                    stim, samples = ((events, len(DENSITIES)) if kind == "sparse"
                                     else (dense_events, 2))
                    engine, result = run_design(b, stim, samples, lanes=lanes,
                                                updates=args.updates, dense=kind == "dense",
                                                sim=args.sim, folder=tmp)
                    measured = [c for row in result["cycles"]["per_step"] for c in row[1:]]
                    runs.append({"kind": kind, "sparsity": sparsity, "lanes": lanes,
                                 "spikes_compared": result["spikes_compared"],
                                 "mismatches": result["mismatches"],
                                 "cycles_per_step": [min(measured), max(measured)],
                                 "seconds": round(time.monotonic() - t0, 1)})
                    if kind == "sparse":
                        sparse[sparsity, lanes] = (b, engine, result)
                    else:
                        dense[sparsity, lanes] = statistics.median(measured)
                    print(f"sparsity {sparsity:4.2f} lanes {lanes} {kind:6}: cosim bit-exact "
                          f"({result['spikes_compared']} spikes), {runs[-1]['seconds']} s",
                          flush=True)

    points = []
    for (sparsity, lanes), (b, engine, result) in sparse.items():
        dense_cycles = dense.get((sparsity, lanes), dense.get((dense_at, lanes)))
        points += step_points(engine, b, events, result, sparsity=sparsity, lanes=lanes,
                              steps=args.steps, dense_cycles=dense_cycles)
    rows = aggregate(points, sparsities, lanes_list)
    summary = summarise(points, runs, started)
    print_summary(summary)
    out = {"benchmark": "lanes", "n": N, "sim": args.sim, "steps": args.steps,
           "updates_multiple": args.updates, "sparsities": list(sparsities),
           "densities": list(DENSITIES), "lanes": list(lanes_list),
           "dense_measured_at": "every sparsity" if args.full else dense_at,
           "summary": summary, "rows": rows, "points": points, "runs": runs}
    write_result(args.output / "lanes.json", out, provenance=prov,
                 result_keys=RESULT_KEYS, designs=designs)
    plot(rows, points, sparsities, lanes_list, args.output / "lanes.png")
    print(f"wrote {args.output / 'lanes.json'} and {args.output / 'lanes.png'}")
    return 0


def plot(rows, points, sparsities, lanes_list, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8))
    for lanes in lanes_list:
        for work, marker in ((True, "o"), (False, "x")):
            pts = [q for q in points if q["lanes"] == lanes and q["work_bound"] is work]
            ax1.scatter([q["active_sops"] / lanes for q in pts], [q["ratio"] for q in pts],
                        s=10, marker=marker, color=f"C{lanes_list.index(lanes)}",
                        label=f"L={lanes}" if work else None)
    ax1.axhline(WITHIN, color="k", ls="--", lw=0.8)
    ax1.set_xscale("log")
    ax1.set_xlabel("active SOPs per lane in the step (A / L)")
    ax1.set_ylabel("measured cycles / lower bound")
    ax1.set_title(f"Every step against the lower bound\n(o: work-bound, x: not; "
                  f"dashed: {WITHIN:.2f})")
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
    for lanes in lanes_list:
        pts = [q for q in points if q["lanes"] == lanes]
        ax3.scatter([q["measured"] for q in pts], [q["estimate"] for q in pts], s=10,
                    label=f"L={lanes}")
    top = max([q["measured"] for q in points] + [q["estimate"] for q in points], default=1)
    ax3.plot([1, top], [1, top], "k--", lw=0.8)
    ax3.set_xscale("log")
    ax3.set_yscale("log")
    ax3.set_xlabel("measured cycles")
    ax3.set_ylabel("estimate_cycles")
    ax3.set_title("The engine's estimate against cosimulation")
    ax3.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
