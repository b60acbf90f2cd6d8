# amaranth: UnusedElaboratable=no
import itertools
import random

import numpy as np
import pytest
from amaranth import *
from amaranth.sim import Simulator

from hdl.conv import Conv2dEngine, conv_work, plan_conv
from models import golden
from models.bundle import Bundle, InputSpec, Layer, Leak, Neuron
from models.synth import random_weights
from tests.sim import run_sim, step_producer


def conv_layer(seed, *, cin, cout, size, kernel, stride=1, padding=0, sparsity=0.5,
               neuron=None, weight_bits=6, value_max=1, density=0.3, bias=True):
    """A random conv2d layer whose threshold lets a fair share of neurons fire."""
    rng = np.random.default_rng(seed)
    h, w = size
    ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    weight = random_weights(rng, (cout, cin, kernel, kernel), sparsity=sparsity,
                            weight_bits=weight_bits)
    typical = np.abs(weight).reshape(cout, -1).sum(axis=1).mean() * density * value_max
    neuron = neuron or Neuron()
    threshold = int(min(max(1, typical * 0.4), neuron.hi // 2))
    neuron = Neuron(neuron.model, neuron.reset, threshold, neuron.potential_bits, neuron.leak)
    b = rng.integers(-threshold // 3, threshold // 3 + 1, size=cout) if bias else None
    return Layer("conv", "conv2d", (cin, h, w), (cout, ho, wo), weight, b, weight_bits, neuron,
                 kernel, stride, padding)


def value_range(shape):
    if shape.signed:
        return -2 ** (shape.width - 1), 2 ** (shape.width - 1) - 1
    return 0, 2 ** shape.width - 1


def random_steps(seed, layer, *, samples, steps, value_shape, density=0.3):
    """Input steps ``[(first, [(addr, value)])]``: shuffled, with empty steps, zero-value
    no-ops and values split over repeated addresses (they add up)."""
    rng = random.Random(seed)
    lo, hi = value_range(value_shape)
    out = []
    for _, t in itertools.product(range(samples), range(steps)):
        d = rng.choice([0.0, density, density, 2 * density])
        events = []
        for a in range(layer.n_in):
            if rng.random() < d:
                v = rng.choice([v for v in range(lo, hi + 1) if v]) if hi > 1 else 1
                if hi > 1 and rng.random() < 0.3:       # two events that add up to v
                    part = rng.randint(max(lo, v - hi), min(hi, v - lo))
                    events += [(a, part), (a, v - part)]
                else:
                    events.append((a, v))
                if rng.random() < 0.1:
                    events.append((a, 0))
        rng.shuffle(events)
        out.append((t == 0, events))
    return out


def ref_conv(layer, inputs, *, value_shape, steps):
    """Golden output events of a one-layer bundle for ``inputs`` (as :func:`random_steps`)."""
    samples = len(inputs) // steps
    bundle = Bundle(InputSpec(layer.in_shape, value_shape.width, value_shape.signed, "raw",
                              steps), [layer])
    rows = [(n // steps, n % steps, a, v) for n, (_, evs) in enumerate(inputs) for a, v in evs]
    x = golden.events_to_dense(np.array(rows, dtype=np.int64).reshape(-1, 4), samples, steps,
                               layer.n_in)
    spikes = golden.run(bundle, x).output
    events = []
    for n in range(len(inputs)):
        addrs = np.flatnonzero(spikes[n // steps, n % steps])
        first = int(n % steps == 0)
        if not len(addrs):
            events.append((0, 0, 1, first))
        events += [(int(a), 1, int(i == len(addrs) - 1), int(first and i == 0))
                   for i, a in enumerate(addrs)]
    return events


def drive(dut, inputs, *, gap, seed):
    """A producer testbench: every step's events with random valid gaps."""
    return step_producer(dut, inputs, gap=gap, seed=seed)


def collect(dut, results, steps, *, stall, seed):
    """A consumer testbench: output events until ``steps`` steps closed, random ready stalls."""
    async def consumer(ctx):
        rng = random.Random(seed)
        closed = 0
        while closed < steps:
            while rng.random() < stall:
                await ctx.tick()
            ctx.set(dut.o.ready, 1)
            p, = await ctx.tick().sample(dut.o.payload).until(dut.o.valid)
            ctx.set(dut.o.ready, 0)
            results.append((p.addr, p.value, p.last, p.first))
            closed += p.last
    return consumer


def rtl_conv(layer, inputs, *, value_shape=unsigned(1), lanes=1, dense=False, gap=0.3,
             stall=0.3, seed=0):
    dut, results = Conv2dEngine(layer, value_shape=value_shape, lanes=lanes, dense=dense), []
    work = sum(conv_work(layer, dense=dense)) * len(inputs)
    run_sim(dut, [drive(dut, inputs, gap=gap, seed=seed),
                  collect(dut, results, len(inputs), stall=stall, seed=seed + 1)],
            watchdog_cycles=20 * (work + sum(len(e) for _, e in inputs) + layer.n_out
                                  + layer.n_in) + 2000, name="conv")
    return results


LIF = Neuron("lif", "subtract", 64, 12, Leak("shift", shift=2))
CASES = {
    # name: layer parameters, value shape, lanes, dense
    "k3s1p1-binary-L2": (dict(cin=2, cout=4, size=(6, 6), kernel=3, padding=1), unsigned(1),
                         2, False),
    "k3s2p1-signed-L3": (dict(cin=2, cout=3, size=(7, 7), kernel=3, stride=2, padding=1,
                              sparsity=0.3, value_max=8,
                              neuron=Neuron("lif", "zero", 64, 12, Leak("mul", beta=200,
                                                                        frac_bits=8))),
                         signed(4), 3, False),
    "k5s1p0-binary-L1": (dict(cin=1, cout=2, size=(7, 6), kernel=5, sparsity=0.7,
                              neuron=Neuron("lapicque", "zero", 64, 10, Leak("shift", shift=1))),
                         unsigned(1), 1, False),
    "k5s2p1-unsigned3-L4": (dict(cin=2, cout=4, size=(8, 7), kernel=5, stride=2, padding=1,
                                 value_max=7, neuron=Neuron("lif", "none", 64, 14,
                                                            Leak("shift", shift=3))),
                            unsigned(3), 4, False),
    "k3s1p0-3local-sparse": (dict(cin=3, cout=5, size=(5, 5), kernel=3, sparsity=0.9,
                                  neuron=Neuron("lapicque", "subtract", 64, 12,
                                                Leak("mul", beta=128, frac_bits=7))),
                             unsigned(1), 2, False),
    "k3s2p0-floor-nobias": (dict(cin=2, cout=2, size=(6, 8), kernel=3, stride=2, bias=False,
                                 neuron=Neuron("lif", "zero", 64, 8, Leak("shift", shift=4))),
                            unsigned(1), 2, False),
    "k3s1p1-dense": (dict(cin=2, cout=2, size=(5, 5), kernel=3, padding=1), unsigned(1), 1,
                     True),
    "k5s2p2-dense-signed": (dict(cin=1, cout=3, size=(6, 6), kernel=5, stride=2, padding=2,
                                 value_max=4), signed(3), 3, True),
}


@pytest.mark.parametrize("name", CASES)
def test_matches_golden(name):
    params, value_shape, lanes, dense = CASES[name]
    seed = sum(map(ord, name))
    layer = conv_layer(seed, **{"neuron": LIF, **params})
    inputs = random_steps(seed, layer, samples=2, steps=3, value_shape=value_shape)
    expect = ref_conv(layer, inputs, value_shape=value_shape, steps=3)
    assert sum(v for _, v, _, _ in expect) > 0, "the case must make spikes to be a test"
    got = rtl_conv(layer, inputs, value_shape=value_shape, lanes=lanes, dense=dense,
                   seed=seed)
    assert got == expect


def test_short_steps_back_to_back():
    """Steps of one event each at full rate: no buffer may be reused before it is compressed."""
    layer = conv_layer(11, cin=2, cout=3, size=(4, 4), kernel=3, padding=1, neuron=LIF,
                       density=0.1)
    rng = random.Random(11)
    inputs = [(t % 8 == 0, [(rng.randrange(layer.n_in), 1)] if t % 3 else [])
              for t in range(24)]
    expect = ref_conv(layer, inputs, value_shape=unsigned(1), steps=8)
    assert sum(v for _, v, _, _ in expect) > 0
    assert rtl_conv(layer, inputs, lanes=2, gap=0.0, stall=0.6, seed=11) == expect


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(40))
def test_random_layers(seed):
    """Random layers over every parameter the engine has, heavier stalls."""
    rng = random.Random(seed)
    kernel, stride = rng.choice([1, 2, 3, 5]), rng.choice([1, 2, 3])
    padding = rng.randint(0, kernel // 2 + 1)
    size = (rng.randint(kernel, 9), rng.randint(kernel, 9))
    cout = rng.randint(1, 6)
    value_shape = rng.choice([unsigned(1), unsigned(1), unsigned(2), signed(4)])
    neuron = Neuron(*rng.choice([("lif", "subtract"), ("lif", "zero"), ("lif", "none"),
                                 ("lapicque", "zero"), ("lapicque", "subtract")]), 64,
                    rng.choice([8, 12, 16]),
                    rng.choice([Leak("shift", shift=rng.randint(1, 5)),
                                Leak("mul", beta=rng.randint(0, 256), frac_bits=8)]))
    layer = conv_layer(seed, cin=rng.randint(1, 3), cout=cout, size=size, kernel=kernel,
                       stride=stride, padding=padding, sparsity=rng.choice([0, 0.5, 0.8, 1]),
                       neuron=neuron, weight_bits=rng.choice([2, 4, 8]),
                       value_max=max(abs(v) for v in value_range(value_shape)),
                       bias=rng.random() < 0.7)
    inputs = random_steps(seed, layer, samples=3, steps=3, value_shape=value_shape,
                          density=rng.choice([0.1, 0.3, 0.6]))
    got = rtl_conv(layer, inputs, value_shape=value_shape, lanes=rng.randint(1, cout),
                   dense=rng.random() < 0.25, gap=rng.choice([0, 0.5]),
                   stall=rng.choice([0, 0.3, 0.8]), seed=seed)
    assert got == ref_conv(layer, inputs, value_shape=value_shape, steps=3)


def test_reset_clears_state():
    """A reset in the middle of a step leaves nothing behind: the next sample is exact."""
    layer = conv_layer(5, cin=2, cout=3, size=(5, 5), kernel=3, padding=1, neuron=LIF)
    inputs = random_steps(5, layer, samples=1, steps=3, value_shape=unsigned(1), density=0.5)
    rng = random.Random(6)
    noise = [[(a, 1) for a in range(layer.n_in) if rng.random() < 0.8] for _ in range(3)]
    dut, results, after_reset = Conv2dEngine(layer, lanes=2), [], []
    m = Module()
    m.domains.sync = cd_sync = ClockDomain()
    m.submodules.dut = dut

    async def producer(ctx):
        ctx.set(dut.o.ready, 1)                     # drain whatever comes before the reset
        # Two whole steps, then half of one: the reset hits while currents are being summed
        # and inputs are waiting in the buffers.
        for index, events in enumerate(noise):
            events = events[:len(events) // 2] if index == 2 else events
            for n, (addr, value) in enumerate(events):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"addr": addr, "value": value,
                                        "last": int(n == len(events) - 1 and index < 2),
                                        "first": int(n == index == 0)})
                await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        ctx.set(cd_sync.rst, 1)
        await ctx.tick()
        ctx.set(cd_sync.rst, 0)
        after_reset.append(True)
        await drive(dut, inputs, gap=0.2, seed=7)(ctx)

    async def consumer(ctx):
        while not after_reset:
            await ctx.tick()
        await collect(dut, results, len(inputs), stall=0.3, seed=8)(ctx)

    run_sim(m, [producer, consumer], watchdog_cycles=20000, name="conv_reset")
    expect = ref_conv(layer, inputs, value_shape=unsigned(1), steps=3)
    assert sum(v for _, v, _, _ in expect) > 0
    assert results == expect


@pytest.mark.parametrize("dense", [False, True])
def test_work_counters(dense):
    """``counters`` count the spikes and synaptic operations of :func:`conv_work`, per step."""
    layer = conv_layer(9, cin=2, cout=4, size=(6, 6), kernel=3, stride=1, padding=1,
                       neuron=LIF)
    inputs = random_steps(9, layer, samples=1, steps=4, value_shape=unsigned(1))
    dut = Conv2dEngine(layer, lanes=2, dense=dense, counters=True)
    per_step, totals, compress = [], [], []

    async def monitor(ctx):
        while True:
            await ctx.tick()
            st = ctx.get(dut.counters)
            if st.accumulated:
                per_step.append((st.step_spikes, st.step_sops))
                compress.append(st.step_compress_cycles)
                totals.append((st.spikes, st.sops))

    results = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive(dut, inputs, gap=0.2, seed=1))
    sim.add_testbench(collect(dut, results, len(inputs), stall=0.2, seed=2))
    sim.add_testbench(monitor, background=True)

    async def watchdog(ctx):
        for _ in range(20000):
            await ctx.tick()
        raise TimeoutError("conv made no progress")
    sim.add_testbench(watchdog, background=True)
    sim.run()

    work = conv_work(layer, dense=dense)
    expect = []
    for _, events in inputs:
        x = np.zeros(layer.n_in, dtype=np.int64)
        for a, v in events:
            x[a] += v
        active = np.ones_like(x, dtype=bool) if dense else x != 0
        expect.append((int(active.sum()), int(work[active].sum())))
    assert per_step == expect
    assert results == ref_conv(layer, inputs, value_shape=unsigned(1), steps=4)
    assert totals[-1] == (sum(e[0] for e in expect), sum(e[1] for e in expect))
    # The compressor: one cycle per active input, one per 16-position word, a fill of three.
    words = -(-layer.n_in // 16)
    assert all(c <= spikes + words + 3 for c, (spikes, _) in zip(compress, expect))
    assert all(c >= spikes for c, (spikes, _) in zip(compress, expect))


@pytest.mark.parametrize("kernel, stride, padding, size", [
    (3, 1, 1, (6, 5)), (5, 2, 1, (9, 8)), (3, 2, 0, (6, 6)), (2, 3, 0, (7, 5)), (1, 1, 0, (3, 4)),
])
def test_conv_work_counts_every_tap(kernel, stride, padding, size):
    """:func:`conv_work` against a loop over every input, kernel tap and output channel."""
    layer = conv_layer(1, cin=2, cout=3, size=size, kernel=kernel, stride=stride,
                       padding=padding, sparsity=0.5)
    cin, h, w = layer.in_shape
    _, ho, wo = layer.out_shape
    sparse, dense = np.zeros(layer.n_in, int), np.zeros(layer.n_in, int)
    for c, y, x, o, dy, dx in itertools.product(range(cin), range(h), range(w),
                                                range(layer.out_shape[0]), range(kernel),
                                                range(kernel)):
        oy, ry = divmod(y + padding - dy, stride)
        ox, rx = divmod(x + padding - dx, stride)
        if ry == rx == 0 and 0 <= oy < ho and 0 <= ox < wo:
            a = (c * h + y) * w + x
            dense[a] += 1
            sparse[a] += layer.weight[o, c, dy, dx] != 0
    assert list(conv_work(layer)) == list(sparse)
    assert list(conv_work(layer, dense=True)) == list(dense)


@pytest.mark.parametrize("lanes, stride, dense", [(1, 1, False), (3, 1, False), (2, 2, False),
                                                  (4, 3, True)])
def test_plan_stores_each_weight_once(lanes, stride, dense):
    """Rebuilding the kernel from the lanes' entries and row records gives the layer's kernel,
    each output channel in one lane, lanes within one channel of each other."""
    layer = conv_layer(2, cin=3, cout=7, size=(6, 6), kernel=5, stride=stride, sparsity=0.6)
    plan = plan_conv(layer, lanes=lanes, dense=dense)
    s = layer.stride
    rebuilt = np.zeros_like(layer.weight)
    seen = np.zeros(layer.weight.shape, dtype=int)
    assert sorted(o for ch in plan.channels for o in ch) == list(range(7))
    assert max(map(len, plan.channels)) - min(map(len, plan.channels)) <= 1
    for j in range(lanes):
        for c, (ry, rx) in itertools.product(range(3), plan.phases):
            record = plan.records[j][c * len(plan.phases) + plan.phases.index((ry, rx))]
            for qy, row in enumerate(record):
                for qx in range(len(row) - 1):
                    for wt, lc, eqx in plan.entries[j][row[qx]:row[qx + 1]]:
                        assert eqx == qx
                        o = plan.channels[j][lc]
                        rebuilt[o, c, ry + s * qy, rx + s * qx] = wt
                        seen[o, c, ry + s * qy, rx + s * qx] += 1
    assert (rebuilt == layer.weight).all()
    assert (seen == (1 if dense else layer.weight != 0)).all()
    nnz = layer.weight.size if dense else int(np.count_nonzero(layer.weight))
    assert plan.stored_entries == nnz
    assert plan.entry_bits == nnz * (6 + (plan.local_channels - 1).bit_length()
                                     + (plan.taps - 1).bit_length())


def test_stored_bits_properties():
    layer = conv_layer(3, cin=4, cout=8, size=(8, 8), kernel=3, padding=1, sparsity=0.75)
    engine = Conv2dEngine(layer, lanes=4)
    assert engine.weight_bits_dense == 8 * 4 * 9 * 6
    assert engine.weight_bits_stored == engine.plan.entry_bits + engine.plan.record_bits
    assert engine.weight_bits_stored < engine.weight_bits_dense


def _layer(**kw):
    return conv_layer(0, cin=2, cout=4, size=(5, 5), kernel=3, **kw)


@pytest.mark.parametrize("make, kwargs, exc, message", [
    (lambda: "conv", {}, TypeError,
     r"^Layer must be a models\.bundle\.Layer of kind 'conv2d', not 'conv'$"),
    (lambda: Layer("p", "spike_pool", (1, 4, 4), (1, 2, 2), kernel=2), {}, TypeError,
     r"^Layer must be a models\.bundle\.Layer of kind 'conv2d', not Layer\(name='p'"),
    (_layer, {"lanes": 0}, TypeError, r"^Lanes must be a positive integer, not 0$"),
    (_layer, {"lanes": 2.0}, TypeError, r"^Lanes must be a positive integer, not 2\.0$"),
    (_layer, {"lanes": 5}, ValueError,
     r"^Lanes must be at most the output channels \(4\), not 5$"),
    (_layer, {"dense": 1}, TypeError, r"^Dense must be a bool, not 1$"),
    (_layer, {"value_shape": "wide"}, TypeError, r"^Value shape must be a shape, not 'wide'$"),
    (_layer, {"value_shape": signed(1)}, ValueError,
     r"^Value shape must be at least 1 bit wide \(2 if signed\), not signed\(1\)$"),
    (_layer, {"queue_depth": 1}, TypeError,
     r"^Queue depth must be an integer of at least 2, not 1$"),
    (_layer, {"queue_depth": 6}, ValueError, r"^Queue depth must be a power of two, not 6$"),
])
def test_wrong_parameters(make, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        Conv2dEngine(make(), **kwargs)


def test_wrong_weight_shape():
    layer = _layer()
    layer.weight = layer.weight[:, :, :2, :2]
    with pytest.raises(ValueError, match=r"^Weight shape must be \[4, 2, 3, 3\], "
                                         r"not \[4, 2, 2, 2\]$"):
        Conv2dEngine(layer)


def test_wrong_neuron():
    layer = _layer(neuron=LIF)
    layer.neuron = Neuron(threshold=600, potential_bits=10)
    with pytest.raises(ValueError, match=r"^Threshold 600 is not representable as signed\(10\)$"):
        Conv2dEngine(layer)
