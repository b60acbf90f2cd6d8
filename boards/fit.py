"""Will it fit: a board build's resources from a quick synthesis, before place and route.

:func:`fit` elaborates exactly what :func:`boards.build.build` would put on the board (the
accelerator, :class:`hdl.link.HostLink` and :class:`boards.top.BoardTop`, at the board's first
clock), synthesises it with the same YoWASP Yosys script, then runs only nextpnr's packer
(``--pack-only``) on the netlist. The packer's counts of logic cells, block RAMs, SPRAMs and DSPs
are what place and route starts from, so they are the estimate; nothing is placed or routed.

Two shortcuts keep it quick, neither changing a count:

* iCE40: Yosys maps every block RAM with its initial contents through its own template (about a
  second each under YoWASP, most of a digits MLP's synthesis); :func:`fit` drops the contents
  after ``memory_libmap`` has chosen the RAMs, so the RAMs of one shape share one template. The
  netlist's cells are those of the full synthesis (checked on the digits MLP: the same LUT4,
  carry, flip-flop, RAM and DSP counts).
* no placement, routing, timing analysis or bitstream, and one clock (no clock search).

How far off it is (docs/boards.md): the packed logic cells of a netlist equal the post-route
count of the same netlist (digits MLP, UP5K, 1 lane: 3,217 packed, 3,217 placed), so on iCE40 the
estimate is the build's count up to the few cells a different clock's UART divisor and PLL
move. What it cannot say is whether a design that packs under the device's size also *places*:
the UP5K did not place the digits MLP at 2 lanes, 5,075 of 5,280 cells (96 %). So logic above
:data:`PLACEABLE` of the device is reported as not fitting in practice, and above
:data:`TIGHT` as a risk.
"""
from __future__ import annotations

import resource
import shlex
import subprocess
import tempfile
import time
from pathlib import Path


from .build import (DEFAULT_BAUD, NAME, BuildError, clock_for, default_capacity, host_link,
                    parse_nextpnr, parse_yosys, tool_env)
from .top import BoardTop, board

__all__ = ["PLACEABLE", "RESOURCES", "TIGHT", "fit", "format_fit"]

#: Per family, the nextpnr bel of each resource the report names.
RESOURCES = {
    "ice40": {"logic_cells": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM",
              "dsp": "ICESTORM_DSP"},
    "ecp5": {"logic_cells": "TRELLIS_COMB", "bram": "DP16KD", "dsp": "MULT18X18D"},
}
LABELS = {"logic_cells": "logic cells", "bram": "block RAM", "spram": "SPRAM", "dsp": "DSP"}

#: Logic cells above this fraction of the device did not place (UP5K: the digits MLP at 2 lanes,
#: 5,075 of 5,280, 96 %, "Unable to find legal placement"): reported as not fitting.
PLACEABLE = 0.95
#: Logic cells above this fraction: reported as a risk (place and route may fail or miss timing).
TIGHT = 0.90

# Yosys scripts. iCE40: synth_ice40 -dsp as boards.build runs it, with the RAMs' initial contents
# dropped between memory_libmap and their techmap (see the module docstring).
_ICE40_SCRIPT = """read_rtlil {name}.il
synth_ice40 -dsp -top {name} -run begin:map_ram
memory_libmap -lib +/ice40/brams.txt -lib +/ice40/spram.txt -no-auto-huge
setparam -unset INIT t:$__ICE40_*
techmap -map +/ice40/brams_map.v -map +/ice40/spram_map.v
synth_ice40 -dsp -top {name} -run map_ffram:blif
write_json {name}.json
"""
_ECP5_SCRIPT = """read_rtlil {name}.il
synth_ecp5 -top {name}
write_json {name}.json
"""
# Options of the platform's nextpnr line that write products or logs, dropped for --pack-only.
_NEXTPNR_OUTPUTS = {"--asc", "--textcfg", "--log", "--json", "--seed"}
_NEXTPNR_FLAGS = {"--quiet", "--timing-allow-fail"}


def _nextpnr_device_args(script, tool_var):
    """The device, package, speed and constraint options of the nextpnr line of an Amaranth
    build script (``build_<name>.sh``)."""
    for line in script.splitlines():
        if f'"${tool_var}"' in line:
            words = shlex.split(line)[1:]
            keep, skip = [], False
            for word in words:
                if skip:
                    skip = False
                elif word in _NEXTPNR_OUTPUTS:
                    skip = True
                elif word not in _NEXTPNR_FLAGS:
                    keep.append(word)
            return keep
    raise BuildError(f"No {tool_var} line in the platform's build script")


