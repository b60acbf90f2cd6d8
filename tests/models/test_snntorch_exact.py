"""The golden model equals snnTorch spike for spike where the float math is exact.

snnTorch's ``Leaky`` and ``Lapicque`` run in float32; the golden model in integers. With
integer weights, biases and thresholds, the two agree exactly when every float product is exact:
beta = 1 (no leak), or a leak of 1/2 or 3/4 on potentials that stay multiples of a large power
of two for a short run (each step of a 2^-k leak uses up k factors of two). Every reset mode, both
neuron models, the MLP and the convolutional network (conv2d, spike pool, flatten) are compared
on every layer, step and neuron; the networks go through the same :func:`models.quantize.quantize`
as a trained export, with ``exact=True`` so that no value is rounded on the way.
"""
import numpy as np
import pytest
import torch

from models import golden
from models.encoders import encode, input_spec
from models.nets import NetConfig, SpikingNet
from models.quantize import quantize

# (neuron, decay, leak mode, frac_bits, unit, steps, Lapicque (R, C))
# ``unit`` scales every weight, bias and threshold so that leaked potentials stay exact.
LEAKS = {
    "lif-beta1":       ("lif", 1.0, "mul", 0, 1, 25, None),
    "lif-shift1":      ("lif", 0.5, "shift", 0, 2 ** 8, 8, None),
    "lif-mul3/4":      ("lif", 0.75, "mul", 2, 2 ** 12, 6, None),
    "lapicque-decay0": ("lapicque", 0.0, "mul", 0, 1, 25, (1.0, 1.0)),
    "lapicque-half":   ("lapicque", 0.5, "mul", 1, 2 ** 8, 8, (4.0, 0.5)),
}
RESETS = ("subtract", "zero", "none")


