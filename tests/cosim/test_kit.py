"""The cosimulation kit itself, on a stand-in top whose correct output is known by construction.

A correct forwarding top must pass; each broken variant must fail with mismatches or a watchdog
timeout (never a hang), which shows the drivers, the scoreboard and the watchdog can fail.
"""
# amaranth: UnusedElaboratable=no
import numpy as np
import pytest
from amaranth.back import verilog

from models.synth import random_events
from tests.cosim.conftest import assert_exact
from tests.cosim.standin import Forwarder, identity_bundle

N, STEPS, SAMPLES = 16, 5, 3


def _stimulus():
    ev = random_events(np.random.default_rng(1), samples=SAMPLES, steps=STEPS, n_in=N,
                       density=0.3)
    ev = ev[np.lexsort((ev[:, 2], ev[:, 1], ev[:, 0]))]     # ascending addr: forwardable as is
    ev = ev[~((ev[:, 0] == 1) & (ev[:, 1] == 2))]           # one empty step
    return ev


def _forwarder(bug=None):
    return verilog.convert(Forwarder(N, bug=bug), name="snn_top", emit_src=False)


@pytest.mark.parametrize("in_gap, out_stall", [(0.0, 0.0), (0.4, 0.6)])
def test_standin_passes(cosim, in_gap, out_stall):
    result = cosim(identity_bundle(N, steps=STEPS), _stimulus(), SAMPLES, verilog=_forwarder(),
                   seed=2, in_gap=in_gap, out_stall=out_stall)
    assert_exact(result)
    assert result["spikes_compared"] == len(_stimulus())
    cycles = result["cycles"]
    assert len(cycles["per_sample"]) == SAMPLES
    assert [sum(row) for row in cycles["per_step"]] == cycles["per_sample"]
    if in_gap == out_stall == 0:
        # A 4-deep buffered FIFO forwards one event per cycle: a sample takes about as many
        # cycles as it has events (plus a small pipeline latency).
        per_sample = [max(1, len(_stimulus()[_stimulus()[:, 0] == s])) for s in range(SAMPLES)]
        for got, events in zip(cycles["per_sample"], per_sample):
            assert events <= got <= events + STEPS + 4


@pytest.mark.parametrize("bug, failure", [
    ("drop", "mismatch"),
    ("hang", "timeout"),
    ("ignore_ready", "mismatch"),
])
def test_broken_standin_fails(cosim, bug, failure):
    result = cosim(identity_bundle(N, steps=STEPS), _stimulus(), SAMPLES, verilog=_forwarder(bug),
                   seed=2, in_gap=0.3, out_stall=0.5, watchdog=300, expect_pass=False)
    assert not result["passed"]
    assert result["mismatches"] > 0
    assert result["first_mismatch"] is not None
    if failure == "timeout":
        assert result["timeout"] and "watchdog" in result["error"]


def test_x_valid_fails(cosim):
    # An undriven (X) `valid` must end the run with a clear error, not a guess.
    text = _forwarder()
    assert text.count("assign o__valid = r_rdy;") == 1
    text = text.replace("assign o__valid = r_rdy;", "assign o__valid = 1'bx;")
    result = cosim(identity_bundle(N, steps=STEPS), _stimulus(), SAMPLES, verilog=text, seed=2,
                   expect_pass=False)
    assert not result["passed"]
    assert "o__valid is x" in result["error"].lower()


def test_wrong_golden_fails(cosim):
    # The correct stand-in checked against another network (threshold 1: nothing fires).
    bundle = identity_bundle(N, steps=STEPS)
    bundle.layers[0].neuron = type(bundle.layers[0].neuron)(
        "lif", "none", 1, 4, bundle.layers[0].neuron.leak)
    result = cosim(bundle, _stimulus(), SAMPLES, verilog=_forwarder(), seed=2,
                   expect_pass=False)
    assert not result["passed"]
    assert result["first_mismatch"]["kind"] == "extra spike"
    assert result["first_mismatch"]["sample"] == 0
