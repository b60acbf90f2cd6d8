"""The bit-exact fixed-point golden model (DESIGN.md section 3): the specification.

Pure numpy, vectorised over samples and neurons; the only loop is over timesteps. Every generated
accelerator is proven equal to :func:`run` by cosimulation, spike for spike, step for step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bundle import Bundle, Layer, Neuron, Vectors

__all__ = [
    "leak", "neuron_step", "layer_current", "spike_pool", "events_to_dense", "run", "Trace",
    "predict", "spike_rows", "current_bound", "current_bits", "make_vectors", "spike_counts",
    "input_stream", "output_stream",
]


def leak(u, neuron: Neuron):
    """Apply the layer's leak to potentials ``u`` (int64)."""
    lk = neuron.leak
    if lk.mode == "mul":
        return (u * lk.beta) >> lk.frac_bits
    return u - (u >> lk.shift)


def neuron_step(u_prev, s_prev, current, neuron: Neuron):
    """One timestep of a layer's neurons; returns ``(u, s)``. All arrays int64, same shape."""
    r = s_prev.astype(np.int64)
    if neuron.reset == "subtract":
        v = leak(u_prev, neuron) + current - r * neuron.threshold
    elif neuron.reset == "zero" and neuron.model == "lif":
        v = leak((1 - r) * u_prev, neuron) + current
    elif neuron.reset == "zero":
        v = (1 - r) * (leak(u_prev, neuron) + current)
    else:
        v = leak(u_prev, neuron) + current
    u = np.clip(v, neuron.lo, neuron.hi)
    return u, (u > neuron.threshold).astype(np.int64)


def _im2col(x, layer: Layer):
    """``x`` [S, C, H, W] -> patches [S, Ho*Wo, C*k*k] with zero padding."""
    k, st, p = layer.kernel, layer.stride, layer.padding
    s, c, h, w = x.shape
    _, ho, wo = layer.out_shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    cols = np.empty((s, c, k, k, ho, wo), dtype=np.int64)
    for dy in range(k):
        for dx in range(k):
            cols[:, :, dy, dx] = xp[:, :, dy:dy + st * ho:st, dx:dx + st * wo:st]
    return cols.reshape(s, c * k * k, ho * wo).transpose(0, 2, 1)


def layer_current(layer: Layer, x):
    """Synaptic current ``b + W x`` of a linear or conv2d layer; ``x`` is [S, n_in] int64."""
    if layer.kind == "linear":
        cur = x @ layer.weight.T
    else:
        patches = _im2col(x.reshape((x.shape[0],) + tuple(layer.in_shape)), layer)
        kmat = layer.weight.reshape(layer.out_shape[0], -1)
        cur = (patches @ kmat.T).transpose(0, 2, 1).reshape(x.shape[0], -1)   # (k, y, x)
    return cur + layer.bias_vector()


def spike_pool(layer: Layer, s):
    """Logical OR over k x k windows, stride k (floors a remainder, as PyTorch)."""
    c, h, w = layer.in_shape
    k = layer.kernel
    _, ho, wo = layer.out_shape
    x = s.reshape(s.shape[0], c, h, w)[:, :, :ho * k, :wo * k]
    return x.reshape(s.shape[0], c, ho, k, wo, k).max(axis=(3, 5)).reshape(s.shape[0], -1)


def events_to_dense(events, samples, steps, n_in):
    """Input events ``[n, 4]`` (sample, step, addr, value) -> int64 ``[samples, steps, n_in]``.

    Events for the same address in one step add up (DESIGN.md section 5).
    """
    x = np.zeros((samples, steps, n_in), dtype=np.int64)
    ev = np.asarray(events, dtype=np.int64).reshape(-1, 4)
    np.add.at(x, (ev[:, 0], ev[:, 1], ev[:, 2]), ev[:, 3])
    return x


@dataclass
class Trace:
    """What :func:`run` observed: per layer, spikes ``[S, T, n]`` (and potentials if kept)."""
    spikes: list
    potentials: list | None

    @property
    def output(self):
        return self.spikes[-1]


