"""Cycles of the event-driven convolution engine against the lower bound and the dense baseline.

Runs :class:`hdl.conv.Conv2dEngine` in the Amaranth simulator, every output event checked
against the golden model, over input spike densities, for the digits CSNN's two conv layers (the
trained weights of ``models/zoo/digits_csnn`` when that bundle exists, otherwise random weights
of its shapes and 75 % sparsity) and a larger layer. Per conv layer and density it records, as
means over the measured steps: input spikes S, active synaptic operations A, the compressor's
cycles and its budget (S plus one pass of ``ceil(C*H*W / 16)`` words), the accumulate cycles,
the step interval, the lower bound of DESIGN.md section 7 (``max(A/L, S, N/U)``, U = L), their
ratio, lane utilisation ``A / (L * accumulate cycles)``, and the dense baseline's interval on
the same inputs and lanes with the speedup, and the engine's own estimate (the engine
contract's ``estimate_cycles``) with its error against the measured interval.

    python -m benchmarks.bench_conv [--quick] [--steps T] [-o DIR]

The default run takes about 7 minutes on an idle 2-core machine, ``--quick`` about 1.

The input is offered every cycle and the output is always ready; step 0 fills the pipeline and
is not counted. The step interval is the time between the closing output events of consecutive
steps: the stages of consecutive steps overlap, so this is what a step costs, as the next layer
sees it. The output stream carries one event per cycle, so a step that fires more neurons than
the bound's cycles is limited by its output; ``out_events`` shows when. Writes ``conv.json``
(with its provenance) and ``conv.png``.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from amaranth.sim import Simulator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))       # run as a file: python benchmarks/bench_conv.py

from benchmarks.provenance import (  # noqa: E402
    PROVENANCE_KEYS, provenance, repo_path, rtlil_sha256, write_result,
)
from hdl import cycles  # noqa: E402
from hdl.conv import CHUNK, Conv2dEngine, conv_work, plan_conv  # noqa: E402
from models import bundle as bundle_io  # noqa: E402
from models import golden  # noqa: E402
from models.bundle import Bundle, InputSpec, Layer, Leak, Neuron  # noqa: E402
from models.synth import random_weights  # noqa: E402

CSNN = ROOT / "models" / "zoo" / "digits_csnn"
DENSITIES = (0.05, 0.1, 0.2, 0.3, 0.5)

# What conv.json holds (checked before writing and by tests/test_benchmark_results.py); bump
# SCHEMA when the layout changes. The engines are generated from hdl/ (their RTLIL is
# fingerprinted: see designs()); no other source is recorded.
SCHEMA = 2
SOURCES = ()
GATEWARE = ("hdl/*.py",)
STEP_KEYS = {"spikes", "sops", "out_events", "compress_cycles", "compress_budget",
             "accumulate_cycles", "interval", "lower_bound", "ratio", "utilisation",
             "output_bound", "output_ratio", "work_bound", "estimate", "model_error",
             "dense_sops", "dense_interval", "speedup"}
# A point: the means of its steps' figures, and what the means do not say.
POINT_KEYS = (STEP_KEYS - {"work_bound"}) | {
    "work_bound_steps", "work_bound_utilisation", "work_bound_ratio",
    "max_compress_over_budget", "model_error_worst", "density", "steps"}
RESULT_KEYS = {
    "": {"provenance", "source", "chunk", "steps_per_run", "bound", "layers", "csnn"},
    "provenance": PROVENANCE_KEYS,
    "layers/*": {"name", "in_shape", "out_shape", "kernel", "stride", "padding", "lanes",
                 "weight_sparsity", "weight_bits_stored", "weight_entry_bits",
                 "weight_index_bits", "weight_bits_dense", "points"},
    "layers/*/points/*": POINT_KEYS | {"dense_measured_at"},
    "layers/*/points/*/steps/*": STEP_KEYS,
    "csnn/*": POINT_KEYS | {"name", "lanes", "samples"},
    "csnn/*/steps/*": STEP_KEYS,
}


def random_conv(seed, *, cin, cout, size, kernel=3, stride=1, padding=1, sparsity=0.75,
                name="conv", fire=0.1):
    """A random pruned conv layer whose threshold makes about ``fire`` of its neurons spike per
    step at input density 0.2 (trained CSNNs fire sparsely too)."""
    rng = np.random.default_rng(seed)
    h, w = size
    ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    weight = random_weights(rng, (cout, cin, kernel, kernel), sparsity=sparsity, weight_bits=8)
    scale = np.abs(weight).reshape(cout, -1).sum(axis=1).mean()
    noise = rng.integers(-1, 2, size=cout)
    x = (rng.random((1, 10, cin * h * w)) < 0.2).astype(np.int64)
    for factor in (0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5):
        threshold = max(1, int(scale * factor))
        neuron = Neuron("lif", "subtract", threshold, 16, Leak("mul", beta=230, frac_bits=8))
        layer = Layer(name, "conv2d", (cin, h, w), (cout, ho, wo), weight,
                      noise * (threshold // 8), 8, neuron, kernel, stride, padding)
        bundle = Bundle(InputSpec(layer.in_shape, 1, False, "raw", 10), [layer])
        if golden.run(bundle, x).output.mean() <= fire:
            break
    return layer


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


def layer_plan(trained, quick):
    """``[(layer, lanes, inputs)]`` the benchmark measures, in order: the CSNN's conv layers
    (``trained``: :func:`csnn_layers`'s pairs) or random ones of their shapes, and unless
    ``quick`` two larger random layers. ``inputs`` is the trained layer's input or None."""
    if trained:
        conv = [(layer, 8, x) for layer, x in trained]
        # conv1 has 8 output channels: with 8 lanes each lane holds one kernel, and the
        # fullest kernel sets the pace; 4 lanes let the balancing pair them.
        conv.insert(1, (trained[0][0], 4, trained[0][1]))
    else:
        conv = [(random_conv(1, cin=1, cout=8, size=(8, 8), name="conv1"), 8, None),
                (random_conv(2, cin=8, cout=16, size=(4, 4), name="conv2"), 8, None)]
    big = [] if quick else [
        (random_conv(3, cin=8, cout=16, size=(12, 12), name="big3x3"), 8, None),
        (random_conv(4, cin=4, cout=8, size=(15, 15), kernel=5, stride=2, padding=2,
                     name="big5x5s2"), 4, None)]
    return conv + big


def engine(layer, *, lanes, dense):
    """The engine :func:`measure` simulates."""
    return Conv2dEngine(layer, lanes=lanes, dense=dense, counters=True)


def inputs(result):
    """The data a result measured (its provenance's ``inputs``): the trained CSNN, whose
    layers it measures when the bundle exists."""
    return [repo_path(CSNN)] if CSNN.is_dir() else []


def designs(result):
    """The designs a result measured, ``{label: callable returning its fingerprint}``: per
    layer entry, the sparse and the dense engine (``<layer> lanes L sparse|dense``: their
    RTLIL), rebuilt as :func:`layer_plan` makes them: the CSNN's trained layers when the result
    says so, the random layers from their seeds, the larger ones unless the command had
    ``--quick``. The CSNN points ran the same engines as their layer entries."""
    import functools
    trained = None
    if result["source"].startswith("trained"):
        bundle = bundle_io.load(CSNN)
        trained = [(layer, None) for layer in bundle.layers if layer.kind == "conv2d"]
    plan = functools.cache(
        lambda: layer_plan(trained, "--quick" in result["provenance"]["command"]))

    def engine_sha(index, name, dense):
        layer, lanes, _ = plan()[index]
        if layer.name != name:
            raise ValueError(f"layer {index} is {layer.name} now, not {name}")
        return rtlil_sha256(engine(layer, lanes=lanes, dense=dense), name="conv")
    return {f"{entry['name']} lanes {entry['lanes']} {kind}":
            functools.partial(engine_sha, index, entry["name"], kind == "dense")
            for index, entry in enumerate(result["layers"]) for kind in ("sparse", "dense")}


def measure(layer, steps, *, lanes, dense=False):
    """Run ``steps`` (``[S_in-long 0/1 vectors]``, one sample) through the engine.

    Returns per step: spikes, sops, compressor cycles, the running total of accumulate-stage
    busy cycles, the cycles at which the step's accumulation and sweep ended and the engine's
    own estimate of the step (``estimate_cycles``), after checking every output event against
    the golden model.
    """
    dut = engine(layer, lanes=lanes, dense=dense)
    events = [[(int(a), 1) for a in np.flatnonzero(x)] or [(0, 0)] for x in steps]
    out, stats, closed_at, clock = [], [], [], [0]

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
            if p.last:
                closed_at.append(clock[0])

    async def monitor(ctx):
        cycle, swept = 0, 0
        while True:
            await ctx.tick()
            cycle += 1
            clock[0] = cycle
            st = ctx.get(dut.counters)
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
    _, estimate = dut.estimate_cycles(np.asarray(steps), [int(s.sum()) for s in spikes])
    for st, s, at, est in zip(stats, spikes, closed_at, estimate):
        st["out_events"] = max(1, int(s.sum()))
        st["closed_at"] = at
        st["estimate"] = int(est)
    return stats


def summarise(layer, steps, *, lanes, dense=None):
    """Sparse and dense runs on ``steps``: every measured step, and their means.

    ``dense`` reuses an earlier dense run: the baseline visits every input and weight, so its
    cycles do not depend on the input (slow to simulate for large layers).
    """
    sparse = measure(layer, steps, lanes=lanes)
    if dense is None:
        dense = measure(layer, steps, lanes=lanes, dense=True)
    cin, h, w = layer.in_shape
    budget_pass = cin * math.ceil(h * w / CHUNK)        # one pass per channel, as specified
    rows = []
    for t in range(1, len(steps)):
        s, d = sparse[t], dense[t]
        bound = cycles.lower_bound(s["sops"], s["spikes"], layer.n_out, lanes=lanes)
        interval = s["closed_at"] - sparse[t - 1]["closed_at"]
        # The accumulate stage's busy cycles between this step's completion and the last one's.
        accumulate = s["busy_total"] - sparse[t - 1]["busy_total"]
        dense_interval = d["closed_at"] - dense[t - 1]["closed_at"]
        rows.append({
            "spikes": s["spikes"], "sops": s["sops"], "out_events": s["out_events"],
            "compress_cycles": s["compress_cycles"],
            "compress_budget": s["spikes"] + budget_pass,
            "accumulate_cycles": accumulate, "interval": interval, "lower_bound": bound,
            "ratio": interval / bound, "utilisation": s["sops"] / (lanes * accumulate),
            # The output stream takes one event per cycle, which the bound does not count.
            "output_bound": max(bound, s["out_events"]),
            "output_ratio": interval / max(bound, s["out_events"]),
            "work_bound": math.ceil(s["sops"] / lanes) == bound,
            "estimate": s["estimate"], "model_error": (s["estimate"] - interval) / interval,
            "dense_sops": d["sops"], "dense_interval": dense_interval,
            "speedup": dense_interval / interval,
        })
    mean = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if k != "work_bound"}
    work = [r for r in rows if r["work_bound"]]
    mean["work_bound_steps"] = len(work)
    mean["work_bound_utilisation"] = (statistics.fmean(r["utilisation"] for r in work)
                                      if work else None)
    mean["work_bound_ratio"] = statistics.fmean(r["ratio"] for r in work) if work else None
    mean["max_compress_over_budget"] = max(r["compress_cycles"] - r["compress_budget"]
                                           for r in rows)
    mean["model_error_worst"] = max(abs(r["model_error"]) for r in rows)
    return mean, rows, dense


