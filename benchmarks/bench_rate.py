"""Rate input drawn on the board against rate input sent as spikes, end to end.

For a rate-coded bundle two board links are cosimulated under Icarus with the real host driver
(``python -m boards run``) on a pseudo-terminal, the UART at the board's divisor (clock / baud),
so simulated cycles are board cycles, one after the other in one run:

- ``batch``: BATCH frames, two in flight, every spike of every step sent as an event (the
  bundle's exported spikes; what a board built without ``--rate`` runs);
- ``batch-rate``: ``boards build --rate BITS``: each sample sent once as its seed and its
  intensities, the spikes drawn on the board (:mod:`hdl.rate`).

Per mode: cycles per inference (the board's own counter), the compute-bound rate at the clock,
the end-to-end rate (samples over the simulated span from the first sample byte to the last
result byte), their ratio, bytes per sample on the wire, and the accuracy against the labels
(the two modes run different spikes: snnTorch's exported draws and the board's). Every result
is checked against the golden model on the spikes that mode runs.

    python benchmarks/bench_rate.py --bundle DIR --board icebreaker --clock-mhz 33 [--bits 4]
        [--baud B] [--lanes L] [--samples N] [-o FILE]

Writes ``benchmarks/results/rate/<bundle>_<board>.json`` and prints a table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))       # run as a file: python benchmarks/bench_rate.py

from benchmarks.provenance import (  # noqa: E402
    PROVENANCE_KEYS, bundle_inputs, provenance, rtlil_sha256, write_result,
)

SCHEMA = 1
# The host drivers (events, rate), what cosimulates the link and builds the board link
# (non-gateware), the generator's reference; the links' RTLIL is fingerprinted per mode.
SOURCES = ("boards/host.py", "boards/rate.py", "boards/cosim.py", "boards/build.py",
           "models/onboard.py")
GATEWARE = ("hdl/*.py",)
RESULT_KEYS = {
    "": {"provenance", "benchmark", "bundle", "board", "clock_mhz", "baud", "divisor", "lanes",
         "bits", "seed", "samples", "rows"},
    "provenance": PROVENANCE_KEYS,
    "rows/*": {"mode", "all_equal", "capacity", "cycles_per_inference",
               "compute_inferences_per_s", "end_to_end_inferences_per_s",
               "end_to_end_of_compute", "bytes_per_sample", "bytes_sent", "bytes_received",
               "accuracy", "wall_seconds"},
}
MODES = ("batch", "batch-rate")


def mode_link(bundle, mode, *, clock_hz, divisor, lanes, bits):
    """The board link ``boards build`` makes for ``mode`` (``--rate bits`` for batch-rate)."""
    from boards.build import default_capacity, host_link
    from boards.rate import rate_accelerator, rate_capacity
    from hdl.top import Accelerator
    if mode == "batch-rate":
        acc = rate_accelerator(None, bits)(bundle, lanes)
        return host_link(bundle, acc, divisor=divisor, capacity=rate_capacity(bundle, bits),
                         clock_hz=clock_hz, replay=True)
    return host_link(bundle, Accelerator(bundle, lanes=lanes), divisor=divisor,
                     capacity=default_capacity(bundle), clock_hz=clock_hz)


# The data a result measured (its provenance's ``inputs``): the command's --bundle.
inputs = bundle_inputs


def designs(result):
    """``{"<mode> link": callable}``: each row's board link RTLIL, for the result's bundle,
    clock, divisor, lanes and bits."""
    import functools

    from boards.cosim import TOPLEVEL
    from models.bundle import load
    path = Path(result["bundle"])
    bundle = functools.cache(lambda: load(path if path.is_absolute() else ROOT / path))

    def link_sha(mode):
        link = mode_link(bundle(), mode, clock_hz=result["clock_mhz"] * 1e6,
                         divisor=result["divisor"], lanes=result["lanes"], bits=result["bits"])
        return rtlil_sha256(link, name=TOPLEVEL)
    return {f"{row['mode']} link": functools.partial(link_sha, row["mode"])
            for row in result["rows"]}


def measure(bundle_dir, bundle, mode, *, clock_hz, divisor, lanes, bits, samples, folder):
    """Cosimulate one mode through the host driver (base seed 1); return its row."""
    from boards.cosim import cosimulate
    link = mode_link(bundle, mode, clock_hz=clock_hz, divisor=divisor, lanes=lanes, bits=bits)
    start = time.monotonic()
    r = cosimulate(link, bundle_dir, folder, samples=samples, wall_limit=3600,
                   host_timeout=600)
    if r["returncode"] != 0 or not r.get("all_equal") or r.get("mode") != mode:
        raise RuntimeError(f"{mode}: the run failed or differs from golden:\n{r['output']}")
    cycles = sum(r["cycles"]) / len(r["cycles"])
    compute = clock_hz / cycles
    e2e = r["inferences_per_second_end_to_end"]
    return {"mode": mode, "all_equal": r["all_equal"], "capacity": link.capacity,
            "cycles_per_inference": cycles, "compute_inferences_per_s": compute,
            "end_to_end_inferences_per_s": e2e, "end_to_end_of_compute": e2e / compute,
            "bytes_per_sample": (r["bytes_sent"] + r["bytes_received"]) / len(r["samples"]),
            "bytes_sent": r["bytes_sent"], "bytes_received": r["bytes_received"],
            "accuracy": r["accuracy"], "wall_seconds": round(time.monotonic() - start, 1)}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmarks/bench_rate.py",
                                description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, metavar="DIR")
    p.add_argument("--board", choices=("icebreaker", "ulx3s"), required=True)
    p.add_argument("--clock-mhz", type=float, required=True, metavar="MHZ",
                   help="the board clock (a --rate build's report: clock_mhz)")
    p.add_argument("--bits", type=int, default=4, help="intensity bits (default: 4)")
    p.add_argument("--baud", type=int, default=3_000_000)
    p.add_argument("--lanes", type=int, default=1)
    p.add_argument("--samples", type=int, default=16, metavar="N")
    p.add_argument("-o", "--output", type=Path, metavar="FILE")
    args = p.parse_args(argv)
    from hdl.uart import baud_divisor
    from models.bundle import BundleError, load
    try:
        bundle = load(args.bundle)
    except BundleError as exc:
        p.error(str(exc))
    if bundle.input.encoding != "rate":
        p.error(f"--bundle must be rate-coded, not {bundle.input.encoding!r}")
    if not 1 <= args.bits <= 8:
        p.error(f"--bits must be in [1, 8], not {args.bits}")
    clock_hz = args.clock_mhz * 1e6
    try:
        divisor = baud_divisor(clock_hz, args.baud)
    except (TypeError, ValueError) as exc:
        p.error(str(exc))
    if args.samples < 2:
        p.error(f"--samples must be at least 2, not {args.samples}")
    prov = provenance(__file__, SOURCES, gateware=GATEWARE, schema=SCHEMA, inputs=inputs,
                      argv=argv)                                        # before measuring
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_rate_") as tmp:
        for mode in MODES:
            row = measure(args.bundle, bundle, mode, clock_hz=clock_hz, divisor=divisor,
                          lanes=args.lanes, bits=args.bits, samples=args.samples,
                          folder=Path(tmp) / mode)
            rows.append(row)
            print(f"{mode:10s} {row['cycles_per_inference']:8.0f} cycles  compute "
                  f"{row['compute_inferences_per_s']:7.0f}/s  end to end "
                  f"{row['end_to_end_inferences_per_s']:7.0f}/s "
                  f"({100 * row['end_to_end_of_compute']:5.1f} %)  "
                  f"{row['bytes_per_sample']:6.1f} bytes/sample  accuracy "
                  f"{row['accuracy']:.4f}  ({row['wall_seconds']} s)", flush=True)
    events, rate = rows
    speedup = rate["end_to_end_inferences_per_s"] / events["end_to_end_inferences_per_s"]
    print(f"end to end: {speedup:.2f}x with the spikes drawn on the board; bytes per sample "
          f"{events['bytes_per_sample'] / rate['bytes_per_sample']:.1f}x fewer")
    name = args.bundle.resolve().name
    out = args.output or ROOT / "benchmarks" / "results" / "rate" / f"{name}_{args.board}.json"
    bundle_rel = (args.bundle.resolve().relative_to(ROOT).as_posix()
                  if args.bundle.resolve().is_relative_to(ROOT) else str(args.bundle))
    write_result(out, {"benchmark": "rate input drawn on the board, end to end",
                       "bundle": bundle_rel, "board": args.board, "clock_mhz": args.clock_mhz,
                       "baud": args.baud, "divisor": divisor, "lanes": args.lanes,
                       "bits": args.bits, "seed": 1, "samples": args.samples, "rows": rows},
                 provenance=prov, result_keys=RESULT_KEYS, designs=designs)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
