# amaranth: UnusedElaboratable=no
"""The whole accelerator in the Amaranth simulator against the golden model."""
import random

import numpy as np
import pytest

from hdl.top import Accelerator
from models import golden
from models.bundle import Leak, Neuron
from models.synth import random_csnn_bundle, random_events, random_linear_bundle
from tests.sim import run_sim, stream_put, top_consumer


def rtl_top(bundle, stream_in, n_out_events, *, lanes=1, fmt=None, dense=False, stall=0.3,
            gap=0.3, seed=0, updates=None):
    """Drive ``stream_in`` into the top; return ``n_out_events`` output events."""
    dut = Accelerator(bundle, lanes=lanes, fmt=fmt, dense=dense, updates=updates)
    results = []

    async def producer(ctx):
        rng = random.Random(seed)
        for addr, value, last, first in stream_in:
            while rng.random() < gap:
                await ctx.tick()
            await stream_put(ctx, dut.i, {"addr": addr, "value": value, "last": last,
                                          "first": first})

    consumer = top_consumer(dut, n_out_events, results, stall=stall, seed=seed + 1)
    budget = 200 + 40 * (len(stream_in) + n_out_events) * max(1, bundle.layers[0].n_out)
    run_sim(dut, [producer, consumer], watchdog_cycles=budget, name="top")
    return results


def check(bundle, events, samples, **kwargs):
    steps = bundle.input.steps
    x = golden.events_to_dense(events, samples, steps, bundle.input.size)
    expect = golden.output_stream(golden.run(bundle, x).output)
    got = rtl_top(bundle, golden.input_stream(events, samples, steps), len(expect), **kwargs)
    assert got == expect
    return sum(e[1] for e in expect)


@pytest.mark.parametrize("fmt", ["csr", "bitmap"])
@pytest.mark.parametrize("lanes", [1, 3, 4])
@pytest.mark.parametrize("sparsity", [0.0, 0.75])
def test_linear_two_layers(lanes, sparsity, fmt):
    b = random_linear_bundle(n_in=20, n_out=12, sparsity=sparsity, seed=lanes, layers=2,
                             hidden=16, steps=4)
    ev = random_events(np.random.default_rng(lanes), samples=2, steps=4, n_in=20, density=0.3)
    assert check(b, ev, 2, lanes=lanes, fmt=fmt) > 0


@pytest.mark.parametrize("fmt", ["csr", "bitmap"])
@pytest.mark.parametrize("lanes, sparsity", [(1, 0.75), (2, 0.9), (1, 0.97)])
def test_bitmap_chunks(lanes, sparsity, fmt):
    # 70 neurons per bank: several 16-bit bitmap chunks per row, some of them empty.
    b = random_linear_bundle(n_in=24, n_out=70 * lanes, sparsity=sparsity, seed=11, steps=3)
    ev = random_events(np.random.default_rng(12), samples=2, steps=3, n_in=24, density=0.4)
    assert check(b, ev, 2, lanes=lanes, fmt=fmt) > 0


@pytest.mark.parametrize("lanes, updates", [(1, 2), (3, 4), (2, 1)])
@pytest.mark.parametrize("fmt", ["csr", "bitmap"])
def test_sub_banked_sweep(lanes, updates, fmt):
    # U = updates * L neurons per sweep cycle; 37 neurons leave partial rows in the sub-banks.
    b = random_linear_bundle(n_in=20, n_out=37, sparsity=0.6, seed=21, steps=4, layers=2,
                             hidden=29)
    ev = random_events(np.random.default_rng(22), samples=2, steps=4, n_in=20, density=0.3)
    assert check(b, ev, 2, lanes=lanes, fmt=fmt, updates=updates) > 0


@pytest.mark.parametrize("lanes", [1, 2])
def test_dense_baseline(lanes):
    b = random_linear_bundle(n_in=16, n_out=8, sparsity=0.5, seed=7, steps=4,
                             input_bits=3, input_signed=True)
    ev = random_events(np.random.default_rng(7), samples=2, steps=4, n_in=16, density=0.4,
                       bits=3, signed=True, duplicates=True)
    assert check(b, ev, 2, lanes=lanes, dense=True) > 0


@pytest.mark.parametrize("neuron", [
    Neuron("lif", "zero", 40, 8, Leak("mul", beta=200, frac_bits=8)),
    Neuron("lapicque", "zero", 40, 8, Leak("shift", shift=2)),
    Neuron("lif", "none", 30, 7, Leak("mul", beta=16, frac_bits=4)),
])
def test_neuron_modes_saturating(neuron):
    b = random_linear_bundle(n_in=12, n_out=10, sparsity=0.25, seed=3, steps=5, neuron=neuron,
                             input_bits=4, input_signed=True, weight_bits=6)
    ev = random_events(np.random.default_rng(5), samples=2, steps=5, n_in=12, density=0.5,
                       bits=4, signed=True)
    assert check(b, ev, 2, lanes=2) > 0


def test_status_port_counts():
    from hdl import cycles
    b = random_linear_bundle(n_in=32, n_out=16, sparsity=0.5, seed=2, steps=3)
    ev = random_events(np.random.default_rng(2), samples=1, steps=3, n_in=32, density=0.3)
    stream_in = golden.input_stream(ev, 1, 3)
    dut = Accelerator(b, lanes=2, status=True)
    seen = []

    async def producer(ctx):
        for addr, value, last, first in stream_in:
            await stream_put(ctx, dut.i, {"addr": addr, "value": value, "last": last,
                                          "first": first})

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = first_in = None
        for cycle in range(3000):
            await ctx.tick()
            if first_in is None and ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                first_in = cycle
            if ctx.get(dut.o.valid) and ctx.get(dut.o.payload.last):
                seen.append(cycle)
                if len(seen) == 3:
                    break
        await ctx.tick()
        st = ctx.get(dut.status)
        seen.append((st.steps, st.step_cycles, st.sample_cycles, st.sops, first_in))

    run_sim(dut, [producer, consumer], watchdog_cycles=4000, name="top")
    steps, step_cycles, sample_cycles, sops, first_in = seen[3]
    assert steps == 3
    assert step_cycles == seen[2] - seen[1]
    assert sample_cycles == seen[2] - first_in        # clock edges between the transfers
    assert sops == sum(cycles.step_work(b.layers[0].weight, ev[ev[:, 1] == t][:, 2])
                       for t in range(3))


@pytest.mark.parametrize("lanes, kernel, stride, padding, pool", [
    (1, 3, 1, 1, 2), (2, 3, 2, 0, 0), (4, 5, 1, 2, 2)])
def test_conv_pool_flatten_linear(lanes, kernel, stride, padding, pool):
    import tempfile

    from models.bundle import load, save
    b = random_csnn_bundle(in_shape=(2, 9, 9), channels=(4, 3), kernel=kernel, stride=stride,
                           padding=padding, pool=pool, seed=lanes, steps=3, sparsity=0.5)
    with tempfile.TemporaryDirectory() as tmp:          # the bundle survives the contract check
        save(b, tmp)
        b = load(tmp)
    ev = random_events(np.random.default_rng(lanes), samples=2, steps=3, n_in=b.input.size,
                       density=0.3)
    assert check(b, ev, 2, lanes=lanes) > 0
