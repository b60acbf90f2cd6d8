"""Encoders: event values per DESIGN.md section 5, seeded, and the same events in every use."""
import numpy as np
import pytest
import torch

from models import cli, golden
from models.encoders import ENCODINGS, SACCADE, encode, input_spec, to_events


def images(n=6, seed=0):
    return torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_values_fit_the_input_spec(encoding):
    x = encode(images(), encoding, steps=12, bits=3)
    assert tuple(x.shape) == (12, 6, 1, 8, 8)
    spec = input_spec(encoding, (64,), steps=12, bits=3)
    lo, hi = spec.value_range
    assert torch.equal(x, torch.round(x))
    assert lo <= float(x.min()) and float(x.max()) <= hi
    assert float(x.abs().sum()) > 0
    assert spec.encoding == encoding and spec.steps == 12


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_deterministic(encoding):
    assert torch.equal(encode(images(), encoding, steps=10, seed=3),
                       encode(images(), encoding, steps=10, seed=3))


def test_rate_is_seeded_bernoulli():
    flat = torch.full((1, 1, 100, 100), 0.3)
    a, b = encode(flat, "rate", steps=20, seed=1), encode(flat, "rate", steps=20, seed=2)
    assert not torch.equal(a, b)
    assert abs(float(a.mean()) - 0.3) < 0.01                    # 200,000 draws
    # The global torch generator is left alone.
    torch.manual_seed(5)
    expect = torch.rand(3)
    torch.manual_seed(5)
    encode(flat, "rate", steps=2, seed=9)
    assert torch.equal(torch.rand(3), expect)


def test_direct_is_the_quantized_intensity_every_step():
    img = torch.tensor([0.0, 0.2, 0.5, 1.0]).reshape(1, 1, 2, 2)
    x = encode(img, "direct", steps=3, bits=4)                   # levels 0..15
    for t in range(3):
        assert x[t].flatten().tolist() == [0.0, 3.0, 8.0, 15.0]  # 0.2*15=3, 0.5*15=7.5 -> 8


def test_latency_fires_once_brighter_first():
    img = torch.tensor([0.0, 0.25, 0.5, 1.0]).reshape(1, 1, 2, 2)
    x = encode(img, "latency", steps=9)[:, 0, 0].reshape(9, 4)
    assert x.sum(0).tolist() == [0.0, 1.0, 1.0, 1.0]             # dark pixel never fires
    times = x.argmax(0)[1:].tolist()
    assert times == [6, 4, 0]                                    # 8*(1-0.25)=6, 8*(1-0.5)=4


def test_delta_sends_signed_changes_of_the_moving_image():
    img = torch.zeros((1, 1, 4, 4))
    img[0, 0, 1, 1] = 1.0
    x = encode(img, "delta", steps=4, threshold=0.5)[:, 0, 0]
    assert x[0, 1, 1] == 1 and float(x[0].abs().sum()) == 1      # onset
    dy, dx = SACCADE[1]                                          # moves by (0, 1)
    assert x[1, 1, 1] == -1 and x[1, 1 + dy, 1 + dx] == 1 and float(x[1].abs().sum()) == 2


def test_events_are_sorted_and_round_trip_through_the_golden_model():
    for encoding in ENCODINGS:
        x = encode(images(), encoding, steps=7, bits=2)
        ev = to_events(x)
        order = ev[:, 0] * 7 + ev[:, 1]
        assert np.all(np.diff(order) >= 0)
        assert not np.any(ev[:, 3] == 0)
        dense = golden.events_to_dense(ev, 6, 7, 64)
        np.testing.assert_array_equal(dense, x.numpy().reshape(7, 6, 64).transpose(1, 0, 2))


def test_cli_spells_the_same_choices():
    from models import nets
    assert cli.ENCODINGS == ENCODINGS
    assert cli.ARCHS == nets.ARCHS and cli.SURROGATES == nets.SURROGATES


@pytest.mark.parametrize("kwargs, message", [
    ({"encoding": "morse"}, "Encoding must be one of rate, delta, direct, latency, not 'morse'"),
    ({"steps": 0}, "Steps must be an integer in [1, 1000], not 0"),
    ({"encoding": "direct", "bits": 9}, "Direct input bits must be an integer in [1, 8], not 9"),
    ({"encoding": "delta", "threshold": 0}, "Delta threshold must be in (0, 1], not 0"),
])
def test_bad_options(kwargs, message):
    kwargs = {"encoding": "rate", "steps": 4, **kwargs}
    with pytest.raises(ValueError) as info:
        encode(images(1), kwargs.pop("encoding"), **kwargs)
    assert str(info.value) == message


def test_bad_images():
    with pytest.raises(ValueError, match=r"^Image intensities must lie in \[0, 1\], not "
                                         r"\[0\.0, 2\.0\]$"):
        encode(torch.tensor([0.0, 2.0]).reshape(1, 1, 1, 2), "rate", steps=2)
    with pytest.raises(ValueError, match=r"^Images must have shape \[B, C, H, W\], not \[8, 8\]$"):
        encode(torch.zeros(8, 8), "rate", steps=2)
