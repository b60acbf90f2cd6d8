# amaranth: UnusedElaboratable=no
"""The trace port: its merge queue on its own, and the whole top's every layer against golden."""
import random

import numpy as np
import pytest

from hdl.top import Accelerator
from hdl.trace import TraceLayout, TraceMerge
from models import golden
from models.synth import random_csnn_bundle, random_events, random_linear_bundle
from tests.sim import run_sim, stream_get, stream_put


def random_tap_events(rng, n, count):
    return [(rng.randrange(n), rng.randrange(2), rng.randrange(2)) for _ in range(count)]


@pytest.mark.parametrize("taps, depth, gap, stall", [
    ([(0, 16), (1, 5), (3, 40)], 2, 0.3, 0.5),
    ([(0, 16), (1, 5), (3, 40)], 8, 0.0, 0.0),
    ([(2, 1)], 4, 0.5, 0.2),
    ([(0, 7), (1, 7), (2, 7), (3, 7), (4, 7)], 3, 0.2, 0.7)])
def test_merge_keeps_every_event_in_order(taps, depth, gap, stall):
    """Every event pushed into a tap comes out once, tagged with its layer, in the order it was
    pushed (per layer), under random gaps on the taps and stalls on the output."""
    dut = TraceMerge(taps, 5, depth=depth)
    rng = random.Random(len(taps) * 10 + depth)
    pushed = {index: random_tap_events(rng, n, 60) for index, n in taps}
    got = []

    def producer(k, index):
        async def run(ctx):
            r = random.Random(k)
            tap = getattr(dut, f"tap{k}")
            for addr, spike, last in pushed[index]:
                while r.random() < gap:
                    await ctx.tick()
                await stream_put(ctx, tap, {"addr": addr, "spike": spike, "last": last})
        return run

    async def consumer(ctx):
        r = random.Random(99)
        for _ in range(sum(len(v) for v in pushed.values())):
            while r.random() < stall:
                await ctx.tick()
            p = await stream_get(ctx, dut.o)
            got.append((int(p.layer), int(p.addr), int(p.spike), int(p.last)))

    run_sim(dut, [producer(k, index) for k, (index, _) in enumerate(taps)] + [consumer],
            watchdog_cycles=20000, name="trace_merge", tail_cycles=64)
    for index, _ in taps:
        assert [g[1:] for g in got if g[0] == index] == pushed[index]
    assert len(got) == sum(len(v) for v in pushed.values())


def test_merge_is_round_robin():
    """With every queue full and the output always ready, the layers take turns."""
    taps = [(0, 4), (2, 4), (5, 4)]
    dut = TraceMerge(taps, 6, depth=4)
    got = []

    def producer(k):
        async def run(ctx):
            for n in range(4):
                await stream_put(ctx, getattr(dut, f"tap{k}"), {"addr": n, "spike": 1,
                                                                 "last": 0})
        return run

    async def consumer(ctx):
        await ctx.tick().repeat(12)                 # let every queue fill
        for _ in range(12):
            got.append(int((await stream_get(ctx, dut.o)).layer))

    run_sim(dut, [producer(k) for k in range(3)] + [consumer], watchdog_cycles=500,
            name="trace_rr", tail_cycles=16)
    assert got == [0, 2, 5] * 4


@pytest.mark.parametrize("taps, layers, depth, error", [
    ([], 3, 8, "at least one traced layer"),
    ([(0, 4)], 3, 1, "Trace depth must be an integer of at least 2, not 1"),
    ([(3, 4)], 3, 8, "Traced layer index 3 is not below the 3 layers"),
    ([(0, 0)], 3, 8, "Neurons of traced layer 0 must be a positive integer, not 0"),
    ([(-1, 4)], 3, 8, "Traced layer index must be an integer of at least 0, not -1")])
def test_merge_bad_parameters(taps, layers, depth, error):
    with pytest.raises((TypeError, ValueError), match=error):
        TraceMerge(taps, layers, depth=depth)


def test_layout_widths():
    assert dict((name, field.shape.width) for name, field in TraceLayout(128, 6)) == {
        "addr": 7, "spike": 1, "last": 1, "layer": 3}