def run(bundle: Bundle, x, *, keep_potentials=False):
    """Run the whole network on dense inputs ``x`` ``[S, T, n_in]``; return a :class:`Trace`.

    Every sample starts from zero state (u = 0, s = 0), as after the ``first`` event.
    """
    x = np.asarray(x, dtype=np.int64)
    if x.ndim != 3 or x.shape[2] != bundle.input.size:
        raise ValueError(f"Input must have shape [samples, steps, {bundle.input.size}], "
                         f"not {list(x.shape)}")
    samples, steps, _ = x.shape
    spikes = [np.zeros((samples, steps, layer.n_out), dtype=np.int8) for layer in bundle.layers]
    pots = ([np.zeros((samples, steps, layer.n_out), dtype=np.int64) if layer.has_neurons
             else None for layer in bundle.layers] if keep_potentials else None)
    state = [(np.zeros((samples, layer.n_out), dtype=np.int64),
              np.zeros((samples, layer.n_out), dtype=np.int64)) if layer.has_neurons else None
             for layer in bundle.layers]
    for t in range(steps):
        a = x[:, t]
        for index, layer in enumerate(bundle.layers):
            if layer.kind == "flatten":
                pass
            elif layer.kind == "spike_pool":
                a = spike_pool(layer, a)
            else:
                u, s = neuron_step(*state[index], layer_current(layer, a), layer.neuron)
                state[index] = (u, s)
                if keep_potentials:
                    pots[index][:, t] = u
                a = s
            spikes[index][:, t] = a
    return Trace(spikes, pots)


def spike_counts(spikes):
    """Spikes ``[S, T, n]`` -> counts ``[S, n]``."""
    return spikes.astype(np.int64).sum(axis=1)


def predict(output_spikes):
    """Readout: argmax of spike counts over the T steps, ties to the lowest index."""
    return np.argmax(spike_counts(output_spikes), axis=1)


def spike_rows(spikes):
    """Spikes ``[S, T, n]`` -> rows ``[m, 3]`` (sample, step, addr) in stream order."""
    return np.argwhere(spikes != 0).astype(np.int64)


def current_bound(layer: Layer, max_abs_x):
    """Largest ``|I_j|`` any input can produce: ``|b_j| + sum_i |W[j, i]| * max|x|``.

    Taken from the actual weights, so it is tight; duplicate events for one address in a step
    count as one larger value and must stay within ``max|x|`` (DESIGN.md section 4).
    """
    if layer.kind == "linear":
        fan = np.abs(layer.weight).sum(axis=1)
    else:
        # Every output of channel k sees at most the full kernel of k.
        fan = np.repeat(np.abs(layer.weight).reshape(layer.out_shape[0], -1).sum(axis=1),
                        layer.out_shape[1] * layer.out_shape[2])
    return int((np.abs(layer.bias_vector()) + fan * int(max_abs_x)).max(initial=0))


def current_bits(layer: Layer, max_abs_x):
    """Signed width that holds every current of the layer exactly."""
    return max(2, int(current_bound(layer, max_abs_x)).bit_length() + 1)


def make_vectors(bundle: Bundle, events, samples, *, labels=None):
    """Run the golden model on ``events`` and package them as :class:`Vectors`."""
    events = np.asarray(events, dtype=np.int64).reshape(-1, 4)
    steps = bundle.input.steps
    trace = run(bundle, events_to_dense(events, samples, steps, bundle.input.size))
    return Vectors(events, spike_rows(trace.output), samples, steps,
                   None if labels is None else np.asarray(labels),
                   predict(trace.output))


def input_stream(events, samples, steps):
    """Input events as the top's stream (DESIGN.md section 5): ``[(addr, value, last, first)]``.

    Events keep their order within a step; ``first`` goes on a sample's first event and
    ``last`` on each step's final one; a step without events becomes one ``value = 0`` event.
    """
    ev = np.asarray(events, dtype=np.int64).reshape(-1, 4)
    out = []
    order = ev[:, 0] * steps + ev[:, 1]
    bounds = np.searchsorted(order, np.arange(samples * steps + 1))
    for s in range(samples):
        for t in range(steps):
            rows = ev[bounds[s * steps + t]:bounds[s * steps + t + 1]]
            step = [[int(a), int(v), 0, 0] for a, v in rows[:, 2:4]] or [[0, 0, 0, 0]]
            step[-1][2] = 1
            if t == 0:
                step[0][3] = 1
            out += [tuple(e) for e in step]
    return out


def output_stream(spikes):
    """Golden output of the top for spikes ``[S, T, n]``: ``[(addr, spike, last)]``."""
    out = []
    for s in range(spikes.shape[0]):
        for t in range(spikes.shape[1]):
            active = np.flatnonzero(spikes[s, t])
            if len(active):
                out += [(int(a), 1, int(k == len(active) - 1)) for k, a in enumerate(active)]
            else:
                out.append((0, 0, 1))
    return out
