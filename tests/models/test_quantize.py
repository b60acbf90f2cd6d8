"""Networks, leak snapping, pruning and quantization into bundles."""
import math

import numpy as np
import pytest
import torch

from models.bundle import Leak
from models.encoders import input_spec
from models.nets import NetConfig, SpikingNet, check_config
from models.quantize import (
    FakeQuant,
    bake_fake_quant,
    finish_pruning,
    gain_and_decay,
    leak_for,
    prune_step,
    quantize,
    snap_leak,
    weight_sparsity,
)


def test_stages_follow_the_bundle_layout():
    mlp = SpikingNet(NetConfig(arch="mlp"))
    assert [(s.name, s.kind, s.in_shape, s.out_shape) for s in mlp.stages] == [
        ("fc1", "linear", (64,), (128,)), ("fc2", "linear", (128,), (10,))]
    csnn = SpikingNet(NetConfig(arch="csnn"))
    assert [(s.name, s.kind, s.out_shape) for s in csnn.stages] == [
        ("conv1", "conv2d", (8, 8, 8)), ("pool1", "spike_pool", (8, 4, 4)),
        ("conv2", "conv2d", (16, 4, 4)), ("pool2", "spike_pool", (16, 2, 2)),
        ("flat", "flatten", (64,)), ("fc1", "linear", (10,))]
    bundle = quantize(csnn, input_spec("rate", csnn.input_shape, steps=5))
    assert [(layer.name, layer.kind, layer.out_shape) for layer in bundle.layers] == [
        (s.name, s.kind, s.out_shape) for s in csnn.stages]
    out = csnn(torch.zeros(5, 3, 1, 8, 8))
    assert tuple(out.shape) == (5, 3, 10)


def test_csnn_hidden_linear_layers():
    net = SpikingNet(NetConfig(arch="csnn", fc_hidden=(12, 6)))
    assert [(s.name, s.kind, s.in_shape, s.out_shape) for s in net.stages[4:]] == [
        ("flat", "flatten", (16, 2, 2), (64,)), ("fc1", "linear", (64,), (12,)),
        ("fc2", "linear", (12,), (6,)), ("fc3", "linear", (6,), (10,))]
    bundle = quantize(net, input_spec("rate", net.input_shape, steps=2))
    assert [(layer.name, layer.n_in, layer.n_out) for layer in bundle.layers[5:]] == [
        ("fc1", 64, 12), ("fc2", 12, 6), ("fc3", 6, 10)]
    assert tuple(net(torch.zeros(2, 3, 1, 8, 8)).shape) == (2, 3, 10)
    # Stored only when used, so that older configs and their metrics stay as they were.
    assert "fc_hidden" not in NetConfig(arch="csnn").to_dict()
    assert NetConfig.from_dict(net.cfg.to_dict()) == net.cfg


def test_snntorch_modules_carry_the_options():
    import snntorch as snn
    net = SpikingNet(NetConfig(neuron="lapicque", beta=0.8, threshold=2.0, reset="zero",
                               surrogate="atan"))
    neuron = net.neurons["fc1"]
    assert isinstance(neuron, snn.Lapicque)
    assert neuron.reset_mechanism == "zero" and float(neuron.threshold) == 2.0
    assert isinstance(SpikingNet(NetConfig()).neurons["fc2"], snn.Leaky)


def test_lapicque_gain_and_decay():
    net = SpikingNet(NetConfig(neuron="lapicque", beta=0.8))
    gain, decay = gain_and_decay(net.neurons["fc1"])
    # snnTorch: R = 1, C = 1 / ln(1 / beta): gain T/C = ln(1/0.8), decay 1 - ln(1/0.8)
    assert math.isclose(gain, math.log(1 / 0.8), rel_tol=1e-6)
    assert math.isclose(decay, 1 - math.log(1 / 0.8), rel_tol=1e-6)


