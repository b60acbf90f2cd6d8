"""Cycle model of the engines (DESIGN.md section 7), used by reports and benchmarks."""
import math

import numpy as np

__all__ = ["step_work", "lower_bound", "linear_estimate", "PIPELINE_LATENCY"]

# Cycles from the last event of a step entering a linear engine to its sweep starting: queue,
# row read, entry read, current read, register, write back.
PIPELINE_LATENCY = 6


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