def exact_net(arch, leak_name, reset, *, seed):
    """A network with integer-valued parameters (times ``unit``) and an exact decay."""
    model, decay, _, _, unit, _, rc = LEAKS[leak_name]
    cfg = NetConfig(arch=arch, hidden=(24,), channels=(4, 6), neuron=model, reset=reset,
                    beta=decay if model == "lif" else 0.6)
    net = SpikingNet(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for index, (name, synapse) in enumerate(net.synapses.items()):
            w = torch.randint(-3, 4, synapse.weight.shape, generator=gen).float()
            w[torch.rand(w.shape, generator=gen) < 0.5] = 0         # sparse, as after pruning
            synapse.weight.copy_(w * unit)
            synapse.bias.copy_(torch.randint(-1, 2, synapse.bias.shape, generator=gen) * unit)
            neuron = net.neurons[name]
            neuron.threshold.fill_((3 if index == 0 else 2) * unit)
            if rc is not None:
                neuron.R, neuron.C = torch.tensor(rc[0]), torch.tensor(rc[1])
    return net


def compare(arch, leak_name, reset, encoding, *, samples=16, seed=0):
    """Run snnTorch and the golden model; return (compared values, mismatches, golden trace)."""
    _, _, mode, frac_bits, _, steps, _ = LEAKS[leak_name]
    net = exact_net(arch, leak_name, reset, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    images = torch.rand((samples, 1, 8, 8), generator=gen)
    x = encode(images, encoding, steps=steps, bits=2, seed=seed)
    with torch.no_grad():
        float_trace = [t.numpy() for t in net(x, record=True)]       # [T, S, n] per stage
    spec = input_spec(encoding, net.input_shape, steps=steps, bits=2)
    bundle = quantize(net, spec, weight_bits=16, potential_bits=32, leak=mode,
                      frac_bits=frac_bits, scales=1.0, exact=True)
    dense = x.numpy().reshape(steps, samples, -1).transpose(1, 0, 2).astype(np.int64)
    trace = golden.run(bundle, dense, keep_potentials=True)
    compared = mismatches = 0
    for ours, theirs in zip(trace.spikes, float_trace):
        theirs = theirs.transpose(1, 0, 2)
        assert ours.shape == theirs.shape
        compared += ours.size
        mismatches += int((ours != theirs).sum())
    return compared, mismatches, bundle, trace


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("leak_name", list(LEAKS))
@pytest.mark.parametrize("arch, encoding", [("mlp", "rate"), ("mlp", "delta"),
                                            ("csnn", "direct")])
def test_golden_equals_snntorch(arch, encoding, leak_name, reset):
    compared, mismatches, bundle, trace = compare(arch, leak_name, reset, encoding)
    assert mismatches == 0, f"{mismatches} of {compared} spikes differ"
    # The comparison must have something to disagree about: every neuron layer fires, but not
    # everywhere, and no potential reached the clamp (snnTorch has none).
    for layer, spikes, pots in zip(bundle.layers, trace.spikes, trace.potentials):
        if layer.has_neurons:
            assert 0 < spikes.mean() < 1, f"{layer.name} fires {spikes.mean():.3f}"
            assert pots.max() < layer.neuron.hi and pots.min() > layer.neuron.lo


def test_comparison_detects_a_wrong_threshold():
    """A one-unit change of one threshold in the bundle shows up as mismatches."""
    _, mismatches, bundle, _ = compare("mlp", "lif-beta1", "subtract", "rate")
    assert mismatches == 0
    layer = bundle.layers[0]
    from dataclasses import replace
    layer.neuron = replace(layer.neuron, threshold=layer.neuron.threshold + 1)
    net = exact_net("mlp", "lif-beta1", "subtract", seed=0)
    images = torch.rand((16, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    x = encode(images, "rate", steps=25, seed=0)
    with torch.no_grad():
        theirs = net(x, record=True)[0].numpy().transpose(1, 0, 2)
    dense = x.numpy().reshape(25, 16, -1).transpose(1, 0, 2).astype(np.int64)
    ours = golden.run(bundle, dense).spikes[0]
    assert (ours != theirs).sum() > 0


def test_exact_quantize_refuses_fractions():
    net = exact_net("mlp", "lif-beta1", "subtract", seed=0)
    with torch.no_grad():
        net.synapses["fc1"].weight[0, 0] = 0.5
    spec = input_spec("rate", net.input_shape, steps=4)
    with pytest.raises(ValueError, match=r"^Layer fc1: weights are not integers at scale 1.0$"):
        quantize(net, spec, weight_bits=16, potential_bits=32, leak="mul", frac_bits=0,
                 scales=1.0, exact=True)


def test_input_gain_folds_into_the_first_layer():
    """A float network that scales its input (multi-bit direct input seen in [0, 1]) exports
    to a bundle whose first layer carries the factor: the golden model on the integer events
    equals snnTorch on them, on every layer. A power-of-two gain keeps the float math exact."""
    steps, samples = 25, 8
    net = exact_net("csnn", "lif-beta1", "subtract", seed=3)
    net.cfg.input_gain = 0.25
    first = next(iter(net.synapses.values()))
    with torch.no_grad():
        first.weight.mul_(4)                        # gain x weight: the same integers as before
    images = torch.rand((samples, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    x = encode(images, "direct", steps=steps, bits=2)
    with torch.no_grad():
        float_trace = [t.numpy() for t in net(x, record=True)]
    bundle = quantize(net, input_spec("direct", net.input_shape, steps=steps, bits=2),
                      weight_bits=16, potential_bits=32, leak="mul", frac_bits=0, scales=1.0,
                      exact=True)
    assert np.array_equal(bundle.layers[0].weight, first.weight.detach().numpy() / 4)
    dense = x.numpy().reshape(steps, samples, -1).transpose(1, 0, 2).astype(np.int64)
    trace = golden.run(bundle, dense)
    assert sum(int(s.sum()) for s in trace.spikes) > 0
    for ours, theirs in zip(trace.spikes, float_trace):
        assert np.array_equal(ours, theirs.transpose(1, 0, 2))
