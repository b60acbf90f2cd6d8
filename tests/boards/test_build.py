# amaranth: UnusedElaboratable=no
"""PLL settings, clock choice and search, report parsing, board top elaboration; bitstream
builds (slow)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import boards.build
from boards.build import (
    CLOCK_SEEDS,
    MAX_ATTEMPTS,
    RETRY_FLOOR,
    build,
    clock_for,
    clock_reason,
    default_capacity,
    failure_message,
    parse_nextpnr,
    parse_yosys,
    summary,
)
from boards.pll import ICE40_OUT, ICE40_PFD, ICE40_VCO, ecp5_pll, ice40_pll
from boards.top import BOARDS, BoardTop, board
from models.synth import random_linear_bundle

REPO = Path(__file__).resolve().parents[2]
MBAUD = 1_000_000      # the clock searches below were worked out at 1 Mbaud


def next_attempt(history, b, *, baud=MBAUD, **kwargs):
    return boards.build.next_attempt(history, b, baud=baud, **kwargs)


def icepll(f_in_mhz, f_out_mhz):
    """What Project IceStorm's icepll (the YoWASP build) achieves for a target."""
    tool = Path(sys.executable).parent / "yowasp-icepll"
    out = subprocess.run([str(tool), "-i", str(f_in_mhz), "-o", str(f_out_mhz)],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"F_PLLOUT:\s+([\d.]+) MHz \(achieved\)", out)[1])


@pytest.mark.parametrize("target", [24, 30, 36, 48, 60, 72])
def test_ice40_pll_reaches_what_icepll_reaches(target):
    pll = ice40_pll(12e6, target * 1e6)
    p = pll.params
    pfd = 12e6 / (p["DIVR"] + 1)
    vco = pfd * (p["DIVF"] + 1)
    assert ICE40_PFD[0] <= pfd <= ICE40_PFD[1] and ICE40_VCO[0] <= vco <= ICE40_VCO[1]
    assert pll.f_out == pytest.approx(vco / 2 ** p["DIVQ"])
    assert pll.f_out == pytest.approx(icepll(12, target) * 1e6, abs=1e3)


def test_ice40_pll_never_exceeds_target():
    for target in range(17, 120, 3):
        pll = ice40_pll(12e6, target * 1e6 + 0.5e6)
        assert ICE40_OUT[0] <= pll.f_out <= target * 1e6 + 0.5e6


@pytest.mark.parametrize("target", [50, 75, 100, 125])
def test_ecp5_pll(target):
    pll = ecp5_pll(25e6, target * 1e6)
    p = pll.params
    assert pll.f_out == pytest.approx(25e6 * p["CLKFB_DIV"] / p["CLKI_DIV"])
    assert 400e6 <= pll.f_out * p["CLKOP_DIV"] <= 800e6
    assert pll.f_out == pytest.approx(target * 1e6)       # all reachable exactly from 25 MHz


def test_pll_unreachable():
    with pytest.raises(ValueError, match=r"^No iCE40 PLL setting gives 16 to 10 MHz from "
                                         r"12 MHz$"):
        ice40_pll(12e6, 10e6)


def test_clock_for_keeps_the_baud_rate():
    icebreaker = board("icebreaker")
    pll, clock, divisor = clock_for(icebreaker, 27.5e6, 4_000_000)
    assert abs(clock / divisor - 4_000_000) / 4_000_000 <= 0.02 and clock <= 27.5e6
    assert clock_for(icebreaker, 12e6, 1_000_000) == (None, 12e6, 12)


def test_default_capacity():
    bundle = random_linear_bundle(n_in=64, n_out=4, sparsity=0.5, steps=10)
    assert default_capacity(bundle) == 1024               # 64 * 10 + 10 events, rounded up


def test_unknown_board():
    with pytest.raises(ValueError, match=r"^Board must be one of icebreaker, ulx3s, not 'x'$"):
        board("x")
    with pytest.raises(ValueError, match=r"^Variant must be one of 12F, 25F, 45F, 85F, "
                                         r"not '99F'$"):
        BOARDS["ulx3s"].platform("99F")


