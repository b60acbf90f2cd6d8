"""The convolution engine's own stages, between the engine kit's components.

:class:`~hdl.conv.Conv2dEngine` is the kit (:mod:`hdl.indexmap`, :mod:`hdl.bitmap`,
:mod:`hdl.compress`, :mod:`hdl.accumulator`, :mod:`hdl.sweep`) joined by the stages that only a
convolution needs. In the order a step meets them:

* :class:`StepBanks` lets a step's spikes in only when the step's current bank is free, and
  follows the two banks from accumulating to full to swept;
* :class:`~hdl.conv.SpikeDecoder` (in :mod:`hdl.conv`, beside the geometry it computes) turns
  an input bit into the spike the lanes take: record, row and column ranges, target base;
* :class:`SpikeBroadcast` hands every spike to every lane, each lane at its own pace;
* :class:`KernelScatter` (one per lane) turns a spike into accumulate operations, one non-zero
  weight per cycle;
* :class:`ChannelPacker` packs the sweep's rows into spike words per output channel, in the
  order the output compressor emits them.
"""
from amaranth import *
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import bits_for, exact_log2

from .accumulator import AccumulateOp
from .compress import SpikeWord
from .event import EventLayout
from .lsb import CHUNK, clear_lowest, lowest_set_bit
from .queue import WORD_QUEUE_DEPTH, ReadQueue
from .sweep import SweepCommand

__all__ = ["ConvSpike", "StepBanks", "SpikeBroadcast", "KernelScatter", "ChannelPacker",
           "SEGMENT_QUEUE_DEPTH", "scatter_ref", "pack_ref"]

#: Segments (kernel rows of a spike) a lane's row stage may queue ahead of its entry stage.
#: Two is the fewest that pass one segment per cycle: the FIFO's ``w_rdy`` is ``level !=
#: depth``, so with one slot a segment pushed in cycle ``t`` and popped in ``t + 1`` frees its
#: slot for a push only in ``t + 2``. More slots let the row stage run further ahead of a long
#: segment, but measured on the CSNN's layers, a random 8x12x12 -> 16 layer and a 5x5
#: stride-2 layer at input densities 0.1-0.5, 4 and 8 slots shortened the step by at most
#: 0.4 %, while each pair of slots (segments of about 30 bits, in flip-flops) cost about 90
#: iCE40 logic cells per lane. Not a :class:`~hdl.queue.ReadQueue`: the row stage is a
#: producer that can wait (``w_rdy``), not a memory read in flight.
SEGMENT_QUEUE_DEPTH = 2


class ConvSpike(data.StructLayout):
    """An input spike as the lanes take it.

    ``rec``: the record of its input channel and stride phase; ``qy0 .. qy1`` and ``qx0 ..
    qx_end - 1``: the kernel rows and columns whose targets lie inside the output (``qx_end``
    exclusive: it selects a record's pointer without an adder); ``tgt``: the target
    of kernel offset ``(0, 0)``, ``by * Wo + bx``; ``value``; ``bank``: the current bank of its
    step; ``hits``: it has targets (else it only carries ``end``); ``end``: the last spike of
    its step.
    """
    def __init__(self, *, records, taps, targets, value_shape):
        q = unsigned(bits_for(taps - 1))
        super().__init__({
            "rec": unsigned(bits_for(records - 1)),
            "qy0": q, "qy1": q, "qx0": q, "qx_end": unsigned(bits_for(taps)),
            "tgt": unsigned(bits_for(targets)),
            "value": value_shape,
            "bank": unsigned(1),
            "hits": unsigned(1),
            "end": unsigned(1),
        })


