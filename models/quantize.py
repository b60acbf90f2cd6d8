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

    ``scope="layer"`` prunes every layer to ``sparsity`` (``l1_unstructured`` per layer);
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
        total = sum(m.weight.numel() for m in modules)
        more = round(sparsity * total) - sum(pruned(m) for m in modules)
        if more > 0:
            prune.global_unstructured([(m, "weight") for m in modules],
                                      pruning_method=prune.L1Unstructured, amount=more)
    else:
        for module in modules:
            more = round(sparsity * module.weight.numel()) - pruned(module)
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
            theta_q = math.floor(theta * qmax / peak) if peak > 0 else pmax
            theta_q = min(theta_q, 2 ** (potential_bits - 2))
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
