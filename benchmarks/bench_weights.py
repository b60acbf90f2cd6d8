"""A board with weights loaded at run time, end to end: the upload, then the samples.

The board top's gateware (``hdl.link.HostLink`` around ``hdl.top.Accelerator(weights="load")``,
as ``python -m boards build --weights load`` builds it) is cosimulated under Icarus with the real
host driver (``python -m boards run``) on a pseudo-terminal, the UART at the board's divisor
(clock / baud), so simulated cycles are board cycles. The host uploads the bundle's weights
(WEIGHTS frames) and then runs the test samples with BATCH frames (replayed for direct
encoding), checking every result against the golden model.

Reports the weight image (bytes, memories, the bytes on the wire with frame overhead and the
replies, their time at the baud rate, and the simulated time of the upload, the host waiting
for each reply), the board's cycles per inference (its own counter), the compute-bound rate at
the clock, the end-to-end rate over the samples (first sample byte to last result byte,
simulated, the upload not included) and their ratio, and the bytes per sample.

    python benchmarks/bench_weights.py --bundle DIR --board icebreaker --clock-mhz 30
        [--baud B] [--lanes L] [--samples N] [-o FILE]

Writes ``benchmarks/results/weights/<bundle>_<board>.json`` and prints a summary. Slow: the
upload of a 784-128-10 network is some 3 million simulated cycles (about ten minutes).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))       # run as a file: python benchmarks/bench_weights.py

from benchmarks.provenance import (  # noqa: E402
    PROVENANCE_KEYS, bundle_inputs, provenance, rtlil_sha256, write_result,
)

SCHEMA = 1
# The host driver, its weights upload and what cosimulates the link (non-gateware), and what
# the link is generated from (its RTLIL is fingerprinted: see designs()).
SOURCES = ("boards/host.py", "boards/weights.py", "boards/cosim.py", "boards/build.py")
GATEWARE = ("hdl/*.py",)
RESULT_KEYS = {
    "": {"provenance", "benchmark", "bundle", "board", "clock_mhz", "baud", "divisor", "lanes",
         "samples", "spram", "capacity", "mode", "weights", "all_equal", "cycles_per_inference",
         "compute_inferences_per_s", "end_to_end_inferences_per_s", "end_to_end_of_compute",
         "bytes_per_sample", "wall_seconds"},
    "provenance": PROVENANCE_KEYS,
    "weights": {"image_bytes", "memories", "spram_memories", "frames", "wire_bytes",
                "wire_seconds", "upload_seconds", "layout_ident"},
}
#: WEIGHTS frame payloads (image bytes), as boards.weights.LoadedBoardLink sends them.
CHUNK = 1024


def board_link(bundle, *, board, clock_hz, divisor, lanes):
    """The host link around the run-time-weights accelerator, as ``boards build`` makes it."""
    from boards.build import default_capacity, host_link
    from boards.weights import accelerator_for
    acc = accelerator_for("load", board)(bundle, lanes)
    return host_link(bundle, acc, divisor=divisor, capacity=default_capacity(bundle),
                     clock_hz=clock_hz)


# The data a result measured (its provenance's ``inputs``): the command's --bundle.
inputs = bundle_inputs


def designs(result):
    """``{"link": callable}``: the board link's RTLIL, for the result's bundle, board, clock,
    divisor and lanes."""
    from boards.cosim import TOPLEVEL
    from models.bundle import load
    path = Path(result["bundle"])

    def link_sha():
        bundle = load(path if path.is_absolute() else ROOT / path)
        link = board_link(bundle, board=result["board"], clock_hz=result["clock_mhz"] * 1e6,
                          divisor=result["divisor"], lanes=result["lanes"])
        return rtlil_sha256(link, name=TOPLEVEL)
    return {"link": link_sha}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmarks/bench_weights.py",
                                description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, metavar="DIR")
    p.add_argument("--board", choices=("icebreaker", "ulx3s"), required=True)
    p.add_argument("--clock-mhz", type=float, required=True, metavar="MHZ",
                   help="the board clock (a build's report: clock_mhz)")
    p.add_argument("--baud", type=int, default=3_000_000)
    p.add_argument("--lanes", type=int, default=1)
    p.add_argument("--samples", type=int, default=24, metavar="N")
    p.add_argument("-o", "--output", type=Path, metavar="FILE")
    args = p.parse_args(argv)
    from boards.cosim import PERIOD_NS, cosimulate
    from hdl.protocol import WEIGHTS_HEAD, WEIGHTS_REPLY
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
    prov = provenance(__file__, SOURCES, gateware=GATEWARE, schema=SCHEMA, inputs=inputs,
                      argv=argv)                                        # before measuring
    link = board_link(bundle, board=args.board, clock_hz=clock_hz, divisor=divisor,
                      lanes=args.lanes)
    store = link._accelerator.weight_store
    image = store.size
    frames = -(-image // CHUNK)
    # Each frame: sync, code, length (2), header, data, CRC; each reply: 5 bytes + payload.
    wire = image + frames * (5 + WEIGHTS_HEAD) + frames * (5 + WEIGHTS_REPLY)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_weights_") as tmp:
        r = cosimulate(link, args.bundle, Path(tmp), samples=args.samples, wall_limit=7200,
                       host_timeout=1800)
        if r["returncode"] != 0 or not r.get("all_equal"):
            raise SystemExit(f"the run failed or differs from golden:\n{r['output']}")
        timeline = json.loads((Path(tmp) / "timeline.json").read_text())
    # The host sends INFO twice (5 bytes each), then the WEIGHTS frames, then the samples:
    # the upload runs from its first byte to the last reply byte before the first sample
    # byte, and the samples from there to the last reply byte. Timeline entries are simulated
    # ns at the cosimulation's clock period: cycles of the board, at its clock.
    sent = 2 * 5 + image + frames * (5 + WEIGHTS_HEAD)
    rx, tx = timeline["rx"], timeline["tx"]
    if len(rx) <= sent:
        raise SystemExit(f"the host sent {len(rx)} bytes, not more than the {sent} before "
                         f"the samples")
    upload_end = max(t for t in tx if t < rx[sent])
    upload_s = (upload_end - rx[10]) / PERIOD_NS / clock_hz
    samples_s = (tx[-1] - rx[sent]) / PERIOD_NS / clock_hz
    cycles = sum(r["cycles"]) / len(r["cycles"])
    compute = clock_hz / cycles
    e2e = len(r["samples"]) / samples_s
    upload = [line for line in r["output"].splitlines() if line.startswith("weights: ")]
    result = {
        "benchmark": "run-time weights end to end",
        "bundle": (args.bundle.resolve().relative_to(ROOT).as_posix()
                   if args.bundle.resolve().is_relative_to(ROOT) else str(args.bundle)),
        "board": args.board, "clock_mhz": args.clock_mhz, "baud": args.baud,
        "divisor": divisor, "lanes": args.lanes, "samples": len(r["samples"]),
        "spram": sum(slot.spram for slot in store.slots), "capacity": link.capacity,
        "mode": r["mode"],
        "weights": {"image_bytes": image, "memories": len(store.slots),
                    "spram_memories": sum(1 for slot in store.slots if slot.spram),
                    "frames": frames, "wire_bytes": wire,
                    "wire_seconds": wire * 10 / args.baud, "upload_seconds": upload_s,
                    "layout_ident": f"0x{store.ident:08x}"},
        "all_equal": r["all_equal"], "cycles_per_inference": cycles,
        "compute_inferences_per_s": compute, "end_to_end_inferences_per_s": e2e,
        "end_to_end_of_compute": e2e / compute,
        "bytes_per_sample": (r["bytes_sent"] + r["bytes_received"]) / len(r["samples"]),
        "wall_seconds": round(time.monotonic() - start, 1),
    }
    print(f"{upload[0] if upload else 'weights: uploaded'}")
    print(f"image {image} bytes in {len(store.slots)} memories "
          f"({result['weights']['spram_memories']} in SPRAM), {frames} frames, {wire} bytes "
          f"on the wire = {1e3 * wire * 10 / args.baud:.0f} ms at {args.baud} baud; "
          f"uploaded in {1e3 * upload_s:.0f} ms (simulated, replies awaited)")
    print(f"{r['mode']}: {cycles:.0f} cycles, compute {compute:.0f}/s, end to end {e2e:.0f}/s "
          f"({100 * e2e / compute:.1f} %), {result['bytes_per_sample']:.1f} bytes/sample "
          f"({result['wall_seconds']} s)")
    name = args.bundle.resolve().name
    out = args.output or ROOT / "benchmarks" / "results" / "weights" / \
        f"{name}_{args.board}.json"
    write_result(out, result, provenance=prov, result_keys=RESULT_KEYS, designs=designs)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
