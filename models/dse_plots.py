"""Plots and tables of a co-design exploration (:mod:`models.dse`).

* ``heatmaps_<encoding>_<surrogate>.png``: golden accuracy and spikes per inference over
  beta x threshold, one row per neuron model (the seed paper's Figures 2 and 3), where the grid
  has at least two betas and two thresholds;
* ``pareto.png``: golden accuracy against inferences/s (every row) and against logic cells
  (measured rows), Pareto fronts drawn;
* ``tables.md``: encodings x neuron models (the paper's Table I), surrogates with their
  hardware figures, the co-design lanes, the cycle model's error, the best configurations.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_plots", "tables"]


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _models(rows):
    """One row per model point (the figures that do not depend on the hardware)."""
    seen = {}
    for r in rows:
        seen.setdefault(r["key"], r)
    return list(seen.values())


def _matched(models, field, values):
    """The model points whose other parameters occur with every value of ``field``: a fair
    comparison across ``field`` (all of them in a full product grid). A surrogate's slope goes
    with it (each has its own scale)."""
    others = ("neuron", "beta", "threshold", "encoding", "surrogate", "slope", "sparsity",
              "weight_bits")
    skip = {field, "slope"} if field == "surrogate" else {field}

    def rest(m):
        return tuple(m[k] for k in others if k not in skip)
    seen = {}
    for m in models:
        seen.setdefault(rest(m), set()).add(m[field])
    return [m for m in models if seen[rest(m)] >= set(values)]


def write_plots(result, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .dse import pareto_front
    from .sweep import plot_sweep

    out = Path(out)
    rows = result["rows"]
    models = _models(rows)
    written = []
    for enc in sorted({m["encoding"] for m in models}):
        for sur in sorted({m["surrogate"] for m in models}):
            pts = [dict(m, golden_spikes_per_inference=m["spikes_per_inference"])
                   for m in models if m["encoding"] == enc and m["surrogate"] == sur]
            if len({p["beta"] for p in pts}) > 1 and len({p["threshold"] for p in pts}) > 1:
                path = out / f"heatmaps_{enc}_{sur}.png"
                plot_sweep(pts, path, title=f"{enc} input, {sur} surrogate")
                written.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label, log in ((axes[0], "inferences_per_s", "inferences/s (cycle model)", True),
                                (axes[1], "logic_cells", "logic cells (boards fit)", False)):
        pts = [r for r in rows if r.get(key)]
        if not pts:
            ax.set_visible(False)
            continue
        for enc in sorted({r["encoding"] for r in pts}):
            mine = [r for r in pts if r["encoding"] == enc]
            ax.scatter([r[key] for r in mine], [100 * r["golden_accuracy"] for r in mine],
                       s=18, label=enc, alpha=0.75)
        if key == "logic_cells":       # fewer cells is better: maximise -cells
            flipped = [dict(r, neg=-r[key]) for r in pts]
            front = [pts[i] for i in pareto_front(flipped, "golden_accuracy", "neg")]
        else:
            front = [pts[i] for i in pareto_front(pts, "golden_accuracy", key)]
        front.sort(key=lambda r: r[key])
        ax.plot([r[key] for r in front], [100 * r["golden_accuracy"] for r in front], "k--",
                lw=1, label="Pareto front")
        values = [r[key] for r in pts]
        if log and max(values) > 20 * min(values):
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("golden accuracy (%)")
        ax.legend(fontsize=8)
    fig.suptitle(f"co-design: {result['points']} model points, clock {result['clock_mhz']} MHz, "
                 f"board {result['board']}")
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    written.append(out / "pareto.png")
    (out / "tables.md").write_text(tables(result))
    written.append(out / "tables.md")
    return written


def tables(result):
    """The exploration's tables as Markdown."""
    rows = result["rows"]
    models = _models(rows)
    lines = []

    def table(title, head, body):
        lines.extend([f"### {title}", "", "| " + " | ".join(head) + " |",
                      "| " + " | ".join("---" for _ in head) + " |"])
        lines.extend("| " + " | ".join(str(c) for c in row) + " |" for row in body)
        lines.append("")

    encs = [e for e in ("direct", "rate", "delta", "latency")
            if any(m["encoding"] == e for m in models)]
    neurons = sorted({m["neuron"] for m in models}, key=["lif", "lapicque"].index)
    body = []
    for neuron in neurons:
        mine = [m for m in models if m["neuron"] == neuron]
        pts = _matched(mine, "encoding", encs)
        for enc in encs:
            at = [m for m in pts if m["encoding"] == enc]
            if not at:
                continue
            same = {(m["surrogate"], m["slope"]) for m in at}     # the matched surrogate(s)
            best = max((m for m in mine if m["encoding"] == enc
                        and (m["surrogate"], m["slope"]) in same),
                       key=lambda m: m["golden_accuracy"])
            body.append([enc, neuron, len(at),
                         f"{100 * _mean([m['golden_accuracy'] for m in at]):.2f}",
                         f"{_mean([m['spikes_per_inference'] for m in at]):.0f}",
                         f"{100 * best['golden_accuracy']:.2f} at {best['beta']:g} / "
                         f"{best['threshold']:g}"])
    table("Encodings x neuron models (Table I; matched points: the same beta, threshold and "
          "surrogate under every encoding)",
          ["encoding", "neuron", "matched points", "golden accuracy (%)", "spikes/inference",
           "best accuracy (%) at beta / theta"], body)

    surs = sorted({(m["surrogate"], m["slope"]) for m in models})
    pts = _matched(models, "surrogate", sorted({m["surrogate"] for m in models}))
    keys = {m["key"] for m in pts}
    body = []
    for sur, slope in surs:
        mods = [m for m in pts if m["surrogate"] == sur and m["slope"] == slope]
        mine = [r for r in rows if r["key"] in keys and r["surrogate"] == sur
                and r["slope"] == slope]
        if not mods:
            continue
        body.append([sur, f"{slope:g}", len(mods),
                     f"{100 * _mean([m['golden_accuracy'] for m in mods]):.2f}",
                     f"{_mean([m['spikes_per_inference'] for m in mods]):.0f}",
                     f"{_mean([r['cycles_per_inference'] for r in mine]):.0f}",
                     f"{_mean([r['inferences_per_s'] for r in mine]):.0f}"])
    table("Surrogate gradients on the hardware (means over matched points: the same model "
          "otherwise, every hardware configuration)",
          ["surrogate", "slope", "points", "golden accuracy (%)", "spikes/inference",
           "cycles/inference", "inferences/s"], body)

    cod = result["summary"]["codesign"]
    if cod:
        table("Per-layer lanes sized to each layer's work vs uniform lanes",
              ["point", "uniform lanes", "cycles", "LC", "balanced lanes", "cycles", "LC",
               "LC saved"],
              [[c["key"][:8], c["uniform"], f"{c['uniform_cycles']:.0f}",
                c["uniform_logic_cells"], c["balanced"], f"{c['balanced_cycles']:.0f}",
                c["balanced_logic_cells"], c["logic_cells_saved"]] for c in cod])

    measured = [r for r in rows if r.get("model_error") is not None]
    if measured:
        table("Cycle model against cosimulation (no stalls)",
              ["point", "hardware", "samples", "measured cycles/inference (close to close)",
               "model", "error (%)", "first sample's latency"],
              [[f"{r['neuron']} b{r['beta']:g} t{r['threshold']:g} {r['encoding']}",
                r["hardware"], r["cosim_samples"], f"{r['measured_cycles_per_inference']:.0f}",
                f"{r['model_cycles_same_samples']:.0f}", f"{100 * r['model_error']:+.2f}",
                r.get("measured_first_sample_latency", "")]
               for r in measured])

    front = [rows[i] for i in result["summary"]["pareto_accuracy_vs_rate"]]
    table("Pareto front: golden accuracy vs inferences/s",
          ["neuron", "beta", "theta", "encoding", "surrogate", "hardware",
           "golden accuracy (%)", "spikes/inference", "inferences/s", "LC"],
          [[r["neuron"], f"{r['beta']:g}", f"{r['threshold']:g}", r["encoding"],
            r["surrogate"], r["hardware"], f"{100 * r['golden_accuracy']:.2f}",
            f"{r['spikes_per_inference']:.0f}", f"{r['inferences_per_s']:.0f}",
            r.get("logic_cells", "")] for r in front])
    return "\n".join(lines)