def test_snap_leak():
    net = SpikingNet(NetConfig(beta=0.9))
    leaks = snap_leak(net, "mul", 8)
    assert leaks["fc1"] == Leak("mul", beta=230, frac_bits=8)       # round(0.9 * 256)
    assert float(net.neurons["fc1"].beta) == 230 / 256
    lap = SpikingNet(NetConfig(neuron="lapicque", beta=0.9))
    leaks = snap_leak(lap, "shift")
    # decay 1 - ln(1/0.9) = 0.8946 -> nearest 1 - 2^-shift: shift 3 (0.875)
    assert leaks["fc2"] == Leak("shift", shift=3)
    gain, decay = gain_and_decay(lap.neurons["fc2"])
    assert math.isclose(decay, 0.875) and math.isclose(gain, 0.125)   # R (1 - decay), R = 1


@pytest.mark.parametrize("decay, mode, expect", [
    (0.95, "mul", Leak("mul", beta=243, frac_bits=8)),
    (1.0, "mul", Leak("mul", beta=256, frac_bits=8)),
    (0.5, "shift", Leak("shift", shift=1)),
    (0.97, "shift", Leak("shift", shift=5)),                          # 1 - 1/32 = 0.969
])
def test_leak_for(decay, mode, expect):
    assert leak_for(decay, mode, 8) == expect


def test_leak_for_refuses_decay_one_as_shift():
    with pytest.raises(ValueError, match=r"^Decay 1\.0 has no shift leak"):
        leak_for(1.0, "shift")


def test_quantize_by_hand():
    net = SpikingNet(NetConfig(hidden=(2,), classes=2, threshold=1.0))
    with torch.no_grad():
        w1 = torch.zeros(2, 64)
        w1[0, :3] = torch.tensor([0.5, -0.2, 0.1])
        w1[1, 5] = -0.3
        net.synapses["fc1"].weight.copy_(w1)
        net.synapses["fc1"].bias.copy_(torch.tensor([0.03, -0.05]))
        net.synapses["fc2"].weight.copy_(torch.tensor([[2.0, -1.0], [0.7, 0.0]]))
        net.synapses["fc2"].bias.zero_()
    snap_leak(net)
    bundle = quantize(net, input_spec("rate", (64,), steps=4), weight_bits=8)
    fc1, fc2 = bundle.layers
    # fc1: max|w| 0.5 -> threshold floor(127 / 0.5) = 254, scale 254
    assert fc1.neuron.threshold == 254
    assert fc1.weight[0, :3].tolist() == [127, -51, 25]              # 127, -50.8, 25.4
    assert fc1.weight[1, 5] == -76 and fc1.bias.tolist() == [8, -13]  # -76.2; 7.62, -12.7
    # fc2: max|w| 2 -> threshold floor(127 / 2) = 63
    assert fc2.neuron.threshold == 63
    assert fc2.weight.tolist() == [[126, -63], [44, 0]]               # scale 63: 0.7*63 = 44.1
    assert fc1.neuron.leak == Leak("mul", beta=230, frac_bits=8)


def test_quantize_folds_the_lapicque_gain():
    net = SpikingNet(NetConfig(hidden=(2,), classes=2, neuron="lapicque", beta=0.6))
    for neuron in net.neurons.values():
        neuron.R, neuron.C = torch.tensor(1.0), torch.tensor(4.0)       # gain 1/4, decay 3/4
    with torch.no_grad():
        for synapse in net.synapses.values():
            synapse.weight.zero_()
            synapse.bias.zero_()
        net.synapses["fc1"].weight[0, 0] = 8.0
        net.synapses["fc1"].weight[1, 1] = -2.0
        net.synapses["fc2"].weight.fill_(1.0)
    bundle = quantize(net, input_spec("rate", (64,), steps=4), weight_bits=8, leak="mul",
                      frac_bits=2)
    fc1 = bundle.layers[0]
    # effective weights 2.0 and -0.5 -> threshold floor(127 / 2) = 63, scale 63
    assert fc1.neuron.threshold == 63 and fc1.neuron.model == "lapicque"
    assert fc1.weight[0, 0] == 126 and fc1.weight[1, 1] == -32           # -31.5 -> -32 (even)
    assert fc1.neuron.leak == Leak("mul", beta=3, frac_bits=2)


