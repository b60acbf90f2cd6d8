"""Cycles of the event-driven convolution engine against the lower bound and the dense baseline.

Runs :class:`hdl.conv.Conv2dEngine` in the Amaranth simulator, every output event checked
against the golden model, over input spike densities, for the digits CSNN's two conv layers (the
trained weights of ``models/zoo/digits_csnn`` when that bundle exists, otherwise random weights
of its shapes and 75 % sparsity) and a larger layer. Per conv layer and density it records, as
means over the measured steps: input spikes S, active synaptic operations A, the compressor's
cycles and its budget (S plus one pass of ``ceil(C*H*W / 16)`` words), the accumulate cycles,
the step interval, the lower bound of DESIGN.md section 7 (``max(A/L, S, N/U)``, U = L), their
ratio, lane utilisation ``A / (L * accumulate cycles)``, and the dense baseline's interval on
the same inputs and lanes with the speedup.

    python -m benchmarks.bench_conv [--quick] [--steps T] [-o DIR]

The input is offered every cycle and the output is always ready; step 0 fills the pipeline and
is not counted. The step interval is the time between consecutive sweeps' ends: the stages of
consecutive steps overlap, so this is what a step costs. Writes ``conv.json`` and ``conv.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
from amaranth import unsigned
from amaranth.sim import Simulator

from hdl import cycles
from hdl.conv import CHUNK, Conv2dEngine, conv_work, plan_conv
from models import bundle as bundle_io
from models import golden
from models.bundle import Bundle, InputSpec, Layer, Leak, Neuron
from models.synth import random_weights

ROOT = Path(__file__).resolve().parents[1]
CSNN = ROOT / "models" / "zoo" / "digits_csnn"
DENSITIES = (0.05, 0.1, 0.2, 0.3, 0.5)


def random_conv(seed, *, cin, cout, size, kernel=3, stride=1, padding=1, sparsity=0.75,
                name="conv"):
    rng = np.random.default_rng(seed)
    h, w = size
    ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    weight = random_weights(rng, (cout, cin, kernel, kernel), sparsity=sparsity, weight_bits=8)
    typical = max(1, int(np.abs(weight).reshape(cout, -1).sum(axis=1).mean() * 0.1))
    neuron = Neuron("lif", "subtract", typical, 16, Leak("mul", beta=230, frac_bits=8))
    bias = rng.integers(-typical // 4, typical // 4 + 1, size=cout)
    return Layer(name, "conv2d", (cin, h, w), (cout, ho, wo), weight, bias, 8, neuron, kernel,
                 stride, padding)


def csnn_layers():
    """The CSNN's conv layers and the spikes each receives, if the trained bundle exists."""
    if not (CSNN / "bundle.json").is_file():
        return None
    bundle = bundle_io.load(CSNN)
    vec = bundle.vectors
    if vec is None or bundle.input.bits != 1:
        return None
    x = golden.events_to_dense(vec.events, vec.samples, vec.steps, bundle.input.size)
    trace = golden.run(bundle, x)
    out, inputs = [], x
    for index, layer in enumerate(bundle.layers):
        if layer.kind == "conv2d":
            out.append((layer, inputs))
        inputs = trace.spikes[index]
    return out


def measure(layer, steps, *, lanes, dense=False):
    """Run ``steps`` (``[S_in-long 0/1 vectors]``, one sample) through the engine.

    Returns per step: spikes, sops, compressor cycles, the running total of accumulate-stage
    busy cycles and the cycles at which the step's accumulation and sweep ended, after checking
    every output event against the golden model.
    """
    dut = Conv2dEngine(layer, lanes=lanes, dense=dense)
    events = [[(int(a), 1) for a in np.flatnonzero(x)] or [(0, 0)] for x in steps]
    out, stats = [], []

    async def producer(ctx):
        for t, evs in enumerate(events):
            for n, (addr, value) in enumerate(evs):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"addr": addr, "value": value,
                                        "last": int(n == len(evs) - 1),
                                        "first": int(t == n == 0)})
                await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        closed = 0
        while closed < len(steps):
            p, = await ctx.tick().sample(dut.o.payload).until(dut.o.valid)
            out.append((p.addr, p.value, p.last))
            closed += p.last

    async def monitor(ctx):
        cycle, swept = 0, 0
        while True:
            await ctx.tick()
            cycle += 1
            st = ctx.get(dut.stats)
            if st.accumulated:
                stats.append({"spikes": int(st.step_spikes), "sops": int(st.step_sops),
                              "compress_cycles": int(st.step_compress_cycles),
                              "busy_total": int(st.accumulate_cycles), "accumulated_at": cycle})
            if st.swept:
                stats[swept]["swept_at"] = cycle
                swept += 1

    async def watchdog(ctx):
        budget = 50 * (sum(conv_work(layer, dense=True)) + layer.n_out) * len(steps) + 5000
        for _ in range(budget):
            await ctx.tick()
        raise TimeoutError("conv engine made no progress")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(watchdog, background=True)
    sim.run()

    bundle = Bundle(InputSpec(layer.in_shape, 1, False, "raw", len(steps)), [layer])
    spikes = golden.run(bundle, np.asarray(steps, dtype=np.int64)[None]).output[0]
    expect = []
    for s in spikes:
        addrs = np.flatnonzero(s)
        expect += ([(int(a), 1, int(n == len(addrs) - 1)) for n, a in enumerate(addrs)]
                   or [(0, 0, 1)])
    if out != expect:
        raise SystemExit(f"{layer.name}: output differs from the golden model")
    return stats


