"""Float snnTorch network -> integer bundle: leak snapping, magnitude pruning, quantization.

The arithmetic follows DESIGN.md section 3. For every neuron layer:

* the synapse's float weights ``W`` and bias ``b`` meet the neuron's input gain ``g`` (1 for
  ``snn.Leaky``; ``T/C`` for ``snn.Lapicque``, whose update is ``mem = (T/C) I +
  (1 - T/(RC)) mem``), so the layer's effective weights are ``g W`` and ``g b``;
* the neuron's decay (``beta`` for Leaky, ``1 - T/(RC)`` for Lapicque) becomes a ``mul`` leak
  ``round(decay * 2^frac_bits)`` or a ``shift`` leak ``1 - 2^-shift``; :func:`snap_leak` sets the
  float network to exactly that decay before training, so both sides leak alike;
* one scale ``s`` per layer maps float potentials to integers: the threshold becomes
  ``theta_q = floor(theta * qmax / max|g W|)`` (``qmax = 2^(weight_bits-1) - 1``), ``s =
  theta_q / theta``, and weights and bias become ``round(g W s)`` and ``round(g b s)``. The
  threshold is exact, the weights use the full ``weight_bits`` range.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from snntorch import Lapicque, Leaky
from torch.nn.utils import prune

from .bundle import LEAKS, Bundle, InputSpec, Layer, Leak, Neuron
from .nets import SpikingNet

__all__ = [
    "LEAK_MODES",
    "PRUNE_SCOPES",
    "FakeQuant",
    "LEAK_ROUNDING",
    "bake_fake_quant",
    "check_options",
    "finish_pruning",
    "gain_and_decay",
    "leak_for",
    "prune_step",
    "quantize",
    "snap_leak",
    "weight_sparsity",
]

LEAK_MODES = LEAKS
PRUNE_SCOPES = ("layer", "global")


def check_options(*, weight_bits=8, potential_bits=16, leak="mul", frac_bits=8, sparsity=0.0):
    """Raise ``ValueError`` naming the bad value if a quantization option is out of range."""
    def whole(name, value, lo, hi):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
    whole("Weight bits", weight_bits, 2, 16)
    whole("Potential bits", potential_bits, 4, 32)
    whole("Frac bits", frac_bits, 0, 16)
    if leak not in LEAK_MODES:
        raise ValueError(f"Leak must be one of {', '.join(LEAK_MODES)}, not {leak!r}")
    if (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float))
            or not 0 <= sparsity < 1):
        raise ValueError(f"Sparsity must be in [0, 1), not {sparsity!r}")


def _theta_q(theta, peak, qmax, potential_bits):
    """The integer threshold :func:`quantize` picks for a layer whose largest ``|g W|`` is
    ``peak``: ``floor(theta * qmax / peak)``, at most ``2^(potential_bits - 2)``."""
    pmax = 2 ** (potential_bits - 1) - 1
    theta_q = math.floor(theta * qmax / peak) if peak > 0 else pmax
    return min(theta_q, 2 ** (potential_bits - 2))


def gain_and_decay(neuron):
    """``(g, decay)`` of an snnTorch neuron: ``mem = decay * mem + g * input`` (float64)."""
    if isinstance(neuron, Lapicque):
        r, c = float(neuron.R), float(neuron.C)
        t = float(neuron.time_step)
        return r * (1.0 / (r * c)) * t, 1.0 - t / (r * c)
    if isinstance(neuron, Leaky):
        return 1.0, min(1.0, max(0.0, float(neuron.beta)))
    raise TypeError(f"Neuron must be snntorch Leaky or Lapicque, not {type(neuron).__name__}")


def leak_for(decay, mode="mul", frac_bits=8, potential_bits=16):
    """The :class:`~models.bundle.Leak` nearest to ``decay``."""
    if not 0 <= decay <= 1:
        raise ValueError(f"Decay must be in [0, 1], not {decay!r}")
    if mode == "mul":
        return Leak("mul", beta=round(decay * 2 ** frac_bits), frac_bits=frac_bits)
    if decay >= 1:
        raise ValueError("Decay 1.0 has no shift leak (1 - 2^-shift < 1); use the mul leak")
    shift = round(-math.log2(1 - decay))
    return Leak("shift", shift=min(max(shift, 1), potential_bits - 1))


@torch.no_grad()
def snap_leak(net: SpikingNet, mode="mul", frac_bits=8, potential_bits=16):
    """Set every neuron's decay to the value its integer leak represents; return the leaks.

    For ``snn.Lapicque`` the resistance R is kept and C is set to ``T / (R (1 - decay))``, so the
    input gain ``T/C`` follows as ``R (1 - decay)``.
    """
    leaks = {}
    for name, neuron in net.neurons.items():
        _, decay = gain_and_decay(neuron)
        lk = leak_for(decay, mode, frac_bits, potential_bits)
        exact = lk.beta_float
        if isinstance(neuron, Lapicque):
            if exact >= 1:
                raise ValueError(f"Layer {name}: Lapicque decay rounds to 1.0; "
                                 f"use more frac bits")
            neuron.C.fill_(float(neuron.time_step) / (float(neuron.R) * (1 - exact)))
            neuron.beta = torch.as_tensor(exact)
        else:
            neuron.beta.fill_(exact)
        leaks[name] = lk
    return leaks


def prune_step(net: SpikingNet, sparsity, scope="layer"):
    """Prune synapses by weight magnitude to ``sparsity`` (cumulative).

    ``scope="layer"`` prunes every layer to ``sparsity`` (``l1_unstructured`` per layer), or
    each layer to its own where ``sparsity`` maps layer names to sparsities;
    ``scope="global"`` ranks all weights of the network together (``global_unstructured``), so
    the total reaches ``sparsity`` while small layers with large weights (the first conv) keep
    more. Call it again with a larger ``sparsity`` to prune further: the masks stay in place
    while fine-tuning, and :func:`finish_pruning` bakes them in.
    """
    if scope not in PRUNE_SCOPES:
        raise ValueError(f"Prune scope must be one of {', '.join(PRUNE_SCOPES)}, not {scope!r}")
    modules = list(net.synapses.values())

    def pruned(module):
        return int((module.weight_mask == 0).sum()) if hasattr(module, "weight_mask") else 0

    if scope == "global":
        if isinstance(sparsity, dict):
            raise ValueError("Global pruning takes one sparsity, not one per layer")
        total = sum(m.weight.numel() for m in modules)
        more = round(sparsity * total) - sum(pruned(m) for m in modules)
        if more > 0:
            prune.global_unstructured([(m, "weight") for m in modules],
                                      pruning_method=prune.L1Unstructured, amount=more)
    else:
        for name, module in net.synapses.items():
            target = sparsity[name] if isinstance(sparsity, dict) else sparsity
            more = round(target * module.weight.numel()) - pruned(module)
            if more > 0:
                prune.l1_unstructured(module, "weight", amount=more)
    for module in modules:
        if not hasattr(module, "weight_mask"):
            prune.identity(module, "weight")


def finish_pruning(net: SpikingNet):
    """Make the pruning masks permanent (plain ``weight`` parameters with zeros)."""
    for module in net.synapses.values():
        if hasattr(module, "weight_mask"):
            prune.remove(module, "weight")


def weight_sparsity(net: SpikingNet, total=False):
    """Fraction of zero weights per neuron layer (``total=True``: of all weights together)."""
    if total:
        zeros = sum(int((m.weight == 0).sum()) for m in net.synapses.values())
        return zeros / sum(m.weight.numel() for m in net.synapses.values())
    return {name: float((m.weight == 0).float().mean()) for name, m in net.synapses.items()}


@torch.no_grad()
def quantize(net: SpikingNet, input: InputSpec, *, weight_bits=8, potential_bits=16,
             leak="mul", frac_bits=8, scales=None, exact=False, provenance=None):
    """Quantize ``net`` into a :class:`~models.bundle.Bundle` (see the module docstring).

    ``scales`` (a number or a dict by layer name) overrides the per-layer scale. With
    ``exact=True`` any rounding of a weight, bias or threshold is an error: the integer network
    must equal the float one (used to check the golden model against snnTorch).
    """
    check_options(weight_bits=weight_bits, potential_bits=potential_bits, leak=leak,
                  frac_bits=frac_bits)
    cfg = net.cfg
    qmax = 2 ** (weight_bits - 1) - 1
    pmax = 2 ** (potential_bits - 1) - 1
    layers = []
    for stage in net.stages:
        if stage.kind == "flatten":
            layers.append(Layer(stage.name, "flatten", stage.in_shape, stage.out_shape))
            continue
        if stage.kind == "spike_pool":
            layers.append(Layer(stage.name, "spike_pool", stage.in_shape, stage.out_shape,
                                kernel=cfg.pool))
            continue
        synapse, neuron = net.synapses[stage.name], net.neurons[stage.name]
        gain, decay = gain_and_decay(neuron)
        theta = float(neuron.threshold)
        w = synapse.weight.detach().double().numpy() * gain
        if stage is net.neuron_stages[0]:
            w = w * cfg.input_gain          # the float net scales its input; the bundle does not
        b = None if synapse.bias is None else synapse.bias.detach().double().numpy() * gain
        scale = scales.get(stage.name) if isinstance(scales, dict) else scales
        if scale is None:
            peak = float(np.abs(w).max(initial=0.0))
            theta_q = _theta_q(theta, peak, qmax, potential_bits)
            if theta_q < 1:
                raise ValueError(f"Layer {stage.name}: threshold {theta} is below one weight "
                                 f"step; raise the threshold or weight bits")
            scale = theta_q / theta
        theta_q = round(theta * scale)
        w_q = np.round(w * scale)
        b_q = None if b is None else np.round(b * scale)
        if exact:
            for what, f, q in (("weights", w * scale, w_q), ("threshold", theta * scale, theta_q),
                               ("bias", b * scale if b is not None else 0, b_q
                                if b_q is not None else 0)):
                if not np.array_equal(np.asarray(f), np.asarray(q)):
                    raise ValueError(f"Layer {stage.name}: {what} are not integers at scale "
                                     f"{scale}")
        if np.abs(w_q).max(initial=0) > qmax:
            raise ValueError(f"Layer {stage.name}: weights reach {int(np.abs(w_q).max())}, "
                             f"beyond {weight_bits}-bit range at scale {scale}")
        if b_q is not None and np.abs(b_q).max(initial=0) > pmax:
            raise ValueError(f"Layer {stage.name}: bias reaches {int(np.abs(b_q).max())}, "
                             f"beyond {potential_bits}-bit potentials")
        if not 0 <= theta_q <= pmax:
            raise ValueError(f"Layer {stage.name}: threshold {theta_q} does not fit "
                             f"{potential_bits}-bit potentials")
        lk = leak_for(decay, leak, frac_bits, potential_bits)
        if exact and not math.isclose(lk.beta_float, decay, rel_tol=0, abs_tol=1e-12):
            raise ValueError(f"Layer {stage.name}: decay {decay} is not exactly a {leak} leak")
        model = "lapicque" if isinstance(neuron, Lapicque) else "lif"
        nrn = Neuron(model, cfg.reset, theta_q, potential_bits, lk)
        kind = "linear" if stage.kind == "linear" else "conv2d"
        layers.append(Layer(stage.name, kind, stage.in_shape, stage.out_shape,
                            w_q.astype(np.int64), None if b_q is None else b_q.astype(np.int64),
                            weight_bits, nrn, cfg.kernel if kind == "conv2d" else None,
                            1, cfg.padding if kind == "conv2d" else 0))
    bundle = Bundle(input, layers, provenance=dict(provenance or {"source": "snntorch"}))
    return bundle.validate()


def _effective(net: SpikingNet, name):
    """``(g, g')`` of a layer: its neuron's input gain, and that gain times the input gain the
    float network applies before its first synapse (folded into the weights by :func:`quantize`)."""
    gain, _ = gain_and_decay(net.neurons[name])
    first = net.neuron_stages[0].name == name
    return gain, gain * (net.cfg.input_gain if first else 1.0)


def _grid(w_eff, theta, qmax, potential_bits):
    """Integer weights and scale ``(k, s)`` of effective weights ``w_eff`` (float64 tensor) such
    that :func:`quantize`, given the weights ``k / s``, picks the same scale ``s`` and integers
    ``k``: the export's rule applied until it maps its own output onto itself (a few rounds at
    most; the threshold only grows and is capped)."""
    x = w_eff
    for _ in range(64):
        theta_q = _theta_q(theta, float(x.abs().max()), qmax, potential_bits)
        if theta_q < 1:
            raise ValueError(f"Threshold {theta} is below one weight step; raise the threshold "
                             f"or weight bits")
        scale = theta_q / theta
        k = torch.round(x * scale)
        # The export's threshold for weights k / s (exact: theta * qmax / (k_max / s)); the
        # baked weights lie a hair below k / s, so that float rounding cannot lower it.
        k_max = int(k.abs().max())
        again = min(qmax * theta_q // k_max, 2 ** (potential_bits - 2)) if k_max else theta_q
        if again == theta_q:
            return k, scale
        x = k / scale
    raise ValueError("Weight grid did not settle")          # pragma: no cover (theta_q grows)


#: Bias steps that model the integer leak's rounding (see :class:`FakeQuant`).
LEAK_ROUNDING = 0.45


class FakeQuant:
    """Quantization-aware training: the synapses' weights and biases as :func:`quantize` will
    round them (``weight_bits``-bit weights, one scale per layer), with a straight-through
    gradient (the rounding counts as the identity). Set ``net.fake_quant`` to an instance and
    the network computes with the rounded values; :func:`bake_fake_quant` writes them into the
    parameters for good.

    The integer leak rounds too: the golden model's ``mul`` leak ``(u * beta) >> frac_bits``
    floors, losing half a potential step per timestep on average, and the ``shift`` leak
    ``u - (u >> shift)`` gains as much. The float bias models that mean: it is the integer bias
    ``k`` moved by :data:`LEAK_ROUNDING` steps (``(k - 0.45) / s`` for ``mul``), which the
    export's rounding takes back to ``k``. (Measured on a Fashion-MNIST CSNN: the spikes that
    differ between float and golden fell from 20 to 2.4 per inference, the class agreement rose
    from 98.35 % to 99.6 %, with the same integer network.)
    """

    def __init__(self, weight_bits=8, potential_bits=16, leak="mul", frac_bits=8):
        check_options(weight_bits=weight_bits, potential_bits=potential_bits, leak=leak,
                      frac_bits=frac_bits)
        self.weight_bits, self.potential_bits = weight_bits, potential_bits
        self.leak, self.frac_bits = leak, frac_bits

    def leak_rounding(self, neuron):
        """Mean rounding of a timestep's integer leak, in potential steps (0 if exact)."""
        _, decay = gain_and_decay(neuron)
        lk = leak_for(decay, self.leak, self.frac_bits, self.potential_bits)
        if lk.mode == "shift":
            return LEAK_ROUNDING
        return 0.0 if lk.beta in (0, 2 ** lk.frac_bits) else -LEAK_ROUNDING

    def rounded(self, net: SpikingNet, name, weight=None):
        """``(weight, bias, scale)`` of layer ``name``: weight and bias on the grid, float64 in
        the float network's units, detached (``weight``: the synapse's, unless given)."""
        synapse = net.synapses[name]
        gain, full = _effective(net, name)
        theta = float(net.neurons[name].threshold)
        w = (synapse.weight if weight is None else weight).detach().double()
        k, scale = _grid(w * full, theta, 2 ** (self.weight_bits - 1) - 1, self.potential_bits)
        b = None
        if synapse.bias is not None:
            b = (torch.round(synapse.bias.detach().double() * gain * scale)
                 + self.leak_rounding(net.neurons[name])) / (scale * gain)
        return k / (scale * full), b, scale

    def __call__(self, net: SpikingNet, name, weight, bias):
        """Straight-through rounded ``weight`` and ``bias`` (the tensors the synapse would use:
        ``weight`` already masked if pruned)."""
        w_q, b_q, _ = self.rounded(net, name, weight)
        weight = weight + (w_q.to(weight.dtype) - weight.detach())
        if bias is not None:
            bias = bias + (b_q.to(bias.dtype) - bias.detach())
        return weight, bias


