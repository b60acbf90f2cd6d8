"""Random pruned networks for ``python -m gen --neurons N --sparsity S`` and for tests."""
from __future__ import annotations

import numpy as np

from .bundle import Bundle, InputSpec, Layer, Leak, Neuron

__all__ = ["random_weights", "random_linear_bundle", "random_csnn_bundle", "random_events"]


def random_weights(rng, shape, *, sparsity, weight_bits):
    """Integer weights of ``weight_bits`` with exactly ``round(sparsity * size)`` zeros."""
    size = int(np.prod(shape))
    hi = 2 ** (weight_bits - 1) - 1
    mags = rng.integers(1, hi + 1, size=size)
    signs = rng.choice(np.array([-1, 1]), size=size)
    w = mags * signs
    zeros = int(round(sparsity * size))
    w[rng.permutation(size)[:zeros]] = 0
    return w.reshape(shape).astype(np.int64)


def random_linear_bundle(*, n_in, n_out, sparsity, seed=0, weight_bits=8, potential_bits=16,
                         neuron=None, input_bits=1, input_signed=False, steps=8, bias=True,
                         layers=1, hidden=None):
    """A random pruned MLP of ``layers`` linear layers (``hidden`` wide between them).

    The threshold defaults to a value that makes a moderate fraction of neurons fire for
    inputs of about 20 % density, so that spikes, resets and saturation all get exercised.
    """
    rng = np.random.default_rng(seed)
    widths = [n_in] + [hidden or n_out] * (layers - 1) + [n_out]
    out, max_x = [], (2 ** (input_bits - 1) if input_signed else 2 ** input_bits - 1)
    for index in range(layers):
        a, b = widths[index], widths[index + 1]
        w = random_weights(rng, (b, a), sparsity=sparsity, weight_bits=weight_bits)
        nrn = neuron
        if nrn is None:
            typical = max(1, int(np.abs(w).sum(axis=1).mean() * 0.2 * max(1, max_x)))
            nrn = Neuron("lif", "subtract", min(typical, 2 ** (potential_bits - 1) - 1),
                         potential_bits, Leak("shift", shift=3))
        bvec = None
        if bias:
            bmax = max(1, nrn.threshold // 4)
            bvec = rng.integers(-bmax, bmax + 1, size=b).astype(np.int64)
        out.append(Layer(f"fc{index + 1}", "linear", (a,), (b,), w, bvec, weight_bits, nrn))
        max_x = 1
    return Bundle(InputSpec((n_in,), input_bits, input_signed, "raw", steps), out,
                  provenance={"source": "random", "seed": seed, "sparsity": sparsity})


def random_events(rng, *, samples, steps, n_in, density, bits=1, signed=False,
                  duplicates=False):
    """Random input events ``[n, 4]`` sorted by sample and step (addresses shuffled in a step)."""
    rows = []
    lo, hi = ((-2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (1, 2 ** bits - 1))
    for s in range(samples):
        for t in range(steps):
            active = np.flatnonzero(rng.random(n_in) < density)
            rng.shuffle(active)
            for a in active:
                v = int(rng.integers(lo, hi + 1)) if bits > 1 else 1
                rows.append((s, t, int(a), v))
            if duplicates and len(active):
                a = int(active[0])
                rows.append((s, t, a, 0))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def random_csnn_bundle(*, in_shape=(1, 8, 8), channels=(4, 6), kernel=3, stride=1, padding=1,
                       pool=2, n_out=10, sparsity=0.5, seed=0, weight_bits=6,
                       potential_bits=12, input_bits=1, input_signed=False, steps=4,
                       neuron=None):
    """A random pruned conv -> pool -> ... -> flatten -> linear network."""
    rng = np.random.default_rng(seed)
    layers, shape = [], tuple(in_shape)
    max_x = 2 ** (input_bits - 1) if input_signed else 2 ** input_bits - 1
    for index, ch in enumerate(channels):
        c, h, w = shape
        ho = (h + 2 * padding - kernel) // stride + 1
        wo = (w + 2 * padding - kernel) // stride + 1
        wt = random_weights(rng, (ch, c, kernel, kernel), sparsity=sparsity,
                            weight_bits=weight_bits)
        nrn = neuron or Neuron("lif", "subtract", max(1, int(
            np.abs(wt).reshape(ch, -1).sum(axis=1).mean() * 0.1 * max(1, max_x))),
            potential_bits, Leak("shift", shift=2))
        bias = rng.integers(-nrn.threshold // 4, nrn.threshold // 4 + 1, size=ch)
        layers.append(Layer(f"conv{index + 1}", "conv2d", shape, (ch, ho, wo), wt, bias,
                            weight_bits, nrn, kernel, stride, padding))
        shape = (ch, ho, wo)
        max_x = 1
        if pool and ho // pool >= 1 and wo // pool >= 1:
            out = (ch, ho // pool, wo // pool)
            layers.append(Layer(f"pool{index + 1}", "spike_pool", shape, out, kernel=pool))
            shape = out
    flat = int(np.prod(shape))
    layers.append(Layer("flat", "flatten", shape, (flat,)))
    wt = random_weights(rng, (n_out, flat), sparsity=sparsity, weight_bits=weight_bits)
    nrn = neuron or Neuron("lif", "subtract", max(1, int(np.abs(wt).sum(axis=1).mean() * 0.05)),
                           potential_bits, Leak("shift", shift=2))
    layers.append(Layer("fc", "linear", (flat,), (n_out,), wt, None, weight_bits, nrn))
    return Bundle(InputSpec(tuple(in_shape), input_bits, input_signed, "raw", steps), layers,
                  provenance={"source": "random", "seed": seed, "sparsity": sparsity})
