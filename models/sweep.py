"""A beta x threshold sweep: train a network per point, export it, record and plot the figures.

Every point goes through :func:`models.train.train` and :func:`models.export.build_bundle`, so
its golden figures are those of the integer network the hardware would run.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from .data import TrainConfig
from .export import build_bundle, write_metrics
from .nets import NetConfig, check_config
from .train import train

__all__ = ["plot_sweep", "run_sweep"]


def run_sweep(ncfg: NetConfig, tcfg: TrainConfig, *, neurons=("lif", "lapicque"),
              betas=(0.5, 0.7, 0.8, 0.9, 0.95), thresholds=(0.5, 1.0, 2.0, 4.0), out,
              plot=None, weight_bits=8, progress=None):
    """Train one network per (neuron, beta, threshold); record accuracy and spikes.

    Every point is trained with ``tcfg`` (short and dense by default) on ``tcfg.dataset``, then
    quantized to ``weight_bits`` and run through the golden model on the test split (its first
    2,000 images for the 28x28 sets, :data:`models.export.DEFAULT_SAMPLES`). Writes
    ``out/sweep.json`` and ``out/sweep.png`` (and ``plot`` if given); returns the points.
    Lapicque points with beta below 1/e have a negative decay in snnTorch and are skipped.
    """
    tcfg.check()
    if progress is None:
        def progress(line):
            print(line, file=sys.stderr, flush=True)
    for neuron in neurons:
        check_config(replace(ncfg, neuron=neuron, beta=0.9))
    for beta in betas:
        check_config(replace(ncfg, neuron="lif", beta=beta))
    for theta in thresholds:
        check_config(replace(ncfg, threshold=theta))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = []
    total = len(neurons) * len(betas) * len(thresholds)
    for neuron in neurons:
        for beta in betas:
            for theta in thresholds:
                if neuron == "lapicque" and beta < math.exp(-1):
                    continue
                cfg = replace(ncfg, neuron=neuron, beta=beta, threshold=theta)
                net, metrics = train(cfg, tcfg, progress=lambda line: None)
                _, gm = build_bundle(net, tcfg, weight_bits=weight_bits, train_metrics=metrics)
                point = {"neuron": neuron, "beta": beta, "threshold": theta,
                         # Float figures on the golden model's samples (for the 28x28 sets the
                         # first 2,000 test images; for the digits all 360, as in training).
                         "float_accuracy": gm["float_accuracy"],
                         "golden_accuracy": gm["golden_accuracy"],
                         "agreement": gm["agreement"],
                         "spikes_per_inference": gm["spikes_total_per_inference"]["float"],
                         "golden_spikes_per_inference": gm["spikes_total_per_inference"]["golden"],
                         "train_seconds": metrics["train_seconds"]}
                points.append(point)
                progress(f"[{len(points)}/{total}] {neuron} beta {beta} threshold {theta}: "
                         f"float {100 * point['float_accuracy']:.2f}%, golden "
                         f"{100 * point['golden_accuracy']:.2f}%, "
                         f"{point['spikes_per_inference']:.0f} spikes/inference")
    summary = {"net": ncfg.to_dict(), "train": asdict(tcfg), "weight_bits": weight_bits,
               "points": points}
    write_metrics(out / "sweep.json", summary)
    for path in [out / "sweep.png"] + ([Path(plot)] if plot else []):
        data = "" if tcfg.dataset == "digits" else f"{tcfg.dataset}, "
        plot_sweep(points, path, title=f"{data}{ncfg.arch}, {tcfg.encoding} input, "
                                       f"{tcfg.steps} steps, {tcfg.epochs} epochs")
    return points


def plot_sweep(points, path, *, title=""):
    """Heatmaps of accuracy and spikes per inference over beta x threshold, one row per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    neurons = sorted({p["neuron"] for p in points}, key=["lif", "lapicque"].index)
    fig, axes = plt.subplots(len(neurons), 2, figsize=(10, 3.6 * len(neurons)), squeeze=False)
    for row, neuron in enumerate(neurons):
        pts = [p for p in points if p["neuron"] == neuron]
        betas = sorted({p["beta"] for p in pts})
        thetas = sorted({p["threshold"] for p in pts})
        for col, (key, label, fmt) in enumerate((
                ("golden_accuracy", "golden accuracy (%)", "{:.1f}"),
                ("golden_spikes_per_inference", "spikes per inference", "{:.0f}"))):
            grid = np.full((len(betas), len(thetas)), np.nan)
            for p in pts:
                value = p[key] * (100 if key.endswith("accuracy") else 1)
                grid[betas.index(p["beta"]), thetas.index(p["threshold"])] = value
            ax = axes[row][col]
            im = ax.imshow(grid, origin="lower", aspect="auto",
                           cmap="viridis" if col == 0 else "magma_r")
            ax.set_xticks(range(len(thetas)), [f"{t:g}" for t in thetas])
            ax.set_yticks(range(len(betas)), [f"{b:g}" for b in betas])
            ax.set_xlabel("threshold")
            ax.set_ylabel("beta")
            ax.set_title(f"{neuron}: {label}")
            lo, hi = np.nanmin(grid), np.nanmax(grid)
            for (i, j), value in np.ndenumerate(grid):
                if not np.isnan(value):
                    # Light text on the dark end of each colour map (low for viridis, high
                    # for magma_r).
                    level = (value - lo) / (hi - lo) if hi > lo else 0.5
                    dark = level < 0.5 if col == 0 else level > 0.5
                    ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
            fig.colorbar(im, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Fixed metadata so that the same sweep gives the same bytes.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
