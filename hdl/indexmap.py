"""Map event addresses to bit indices in registered stages (the front of an event bitmap).

An engine that collects a step's events in a bitmap first turns each input address into the
bit it sets: the convolution engine's position-major order (input ``(c, y, x)`` is bit
``(y * W + x) * C + c``), the pool's window (input ``(c, y, x)`` sets output
``(c, y // k, x // k)``). Such maps are divisions by constants (:func:`hdl.divmod.const_divmod`)
and products: too long for one cycle, so :class:`IndexMap` registers after every stage, and
the event's value and framing ride along.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .event import EventLayout

__all__ = ["IndexMap", "index_map_ref"]


def index_map_ref(stages, n_in, events):
    """Reference: ``events`` ``[(addr, value, last, first)]`` through ``stages`` on integers.

    Only for stages written with operators that integers also have (``//``, ``%``, ``*``,
    ``<``, ``&``): the reference runs the very functions the hardware is built from.
    """
    out = []
    for addr, value, last, first in events:
        fields = {"addr": addr}
        for stage in stages:
            fields = stage(fields)
        keep = bool(value) and addr < n_in and bool(fields.get("keep", 1))
        out.append((fields["addr"] if keep else None, value if keep else 0, last, first))
    return out


class IndexMap(wiring.Component):
    """Events in, the same events with their address mapped to a bit index out.

    Each stage is a function of the previous stage's registered fields (a :class:`dict` of
    values; the first stage gets ``{"addr": ...}``) that returns the next fields; every field is
    registered between stages. The last stage returns ``"addr"``, the bit index (below
    ``n_out`` for every kept event), and may return ``"keep"``: an event it clears (a spike
    that falls outside every window) leaves with ``value = 0``. Events with ``value = 0`` or an
    address ``>= n_in`` also leave with ``value = 0``; ``last`` and ``first`` always pass, so a
    step's framing survives. The address of a ``value = 0`` event is meaningless.

    Latency ``len(stages)`` cycles, throughput one event per cycle. All stages advance together
    while ``o`` is empty or taken (``i.ready = ~o.valid | o.ready``).

    Parameters
    ----------
    n_in : :class:`int`
        Input addresses.
    n_out : :class:`int`
        Bit indices.
    stages : sequence of callables
        ``fields -> fields``, at least one.
    value_shape : shape-castable
        Shape of the event values.

    Members
    -------
    i : ``In(stream.Signature(EventLayout(n_in, value_shape)))``
    o : ``Out(stream.Signature(EventLayout(n_out, value_shape)))``
    """
    def __init__(self, n_in, n_out, stages, *, value_shape=unsigned(1)):
        for name, value in (("Input count", n_in), ("Output count", n_out)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TypeError(f"{name} must be a positive integer, not {value!r}")
        given = stages
        try:
            stages = tuple(stages)
        except TypeError:
            stages = ()
        if not stages or not all(callable(s) for s in stages):
            raise TypeError(f"Stages must be a non-empty sequence of callables, not {given!r}")
        try:
            value_shape = Shape.cast(value_shape)
        except TypeError:
            raise TypeError(f"Value shape must be a shape, not {value_shape!r}") from None
        # A dry run on placeholder signals: a last stage without "addr" fails here, not later.
        fields = {"addr": Signal(EventLayout(n_in)["addr"].shape)}
        for stage in stages:
            fields = {name: Signal(Value.cast(value).shape())
                      for name, value in stage(dict(fields)).items()}
        if "addr" not in fields:
            raise ValueError(f"The last stage must return an 'addr' field, not "
                             f"{sorted(fields)!r}")
        self._n_in, self._n_out, self._stages = n_in, n_out, stages
        super().__init__({
            "i": In(stream.Signature(EventLayout(n_in, value_shape))),
            "o": Out(stream.Signature(EventLayout(n_out, value_shape))),
        })

    @property
    def latency(self):
        """Cycles from an accepted event to its mapped event on ``o``: one per stage."""
        return len(self._stages)

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)

        # The framing travels in a shift register beside the fields; `keep` starts as "a real
        # event" and is ANDed with each stage's verdict.
        valid = self.i.valid
        frame = {"value": self.i.p.value, "last": self.i.p.last, "first": self.i.p.first,
                 "keep": (self.i.p.value != 0) & (self.i.p.addr < self._n_in)}
        fields = {"addr": self.i.p.addr}
        for n, stage in enumerate(self._stages):
            result = stage(dict(fields))
            frame = {**frame, "keep": frame["keep"] & result.pop("keep", 1)}
            fields = {}
            for name, value in result.items():
                value = Value.cast(value)
                fields[name] = Signal(value.shape(), name=f"s{n + 1}_{name}")
                with m.If(advance):
                    m.d.sync += fields[name].eq(value)
            registered = {name: Signal(Value.cast(value).shape(), name=f"s{n + 1}_{name}")
                          for name, value in frame.items()}
            next_valid = Signal(name=f"s{n + 1}_valid")
            with m.If(advance):
                m.d.sync += [registered[name].eq(value) for name, value in frame.items()]
                m.d.sync += next_valid.eq(valid)
            frame, valid = registered, next_valid

        m.d.comb += [
            self.o.valid.eq(valid),
            self.o.p.addr.eq(fields["addr"]),
            self.o.p.value.eq(Mux(frame["keep"], frame["value"], 0)),
            self.o.p.last.eq(frame["last"]),
            self.o.p.first.eq(frame["first"]),
        ]
        return m
