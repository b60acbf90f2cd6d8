"""The cycle model (hdl.cycles): bounds and per-engine estimates, on hand-counted cases."""
import numpy as np
import pytest

from hdl import cycles
from hdl.conv import conv_work, plan_conv
from models.synth import random_csnn_bundle


def test_lower_bound_terms():
    # max(ceil(A / L), ceil(S / E), ceil(N / U)): each term can be the largest.
    assert cycles.lower_bound(100, 3, 16, lanes=4) == 25
    assert cycles.lower_bound(10, 30, 16, lanes=4) == 30
    assert cycles.lower_bound(10, 3, 64, lanes=4) == 16
    assert cycles.lower_bound(10, 3, 64, lanes=4, updates=16) == 4      # 64 / 16


def test_conv_estimate_terms():
    # 1 x 8 x 8 -> 8 x 8 x 8 at one lane: the sweep of 512 neurons dominates a quiet step.
    quiet = cycles.conv_estimate([40], 5, in_size=64, out_shape=(8, 8, 8), lanes=1,
                                 out_events=10)
    assert quiet == 8 * 64 + cycles.CONV_SWEEP_FILL
    # A busy lane dominates: its operations plus the decode and accumulate latency.
    busy = cycles.conv_estimate([900, 100], 5, in_size=64, out_shape=(8, 8, 8), lanes=2,
                                out_events=10)
    assert busy == 900 + cycles.CONV_LATENCY
    # The output compressor: one cycle per spike and per 16-position word of each channel.
    loud = cycles.conv_estimate([10], 5, in_size=64, out_shape=(2, 20, 20), lanes=2,
                                out_events=700)
    assert loud == 700 + 2 * 25 + cycles.CONV_FILL
    # The input compressor: one cycle per spike and per 16-input word.
    wide = cycles.conv_estimate([10], 600, in_size=4096, out_shape=(1, 4, 4), lanes=1,
                                out_events=1)
    assert wide == 600 + 256 + cycles.CONV_FILL + cycles.CONV_LATENCY


def test_pool_estimate_terms():
    # Input-bound: one cycle per event.
    assert cycles.pool_estimate(100, out_size=128, out_events=5) == 100
    # An empty step: the compressor's 8 words (128 outputs / 16) and the close.
    assert cycles.pool_estimate(0, out_size=128, out_events=0) == 8 + cycles.POOL_CLOSE
    # Output-bound: one cycle per output spike, words with spikes cost nothing extra.
    assert cycles.pool_estimate(16, out_size=128, out_events=16) == 16 + cycles.POOL_CLOSE


@pytest.mark.parametrize("lanes", [1, 2, 3, 6])
def test_conv_lane_work_splits_conv_work(lanes):
    layer = random_csnn_bundle(in_shape=(3, 7, 7), channels=(6,), stride=2, seed=5).layers[0]
    plan = plan_conv(layer, lanes=lanes)
    work = cycles.conv_lane_work(layer, plan.channels)
    assert work.shape == (lanes, layer.n_in)
    assert np.array_equal(work.sum(axis=0), conv_work(layer))
    dense = cycles.conv_lane_work(layer, plan.channels, dense=True)
    assert np.array_equal(dense.sum(axis=0), conv_work(layer, dense=True))