def test_pruning_hits_the_target_exactly():
    torch.manual_seed(0)
    net = SpikingNet(NetConfig(arch="csnn"))
    prune_step(net, 0.3)
    prune_step(net, 0.75)
    for name, module in net.synapses.items():
        assert int((module.weight == 0).sum()) == round(0.75 * module.weight.numel()), name
    fc1 = net.synapses["fc1"]
    kept = fc1.weight_orig.detach().abs()[fc1.weight_mask.bool()]
    dropped = fc1.weight_orig.detach().abs()[~fc1.weight_mask.bool()]
    assert float(kept.min()) >= float(dropped.max())                  # by magnitude
    finish_pruning(net)
    assert not hasattr(net.synapses["fc1"], "weight_mask")
    assert all(abs(s - 0.75) < 1e-3 for s in weight_sparsity(net).values())
    bundle = quantize(net, input_spec("rate", net.input_shape, steps=3))
    for layer in bundle.neuron_layers:
        assert (layer.weight == 0).mean() >= 0.75 - 1e-3
        assert np.abs(layer.weight).max() == 127


def test_pruning_per_layer_targets():
    torch.manual_seed(0)
    net = SpikingNet(NetConfig(arch="csnn"))
    targets = {"conv1": 0.25, "conv2": 0.5, "fc1": 0.8}
    prune_step(net, {name: t / 2 for name, t in targets.items()})
    prune_step(net, targets)
    for name, module in net.synapses.items():
        assert int((module.weight == 0).sum()) == round(targets[name] * module.weight.numel())
    with pytest.raises(ValueError, match=r"^Global pruning takes one sparsity, not one per "
                                         r"layer$"):
        prune_step(net, targets, "global")


def test_global_pruning_ranks_all_layers_together():
    torch.manual_seed(0)
    net = SpikingNet(NetConfig(arch="csnn"))
    with torch.no_grad():
        net.synapses["conv1"].weight.mul_(100)                    # the largest weights: kept
    prune_step(net, 0.5, "global")
    prune_step(net, 0.75, "global")
    finish_pruning(net)
    zeros = sum(int((m.weight == 0).sum()) for m in net.synapses.values())
    total = sum(m.weight.numel() for m in net.synapses.values())
    assert zeros == round(0.75 * total)
    assert int((net.synapses["conv1"].weight == 0).sum()) == 0
    with pytest.raises(ValueError, match=r"^Prune scope must be one of layer, global, not 'x'$"):
        prune_step(net, 0.8, "x")


