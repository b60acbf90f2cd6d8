"""Accumulate lane of the linear engine: each event's weights, one per cycle, into currents.

Lane ``k`` of a :class:`~hdl.linear.LinearEngine` owns the output neurons ``j`` with
``j % L == k`` and keeps its own copy of the weights that target them (:mod:`hdl.weights`). For
every event ``(i, v)`` it walks the weights of row ``i`` in its bank and emits one accumulate
operation ``(post, w * v, bank)`` per cycle for a :class:`~hdl.accumulator.BankedAccumulator`::

    row queue -> row walker                     -> weight reader -> operations
                               (csr, dense)
                               chunk fetcher -> bit scanner
                               (bitmap)

Every stage is a component; they are joined by streams. A memory read is either issued on
credit into a :class:`~hdl.queue.ReadQueue` or lands in a register, so no memory output feeds
logic before a register (a block RAM output on the ECP5 leaves no time for any) and no
consumer's ``ready`` reaches a memory's address or enable. Only the row queue can hold a lane
back: once a row has left it, its operations leave one per cycle whatever happens further on
(the accumulator takes one per cycle, and the engine accepts no event before its reset clear is
over).

Every stage reports with ``busy`` which current banks it still holds work for, so the engine
knows when a step has left the lane. Stages are in order, so a queue is asked only about its
oldest entry: ``busy`` is exact for the bank of the lane's oldest work, which is the bank the
engine asks about.
"""
from itertools import combinations

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .accumulator import AccumulateOp
from .event import addr_bits
from .lsb import CHUNK, clear_lowest, lowest_set_bit
from .queue import ReadQueue
from .wload import WEIGHT_WRITE, weight_memory, word_value

__all__ = ["LaneEvent", "RowWork", "ChunkWord", "Visit", "lane_ref", "RowQueue", "RowWalker",
           "ChunkFetcher", "BitScanner", "WeightReader", "LinearLane", "entry_fold",
           "register_lane"]

#: Memory attributes of the weight ROMs: Yosys builds a ROM of a few dozen words from LUTs
#: (a 64 x 35 row table took 245 iCE40 logic cells, docs/timing-notes.md); a block RAM is free.
ROM_IN_BLOCK_RAM = {"ram_style": "block"}

#: Chunk words queued between the chunk fetcher and the bit scanner. Two pass two words in
#: three cycles (:func:`~hdl.queue.full_rate_depth` of a one-cycle read is three), and the
#: scanner holds two more (next and scanned): a word with two bits or more takes as long as the
#: queue needs, and a row's words average four bits in a 75 %-sparse layer. Each slot is 30
#: flip-flops a lane, and the UP5K counts them.
CHUNK_SLOTS = 2


class LaneEvent(data.StructLayout):
    """``{addr, value, bank}``: an input event and the current bank it adds into."""
    def __init__(self, n_in, value_shape):
        super().__init__({"addr": unsigned(addr_bits(n_in)), "value": value_shape,
                          "bank": unsigned(1)})


class RowWork(data.StructLayout):
    """An event's row as the walkers take it.

    ``{start, count, value, bank}`` for csr and dense (``count`` entries from entry ``start``);
    ``{start, count, row, value, bank}`` for bitmap, where ``count`` is the chunks of input
    row ``row`` to fetch.
    """
    def __init__(self, packed, value_shape):
        fields = {"start": unsigned(packed.start_bits), "count": unsigned(packed.count_bits)}
        if packed.fmt == "bitmap":
            fields["row"] = unsigned(addr_bits(packed.n_in))
        super().__init__({**fields, "value": value_shape, "bank": unsigned(1)})


class ChunkWord(data.StructLayout):
    """``{bits, first, start, value, bank}``: one bitmap chunk of a row.

    ``first`` marks the row's chunk 0, whose weights start at entry ``start``; its other
    chunks follow in order (every one up to the row's last non-empty chunk), and so do their
    weights.
    """
    def __init__(self, packed, value_shape):
        super().__init__({"bits": unsigned(packed.chunk_width), "first": unsigned(1),
                          "start": unsigned(packed.start_bits), "value": value_shape,
                          "bank": unsigned(1)})