def scatter_ref(plan, lane, spike, *, width, positions):
    """Reference: the operations ``(addr, delta)`` lane ``lane`` issues for ``spike``, in order.

    ``spike`` is a :class:`dict` of :class:`ConvSpike` fields; ``width`` and ``positions`` are
    ``Wo`` and ``Ho * Wo``. Rows ascending, then entries ascending (columns, then channels).
    """
    if not spike["hits"]:
        return []
    record, ops = plan.records[lane][spike["rec"]], []
    for qy in range(spike["qy0"], spike["qy1"] + 1):
        for entry in range(record[qy][spike["qx0"]], record[qy][spike["qx_end"]]):
            weight, local, qx = plan.entries[lane][entry]
            ops.append((spike["tgt"] - qy * width + local * positions - qx,
                        weight * spike["value"]))
    return ops


def pack_ref(channels, positions, sweeps):
    """Reference: the words :class:`ChannelPacker` emits for ``sweeps`` ``[(first, rows)]``.

    ``rows[r][j]`` is the spike of lane ``j``'s neuron ``r``. Returns ``[(bits, index, end,
    first)]`` as :class:`~hdl.compress.SpikeWord` fields, channel after channel.
    """
    words_out = -(-positions // CHUNK)
    owner = {k: (j, local) for j, chans in enumerate(channels) for local, k in enumerate(chans)}
    n_words = len(owner) * words_out
    words = []
    for first, rows in sweeps:
        for k in range(len(owner)):
            j, local = owner[k]
            for w in range(words_out):
                spread = range(w * CHUNK, min(positions, (w + 1) * CHUNK))
                bits = sum(rows[local * positions + pos][j] << (pos - w * CHUNK)
                           for pos in spread)
                index = k * words_out + w
                words.append((bits, index, int(index == n_words - 1),
                              int(bool(first) and index == 0)))
    return words


class StepBanks(wiring.Component):
    """The two current banks' life, and the gate that lets a step in when its bank is free.

    Steps take the banks in turn, from bank 0 after reset. A bank is *free*, then
    *accumulating* from the cycle its step's first event passes the gate until every lane has
    passed the step's end and no sum of it is in flight, then *full* until its sweep has read
    the last row. Events pass from ``i`` to ``o`` combinationally; a step's first event waits
    until the next bank is free (and the accumulators have cleared their banks after reset).
    A full bank is swept with a command on ``o_sweep``, in the order the steps came.

    Parameters
    ----------
    n : :class:`int`
        Addresses of the events.
    lanes : :class:`int`
        Lanes that report the ends of steps.

    Members
    -------
    i : ``In(stream.Signature(EventLayout(n)))``
        The steps' events (a compressor's output).
    o : ``Out(stream.Signature(EventLayout(n)))``
    cleared : ``In(1)``
        The accumulators take operations (they clear their banks after reset).
    lane_end : ``In(lanes)``
        Bit ``j`` pulses when lane ``j`` has issued the last operation of a step.
    busy : ``In(2)``
        Bit ``b``: an operation on bank ``b`` has not been written yet, in any lane.
    o_sweep : ``Out(stream.Signature(SweepCommand()))``
    swept : ``In(1)``
        The sweep has read the last row of its bank.
    sweep_room : ``In(1)``
        The sweep's output has room for a whole sweep: a command waits for it.
    accumulated : ``Out(1)``
        Pulses when a step's accumulation is complete (its bank becomes full).
    """
    def __init__(self, n, *, lanes):
        self._lanes = lanes
        super().__init__({
            "i": In(stream.Signature(EventLayout(n))),
            "o": Out(stream.Signature(EventLayout(n))),
            "cleared": In(1),
            "lane_end": In(lanes),
            "busy": In(2),
            "o_sweep": Out(stream.Signature(SweepCommand())),
            "swept": In(1),
            "sweep_room": In(1),
            "accumulated": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        accumulating = [Signal(name=f"accumulating{b}") for b in range(2)]
        full = [Signal(name=f"full{b}") for b in range(2)]
        first = [Signal(name=f"first{b}") for b in range(2)]
        next_bank = Signal()                         # bank of the next step to start
        oldest = Signal()                            # bank of the oldest accumulating step
        swept_bank = Signal()                        # bank of the next (or current) sweep

        # ---- Gate: a step starts when its bank is free. ----------------------------------
        # `open_` is a register, so the gate adds one AND to the compressor's ready path. It
        # is computed from the next bank and the banks' present state: a bank that a sweep
        # frees in this cycle opens the gate a cycle later, which errs on the safe side.
        passing = Signal()                           # a step's first event has passed, not its last
        open_ = Signal()
        m.d.comb += [
            self.o.valid.eq(self.i.valid & open_),
            self.o.payload.eq(self.i.payload),
            self.i.ready.eq(self.o.ready & open_),
        ]
        moved = self.i.valid & self.i.ready
        start = moved & ~passing
        passing_next = Mux(moved, ~self.i.p.last, passing)
        bank_next = next_bank ^ start
        free_next = ~Array(accumulating)[bank_next] & ~Array(full)[bank_next] & self.cleared
        m.d.sync += [passing.eq(passing_next), open_.eq(passing_next | free_next)]
        with m.If(start):
            m.d.sync += next_bank.eq(~next_bank)
            for b in range(2):
                with m.If(next_bank == b):
                    m.d.sync += [accumulating[b].eq(1), first[b].eq(self.i.p.first)]

        # ---- Completion: every lane passed the step's end, and none of its sums in flight.
        # Lanes count the ends they have passed, and the banks the steps completed (modulo
        # 4: a lane is at most two steps ahead, as a third step waits for a free bank).
        completed = Signal(2)
        lane_ends = [Signal(2, name=f"lane_ends{j}") for j in range(self._lanes)]
        for j, ends in enumerate(lane_ends):
            m.d.sync += ends.eq(ends + self.lane_end[j])
        done = (Array(accumulating)[oldest] & ~self.busy.bit_select(oldest, 1)
                & Cat(ends != completed for ends in lane_ends).all())
        m.d.comb += self.accumulated.eq(done)
        with m.If(done):
            m.d.sync += [oldest.eq(~oldest), completed.eq(completed + 1)]
            for b in range(2):
                with m.If(oldest == b):
                    m.d.sync += [accumulating[b].eq(0), full[b].eq(1)]

        # ---- Sweep: one command per full bank; the bank is free once its last row is read.
        sweeping = Signal()
        m.d.comb += [
            self.o_sweep.valid.eq(Array(full)[swept_bank] & ~sweeping & self.sweep_room),
            self.o_sweep.p.bank.eq(swept_bank),
            self.o_sweep.p.first.eq(Array(first)[swept_bank]),
        ]
        with m.If(self.o_sweep.valid & self.o_sweep.ready):
            m.d.sync += sweeping.eq(1)
        with m.If(self.swept):
            m.d.sync += [sweeping.eq(0), swept_bank.eq(~swept_bank)]
            for b in range(2):
                with m.If(swept_bank == b):
                    m.d.sync += full[b].eq(0)
        return m


class SpikeBroadcast(wiring.Component):
    """A queue with one writer and several readers; every reader reads every entry.

    Each reader has its own read pointer and takes the entries at its own pace, so readers may
    drift apart by up to ``depth`` entries. ``i.ready`` is a register: it is low when the
    slowest reader's backlog plus this cycle's write would leave no slot (a reader's take in
    this cycle only makes room, so it errs on the safe side), and no combinational path runs
    from a reader's ``ready`` back into the writer.

    Parameters
    ----------
    shape : shape-castable
        The entries.
    depth : :class:`int`
        Entries, a power of two.
    readers : :class:`int`

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(shape)).array(readers)``
    """
    def __init__(self, shape, *, depth, readers):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
            raise TypeError(f"Depth must be an integer of at least 2, not {depth!r}")
        if depth & (depth - 1):
            raise ValueError(f"Depth must be a power of two, not {depth}")
        if isinstance(readers, bool) or not isinstance(readers, int) or readers < 1:
            raise TypeError(f"Readers must be a positive integer, not {readers!r}")
        self._shape, self._depth = shape, depth
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)).array(readers),
        })

    def elaborate(self, platform):
        m = Module()
        depth, index_bits = self._depth, exact_log2(self._depth)
        slots = Array(Signal(Shape.cast(self._shape).width, name=f"slot{n}") for n in range(depth))
        written = Signal(index_bits + 1)             # one more bit: full and empty differ
        full = Signal()
        m.d.comb += self.i.ready.eq(~full)
        push = self.i.valid & self.i.ready
        with m.If(push):
            m.d.sync += [slots[written[:index_bits]].eq(self.i.payload), written.eq(written + 1)]
        backlogs = []
        for n, out in enumerate(self.o):
            read = Signal(index_bits + 1, name=f"read{n}")
            m.d.comb += [out.valid.eq(read != written), out.payload.eq(slots[read[:index_bits]])]
            with m.If(out.valid & out.ready):
                m.d.sync += read.eq(read + 1)
            backlogs.append((written - read)[:index_bits + 1] + push >= depth)
        m.d.sync += full.eq(Cat(*backlogs).any())
        return m


