"""The golden model against small cases worked out by hand from DESIGN.md section 3."""
import numpy as np
import pytest
import torch

from models import golden
from models.bundle import Bundle, InputSpec, Layer, Leak, Neuron

NO_LEAK = Leak("mul", beta=1, frac_bits=0)


def steps(neuron, currents):
    """Feed ``currents`` to one neuron step by step; return potentials and spikes."""
    u, s = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    us, ss = [], []
    for i in currents:
        u, s = golden.neuron_step(u, s, np.array([i]), neuron)
        us.append(int(u[0]))
        ss.append(int(s[0]))
    return us, ss


@pytest.mark.parametrize("leak, u, expect", [
    (Leak("mul", beta=230, frac_bits=8), 100, 89),      # 23000 / 256 = 89.84 -> 89
    (Leak("mul", beta=230, frac_bits=8), -5, -5),       # -1150 / 256 = -4.49 -> floor -5
    (Leak("mul", beta=256, frac_bits=8), -77, -77),     # beta = 1
    (Leak("mul", beta=0, frac_bits=4), 1000, 0),
    (Leak("shift", shift=3), 100, 88),                  # 100 - 12
    (Leak("shift", shift=3), -5, -4),                   # -5 - floor(-5/8) = -5 + 1
    (Leak("shift", shift=1), 7, 4),                     # 7 - 3
])
def test_leak(leak, u, expect):
    assert int(golden.leak(np.array([u]), Neuron(leak=leak))[0]) == expect


# threshold 10, no leak; currents 6, 6, 6, 0, 20
@pytest.mark.parametrize("model, reset, potentials, spikes", [
    ("lif", "subtract",      [6, 12, 8, 8, 28],   [0, 1, 0, 0, 1]),   # 12+6-10, ...
    ("lapicque", "subtract", [6, 12, 8, 8, 28],   [0, 1, 0, 0, 1]),
    ("lif", "zero",          [6, 12, 6, 6, 26],   [0, 1, 0, 0, 1]),   # (1-1)*12 + 6
    ("lapicque", "zero",     [6, 12, 0, 0, 20],   [0, 1, 0, 0, 1]),   # (1-1)*(12+6)
    ("lif", "none",          [6, 12, 18, 18, 38], [0, 1, 1, 1, 1]),
])
def test_reset_modes(model, reset, potentials, spikes):
    neuron = Neuron(model, reset, 10, 16, NO_LEAK)
    assert steps(neuron, [6, 6, 6, 0, 20]) == (potentials, spikes)


def test_reset_uses_the_previous_spike_with_leak():
    # threshold 10, shift 1 (u - u>>1), subtract: 30 -> s; 15 - 10 + 0 -> 5 (no spike);
    # zero (lif): 30 -> s; leak(0) + 4 = 4
    sub = Neuron("lif", "subtract", 10, 16, Leak("shift", shift=1))
    zero = Neuron("lif", "zero", 10, 16, Leak("shift", shift=1))
    assert steps(sub, [30, 0, 4]) == ([30, 5, 7], [1, 0, 0])      # 30-15-10=5; 5-2+4=7
    assert steps(zero, [30, 4, 4]) == ([30, 4, 6], [1, 0, 0])     # 0+4; 4-2+4=6


def test_threshold_is_strict_and_potential_saturates():
    neuron = Neuron("lif", "none", 10, 6, NO_LEAK)              # potentials in [-32, 31]
    assert steps(neuron, [10, 0]) == ([10, 10], [0, 0])         # u == threshold: no spike
    assert steps(neuron, [40, 5]) == ([31, 31], [1, 1])         # clamp at 2^5 - 1
    assert steps(neuron, [-100, 3]) == ([-32, -29], [0, 0])     # clamp at -2^5, then integrate
    sub = Neuron("lif", "subtract", 10, 6, NO_LEAK)
    assert steps(sub, [40, 0, 0]) == ([31, 21, 11], [1, 1, 1])