def _cpu():
    """CPU seconds of this process and its finished children (the YoWASP tools)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run(cmd, cwd, env, what, timeout):
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what} did not finish within {timeout} s") from None
    except OSError as exc:
        raise BuildError(f"Cannot run {cmd[0]}: {exc.strerror}") from None
    if proc.returncode != 0:
        errors = [line.strip() for line in (proc.stdout + proc.stderr).splitlines()
                  if "ERROR" in line]
        raise BuildError(f"{what} failed ({errors[-1] if errors else proc.returncode})")
    return proc


def fit(bundle, *, board_name="icebreaker", variant=None, lanes=1, baud=DEFAULT_BAUD,
        capacity=None, work_dir=None, accelerator=None, timeout=600, replay=None):
    """Estimate ``bundle``'s build on a board from a quick synthesis; return a report dict.

    The report holds ``board``, ``device``, ``lanes``, ``capacity``, ``resources`` (per
    resource: ``used``, ``total``, ``fraction``), ``verdict`` (``"fits"``, ``"tight"`` or
    ``"does not fit"``), ``limits`` (the resources that run out, with why), ``advice`` (what to
    change), ``cells`` (Yosys cell counts) and ``seconds`` (elaboration, synthesis, packing).
    ``work_dir`` keeps the netlist and logs (default: a temporary folder, removed).
    ``accelerator(bundle, lanes)`` makes the accelerator (default: hdl.top.Accelerator);
    ``replay`` is as for :func:`boards.build.build`.
    """
    b = board(board_name)
    if b.variants:
        b.platform(variant)                  # validates the variant
    capacity = capacity or default_capacity(bundle, replay=replay)
    env = tool_env()
    if accelerator is None:
        from hdl.top import Accelerator

        def accelerator(bundle, lanes):
            return Accelerator(bundle, lanes=lanes)
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="snn_fit_") as tmp:
            return fit(bundle, board_name=board_name, variant=variant, lanes=lanes, baud=baud,
                       capacity=capacity, work_dir=tmp, accelerator=accelerator,
                       timeout=timeout, replay=replay)
    out = Path(work_dir)
    out.mkdir(parents=True, exist_ok=True)

    seconds = {}
    start, cpu_start = time.monotonic(), _cpu()
    pll, clock_hz, divisor = clock_for(b, b.aim, baud)
    acc = accelerator(bundle, lanes)
    link = host_link(bundle, acc, divisor=divisor, capacity=capacity, clock_hz=clock_hz,
                     replay=replay)
    top = BoardTop(link, clock_hz=clock_hz, pll=pll)
    plan = b.platform(variant).prepare(top, NAME)
    for name, content in plan.files.items():
        if name.endswith((".il", ".pcf", ".lpf")):
            path = out / name
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
    seconds["elaborate"] = time.monotonic() - start

    start = time.monotonic()
    script = (_ICE40_SCRIPT if b.family == "ice40" else _ECP5_SCRIPT).format(name=NAME)
    (out / f"{NAME}_fit.ys").write_text(script)
    _run([env["YOSYS"], "-q", "-l", f"{NAME}_fit.rpt", f"{NAME}_fit.ys"], out, env,
         "Yosys synthesis", timeout)
    seconds["synthesis"] = time.monotonic() - start

    start = time.monotonic()
    tool_var = "NEXTPNR_ICE40" if b.family == "ice40" else "NEXTPNR_ECP5"
    device_args = _nextpnr_device_args(plan.files[f"build_{NAME}.sh"], tool_var)
    _run([env[tool_var], "--pack-only", "--quiet", "--log", f"{NAME}_fit.tim",
          "--json", f"{NAME}.json", *device_args], out, env, "nextpnr packing", timeout)
    seconds["packing"] = time.monotonic() - start

    util = parse_nextpnr((out / f"{NAME}_fit.tim").read_text())["utilisation"]
    cells = parse_yosys((out / f"{NAME}_fit.rpt").read_text())
    resources = {}
    for key, bel in RESOURCES[b.family].items():
        used, total = util.get(bel, [0, 0])
        resources[key] = {"used": used, "total": total,
                          "fraction": used / total if total else (0.0 if not used else 1.0)}
    report = {"board": b.name, "device": b.device(variant), "lanes": lanes,
              "capacity": capacity, "clock_mhz": clock_hz / 1e6, "resources": resources,
              "cells": cells, "seconds": {k: round(v, 1) for k, v in seconds.items()},
              "cpu_seconds": round(_cpu() - cpu_start, 1)}
    report.update(_judge(report, bundle, b))
    return report


def _judge(report, bundle, b):
    """The verdict, the resources that run out and what to change."""
    res = report["resources"]
    limits, advice = [], []
    for key, r in res.items():
        if r["used"] > r["total"]:
            limits.append((key, f"{LABELS[key]}: {r['used']} needed, {r['total']} on the "
                                f"{report['device']}"))
    lc = res["logic_cells"]
    tight = False
    if lc["used"] <= lc["total"] and lc["fraction"] > PLACEABLE:
        limits.append(("logic_cells", f"logic cells: {lc['used']} of {lc['total']} "
                                      f"({100 * lc['fraction']:.0f} %), above the "
                                      f"{100 * PLACEABLE:.0f} % that places in practice"))
    elif lc["fraction"] > TIGHT:
        tight = True
    verdict = "does not fit" if limits else ("tight" if tight else "fits")
    short = {key for key, _ in limits} | ({"logic_cells"} if tight else set())
    lanes = report["lanes"]
    many_lanes = (max(lanes) if isinstance(lanes, list) else lanes) > 1
    kinds = {layer.kind for layer in bundle.layers}
    if "logic_cells" in short:
        if many_lanes:
            advice.append("fewer lanes (--lanes 1, or per layer where the work is, e.g. 2,1)")
        if "conv2d" in kinds:
            advice.append("fewer convolution channels (python -m models train --channels)")
        advice.append("fewer weight bits (python -m models export --weight-bits 4: narrower "
                      "accumulators)")
    if "bram" in short:
        advice.append("higher weight sparsity (python -m models train --sparsity 0.9) or fewer "
                      "weight bits (export --weight-bits 4): smaller weight memories")
        advice.append(f"a smaller event buffer (--capacity, now {report['capacity']} events)")
        spram = report["resources"].get("spram")
        if spram is not None and spram["used"] == 0 and spram["total"] \
                and "conv2d" not in kinds:           # run-time weights: linear layers
            advice.append(f"weights in SPRAM, loaded at run time (--weights load; "
                          f"{spram['total']} free, 256 Kbit each)")
    if "spram" in short:
        advice.append("fewer or smaller SPRAM memories")
    if "dsp" in short:
        advice.append("a shift leak (python -m models train --leak shift) needs no multiplier")
        if many_lanes:
            advice.append("fewer lanes (each lane has its own leak multiplier)")
    if short and b.family == "ice40":
        advice.append("a bigger board: --board ulx3s (ECP5 85F: 83,640 LUT4, 208 block RAMs, "
                      "156 DSP)")
    return {"verdict": verdict, "limits": [text for _, text in limits], "advice": advice}


def format_fit(report):
    """The printed answer: one line per resource, the verdict, the limits and the advice."""
    lines = [f"board       {report['board']} ({report['device']}), lanes {report['lanes']}, "
             f"event buffer {report['capacity']}"]
    for key, r in report["resources"].items():
        lines.append(f"{LABELS[key]:<12}{r['used']:>6} / {r['total']:<6} "
                     f"{100 * r['fraction']:5.1f} %")
    s = report["seconds"]
    cpu = f", {report['cpu_seconds']:.0f} s CPU" if "cpu_seconds" in report else ""
    lines.append(f"estimate    quick synthesis and nextpnr packing, no place and route "
                 f"({s['elaborate'] + s['synthesis'] + s['packing']:.0f} s{cpu})")
    lines.append(f"accuracy    logic cells as a full build's within ~1 % (same hardware); "
                 f"placement fails above ~{100 * PLACEABLE:.0f} % on iCE40 (docs/boards.md)")
    lines.append(f"verdict     {report['verdict']}")
    for text in report["limits"]:
        lines.append(f"runs out    {text}")
    if report["verdict"] == "tight":
        lc = report["resources"]["logic_cells"]
        lines.append(f"risk        logic cells at {100 * lc['fraction']:.0f} %: place and route "
                     f"may fail or miss timing above {100 * TIGHT:.0f} %")
    for index, text in enumerate(report["advice"]):
        lines.append(f"{'change' if index == 0 else '':<12}{text}")
    return "\n".join(lines)