NEXTPNR_LOG = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:    10/  5280     0%
Info: Placed 3 cells based on constraints.
Info: Device utilisation:
Info: \t         ICESTORM_LC:  2004/  5280    37%
Info: \t        ICESTORM_RAM:     4/    30    13%
Info: \t               SB_IO:     4/    96     4%
Info: \t        ICESTORM_PLL:     1/     1   100%

Info: Max frequency for clock 'clk': 25.00 MHz (FAIL at 48.00 MHz)
Info: Routing..
Info: Max frequency for clock 'clk': 30.03 MHz (FAIL at 48.00 MHz)
"""

YOSYS_LOG = """\
=== snn_board ===

        +----------Local Count, excluding submodules.
       38 cells
     1476   SB_LUT4
      500   SB_DFFE
      366   SB_DFFESR

=== design hierarchy ===
     1476   SB_LUT4
      500   SB_DFFE
      366   SB_DFFESR
        4   SB_RAM40_4K
"""


def test_parse_logs():
    parsed = parse_nextpnr(NEXTPNR_LOG)
    assert parsed["utilisation"] == {"ICESTORM_LC": [2004, 5280], "ICESTORM_RAM": [4, 30],
                                     "SB_IO": [4, 96], "ICESTORM_PLL": [1, 1]}
    assert parsed["clocks"] == {"clk": {"fmax_mhz": 30.03, "target_mhz": 48.0, "pass": False}}
    assert parse_yosys(YOSYS_LOG) == {"SB_LUT4": 1476, "SB_DFFE": 500, "SB_DFFESR": 366,
                                      "SB_RAM40_4K": 4}


def test_failure_messages():
    log = "Info: Placed 8 cells\nERROR: Failed to expand region (0, 0) |_> (25, 31) of 5685 " \
          "ICESTORM_LCs\n"
    assert failure_message(log, "iCE40UP5K-SG48") == (
        "does not fit the iCE40UP5K-SG48: 5685 logic cells needed, 5280 available")
    assert failure_message("ERROR: Unable to place cell 'x'\n", "LFE5U-85F-CABGA381") == (
        "build for the LFE5U-85F-CABGA381 failed (ERROR: Unable to place cell 'x')")
    assert failure_message("ERROR: Unable to place cell 'a_LC', no BELs remaining to implement "
                           "cell type 'ICESTORM_LC'\n", "iCE40UP5K-SG48") == (
        "does not fit the iCE40UP5K-SG48: not enough logic cells")
    assert failure_message("ERROR: Unable to place cell 'b_DSP', no BELs remaining to implement "
                           "cell type 'ICESTORM_DSP'\n", "iCE40UP5K-SG48") == (
        "does not fit the iCE40UP5K-SG48: not enough DSP blocks")
    assert failure_message("Info: \t ICESTORM_LC:  6012/  5280   113%\nERROR: Unable to place "
                           "cell 'a_LC', no BELs remaining to implement cell type "
                           "'ICESTORM_LC'\n", "iCE40UP5K-SG48") == (
        "does not fit the iCE40UP5K-SG48: 6012 logic cells needed, 5280 available")
    assert failure_message("Info: \t ICESTORM_LC:  5075/  5280    96%\nERROR: Unable to find "
                           "legal placement for all cells, design is probably at utilisation "
                           "limit.\n", "iCE40UP5K-SG48") == (
        "does not place on the iCE40UP5K-SG48: 5075 of 5280 logic cells (96 %) and no legal "
        "placement")
    assert failure_message("Info: nothing wrong\n", "iCE40UP5K-SG48") is None


@pytest.mark.parametrize("name, clock", [("icebreaker", 30e6), ("icebreaker", 12e6),
                                         ("ulx3s", 100e6)])
def test_board_top_elaborates(name, clock):
    """The board top with its PLL and pins goes through Amaranth's platform flow (no tools)."""
    from hdl.link import HostLink
    from tests.hdl.standin import StandIn
    bundle = random_linear_bundle(n_in=8, n_out=4, sparsity=0.5, steps=3)
    b = board(name)
    pll, clock_hz, divisor = clock_for(b, clock, 1_000_000)
    link = HostLink(StandIn(bundle), n_in=8, n_out=4, divisor=divisor, capacity=64,
                    timeout=1000, clock_hz=int(clock_hz))
    plan = b.platform().prepare(BoardTop(link, clock_hz=clock_hz, pll=pll), "snn_board")
    text = plan.files["snn_board.il"]
    if pll is None:
        assert "SB_PLL40_PAD" not in text and "EHXPLLL" not in text
    else:
        assert ("SB_PLL40_PAD" if b.family == "ice40" else "EHXPLLL") in text


