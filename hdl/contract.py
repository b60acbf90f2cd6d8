"""The engine contract as a base class: ports, counters and the properties every engine shares.

:class:`EngineBase` builds an engine's signature (``i``, ``o`` and, on request, ``counters``)
and answers the contract's questions (docs/architecture.md, "Engine contract") from a few
attributes its subclass sets, so that :class:`~hdl.linear.LinearEngine`,
:class:`~hdl.conv.Conv2dEngine` and :class:`~hdl.pool.SpikePool` state only what differs.
"""
import numpy as np
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from models.bundle import Layer

from .cycles import activity
from .event import EngineCounters, EventLayout
from .wload import WEIGHT_WRITE

__all__ = ["EngineBase", "check_int", "check_bool", "check_layer", "check_value_shape"]


def check_int(name, value, lo):
    """Validate an integer parameter of at least ``lo`` (``TypeError`` naming it otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        kind = "a positive integer" if lo == 1 else f"an integer of at least {lo}"
        raise TypeError(f"{name} must be {kind}, not {value!r}")
    return value


def check_bool(name, value):
    """Validate a flag (``TypeError`` naming it unless it is a :class:`bool`)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {value!r}")
    return value


def check_layer(layer, kind):
    """Validate that ``layer`` is a :class:`models.bundle.Layer` of ``kind``."""
    if not isinstance(layer, Layer) or layer.kind != kind:
        raise TypeError(f"Layer must be a models.bundle.Layer of kind {kind!r}, "
                        f"not {layer!r:.80}")
    return layer


def check_value_shape(value_shape):
    """The :class:`Shape` of input event values (``TypeError`` if it is not shape-castable)."""
    try:
        return Shape.cast(value_shape)
    except TypeError:
        raise TypeError(f"Value shape must be a shape, not {value_shape!r}") from None


class EngineBase(wiring.Component):
    """An engine's signature and the parts of the contract every engine answers alike.

    Members: ``i`` (events of ``layer.n_in`` addresses with values of ``value_shape``), ``o``
    (spikes of ``layer.n_out`` addresses) and, with ``counters=True``, ``counters`` of the
    ``counters_signature`` (default :class:`hdl.event.EngineCounters`).

    A subclass sets ``_lanes``, ``_updates``, ``_dense`` and ``_current_bits`` where they
    differ from a weightless stage (one lane, no sweep, no baseline, no currents), answers
    :attr:`weight_format`, :attr:`weight_bits_stored`, :attr:`weight_figures` and
    :meth:`estimate_cycles`, and implements ``_work(act)``: per step, the input events the
    engine handles and the synaptic operations it does, for an :func:`hdl.cycles.activity`.
    """
    _lanes = 1
    _updates = None
    _dense = False
    _current_bits = None

    def __init__(self, layer, *, value_shape=unsigned(1), counters=False,
                 counters_signature=None, load=False):
        self._layer = layer
        self._value_shape = value_shape
        self._counters = check_bool("Counters", counters)
        members = {
            "i": In(stream.Signature(EventLayout(layer.n_in, value_shape))),
            "o": Out(stream.Signature(EventLayout(layer.n_out))),
        }
        if counters:
            members["counters"] = Out(counters_signature or EngineCounters())
        if load:
            members["load"] = In(WEIGHT_WRITE)
        super().__init__(members)

    @property
    def layer(self):
        """The layer this engine computes."""
        return self._layer

    @property
    def lanes(self):
        """Accumulate lanes ``L``: synaptic operations (or, for a pool, input events) per
        cycle."""
        return self._lanes

    @property
    def updates(self):
        """Neuron updates per cycle of the sweep (``None`` without neurons)."""
        return self._updates

    @property
    def dense(self):
        """Whether this is the dense baseline (every input and weight visited each step)."""
        return self._dense

    @property
    def current_bits(self):
        """Width of the synaptic current accumulators (``None`` without currents)."""
        return self._current_bits

    @property
    def weight_format(self):
        """Weight memory format (``None`` without weights)."""
        return None

    @property
    def weight_bits_stored(self):
        """Bits of the weight memories (zero without weights)."""
        return 0

    @property
    def weight_bits_dense(self):
        """Bits of the plain dense weights (every weight at ``weight_bits``), for comparison;
        zero without weights."""
        weight = getattr(self._layer, "weight", None)
        if weight is None:
            return 0
        return int(np.size(weight)) * self._layer.weight_bits

    @property
    def weight_figures(self):
        """Further weight figures for reports (none by default)."""
        return {}

    def work(self, active_inputs):
        """Input events and synaptic operations of steps with the given input activity.

        ``active_inputs`` as :func:`hdl.cycles.activity` takes it. Returns ``(events, sops)``:
        numbers for one step, arrays ``[steps]`` for a batch.
        """
        act = activity(active_inputs, self._layer.n_in)
        events, sops = self._work(act)
        return act.answer(events), act.answer(sops)

    def _work(self, act):
        raise NotImplementedError
