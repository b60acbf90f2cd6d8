# amaranth: UnusedElaboratable=no
"""Weights loaded at run time (hdl/wload.py): the store, the loader, SPRAM, and whole networks
built for one bundle and running another of the same shape, bit for bit with the golden
model."""
import random

import numpy as np
import pytest
from amaranth import *
from amaranth.lib import data
from amaranth.sim import Simulator

from hdl.top import Accelerator
from hdl.wload import SPRAM, WeightLoader, WeightStore, word_value
from models import golden
from models.bundle import Leak, Neuron
from models.synth import random_csnn_bundle, random_events, random_linear_bundle
from tests.sim import run_sim, stream_put, top_consumer

NEURON = Neuron("lif", "subtract", 40, 16, Leak("shift", shift=3))


def bundle(seed, sparsity, *, input_bits=1, n_in=20, hidden=16, n_out=12, steps=4,
           neuron=NEURON):
    return random_linear_bundle(n_in=n_in, n_out=n_out, sparsity=sparsity, seed=seed,
                                layers=2, hidden=hidden, steps=steps, neuron=neuron,
                                input_bits=input_bits)


def rtl_loaded(board, run, stream_in, n_out_events, *, lanes=1, stall=0.3, seed=0,
               loads=1, updates=None):
    """Build the accelerator for bundle ``board`` with ``weights="load"``, load ``run``'s image
    (``loads`` times, the earlier ones cut short at random), then drive ``stream_in``."""
    dut = Accelerator(board, lanes=lanes, weights="load", updates=updates)
    store = Accelerator(run, lanes=lanes, weights="load", updates=updates).weight_store
    assert store.ident == dut.weight_store.ident, "the bundles have different layouts"
    image = store.image()
    results = []

    async def producer(ctx):
        rng = random.Random(seed)
        for n in range(loads):
            cut = len(image) if n == loads - 1 else rng.randrange(len(image))
            ctx.set(dut.load_restart, 1)
            await ctx.tick()
            ctx.set(dut.load_restart, 0)
            for byte in image[:cut]:
                ctx.set(dut.load.valid, 1)
                ctx.set(dut.load.p, byte)
                await ctx.tick()
                ctx.set(dut.load.valid, 0)
                for _ in range(1 + rng.randrange(3)):
                    await ctx.tick()
        await ctx.tick().repeat(2)
        assert ctx.get(dut.load_done) == 1
        for addr, value, last, first in stream_in:
            while rng.random() < 0.3:
                await ctx.tick()
            await stream_put(ctx, dut.i, {"addr": addr, "value": value, "last": last,
                                          "first": first})

    consumer = top_consumer(dut, n_out_events, results, stall=stall, seed=seed + 1)
    budget = 1000 + 5 * loads * len(image) + 100 * (len(stream_in) + n_out_events) * 16
    run_sim(dut, [producer, consumer], watchdog_cycles=budget, name="loaded")
    return results


def check_loaded(board, run, samples=2, **kwargs):
    steps = run.input.steps
    ev = random_events(np.random.default_rng(7), samples=samples, steps=steps,
                       n_in=run.input.size, density=0.3, bits=run.input.bits)
    x = golden.events_to_dense(ev, samples, steps, run.input.size)
    expect = golden.output_stream(golden.run(run, x).output)
    got = rtl_loaded(board, run, golden.input_stream(ev, samples, steps), len(expect), **kwargs)
    assert got == expect
    return sum(e[1] for e in expect)


@pytest.mark.parametrize("lanes", [1, 3])
def test_board_runs_another_bundle_of_its_shape(lanes):
    """Built for one bundle (75 % sparse), loaded with another (60 % sparse, other weights and
    biases): the network is the loaded one's, bit for bit."""
    board, run = bundle(1, 0.75), bundle(2, 0.6)
    assert check_loaded(board, run, lanes=lanes) > 0


def test_loaded_threshold():
    """Another threshold is part of the image, not of the layout: a board built with
    threshold 40 runs bundles with 7 and 400, each as the golden model does (and differently
    from each other)."""
    spikes = [check_loaded(bundle(1, 0.75), bundle(2, 0.75, neuron=Neuron(
        "lif", "subtract", threshold, 16, Leak("shift", shift=3)))) for threshold in (7, 400)]
    assert spikes[0] > spikes[1]


def test_reload_after_cut_loads():
    """Loads cut short and restarted: only the last, whole one counts."""
    assert check_loaded(bundle(3, 0.6), bundle(4, 0.75), loads=3, seed=5) > 0


def test_multibit_input_and_sub_banked_sweep():
    board, run = bundle(5, 0.6, input_bits=4), bundle(6, 0.8, input_bits=4)
    assert check_loaded(board, run, lanes=2, updates=2) > 0


def test_loaded_dense_bank_weights_fold():
    """Every weight non-zero: a board built for a bundle denser than half takes every weight
    (its lanes' memories are full to their capacity)."""
    assert check_loaded(bundle(7, 0.3, n_in=9, hidden=5, n_out=4),
                        bundle(8, 0.0, n_in=9, hidden=5, n_out=4)) > 0