ICEBREAKER, ULX3S = board("icebreaker"), board("ulx3s")


def attempt(clock_mhz, seed, fmax_mhz):
    return {"clock_mhz": clock_mhz, "seed": seed, "fmax_mhz": fmax_mhz,
            "timing_met": fmax_mhz is not None and fmax_mhz >= clock_mhz}


def search(b, fmax, **kwargs):
    """Run :func:`next_attempt` to its end against ``fmax(clock_mhz, seed)``: the attempts."""
    history = []
    while (step := next_attempt(history, b, **kwargs)) is not None:
        clock_hz, seed = step
        history.append(attempt(clock_hz / 1e6, seed, fmax(clock_hz / 1e6, seed)))
        assert len(history) <= MAX_ATTEMPTS + 1
    return history


def test_search_first_attempt():
    assert next_attempt([], ICEBREAKER) == (48e6, 1)
    assert next_attempt([], ULX3S) == (125e6, 1)
    assert next_attempt([], ICEBREAKER, seed=7, aim_mhz=22) == (21.75e6, 7)   # baud within 2 %
    assert next_attempt([], ICEBREAKER, clock_mhz=24) == (24e6, 1)
    with pytest.raises(ValueError, match=r"^Baud rate 4000000 needs at least 4 clock cycles"):
        next_attempt([], ICEBREAKER, clock_mhz=12, baud=4_000_000)


def test_search_ends_when_met_or_without_fmax():
    assert next_attempt([attempt(48, 1, 50.0)], ICEBREAKER) is None
    assert next_attempt([attempt(48, 1, None)], ICEBREAKER) is None
    assert next_attempt([attempt(24, 1, None)], ICEBREAKER, clock_mhz=24) is None
    assert next_attempt([attempt(24, 1, 23.0), attempt(24, 2, 24.1)], ICEBREAKER,
                        clock_mhz=24) is None


def test_search_after_a_miss_aims_under_the_best_fmax():
    # The headline layer's figures with one seed: 35.35 MHz asked for 48, 33.66 for 33.75.
    history = [attempt(48, 1, 35.35)]
    assert next_attempt(history, ICEBREAKER) == (33.75e6, 2)          # <= 97 % of 35.35
    history.append(attempt(33.75, 2, 33.66))
    assert next_attempt(history, ICEBREAKER) == (33e6, 3)             # <= 95 %, below 33.75
    history.append(attempt(33.0, 3, 32.9))
    assert next_attempt(history, ICEBREAKER) == (32.625e6, 4)         # <= 93 %, below 33.0
    # ECP5: 101.73 MHz asked for 125.
    clock, seed = next_attempt([attempt(125, 1, 101.73)], ULX3S)
    assert clock == clock_for(ULX3S, 0.97 * 101.73e6, 1_000_000)[1] == 96.875e6 and seed == 2


