"""Event bitmap: a step's events in any order in, the step's bitmap out as spike words.

Engines whose input events come in any order (and may repeat) collect a step's events in a
bitmap, then scan it in ascending order with a :class:`~hdl.compress.SpikeCompressor`:
``IndexMap -> EventBitmap -> SpikeCompressor``. Two buffers alternate, so the next step is
received while the previous one is scanned. With multi-bit input values (or in a dense
baseline) a value memory beside the bits adds up the values of an address, and the engine looks
the sums up by address as the compressor hands the addresses out.
"""
from amaranth import *
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .compress import SpikeWord
from .event import EventLayout
from .lsb import CHUNK
from .queue import WORD_QUEUE_DEPTH, ReadQueue

__all__ = ["EventBitmap", "bitmap_ref"]


def _wrap(value, shape):
    mask = (1 << shape.width) - 1
    value &= mask
    if shape.signed and value >> (shape.width - 1):
        value -= 1 << shape.width
    return value


def bitmap_ref(events, n, *, chunk=CHUNK, value_shape=unsigned(1), dense=False):
    """Reference: the words :class:`EventBitmap` emits for ``events``, and the value sums.

    ``events`` are ``[(index, value, last, first)]`` as they enter ``i``. Returns
    ``(words, sums)``: ``words`` ``[(bits, index, end, first)]`` as they leave ``o`` (every step
    has all ``ceil(n / chunk)`` words; ``first`` on word 0 of a step any of whose events had
    ``first``; every bit below ``n`` set in the dense baseline), and per step a :class:`dict`
    ``{index: sum}`` of the values that the value memory holds, wrapped to ``value_shape``.
    """
    value_shape = Shape.cast(value_shape)
    words_per_step = -(-n // chunk)
    words, sums, bits, step_sums, first = [], [], 0, {}, False
    for index, value, last, efirst in events:
        first = first or bool(efirst)
        if value and 0 <= index < n:
            bits |= 1 << index
            step_sums[index] = _wrap(step_sums.get(index, 0) + value, value_shape)
        if last:
            if dense:
                bits = (1 << n) - 1
            words += [(bits >> (w * chunk) & ((1 << chunk) - 1), w,
                       int(w == words_per_step - 1), int(first and w == 0))
                      for w in range(words_per_step)]
            sums.append(step_sums)
            bits, step_sums, first = 0, {}, False
    return words, sums


class EventBitmap(wiring.Component):
    """Collect a step's events in a bitmap; emit it as spike words, ``chunk`` bits per word.

    *Receive*: each event on ``i`` with a non-zero value and an index below ``n`` sets bit
    ``index`` of the receiving buffer (same-index events OR), and adds its value into the value
    memory (same-index values add, wrapping to ``value_shape``). One event per cycle, any order:
    a registered stage, a word read and a write back; the read ports are transparent, so
    back-to-back events on one word see each other. An event with ``last`` closes the step: the
    buffer is *claimed* (``i`` moves to the other buffer, or waits for it) and is *full* once
    that event has been read. ``first`` on any event of the step gives ``first`` on its word 0.

    *Emit*: the words of a full buffer, ``ceil(n / chunk)`` of them, ascending, ``end`` on the
    last, go out on ``o`` through a :class:`~hdl.queue.ReadQueue` (reads are issued on credit,
    so nothing runs from ``o.ready`` into a memory). Each word is cleared as it is read. The
    words of a step leave from five cycles after its ``last`` event was accepted, one per cycle
    while ``o`` takes them.

    *Look up* (only with a value memory, see :attr:`keeps_values`): ``i_lookup`` takes the
    events a :class:`~hdl.compress.SpikeCompressor` makes of the words (ascending addresses of
    set bits, the empty-step marker), ``o_lookup`` gives them back with ``value`` replaced by
    the step's sum at that address (0 for the marker; a sum may be 0 too), two cycles later,
    one per cycle; each sum is cleared as it is read. The buffer is free for the receiver again
    once the step's ``last`` lookup is done (without a value memory: once its last word is
    read).

    After reset both buffers are cleared (``ceil(n / chunk)`` cycles, ``n`` with a value
    memory) before ``i`` is ready.

    Parameters
    ----------
    n : :class:`int`
        Bits (indices ``0 .. n - 1``).
    value_shape : shape-castable
        Shape of the event values. ``unsigned(1)``: bits only, no value memory.
    chunk : :class:`int`
        Bits per word, a power of two (:data:`hdl.lsb.CHUNK`: what a compressor scans per cycle).
    dense : :class:`bool`
        Dense baseline: no bit memory, every word has every bit below ``n`` set; the value
        memory is kept whatever ``value_shape`` is.

    Members
    -------
    i : ``In(stream.Signature(EventLayout(n, value_shape)))``
        Events, ``addr`` being the bit index.
    o : ``Out(stream.Signature(SpikeWord(chunk, ceil(n / chunk))))``
    i_lookup : ``In(stream.Signature(EventLayout(n)))``, only with a value memory
    o_lookup : ``Out(stream.Signature(EventLayout(n, value_shape)))``, only with a value memory
    """
    def __init__(self, n, *, value_shape=unsigned(1), chunk=CHUNK, dense=False):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise TypeError(f"Bit count must be a positive integer, not {n!r}")
        try:
            value_shape = Shape.cast(value_shape)
        except TypeError:
            raise TypeError(f"Value shape must be a shape, not {value_shape!r}") from None
        if value_shape.width < 1 or (value_shape.signed and value_shape.width < 2):
            raise ValueError(f"Value shape must be at least 1 bit wide (2 if signed), "
                             f"not {value_shape!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise TypeError(f"Chunk must be a positive integer, not {chunk!r}")
        if chunk & (chunk - 1):
            raise ValueError(f"Chunk must be a power of two, not {chunk}")
        if not isinstance(dense, bool):
            raise TypeError(f"Dense must be a bool, not {dense!r}")
        self._n, self._value_shape, self._chunk, self._dense = n, value_shape, chunk, dense
        self._words = -(-n // chunk)
        members = {
            "i": In(stream.Signature(EventLayout(n, value_shape))),
            "o": Out(stream.Signature(SpikeWord(chunk, self._words))),
        }
        if self.keeps_values:
            members["i_lookup"] = In(stream.Signature(EventLayout(n)))
            members["o_lookup"] = Out(stream.Signature(EventLayout(n, value_shape)))
        super().__init__(members)

    @property
    def n(self):
        """Bits of the bitmap."""
        return self._n

    @property
    def words(self):
        """Words per step: ``ceil(n / chunk)``."""
        return self._words

    @property
    def keeps_values(self):
        """Whether there is a value memory (multi-bit values, or the dense baseline)."""
        return self._dense or self._value_shape != unsigned(1)

    def elaborate(self, platform):
        m = Module()
        n, chunk, words, vshape = self._n, self._chunk, self._words, self._value_shape
        chunk_bits = exact_log2(chunk)               # bit index = word * chunk + bit in word
        keep_bits, keep_values = not self._dense, self.keeps_values

        # Buffer life: claimed (its last event accepted) -> full (that event read: the scan
        # may start) -> scanned (its words being fetched) -> free again when released.
        claimed, full, scanned, first = Signal(2), Signal(2), Signal(2), Signal(2)
        wb = Signal()                                # buffer being received
        rb = Signal()                                # next buffer to scan
        lb = Signal()                                # buffer being looked up

        bits_wr, bits_rd, vals_wr, vals_rd = [], [], [], []
        for b in range(2):
            if keep_bits:
                mem = m.submodules[f"bits{b}"] = memory.Memory(shape=chunk, depth=words, init=[])
                bits_wr.append(mem.write_port())
                bits_rd.append(mem.read_port(transparent_for=(bits_wr[b],)))
            if keep_values:
                mem = m.submodules[f"values{b}"] = memory.Memory(shape=vshape, depth=n, init=[])
                vals_wr.append(mem.write_port())
                vals_rd.append(mem.read_port(transparent_for=(vals_wr[b],)))

        # ---- Clear after reset: every word (and value) of both buffers. -------------------
        clear_depth = max(words if keep_bits else 1, n if keep_values else 1)
        clearing = Signal(init=1)
        clear_addr = Signal(range(clear_depth))
        with m.If(clearing):
            m.d.sync += clear_addr.eq(clear_addr + 1)
            with m.If(clear_addr == clear_depth - 1):
                m.d.sync += clearing.eq(0)

        # ---- Receive: take the event -> read its word -> write it back with the bit set. ----
        rx_stage = data.StructLayout({"set": 1, "close": 1, "buf": 1, "index": range(n),
                                      "value": vshape})
        rx_read, rx_write = Signal(rx_stage), Signal(rx_stage)
        m.d.comb += self.i.ready.eq(~clearing & ~claimed.bit_select(wb, 1))
        accept = self.i.valid & self.i.ready
        m.d.sync += [
            rx_read.set.eq(accept & (self.i.p.value != 0) & (self.i.p.addr < n)),
            rx_read.close.eq(accept & self.i.p.last),
            rx_read.buf.eq(wb),
            rx_read.index.eq(self.i.p.addr),
            rx_read.value.eq(self.i.p.value),
            rx_write.eq(rx_read),
        ]
        step_first = Signal()                        # an event of this step had `first`
        with m.If(accept & self.i.p.last):
            m.d.sync += [claimed.bit_select(wb, 1).eq(1), wb.eq(~wb), step_first.eq(0),
                         first.bit_select(wb, 1).eq(step_first | self.i.p.first)]
        with m.Elif(accept):
            m.d.sync += step_first.eq(step_first | self.i.p.first)
        with m.If(rx_read.close):                    # its write lands next cycle, before a scan
            m.d.sync += full.bit_select(rx_read.buf, 1).eq(1)

        # ---- Emit: fetch the full buffer's words into the queue, clear each one read. -------
        m.submodules.words = words_q = ReadQueue(SpikeWord(chunk, words), depth=WORD_QUEUE_DEPTH)
        wiring.connect(m, words_q.o, wiring.flipped(self.o))
        fetching = Signal()
        fetch_word = Signal(range(words))
        issue = fetching & words_q.room
        with m.If(~fetching & full.bit_select(rb, 1) & ~scanned.bit_select(rb, 1)):
            m.d.sync += [fetching.eq(1), fetch_word.eq(0), scanned.bit_select(rb, 1).eq(1)]
        with m.If(issue):
            m.d.sync += fetch_word.eq(fetch_word + 1)
            with m.If(fetch_word == words - 1):
                m.d.sync += [fetching.eq(0), rb.eq(~rb)]
        arrive, arrive_buf = Signal(), Signal()
        arrive_word = Signal.like(fetch_word)
        m.d.sync += [arrive.eq(issue), arrive_buf.eq(rb), arrive_word.eq(fetch_word)]
        if keep_bits:
            arrive_bits = Mux(arrive_buf, bits_rd[1].data, bits_rd[0].data)
        else:
            tail = n - (words - 1) * chunk
            arrive_bits = Mux(arrive_word == words - 1, (1 << tail) - 1, (1 << chunk) - 1)
        m.d.comb += [
            words_q.issue.eq(issue),
            words_q.i.valid.eq(arrive),
            words_q.i.p.bits.eq(arrive_bits),
            words_q.i.p.index.eq(arrive_word),
            words_q.i.p.end.eq(arrive_word == words - 1),
            words_q.i.p.first.eq(first.bit_select(arrive_buf, 1) & (arrive_word == 0)),
        ]

        def release(buf):
            m.d.sync += [claimed.bit_select(buf, 1).eq(0), full.bit_select(buf, 1).eq(0),
                         scanned.bit_select(buf, 1).eq(0)]

        # ---- Look up: each address's sum out of the value memory, cleared as it is read. ---
        if keep_values:
            m.submodules.lookups = lookup_q = ReadQueue(EventLayout(n, vshape),
                                                        depth=WORD_QUEUE_DEPTH)
            wiring.connect(m, lookup_q.o, wiring.flipped(self.o_lookup))
            m.d.comb += self.i_lookup.ready.eq(lookup_q.room & full.bit_select(lb, 1))
            look = self.i_lookup.valid & self.i_lookup.ready
            found, found_buf = Signal(EventLayout(n)), Signal()
            found_valid = Signal()
            m.d.sync += [found_valid.eq(look), found.eq(self.i_lookup.p), found_buf.eq(lb)]
            with m.If(look & self.i_lookup.p.last):
                m.d.sync += lb.eq(~lb)
            sums = Mux(found_buf, vals_rd[1].data, vals_rd[0].data)
            m.d.comb += [
                lookup_q.issue.eq(look),
                lookup_q.i.valid.eq(found_valid),
                lookup_q.i.p.addr.eq(found.addr),
                lookup_q.i.p.value.eq(Mux(found.value, sums, 0)),
                lookup_q.i.p.last.eq(found.last),
                lookup_q.i.p.first.eq(found.first),
            ]
            with m.If(found_valid & found.last):
                release(found_buf)
        else:
            with m.If(arrive & (arrive_word == words - 1)):
                release(arrive_buf)

        # ---- Memory ports: a buffer is received, or scanned and looked up, never both. -----
        for b in range(2):
            receiving = rx_read.set & (rx_read.buf == b)
            writing = rx_write.set & (rx_write.buf == b)
            if keep_bits:
                rd, wr = bits_rd[b], bits_wr[b]
                m.d.comb += rd.addr.eq(Mux(receiving, rx_read.index >> chunk_bits, fetch_word))
                with m.If(clearing):
                    m.d.comb += [wr.addr.eq(clear_addr), wr.en.eq(clear_addr < words)]
                with m.Elif(writing):
                    bit = Const(1, chunk) << rx_write.index[:chunk_bits]
                    m.d.comb += [wr.addr.eq(rx_write.index >> chunk_bits),
                                 wr.data.eq(rd.data | bit), wr.en.eq(1)]
                with m.Elif(arrive & (arrive_buf == b)):
                    m.d.comb += [wr.addr.eq(arrive_word), wr.en.eq(1)]
            if keep_values:
                rd, wr = vals_rd[b], vals_wr[b]
                m.d.comb += rd.addr.eq(Mux(receiving, rx_read.index, self.i_lookup.p.addr))
                with m.If(clearing):
                    m.d.comb += [wr.addr.eq(clear_addr), wr.en.eq(clear_addr < n)]
                with m.Elif(writing):
                    m.d.comb += [wr.addr.eq(rx_write.index), wr.data.eq(rd.data + rx_write.value),
                                 wr.en.eq(1)]
                with m.Elif(found_valid & found.value & (found_buf == b)):
                    m.d.comb += [wr.addr.eq(found.addr), wr.en.eq(1)]
        return m
