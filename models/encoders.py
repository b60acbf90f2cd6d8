"""Input encoders: images in, integer event values per timestep out (DESIGN.md section 5).

Every encoder turns images ``[B, C, H, W]`` with intensities in ``[0, 1]`` into a tensor
``[T, B, C, H, W]`` whose entries are the integer event values the accelerator receives (held in
a float tensor so that snnTorch consumes them directly). The same function feeds training, the
float evaluation and the exported ``vectors.npz``, so the network and the golden model see the
same events.

========  =======================================================  ====  ======
encoding  event value per pixel and step                           bits  signed
========  =======================================================  ====  ======
rate      Bernoulli spike with p = intensity (seeded)              1     no
delta     +1 / -1 where the moving image changed by >= threshold   2     yes
direct    the intensity quantized to ``bits``, every step          bits  no
latency   one spike, earlier for brighter pixels (time to first)   1     no
========  =======================================================  ====  ======

``rate``, ``delta`` and ``latency`` are snnTorch's own ``spikegen.rate``, ``spikegen.delta``
(``off_spike=True``) and ``spikegen.latency`` (linear, normalised, clipped). A static image has
no changes to send, so ``delta`` moves the image along a small saccade path (as event cameras
see a digit in N-MNIST) and sends the signed changes from step to step.
"""
from __future__ import annotations

import numpy as np
import torch
from snntorch import spikegen

from .bundle import InputSpec

__all__ = ["ENCODINGS", "SACCADE", "check_options", "encode", "input_gain", "input_spec",
           "to_events"]

ENCODINGS = ("rate", "delta", "direct", "latency")

#: Offsets (dy, dx) of the image at successive steps for ``delta``, repeated cyclically.
SACCADE = ((0, 0), (0, 1), (1, 1), (1, 0))


def check_options(encoding, *, steps, bits=None, threshold=None):
    """Raise ``ValueError`` naming the bad value if encoder options are out of range."""
    if encoding not in ENCODINGS:
        raise ValueError(f"Encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise ValueError(f"Steps must be an integer in [1, 1000], not {steps!r}")
    if encoding == "direct" and bits is not None and (
            isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8):
        raise ValueError(f"Direct input bits must be an integer in [1, 8], not {bits!r}")
    if encoding == "delta" and threshold is not None and not 0 < threshold <= 1:
        raise ValueError(f"Delta threshold must be in (0, 1], not {threshold!r}")


def input_spec(encoding, shape, *, steps, bits=4):
    """The bundle's :class:`~models.bundle.InputSpec` for an encoder (``bits`` is for direct)."""
    check_options(encoding, steps=steps, bits=bits)
    if encoding == "delta":
        return InputSpec(tuple(shape), 2, True, "delta", steps)
    if encoding == "direct":
        return InputSpec(tuple(shape), bits, False, "direct", steps)
    return InputSpec(tuple(shape), 1, False, encoding, steps)


def _shift(images, dy, dx):
    """Translate ``[B, C, H, W]`` down by ``dy`` and right by ``dx`` with zero fill."""
    out = torch.zeros_like(images)
    h, w = images.shape[-2:]
    out[..., dy:, dx:] = images[..., :h - dy, :w - dx]
    return out


def input_gain(encoding, bits):
    """The float network's input gain for an encoding: ``1 / (2^bits - 1)`` for direct input
    of ``bits`` > 1 (the events carry integers up to ``2^bits - 1``, the network sees the
    intensity in [0, 1]), else 1 (spikes of value 1)."""
    return 1.0 / (2 ** bits - 1) if encoding == "direct" and bits and bits > 1 else 1.0


def encode(images, encoding, *, steps, bits=4, threshold=0.25, seed=0):
    """Encode ``images`` ``[B, C, H, W]`` in ``[0, 1]`` into event values ``[T, B, C, H, W]``.

    Deterministic: the same images, options and ``seed`` give the same tensor.
    """
    check_options(encoding, steps=steps, bits=bits, threshold=threshold)
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.ndim != 4:
        raise ValueError(f"Images must have shape [B, C, H, W], not {list(images.shape)}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"Image intensities must lie in [0, 1], not "
                         f"[{float(images.min())}, {float(images.max())}]")
    if encoding == "rate":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return spikegen.rate(images, num_steps=steps)
    if encoding == "direct":
        levels = 2 ** bits - 1
        return torch.round(images * levels).expand(steps, *images.shape).contiguous()
    if encoding == "latency":
        return spikegen.latency(images, num_steps=steps, linear=True, normalize=True,
                                clip=True, threshold=0.01)
    moving = torch.stack([_shift(images, *SACCADE[t % len(SACCADE)]) for t in range(steps)])
    return spikegen.delta(moving, threshold=threshold, off_spike=True)


def to_events(encoded):
    """Encoded values ``[T, B, ...]`` -> events ``[n, 4]`` (sample, step, addr, value), int64.

    Sorted by sample, then step, then address (row-major (c, y, x) addresses, as ``flatten``).
    Zero values carry nothing and are left out.
    """
    x = np.asarray(torch.as_tensor(encoded).detach().cpu().numpy())
    steps, samples = x.shape[:2]
    dense = x.reshape(steps, samples, -1).transpose(1, 0, 2)
    if not np.array_equal(dense, np.round(dense)):
        raise ValueError("Encoded values must be integers")
    rows = np.argwhere(dense != 0)
    values = dense[rows[:, 0], rows[:, 1], rows[:, 2]].astype(np.int64)
    return np.concatenate([rows.astype(np.int64), values[:, None]], axis=1).reshape(-1, 4)
