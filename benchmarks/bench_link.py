"""End-to-end rate of a bundle through the host link, against the accelerator's own rate.

For each link mode the board top's gateware (``hdl.link.HostLink`` around the real
``hdl.top.Accelerator``) is cosimulated under Icarus with the real host driver
(``python -m boards run``) on a pseudo-terminal, the UART at the board's divisor (clock / baud),
so simulated cycles are board cycles:

- ``load-run``: the protocol's LOAD and RUN, one sample at a time, every step sent (a link
  built without BATCH, as before protocol version 2);
- ``batch``: BATCH frames, two in flight, every step sent;
- ``batch-replay``: BATCH with replay, the first step of each sample only (direct encoding).

Per mode: the board's cycles per inference (its own counter), the compute-bound rate at the
clock (clock / mean cycles), the end-to-end rate (samples over the simulated span from the
first sample byte to the last result byte), their ratio, and the bytes per sample on the wire.
Every result is checked against the golden model (the host driver compares all spike counts).

    python benchmarks/bench_link.py --bundle DIR --board ulx3s --clock-mhz 110 [--baud B]
        [--lanes L] [--samples N] [-o FILE]

Writes ``benchmarks/results/link/<bundle>_<board>.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))       # run as a file: python benchmarks/bench_link.py

from benchmarks.provenance import (  # noqa: E402
    PROVENANCE_KEYS, bundle_inputs, provenance, rtlil_sha256, write_result,
)

SCHEMA = 2
# The host driver and what cosimulates the link (non-gateware), and what the link is generated
# from (its RTLIL is fingerprinted per mode: see designs()).
SOURCES = ("boards/host.py", "boards/cosim.py", "boards/build.py")
GATEWARE = ("hdl/*.py",)
RESULT_KEYS = {
    "": {"provenance", "benchmark", "bundle", "board", "clock_mhz", "baud", "divisor", "lanes",
         "samples", "rows"},
    "provenance": PROVENANCE_KEYS,
    "rows/*": {"mode", "all_equal", "capacity", "cycles_per_inference",
               "compute_inferences_per_s", "end_to_end_inferences_per_s",
               "end_to_end_of_compute", "bytes_per_sample", "bytes_sent", "bytes_received",
               "wire_inferences_per_s", "wall_seconds"},
}
MODES = ("load-run", "batch", "batch-replay")


def mode_link(bundle, mode, *, clock_hz, divisor, lanes):
    """The host link (around the accelerator) that :func:`measure` cosimulates for ``mode``."""
    from boards.build import default_capacity
    from hdl.link import HostLink
    from hdl.protocol import bundle_ident
    from hdl.top import Accelerator
    replay = mode == "batch-replay"
    capacity = default_capacity(bundle, replay=replay)
    return HostLink(Accelerator(bundle, lanes=lanes), n_in=bundle.input.size,
                    n_out=bundle.n_out, divisor=divisor, capacity=capacity,
                    timeout=int(clock_hz // 10), clock_hz=int(clock_hz),
                    ident=bundle_ident(bundle),
                    steps=None if mode == "load-run" else bundle.input.steps, replay=replay)


# The data a result measured (its provenance's ``inputs``): the command's --bundle.
inputs = bundle_inputs


def designs(result):
    """The designs a result measured, ``{label: callable returning its fingerprint}``: per
    row, the host link of its mode (``<mode> link``: its RTLIL, under the name the
    cosimulation gives it), for the result's bundle, clock, divisor and lanes."""
    import functools

    from boards.cosim import TOPLEVEL
    from models.bundle import load
    path = Path(result["bundle"])
    bundle = functools.cache(lambda: load(path if path.is_absolute() else ROOT / path))
    clock_hz = result["clock_mhz"] * 1e6

    def link_sha(mode):
        link = mode_link(bundle(), mode, clock_hz=clock_hz, divisor=result["divisor"],
                         lanes=result["lanes"])
        return rtlil_sha256(link, name=TOPLEVEL)
    return {f"{row['mode']} link": functools.partial(link_sha, row["mode"])
            for row in result["rows"]}