def summarise(layer, steps, *, lanes):
    """Sparse and dense runs on ``steps``; means over steps 1.. of every figure."""
    sparse = measure(layer, steps, lanes=lanes)
    dense = measure(layer, steps, lanes=lanes, dense=True)
    n = layer.n_out
    words = math.ceil(layer.n_in / CHUNK)
    rows = []
    for t in range(1, len(steps)):
        s, d = sparse[t], dense[t]
        interval = s["swept_at"] - sparse[t - 1]["swept_at"]
        dense_interval = d["swept_at"] - dense[t - 1]["swept_at"]
        # The accumulate stage's busy cycles between this step's completion and the last one's.
        s["accumulate_cycles"] = s["busy_total"] - sparse[t - 1]["busy_total"]
        bound = cycles.lower_bound(s["sops"], s["spikes"], n, lanes=lanes)
        rows.append({
            "spikes": s["spikes"], "sops": s["sops"],
            "compress_cycles": s["compress_cycles"], "compress_budget": s["spikes"] + words,
            "accumulate_cycles": s["accumulate_cycles"], "interval": interval,
            "lower_bound": bound, "ratio": interval / bound,
            "utilisation": s["sops"] / (lanes * s["accumulate_cycles"]),
            "dense_sops": d["sops"], "dense_interval": dense_interval,
            "speedup": dense_interval / interval,
        })
    keys = rows[0].keys()
    mean = {k: statistics.fmean(r[k] for r in rows) for k in keys}
    mean["compress_over_budget"] = max(r["compress_cycles"] - r["compress_budget"] for r in rows)
    mean["utilisation_work_bound"] = statistics.fmean(
        r["utilisation"] for r in rows if r["sops"] / lanes >= r["lower_bound"]) \
        if any(r["sops"] / lanes >= r["lower_bound"] for r in rows) else None
    return mean


def random_steps(rng, n, density, steps):
    return [(rng.random(n) < density).astype(np.int64) for _ in range(steps)]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_conv",
                                     description="conv engine cycles vs the lower bound and "
                                                 "the dense baseline")
    parser.add_argument("--quick", action="store_true", help="fewer densities and steps")
    parser.add_argument("--steps", type=int, default=6, metavar="T",
                        help="steps per run, the first not counted (default: %(default)s)")
    parser.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results"),
                        metavar="DIR", help="folder for conv.json and conv.png "
                                            "(default: %(default)s)")
    args = parser.parse_args(argv)
    steps = 3 if args.quick else args.steps
    densities = (0.1, 0.3) if args.quick else DENSITIES
    rng = np.random.default_rng(0)

    trained = csnn_layers()
    if trained:
        layers = [(layer, lanes) for (layer, _), lanes in zip(trained, (8, 8))]
        source = "trained digits CSNN (models/zoo/digits_csnn)"
    else:
        layers = [(random_conv(1, cin=1, cout=8, size=(8, 8), name="conv1"), 8),
                  (random_conv(2, cin=8, cout=16, size=(4, 4), name="conv2"), 8)]
        source = "random weights in the digits CSNN's shapes, 75 % sparse"
    layers.append((random_conv(3, cin=8, cout=16, size=(16, 16), name="big3x3"), 8))
    layers.append((random_conv(4, cin=4, cout=8, size=(15, 15), kernel=5, stride=2,
                               padding=2, name="big5x5s2"), 4))

    results = {"source": source, "chunk": CHUNK, "layers": []}
    for layer, lanes in layers:
        if args.quick and layer.name.startswith("big"):
            continue
        entry = {"name": layer.name, "in_shape": list(layer.in_shape),
                 "out_shape": list(layer.out_shape), "kernel": layer.kernel,
                 "stride": layer.stride, "padding": layer.padding, "lanes": lanes,
                 "weight_sparsity": float(np.mean(layer.weight == 0)), "points": []}
        plan = plan_conv(layer, lanes=lanes)
        entry["weight_bits_stored"] = plan.stored_bits
        entry["weight_entry_bits"] = plan.entry_bits
        entry["weight_index_bits"] = plan.record_bits
        entry["weight_bits_dense"] = int(layer.weight.size) * layer.weight_bits
        for density in densities:
            t0 = time.time()
            point = summarise(layer, random_steps(rng, layer.n_in, density, steps), lanes=lanes)
            point["density"] = density
            entry["points"].append(point)
            print(f"{layer.name:9} d={density:<5} S={point['spikes']:6.1f} "
                  f"A={point['sops']:7.1f} comp={point['compress_cycles']:6.1f}"
                  f"/{point['compress_budget']:6.1f} acc={point['accumulate_cycles']:6.1f} "
                  f"int={point['interval']:6.1f} lb={point['lower_bound']:6.1f} "
                  f"ratio={point['ratio']:.2f} util={point['utilisation']:.2f} "
                  f"dense={point['dense_interval']:7.1f} x{point['speedup']:.2f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        results["layers"].append(entry)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "conv.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