class KernelScatter(wiring.Component):
    """One lane: the non-zero weights a spike meets in the lane's output channels, one per cycle.

    Four stages, each a name in the code:

    1. *Record*: one read gives the entry pointers of all kernel rows of the spike's input
       channel and stride phase (``plan.records[lane]``).
    2. *Rows*: each kernel row with weights in the spike's valid columns becomes a *segment*
       (its entry range and target row), lowest row first, one per cycle, into a
       :class:`~amaranth.lib.fifo.SyncFIFO` of :data:`SEGMENT_QUEUE_DEPTH`; rows without
       weights cost nothing. A step's last spike
       adds an end segment after its rows.
    3. *Entries*: one entry ``(weight, local channel, column)`` per cycle, segment after segment
       without a bubble; the entry memory's output is used one cycle later.
    4. *Product*: the target current ``tgt - qy * Wo + local * Ho * Wo - qx`` and the product
       ``weight * value``, registered on ``o``.

    Throughput one operation per cycle while the spikes keep the rows stage ahead. ``o`` cannot
    stall: a :class:`~hdl.accumulator.BankedAccumulator` takes one operation per cycle once its
    banks are cleared, and the engine starts no step before that.

    Parameters
    ----------
    plan : :class:`hdl.conv.ConvPlan`
    lane : :class:`int`
    spike : :class:`ConvSpike`
        The layout of the spikes on ``i``.
    width : :class:`int`
        Output columns ``Wo``.
    positions : :class:`int`
        Output positions ``Ho * Wo`` per channel.
    current_bits : :class:`int`

    Members
    -------
    i : ``In(stream.Signature(spike))``
    o : ``Out(stream.Signature(AccumulateOp(depth, current_bits), always_ready=True))``
        ``depth`` is ``plan.local_channels * positions``.
    end : ``Out(1)``
        Pulses when the last operation of a step is on ``o`` (or after it, when the lane had
        none).
    busy : ``Out(1)``
        A spike or an operation is in this lane (the input queue's head included).
    """
    def __init__(self, plan, lane, *, spike, width, positions, current_bits):
        if lane not in range(plan.lanes):
            raise ValueError(f"Lane must be one of the plan's {plan.lanes} lanes, not {lane!r}")
        self._plan, self._lane, self._spike = plan, lane, spike
        self._width, self._positions = width, positions
        depth = plan.local_channels * positions
        super().__init__({
            "i": In(stream.Signature(spike)),
            "o": Out(stream.Signature(AccumulateOp(depth, current_bits), always_ready=True)),
            "end": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        plan, lane = self._plan, self._lane
        taps, pointer = plan.taps, unsigned(plan.pointer_bits)
        spike_layout = self._spike
        target, value_shape = spike_layout["tgt"].shape, spike_layout["value"].shape
        segment_layout = data.StructLayout({"start": pointer, "count": pointer, "tgt": target,
                                            "value": value_shape, "bank": 1, "end": 1})

        # ---- Record: one read per spike gives the pointers of all its kernel rows. --------
        records = m.submodules.records = memory.Memory(
            shape=data.ArrayLayout(data.ArrayLayout(pointer, taps + 1), taps),
            depth=len(plan.records[lane]), init=plan.records[lane])
        record_rd = records.read_port()
        spike, spike_valid = Signal(spike_layout), Signal()

        # ---- Rows: one segment per non-empty kernel row, lowest first; bit `taps` is the end.
        rows = Signal(taps + 1)                      # rows still to send
        row_start = [Signal(pointer, name=f"row_start{q}") for q in range(taps)]
        row_count = [Signal(pointer, name=f"row_count{q}") for q in range(taps)]
        row_spike = Signal(spike_layout)
        m.submodules.segments = segments = fifo.SyncFIFO(width=segment_layout.size,
                                                         depth=SEGMENT_QUEUE_DEPTH)
        row, any_row = lowest_set_bit(m, rows, name="row")
        send = any_row & segments.w_rdy
        rows_done = ~any_row | (send & (clear_lowest(rows) == 0))
        load = spike_valid & rows_done
        take = ~spike_valid | load
        m.d.comb += [self.i.ready.eq(take), record_rd.addr.eq(self.i.p.rec),
                     record_rd.en.eq(take)]
        with m.If(take):
            m.d.sync += [spike_valid.eq(self.i.valid), spike.eq(self.i.p)]
        record = record_rd.data
        with m.If(send):
            m.d.sync += rows.eq(clear_lowest(rows))
        with m.If(load):
            hit = Cat((record[q][spike.qx0] != record[q][spike.qx_end])
                      & (spike.qy0 <= q) & (spike.qy1 >= q) for q in range(taps))
            m.d.sync += [rows.eq(Cat(Mux(spike.hits, hit, 0), spike.end)), row_spike.eq(spike)]
            m.d.sync += [row_start[q].eq(record[q][spike.qx0]) for q in range(taps)]
            m.d.sync += [row_count[q].eq(record[q][spike.qx_end] - record[q][spike.qx0])
                         for q in range(taps)]
        new = Signal(segment_layout)
        row_offset = Array(Const(q * self._width, target) for q in range(taps))
        m.d.comb += [
            new.start.eq(Array(row_start)[row]), new.count.eq(Array(row_count)[row]),
            new.tgt.eq(row_spike.tgt - row_offset[row]), new.value.eq(row_spike.value),
            new.bank.eq(row_spike.bank), new.end.eq(row == taps),
            segments.w_data.eq(new), segments.w_en.eq(send),
        ]

        # ---- Entries: one weight per cycle; a down-counter, so "last" is a constant compare.
        entries = m.submodules.entries = memory.Memory(
            shape=data.StructLayout({"weight": signed(plan.weight_bits),
                                     "local": unsigned(plan.local_bits),
                                     "qx": unsigned(plan.qx_bits)}),
            depth=max(1, len(plan.entries[lane])),
            init=[{"weight": w, "local": lc, "qx": qx} for w, lc, qx in plan.entries[lane]])
        entry_rd = entries.read_port()
        walking, entry, left = Signal(), Signal(pointer), Signal(pointer)
        walk = Signal(segment_layout)                # the segment being walked
        head = segment_layout(segments.r_data)
        pop = segments.r_rdy & (~walking | (left == 1))
        m.d.comb += [segments.r_en.eq(pop), entry_rd.addr.eq(entry)]
        with m.If(walking):
            m.d.sync += [entry.eq(entry + 1), left.eq(left - 1)]
            with m.If(left == 1):
                m.d.sync += walking.eq(0)
        with m.If(pop & ~head.end):
            m.d.sync += [walking.eq(1), entry.eq(head.start), left.eq(head.count), walk.eq(head)]
        read_valid, read_end, read = Signal(), Signal(), Signal(segment_layout)
        m.d.sync += [read_valid.eq(walking), read.eq(walk), read_end.eq(pop & head.end)]

        # ---- Product: the target current and weight x value, registered on `o`. ---------
        weight = entry_rd.data
        if value_shape == unsigned(1):
            product = Mux(read.value, weight.weight, 0)
        else:
            product = weight.weight * read.value
        addr = read.tgt + weight.local * self._positions - weight.qx
        m.d.sync += [
            self.o.valid.eq(read_valid), self.o.p.addr.eq(addr[:len(self.o.p.addr)]),
            self.o.p.delta.eq(product), self.o.p.bank.eq(read.bank), self.end.eq(read_end),
        ]
        m.d.comb += self.busy.eq(self.i.valid | spike_valid | (rows != 0) | segments.r_rdy
                                 | walking | read_valid | self.o.valid)
        return m


class ChannelPacker(wiring.Component):
    """Sweep rows in; spike words of ``CHUNK`` positions per output channel out, ascending.

    *Pack*: row ``r`` on ``i`` holds bit ``j`` for neuron ``r`` of lane ``j``: local channel
    ``r // (Ho * Wo)`` of the lane, position ``r % (Ho * Wo)``. Each lane's bits gather into
    words of ``CHUNK`` positions of one channel (a channel's last word may be shorter), which
    are written into one half of the spike-word memory as they complete. Two halves: the next
    sweep packs while this one is emitted. ``i`` never waits: a sweep takes (``reserve``) a
    free half (``room``) before it starts, and keeps it until the half has been emitted.

    *Emit*: the words of a full half, ascending in ``(k, word)``, read from the lane that owns
    channel ``k``, leave on ``o`` through a :class:`~hdl.queue.ReadQueue`, ``end`` on the last
    and ``first`` on the first when the sweep's first row had ``first``. The half is free once
    its last word has been read.

    Parameters
    ----------
    channels : list of list of :class:`int`
        The output channels of each lane (:attr:`hdl.conv.ConvPlan.channels`).
    positions : :class:`int`
        Output positions ``Ho * Wo`` per channel.

    Members
    -------
    i : ``In(stream.Signature(SpikeWord(lanes, rows), always_ready=True))``
        ``rows = local channels * positions``.
    room : ``Out(1)``
        A half is free for the next sweep.
    reserve : ``In(1)``
        The next sweep starts and takes that half (only while ``room`` is high).
    o : ``Out(stream.Signature(SpikeWord(CHUNK, K * ceil(positions / CHUNK))))``
    """
    def __init__(self, channels, positions):
        self._channels, self._positions = channels, positions
        self._local = max(len(ch) for ch in channels)
        self._words_out = -(-positions // CHUNK)           # words per channel
        self._words = sum(len(ch) for ch in channels) * self._words_out
        super().__init__({
            "i": In(stream.Signature(SpikeWord(len(channels), self._local * positions),
                                     always_ready=True)),
            "room": Out(1),
            "reserve": In(1),
            "o": Out(stream.Signature(SpikeWord(CHUNK, self._words))),
        })

    @property
    def words(self):
        """Spike words per step: ``K * ceil(positions / CHUNK)``."""
        return self._words

    def elaborate(self, platform):
        m = Module()
        channels, positions, words_out = self._channels, self._positions, self._words_out
        lanes, kout = len(channels), sum(len(ch) for ch in channels)
        half_words = self._local * words_out               # words per lane and half
        spikes = m.submodules.spikes = memory.Memory(
            shape=data.ArrayLayout(unsigned(CHUNK), lanes), depth=2 * half_words, init=[])
        spikes_wr, spikes_rd = spikes.write_port(), spikes.read_port()
        taken = [Signal(name=f"taken{h}") for h in range(2)]     # by a sweep, until emitted
        full = [Signal(name=f"full{h}") for h in range(2)]       # packed, until emitted
        first = [Signal(name=f"first{h}") for h in range(2)]
        next_half = Signal()                         # the half the next sweep takes
        m.d.comb += self.room.eq(~Array(taken)[next_half])
        with m.If(self.reserve):
            m.d.sync += next_half.eq(~next_half)
            for h in range(2):
                with m.If(next_half == h):
                    m.d.sync += taken[h].eq(1)

        # ---- Pack: position, bit in the word and word of the row being taken. -----------
        write_half, pos, bit = Signal(), Signal(range(positions)), Signal(range(CHUNK))
        word = Signal(range(half_words + 1))
        packed = Signal(data.ArrayLayout(unsigned(CHUNK), lanes))
        saw_first = Signal()
        take = self.i.valid
        word_now = [Mux(bit == 0, 0, packed[j]) | (self.i.p.bits[j] << bit)
                    for j in range(lanes)]
        m.d.comb += [spikes_wr.addr.eq(Mux(write_half, half_words, 0) + word),
                     spikes_wr.data.eq(Cat(*word_now)),
                     spikes_wr.en.eq(take & ((bit == CHUNK - 1) | (pos == positions - 1)))]
        with m.If(take):
            m.d.sync += [packed[j].eq(word_now[j]) for j in range(lanes)]
            m.d.sync += saw_first.eq(saw_first | self.i.p.first)
            with m.If(pos == positions - 1):
                m.d.sync += [pos.eq(0), bit.eq(0), word.eq(word + 1)]
            with m.Else():
                m.d.sync += [pos.eq(pos + 1), bit.eq(bit + 1)]
                with m.If(bit == CHUNK - 1):
                    m.d.sync += word.eq(word + 1)
            with m.If(self.i.p.end):
                m.d.sync += [write_half.eq(~write_half), word.eq(0), saw_first.eq(0)]
                for h in range(2):
                    with m.If(write_half == h):
                        m.d.sync += [full[h].eq(1), first[h].eq(saw_first | self.i.p.first)]

        # ---- Emit: (k, word) ascending, from the lane that owns channel k. ----------------
        m.submodules.words = words = ReadQueue(SpikeWord(CHUNK, self._words),
                                               depth=WORD_QUEUE_DEPTH)
        connect(m, words.o, flipped(self.o))
        lane_of, word_of = [0] * kout, [0] * kout
        for j, chans in enumerate(channels):
            for lc, k in enumerate(chans):
                lane_of[k], word_of[k] = j, lc * words_out
        read_half, emitting, fetching = Signal(), Signal(), Signal()
        k, in_channel = Signal(range(kout)), Signal(range(words_out))
        index = Signal(range(self._words))
        issue = fetching & words.room
        m.d.comb += spikes_rd.addr.eq(Mux(read_half, half_words, 0)
                                      + Array(Const(w, range(half_words)) for w in word_of)[k]
                                      + in_channel)
        with m.If(~emitting & Array(full)[read_half]):
            m.d.sync += [emitting.eq(1), fetching.eq(1), index.eq(0), k.eq(0),
                         in_channel.eq(0)]
        with m.If(issue):
            m.d.sync += index.eq(index + 1)
            with m.If(in_channel == words_out - 1):
                m.d.sync += [in_channel.eq(0), k.eq(k + 1)]
            with m.Else():
                m.d.sync += in_channel.eq(in_channel + 1)
            with m.If(index == self._words - 1):
                m.d.sync += fetching.eq(0)
        arrive, arrive_lane, arrive_index = Signal(), Signal(range(lanes)), Signal.like(index)
        m.d.sync += [arrive.eq(issue), arrive_index.eq(index),
                     arrive_lane.eq(Array(Const(j, range(lanes)) for j in lane_of)[k])]
        last = arrive_index == self._words - 1
        m.d.comb += [
            words.issue.eq(issue),
            words.i.valid.eq(arrive),
            words.i.p.bits.eq(spikes_rd.data[arrive_lane]),
            words.i.p.index.eq(arrive_index),
            words.i.p.end.eq(last),
            words.i.p.first.eq(Array(first)[read_half] & (arrive_index == 0)),
        ]
        with m.If(arrive & last):                    # the half's last word has been read
            m.d.sync += [emitting.eq(0), read_half.eq(~read_half)]
            for h in range(2):
                with m.If(read_half == h):
                    m.d.sync += [taken[h].eq(0), full[h].eq(0)]
        return m