@pytest.mark.parametrize("kwargs, message", [
    ({"arch": "rnn"}, "Architecture must be one of mlp, csnn, not 'rnn'"),
    ({"neuron": "izh"}, "Neuron must be one of lif, lapicque, not 'izh'"),
    ({"reset": "soft"}, "Reset must be one of subtract, zero, none, not 'soft'"),
    ({"surrogate": "relu"}, "Surrogate must be one of fast_sigmoid, atan, not 'relu'"),
    ({"beta": 1.5}, "Beta must be in [0, 1] for lif, not 1.5"),
    ({"neuron": "lapicque", "beta": 0.2}, "Beta must be in [0.3679, 1) for lapicque, not 0.2"),
    ({"neuron": "lapicque", "beta": 1.0}, "Beta must be in [0.3679, 1) for lapicque, not 1.0"),
    ({"threshold": 0.0}, "Threshold must be a positive number, not 0.0"),
    ({"hidden": (128, 0)}, "Hidden widths must be a list of positive integers, not (128, 0)"),
    ({"fc_hidden": (32,)}, "Hidden linear widths apply to csnn, not mlp (use hidden)"),
    ({"arch": "csnn", "fc_hidden": (0,)},
     "Hidden linear widths must be a list of positive integers, not (0,)"),
    ({"arch": "csnn", "channels": (8, 16, 32, 64)},
     "Channels [8, 16, 32, 64] with kernel 3 and pool 2 shrink input [1, 8, 8] to nothing"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError) as info:
        check_config(NetConfig(**kwargs))
    assert str(info.value) == message


@pytest.mark.parametrize("kwargs, message", [
    ({"weight_bits": 1}, "Weight bits must be an integer in [2, 16], not 1"),
    ({"potential_bits": 33}, "Potential bits must be an integer in [4, 32], not 33"),
    ({"leak": "exp"}, "Leak must be one of mul, shift, not 'exp'"),
    ({"frac_bits": 17}, "Frac bits must be an integer in [0, 16], not 17"),
])
def test_bad_quantize_options(kwargs, message):
    net = SpikingNet(NetConfig())
    with pytest.raises(ValueError) as info:
        quantize(net, input_spec("rate", (64,), steps=2), **kwargs)
    assert str(info.value) == message


def test_fake_quant_rounds_as_the_export_and_bakes_exactly():
    torch.manual_seed(1)
    # Direct 4-bit input: the first layer's weights meet the input gain 1/15 at export.
    net = SpikingNet(NetConfig(arch="csnn", channels=(4, 8), input_gain=1 / 15))
    with torch.no_grad():
        for synapse in net.synapses.values():       # thresholds 1 grid step below qmax / peak
            synapse.weight.mul_(3.1)
    prune_step(net, 0.5, "global")
    x = (torch.rand(3, 2, 1, 8, 8) * 16).floor()
    fake = FakeQuant(6, 12, "mul", 8)
    net.fake_quant = fake
    out = net(x, record=True)[-1]
    out.sum().backward()                          # straight through: the free weights learn
    assert all(float(s.weight_orig.grad.abs().sum()) > 0 for s in net.synapses.values())
    net.fake_quant = None
    finish_pruning(net)
    expect = {name: fake.rounded(net, name) for name in net.synapses}
    bake_fake_quant(net, fake)
    bundle = quantize(net, input_spec("direct", net.input_shape, steps=3, bits=4),
                      weight_bits=6, potential_bits=12)
    for layer in bundle.neuron_layers:
        w_q, b_q, scale = expect[layer.name]
        gain = 1 / 15 if layer.name == "conv1" else 1.0
        assert layer.neuron.threshold == round(scale)         # threshold 1: theta_q = scale
        np.testing.assert_array_equal(layer.weight, np.round(w_q.numpy() * gain * scale))
        np.testing.assert_array_equal(layer.bias, np.round(b_q.numpy() * scale))
        # The float bias sits 0.45 steps below the integer one: the mul leak's mean flooring.
        np.testing.assert_allclose(b_q.numpy() * scale, layer.bias - 0.45, atol=1e-9)
        assert np.abs(layer.weight).max() <= 31 and (layer.weight == 0).mean() > 0
    # The baked float network is the rounded one: same spikes as with fake quantization.
    with torch.no_grad():
        baked = net(x)
        net.fake_quant = fake
        assert torch.equal(net(x), baked)
    assert torch.equal(out.detach(), baked)


def test_fake_quant_leak_rounding_follows_the_leak():
    net = SpikingNet(NetConfig(beta=0.9))
    assert FakeQuant(8, 16, "mul", 8).leak_rounding(net.neurons["fc1"]) == -0.45
    assert FakeQuant(8, 16, "shift").leak_rounding(net.neurons["fc1"]) == 0.45
    exact = SpikingNet(NetConfig(beta=1.0))                     # no leak: nothing rounds
    assert FakeQuant(8, 16, "mul", 8).leak_rounding(exact.neurons["fc1"]) == 0.0
    with pytest.raises(ValueError, match=r"^Leak must be one of mul, shift, not 'exp'$"):
        FakeQuant(8, 16, "exp")