class Visit(data.StructLayout):
    """``{entry, post, value, bank}``: add entry ``entry``'s weight times ``value`` to ``post``.

    ``post`` is the neuron inside the bank for dense and bitmap rows; a csr entry holds its own.
    """
    def __init__(self, packed, value_shape):
        super().__init__({"entry": range(packed.entry_depth), "post": unsigned(packed.post_bits),
                          "value": value_shape, "bank": unsigned(1)})


def lane_ref(packed, lane, events, *, value_shape):
    """Reference: the accumulate operations lane ``lane`` emits for ``events``, in order.

    ``events`` are ``[(addr, value, bank)]`` as offered to :class:`LinearLane`; returns
    ``[(post, delta, bank)]``: per event, one operation per stored weight of row ``addr`` in
    the lane's bank (every weight for dense rows), neurons ascending, ``delta = weight * value``
    (the weight alone when ``value_shape`` has no bits: every event is a spike).
    """
    data = packed.lane_data[lane]
    spikes = Shape.cast(value_shape).width == 0
    ops = []
    for addr, value, bank in events:
        start, count = data.rows[addr]
        ops += [(post, weight if spikes else weight * value, bank)
                for post, weight in data.entries[start:start + count]]
    return ops


def _table(pw, lane):
    """The row memory of ``lane``: ``(fields, init)``, or ``(None, None)`` for dense rows."""
    data_ = pw.lane_data[lane]
    if pw.fmt == "dense":
        return None, None
    if pw.inline_chunk:
        return ({"start": pw.start_bits, "bits": pw.chunk_width},
                [{"start": s, "bits": row[0]} for (s, _), row in zip(data_.rows, data_.chunks)])
    counts = data_.spans if pw.fmt == "bitmap" else [c for _, c in data_.rows]
    return ({"start": pw.start_bits, "count": pw.count_bits},
            [{"start": s, "count": c} for (s, _), c in zip(data_.rows, counts)])


def _entry_fields(pw):
    fields = {"weight": signed(pw.weight_bits)}
    if pw.fmt == "csr":
        fields["post"] = unsigned(pw.post_bits)
    return fields


def _entries(pw, lane):
    return [{"weight": w, **({"post": p} if pw.fmt == "csr" else {})}
            for p, w in pw.lane_data[lane].entries]


def entry_fold(pw):
    """Entries per word of a loaded entry memory: the most (a power of two) that fit 16 bits.

    A RAM loaded at run time packs several entries into a word, so that a UP5K SPRAM (16 bits
    wide) holds four 4-bit weights in a word instead of one; the entry's low address bits pick
    it out of the word that is read."""
    fold = 1
    while 2 * fold * pw.entry_bits <= 16:
        fold *= 2
    return fold


