# amaranth: UnusedElaboratable=no
"""The engine contract (hdl.engines): every engine kind has it, the factory refuses what a kind
cannot honour, and the optional counters agree with the contract's own work figures."""
import gc

import numpy as np
import pytest
from amaranth import signed, unsigned

from hdl.conv import ConvCounters
from hdl.engines import make_engine, make_engines
from hdl.event import EngineCounters
from hdl.top import Accelerator
from models import golden
from models.synth import random_csnn_bundle, random_events, random_linear_bundle
from tests.sim import run_sim, stream_put

# The factory builds the engines, so the comment above cannot silence them (Amaranth reads it
# from the file that constructs an elaboratable).
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


@pytest.fixture(autouse=True)
def collect_engines():
    yield
    gc.collect()        # engines a refused option left half-built go here, under the filter

CSNN = random_csnn_bundle(in_shape=(2, 8, 8), channels=(4, 3), seed=1, steps=3)
MLP = random_linear_bundle(n_in=20, n_out=12, sparsity=0.5, seed=2, layers=2, hidden=16,
                           steps=3)
LAYERS = {layer.name: layer for layer in CSNN.layers}
FORMATS = {"linear": {"csr", "bitmap", "dense"}, "conv2d": {"sparse-kernel", "dense"},
           "spike_pool": {None}}


def layer_inputs(bundle, samples=2, seed=0):
    """Per layer: its input activity ``[steps, n_in]`` (0/1) and output spikes per step."""
    ev = random_events(np.random.default_rng(seed), samples=samples, steps=bundle.input.steps,
                       n_in=bundle.input.size, density=0.3)
    x = golden.events_to_dense(ev, samples, bundle.input.steps, bundle.input.size)
    trace = golden.run(bundle, x)
    return ev, {layer.name: ((a.reshape(-1, layer.n_in) != 0).astype(np.int64),
                             np.count_nonzero(s.reshape(-1, layer.n_out), axis=1))
                for layer, a, s in zip(bundle.layers, [x] + trace.spikes[:-1], trace.spikes)}


@pytest.mark.parametrize("bundle", [CSNN, MLP], ids=["csnn", "mlp"])
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("lanes", [1, 2])
def test_every_engine_has_the_contract(bundle, dense, lanes):
    _, inputs = layer_inputs(bundle)
    engines = make_engines(bundle, lanes=lanes, dense=dense)
    assert [layer.kind for layer, _ in engines] == [layer.kind for layer in bundle.layers
                                                     if layer.kind != "flatten"]
    for layer, engine in engines:
        assert engine.layer is layer
        assert engine.weight_format in FORMATS[layer.kind]
        assert set(engine.signature.members) == {"i", "o"}
        if layer.has_neurons:
            assert engine.lanes == lanes and engine.dense is dense
            assert engine.updates >= engine.lanes
            assert engine.current_bits > 0
            assert engine.weight_bits_dense == layer.weight.size * layer.weight_bits
            assert 0 < engine.weight_bits_stored
            if dense or layer.kind == "conv2d":
                assert engine.weight_format == ("dense" if dense else "sparse-kernel")
            assert all(v > 0 for v in engine.weight_figures.values())
        else:                                           # a pool: no weights, no neurons
            assert (engine.lanes, engine.dense, engine.updates, engine.current_bits) == \
                (1, False, None, None)
            assert (engine.weight_bits_stored, engine.weight_bits_dense) == (0, 0)
            assert engine.weight_figures == {}
        active, out_events = inputs[layer.name]
        # A batch gives one figure per step, the same as asking step by step.
        events, sops = engine.work(active)
        bound, estimate = engine.estimate_cycles(active, out_events)
        assert events.shape == sops.shape == bound.shape == estimate.shape == (len(active),)
        for t in range(len(active)):
            assert engine.work(active[t]) == (events[t], sops[t])
            assert engine.estimate_cycles(active[t], int(out_events[t])) == \
                (bound[t], estimate[t])
            assert isinstance(bound[t].item(), int)
        assert (0 <= bound).all() and (bound <= estimate).all()
        if dense and layer.kind == "conv2d":            # every position, active or not
            assert (events == layer.n_in).all()
        else:
            assert (events == active.sum(axis=1)).all()
        if layer.kind == "spike_pool":
            assert (sops == 0).all()
        # A density gives one expected step.
        events, sops = engine.work(0.25)
        bound, estimate = engine.estimate_cycles(0.25, 0.25 * layer.n_out)
        assert np.ndim(events) == np.ndim(bound) == 0 and 0 < bound <= estimate


@pytest.mark.parametrize("name, layout", [("conv1", ConvCounters()), ("pool1", EngineCounters()),
                                          ("fc", EngineCounters())])
def test_counters_only_when_asked(name, layout):
    layer = LAYERS[name]
    assert "counters" not in make_engine(layer).signature.members
    engine = make_engine(layer, counters=True)
    member = engine.signature.members["counters"]
    assert member.flow.name == "Out" and member.shape == layout
    # Every engine's counters start with the common fields.
    assert [name for name, _ in member.shape][:2] == ["steps", "sops"]
    assert {name: field.shape for name, field in EngineCounters()} == \
        {name: member.shape[name].shape for name in ("steps", "sops")}