def test_search_goes_down_with_a_new_seed_each_time_then_to_the_oscillator():
    # Adversarial: every PLL clock misses by 1 %; the oscillator meets.
    history = search(ICEBREAKER, lambda clock, seed: 0.99 * clock if clock > 12 else 40.0)
    assert len(history) == MAX_ATTEMPTS + 1
    clocks = [h["clock_mhz"] for h in history]
    assert clocks == sorted(clocks, reverse=True) and len(set(clocks)) == len(clocks)
    assert [h["seed"] for h in history] == list(range(1, MAX_ATTEMPTS + 2))
    assert history[-1] == attempt(12.0, MAX_ATTEMPTS + 1, 40.0) and history[-1]["timing_met"]
    assert all(not h["timing_met"] for h in history[:-1])
    # The margin grows: the last PLL clock is at most 85 % of the best Fmax.
    assert clocks[-2] <= 0.85 * 0.99 * 48
    # Fewer PLL attempts when asked; the oscillator missing too ends the search.
    history = search(ICEBREAKER, lambda clock, seed: 0.9 * clock, max_attempts=2)
    assert [h["clock_mhz"] for h in history] == [48.0, 41.25, 12.0]
    assert not history[-1]["timing_met"]


def test_search_never_aims_above_the_last_fmax():
    # Digits MLP on the UP5K: a lucky first seed (46.96 asked for 48), then 42.61 asked for 45.
    history = [attempt(48, 1, 46.96), attempt(45, 2, 42.61)]
    assert next_attempt(history, ICEBREAKER) == (42e6, 3)     # <= 42.61, not 95 % of 46.96


def test_search_meets_on_a_later_seed():
    # Seed 1 at 48 reaches 35.35; the clock under it misses with seed 2, meets with seed 3.
    history = search(ICEBREAKER, lambda clock, seed: {1: 35.35, 2: 33.66}.get(seed, 33.4))
    assert [(h["clock_mhz"], h["seed"], h["timing_met"]) for h in history] == [
        (48.0, 1, False), (33.75, 2, False), (33.0, 3, True)]


def test_search_falls_to_the_oscillator_below_the_pll_range():
    assert next_attempt([attempt(48, 1, 15.0)], ICEBREAKER) == (12e6, 2)
    assert next_attempt([attempt(48, 1, 15.0), attempt(12, 2, 11.0)], ICEBREAKER) is None
    assert next_attempt([attempt(125, 1, 24.0)], ULX3S) == (25e6, 2)
    assert RETRY_FLOOR["ice40"] >= ICE40_OUT[0] and RETRY_FLOOR["ecp5"] == ULX3S.oscillator
    # A baud rate the oscillator cannot carry (12 MHz / 4 Mbaud = 3 cycles a bit): no fallback.
    assert next_attempt([attempt(48, 1, 15.0)], ICEBREAKER, baud=4_000_000) is None


def test_search_requested_clock_tries_seeds_while_close():
    assert next_attempt([attempt(24, 1, 23.5)], ICEBREAKER, clock_mhz=24) == (24e6, 2)
    assert next_attempt([attempt(24, 1, 22.0)], ICEBREAKER, clock_mhz=24) is None  # 8 % short
    history = search(ICEBREAKER, lambda clock, seed: 23.9, clock_mhz=24)
    assert [(h["clock_mhz"], h["seed"]) for h in history] == [(24, 1), (24, 2), (24, 3)]
    assert len(history) == CLOCK_SEEDS
    history = search(ICEBREAKER, lambda clock, seed: 23.4 + seed / 5, clock_mhz=24, seed=2)
    assert [(h["seed"], h["timing_met"]) for h in history] == [(2, False), (3, True)]


