"""python -m boards fit: the verdict and advice, the platform's nextpnr options, usage errors, and
real quick syntheses (a small layer in the default run; the zoo networks against their real
builds with -m slow)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from boards.build import default_capacity
from hdl.protocol import sample_stream
from boards.fit import (PLACEABLE, _judge, _nextpnr_device_args, fit,
                        format_fit)
from boards.top import board
from models import bundle as B
from models import golden
from models.bundle import save
from models.synth import random_events, random_linear_bundle

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "models" / "zoo"


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "boards", "fit", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    bundle = random_linear_bundle(n_in=16, n_out=8, sparsity=0.5, seed=3, steps=4)
    events = random_events(np.random.default_rng(3), samples=2, steps=4, n_in=16, density=0.3)
    bundle.vectors = golden.make_vectors(bundle, events, 2)
    return save(bundle, tmp_path_factory.mktemp("fit") / "bundle")


@pytest.mark.parametrize("args, message", [
    ([], r"the following arguments are required: --bundle"),
    (["--bundle", "x", "--board", "arty"], r"argument --board: invalid choice: 'arty'"),
    (["--bundle", "x", "--lanes", "0"], r"argument --lanes: must be in \[1, 16\], not 0"),
    (["--bundle", "x", "--capacity", "many"],
     r"argument --capacity: must be an integer, not 'many'"),
    (["--bundle", "models/zoo/digits_mlp", "--variant", "85F"],
     r"--variant applies to ulx3s, not icebreaker"),
    (["--bundle", "models/zoo/digits_mlp", "--lanes", "2,1,1"],
     r"--lanes must give one number or one per neuron layer \(2\), not 3"),
    (["--bundle", "no/such/bundle"], r"no/such/bundle"),
])
def test_usage_errors_are_one_line_exit_2(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1
    assert re.search(r"^python -m boards fit: error: .*" + message, proc.stderr), proc.stderr


def test_nextpnr_device_options_come_from_the_platform_script():
    script = ('set -e\n"$YOSYS" -q -l top.rpt top.ys\n"$NEXTPNR_ECP5" --quiet '
              '--timing-allow-fail --seed 3 --log top.tim --85k --package CABGA381 --speed 6 '
              '--json top.json --lpf top.lpf --textcfg top.config\n"$ECPPACK" a b\n')
    assert _nextpnr_device_args(script, "NEXTPNR_ECP5") == [
        "--85k", "--package", "CABGA381", "--speed", "6", "--lpf", "top.lpf"]
    script = ('"$NEXTPNR_ICE40" --quiet --log t.tim --up5k --package sg48 --json t.json '
              '--pcf t.pcf --asc t.asc\n')
    assert _nextpnr_device_args(script, "NEXTPNR_ICE40") == [
        "--up5k", "--package", "sg48", "--pcf", "t.pcf"]


def test_default_event_buffer_holds_the_largest_sample():
    bundles = [B.load(ZOO / name) for name in ("digits_mlp", "digits_csnn")]
    for seed, density in ((4, 0.02), (5, 0.5)):
        b = random_linear_bundle(n_in=64, n_out=4, sparsity=0.5, seed=seed, steps=40)
        events = random_events(np.random.default_rng(seed), samples=5, steps=40, n_in=64,
                               density=density)
        b.vectors = golden.make_vectors(b, events, 5)
        bundles.append(b)
    b = random_linear_bundle(n_in=64, n_out=4, sparsity=0.5, seed=6, steps=4)
    bundles.append(b)                                   # no vectors: a full input every step
    def reference(b):                                   # every sample's stream, built
        steps, v = b.input.steps, b.vectors
        need = b.input.size * steps + steps
        if v is not None and v.samples:
            need = max(len(sample_stream(v.events[v.events[:, 0] == s][:, 1:], steps))
                       for s in range(v.samples))
        return min(65535, max(256, 1 << (need - 1).bit_length()))

    capacities = [default_capacity(b) for b in bundles]
    assert capacities == [reference(b) for b in bundles]
    assert len(set(capacities)) >= 3


def report_with(lc, bram=10, dsp=2, lanes=1, spram=0):
    return {"device": "iCE40UP5K-SG48", "lanes": lanes, "capacity": 1024,
            "resources": {"logic_cells": {"used": lc, "total": 5280, "fraction": lc / 5280},
                          "bram": {"used": bram, "total": 30, "fraction": bram / 30},
                          "spram": {"used": spram, "total": 4, "fraction": spram / 4},
                          "dsp": {"used": dsp, "total": 8, "fraction": dsp / 8}},
            "seconds": {"elaborate": 1.0, "synthesis": 5.0, "packing": 1.0}}


def test_verdict_names_the_resource_that_runs_out_and_what_to_change():
    mlp = B.load(ZOO / "digits_mlp")
    csnn = B.load(ZOO / "digits_csnn")
    ice40 = board("icebreaker")
    judged = _judge(report_with(3094), mlp, ice40)
    assert judged == {"verdict": "fits", "limits": [], "advice": []}
    # The digits MLP at 2 lanes: 5,075 cells did not place (96 %).
    judged = _judge(report_with(5081, lanes=2), mlp, ice40)
    assert judged["verdict"] == "does not fit"
    assert judged["limits"] == ["logic cells: 5081 of 5280 (96 %), above the 95 % that "
                                "places in practice"]
    assert judged["advice"][0].startswith("fewer lanes")
    assert judged["advice"][-1].startswith("a bigger board: --board ulx3s")
    assert _judge(report_with(4900), mlp, ice40)["verdict"] == "tight"
    assert 4900 / 5280 < PLACEABLE
    judged = _judge(report_with(8000, bram=34, dsp=9), csnn, ice40)
    assert judged["limits"] == ["logic cells: 8000 needed, 5280 on the iCE40UP5K-SG48",
                                "block RAM: 34 needed, 30 on the iCE40UP5K-SG48",
                                "DSP: 9 needed, 8 on the iCE40UP5K-SG48"]
    advice = " | ".join(judged["advice"])
    for hint in ("--channels", "--weight-bits 4", "--sparsity 0.9", "--capacity",
                 "--leak shift", "--board ulx3s"):
        assert hint in advice
    assert "fewer lanes" not in advice                  # it already has one lane
    assert "SPRAM" not in advice                        # convolutions keep ROM weights
    # The MNIST MLP's 103 block RAMs: its weights can go to SPRAM, loaded at run time.
    advice = " | ".join(_judge(report_with(4122, bram=103), mlp, ice40)["advice"])
    assert "weights in SPRAM, loaded at run time (--weights load; 4 free" in advice
    text = format_fit({**report_with(8000, bram=34, dsp=9), "board": "icebreaker", **judged})
    assert "verdict     does not fit" in text and "runs out    block RAM: 34 needed" in text


def test_quick_synthesis_of_a_small_layer(small_bundle, tmp_path):
    """One real synthesis and packing (a 16 -> 8 layer: a few seconds), through the CLI."""
    out = tmp_path / "fit.json"
    proc = run_cli("--bundle", str(small_bundle), "--json", str(out), "-o",
                   str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    r = report["resources"]
    assert report["verdict"] == "fits" and report["limits"] == [] and report["advice"] == []
    assert (r["logic_cells"]["total"], r["bram"]["total"], r["spram"]["total"],
            r["dsp"]["total"]) == (5280, 30, 4, 8)
    # The host link alone takes several hundred cells and a block RAM (the event buffer).
    # (With BATCH and its second buffer half, about 2,400 cells for this 16 -> 8 layer.)
    assert 300 < r["logic_cells"]["used"] < 3000 and r["bram"]["used"] >= 1
    assert r["spram"]["used"] == 0
    assert report["cells"]["SB_LUT4"] > 0 and report["cells"]["SB_RAM40_4K"] == r["bram"]["used"]
    assert f"logic cells {r['logic_cells']['used']:>6} / 5280" in proc.stdout
    assert "verdict     fits" in proc.stdout
    assert (tmp_path / "work" / "snn_board.json").is_file()


# Post place-and-route logic cells of real builds (docs/boards.md) and what fit must say.
REAL_BUILDS = [
    ("icebreaker", "digits_mlp", 1, 3095, "fits"),
    ("icebreaker", "digits_mlp", 2, 5075, "does not fit"),
    ("icebreaker", "digits_csnn", 1, None, "does not fit"),
]


@pytest.mark.slow
@pytest.mark.parametrize("board_name, name, lanes, real, verdict", REAL_BUILDS)
def test_estimate_against_real_builds(board_name, name, lanes, real, verdict):
    report = fit(B.load(ZOO / name), board_name=board_name, lanes=lanes)
    assert report["verdict"] == verdict
    if real is not None:
        # The hardware moves on; the estimate of the same design is within a few per cent.
        assert report["resources"]["logic_cells"]["used"] == pytest.approx(real, rel=0.05)
