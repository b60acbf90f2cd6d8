"""A queue for memory reads in flight: issue on credit, never stall a memory's output.

A block RAM read cannot be held back once issued: its data comes out a fixed number of cycles
later whether the consumer is ready or not. Gating the read on the consumer's ``ready`` would
put a combinational path from that ``ready`` into the memory's address and enable (docs/conv.md,
"Timing"). Instead the producer issues a read only when the queue has *credit*, a slot for it
counted from registers; the data lands in the slot whenever it arrives, and the consumer stalls
the queue's output freely.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["WORD_QUEUE_DEPTH", "ReadQueue", "full_rate_depth", "read_queue_ref"]


def full_rate_depth(latency):
    """Smallest depth that passes one read per cycle for reads of ``latency`` cycles.

    In steady state the slot popped this cycle was filled last cycle, and ``latency`` reads are
    on their way: ``latency + 1`` slots are spoken for, so a new read needs ``latency + 2``.
    """
    return latency + 2


#: Slots between a one-cycle memory read and a compressor: three pass one word per cycle
#: (:func:`full_rate_depth`), the fourth lets a word wait while the compressor works through a
#: word with several spikes, and four makes the slot index a two-bit counter that wraps by itself.
WORD_QUEUE_DEPTH = 4


def read_queue_ref(issues, pops, *, depth):
    """Reference of the credit rule: the cycles in which a read may be issued.

    ``issues[t]`` says the producer wants to issue in cycle ``t``, ``pops[t]`` that the
    consumer takes a word in cycle ``t`` (if one is there), for reads of latency 1. Returns the
    cycles of the reads issued.
    """
    count = in_flight = 0
    issued = []
    for t, (want, pop) in enumerate(zip(issues, pops)):
        room = count + in_flight < depth
        arrive = in_flight
        popped = int(pop and count > 0)
        if want and room:
            issued.append(t)
        count += arrive - popped
        in_flight = int(want and room)
    return issued


class ReadQueue(wiring.Component):
    """First-in first-out queue for the data of reads issued on credit.

    The producer asserts :attr:`issue` in a cycle where :attr:`room` is high (never otherwise)
    and delivers that read's data on ``i`` some fixed number of cycles later; ``i`` has no
    ``ready``, so the data must not wait. ``room`` is high when the slots held plus the reads in
    flight leave a slot free; it depends on registers only. A word is on ``o`` the cycle after
    it arrives; ``o`` follows the stream rules and may stall for any time.

    Throughput: one read per cycle when ``depth >= full_rate_depth(latency)``.

    Parameters
    ----------
    shape : shape-castable
        The data of a read (and any tags that travel with it).
    depth : :class:`int`
        Slots (:data:`WORD_QUEUE_DEPTH` for a one-cycle read into a compressor).

    Members
    -------
    issue : ``In(1)``
        A read is issued in this cycle (only while ``room`` is high).
    room : ``Out(1)``
        A read issued in this cycle will find a slot.
    i : ``In(stream.Signature(shape, always_ready=True))``
        The data of the reads, in issue order.
    o : ``Out(stream.Signature(shape))``

    FIXME(amaranth-lang/amaranth#1574): ``verilog.convert`` cannot take this component as the
    top (the ``ready`` of an ``always_ready`` stream is a constant); build it inside another
    module, as the engines do.
    """
    def __init__(self, shape, *, depth=WORD_QUEUE_DEPTH):
        try:
            Shape.cast(shape)
        except TypeError:
            raise TypeError(f"Shape must be a shape, not {shape!r}") from None
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise TypeError(f"Depth must be a positive integer, not {depth!r}")
        self._shape, self._depth = shape, depth
        super().__init__({
            "issue": In(1),
            "room": Out(1),
            "i": In(stream.Signature(shape, always_ready=True)),
            "o": Out(stream.Signature(shape)),
        })

    @property
    def depth(self):
        """Slots of the queue."""
        return self._depth

    def elaborate(self, platform):
        m = Module()
        depth = self._depth

        def wrap(index):                             # index + 1 modulo the depth
            if depth & (depth - 1) == 0:
                return (index + 1)[:len(index)]
            return Mux(index == depth - 1, 0, index + 1)

        slots = Array(Signal(self._shape, name=f"slot{n}") for n in range(depth))
        head, tail = Signal(range(depth)), Signal(range(depth))
        count = Signal(range(depth + 1))             # words held
        taken = Signal(range(depth + 1))             # slots spoken for: held or in flight

        pop = self.o.valid & self.o.ready
        m.d.comb += [
            self.room.eq(taken < depth),             # a register and a constant: no adder
            self.o.valid.eq(count != 0),
            self.o.payload.eq(slots[head]),
        ]
        with m.If(self.i.valid):
            m.d.sync += [slots[tail].eq(self.i.payload), tail.eq(wrap(tail))]
        with m.If(pop):
            m.d.sync += head.eq(wrap(head))
        m.d.sync += [
            count.eq(count + self.i.valid - pop),
            taken.eq(taken + self.issue - pop),
        ]
        return m