def _linear(name, w, b, neuron, bits=8):
    w = np.asarray(w)
    return Layer(name, "linear", (w.shape[1],), (w.shape[0],), w,
                 None if b is None else np.asarray(b), bits, neuron)


def test_layer_current_linear():
    layer = _linear("fc", [[1, -2, 3], [0, 4, -1]], [5, -6], Neuron())
    cur = golden.layer_current(layer, np.array([[1, 1, 0], [0, 2, 1]]))
    # [1-2+5, 4-6] and [-4+3+5, 8-1-6]
    assert cur.tolist() == [[4, -2], [4, 1]]


def test_layer_current_conv_by_hand():
    # 1x3x3 input, one 2x2 kernel, stride 1, padding 0: out 1x2x2
    x = np.array([[1, 0, 2],
                  [0, 3, 0],
                  [1, 1, 1]])
    w = np.array([[[[1, 2], [3, 4]]]])
    layer = Layer("c", "conv2d", (1, 3, 3), (1, 2, 2), w, np.array([10]), 8, Neuron(), kernel=2)
    cur = golden.layer_current(layer, x.reshape(1, -1))
    # top-left: 1*1 + 0*2 + 0*3 + 3*4 = 13; top-right: 0 + 4 + 9 + 0 = 13
    # bottom-left: 0 + 6 + 3 + 4 = 13;     bottom-right: 3 + 0 + 3 + 4 = 10; plus bias 10
    assert cur.tolist() == [[23, 23, 23, 20]]


def test_layer_current_conv_padding_stride_channels_match_torch():
    rng = np.random.default_rng(1)
    for (c, k, h, w, kernel, stride, pad) in [(2, 3, 5, 6, 3, 1, 1), (3, 2, 7, 7, 3, 2, 1),
                                              (1, 4, 8, 8, 3, 1, 0), (2, 2, 6, 5, 2, 2, 0)]:
        ho, wo = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
        weight = rng.integers(-9, 10, (k, c, kernel, kernel))
        bias = rng.integers(-5, 6, k)
        layer = Layer("c", "conv2d", (c, h, w), (k, ho, wo), weight, bias, 8, Neuron(),
                      kernel=kernel, stride=stride, padding=pad)
        x = rng.integers(-2, 3, (4, c, h, w))
        ref = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64),
                                         torch.tensor(weight, dtype=torch.float64),
                                         torch.tensor(bias, dtype=torch.float64),
                                         stride=stride, padding=pad)
        ours = golden.layer_current(layer, x.reshape(4, -1))
        np.testing.assert_array_equal(ours, ref.numpy().reshape(4, -1).astype(np.int64))


def test_spike_pool_is_or_and_floors():
    s = np.array([[1, 0, 0, 0, 1],
                  [0, 0, 0, 0, 1],
                  [0, 0, 0, 1, 0],
                  [0, 0, 0, 0, 0],
                  [1, 1, 1, 1, 1]])
    layer = Layer("p", "spike_pool", (1, 5, 5), (1, 2, 2), kernel=2)
    # windows rows 0-1 / 2-3, cols 0-1 / 2-3; row 4 and column 4 are dropped
    assert golden.spike_pool(layer, s.reshape(1, -1)).tolist() == [[1, 0, 0, 1]]
    two = np.stack([s, 1 - s])                                  # channels pool separately
    layer2 = Layer("p", "spike_pool", (2, 5, 5), (2, 2, 2), kernel=2)
    assert golden.spike_pool(layer2, two.reshape(1, -1)).tolist() == [[1, 0, 0, 1, 1, 1, 1, 1]]