@torch.no_grad()
def bake_fake_quant(net: SpikingNet, fake: FakeQuant):
    """Write the rounded weights and biases of ``fake`` into ``net``'s parameters (after
    :func:`finish_pruning`), so that the plain float network computes with them and
    :func:`quantize` (``fake.weight_bits``, ``fake.potential_bits``) yields the same integers.

    Each value is the float32 nearest ``k / s`` moved one step towards zero: rounding may not
    lift the largest weight above ``k_max / s``, which would lower the export's threshold by one.
    """
    for name, synapse in net.synapses.items():
        if hasattr(synapse, "weight_mask"):
            raise ValueError("Bake the rounded weights after finish_pruning")
        w_q, b_q, scale = fake.rounded(net, name)
        zero = torch.zeros((), dtype=torch.float32)
        synapse.weight.copy_(torch.nextafter(w_q.float(), zero))
        if b_q is not None:
            synapse.bias.copy_(torch.nextafter(b_q.float(), zero))
        # What quantize will compute from the baked weights.
        _, full = _effective(net, name)
        theta = float(net.neurons[name].threshold)
        peak = float(np.abs(synapse.weight.detach().double().numpy() * full).max(initial=0.0))
        theta_q = _theta_q(theta, peak, 2 ** (fake.weight_bits - 1) - 1, fake.potential_bits)
        if theta_q / theta != scale:                                  # pragma: no cover
            raise ValueError(f"Layer {name}: the baked weights give threshold {theta_q}, not "
                             f"{round(theta * scale)}")
