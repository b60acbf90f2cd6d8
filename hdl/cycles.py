"""Cycle model of the engines (DESIGN.md section 7), used by reports and benchmarks.

Per step and layer, with ``A`` active synaptic operations, ``S`` input events, ``N`` neurons,
``L`` lanes, ``E`` events per cycle and ``U`` neuron updates per cycle, no engine can beat
:func:`lower_bound`. The ``*_estimate`` functions add what each engine's structure costs on top
(pipeline fills, compressor passes, the busiest lane, the output stream), so a report can say
how many cycles a step will take; benchmarks measure the real figure in simulation.
"""
import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "step_work", "lower_bound", "linear_estimate", "conv_lane_work", "conv_estimate",
    "pool_estimate", "Activity", "activity", "PIPELINE_LATENCY", "CONV_FILL", "CONV_LATENCY",
    "POOL_CLOSE",
]

# Cycles from the last event of a step entering a linear engine to its sweep starting: queue,
# row read, entry read, current read, register, write back.
PIPELINE_LATENCY = 6

# A compressor pass costs one cycle per word, one per active bit, and this fill per step: the
# word fetch and the memory read ahead of the first find-first-set (docs/conv.md).
CONV_FILL = 3
# From a spike leaving the conv engine's input compressor to its last weight written back:
# decoder (4 stages), record read, segment, entry read, current read, add, write.
CONV_LATENCY = 8
# Cycles a spike pool's compressor spends closing a step after its last word.
POOL_CLOSE = 1
# Neuron sweep fill of the conv engine: current and state reads, update, spike word write.
CONV_SWEEP_FILL = 3


def step_work(weight, active_inputs):
    """Active synaptic operations ``A`` of one step: non-zeros in the rows of active inputs."""
    nnz_rows = np.count_nonzero(np.asarray(weight), axis=0)
    return int(nnz_rows[np.asarray(active_inputs, dtype=np.int64)].sum())


def lower_bound(active_sops, events, neurons, *, lanes, events_per_cycle=1, updates=None):
    """``max(ceil(A / L), ceil(S / E), ceil(N / U))``; ``U`` defaults to ``L``."""
    updates = lanes if updates is None else updates
    return max(math.ceil(active_sops / lanes), math.ceil(events / events_per_cycle),
               math.ceil(neurons / updates))


def linear_estimate(active_sops, events, neurons, *, lanes, updates=None):
    """Expected cycles per step of a :class:`hdl.linear.LinearEngine` in steady state.

    Accumulation (one entry per lane per cycle, at least one cycle per event) overlaps the
    previous step's sweep, so a step costs the longer of the two plus the pipeline latency.
    """
    accumulate = max(math.ceil(active_sops / lanes), events) + PIPELINE_LATENCY
    sweep = math.ceil(neurons / (updates or lanes)) + 3
    return max(accumulate, sweep)


def conv_lane_work(layer, channels, *, dense=False):
    """Synaptic operations each input address costs each lane, int64 ``[L, n_in]``.

    ``channels[j]`` are the output channels lane ``j`` owns (:attr:`hdl.conv.ConvPlan.channels`);
    the rows sum to :func:`hdl.conv.conv_work`.
    """
    from .conv import conv_work
    rows = []
    for chans in channels:
        part = _channel_subset(layer, list(chans))
        rows.append(conv_work(part, dense=dense))
    return np.stack(rows) if rows else np.zeros((0, layer.n_in), dtype=np.int64)


def _channel_subset(layer, chans):
    from dataclasses import replace
    _, ho, wo = layer.out_shape
    weight = np.asarray(layer.weight)[chans]
    return replace(layer, weight=weight, out_shape=(len(chans), ho, wo),
                   bias=None if layer.bias is None else np.asarray(layer.bias)[chans])


def conv_estimate(lane_sops, events, *, in_size, out_shape, lanes, out_events, chunk=16):
    """Expected cycles per step of a :class:`hdl.conv.Conv2dEngine` in steady state.

    ``lane_sops`` are the step's synaptic operations of each lane (the busiest lane sets the
    pace), ``events`` the non-zero input positions, ``out_events`` the spikes the step emits.
    The step costs the longest of: the input compressor's pass (one cycle per ``chunk``-bit
    word and per spike) or the busiest lane, plus the decode and accumulate latency; the sweep
    (``ceil(K / L) * Ho * Wo`` neurons per lane); and the output compressor's pass over
    ``K * ceil(Ho * Wo / chunk)`` words plus one cycle per output spike.
    """
    k_out, ho, wo = out_shape
    compress = events + math.ceil(in_size / chunk) + CONV_FILL
    accumulate = max(max(lane_sops, default=0), compress) + CONV_LATENCY
    sweep = math.ceil(k_out / lanes) * ho * wo + CONV_SWEEP_FILL
    output = out_events + k_out * math.ceil(ho * wo / chunk) + CONV_FILL
    return max(accumulate, sweep, output)


def pool_estimate(events, *, out_size, out_events, chunk=16):
    """Expected cycles per step of a :class:`hdl.pool.SpikePool`.

    One cycle per input event into its bitmap; the compressor's pass over the step's
    ``ceil(out_size / chunk)`` words costs one cycle per word or per output spike, whichever
    is more (a word's last spike loads the next word, so a word with spikes costs no cycle of
    its own; the bound assumes the spikes fill as few words as they can), plus one cycle to
    close the step. The two stages overlap across steps (double-buffered). Measured on an
    8x8x8, k = 2 pool: an empty step 9 cycles, 16 spikes 17.
    """
    receive = events
    output = max(math.ceil(out_size / chunk), out_events) + POOL_CLOSE
    return max(receive, output)


class Activity(NamedTuple):
    """Input activity of the steps an engine estimates (made by :func:`activity`)."""
    active: np.ndarray | None   # bool [steps, n_in]; None at an assumed density
    density: float | None       # the assumed rate of every input, or None
    single: bool                # one step (a vector or a density): answers are numbers

    @property
    def steps(self):
        return 1 if self.active is None else len(self.active)

    def per_step(self, values):
        """``values`` (a number, or one per step) as a float array ``[steps]``."""
        return np.broadcast_to(np.asarray(values, dtype=np.float64), (self.steps,))

    def answer(self, values):
        """Per-step ``values`` as the caller asked: a number for one step, else the array."""
        values = np.asarray(values)
        return values[0].item() if self.single else values


def activity(active_inputs, n_in):
    """Read an engine's input activity: what ``estimate_cycles`` and ``work`` take.

    ``active_inputs`` is a 0/1 vector ``[n_in]`` (one step), a batch ``[steps, n_in]``, or a
    number in ``[0, 1]``: every input active at that rate (one expected step; its figures may
    be fractional).
    """
    if np.ndim(active_inputs) == 0:
        density = float(active_inputs)
        if not 0 <= density <= 1:
            raise ValueError(f"Input density must be in [0, 1], not {active_inputs!r}")
        return Activity(None, density, True)
    active = np.asarray(active_inputs)
    if active.ndim > 2 or active.shape[-1] != n_in:
        raise ValueError(f"Active inputs must have shape [{n_in}] or [steps, {n_in}], "
                         f"not {list(active.shape)}")
    return Activity((active != 0).reshape(-1, n_in), None, active.ndim == 1)
