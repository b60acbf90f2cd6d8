"""Spiking networks built from snnTorch modules, laid out as a bundle's layers.

A :class:`SpikingNet` is a list of stages named as the layers of the bundle it exports to:
``linear`` and ``conv2d`` stages (a ``torch.nn`` synapse followed by ``snn.Leaky`` or
``snn.Lapicque``), ``spike_pool`` (max-pool over spikes, i.e. OR) and ``flatten``. Its forward
pass runs the timesteps in order and, as DESIGN.md section 3 says, layer l+1 at step t consumes
the spikes of layer l at step t.

The two shapes the project ships:

* ``mlp``: ``64 -> 128 -> 10`` (``hidden`` sets the widths).
* ``csnn``: ``1x8x8 -> conv3x3 (8) -> pool 2 -> conv3x3 (16) -> pool 2 -> flatten -> 10``
  (``channels`` sets the convolutions; ``fc_hidden``, empty by default, adds hidden linear
  layers before the output).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import snntorch as snn
import torch
from snntorch import surrogate
from torch import nn

from .bundle import MODELS as NEURONS
from .bundle import RESETS

__all__ = ["ARCHS", "NEURONS", "RESETS", "SURROGATES", "NetConfig", "SpikingNet", "check_config"]

ARCHS = ("mlp", "csnn")
SURROGATES = ("fast_sigmoid", "atan")


@dataclass
class NetConfig:
    """Network hyperparameters; a plain dataclass so that checkpoints store it as a dict."""
    arch: str = "mlp"
    in_shape: tuple = (1, 8, 8)
    classes: int = 10
    hidden: tuple = (128,)
    channels: tuple = (8, 16)
    kernel: int = 3
    padding: int = 1
    pool: int = 2
    neuron: str = "lif"
    beta: float = 0.9
    threshold: float = 1.0
    reset: str = "subtract"
    surrogate: str = "fast_sigmoid"
    slope: float = 25.0
    bias: bool = True
    # A constant factor on the input before the first synapse (folded into the first layer's
    # weights when quantized): 1 / (2^bits - 1) for multi-bit direct input, so that the float
    # network sees intensities in [0, 1] while the bundle's events carry the integers.
    input_gain: float = 1.0
    # csnn only: widths of hidden linear layers between the last pool and the output layer
    # (none by default: the flattened pool feeds the output).
    fc_hidden: tuple = ()

    def to_dict(self):
        d = asdict(self)
        for key in ("in_shape", "hidden", "channels"):
            d[key] = list(d[key])
        if cfg_default(self, "fc_hidden"):
            del d["fc_hidden"]          # absent when unused: older configs stay as they were
        else:
            d["fc_hidden"] = list(d["fc_hidden"])
        return d

    @classmethod
    def from_dict(cls, d):
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("in_shape", "hidden", "channels", "fc_hidden"):
            if key in known:
                known[key] = tuple(known[key])
        return check_config(cls(**known))


def cfg_default(cfg, name):
    """Whether ``cfg.name`` holds its default value."""
    return getattr(cfg, name) == NetConfig.__dataclass_fields__[name].default


def _positive_ints(name, value):
    if (not isinstance(value, (tuple, list)) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
        raise ValueError(f"{name} must be a list of positive integers, not {value!r}")


def check_config(cfg: NetConfig):
    """Raise ``ValueError`` naming the bad value if ``cfg`` is out of range; return ``cfg``."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"Architecture must be one of {', '.join(ARCHS)}, not {cfg.arch!r}")
    if cfg.neuron not in NEURONS:
        raise ValueError(f"Neuron must be one of {', '.join(NEURONS)}, not {cfg.neuron!r}")
    if cfg.reset not in RESETS:
        raise ValueError(f"Reset must be one of {', '.join(RESETS)}, not {cfg.reset!r}")
    if cfg.surrogate not in SURROGATES:
        raise ValueError(f"Surrogate must be one of {', '.join(SURROGATES)}, "
                         f"not {cfg.surrogate!r}")
    # snnTorch's Lapicque derives C = T / ln(1 / beta) (R = 1), so its decay per step is
    # 1 - ln(1 / beta): beta must lie in [1/e, 1) for a decay in [0, 1).
    lapicque = cfg.neuron == "lapicque"
    if (isinstance(cfg.beta, bool) or not isinstance(cfg.beta, (int, float))
            or not (math.exp(-1) <= cfg.beta < 1 if lapicque else 0 <= cfg.beta <= 1)):
        allowed = "[0.3679, 1)" if lapicque else "[0, 1]"
        raise ValueError(f"Beta must be in {allowed} for {cfg.neuron}, not {cfg.beta!r}")
    if not isinstance(cfg.threshold, (int, float)) or not cfg.threshold > 0:
        raise ValueError(f"Threshold must be a positive number, not {cfg.threshold!r}")
    if not isinstance(cfg.slope, (int, float)) or not cfg.slope > 0:
        raise ValueError(f"Surrogate slope must be a positive number, not {cfg.slope!r}")
    if (isinstance(cfg.input_gain, bool) or not isinstance(cfg.input_gain, (int, float))
            or not 0 < cfg.input_gain <= 1):
        raise ValueError(f"Input gain must be a number in (0, 1], not {cfg.input_gain!r}")
    _positive_ints("Input shape", cfg.in_shape)
    _positive_ints("Hidden widths", cfg.hidden)
    _positive_ints("Channels", cfg.channels)
    if cfg.fc_hidden != ():
        _positive_ints("Hidden linear widths", cfg.fc_hidden)
        if cfg.arch != "csnn":
            raise ValueError(f"Hidden linear widths apply to csnn, not {cfg.arch} (use hidden)")
    for name in ("classes", "kernel", "pool"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name.capitalize()} must be a positive integer, not {value!r}")
    if isinstance(cfg.padding, bool) or not isinstance(cfg.padding, int) or cfg.padding < 0:
        raise ValueError(f"Padding must be a non-negative integer, not {cfg.padding!r}")
    if cfg.arch == "csnn":
        if len(cfg.in_shape) != 3:
            raise ValueError(f"Input shape must be [C, H, W] for csnn, not {list(cfg.in_shape)}")
        _, h, w = cfg.in_shape
        for _ in cfg.channels:
            h, w = (h + 2 * cfg.padding - cfg.kernel + 1) // cfg.pool, \
                   (w + 2 * cfg.padding - cfg.kernel + 1) // cfg.pool
            if h < 1 or w < 1:
                raise ValueError(f"Channels {list(cfg.channels)} with kernel {cfg.kernel} and "
                                 f"pool {cfg.pool} shrink input {list(cfg.in_shape)} to nothing")
    return cfg