def test_flatten_order_is_channel_row_column():
    # conv with two output channels that copy the input pixel (k=1), then flatten -> linear
    # that reads only address c*H*W + y*W + x = 1*4 + 1*2 + 0 = 6, i.e. channel 1, y 1, x 0.
    ident = Neuron("lif", "none", 0, 8, NO_LEAK)
    conv = Layer("c", "conv2d", (1, 2, 2), (2, 2, 2), np.array([[[[1]]], [[[1]]]]), None, 4,
                 ident, kernel=1)
    flat = Layer("f", "flatten", (2, 2, 2), (8,))
    pick = np.zeros((1, 8), dtype=np.int64)
    pick[0, 6] = 1
    fc = _linear("fc", pick, None, ident, bits=4)
    bundle = Bundle(InputSpec((1, 2, 2), 1, False, "raw", 1), [conv, flat, fc])
    for pixel in range(4):
        x = np.zeros((1, 1, 4), dtype=np.int64)
        x[0, 0, pixel] = 1
        fired = int(golden.run(bundle, x).output[0, 0, 0])
        assert fired == (pixel == 2)                            # (y 1, x 0) in a 2x2 image


def test_run_two_layers_by_hand():
    # fc1: 2 inputs -> 2 neurons, threshold 3, no leak, subtract; fc2: 2 -> 1, threshold 1
    n1 = Neuron("lif", "subtract", 3, 8, NO_LEAK)
    n2 = Neuron("lif", "subtract", 1, 8, NO_LEAK)
    fc1 = _linear("fc1", [[2, 0], [1, 1]], None, n1)
    fc2 = _linear("fc2", [[1, 1]], None, n2)
    bundle = Bundle(InputSpec((2,), 1, False, "raw", 4), [fc1, fc2])
    x = np.array([[[1, 0], [1, 1], [0, 0], [1, 1]]])
    trace = golden.run(bundle, x, keep_potentials=True)
    # fc1 neuron 0: 2, 4 (s), 4-3=1, 1+2=3 (no spike: not > 3)
    # fc1 neuron 1: 1, 1+2=3 (not > 3), 3, 3+2=5 (s)
    assert trace.potentials[0][0].tolist() == [[2, 1], [4, 3], [1, 3], [3, 5]]
    assert trace.spikes[0][0].tolist() == [[0, 0], [1, 0], [0, 0], [0, 1]]
    # fc2 sees fc1's spikes of the same step: 0, 1, 1-0... : u = 0, 1, 1, 2 -> spikes at t=3
    assert trace.potentials[1][0].tolist() == [[0], [1], [1], [2]]
    assert trace.output[0].tolist() == [[0], [0], [0], [1]]


def test_events_to_dense_adds_duplicates():
    ev = np.array([[0, 0, 1, 1], [0, 0, 1, 2], [1, 2, 0, -1], [1, 2, 0, 0]])
    x = golden.events_to_dense(ev, 2, 3, 2)
    assert x.shape == (2, 3, 2)
    assert x[0, 0].tolist() == [0, 3] and x[1, 2].tolist() == [-1, 0]
    assert int(np.abs(x).sum()) == 4


def test_predict_ties_go_to_the_lowest_index():
    spikes = np.zeros((3, 4, 3), dtype=np.int8)
    spikes[0, :2, 1] = 1
    spikes[0, :2, 2] = 1                                        # tie 1 vs 2 -> 1
    spikes[1, :, 2] = 1                                         # clear winner 2
    assert golden.predict(spikes).tolist() == [1, 2, 0]         # no spikes at all -> 0


def test_spike_rows_are_in_stream_order():
    spikes = np.zeros((2, 2, 3), dtype=np.int8)
    spikes[1, 0, 2] = spikes[0, 1, 0] = spikes[0, 1, 2] = 1
    assert golden.spike_rows(spikes).tolist() == [[0, 1, 0], [0, 1, 2], [1, 0, 2]]


def test_current_bits_by_hand():
    layer = _linear("fc", [[3, -4], [1, 0]], [2, -7], Neuron())
    # |b| + sum|w| * max|x|: row 0: 2 + 7 = 9, row 1: 7 + 1 = 8 -> 9 needs 4 bits + sign
    assert golden.current_bound(layer, 1) == 9
    assert golden.current_bits(layer, 1) == 5
    assert golden.current_bound(layer, 3) == 23                 # 2 + 7*3
    assert golden.current_bits(layer, 3) == 6
