"""A small stand-in accelerator with the ports of DESIGN.md section 5, for the host link tests.

It runs a bundle whose only layer is ``linear``, with every neuron in registers: currents add
up per input event (all neurons in parallel), the step's update runs in one cycle on ``last``,
and the spikes leave lowest address first. Optional pseudo-random stalls (an LFSR) withhold
``i.ready`` and delay ``o.valid``, so the host link sees backpressure from the accelerator
side. It is proven against :mod:`models.golden` through the host link tests.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.event import EventLayout, SpikeLayout
from hdl.neuron import neuron_update
from models.golden import current_bits

__all__ = ["StandIn"]


class StandIn(wiring.Component):
    """One linear layer of a bundle, event-driven, spike for spike equal to the golden model.

    Parameters
    ----------
    bundle : :class:`models.bundle.Bundle`
        A bundle with exactly one layer, ``linear``.
    stall : :class:`bool`
        Withhold ``i.ready`` and ``o.valid`` on pseudo-random cycles.

    Members
    -------
    i : ``In(stream.Signature(EventLayout(n_in, value_shape)))``
    o : ``Out(stream.Signature(SpikeLayout(n_out)))``
    """
    def __init__(self, bundle, *, stall=False):
        if len(bundle.layers) != 1 or bundle.layers[0].kind != "linear":
            raise ValueError(f"Stand-in runs one linear layer, not "
                             f"{[layer.kind for layer in bundle.layers]}")
        self._bundle, self._stall = bundle, stall
        spec = bundle.input
        value_shape = signed(spec.bits) if spec.signed else unsigned(spec.bits)
        layer = bundle.layers[0]
        super().__init__({
            "i": In(stream.Signature(EventLayout(layer.n_in, value_shape))),
            "o": Out(stream.Signature(SpikeLayout(layer.n_out))),
        })

    def elaborate(self, platform):
        m = Module()
        layer = self._bundle.layers[0]
        spec = self._bundle.input
        max_x = max(abs(v) for v in spec.value_range)
        cbits = current_bits(layer, max_x)
        p = layer.neuron.potential_bits
        n_out = layer.n_out

        cur = [Signal(signed(cbits), name=f"cur{j}") for j in range(n_out)]
        pot = [Signal(signed(p), name=f"pot{j}") for j in range(n_out)]
        spk = Signal(n_out)
        pending = Signal(n_out)

        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]))
        go = Signal()
        m.d.comb += go.eq(lfsr[0] | lfsr[7] if self._stall else 1)

        ev = self.i.p
        with m.FSM():
            with m.State("Accumulate"):
                m.d.comb += self.i.ready.eq(go)
                with m.If(self.i.valid & self.i.ready):
                    for j in range(n_out):
                        weights = Array(Const(int(w), signed(layer.weight_bits))
                                        for w in layer.weight[j])
                        m.d.sync += cur[j].eq(cur[j] + weights[ev.addr] * ev.value)
                    with m.If(ev.first):
                        m.d.sync += [x.eq(0) for x in pot] + [spk.eq(0)]
                    with m.If(ev.last):
                        m.next = "Update"
            with m.State("Update"):
                bias = layer.bias_vector()
                new = []
                for j in range(n_out):
                    u, s = neuron_update(layer.neuron, pot[j], spk[j], cur[j] + int(bias[j]))
                    m.d.sync += [pot[j].eq(u), cur[j].eq(0)]
                    new.append(s)
                m.d.sync += [spk.eq(Cat(*new)), pending.eq(Cat(*new))]
                m.next = "Emit"
            with m.State("Emit"):
                lowest = pending & -pending
                rest = pending & ~lowest
                addr = Signal.like(self.o.p.addr)
                for j in reversed(range(n_out)):
                    with m.If(pending[j]):
                        m.d.comb += addr.eq(j)
                valid = Signal()
                with m.If(~self.o.valid & go):
                    m.d.sync += valid.eq(1)
                m.d.comb += [self.o.valid.eq(valid), self.o.p.addr.eq(addr),
                             self.o.p.spike.eq(pending != 0), self.o.p.last.eq(rest == 0)]
                with m.If(self.o.valid & self.o.ready):
                    m.d.sync += [valid.eq(0), pending.eq(rest)]
                    with m.If(rest == 0):
                        m.next = "Accumulate"
        return m