def run_traced_top(bundle, events, samples, *, lanes, seed, stall=0.3, trace_stall=0.4,
                   gap=0.2, trace_depth=8):
    """Drive the top with the trace on; return ``(output events, trace events, expected)``."""
    steps = bundle.input.steps
    x = golden.events_to_dense(events, samples, steps, bundle.input.size)
    run = golden.run(bundle, x)
    dut = Accelerator(bundle, lanes=lanes, trace=True, trace_depth=trace_depth)
    expect_o = golden.output_stream(run.output)
    expect_trace = {index: golden.output_stream(run.spikes[index])
                    for index in dut.traced_layers}
    outs, traces = [], []

    async def producer(ctx):
        rng = random.Random(seed)
        for addr, value, last, first in golden.input_stream(events, samples, steps):
            while rng.random() < gap:
                await ctx.tick()
            await stream_put(ctx, dut.i, {"addr": addr, "value": value, "last": last,
                                          "first": first})

    def consumer(port, count, into, stall_p, salt):
        async def run(ctx):
            rng = random.Random(seed + salt)
            for _ in range(count):
                while rng.random() < stall_p:
                    await ctx.tick()
                into.append(await stream_get(ctx, port))
        return run

    n_trace = sum(len(v) for v in expect_trace.values())
    run_sim(dut, [producer, consumer(dut.o, len(expect_o), outs, stall, 1),
                  consumer(dut.trace, n_trace, traces, trace_stall, 2)],
            watchdog_cycles=400 * (len(expect_o) + n_trace) + 20000, name="traced_top")
    got_o = [(int(p.addr) if p.spike else 0, int(p.spike), int(p.last)) for p in outs]
    got_trace = {index: [(int(p.addr) if p.spike else 0, int(p.spike), int(p.last))
                         for p in traces if int(p.layer) == index]
                 for index in dut.traced_layers}
    assert sum(len(v) for v in got_trace.values()) == len(traces)    # no unknown layer ids
    return got_o, expect_o, got_trace, expect_trace


@pytest.mark.parametrize("lanes, layers, depth", [(1, 3, 2), (3, 2, 8)])
def test_linear_top_traces_every_layer(lanes, layers, depth):
    b = random_linear_bundle(n_in=20, n_out=10, hidden=24, layers=layers, sparsity=0.5,
                             seed=lanes, steps=4)
    ev = random_events(np.random.default_rng(lanes), samples=2, steps=4, n_in=20, density=0.4)
    got_o, expect_o, got_trace, expect_trace = run_traced_top(b, ev, 2, lanes=lanes, seed=lanes,
                                                             trace_depth=depth)
    assert got_o == expect_o
    assert got_trace == expect_trace
    assert list(expect_trace) == list(range(layers - 1))
    assert sum(s for events in expect_trace.values() for _, s, _ in events) > 0


def test_csnn_top_traces_conv_and_pool_layers():
    from models.bundle import load, save
    import tempfile
    b = random_csnn_bundle(in_shape=(1, 8, 8), channels=(3, 4), seed=3, steps=3, sparsity=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        save(b, tmp)
        b = load(tmp)
    ev = random_events(np.random.default_rng(3), samples=2, steps=3, n_in=b.input.size,
                       density=0.3)
    got_o, expect_o, got_trace, expect_trace = run_traced_top(b, ev, 2, lanes=2, seed=3)
    assert got_o == expect_o
    assert got_trace == expect_trace
    kinds = [b.layers[index].kind for index in expect_trace]
    assert kinds == ["conv2d", "spike_pool", "conv2d", "spike_pool"]      # flatten has none


def test_trace_refused_without_hidden_layers():
    b = random_linear_bundle(n_in=8, n_out=4, sparsity=0.5, seed=0)
    with pytest.raises(ValueError, match="only one layer with hardware"):
        Accelerator(b, trace=True)


def test_plain_top_has_no_trace_port():
    b = random_linear_bundle(n_in=8, n_out=4, hidden=6, layers=2, sparsity=0.5, seed=0)
    top = Accelerator(b)
    assert "trace" not in top.signature.members
    assert top.traced_layers == []
