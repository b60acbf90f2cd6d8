"""Event payloads and work counters shared by every engine (DESIGN.md section 5, a contract).

The top's input stream and every stream between layers carry :class:`EventLayout` payloads:
an address, a value (the input's bits for the first layer, ``unsigned(1)`` spikes after it),
``last`` (closes the timestep) and ``first`` (opens a sample; all state is zeroed). The top's
output stream carries :class:`SpikeLayout` payloads. Fields are packed first field in the least
significant bits, as :class:`amaranth.lib.data.StructLayout` does.

Stream rules between layers (the same as the top's output, plus ``first``): a layer emits, per
step, its spiking neurons in strictly ascending address with ``value = 1``, ``last`` on the final
one; a step without spikes is one event with ``value = 0`` and ``last = 1``; the first event
emitted for a sample's first step carries ``first = 1``.
"""
from amaranth import *
from amaranth.lib import data
from amaranth.utils import ceil_log2

__all__ = ["addr_bits", "EventLayout", "SpikeLayout", "EngineCounters"]


def addr_bits(n):
    """Width of an address into ``n`` items: ``max(1, ceil_log2(n))``."""
    return max(1, ceil_log2(n))


class EventLayout(data.StructLayout):
    """``{addr, value, last, first}``: an input event, or a spike event between layers."""
    def __init__(self, n, value_shape=unsigned(1)):
        super().__init__({
            "addr": unsigned(addr_bits(n)),
            "value": value_shape,
            "last": unsigned(1),
            "first": unsigned(1),
        })


class SpikeLayout(data.StructLayout):
    """``{addr, spike, last}``: an output event of the top."""
    def __init__(self, n):
        super().__init__({
            "addr": unsigned(addr_bits(n)),
            "spike": unsigned(1),
            "last": unsigned(1),
        })


class EngineCounters(data.StructLayout):
    """``{steps, sops, ...}``: the work counters of an engine built with ``counters=True``.

    Running totals since reset, 32 bits each, wrapping: ``steps`` counts the steps the engine
    has swept (updated their neurons; a pool: emptied their bitmap into its compressor; their
    output events may still be on their way) and ``sops`` the synaptic operations of its lanes
    (weights visited, the dense baseline's zeros included; 0 in a pool, which has none). An
    engine that counts more adds its own fields after these (``fields``), so every engine's
    counters have ``steps`` and ``sops`` with these shapes.
    """
    def __init__(self, fields=None):
        super().__init__({"steps": unsigned(32), "sops": unsigned(32), **(fields or {})})
