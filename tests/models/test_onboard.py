"""The on-board rate generator's reference (models/onboard.py): draws, order, statistics,
errors, and `python -m models eval --board-rate`."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import onboard as O

REPO = Path(__file__).resolve().parents[2]


def xorshift_scalar(x):
    """Marsaglia's xorshift32 (13, 17, 5) on a Python int, written out separately."""
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    return x


def test_xorshift_first_draw_from_one():
    # 1 ^ 1 << 13 = 8193; >> 17 leaves it; 8193 ^ 8193 << 5 = 8193 ^ 262176 = 270369.
    assert int(O.xorshift32(1)) == 270369


def test_xorshift_matches_a_scalar_sequence():
    states = np.array([1, 2463534242, 0xFFFFFFFF, 123456789], dtype=np.uint64)
    scalar = [int(s) for s in states]
    for _ in range(1000):
        states = O.xorshift32(states)
        scalar = [xorshift_scalar(s) for s in scalar]
        assert [int(s) for s in states] == scalar
    assert states.max() <= O.MASK and states.min() > 0


def test_rate_events_follow_the_documented_order():
    """Every step walks every address once, in order; spike when the top bits < intensity."""
    rng = np.random.default_rng(0)
    bits, steps, n_in = 3, 5, 11
    q = rng.integers(0, 2 ** bits, size=(4, n_in))
    seeds = O.sample_seeds(7, 4)
    want = []
    for s in range(4):
        state = int(seeds[s])
        for t in range(steps):
            for a in range(n_in):
                state = xorshift_scalar(state)
                if state >> (32 - bits) < q[s, a]:
                    want.append((s, t, a, 1))
    got = O.rate_events(q, seeds, steps=steps, bits=bits)
    assert got.dtype == np.int64 and [tuple(r) for r in got] == want
    assert len(want) > 20


def test_spike_probability_is_intensity_over_two_to_the_bits():
    bits, steps = 4, 4000
    q = np.arange(16)[None, :]
    events = O.rate_events(q, [12345], steps=steps, bits=bits)
    counts = np.bincount(events[:, 2], minlength=16)
    assert counts[0] == 0
    p = q[0] / 16
    sigma = np.sqrt(steps * p * (1 - p)) + 1e-9
    assert np.all(np.abs(counts - steps * p) <= 5 * sigma + 1), counts


def test_quantize_keeps_sixteenths_at_four_bits():
    x = np.arange(17) / 16
    assert O.quantize(x, 4).tolist() == list(range(16)) + [15]
    assert O.quantize([0.5], 8).tolist() == [128]
    with pytest.raises(ValueError, match=r"^Intensities must lie in \[0, 1\], not \[0\.0, 1\.5\]$"):
        O.quantize([0.0, 1.5], 4)
    with pytest.raises(ValueError, match=r"^Intensity bits must be an integer in \[1, 8\], "
                                         r"not 9$"):
        O.quantize([0.5], 9)


def test_sample_seeds_are_nonzero_and_distinct():
    seeds = O.sample_seeds(0, 100_000)
    assert seeds.min() >= 1 and seeds.max() <= O.MASK
    assert len(np.unique(seeds)) == len(seeds)
    assert not np.array_equal(O.sample_seeds(1, 10), O.sample_seeds(2, 10))
    with pytest.raises(ValueError, match=r"^Base seed must be a non-negative integer, not -1$"):
        O.sample_seeds(-1, 3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(intensities=[[1, 2]], seeds=[0]), r"^Seed must be in \[1, 4294967295\] \(0 is the "
                                            r"generator's fixed point\), not 0$"),
    (dict(intensities=[[1, 16]], seeds=[1]), r"^Intensity must be in \[0, 15\], not 16$"),
    (dict(intensities=[1, 2], seeds=[1]), r"^Intensities must have shape \[samples, n_in\], "
                                          r"not \[2\]$"),
    (dict(intensities=[[0.5]], seeds=[1]), r"^Intensities must be integers, not float64$"),
    (dict(intensities=[[1]], seeds=[1, 2]), r"^Seeds must be one per sample \(1\), not \[2\]$"),
    (dict(intensities=[[1]], seeds=[1], steps=0), r"^Steps must be an integer of at least 1, "
                                                  r"not 0$"),
    (dict(intensities=[[1]], seeds=[1], bits=0), r"^Intensity bits must be an integer in "
                                                 r"\[1, 8\], not 0$"),
])
def test_rate_events_refuse_bad_input(kwargs, message):
    args = dict(steps=3, bits=4)
    args.update(kwargs)
    intensities, seeds = np.asarray(args.pop("intensities")), np.asarray(args.pop("seeds"))
    with pytest.raises(ValueError, match=message):
        O.rate_events(intensities, seeds, **args)


def run_models(*args):
    return subprocess.run([sys.executable, "-m", "models", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_eval_board_rate_on_the_digits_mlp():
    proc = run_models("eval", "models/zoo/digits_mlp", "--board-rate", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    import json
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("360 samples x 25 steps, spikes drawn on the board (4-bit")
    r = json.loads(lines[-1])
    # The same network on spikes drawn another way: about as accurate as on the exported ones.
    assert abs(r["accuracy"] - r["exported_accuracy"]) <= 0.03
    assert r["agreement_with_exported"] >= 0.95
    assert r["intensity_bytes_per_sample"] == 36 and r["event_bytes_per_sample"] > 900


def test_eval_board_rate_refuses_a_direct_bundle():
    proc = run_models("eval", "models/zoo/mnist_mlp", "--board-rate", "1")
    assert proc.returncode == 2
    assert proc.stderr == ("python -m models eval: error: --board-rate needs a rate-coded bundle, "
                           "not 'direct'\n")
