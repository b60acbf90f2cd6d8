# amaranth: UnusedElaboratable=no
"""PLL settings, clock choice, report parsing, board top elaboration; bitstream builds (slow)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from boards.build import (
    RETRY_FLOOR,
    clock_for,
    default_capacity,
    failure_message,
    parse_nextpnr,
    parse_yosys,
)
from boards.pll import ICE40_OUT, ICE40_PFD, ICE40_VCO, ecp5_pll, ice40_pll
from boards.top import BOARDS, BoardTop, board
from models.synth import random_linear_bundle

REPO = Path(__file__).resolve().parents[2]


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
    assert RETRY_FLOOR["ice40"] >= ICE40_OUT[0]


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
    assert failure_message("Info: nothing wrong\n", "iCE40UP5K-SG48") is None


@pytest.mark.parametrize("name, clock", [("icebreaker", 30e6), ("icebreaker", 12e6),
                                         ("ulx3s", 100e6)])
def test_board_top_elaborates(name, clock):
    """The board top with its PLL and pins goes through Amaranth's platform flow (no tools)."""
    from boards.link import HostLink
    from tests.boards.standin import StandIn
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


def run_cli(*args, timeout=1800):
    return subprocess.run([sys.executable, "-m", "boards", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


@pytest.mark.slow
def test_icebreaker_build_end_to_end(tmp_path):
    """A real iCE40 build through the CLI: bitstream, report.json and the printed summary."""
    proc = run_cli("build", "--board", "icebreaker", "--neurons", "8", "--inputs", "16",
                   "--sparsity", "0.5", "--steps", "4", "--clock", "24", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    bitstream = Path(report["bitstream"])
    assert bitstream.suffix == ".bin" and bitstream.stat().st_size > 100_000   # UP5K image
    assert report["timing_met"] and report["fmax_mhz"] >= 24.0
    assert report["clock_mhz"] == 24.0 and report["pll"]["DIVF"] == 63
    r = report["resources"]
    assert 0 < r["logic_cells"] <= r["logic_cells_total"] == 5280
    assert r["ffs"] > 0 and r["luts"] > 0 and r["bram_total"] == 30 and r["pll"] == 1
    assert re.search(r"^timing      met$", proc.stdout, re.MULTILINE)
    assert (tmp_path / "bundle" / "vectors.npz").exists()


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
