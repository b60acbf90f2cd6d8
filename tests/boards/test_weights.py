# amaranth: UnusedElaboratable=no
"""Weights loaded at run time through the whole host chain: the real host driver uploads a
bundle's weights to the cosimulated board link (built for another bundle of the same shape),
then runs its samples."""
import numpy as np
import pytest
from amaranth.hdl import Fragment

from boards.cosim import cosimulate
from boards.host import HostError
from boards.weights import accelerator_for, weight_store
from hdl.link import HostLink
from hdl.top import Accelerator
from models import golden
from models.bundle import Leak, Neuron, load, save
from models.synth import random_events, random_linear_bundle

NEURON = Neuron("lif", "subtract", 25, 16, Leak("shift", shift=3))
SAMPLES, STEPS, N_IN = 6, 4, 24


def make_bundle(seed, sparsity, *, hidden=12):
    b = random_linear_bundle(n_in=N_IN, n_out=6, sparsity=sparsity, seed=seed, steps=STEPS,
                             layers=2, hidden=hidden, neuron=NEURON)
    events = random_events(np.random.default_rng(seed), samples=SAMPLES, steps=STEPS, n_in=N_IN,
                           density=0.3)
    b.vectors = golden.make_vectors(b, events, SAMPLES)
    return b, events


def board_link(board, lanes=2):
    return HostLink(Accelerator(board, lanes=lanes, weights="load"), n_in=N_IN, n_out=6,
                    divisor=4, capacity=256, timeout=1_000_000, clock_hz=100_000_000,
                    steps=STEPS)


def test_host_uploads_weights_then_runs_samples(tmp_path):
    board, _ = make_bundle(1, 0.75)
    run, events = make_bundle(2, 0.6)
    save(run, tmp_path / "run")
    result = cosimulate(board_link(board), tmp_path / "run", tmp_path / "cosim")
    assert result["returncode"] == 0, result["output"]
    trace = golden.run(run, golden.events_to_dense(events, SAMPLES, STEPS, N_IN))
    assert result["counts"] == golden.spike_counts(trace.output).tolist()
    assert result["predicted"] == golden.predict(trace.output).tolist()
    assert result["all_equal"] and sum(map(sum, result["counts"])) > 0
    assert "weights: " in result["output"] and " bytes in " in result["output"]


def test_host_refuses_a_bundle_of_another_shape(tmp_path):
    board, _ = make_bundle(1, 0.75)
    other, _ = make_bundle(3, 0.75, hidden=13)
    save(other, tmp_path / "other")
    result = cosimulate(board_link(board), tmp_path / "other", tmp_path / "cosim")
    assert result["returncode"] == 1
    assert "Board holds another network shape" in result["output"]


def test_weight_store_matches_the_board_lanes():
    board, _ = make_bundle(1, 0.75)
    for lanes in (1, 3):
        ident = Accelerator(board, lanes=lanes, weights="load").weight_store.ident
        assert weight_store(make_bundle(4, 0.7)[0], ident).ident == ident


def test_weight_store_refuses_what_cannot_load():
    conv = load("models/zoo/digits_csnn")
    with pytest.raises(HostError, match=r"^Bundle cannot be loaded at run time: Layer 'conv1'"):
        weight_store(conv, 0)


def test_accelerator_for_boards():
    assert accelerator_for("rom", "icebreaker") is None
    board, _ = make_bundle(1, 0.75, hidden=400)      # 9,600 weights: a first layer for SPRAM
    for name, placed in (("icebreaker", ["fc1.lane0.bitmap", "fc1.lane0.entries",
                                         "fc2.lane0.entries"]), ("ulx3s", [])):
        acc = accelerator_for("load", name)(board, 1)
        assert acc.weight_store.slots[0].name == "fc1.lane0.table"
        assert [s.name for s in acc.weight_store.slots if s.spram] == placed
        Fragment.get(acc, None)                      # elaborates (the simulator's path)
    with pytest.raises(ValueError, match=r"^Weights must be 'rom' or 'load', not 'ram'$"):
        accelerator_for("ram", "ulx3s")