def test_clock_reason():
    history = [attempt(48, 1, 35.35), attempt(33.75, 2, 33.66), attempt(33.0, 3, 34.1)]
    assert clock_reason(history, ICEBREAKER, requested=False) == (
        "automatic: the first clock that met timing on the way down; 3 attempts: "
        "48.00 MHz seed 1 missed (Fmax 35.35), 33.75 MHz seed 2 missed (Fmax 33.66), "
        "33.00 MHz seed 3 met (Fmax 34.10)")
    assert clock_reason([attempt(48, 1, 50.0)], ICEBREAKER, requested=False) == (
        "automatic: the first clock tried met timing; 1 attempt: 48.00 MHz seed 1 met "
        "(Fmax 50.00)")
    assert clock_reason([attempt(48, 1, 15.0), attempt(12, 2, 15.5)], ICEBREAKER,
                        requested=False).startswith(
        "automatic: the 12 MHz oscillator, after the PLL clocks tried missed timing; 2 attempts")
    assert clock_reason([attempt(48, 1, 10.0), attempt(12, 2, 10.5)], ICEBREAKER,
                        requested=False).startswith(
        "automatic: timing not met even at the 12 MHz oscillator; 2 attempts")
    assert clock_reason([attempt(48, 1, None)], ICEBREAKER, requested=False).startswith(
        "automatic: stopped, nextpnr reported no Fmax; 1 attempt: 48.00 MHz seed 1 missed "
        "(no Fmax)")
    assert clock_reason([attempt(24, 1, 23.0)], ICEBREAKER, requested=True).startswith(
        "requested clock, timing not met with any seed; 1 attempt")
    assert clock_reason([attempt(24, 1, 23.0), attempt(24, 2, 24.5)], ICEBREAKER,
                        requested=True).startswith("requested clock; 2 attempts")


def fake_builds(monkeypatch, fmax):
    """Stand in for Yosys and nextpnr: each attempt writes a bitstream naming its clock and
    seed and reaches ``fmax(clock_mhz, seed)``. Returns the list of ``(clock_hz, seed)`` built."""
    calls = []

    def build_once(bundle, b, variant, *, clock_hz, baud, capacity, lanes, accelerator, out,
                   seed, env, replay=None):
        pll, clock_hz, divisor = clock_for(b, clock_hz, baud)
        calls.append((clock_hz, seed))
        out.mkdir(parents=True)
        bitstream = out / f"snn_board.{'bin' if b.family == 'ice40' else 'bit'}"
        bitstream.write_text(f"{clock_hz} {seed}")
        (out / "snn_board.tim").write_text("nextpnr log")
        reached = fmax(clock_hz / 1e6, seed)
        return {"clock_mhz": clock_hz / 1e6, "pll": None if pll is None else dict(pll.params),
                "seed": seed, "fmax_mhz": reached,
                "timing_met": reached is not None and reached >= clock_hz / 1e6,
                "clocks": {}, "utilisation": {},
                "resources": {"logic_cells": 2400, "logic_cells_total": 5280, "luts": 2000,
                              "ffs": 900, "bram": 10, "bram_total": 30, "dsp": 0,
                              "dsp_total": 8},
                "link": {"baud": baud, "divisor": divisor, "capacity": capacity},
                "bitstream": str(bitstream), "build_seconds": 1.0}

    monkeypatch.setattr(boards.build, "_build_once", build_once)
    monkeypatch.setattr(boards.build, "tool_env", dict)
    return calls


def test_build_puts_the_attempt_that_met_timing_on_top(tmp_path, monkeypatch):
    calls = fake_builds(monkeypatch, lambda clock, seed: {1: 35.35, 2: 33.66}.get(seed, 34.1))
    (tmp_path / "try9").mkdir()                                  # an earlier build's leftovers
    (tmp_path / "snn_board.bin").write_text("stale")
    (tmp_path / "notes.txt").write_text("not ours")
    bundle = random_linear_bundle(n_in=8, n_out=4, sparsity=0.5, steps=3)
    report = build(bundle, baud=MBAUD, build_dir=tmp_path, log=lambda text: None)
    assert calls == [(48e6, 1), (33.75e6, 2), (33e6, 3)]
    assert sorted(p.name for p in tmp_path.glob("try*")) == ["try1", "try2", "try3"]
    assert (tmp_path / "notes.txt").exists()
    assert report["bitstream"] == str(tmp_path / "snn_board.bin")
    assert (tmp_path / "snn_board.bin").read_text() == "33000000.0 3"
    assert (tmp_path / "snn_board.tim").read_text() == "nextpnr log"
    assert report["timing_met"] and report["attempt"] == 3 and report["seed"] == 3
    assert (report["clock_mhz"], report["fmax_mhz"]) == (33.0, 34.1)
    assert report["clock_choice"] == "automatic"
    assert [(a["attempt"], a["folder"], a["clock_mhz"], a["seed"], a["fmax_mhz"],
             a["timing_met"]) for a in report["attempts"]] == [
        (1, str(tmp_path / "try1"), 48.0, 1, 35.35, False),
        (2, str(tmp_path / "try2"), 33.75, 2, 33.66, False),
        (3, str(tmp_path / "try3"), 33.0, 3, 34.1, True)]
    assert report["clock_reason"] == clock_reason(report["attempts"], ICEBREAKER,
                                                  requested=False)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    text = summary(report)
    assert re.search(r"^clock       33\.00 MHz \(PLL from 12 MHz\), automatic: the first clock "
                     r"that met timing on the way down$", text, re.MULTILINE)
    assert re.search(r"^attempts    1: 48\.00 MHz seed 1, Fmax 35\.35 MHz, missed \(1 s\)$\n"
                     r"^            2: 33\.75 MHz seed 2, Fmax 33\.66 MHz, missed \(1 s\)$\n"
                     r"^            3: 33\.00 MHz seed 3, Fmax 34\.10 MHz, met \(1 s\)   "
                     r"<- bitstream$", text, re.MULTILINE)
    assert re.search(r"^timing      met$", text, re.MULTILINE)


