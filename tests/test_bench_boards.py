"""benchmarks/bench_boards.py's arithmetic: rows from build reports and the cost of a lane."""
import pytest

from tests.test_benchmark_results import load_script

bench = load_script("benchmarks/bench_boards.py")


def report(lc, fmax, clock):
    return {"resources": {"logic_cells": lc, "logic_cells_total": 5280, "ffs": 1, "bram": 2,
                          "bram_total": 30, "dsp": 1},
            "fmax_mhz": fmax, "clock_mhz": clock, "timing_met": fmax >= clock,
            "attempts": [{"clock_mhz": 48.0, "seed": 1, "fmax_mhz": 40.0, "timing_met": False,
                          "build_seconds": 10.0},
                         {"clock_mhz": clock, "seed": 2, "fmax_mhz": fmax, "timing_met": True,
                          "build_seconds": 5.0}]}


def test_row_from_report():
    row = bench.make_row("icebreaker", 1, [1000, 3000], report(3000, 41.0, 39.75), 250.0,
                         1_000_000)
    assert set(row) == bench.ROW_KEYS
    assert row["cycles"] == 2000
    assert row["inferences_per_s"] == pytest.approx(39.75e6 / 2000)
    assert row["link_inferences_per_s"] == pytest.approx(100_000 / 250.0)
    assert row["build_seconds"] == 15.0 and len(row["attempts"]) == 2
    assert row["error"] is None


def test_row_of_a_failed_build():
    row = bench.make_row("icebreaker", 8, [10], {"error": "does not fit"}, 250.0, 1_000_000)
    assert row["error"] == "does not fit" and row["logic_cells"] is None


def test_lane_cost():
    rows = [bench.make_row("ulx3s", lanes, [10], report(lc, 100.0, 90.0), 1.0, 1_000_000)
            for lanes, lc in ((1, 3000), (2, 3500), (4, 4500), (8, 6500))]
    rows.append(bench.make_row("icebreaker", 1, [10], report(3000, 45.0, 44.0), 1.0, 1_000_000))
    rows.append(bench.make_row("icebreaker", 2, [10], {"error": "x"}, 1.0, 1_000_000))
    cost = bench.lane_cost(rows)
    assert cost["icebreaker"] is None                   # one build: no slope
    assert cost["ulx3s"]["logic_cells_per_lane"] == pytest.approx(500.0)
    assert [s["logic_cells_per_lane"] for s in cost["ulx3s"]["steps"]] == [500, 500, 500]


def test_per_layer_lanes_rows():
    row = bench.make_row("icebreaker", (2, 1), [10], report(4036, 43.0, 42.0), 1.0, 1_000_000)
    assert row["lanes"] == [2, 1] and bench.tag(row["lanes"]) == "2-1"
    good = bench.make_row("icebreaker", 1, [10], report(3000, 45.0, 44.0), 1.0, 1_000_000)
    assert bench.lane_cost([row, good])["icebreaker"] is None     # a per-layer row: no slope
    table = bench.format_table([row], {}, type("B", (), {"layers": [], "input": type(
        "I", (), {"steps": 3})})(), type("A", (), {"bundle": bench.REPO / "x", "samples": 1,
                                                   "baud": 1_000_000})())
    assert "| icebreaker | 2,1 | 4036 / 5280 |" in table


def test_jobs_must_be_positive(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--jobs", "0"])
    assert exc.value.code == 2
    assert "--jobs 0: must be at least 1" in capsys.readouterr().err