@dataclass
class Stage:
    """One layer of the network, in bundle terms."""
    name: str
    kind: str
    in_shape: tuple
    out_shape: tuple


class SpikingNet(nn.Module):
    """A feed-forward spiking network of snnTorch neurons (see the module docstring).

    ``forward(x)`` takes event values ``[T, B, *in_shape]`` and returns the output spikes
    ``[T, B, classes]``; ``forward(x, record=True)`` returns the spikes of every stage as a list
    of ``[T, B, n]`` tensors instead.
    """

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = check_config(cfg)
        # None, or a models.quantize.FakeQuant that rounds the weights in the forward pass.
        self.fake_quant = None
        self.stages = []
        self.synapses = nn.ModuleDict()
        self.neurons = nn.ModuleDict()
        shape = tuple(cfg.in_shape)
        if cfg.arch == "mlp":
            shape = (math.prod(shape),)
            widths = list(cfg.hidden) + [cfg.classes]
            for index, width in enumerate(widths):
                self._add_linear(f"fc{index + 1}", shape, width)
                shape = (width,)
        else:
            for index, channels in enumerate(cfg.channels):
                c, h, w = shape
                grow = 2 * cfg.padding - cfg.kernel + 1             # stride 1
                out = (channels, h + grow, w + grow)
                name = f"conv{index + 1}"
                self.stages.append(Stage(name, "conv2d", shape, out))
                self.synapses[name] = nn.Conv2d(c, channels, cfg.kernel, padding=cfg.padding,
                                                bias=cfg.bias)
                self.neurons[name] = self._neuron()
                pooled = (channels, out[1] // cfg.pool, out[2] // cfg.pool)
                self.stages.append(Stage(f"pool{index + 1}", "spike_pool", out, pooled))
                shape = pooled
            self.stages.append(Stage("flat", "flatten", shape, (math.prod(shape),)))
            shape = (math.prod(shape),)
            for index, width in enumerate(list(cfg.fc_hidden) + [cfg.classes]):
                self._add_linear(f"fc{index + 1}", shape, width)
                shape = (width,)

    def _add_linear(self, name, shape, width):
        self.stages.append(Stage(name, "linear", shape, (width,)))
        self.synapses[name] = nn.Linear(shape[0], width, bias=self.cfg.bias)
        self.neurons[name] = self._neuron()

    def _neuron(self):
        cfg = self.cfg
        if cfg.surrogate == "fast_sigmoid":
            grad = surrogate.fast_sigmoid(slope=cfg.slope)
        else:
            grad = surrogate.atan(alpha=cfg.slope)
        if cfg.neuron == "lif":
            return snn.Leaky(beta=cfg.beta, threshold=cfg.threshold, spike_grad=grad,
                             reset_mechanism=cfg.reset)
        return snn.Lapicque(beta=cfg.beta, threshold=cfg.threshold, spike_grad=grad,
                            reset_mechanism=cfg.reset)

    def _synapse(self, name, a):
        synapse = self.synapses[name]
        if self.fake_quant is None:
            return synapse(a)
        # Quantization-aware training (models.quantize.FakeQuant): the weights on the export's
        # integer grid; a pruned synapse's weight is its mask times the free weights.
        weight = (synapse.weight_orig * synapse.weight_mask if hasattr(synapse, "weight_mask")
                  else synapse.weight)
        weight, bias = self.fake_quant(self, name, weight, synapse.bias)
        if isinstance(synapse, nn.Conv2d):
            return nn.functional.conv2d(a, weight, bias, padding=synapse.padding)
        return nn.functional.linear(a, weight, bias)

    @property
    def input_shape(self):
        """The bundle's input shape: flat for ``mlp``, ``(C, H, W)`` for ``csnn``."""
        return self.stages[0].in_shape

    @property
    def neuron_stages(self):
        return [stage for stage in self.stages if stage.kind in ("linear", "conv2d")]

    def forward(self, x, record=False):
        # Layer by layer: a feed-forward layer at step t needs only the previous layer's output
        # at step t, so each synapse (the costly part) runs once on all T x B inputs and only
        # the neurons step through time. Same result as stepping the whole network per step.
        steps, batch = x.shape[:2]
        if tuple(x.shape[2:]) not in (tuple(self.cfg.in_shape),
                                      (math.prod(self.cfg.in_shape),)):
            raise ValueError(f"Input must have shape [T, B, {list(self.cfg.in_shape)}], "
                             f"not {list(x.shape)}")
        a = x.reshape((steps * batch,) + tuple(x.shape[2:]))
        if self.cfg.input_gain != 1:
            a = a * self.cfg.input_gain
        trace = []
        for stage in self.stages:
            if stage.kind == "flatten":
                a = a.flatten(1)
            elif stage.kind == "spike_pool":
                a = nn.functional.max_pool2d(a, self.cfg.pool)
            else:
                cur = self._synapse(stage.name, a.reshape((steps * batch,) + stage.in_shape))
                cur = cur.reshape((steps, batch) + tuple(cur.shape[1:]))
                neuron, mem, spikes = self.neurons[stage.name], torch.zeros_like(cur[0]), []
                for t in range(steps):
                    spk, mem = neuron(cur[t], mem)
                    spikes.append(spk)
                a = torch.stack(spikes).flatten(0, 1)
            if record:
                trace.append(a.reshape(steps, batch, -1))
        return trace if record else a.reshape(steps, batch, -1)