def test_build_without_a_clock_that_meets_timing_leaves_no_bitstream(tmp_path, monkeypatch):
    fake_builds(monkeypatch, lambda clock, seed: 0.9 * clock)
    bundle = random_linear_bundle(n_in=8, n_out=4, sparsity=0.5, steps=3)
    report = build(bundle, baud=MBAUD, build_dir=tmp_path, log=lambda text: None)
    assert len(report["attempts"]) == MAX_ATTEMPTS + 1 and report["clock_mhz"] == 12.0
    assert not report["timing_met"] and report["bitstream"] is None and report["attempt"] is None
    assert not (tmp_path / "snn_board.bin").exists()
    assert report["clock_reason"].startswith("automatic: timing not met even at the 12 MHz "
                                             "oscillator; 7 attempts")
    assert re.search(r"^bitstream   none written$", summary(report), re.MULTILINE)


def test_build_at_a_requested_clock_keeps_the_best_seed(tmp_path, monkeypatch):
    calls = fake_builds(monkeypatch, lambda clock, seed: {1: 23.5, 2: 23.8, 3: 23.6}[seed])
    bundle = random_linear_bundle(n_in=8, n_out=4, sparsity=0.5, steps=3)
    report = build(bundle, baud=MBAUD, clock_mhz=24, build_dir=tmp_path, log=lambda text: None)
    assert calls == [(24e6, 1), (24e6, 2), (24e6, 3)]
    assert not report["timing_met"] and report["attempt"] == 2 and report["fmax_mhz"] == 23.8
    assert (tmp_path / "snn_board.bin").read_text() == "24000000.0 2"
    assert report["clock_choice"] == "requested"


