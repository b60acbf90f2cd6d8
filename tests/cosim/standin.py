"""A stand-in top with the ports of DESIGN.md section 5, to test the cosimulation kit itself.

:class:`Forwarder` turns each input event into one output event through a FIFO: ``spike`` is
``value != 0``, ``addr`` and ``last`` pass through. For :func:`identity_bundle` (one linear layer,
``W = I``, no leak memory, no reset, threshold 0) and binary input events in ascending address
order within each step, that is exactly the golden model's output, so a correct kit must pass
it. Its ``bug`` variants must fail: ``"drop"`` loses every 5th event, ``"hang"`` stops output
after 20 events, ``"ignore_ready"`` pops the FIFO whether or not the sink is ready.
"""
import numpy as np
from amaranth import *
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.event import EventLayout, SpikeLayout
from models.bundle import Bundle, InputSpec, Layer, Leak, Neuron

__all__ = ["BUGS", "Forwarder", "identity_bundle"]

BUGS = (None, "drop", "hang", "ignore_ready")


class Forwarder(wiring.Component):
    """Forward input events to output spike events through a ``depth``-entry FIFO.

    Members
    -------
    i : ``In(stream.Signature(EventLayout(n)))``
    o : ``Out(stream.Signature(SpikeLayout(n)))``
    """
    def __init__(self, n, *, depth=4, bug=None):
        if bug not in BUGS:
            raise ValueError(f"Bug must be one of {BUGS}, not {bug!r}")
        self._n, self._depth, self._bug = n, depth, bug
        super().__init__({
            "i": In(stream.Signature(EventLayout(n))),
            "o": Out(stream.Signature(SpikeLayout(n))),
        })

    def elaborate(self, platform):
        m = Module()
        out_layout = SpikeLayout(self._n)
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=out_layout.size, depth=self._depth)

        converted = Signal(out_layout)
        m.d.comb += [
            converted.addr.eq(self.i.p.addr),
            converted.spike.eq(self.i.p.value != 0),
            converted.last.eq(self.i.p.last),
        ]
        count = Signal(16)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += count.eq(count + 1)
        dropped = Signal()
        if self._bug == "drop":
            m.d.comb += dropped.eq(count % 5 == 4)
        m.d.comb += [
            q.w_data.eq(converted.as_value()),
            q.w_en.eq(self.i.valid & ~dropped),
            self.i.ready.eq(q.w_rdy),
            self.o.p.eq(q.r_data),
        ]

        sent = Signal(16)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += sent.eq(sent + 1)
        stuck = Const(0) if self._bug != "hang" else (sent >= 20)
        m.d.comb += self.o.valid.eq(q.r_rdy & ~stuck)
        if self._bug == "ignore_ready":
            m.d.comb += q.r_en.eq(1)
        else:
            m.d.comb += q.r_en.eq(self.o.ready & ~stuck)
        return m


def identity_bundle(n, *, steps=4):
    """One linear layer whose output spikes are exactly its binary input events."""
    neuron = Neuron("lif", "none", 0, 4, Leak("mul", beta=0, frac_bits=0))
    layer = Layer("fc1", "linear", (n,), (n,), np.eye(n, dtype=np.int64), None, 2, neuron)
    return Bundle(InputSpec((n,), 1, False, "raw", steps), [layer],
                  provenance={"source": "verif stand-in"})
