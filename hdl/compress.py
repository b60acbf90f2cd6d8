"""Spike compressor: dense spike words in, a stream of active addresses out.

This is the "spike compression" of sparsity-aware accelerators: the neuron sweep writes one word
of ``width`` spike bits per cycle; the compressor turns them into events for the next layer, so
that the next layer only does work for neurons that fired.
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .event import EventLayout
from .lane import few_bits
from .lsb import clear_lowest, lowest_set_bit
from .queue import ReadQueue

__all__ = ["SpikeWord", "SpikeCompressor", "compress_ref"]


class SpikeWord(data.StructLayout):
    """``{bits, index, end, first}``: spikes of neurons ``index * width + b`` for bit ``b``.

    ``end`` marks the last word of a timestep, ``first`` the first word of a sample's first step.
    """
    def __init__(self, width, words):
        super().__init__({
            "bits": unsigned(width),
            "index": unsigned(max(1, ceil_log2(words))),
            "end": unsigned(1),
            "first": unsigned(1),
        })


def compress_ref(words, width):
    """Reference: the events the compressor emits for ``words`` ``[(bits, index, end, first)]``.

    Returns ``[(addr, value, last, first)]`` as in :class:`hdl.event.EventLayout`.
    """
    events, step, first = [], [], False
    for bits, index, end, wfirst in words:
        first = first or bool(wfirst)
        step += [index * width + b for b in range(width) if bits >> b & 1]
        if end:
            if step:
                events += [(a, 1, int(n == len(step) - 1), int(first and n == 0))
                           for n, a in enumerate(step)]
            else:
                events.append((0, 0, 1, int(first)))
            step, first = [], False
    return events


class SpikeCompressor(wiring.Component):
    """Turn spike words into ascending address events, one event per cycle.

    Throughput: one cycle per spike, or one cycle for a word without spikes, plus one cycle to
    close each step. The last
    spike of a step carries ``last``; a step without spikes gives one ``value = 0, last = 1``
    event. The event is held back one spike so that ``last`` can be known, so latency is one
    spike (or the end of the step).

    Parameters
    ----------
    width : :class:`int`
        Spike bits per word (at most :data:`hdl.lsb.CHUNK` keeps the find-first-set within one
        iCE40 cycle).
    n : :class:`int`
        Number of neurons; addresses ``>= n`` must never be set.

    Members
    -------
    i : ``In(stream.Signature(SpikeWord(width, ceil(n / width))))``
    o : ``Out(stream.Signature(EventLayout(n)))``
    """
    def __init__(self, *, width, n):
        for name, value in (("Width", width), ("Neuron count", n)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TypeError(f"{name} must be a positive integer, not {value!r}")
        if width > 64:
            raise ValueError(f"Width must be at most 64, not {width}")
        self._width, self._n = width, n
        self._words = -(-n // width)
        super().__init__({
            "i": In(stream.Signature(SpikeWord(width, self._words))),
            "o": Out(stream.Signature(EventLayout(n))),
        })

    @property
    def width(self):
        return self._width

    def elaborate(self, platform):
        m = Module()
        width = self._width

        w_valid = Signal()
        w_bits = Signal(width, reset_less=True)
        w_index = Signal.like(self.i.p.index, reset_less=True)
        w_end = Signal(reset_less=True)
        pend_valid = Signal()
        pend_addr = Signal.like(self.o.p.addr, reset_less=True)
        first_pending = Signal()

        lsb, spikes_left = lowest_set_bit(m, w_bits)        # the next spike of the word
        new_addr = (w_index * width + lsb)[:len(pend_addr)]

        # The events leave through a two-slot queue that takes them on credit: whether an event
        # may go out is a register (`room`), so the output's `ready` (the next engine's) reaches
        # no decision of the compressor. Two slots pass one event per cycle, and an event is on
        # `o` the cycle after it is made, as from an output register.
        m.submodules.out = out = ReadQueue(self.o.p.shape(), depth=2)
        wiring.connect(m, out.o, wiring.flipped(self.o))
        out_free = out.room
        emit = Signal()
        event = Signal.like(self.o.p)
        m.d.comb += [out.issue.eq(emit), out.i.valid.eq(emit), out.i.p.eq(event)]

        consumed = Signal()
        with m.If(w_valid & spikes_left):
            with m.If(~pend_valid | out_free):
                with m.If(pend_valid):
                    m.d.comb += [
                        emit.eq(1),
                        event.addr.eq(pend_addr),
                        event.value.eq(1),
                        event.last.eq(0),
                        event.first.eq(first_pending),
                    ]
                    m.d.sync += first_pending.eq(0)
                rest = clear_lowest(w_bits)
                m.d.sync += [
                    pend_valid.eq(1),
                    pend_addr.eq(new_addr),
                    w_bits.eq(rest),
                ]
                # The word's last spike: take the next word now (an end word still has to
                # close the step, so it stays). Whether it is the last is a carry-free bit
                # count, not `rest == 0`: this decision is the compressor's `ready`.
                last_spike = few_bits(w_bits, 1) if width <= 16 else rest == 0
                m.d.comb += consumed.eq(last_spike & ~w_end)
        with m.Elif(w_valid & w_end):
            with m.If(out_free):
                m.d.comb += [
                    emit.eq(1),
                    event.addr.eq(Mux(pend_valid, pend_addr, 0)),
                    event.value.eq(pend_valid),
                    event.last.eq(1),
                    event.first.eq(first_pending),
                ]
                m.d.sync += [first_pending.eq(0), pend_valid.eq(0)]
                m.d.comb += consumed.eq(1)
        with m.Elif(w_valid):
            m.d.comb += consumed.eq(1)

        # A skid register in front of the word register: `i.ready` is a register (no word
        # waits in the skid), so the compressor's decision of this cycle does not reach the
        # producer's queue; a word that arrives while the word register is busy waits there.
        s_valid = Signal()
        s_word = Signal.like(self.i.p, reset_less=True)
        src = Signal.like(self.i.p)
        m.d.comb += [self.i.ready.eq(~s_valid), src.eq(Mux(s_valid, s_word, self.i.p))]
        src_valid = s_valid | self.i.valid
        with m.If(~w_valid | consumed):
            m.d.sync += [w_valid.eq(src_valid), s_valid.eq(0)]
            with m.If(src_valid):
                m.d.sync += [
                    w_bits.eq(src.bits),
                    w_index.eq(src.index),
                    w_end.eq(src.end),
                ]
                with m.If(src.first):
                    m.d.sync += first_pending.eq(1)
        with m.Elif(self.i.valid & ~s_valid):
            m.d.sync += [s_valid.eq(1), s_word.eq(self.i.p)]

        return m