def register_lane(store, pw, lane, prefix):
    """Register lane ``lane``'s weight memories with ``store`` (a :class:`hdl.wload.WeightStore`)
    under ``prefix``; return ``{memory: sel}`` for :class:`LinearLane`'s ``loads``.

    The entry memory is sized for :attr:`~hdl.weights.PackedWeights.entry_depth` (the
    capacity) and packed :func:`entry_fold` entries to a word."""
    loads = {}
    fields, init = _table(pw, lane)
    if fields is not None:
        loads["table"] = store.add(f"{prefix}.table", data.StructLayout(fields), pw.n_in, init)
    if pw.fmt == "bitmap" and not pw.inline_chunk:
        loads["bitmap"] = store.add(f"{prefix}.bitmap", unsigned(pw.chunk_width),
                                    pw.bitmap_depth,
                                    [c for row in pw.lane_data[lane].chunks for c in row])
    fold = entry_fold(pw)
    layout = data.StructLayout(_entry_fields(pw))
    entries = [word_value(layout, e) for e in _entries(pw, lane)]
    words = [sum(e << (k * pw.entry_bits) for k, e in enumerate(entries[i:i + fold]))
             for i in range(0, len(entries), fold)]
    loads["entries"] = store.add(f"{prefix}.entries", unsigned(fold * pw.entry_bits),
                                 -(-pw.entry_depth // fold), words)
    return loads


def _load_members(loads):
    """The ``load`` member of a lane stage whose memories are loaded at run time."""
    return {} if loads is None else {"load": In(WEIGHT_WRITE)}


def _memory(component, m, name, platform, **kwargs):
    """:func:`hdl.wload.weight_memory` for ``component``'s memory ``name`` (ROM without
    ``loads``); the caller takes its read port, so that the port's signals are named after
    the caller's variable as before."""
    loads, store = component._loads, component._store
    if loads is None:
        return weight_memory(m, name, **kwargs)
    sel = loads[name]
    return weight_memory(m, name, load=component.load, sel=sel, spram=store.place()[sel],
                         platform=platform, **kwargs)


def _count(bits):
    """Set bits among up to four, saturated at 3: ``(high, low)``, each a function of four."""
    bits = list(bits) + [C(0, 1)] * (4 - len(bits))
    two = Cat(*(a & b for a, b in combinations(bits, 2))).any()
    three = Cat(*(a & b & c for a, b, c in combinations(bits, 3))).any()
    odd = bits[0] ^ bits[1] ^ bits[2] ^ bits[3]
    return two, three | odd                                           # 1 and 3 are odd


def _add(a, b):
    """Two saturated counts ``(high, low)`` added, saturated at 3: two functions of four."""
    (ah, al), (bh, bl) = a, b
    high = ah | bh | (al & bl)                                        # 2 or more
    low = ((ah & (al | bh | bl)) | (bh & (al | bl))                   # 3 or more
           | (al ^ bl) & ~ah & ~bh)                                   # exactly 1
    return high, low


def few_bits(value, n):
    """Whether at most ``n`` (0 to 2) bits of ``value`` (up to 16 bits) are set.

    Counts the bits of each group of four, saturated at 3, and adds the counts in a tree; every
    node is a function of four signals, so a 16-bit word takes three LUT levels and no carry
    chain. (``value & (value - 1) == 0`` put a carry chain in front of a 16-input compare and
    made the bit scanner's every-cycle decision 25 ns on the UP5K.)
    """
    value = Value.cast(value)
    counts = [_count(value[k:k + 4]) for k in range(0, len(value), 4)]
    while len(counts) > 1:
        counts = [_add(*counts[k:k + 2]) if k + 1 < len(counts) else counts[k]
                  for k in range(0, len(counts), 2)]
    high, low = counts[0]
    return ~high & (~low if n == 0 else 1) if n < 2 else ~(high & low)


def _bank_bits(holds):
    """``busy`` from ``[(valid, bank)]``: bit ``b`` is set when some pair holds bank ``b``."""
    return Cat(*(Cat(*(valid & (bank == b) for valid, bank in holds)).any() for b in range(2)))


class RowQueue(wiring.Component):
    """The lane's queue of work: each event's row, looked up as the event comes in.

    An event offered on ``i`` (only while ``room`` is high; ``room`` is a register compare)
    reads its row word from the row memory (csr, bitmap), and the word lands straight in a
    :class:`~hdl.queue.ReadQueue` slot of ``depth``, a cycle later; the walker takes rows from
    ``o``. A dense row is computed (``start = addr * bank``, every weight) with the same
    latency. A bitmap bank of one chunk (:attr:`~hdl.weights.PackedWeights.inline_chunk`)
    keeps the chunk in the row word: ``o`` gives the row's chunk word itself.

    Parameters
    ----------
    packed : :class:`hdl.weights.PackedWeights`
    lane : :class:`int`
        The lane whose row memory this is.
    value_shape : shape-castable
    depth : :class:`int`
        Rows the queue holds.

    Members
    -------
    i : ``In(stream.Signature(LaneEvent(n_in, value_shape), always_ready=True))``
    room : ``Out(1)``
    o : ``Out(stream.Signature(RowWork(packed, value_shape)))``, or ``ChunkWord`` inline
    busy : ``Out(2)``
    """
    def __init__(self, packed, lane, *, value_shape, depth, loads=None, store=None):
        self._packed, self._lane, self._depth = packed, lane, depth
        self._loads, self._store = loads, store
        row = ChunkWord if packed.inline_chunk else RowWork
        super().__init__({
            "i": In(stream.Signature(LaneEvent(packed.n_in, value_shape), always_ready=True)),
            "room": Out(1),
            "o": Out(stream.Signature(row(packed, value_shape))),
            "busy": Out(2),
            **_load_members(loads),
        })

    def elaborate(self, platform):
        m = Module()
        pw = self._packed
        m.submodules.rows = rows = ReadQueue(self.o.p.shape(), depth=self._depth)
        wiring.connect(m, rows.o, wiring.flipped(self.o))
        m.d.comb += [self.room.eq(rows.room), rows.issue.eq(self.i.valid)]

        # The event's own fields wait a cycle beside the row memory's read.
        # Payload registers have no reset: a valid bit beside them says whether they hold any.
        read = Signal(self.i.p.shape(), reset_less=True)
        read_valid = Signal()
        m.d.sync += [read_valid.eq(self.i.valid), read.eq(self.i.p)]
        m.d.comb += [rows.i.valid.eq(read_valid), rows.i.p.value.eq(read.value),
                     rows.i.p.bank.eq(read.bank)]
        # An address at or above n_in (outside the contract, DESIGN.md section 5) has no row:
        # it reads as an empty one, one cycle of the walker, and touches no neuron.
        in_range = Signal(init=1, reset_less=True)
        if 2 ** len(self.i.p.addr) > pw.n_in:
            m.d.sync += in_range.eq(self.i.p.addr < pw.n_in)
        if pw.fmt == "dense":
            start = Signal.like(rows.i.p.start)
            m.d.sync += start.eq(self.i.p.addr * pw.bank_size)
            m.d.comb += [rows.i.p.start.eq(start),
                         rows.i.p.count.eq(Mux(in_range, pw.bank_size, 0))]
        elif pw.inline_chunk:
            m.d.comb += rows.i.p.first.eq(1)
        fields, init = _table(pw, self._lane)
        if fields is not None:
            table = _memory(self, m, "table", platform, shape=data.StructLayout(fields),
                            depth=pw.n_in, init=init, attrs=ROM_IN_BLOCK_RAM)
            table_rd = table.read_port()
            m.d.comb += table_rd.addr.eq(self.i.p.addr)
            m.d.comb += [getattr(rows.i.p, name).eq(getattr(table_rd.data, name))
                         for name in fields if name == "start"]
            m.d.comb += [getattr(rows.i.p, name).eq(Mux(in_range, getattr(table_rd.data, name), 0))
                         for name in fields if name != "start"]
        if "row" in self.o.p.shape().members:
            m.d.comb += rows.i.p.row.eq(read.addr)
        m.d.comb += self.busy.eq(_bank_bits([(read_valid, read.bank),
                                             (rows.o.valid, rows.o.p.bank)]))
        return m


class RowWalker(wiring.Component):
    """Walk a row's entries, one per cycle (csr and dense rows).

    A row taken from ``i`` emits its ``count`` entries from ``start`` on, one per cycle, from
    the next cycle on (``post`` counts 0, 1, ... for dense rows). The next row is taken in the
    cycle of the last entry, so consecutive rows leave no gap; a row with no entries costs one
    cycle. ``o`` cannot stall; it comes from the walker's registers, and so does every
    decision.

    Parameters
    ----------
    packed : :class:`hdl.weights.PackedWeights`
    value_shape : shape-castable

    Members
    -------
    i : ``In(stream.Signature(RowWork(packed, value_shape)))``
    o : ``Out(stream.Signature(Visit(packed, value_shape), always_ready=True))``
    busy : ``Out(2)``
    """
    def __init__(self, packed, *, value_shape):
        self._packed = packed
        super().__init__({
            "i": In(stream.Signature(RowWork(packed, value_shape))),
            "o": Out(stream.Signature(Visit(packed, value_shape), always_ready=True)),
            "busy": Out(2),
        })

    def elaborate(self, platform):
        m = Module()
        pw = self._packed
        left = Signal(range(pw.bank_size + 1))           # entries left, this one included
        entry = Signal(range(pw.entry_depth + 1), reset_less=True)   # the entry of this cycle
        post = Signal(range(pw.bank_size + 1), reset_less=True)      # dense: the entry's neuron
        value = Signal.like(self.i.p.value, reset_less=True)
        bank = Signal(reset_less=True)

        ending = (left >> 1) == 0                        # at most this cycle's entry left
        m.d.comb += self.i.ready.eq(ending)
        with m.If(self.i.valid & ending):
            m.d.sync += [entry.eq(self.i.p.start), left.eq(self.i.p.count), post.eq(0),
                         value.eq(self.i.p.value), bank.eq(self.i.p.bank)]
        with m.Elif(left != 0):
            m.d.sync += [entry.eq(entry + 1), left.eq(left - 1), post.eq(post + 1)]
        m.d.comb += [
            self.o.valid.eq(left != 0), self.o.p.entry.eq(entry), self.o.p.post.eq(post),
            self.o.p.value.eq(value), self.o.p.bank.eq(bank),
            self.busy.eq(_bank_bits([(left != 0, bank)])),
        ]
        return m


class ChunkFetcher(wiring.Component):
    """Read a bitmap row's chunks, one per cycle, into a queue of chunk words.

    A row taken from ``i`` reads its ``count`` chunks, from bitmap word ``row * chunks`` on (the
    chunks of every row follow each other); each read is issued on credit into a
    :class:`~hdl.queue.ReadQueue` of :data:`CHUNK_SLOTS` slots and leaves on ``o`` the cycle
    after it arrives. The next row is taken in the cycle the last chunk is read; a row without
    chunks costs one cycle.

    Parameters
    ----------
    packed : :class:`hdl.weights.PackedWeights`
        In the ``"bitmap"`` format.
    lane : :class:`int`
    value_shape : shape-castable

    Members
    -------
    i : ``In(stream.Signature(RowWork(packed, value_shape)))``
    o : ``Out(stream.Signature(ChunkWord(packed, value_shape)))``
    busy : ``Out(2)``
    """
    def __init__(self, packed, lane, *, value_shape, loads=None, store=None):
        self._packed, self._lane = packed, lane
        self._loads, self._store = loads, store
        super().__init__({
            "i": In(stream.Signature(RowWork(packed, value_shape))),
            "o": Out(stream.Signature(ChunkWord(packed, value_shape))),
            "busy": Out(2),
            **_load_members(loads),
        })

    def elaborate(self, platform):
        m = Module()
        pw = self._packed
        bitmap = _memory(self, m, "bitmap", platform, shape=pw.chunk_width,
                         depth=pw.bitmap_depth,
                         init=[c for row in pw.lane_data[self._lane].chunks for c in row],
                         attrs=ROM_IN_BLOCK_RAM)
        bitmap_rd = bitmap.read_port()
        m.submodules.words = words = ReadQueue(self.o.p.shape(), depth=CHUNK_SLOTS)
        wiring.connect(m, words.o, wiring.flipped(self.o))

        # The row being fetched: its next chunk's address, the chunks left, its first chunk.
        left = Signal.like(self.i.p.count)
        addr = Signal(range(pw.bitmap_depth), reset_less=True)
        first = Signal(reset_less=True)
        row = Signal(self.i.p.shape(), reset_less=True)   # start, value and bank of the row
        issue = (left != 0) & words.room
        ending = (left == 0) | ((left == 1) & words.room)
        m.d.comb += [self.i.ready.eq(ending), words.issue.eq(issue), bitmap_rd.addr.eq(addr)]
        with m.If(self.i.valid & ending):
            m.d.sync += [addr.eq(self.i.p.row * pw.chunks_per_row), left.eq(self.i.p.count),
                         first.eq(1), row.eq(self.i.p)]
        with m.Elif(issue):
            m.d.sync += [addr.eq(addr + 1), left.eq(left - 1), first.eq(0)]

        # The chunk's row waits a cycle beside the bitmap memory's read.
        arrive = Signal(self.o.p.shape(), reset_less=True)
        arrive_valid = Signal()
        m.d.sync += [arrive_valid.eq(issue), arrive.first.eq(first), arrive.start.eq(row.start),
                     arrive.value.eq(row.value), arrive.bank.eq(row.bank)]
        m.d.comb += [words.i.valid.eq(arrive_valid), words.i.p.eq(arrive),
                     words.i.p.bits.eq(bitmap_rd.data)]
        m.d.comb += self.busy.eq(_bank_bits([(left != 0, row.bank),
                                                (arrive_valid, arrive.bank),
                                                (words.o.valid, words.o.p.bank)]))
        return m


class BitScanner(wiring.Component):
    """Turn chunk words into one visit per set bit, lowest bit first, one per cycle.

    The neuron of bit ``b`` of chunk ``c`` is ``c * chunk_width + b``; the entries of a row's
    set bits follow each other from ``start`` on. A word waits in a *next* register, then is
    *scanned*: it moves in during the cycle the scanned word gives its last bit, so words leave
    no gap (an empty word costs one cycle). Whether the scanned word is ending, and whether it
    has bits, are registers computed a cycle ahead (from the next word's bits, or as "at most
    two bits" of the scanned one), so no decision waits for a find-first-set or a carry chain,
    and the queue's output reaches only registers. ``o`` is the visit of the scanned word's
    lowest set bit, in the same cycle (its neuron number is the only logic on it); it cannot
    stall.

    Parameters
    ----------
    packed : :class:`hdl.weights.PackedWeights`
        In the ``"bitmap"`` format.
    value_shape : shape-castable

    Members
    -------
    i : ``In(stream.Signature(ChunkWord(packed, value_shape)))``
    o : ``Out(stream.Signature(Visit(packed, value_shape), always_ready=True))``
    busy : ``Out(2)``
    """
    def __init__(self, packed, *, value_shape):
        self._packed = packed
        super().__init__({
            "i": In(stream.Signature(ChunkWord(packed, value_shape))),
            "o": Out(stream.Signature(Visit(packed, value_shape), always_ready=True)),
            "busy": Out(2),
        })

    def elaborate(self, platform):
        m = Module()
        pw = self._packed
        after = Signal(self.i.p.shape(), reset_less=True)          # the next word
        after_valid = Signal()
        # Scanned: the word whose lowest set bit is visited in this cycle.
        word = Signal(self.i.p.shape(), reset_less=True)
        entry = Signal(range(pw.entry_depth + 1), reset_less=True)
        chunk = Signal(range(pw.chunks_per_row), reset_less=True)   # the word's number
        ending = Signal(init=1)                          # at most one bit left
        some = Signal()                                  # a bit left: a visit in this cycle

        advance = ending & after_valid                   # the next word is scanned from now
        m.d.comb += self.i.ready.eq(~after_valid | advance)
        with m.If(self.i.ready):
            m.d.sync += [after.eq(self.i.p), after_valid.eq(self.i.valid)]
        m.d.sync += [word.bits.eq(clear_lowest(word.bits)), entry.eq(entry + some),
                     some.eq(~ending), ending.eq(few_bits(word.bits, 2))]
        with m.If(advance):
            m.d.sync += [word.eq(after), some.eq(after.bits.any()),
                         ending.eq(few_bits(after.bits, 1))]
            m.d.sync += chunk.eq(chunk + 1)
            with m.If(after.first):
                m.d.sync += [entry.eq(after.start), chunk.eq(0)]

        # A chunk is CHUNK bits wide unless the bank is narrower (one chunk, number 0).
        bit, _ = lowest_set_bit(m, word.bits, name="bit")
        post = Cat(bit, chunk) if pw.chunk_width == CHUNK else bit
        m.d.comb += [
            self.o.valid.eq(some), self.o.p.entry.eq(entry), self.o.p.post.eq(post),
            self.o.p.value.eq(word.value), self.o.p.bank.eq(word.bank),
            self.busy.eq(_bank_bits([(after_valid, after.bank), (some, word.bank)])),
        ]
        return m


class WeightReader(wiring.Component):
    """Read each visit's weight and form its accumulate operation.

    The entry memory's output is registered before anything uses it: the operation
    ``(post, weight * value, bank)`` leaves on ``o`` two cycles after its visit, one per
    cycle. A one-bit ``value`` selects the weight instead of multiplying it. ``o.ready`` must
    be high whenever ``o.valid`` is (a :class:`~hdl.accumulator.BankedAccumulator` after its
    reset clear).

    Parameters
    ----------
    packed : :class:`hdl.weights.PackedWeights`
    lane : :class:`int`
    value_shape : shape-castable
    depth : :class:`int`
        Currents per bank of the accumulator (at least the bank size).
    current_bits : :class:`int`
        Width of the accumulator's deltas.

    Members
    -------
    i : ``In(stream.Signature(Visit(packed, value_shape), always_ready=True))``
    o : ``Out(stream.Signature(AccumulateOp(depth, current_bits)))``
    busy : ``Out(2)``
    """
    def __init__(self, packed, lane, *, value_shape, depth, current_bits, loads=None,
                 store=None):
        self._packed, self._lane, self._value_shape = packed, lane, Shape.cast(value_shape)
        self._loads, self._store = loads, store
        super().__init__({
            "i": In(stream.Signature(Visit(packed, value_shape), always_ready=True)),
            "o": Out(stream.Signature(AccumulateOp(depth, current_bits))),
            "busy": Out(2),
            **_load_members(loads),
        })

    def elaborate(self, platform):
        m = Module()
        pw = self._packed
        fields = _entry_fields(pw)
        if self._loads is None:
            entries = _memory(self, m, "entries", platform, shape=data.StructLayout(fields),
                              depth=pw.entry_depth, init=_entries(pw, self._lane),
                              attrs=ROM_IN_BLOCK_RAM)
            entries_rd = entries.read_port()
            m.d.comb += entries_rd.addr.eq(self.i.p.entry)
            read = Signal(self.i.p.shape(), reset_less=True)
            entry = entries_rd.data
        else:
            read = Signal(self.i.p.shape(), reset_less=True)
            # Loaded: `fold` entries a word; the entry's low bits pick it out of the word read.
            fold = entry_fold(pw)
            k = fold.bit_length() - 1
            entries = _memory(self, m, "entries", platform, shape=fold * pw.entry_bits,
                              depth=-(-pw.entry_depth // fold), init=[],
                              attrs=ROM_IN_BLOCK_RAM)
            entries_rd = entries.read_port()
            m.d.comb += entries_rd.addr.eq(self.i.p.entry >> k)
            word = Value.cast(entries_rd.data)
            entry = data.View(data.StructLayout(fields),
                              word.word_select(read.entry[:k], pw.entry_bits) if k else word)

        # Read: the visit waits beside the entry memory. Weigh: the read data, registered.
        weigh = Signal(self.i.p.shape(), reset_less=True)
        weight = Signal(signed(pw.weight_bits), reset_less=True)
        read_valid = Signal()
        weigh_valid = Signal()
        m.d.sync += [read_valid.eq(self.i.valid), read.eq(self.i.p),
                     weigh_valid.eq(read_valid), weigh.eq(read), weight.eq(entry.weight)]
        if pw.fmt == "csr":
            m.d.sync += weigh.post.eq(entry.post)
        if self._value_shape.width == 0:                # spikes: every event has value 1
            delta = weight
        elif self._value_shape == unsigned(1):
            delta = Mux(weigh.value, weight, 0)
        else:
            delta = weight * weigh.value
        m.d.comb += [self.o.valid.eq(weigh_valid), self.o.p.addr.eq(weigh.post),
                     self.o.p.delta.eq(delta), self.o.p.bank.eq(weigh.bank)]
        m.d.comb += self.busy.eq(_bank_bits([(read_valid, read.bank),
                                                (weigh_valid, weigh.bank)]))
        return m


class LinearLane(wiring.Component):
    """One accumulate lane: events in, one accumulate operation per cycle out.

    An event is offered to every lane at once: the engine asserts ``i.valid`` only in a cycle
    where every lane's ``room`` is high (``room`` comes from a register). The row queue holds
    ``queue_depth`` events' rows; deeper queues even out the lanes' work between events. Per
    event, the lane emits one operation per non-zero weight of the event's row in its bank
    (every weight for dense rows), back to back across events; the first leaves six cycles
    after the event (csr, dense; ten for bitmap rows) when the lane was idle.

    Parameters
    ----------
    packed : :class:`hdl.weights.PackedWeights`
    lane : :class:`int`
        The lane's number ``k``.
    value_shape : shape-castable
        Shape of the values the lane multiplies weights by; ``unsigned(0)`` when every event
        is a spike of value 1 (its weight is added as it is).
    depth : :class:`int`
        Currents per bank of the accumulator (at least the bank size).
    current_bits : :class:`int`
    queue_depth : :class:`int`
        Events the lane can queue.

    Members
    -------
    i : ``In(stream.Signature(LaneEvent(n_in, value_shape), always_ready=True))``
    room : ``Out(1)``
        The row queue has a free slot.
    o : ``Out(stream.Signature(AccumulateOp(depth, current_bits)))``
    busy : ``Out(2)``
        Bit ``b``: the lane held work for current bank ``b`` in the previous cycle (exact for
        its oldest work's bank; a register, so events offered in this cycle and the one before
        do not show yet).
    """
    def __init__(self, packed, lane, *, value_shape, depth, current_bits, queue_depth,
                 loads=None, store=None):
        self._packed, self._lane, self._value_shape = packed, lane, value_shape
        self._depth, self._current_bits, self._queue_depth = depth, current_bits, queue_depth
        self._loads, self._store = loads, store
        super().__init__({
            "i": In(stream.Signature(LaneEvent(packed.n_in, value_shape), always_ready=True)),
            "room": Out(1),
            "o": Out(stream.Signature(AccumulateOp(depth, current_bits))),
            "busy": Out(2),
            **_load_members(loads),
        })

    def elaborate(self, platform):
        m = Module()
        pw, lane, vshape = self._packed, self._lane, self._value_shape
        load = {} if self._loads is None else {"loads": self._loads, "store": self._store}
        m.submodules.rows = rows = RowQueue(pw, lane, value_shape=vshape,
                                            depth=self._queue_depth, **load)
        wiring.connect(m, wiring.flipped(self.i), rows.i)
        m.d.comb += self.room.eq(rows.room)
        if pw.inline_chunk:
            m.submodules.scanner = walker = BitScanner(pw, value_shape=vshape)
            wiring.connect(m, rows.o, walker.i)
            parts = [rows, walker]
        elif pw.fmt == "bitmap":
            m.submodules.chunks = chunks = ChunkFetcher(pw, lane, value_shape=vshape, **load)
            m.submodules.scanner = walker = BitScanner(pw, value_shape=vshape)
            wiring.connect(m, rows.o, chunks.i)
            wiring.connect(m, chunks.o, walker.i)
            parts = [rows, chunks, walker]
        else:
            m.submodules.walker = walker = RowWalker(pw, value_shape=vshape)
            wiring.connect(m, rows.o, walker.i)
            parts = [rows, walker]
        m.submodules.weights = weights = WeightReader(pw, lane, value_shape=vshape,
                                                      depth=self._depth,
                                                      current_bits=self._current_bits, **load)
        if load:
            stages = [rows, weights] + ([chunks] if "bitmap" in self._loads else [])
            m.d.comb += [stage.load.eq(self.load) for stage in stages
                         if "load" in stage.signature.members]
        wiring.connect(m, walker.o, weights.i)
        wiring.connect(m, weights.o, wiring.flipped(self.o))
        busy = weights.busy
        for part in parts:
            busy = busy | part.busy
        m.d.sync += self.busy.eq(busy)                   # off the lanes' paths: a cycle late
        return m