def test_counters_agree_with_work():
    """The status port's ``sops`` is the sum of the engines' counters, and each engine counted
    the synaptic operations its contract's ``work`` gives for the steps it saw."""
    samples, steps = 2, CSNN.input.steps
    ev, inputs = layer_inputs(CSNN, samples=samples, seed=4)
    stream_in = golden.input_stream(ev, samples, steps)
    dut = Accelerator(CSNN, lanes=2, status=True)
    seen = {}

    async def producer(ctx):
        for addr, value, last, first in stream_in:
            await stream_put(ctx, dut.i, {"addr": addr, "value": value, "last": last,
                                          "first": first})

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        closed = 0
        while closed < samples * steps:
            await ctx.tick()
            closed += ctx.get(dut.o.valid) and ctx.get(dut.o.payload.last)
        for _ in range(5):
            await ctx.tick()
        seen["status"] = ctx.get(dut.status)
        seen["engines"] = {layer.name: ctx.get(engine.counters)
                           for layer, engine in dut.engines}

    run_sim(dut, [producer, consumer], watchdog_cycles=40000, name="top")
    total = 0
    for layer, engine in dut.engines:
        counters = seen["engines"][layer.name]
        _, sops = engine.work(inputs[layer.name][0])
        assert (counters.steps, counters.sops) == (samples * steps, int(sops.sum()))
        total += counters.sops
    assert total > 0
    assert (seen["status"].steps, seen["status"].sops) == (samples * steps, total)


@pytest.mark.parametrize("name, kwargs, exc, message", [
    ("conv1", {"fmt": "csr"}, ValueError,
     r"^Layer 'conv1': Weight format of a conv2d layer must be None or 'sparse-kernel', "
     r"not 'csr'$"),
    ("conv1", {"fmt": "sparse-kernel", "dense": True}, ValueError,
     r"^Layer 'conv1': Weight format of a conv2d layer must be None or 'dense', "
     r"not 'sparse-kernel'$"),
    ("conv1", {"updates": 2}, ValueError,
     r"^Layer 'conv1': Updates of a conv2d layer must be None or 1 \(its sweep updates one "
     r"neuron per lane\), not 2$"),
    ("conv1", {"queue_depth": 6}, ValueError,
     r"^Layer 'conv1': Queue depth must be a power of two, not 6$"),
    ("conv1", {"lanes": 5}, ValueError,
     r"^Layer 'conv1': Lanes must be at most the output channels \(4\), not 5$"),
    ("pool1", {"lanes": 2}, ValueError,
     r"^Layer 'pool1': Lanes of a spike_pool layer must be 1, not 2$"),
    ("pool1", {"fmt": "dense"}, ValueError,
     r"^Layer 'pool1': Weight format of a spike_pool layer must be None, not 'dense'$"),
    ("pool1", {"dense": True}, ValueError,
     r"^Layer 'pool1': Dense baseline of a spike_pool layer must be False \(it has no "
     r"weights\), not True$"),
    ("pool1", {"updates": 1}, ValueError,
     r"^Layer 'pool1': Updates of a spike_pool layer must be None \(it has no neurons\), "
     r"not 1$"),
    ("pool1", {"queue_depth": 8}, ValueError,
     r"^Layer 'pool1': Queue depth of a spike_pool layer must be None, not 8$"),
    ("pool1", {"value_shape": signed(4)}, ValueError,
     r"^Layer 'pool1': Value shape of a spike_pool layer must be unsigned\(1\) \(it takes "
     r"spikes\), not signed\(4\)$"),
    ("flat", {"lanes": 4}, ValueError,
     r"^Layer 'flat': Lanes of a flatten layer must be 1, not 4$"),
    ("fc", {"fmt": "coo"}, ValueError,
     r"^Layer 'fc': Weight format must be one of 'csr', 'bitmap', 'dense', not 'coo'$"),
    ("fc", {"updates": 3}, ValueError,
     r"^Layer 'fc': Updates must be the lanes \(1\) times a power of two, at most 64, not 3$"),
    ("fc", {"updates": "2"}, TypeError,
     r"^Layer 'fc': Updates must be a positive integer, not '2'$"),
    ("fc", {"queue_depth": 1}, TypeError,
     r"^Layer 'fc': FIFO depth must be an integer of at least 2, not 1$"),
    ("fc", {"counters": 1}, TypeError, r"^Layer 'fc': Counters must be a bool, not 1$"),
    ("conv1", {"counters": "yes"}, TypeError,
     r"^Layer 'conv1': Counters must be a bool, not 'yes'$"),
])
def test_factory_refuses(name, kwargs, exc, message):
    with pytest.raises(exc, match=message):
        make_engine(LAYERS[name], **kwargs)


def test_factory_options():
    conv, fc = LAYERS["conv1"], LAYERS["fc"]
    assert make_engine(LAYERS["flat"]) is None
    assert make_engine(conv, fmt="sparse-kernel", updates=1).weight_format == "sparse-kernel"
    assert make_engine(conv, fmt="dense", dense=True).weight_format == "dense"
    assert make_engine(fc, lanes=2, updates=4, queue_depth=3).updates == 8
    assert make_engine(fc, value_shape=unsigned(3), fmt="bitmap").weight_format == "bitmap"
    with pytest.raises(TypeError, match=r"^Layer must be a models\.bundle\.Layer, not 'fc'$"):
        make_engine("fc")
    # Network-wide options go where a layer takes them; one lanes number is capped per conv.
    engines = make_engines(CSNN, lanes=4, fmt="csr", updates=2, queue_depth=4)
    assert [(e.lanes, e.updates, e.weight_format) for _, e in engines] == [
        (4, 4, "sparse-kernel"), (1, None, None), (3, 3, "sparse-kernel"), (1, None, None),
        (4, 8, "csr")]


@pytest.mark.parametrize("active, message", [
    (np.zeros(5), r"^Active inputs must have shape \[128\] or \[steps, 128\], not \[5\]$"),
    (1.5, r"^Input density must be in \[0, 1\], not 1\.5$"),
])
def test_estimate_refuses_bad_activity(active, message):
    engine = make_engine(LAYERS["conv1"])
    with pytest.raises(ValueError, match=message):
        engine.estimate_cycles(active, 0)
