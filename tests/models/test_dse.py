"""The co-design exploration (models.dse): a 2 x 2 mini-sweep through Dask's scheduler, resume
from the cache, the co-design and Pareto helpers, and the command line's refusals."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.cli import main
from models.dse import pareto_front

ROOT = Path(__file__).resolve().parents[2]
MINI = ["dse", "--neurons", "lif", "--betas", "0.5,0.9", "--thresholds", "0.5,2",
        "--epochs", "1", "--prune-epochs", "0", "--sparsity", "0", "--train-samples", "120",
        "--test-samples", "24", "--steps", "8", "--hidden", "16", "--lanes", "1", "2",
        "--measure", "0", "--workers", "2"]


def test_mini_sweep_on_a_local_cluster_and_resume(tmp_path, capsys):
    out = tmp_path / "dse"
    assert main(MINI + ["-o", str(out)]) == 0
    result = json.loads((out / "dse.json").read_text())
    assert result["points"] == 4 and len(result["rows"]) == 8
    assert {(r["beta"], r["threshold"]) for r in result["rows"]} == {
        (0.5, 0.5), (0.5, 2.0), (0.9, 0.5), (0.9, 2.0)}
    for r in result["rows"]:
        assert 0 <= r["golden_accuracy"] <= 1 and r["spikes_per_inference"] > 0
        assert r["cycles_per_inference"] > 0 and r["sops_per_inference"] > 0
        assert r["inferences_per_s"] == pytest.approx(45e6 / r["cycles_per_inference"])
        assert r["lanes"] == [r["requested_lanes"]] * 2
    # More lanes, fewer cycles, for every model point.
    by_key = {}
    for r in result["rows"]:
        by_key.setdefault(r["key"], {})[r["requested_lanes"]] = r["cycles_per_inference"]
    assert all(c[2] < c[1] for c in by_key.values())
    assert (out / "heatmaps_rate_fast_sigmoid.png").stat().st_size > 0
    assert (out / "pareto.png").stat().st_size > 0
    assert "Encodings x neuron models" in (out / "tables.md").read_text()
    err = capsys.readouterr().err
    assert "4 to train" in err and "4/4" in err and "left ~" in err

    # A second run finds every point in the cache: nothing is trained again.
    start = time.monotonic()
    assert main(MINI + ["-o", str(out)]) == 0
    assert "4 cached, 0 to train" in capsys.readouterr().err
    again = json.loads((out / "dse.json").read_text())
    assert [r["golden_accuracy"] for r in again["rows"]] == \
        [r["golden_accuracy"] for r in result["rows"]]
    assert time.monotonic() - start < 120


def test_paper_study_grid():
    """--study paper: the heat-map grid, every encoding and both surrogates at the middle of
    the grid, each model point once."""
    from models.dse import paper_grid
    from models.nets import NetConfig
    from models.data import TrainConfig
    grid = paper_grid(NetConfig(), TrainConfig(encoding="direct"), neurons=["lif", "lapicque"],
                      betas=[0.5, 0.7, 0.9], thresholds=[0.5, 1.0, 2.0], weight_bits=[8])
    points = {(n.neuron, n.beta, n.threshold, t.encoding, n.surrogate, n.slope)
              for n, t, _ in grid}
    assert len(points) == len(grid) == 18 + 2 * 3 + 2     # heat maps, 3 more encodings, atan
    for neuron in ("lif", "lapicque"):
        for enc in ("rate", "delta", "latency"):
            assert (neuron, 0.7, 1.0, enc, "fast_sigmoid", 25.0) in points
        assert (neuron, 0.7, 1.0, "direct", "atan", 2.0) in points
    # Direct input is scaled to [0, 1] in the float network (its events carry 0..15).
    gains = {t.encoding: n.input_gain for n, t, _ in grid}
    assert gains == {"direct": 1 / 15, "rate": 1.0, "delta": 1.0, "latency": 1.0}


def test_tables_compare_matched_points():
    """Table I and the surrogate table average only points present under every encoding (or
    surrogate), so a heat-map grid under one encoding does not outweigh the others."""
    from models.dse_plots import tables

    def row(enc, beta, acc, sur="fast_sigmoid", slope=25.0):
        return {"key": f"{enc}{beta}{sur}", "neuron": "lif", "beta": beta, "threshold": 1.0,
                "encoding": enc, "surrogate": sur, "slope": slope, "sparsity": 0.5,
                "weight_bits": 8, "golden_accuracy": acc, "spikes_per_inference": 100 * acc,
                "cycles_per_inference": 1000, "inferences_per_s": 45000}
    rows = [row("direct", 0.5, 0.9), row("direct", 0.7, 0.5), row("rate", 0.7, 0.4),
            row("direct", 0.7, 0.3, "atan", 2.0)]
    text = tables({"rows": rows, "summary": {"codesign": [], "pareto_accuracy_vs_rate": [],
                                             "pareto_accuracy_vs_cells": []}})
    assert "| direct | lif | 1 | 50.00 | 50 | 90.00 at 0.5 / 1 |" in text
    assert "| rate | lif | 1 | 40.00 | 40 | 40.00 at 0.7 / 1 |" in text
    assert "| fast_sigmoid | 25 | 1 | 50.00 |" in text and "| atan | 2 | 1 | 30.00 |" in text


def test_pareto_front():
    rows = [{"a": 0.9, "r": 10}, {"a": 0.8, "r": 30}, {"a": 0.7, "r": 20},
            {"a": 0.95, "r": 5}, {"a": 0.8, "r": None}]
    assert sorted(pareto_front(rows, "a", "r")) == [0, 1, 3]


@pytest.mark.parametrize("args, message", [
    (["--beta", "0.5"], "--beta is swept in a dse: give --betas instead"),
    (["--encodings", "morse"], "--encodings: 'morse' is not one of"),
    (["--neurons", "lapicque", "--betas", "0.2"], "The grid is empty"),
    (["--formats", "zip"], "--formats: 'zip' is not one of"),
    (["--workers", "0"], "--workers"),
    (["--measure", "-1"], "--measure"),
    (["--cosim-samples", "1"], "--cosim-samples"),
    (["--study", "paper", "--encodings", "rate"], "--study paper sets the encodings"),
])
def test_refusals(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["dse", *args, "-o", str(tmp_path / "x")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.slow
def test_mini_sweep_on_a_separately_started_scheduler(tmp_path):
    """The cluster path: a scheduler and two workers started as their own processes (as on a
    user's cluster), the sweep pointed at the scheduler's address."""
    bindir = Path(sys.executable).parent
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(120):
            if sched_file.exists() and sched_file.read_text().strip():
                break
            time.sleep(0.5)
        address = json.loads(sched_file.read_text())["address"]
        for _ in range(2):
            procs.append(subprocess.Popen(
                [str(bindir / "dask"), "worker", address, "--nthreads", "1", "--no-dashboard"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        out = tmp_path / "dse"
        r = subprocess.run([sys.executable, "-m", "models", *MINI, "--scheduler", address,
                            "-o", str(out)], cwd=ROOT, capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"scheduler {address}" in r.stderr
        assert len(json.loads((out / "dse.json").read_text())["rows"]) == 8
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.mark.slow
def test_measured_rows_and_balanced_lanes(tmp_path):
    """Cosimulation and boards fit in the loop: the cycle model's error on a measured row, and
    per-layer lanes at the throughput of uniform ones with the logic cells saved."""
    out = tmp_path / "dse"
    args = [a for a in MINI if a not in ("0.5,0.9", "0.5,2")]
    args[args.index("--betas") + 1:args.index("--betas") + 1] = ["0.9"]
    args[args.index("--thresholds") + 1:args.index("--thresholds") + 1] = ["1"]
    args[args.index("--measure") + 1] = "1"
    assert main(args + ["--balance", "--cosim-samples", "2", "-o", str(out)]) == 0
    result = json.loads((out / "dse.json").read_text())
    measured = [r for r in result["rows"] if r.get("model_error") is not None]
    assert len(measured) == 1 and measured[0]["cosim_passed"]
    assert abs(measured[0]["model_error"]) <= 0.10
    codesign = result["summary"]["codesign"]
    assert len(codesign) == 1
    c = codesign[0]
    assert c["balanced_cycles"] <= c["uniform_cycles"] * 1.02
    assert c["logic_cells_saved"] == c["uniform_logic_cells"] - c["balanced_logic_cells"]


def test_balanced_lanes_of_a_csnn():
    """One lane count per neuron layer (pool layers take none), never more than the uniform
    count, and the balanced design is as fast as the uniform one by the cycle model."""
    import numpy as np

    from models import golden
    from models.dse import HardwareConfig, balanced_lanes, hardware_figures
    from models.synth import random_csnn_bundle, random_events
    b = random_csnn_bundle(in_shape=(1, 8, 8), channels=(4, 6), seed=2, steps=4, sparsity=0.5)
    ev = random_events(np.random.default_rng(2), samples=3, steps=4, n_in=b.input.size,
                       density=0.3)
    b.vectors = golden.make_vectors(b, ev, 3)
    lanes = balanced_lanes(b, 4)
    assert len(lanes) == len(b.neuron_layers) == 3
    assert all(1 <= n <= 4 for n in lanes) and min(lanes) < 4
    uniform = hardware_figures(b, HardwareConfig(lanes=4), 45.0)
    balanced = hardware_figures(b, HardwareConfig(lanes=lanes), 45.0)
    assert balanced["cycles_per_inference"] <= uniform["cycles_per_inference"] * 1.02