def random_steps(rng, n, density, steps):
    return [(rng.random(n) < density).astype(np.int64) for _ in range(steps)]


def report(name, point):
    print(f"{name:9} d={point['density']:<6.3f} S={point['spikes']:6.1f} "
          f"A={point['sops']:7.1f} out={point['out_events']:6.1f} "
          f"comp={point['compress_cycles']:5.1f}/{point['compress_budget']:5.1f} "
          f"acc={point['accumulate_cycles']:6.1f} int={point['interval']:6.1f} "
          f"lb={point['lower_bound']:6.1f} ratio={point['ratio']:.2f} "
          f"(out {point['output_ratio']:.2f}) "
          f"util={point['utilisation']:.2f} est={point['estimate']:6.1f} "
          f"(err {point['model_error']:+.1%}, worst {point['model_error_worst']:.1%}) "
          f"dense={point['dense_interval']:7.1f} x{point['speedup']:.1f}", flush=True)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [e for e in results["layers"] if e["points"]]
    fig, axes = plt.subplots(2, len(layers), figsize=(4.2 * len(layers), 7), squeeze=False)
    for col, entry in enumerate(layers):
        pts = sorted(entry["points"], key=lambda p: p["density"])
        d = [p["density"] for p in pts]
        ax = axes[0][col]
        ax.plot(d, [p["interval"] for p in pts], "o-", label="measured")
        ax.plot(d, [p["lower_bound"] for p in pts], "k--", label="lower bound")
        ax.plot(d, [p["dense_interval"] for p in pts], "s-", label="dense baseline")
        ax.set_yscale("log")
        ax.set_title(f"{entry['name']} {entry['in_shape']}->{entry['out_shape']}\n"
                     f"k{entry['kernel']} s{entry['stride']} p{entry['padding']} "
                     f"L={entry['lanes']}", fontsize=9)
        ax.set_xlabel("input spike density")
        ax.set_ylabel("cycles per step")
        ax.legend(fontsize=7)
        ax = axes[1][col]
        ax.plot(d, [p["utilisation"] for p in pts], "o-", label="lane utilisation")
        ax.plot(d, [p["ratio"] for p in pts], "^-", label="cycles / bound")
        ax.plot(d, [p["speedup"] / 10 for p in pts], "s-", label="speedup vs dense / 10")
        ax.axhline(0.7, color="grey", lw=0.5)
        ax.axhline(1.4, color="grey", lw=0.5)
        ax.set_xlabel("input spike density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_conv",
                                     description="conv engine cycles vs the lower bound and "
                                                 "the dense baseline")
    parser.add_argument("--quick", action="store_true", help="fewer layers, densities and steps")
    parser.add_argument("--steps", type=int, default=6, metavar="T",
                        help="steps per run, the first not counted (default: %(default)s)")
    parser.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results"),
                        metavar="DIR", help="folder for conv.json and conv.png "
                                            "(default: %(default)s)")
    args = parser.parse_args(argv)
    prov = provenance(__file__, SOURCES, gateware=GATEWARE, schema=SCHEMA, inputs=inputs,
                      argv=argv)                                        # before measuring
    steps = 3 if args.quick else args.steps
    densities = (0.1, 0.3) if args.quick else DENSITIES
    rng = np.random.default_rng(0)

    trained = csnn_layers()
    source = ("trained digits CSNN (models/zoo/digits_csnn)" if trained else
              "random weights in the digits CSNN's shapes, 75 % sparse")

    results = {"source": source, "chunk": CHUNK, "steps_per_run": steps,
               "bound": "max(ceil(A/L), ceil(S/1), ceil(N/L)) (DESIGN.md section 7, U = L)",
               "layers": [], "csnn": []}
    for layer, lanes, csnn_x in layer_plan(trained, args.quick):
        plan = plan_conv(layer, lanes=lanes)
        entry = {"name": layer.name, "in_shape": list(layer.in_shape),
                 "out_shape": list(layer.out_shape), "kernel": layer.kernel,
                 "stride": layer.stride, "padding": layer.padding, "lanes": lanes,
                 "weight_sparsity": float(np.mean(layer.weight == 0)),
                 "weight_bits_stored": plan.stored_bits, "weight_entry_bits": plan.entry_bits,
                 "weight_index_bits": plan.record_bits,
                 "weight_bits_dense": int(layer.weight.size) * layer.weight_bits,
                 "points": []}
        reuse = None
        once = int(conv_work(layer, dense=True).sum()) > 50000     # slow dense simulations
        for density in densities:
            t0 = time.time()
            point, rows, dense = summarise(layer, random_steps(rng, layer.n_in, density, steps),
                                           lanes=lanes, dense=reuse)
            point["dense_measured_at"] = density
            if once:
                reuse = dense
                if entry["points"]:
                    point["dense_measured_at"] = entry["points"][0]["density"]
            point["density"] = density
            point["steps"] = rows
            entry["points"].append(point)
            report(layer.name, point)
            print(f"          ({time.time() - t0:.0f} s)")
        results["layers"].append(entry)
        if csnn_x is not None:
            # The spikes this layer receives in the trained network, samples one after another.
            flat = csnn_x[:1 if args.quick else 2].reshape(-1, layer.n_in)
            point, rows, _ = summarise(layer, list(flat), lanes=lanes)
            point["density"] = float(csnn_x.mean())
            point["steps"] = rows
            results["csnn"].append({"name": layer.name, "lanes": lanes,
                                    "samples": 1 if args.quick else 2, **point})
            report(layer.name + "*", point)

    out = Path(args.output)
    write_result(out / "conv.json", results, provenance=prov,
                 result_keys=RESULT_KEYS, designs=designs)
    plot(results, out / "conv.png")
    print(f"wrote {out / 'conv.json'} and {out / 'conv.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
