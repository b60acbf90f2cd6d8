# amaranth: UnusedElaboratable=no
"""The whole host chain without a board: host driver -> pty -> UART model -> Verilog -> back."""
from pathlib import Path

import numpy as np
import pytest

from boards.build import default_capacity
from boards.cosim import cosimulate
from hdl.link import HostLink
from hdl.protocol import bundle_ident
from hdl.top import Accelerator
from models import golden
from models.bundle import load, save
from models.synth import random_events, random_linear_bundle

SAMPLES = 6
REPO = Path(__file__).resolve().parents[2]


def test_host_driver_through_cosimulated_board_link(tmp_path):
    bundle = random_linear_bundle(n_in=24, n_out=6, sparsity=0.75, seed=8, steps=5, layers=2,
                                  hidden=12)
    events = random_events(np.random.default_rng(8), samples=SAMPLES, steps=5, n_in=24,
                           density=0.25)
    bundle.vectors = golden.make_vectors(bundle, events, SAMPLES,
                                         labels=np.arange(SAMPLES) % 6)
    save(bundle, tmp_path / "bundle")
    link = HostLink(Accelerator(bundle, lanes=2), n_in=24, n_out=6, divisor=4, capacity=256,
                    timeout=1_000_000, clock_hz=100_000_000, ident=bundle_ident(bundle))
    result = cosimulate(link, tmp_path / "bundle", tmp_path / "cosim")
    assert result["returncode"] == 0, result["output"]

    # Checked here against the golden model, independently of the host's own comparison.
    trace = golden.run(bundle, golden.events_to_dense(events, SAMPLES, 5, 24))
    assert result["samples"] == list(range(SAMPLES))
    assert result["predicted"] == golden.predict(trace.output).tolist()
    assert result["counts"] == golden.spike_counts(trace.output).tolist()
    assert result["agreement"] == 1.0 and result["all_equal"]
    assert all(c > 0 for c in result["cycles"])
    assert "agreement    1.0000 with the golden model" in result["output"]


def direct_bundle(tmp_path, samples):
    """A random layer whose test samples repeat one step, as direct encoding makes them."""
    from dataclasses import replace
    steps, n_in = 6, 20
    bundle = random_linear_bundle(n_in=n_in, n_out=5, sparsity=0.5, seed=9, steps=steps,
                                  input_bits=3)
    bundle.input = replace(bundle.input, encoding="direct")
    one = random_events(np.random.default_rng(9), samples=samples, steps=1, n_in=n_in,
                        density=0.3, bits=3)
    events = np.array(sorted(((s, t, a, v) for s, _, a, v in one for t in range(steps)),
                             key=lambda r: (r[0], r[1])), dtype=np.int64)
    bundle.vectors = golden.make_vectors(bundle, events, samples)
    save(bundle, tmp_path / "bundle")
    return bundle, events


@pytest.mark.parametrize("replay", [True, False])
def test_batches_through_cosimulated_board_link(tmp_path, replay):
    """BATCH frames (two in flight, buffer halves of 32 events: several batches) through the
    real host driver; with replay each sample travels as its first step only."""
    samples = 10
    bundle, events = direct_bundle(tmp_path, samples)
    link = HostLink(Accelerator(bundle, lanes=1), n_in=20, n_out=5, divisor=4,
                    capacity=32 if replay else 256, timeout=1_000_000, clock_hz=100_000_000,
                    ident=bundle_ident(bundle), steps=6, replay=replay)
    result = cosimulate(link, tmp_path / "bundle", tmp_path / "cosim")
    assert result["returncode"] == 0, result["output"]
    trace = golden.run(bundle, golden.events_to_dense(events, samples, 6, 20))
    assert result["counts"] == golden.spike_counts(trace.output).tolist()
    assert result["predicted"] == golden.predict(trace.output).tolist()
    assert result["all_equal"] and result["mode"] == ("batch-replay" if replay else "batch")
    per_sample = [int((events[:, 0] == s).sum()) // (6 if replay else 1) for s in range(samples)]
    assert result["events"] == per_sample
    # The events plus frame overhead go out, a RESULT (5 + 8 + 2 x 5 bytes) per sample comes in.
    assert result["bytes_sent"] >= 2 * sum(per_sample)             # two bytes an event
    assert result["bytes_received"] >= samples * (5 + 8 + 2 * 5)
    assert 0 < result["inferences_per_second_end_to_end"] < 100_000_000 / max(result["cycles"])


@pytest.mark.slow
def test_digits_mlp_through_cosimulated_board_link(tmp_path):
    """The trained digits MLP (0.75 sparsity, 8-bit weights): 20 test samples, host to host."""
    bundle_dir = REPO / "models" / "zoo" / "digits_mlp"
    bundle = load(bundle_dir)
    link = HostLink(Accelerator(bundle, lanes=4), n_in=64, n_out=10, divisor=4,
                    capacity=default_capacity(bundle), timeout=1_000_000,
                    clock_hz=30_000_000, ident=bundle_ident(bundle))
    result = cosimulate(link, bundle_dir, tmp_path, samples=20, wall_limit=3000)
    assert result["returncode"] == 0, result["output"]
    v = bundle.vectors
    events = v.events[v.events[:, 0] < 20]
    trace = golden.run(bundle, golden.events_to_dense(events, 20, v.steps, 64))
    assert result["predicted"] == golden.predict(trace.output).tolist()
    assert result["counts"] == golden.spike_counts(trace.output).tolist()