def run_cli(*args, timeout=1800):
    return subprocess.run([sys.executable, "-m", "boards", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


@pytest.mark.slow
def test_icebreaker_build_end_to_end(tmp_path):
    """The headline layer on the iCEBreaker through the CLI, automatic clock: the bitstream in
    the build folder is the attempt that met timing, and the report tells the search."""
    proc = run_cli("build", "--board", "icebreaker", "--neurons", "64", "--sparsity", "0.75",
                   "-o", str(tmp_path), timeout=2 * 3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    bitstream = Path(report["bitstream"])
    assert bitstream == tmp_path / "snn_board.bin"
    assert bitstream.stat().st_size > 100_000                                    # UP5K image
    assert report["timing_met"] and report["fmax_mhz"] >= report["clock_mhz"]
    assert report["clock_choice"] == "automatic"
    attempts = report["attempts"]
    assert 1 <= len(attempts) <= MAX_ATTEMPTS + 1
    final = attempts[-1]
    assert report["attempt"] == final["attempt"] == len(attempts)
    assert final["timing_met"] and final["fmax_mhz"] >= final["clock_mhz"]
    assert (final["clock_mhz"], final["fmax_mhz"], final["seed"]) == (
        report["clock_mhz"], report["fmax_mhz"], report["seed"])
    assert not any(a["timing_met"] for a in attempts[:-1])
    assert [a["seed"] for a in attempts] == list(range(1, len(attempts) + 1))
    clocks = [a["clock_mhz"] for a in attempts]
    assert clocks == sorted(clocks, reverse=True) and len(set(clocks)) == len(clocks)
    assert report["clock_reason"].startswith("automatic: ")
    assert f"{len(attempts)} attempt" in report["clock_reason"]
    assert bitstream.read_bytes() == (Path(final["folder"]) / "snn_board.bin").read_bytes()
    r = report["resources"]
    assert 0 < r["logic_cells"] <= r["logic_cells_total"] == 5280
    assert r["ffs"] > 0 and r["luts"] > 0 and r["bram_total"] == 30
    assert r["pll"] == (1 if report["pll"] else 0)
    assert re.search(r"^timing      met$", proc.stdout, re.MULTILINE)
    assert re.search(rf"^clock       {report['clock_mhz']:.2f} MHz .*automatic", proc.stdout,
                     re.MULTILINE)
    assert (tmp_path / "bundle" / "vectors.npz").exists()


@pytest.mark.slow
def test_icebreaker_mnist_mlp_with_run_time_weights(tmp_path):
    """The 784-128-10 MNIST MLP, which needs 103 block RAMs with its weights in the bitstream,
    on the iCEBreaker with its weights loaded at run time: in SPRAM, timing met at 30 MHz with
    the 6 Mbaud link (docs/boards.md), INFO's ident the layout's."""
    from hdl.top import Accelerator
    from models.bundle import load
    zoo = Path(__file__).resolve().parents[2] / "models" / "zoo" / "mnist_mlp"
    proc = run_cli("build", "--board", "icebreaker", "--bundle", str(zoo), "--weights", "load",
                   "--clock", "30", "--baud", "6000000", "-o", str(tmp_path), timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["timing_met"] and report["fmax_mhz"] >= 30.0
    r = report["resources"]
    assert r["spram"] == 3 and r["bram"] <= r["bram_total"] == 30
    assert r["logic_cells"] <= 0.95 * r["logic_cells_total"]
    assert report["link"]["divisor"] == 5
    ident = Accelerator(load(zoo), weights="load", spram=4).weight_store.ident
    assert report["link"]["ident"] == f"0x{ident:08x}"


@pytest.mark.slow
def test_icebreaker_digits_mlp_with_rate_input(tmp_path):
    """The trained digits MLP with its rate input drawn on the board (--rate 4): timing met at
    36 MHz (docs/boards.md), replay on, a buffer for any sample (4 seed events + 64
    addresses: 256), two-byte events of address and intensity."""
    from hdl.protocol import bundle_ident
    from models.bundle import load
    zoo = Path(__file__).resolve().parents[2] / "models" / "zoo" / "digits_mlp"
    proc = run_cli("build", "--board", "icebreaker", "--bundle", str(zoo), "--rate", "4",
                   "--clock", "36", "-o", str(tmp_path), timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["timing_met"] and report["fmax_mhz"] >= 36.0
    link = report["link"]
    assert link["replay"] and link["capacity"] == 256 and link["event_bytes"] == 2
    assert link["ident"] == f"0x{bundle_ident(load(zoo)):08x}"
    r = report["resources"]
    assert r["logic_cells"] <= 0.95 * r["logic_cells_total"] and r["bram"] <= r["bram_total"]


@pytest.mark.slow
def test_ulx3s_build_end_to_end(tmp_path):
    proc = run_cli("build", "--board", "ulx3s", "--neurons", "8", "--inputs", "16",
                   "--sparsity", "0.5", "--steps", "4", "--clock", "50", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert Path(report["bitstream"]).suffix == ".bit"
    assert report["timing_met"] and report["fmax_mhz"] >= 50.0
    assert report["resources"]["logic_cells_total"] == 83640
    assert report["device"] == "LFE5U-85F-CABGA381"