def test_ident_names_the_shape():
    base = Accelerator(bundle(1, 0.75), weights="load").weight_store
    for other in (bundle(1, 0.75, hidden=17), bundle(1, 0.75, input_bits=2),
                  bundle(1, 0.75, neuron=Neuron("lif", "subtract", 40, 16,
                                                Leak("shift", shift=2))),
                  bundle(1, 0.75, neuron=Neuron("lif", "zero", 40, 16,
                                                Leak("shift", shift=3)))):
        assert Accelerator(other, weights="load").weight_store.ident != base.ident
    # The threshold is loaded: not part of the layout.
    assert Accelerator(bundle(1, 0.75, neuron=Neuron("lif", "subtract", 900, 16,
                                                     Leak("shift", shift=3))),
                       weights="load").weight_store.ident == base.ident
    assert Accelerator(bundle(1, 0.75), lanes=2, weights="load").weight_store.ident != base.ident
    # Denser than half in a lane: the entry memories are built for every weight, another layout.
    assert Accelerator(bundle(1, 0.2), weights="load").weight_store.ident != base.ident
    assert Accelerator(bundle(9, 0.6), weights="load").weight_store.ident == base.ident


def test_bad_parameters():
    b = bundle(1, 0.75)
    with pytest.raises(ValueError, match=r"^Weights must be 'rom' or 'load', not 'ram'$"):
        Accelerator(b, weights="ram")
    with pytest.raises(ValueError, match=r"^SPRAM holds weights loaded at run time only"):
        Accelerator(b, spram=2)
    with pytest.raises(ValueError, match=r"^SPRAM blocks must be an integer from 0 to 4, "
                                         r"not 5$"):
        Accelerator(b, weights="load", spram=5)
    with pytest.raises(ValueError, match=r"^Layer 'fc1': Weights loaded at run time need the "
                                         r"event-driven engine"):
        Accelerator(b, weights="load", dense=True)
    conv = random_csnn_bundle(seed=1)
    with pytest.raises(ValueError, match=r"^Layer 'conv1': Weights of a conv2d layer must be "
                                         r"in ROM"):
        Accelerator(conv, weights="load")


def test_store_image_layout():
    """Words little-endian, ``ceil(width / 8)`` bytes each, memories in order, padded."""
    store = WeightStore()
    layout = data.StructLayout({"a": 4, "b": signed(6)})
    assert store.add("x", layout, 3, [{"a": 5, "b": -1}]) == 0
    assert store.add("y", signed(12), 2, [-2, 7]) == 1
    assert word_value(layout, {"a": 5, "b": -1}) == 5 | (0x3F << 4)
    assert store.image() == bytes([0xF5, 0x03, 0, 0, 0, 0, 0xFE, 0x0F, 0x07, 0x00])
    assert store.size == 10
    with pytest.raises(ValueError, match=r"^Memory 'z' holds 1 words, not 2$"):
        store.add("z", 8, 1, [1, 2])


def test_loader_writes_every_word():
    store = WeightStore()
    store.add("x", 12, 3, [0xABC, 0x123, 0x456])
    store.add("y", 8, 2, [0x11, 0x22])
    dut = WeightLoader(store)
    image = store.image()
    writes = []

    async def bench(ctx):
        ctx.set(dut.restart, 1)
        await ctx.tick()
        ctx.set(dut.restart, 0)
        for byte in image + b"\x99":            # one byte past the image: ignored
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.p, byte)
            await ctx.tick()
            ctx.set(dut.i.valid, 0)
            if ctx.get(dut.o.en):
                writes.append((ctx.get(dut.o.sel), ctx.get(dut.o.addr), ctx.get(dut.o.data)))
            await ctx.tick()
            if ctx.get(dut.o.en):
                writes.append((ctx.get(dut.o.sel), ctx.get(dut.o.addr), ctx.get(dut.o.data)))
        assert ctx.get(dut.done)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert [(s, a, d & ((1 << (12 if s == 0 else 8)) - 1)) for s, a, d in writes] == [
        (0, 0, 0xABC), (0, 1, 0x123), (0, 2, 0x456), (1, 0, 0x11), (1, 1, 0x22)]


@pytest.mark.parametrize("width, depth", [(16, 100), (12, 20000)])
def test_spram_simulation_model(width, depth):
    """The SPRAM component's simulation path: writes, and reads a cycle later (the vendor
    model behind its iCE40 path: tests/cosim/test_spram.py)."""
    dut = SPRAM(width, depth)
    rng = random.Random(depth)
    model = {}

    async def bench(ctx):
        for _ in range(300):
            addr = rng.randrange(depth)
            if rng.random() < 0.5:
                value = rng.randrange(2 ** width)
                ctx.set(dut.addr, addr)
                ctx.set(dut.we, 1)
                ctx.set(dut.wdata, value)
                await ctx.tick()
                ctx.set(dut.we, 0)
                model[addr] = value
            else:
                ctx.set(dut.addr, addr)
                await ctx.tick()
                assert ctx.get(dut.rdata) == model.get(addr, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