def measure(bundle_dir, mode, *, clock_hz, divisor, lanes, samples, folder):
    """Cosimulate one link mode; return its row."""
    from boards.build import default_capacity
    from boards.cosim import cosimulate
    from models.bundle import load
    bundle = load(bundle_dir)
    capacity = default_capacity(bundle, replay=mode == "batch-replay")
    link = mode_link(bundle, mode, clock_hz=clock_hz, divisor=divisor, lanes=lanes)
    start = time.monotonic()
    r = cosimulate(link, bundle_dir, folder, samples=samples, wall_limit=3600,
                   host_timeout=600)
    if r["returncode"] != 0 or not r.get("all_equal"):
        raise RuntimeError(f"{mode}: the run failed or differs from golden:\n{r['output']}")
    cycles = sum(r["cycles"]) / len(r["cycles"])
    per_sample = (r["bytes_sent"] + r["bytes_received"]) / len(r["samples"])
    compute = clock_hz / cycles
    e2e = r["inferences_per_second_end_to_end"]
    baud = clock_hz / divisor
    return {"mode": mode, "all_equal": r["all_equal"], "capacity": capacity,
            "cycles_per_inference": cycles, "compute_inferences_per_s": compute,
            "end_to_end_inferences_per_s": e2e, "end_to_end_of_compute": e2e / compute,
            "bytes_per_sample": per_sample, "bytes_sent": r["bytes_sent"],
            "bytes_received": r["bytes_received"],
            "wire_inferences_per_s": baud / 10 / per_sample,
            "wall_seconds": round(time.monotonic() - start, 1)}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmarks/bench_link.py",
                                description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, metavar="DIR")
    p.add_argument("--board", choices=("icebreaker", "ulx3s"), required=True)
    p.add_argument("--clock-mhz", type=float, required=True, metavar="MHZ",
                   help="the board clock (a build's report: clock_mhz)")
    p.add_argument("--baud", type=int, default=3_000_000)
    p.add_argument("--lanes", type=int, default=1)
    p.add_argument("--samples", type=int, default=24, metavar="N")
    p.add_argument("--modes", nargs="+", choices=MODES, default=None,
                   help="default: all that apply (batch-replay for direct encoding)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE")
    args = p.parse_args(argv)
    from hdl.uart import baud_divisor
    from models.bundle import BundleError, load
    try:
        bundle = load(args.bundle)
    except BundleError as exc:
        p.error(str(exc))
    clock_hz = args.clock_mhz * 1e6
    try:
        divisor = baud_divisor(clock_hz, args.baud)
    except (TypeError, ValueError) as exc:
        p.error(str(exc))
    if args.samples < 2:
        p.error(f"--samples must be at least 2, not {args.samples}")
    modes = args.modes or [m for m in MODES
                           if m != "batch-replay" or bundle.input.encoding == "direct"]
    prov = provenance(__file__, SOURCES, gateware=GATEWARE, schema=SCHEMA, inputs=inputs,
                      argv=argv)                                        # before measuring
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_link_") as tmp:
        for mode in modes:
            row = measure(args.bundle, mode, clock_hz=clock_hz, divisor=divisor,
                          lanes=args.lanes, samples=args.samples, folder=Path(tmp) / mode)
            rows.append(row)
            print(f"{mode:13s} {row['cycles_per_inference']:10.0f} cycles  compute "
                  f"{row['compute_inferences_per_s']:8.0f}/s  end to end "
                  f"{row['end_to_end_inferences_per_s']:8.0f}/s "
                  f"({100 * row['end_to_end_of_compute']:5.1f} %)  "
                  f"{row['bytes_per_sample']:7.1f} bytes/sample  ({row['wall_seconds']} s)",
                  flush=True)
    name = args.bundle.resolve().name
    out = args.output or ROOT / "benchmarks" / "results" / "link" / f"{name}_{args.board}.json"
    bundle_rel = (args.bundle.resolve().relative_to(ROOT).as_posix()
                  if args.bundle.resolve().is_relative_to(ROOT) else str(args.bundle))
    write_result(out, {"benchmark": "host link end to end", "bundle": bundle_rel,
                       "board": args.board, "clock_mhz": args.clock_mhz, "baud": args.baud,
                       "divisor": divisor, "lanes": args.lanes, "samples": args.samples,
                       "rows": rows}, provenance=prov, result_keys=RESULT_KEYS,
                 designs=designs)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
