# amaranth: UnusedElaboratable=no
"""The cycle model against the Amaranth simulator, through the engine contract.

A small :class:`~hdl.linear.LinearEngine` and a small :class:`~hdl.conv.Conv2dEngine` run
random input steps with the input offered every cycle and the output always ready (no
backpressure); every output event is checked against the golden model. Two claims of
``estimate_cycles(active_inputs, out_events) -> (lower_bound, estimate)`` are tested:

* The estimate is the steady-state cycles per step (:mod:`hdl.cycles`). Each random step is
  repeated ``REPEAT`` times; after ``SETTLE`` repeats the interval between the closing output
  events of consecutive steps is what that step costs, and the estimate must be within
  ``TOLERANCE`` of it. The interval is taken over the settled repeats together: a step's close
  waits for its own output stream, so an output burst (a conv layer's neurons firing together)
  moves cycles from one interval into the next (the conv's empty step, repeated: 145, 211 and
  79 cycles, bound 144), while the sum over the repeats keeps them all. Measured when this
  file was written: linear |error| median 1.3 %, worst 13.6 % (the empty step, 22 cycles
  against 19: its sweep costs 3 cycles more than ``linear_estimate`` adds); conv median
  1.1 %, worst 4.8 %. Single intervals: linear worst 13.6 %, conv worst 86 %.
* The lower bound (DESIGN.md section 7) is never beaten. A single interval can be shorter than
  its step's bound (stages of consecutive steps overlap: the next step accumulates while this
  one sweeps), so the bound is checked where it is a law: every window of consecutive steps
  ``i..j``, from the cycle step ``i``'s first event enters to the cycle step ``j``'s closing
  event leaves, holds all of their input events, synaptic operations and neuron updates, so
  it lasts at least ``lower_bound(sum A, sum S, (j - i + 1) * N)``; for one step (``i = j``)
  that is the step's own bound from ``estimate_cycles``. Single intervals measured 0.99 (linear)
  and 0.55 (conv) of their step's bound; the tightest window 1.02 and 1.04 times its bound.
"""
import numpy as np
import pytest

from hdl import cycles
from hdl.conv import Conv2dEngine
from hdl.linear import LinearEngine
from models import golden
from models.bundle import Bundle, InputSpec
from models.synth import random_linear_bundle
from tests.hdl.test_conv import conv_layer
from tests.sim import run_sim

DENSITIES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8)     # one random step each, repeated
REPEAT = 5              # times each random step is offered in a row
SETTLE = 2              # repeats before the interval is steady (two steps are in flight)
TOLERANCE = 0.15        # |estimate - measured| / measured, steady state

ENGINES = {
    # name: (engine factory, layer)
    "linear-96x64-L2-U4": (lambda layer: LinearEngine(layer, lanes=2, updates=4),
                           random_linear_bundle(n_in=96, n_out=64, sparsity=0.5,
                                                seed=1).layers[0]),
    "conv-4x6x6-8-k3-L2": (lambda layer: Conv2dEngine(layer, lanes=2),
                           conv_layer(0, cin=4, cout=8, size=(6, 6), kernel=3, padding=1)),
}


def rtl_step_cycles(engine, layer, active):
    """Run the 0/1 steps ``active`` ``[T, n_in]`` (one sample) through ``engine``.

    Returns int64 arrays ``[T]``: the cycle each step's first input event was taken, the cycle
    its closing output event left, and its output spikes; the output is checked against the
    golden model of a one-layer bundle.
    """
    steps = [[(int(a), 1) for a in np.flatnonzero(x)] or [(0, 0)] for x in active]
    first_in, closes, out = [], [], []

    async def producer(ctx):
        cycle = 0
        for t, events in enumerate(steps):
            for n, (addr, value) in enumerate(events):
                ctx.set(engine.i.valid, 1)
                ctx.set(engine.i.payload, {"addr": addr, "value": value,
                                           "last": int(n == len(events) - 1),
                                           "first": int(t == n == 0)})
                while True:                     # the input is offered every cycle
                    _, _, ready = await ctx.tick().sample(engine.i.ready)
                    cycle += 1
                    if ready:
                        break
                if n == 0:
                    first_in.append(cycle)
        ctx.set(engine.i.valid, 0)

    async def consumer(ctx):
        ctx.set(engine.o.ready, 1)              # no backpressure
        cycle = 0
        while len(closes) < len(steps):
            _, _, valid, p = await ctx.tick().sample(engine.o.valid, engine.o.payload)
            cycle += 1
            if valid:
                out.append((int(p.addr), int(p.value)))
                if p.last:
                    closes.append(cycle)

    _, estimate = engine.estimate_cycles(active, 0)
    run_sim(engine, [producer, consumer], watchdog_cycles=3 * int(estimate.sum()) + 2000,
            name="cycle_model")
    bundle = Bundle(InputSpec(layer.in_shape, 1, False, "raw", len(active)), [layer])
    spikes = golden.run(bundle, active[None]).output[0].reshape(len(active), -1)
    expect = []
    for s in spikes:
        expect += [(int(a), 1) for a in np.flatnonzero(s)] or [(0, 0)]
    assert out == expect, "engine output differs from the golden model"
    return np.array(first_in), np.array(closes), np.count_nonzero(spikes, axis=1)


def random_steps(layer, seed):
    """One random 0/1 step per density, each repeated ``REPEAT`` times, ``[T, n_in]``."""
    rng = np.random.default_rng(seed)
    steps = [(rng.random(layer.n_in) < d).astype(np.int64) for d in DENSITIES]
    return np.repeat(np.array(steps), REPEAT, axis=0)


@pytest.fixture(scope="module", params=list(ENGINES))
def run(request):
    """One simulation per engine, shared by the tests: ``(engine, active, first_in, closes,
    out_events)``."""
    make, layer = ENGINES[request.param]
    engine = make(layer)
    active = random_steps(layer, seed=len(request.param))
    return (engine, active, *rtl_step_cycles(engine, layer, active))


def test_estimate_matches_steady_state(run):
    engine, active, _, closes, out_events = run
    _, estimate = engine.estimate_cycles(active, out_events)
    report, worst = [], 0.0
    for k, density in enumerate(DENSITIES):
        settled = range(k * REPEAT + SETTLE, (k + 1) * REPEAT)
        measured = (closes[settled[-1]] - closes[settled[0] - 1]) / len(settled)
        expected = float(np.mean(estimate[settled]))
        error = (expected - measured) / measured
        worst = max(worst, abs(error))
        report.append(f"density {density}: measured {measured:.1f}, estimate {expected:.1f} "
                      f"({error:+.1%})")
    assert worst <= TOLERANCE, "\n".join(report)


def test_lower_bound_never_beaten(run):
    engine, active, first_in, closes, out_events = run
    events, sops = engine.work(active)
    bound, _ = engine.estimate_cycles(active, out_events)
    n_out = engine.layer.n_out
    # One step: its own window against the contract's bound.
    latency = closes - first_in + 1
    assert (latency >= bound).all(), [(t, int(latency[t]), int(bound[t]))
                                      for t in np.flatnonzero(latency < bound)]
    # Every window of consecutive steps against the bound of their summed work.
    short = []
    for i in range(len(active)):
        for j in range(i, len(active)):
            window = closes[j] - first_in[i] + 1
            need = cycles.lower_bound(int(sops[i:j + 1].sum()), int(events[i:j + 1].sum()),
                                      (j - i + 1) * n_out, lanes=engine.lanes,
                                      updates=engine.updates)
            if window < need:
                short.append((i, j, int(window), need))
    assert not short, short[:10]
