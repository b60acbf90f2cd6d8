"""Spike pooling between layers: logical OR over k x k windows, stride k (DESIGN.md section 3).

``flatten`` needs no hardware: a convolution emits its spikes in ``(k, y, x)`` row-major order,
which already is the flattened order.
"""
import math

import numpy as np
from amaranth import *
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from models.bundle import Layer

from .compress import SpikeCompressor
from .conv import CHUNK, const_divmod, word_queue
from .cycles import activity, pool_estimate
from .event import EngineCounters, EventLayout
from .linear import check_bool

__all__ = ["SpikePool", "pool_ref"]


def pool_ref(layer, addrs):
    """Reference: the sorted output addresses that the input spike addresses ``addrs`` set."""
    _, h, w = layer.in_shape
    _, ho, wo = layer.out_shape
    k = layer.kernel
    out = set()
    for a in addrs:
        c, r = divmod(a, h * w)
        y, x = divmod(r, w)
        if y // k < ho and x // k < wo:
            out.add(c * ho * wo + (y // k) * wo + x // k)
    return sorted(out)


class SpikePool(wiring.Component):
    """``spike_pool`` as a stream stage: each step's spikes, OR-pooled, in ascending address.

    Input events of a step may come in any order (and repeat); each spike sets its window's bit
    in a bitmap of the ``C * (H // k) * (W // k)`` outputs (one event per cycle). After the step's
    ``last`` event, a :class:`~hdl.compress.SpikeCompressor` emits the set bits in ascending
    address, ``CHUNK`` outputs per cycle and one cycle per spike, with ``last`` on the final one;
    an empty step gives one ``value = 0, last = 1`` event, and ``first`` on an input step gives
    ``first`` on its first output event. Two bitmaps alternate, so the next step is received while
    the previous one is emitted. Rows and columns beyond the last whole window are dropped, as
    PyTorch floors. After reset the bitmaps are cleared (``ceil(n_out / CHUNK)`` cycles) before
    input is accepted. Input addresses ``>= C * H * W`` are ignored.

    Parameters
    ----------
    layer : :class:`models.bundle.Layer`
        A ``spike_pool`` layer.
    counters : :class:`bool`
        Add the ``counters`` member (:class:`hdl.event.EngineCounters`: ``steps`` counts the
        bitmaps emptied into the compressor, ``sops`` stays 0).

    Members
    -------
    i : ``In(stream.Signature(EventLayout(C * H * W)))``
    o : ``Out(stream.Signature(EventLayout(C * (H // k) * (W // k))))``
    counters : ``Out(EngineCounters())``, only with ``counters=True``

    The engine contract (docs/architecture.md, "Engine contract"), as a pool has it: one lane
    (one input event per cycle), no weights (:attr:`weight_format` ``None``, no stored bits),
    no currents and no neuron sweep (:attr:`current_bits` and :attr:`updates` ``None``), no
    dense baseline; :meth:`work` and :meth:`estimate_cycles` as every engine.
    """
    def __init__(self, layer, *, counters=False):
        if not isinstance(layer, Layer) or layer.kind != "spike_pool":
            raise TypeError(f"Layer must be a models.bundle.Layer of kind 'spike_pool', "
                            f"not {layer!r:.80}")
        if len(layer.in_shape) != 3:
            raise ValueError(f"Input shape must be (C, H, W), not {layer.in_shape!r}")
        c_in, h, w = layer.in_shape
        k = layer.kernel
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise TypeError(f"Kernel must be a positive integer, not {k!r}")
        if h // k < 1 or w // k < 1:
            raise ValueError(f"Kernel must be at most the input height and width "
                             f"({min(h, w)}), not {k}")
        if tuple(layer.out_shape) != (c_in, h // k, w // k):
            raise ValueError(f"Output shape must be {(c_in, h // k, w // k)!r}, "
                             f"not {tuple(layer.out_shape)!r}")
        self._layer = layer
        self._counters = check_bool("Counters", counters)
        members = {
            "i": In(stream.Signature(EventLayout(layer.n_in))),
            "o": Out(stream.Signature(EventLayout(layer.n_out))),
        }
        if counters:
            members["counters"] = Out(EngineCounters())
        super().__init__(members)

    @property
    def layer(self):
        """The layer this engine computes."""
        return self._layer

    @property
    def lanes(self):
        """One: the pool takes one input event per cycle."""
        return 1

    @property
    def updates(self):
        """``None``: a pool has no neurons to sweep."""
        return None

    @property
    def current_bits(self):
        """``None``: a pool accumulates no currents."""
        return None

    @property
    def dense(self):
        """``False``: a pool has no dense baseline."""
        return False

    @property
    def weight_format(self):
        """``None``: a pool has no weights."""
        return None

    @property
    def weight_bits_stored(self):
        """Zero: a pool has no weights."""
        return 0

    @property
    def weight_bits_dense(self):
        """Zero: a pool has no weights."""
        return 0

    @property
    def weight_figures(self):
        """No further weight figures."""
        return {}

    def work(self, active_inputs):
        """Input events and synaptic operations (none) of steps with the given activity.

        ``active_inputs`` as :func:`hdl.cycles.activity` takes it. Returns ``(events, sops)``:
        numbers for one step, arrays ``[steps]`` for a batch.
        """
        act = activity(active_inputs, self._layer.n_in)
        events = self._events(act)
        return act.answer(events), act.answer(np.zeros(len(events)))

    def estimate_cycles(self, active_inputs, out_events):
        """Cycles of steps with the given input activity: ``(lower_bound, estimate)``.

        The bound is one cycle per input event and per output spike (``out_events``, a number
        or one per step); the estimate :func:`hdl.cycles.pool_estimate`. Numbers for one step,
        int64 arrays ``[steps]`` for a batch.
        """
        act = activity(active_inputs, self._layer.n_in)
        rows = []
        for e, o in zip(self._events(act), act.per_step(out_events)):
            e, o = math.ceil(e), math.ceil(o)
            rows.append((max(e, o), pool_estimate(e, out_size=self._layer.n_out, out_events=o)))
        return tuple(act.answer(np.array(col, dtype=np.int64)) for col in zip(*rows))

    def _events(self, act):
        if act.density is not None:
            return np.array([act.density * self._layer.n_in])
        return np.count_nonzero(act.active, axis=1)

    def elaborate(self, platform):
        m = Module()
        layer = self._layer
        c_in, h, w = layer.in_shape
        _, ho, wo = layer.out_shape
        k = layer.kernel
        n_in, n_out = layer.n_in, layer.n_out
        words = -(-n_out // CHUNK)

        clearing = Signal(init=1)
        clr = Signal(range(words))
        with m.If(clearing):
            m.d.sync += clr.eq(clr + 1)
            with m.If(clr == words - 1):
                m.d.sync += clearing.eq(0)

        bm_wr, bm_rd = [], []
        for b in range(2):
            mem = memory.Memory(shape=CHUNK, depth=words, init=[])
            m.submodules[f"bits{b}"] = mem
            bm_wr.append(mem.write_port())
            bm_rd.append(mem.read_port(transparent_for=(bm_wr[b],)))

        # Receive: address -> (c, r) -> (y, x) -> output bit -> read word -> set bit.
        # A buffer is claimed when its step's last event is accepted (the receiver moves on to
        # the other one) and full when that event has passed the pipeline (the drain may start).
        wb = Signal()
        claimed = [Signal(name=f"claimed{b}") for b in range(2)]
        full = [Signal(name=f"full{b}") for b in range(2)]
        first = [Signal(name=f"first{b}") for b in range(2)]
        m.d.comb += self.i.ready.eq(~clearing & ~Mux(wb, claimed[1], claimed[0]))
        accept = self.i.valid & self.i.ready
        p1_valid, p1_keep, p1_last, p1_first, p1_buf = (Signal(name=f"p1_{n}") for n in
                                                        ("valid", "keep", "last", "first", "buf"))
        p1_addr = Signal.like(self.i.p.addr)
        m.d.sync += [p1_valid.eq(accept), p1_keep.eq(self.i.p.value & (self.i.p.addr < n_in)),
                     p1_last.eq(self.i.p.last), p1_first.eq(self.i.p.first), p1_buf.eq(wb),
                     p1_addr.eq(self.i.p.addr)]
        with m.If(accept & self.i.p.last):
            m.d.sync += wb.eq(~wb)
            for b in range(2):
                with m.If(wb == b):
                    m.d.sync += claimed[b].eq(1)

        c_q, r_q = const_divmod(p1_addr, h * w, 2 ** len(p1_addr) - 1)
        p2_valid, p2_keep, p2_last, p2_first, p2_buf = (Signal(name=f"p2_{n}") for n in
                                                        ("valid", "keep", "last", "first", "buf"))
        p2_c, p2_r = Signal(range(c_in)), Signal(range(h * w))
        m.d.sync += [p2_valid.eq(p1_valid), p2_keep.eq(p1_keep), p2_last.eq(p1_last),
                     p2_first.eq(p1_first), p2_buf.eq(p1_buf), p2_c.eq(c_q), p2_r.eq(r_q)]

        y_q, x_q = const_divmod(p2_r, w, h * w - 1)
        oy_q, _ = const_divmod(y_q, k, h - 1)
        ox_q, _ = const_divmod(x_q, k, w - 1)
        p3_valid, p3_keep, p3_last, p3_first, p3_buf = (Signal(name=f"p3_{n}") for n in
                                                        ("valid", "keep", "last", "first", "buf"))
        p3_c, p3_oy, p3_ox = Signal.like(p2_c), Signal(range(h // k + 1)), \
            Signal(range(w // k + 1))
        m.d.sync += [p3_valid.eq(p2_valid), p3_keep.eq(p2_keep), p3_last.eq(p2_last),
                     p3_first.eq(p2_first), p3_buf.eq(p2_buf), p3_c.eq(p2_c),
                     p3_oy.eq(oy_q), p3_ox.eq(ox_q)]

        p4_valid, p4_set, p4_last, p4_first, p4_buf = (Signal(name=f"p4_{n}") for n in
                                                       ("valid", "set", "last", "first", "buf"))
        p4_out = Signal(range(n_out))
        m.d.sync += [p4_valid.eq(p3_valid),
                     p4_set.eq(p3_keep & (p3_oy < ho) & (p3_ox < wo)),
                     p4_last.eq(p3_last), p4_first.eq(p3_first), p4_buf.eq(p3_buf),
                     p4_out.eq(p3_c * (ho * wo) + p3_oy * wo + p3_ox)]

        # p4 reads the word, p5 writes it back with the bit set; the read port is transparent,
        # so back-to-back events on one word see each other.
        p5_set, p5_buf = Signal(), Signal()
        p5_out = Signal.like(p4_out)
        m.d.sync += [p5_set.eq(p4_valid & p4_set), p5_buf.eq(p4_buf), p5_out.eq(p4_out)]
        step_first = Signal()
        with m.If(p4_valid):
            with m.If(p4_last):
                m.d.sync += step_first.eq(0)
                for b in range(2):
                    with m.If(p4_buf == b):
                        # This event's write lands next cycle; the drain reads after it.
                        m.d.sync += [full[b].eq(1), first[b].eq(step_first | p4_first)]
            with m.Else():
                m.d.sync += step_first.eq(step_first | p4_first)

        # Drain: words of the full buffer into the compressor, each cleared after its read.
        rb = Signal()
        busy = Signal()
        m.submodules.compressor = comp = SpikeCompressor(width=CHUNK, n=words * CHUNK)
        fw = Signal(range(words))
        f_valid, f_index, f_first = Signal(), Signal(range(words)), Signal()
        f_word = Signal.like(comp.i.payload)
        issue = busy & word_queue(m, comp.i, f_word, f_valid, name="words")
        m.d.sync += [f_valid.eq(issue), f_index.eq(fw),
                     f_first.eq(Mux(rb, first[1], first[0]) & (fw == 0))]
        with m.If(issue):
            m.d.sync += fw.eq(fw + 1)
            with m.If(fw == words - 1):
                m.d.sync += [busy.eq(0), fw.eq(0)]
        with m.If(~busy & ~clearing & Mux(rb, full[1], full[0]) & ~f_valid):
            m.d.sync += busy.eq(1)
        clr_valid, clr_addr = Signal(), Signal.like(fw)
        m.d.sync += [clr_valid.eq(issue), clr_addr.eq(fw)]
        with m.If(f_valid & (f_index == words - 1)):      # the buffer's last word is read
            m.d.sync += rb.eq(~rb)
            if self._counters:
                m.d.sync += self.counters.steps.eq(self.counters.steps + 1)
            for b in range(2):
                with m.If(rb == b):
                    m.d.sync += [claimed[b].eq(0), full[b].eq(0)]
        m.d.comb += [
            f_word.bits.eq(Mux(rb, bm_rd[1].data, bm_rd[0].data)),
            f_word.index.eq(f_index),
            f_word.end.eq(f_index == words - 1),
            f_word.first.eq(f_first),
        ]

        for b in range(2):
            draining = (busy | f_valid) & (rb == b)
            m.d.comb += bm_rd[b].addr.eq(Mux(draining, fw, p4_out >> 4))
            with m.If(clearing):
                m.d.comb += [bm_wr[b].addr.eq(clr), bm_wr[b].en.eq(1)]
            with m.Elif(p5_set & (p5_buf == b)):
                m.d.comb += [bm_wr[b].addr.eq(p5_out >> 4),
                             bm_wr[b].data.eq(Mux(p5_buf, bm_rd[1].data, bm_rd[0].data)
                                              | (Const(1, CHUNK) << p5_out[:4])),
                             bm_wr[b].en.eq(1)]
            with m.Elif(clr_valid & (rb == b)):
                m.d.comb += [bm_wr[b].addr.eq(clr_addr), bm_wr[b].en.eq(1)]

        m.d.comb += [
            self.o.valid.eq(comp.o.valid),
            self.o.p.addr.eq(comp.o.p.addr),
            self.o.p.value.eq(comp.o.p.value),
            self.o.p.last.eq(comp.o.p.last),
            self.o.p.first.eq(comp.o.p.first),
            comp.o.ready.eq(self.o.ready),
        ]
        return m
