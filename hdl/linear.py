"""Event-driven linear layer: sparse weights, L accumulate lanes, neuron sweep, compressor."""
import math

import numpy as np
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from models.golden import current_bits

from .accumulator import BankedAccumulator, SweepRequest
from .bitmap import EventBitmap
from .compress import SpikeCompressor
from .contract import EngineBase, check_bool, check_int, check_layer, check_value_shape
from .cycles import activity, linear_estimate, lower_bound
from .event import EventLayout
from .lane import LinearLane, register_lane
from .lsb import CHUNK
from .neuron import check_neuron
from .queue import ReadQueue, full_rate_depth
from .sweep import NeuronSweep, SweepCommand, live_rows
from .weights import FORMATS, bitmap_bits, choose_format, csr_bits, pack_linear

__all__ = ["LinearEngine", "StepSequencer", "DenseInputs", "check_bool", "check_int",
           "default_queue_depth", "value_max"]

#: Slots of the queues that cut a stream's combinational paths (the engine's input, the spike
#: words into the compressor): two take a transfer every cycle (a ReadQueue whose "reads"
#: arrive at once), their room is one register bit, their counters two bits.
STREAM_SLOTS = 2


def _enqueue(m, producer, queue, *, enable=1):
    """Drive ``queue`` (a :class:`~hdl.queue.ReadQueue`) from the stream ``producer``, which
    it accepts (while ``enable``) whenever the queue has room: ready from a register, payload
    straight into a slot."""
    take = producer.valid & queue.room & enable
    m.d.comb += [queue.issue.eq(take), queue.i.valid.eq(take), queue.i.p.eq(producer.p),
                 producer.ready.eq(queue.room & enable)]


def value_max(shape):
    """Largest magnitude an input value of ``shape`` can have."""
    shape = Shape.cast(shape)
    return 2 ** (shape.width - 1) if shape.signed else 2 ** shape.width - 1


def default_queue_depth(lanes):
    """Events a lane queues by default: three for one or two lanes, eight for more.

    Three rows queued let a lane walk one row per cycle (the row memory's read is in flight
    while two wait: :func:`hdl.queue.full_rate_depth`); that is all one or two lanes need (the
    digits MLP and a 256 x 256 layer, ``benchmarks/bench_lanes.py``, step for step as with
    eight). Lanes that share the events need room to run ahead of each other: eight matched the
    step intervals of the engine's former 8-deep FIFOs at 8 and 16 lanes, where six and four
    lost up to 2 %.
    """
    return full_rate_depth(1) if lanes <= 2 else 8


class LinearEngine(EngineBase):
    """One linear SNN layer, event-driven (DESIGN.md sections 3, 5 and 6).

    Per input event ``(i, v)`` every lane (:class:`hdl.lane.LinearLane`) walks its share of row
    ``i``'s non-zero weights, one per cycle, and adds ``w * v`` into the current of the target
    neuron in its :class:`~hdl.accumulator.BankedAccumulator`; lane ``k`` owns the neurons ``j``
    with ``j % L == k``, with its own weights and currents, so lanes never collide. A
    :class:`StepSequencer` alternates the steps between the accumulators' two banks and, once a
    closed step has left every lane, has a :class:`~hdl.sweep.NeuronSweep` update ``U`` neurons
    per cycle (DESIGN.md section 3, bit for bit), reading and clearing their currents, and hand
    the spike words to a :class:`~hdl.compress.SpikeCompressor` that emits the step's spikes in
    ascending address. Work per step: about ``max(A / L, S, N / U)`` cycles for ``A`` active
    synaptic operations, ``S`` events and ``N`` neurons, instead of ``n_in * n_out / L``; a step
    is accumulated while the one before it is swept.

    ``first`` on an input event marks the first step of a sample: the sweep of that step takes
    the previous potential and spike as zero, so no clearing pass is needed. After reset the
    accumulators clear their banks (``ceil(n_out / U)`` cycles) before the engine accepts input.

    Parameters
    ----------
    layer : :class:`models.bundle.Layer`
        A ``linear`` layer with weights, bias and neuron parameters.
    value_shape : shape-castable
        Shape of input event values (``unsigned(1)`` for spikes from another layer).
    lanes : :class:`int`
        Number of accumulate lanes ``L``.
    fmt : :class:`str` or ``None``
        Weight format (``"csr"``, ``"bitmap"`` or ``"dense"``, see :mod:`hdl.weights`);
        ``None`` picks the one that stores the fewest bits.
    dense : :class:`bool`
        Dense baseline: buffer the step's inputs, then visit every input and every weight
        (zeros included) on the same lanes. Forces ``fmt="dense"``.
    fifo_depth : :class:`int` or ``None``
        Events each lane can queue; deeper queues even out the lanes' work between events.
        Default :func:`default_queue_depth` of the lanes.
    updates : :class:`int` or ``None``
        Neuron updates per cycle ``U`` of the sweep: ``L`` times a power of two (each lane's
        neurons are split into ``U / L`` sub-banks, swept in parallel). Default ``L``.
    counters : :class:`bool`
        Add the ``counters`` member: the work counters of :class:`hdl.event.EngineCounters`.
    store : :class:`hdl.wload.WeightStore` or ``None``
        Weights loaded at run time: the weight and bias memories and the threshold register
        with the store, start empty and are laid out by the layer's shape (bitmap unless
        ``fmt`` says otherwise; entries for half of each lane's bank, or all of them for a
        denser bundle; currents for the largest sum weights of ``weight_bits`` can make).
        Not with ``dense``.

    Members
    -------
    i : ``In(stream.Signature(EventLayout(n_in, value_shape)))``
    o : ``Out(stream.Signature(EventLayout(n_out)))``
    counters : ``Out(EngineCounters())``, only with ``counters=True``
    load : ``In(hdl.wload.WEIGHT_WRITE)``, only with a ``store``: the memories' write bus

    The engine contract (docs/architecture.md, "Engine contract"): :attr:`layer`,
    :attr:`lanes`, :attr:`updates`, :attr:`weight_format`, :attr:`weight_bits_stored`,
    :attr:`weight_bits_dense`, :attr:`weight_figures`, :attr:`current_bits`, :attr:`dense`,
    :meth:`work` and :meth:`estimate_cycles`.
    """
    def __init__(self, layer, *, value_shape=unsigned(1), lanes=1, fmt=None, dense=False,
                 fifo_depth=None, updates=None, counters=False, store=None):
        check_layer(layer, "linear")
        check_neuron(layer.neuron)
        value_shape = check_value_shape(value_shape)
        check_int("Lanes", lanes, 1)
        if fifo_depth is None:
            fifo_depth = default_queue_depth(lanes)
        check_int("FIFO depth", fifo_depth, 2)
        if lanes > 16:
            raise ValueError(f"Lanes must be at most 16, not {lanes}")
        if updates is None:
            updates = lanes
        check_int("Updates", updates, 1)
        ratio = updates // lanes
        if updates % lanes or ratio & (ratio - 1) or updates > 64:
            raise ValueError(f"Updates must be the lanes ({lanes}) times a power of two, at "
                             f"most 64, not {updates}")
        if dense:
            if fmt not in (None, "dense"):
                raise ValueError(f"Dense baseline needs weight format 'dense', not {fmt!r}")
            fmt = "dense"
        if store is not None:
            if dense:
                raise ValueError("Weights loaded at run time need the event-driven engine, "
                                 "not the dense baseline")
            fmt = fmt or "bitmap"        # the layout of every bitmap is the layer's shape alone
        if fmt is None:
            fmt = choose_format(layer.weight, lanes=lanes, weight_bits=layer.weight_bits)
        if fmt not in FORMATS:
            raise ValueError(f"Weight format must be one of "
                             f"{', '.join(repr(f) for f in FORMATS)}, not {fmt!r}")
        self._lanes = lanes
        self._dense, self._fifo_depth, self._updates = bool(dense), fifo_depth, updates
        self._store = store
        if store is None:
            self._packed = pack_linear(layer.weight, lanes=lanes, fmt=fmt,
                                       weight_bits=layer.weight_bits)
            self._current_bits = current_bits(layer, value_max(value_shape))
        else:
            self._packed, self._current_bits = self._register(store, layer, value_shape, fmt)
        super().__init__(layer, value_shape=value_shape, counters=counters,
                         load=store is not None)
        if store is not None:
            self._loads = [register_lane(store, self._packed, k, f"{layer.name}.lane{k}")
                           for k in range(lanes)]
            self._bias_loads = self._register_bias(store, layer)
            p = layer.neuron.potential_bits
            self._threshold_load = store.add(f"{layer.name}.threshold", unsigned(p - 1), 1,
                                             [layer.neuron.threshold])

    def _register(self, store, layer, value_shape, fmt):
        """Weights loaded at run time: memories sized by the layer's shape alone, and the
        facts the hardware fixes, for the store's ident.

        A lane's entry memory holds half of its bank's weights (any bundle of the shape at
        least 50 % sparse in every lane), or all of them for a denser bundle; the currents
        hold the largest sum any weights of ``weight_bits`` can make, and a bias whose
        currents stay within that width (checked)."""
        lanes = self._lanes
        bank = -(-layer.n_out // lanes)
        most = max(int(np.count_nonzero(layer.weight[k::lanes])) for k in range(lanes))
        full = layer.n_in * bank
        capacity = -(-full // 2) if most <= -(-full // 2) else full
        packed = pack_linear(layer.weight, lanes=lanes, fmt=fmt, weight_bits=layer.weight_bits,
                             capacity=capacity)
        max_x = value_max(value_shape)
        bound = layer.n_in * 2 ** (layer.weight_bits - 1) * max_x
        cb = bound.bit_length() + 1
        need = current_bits(layer, max_x)
        if need > cb:
            raise ValueError(f"Bias makes currents of {need} bits; weights loaded at run time "
                             f"hold {cb} for this shape")
        neuron = {k: v for k, v in layer.neuron.to_json().items() if k != "threshold"}
        store.describe(layer=layer.name, kind="linear", n_in=layer.n_in, n_out=layer.n_out,
                       weight_bits=layer.weight_bits, value_shape=repr(Shape.cast(value_shape)),
                       bias=layer.bias is not None, lanes=lanes, updates=self._updates,
                       fmt=fmt, current_bits=cb, neuron=neuron)
        return packed, cb

    def _register_bias(self, store, layer):
        """Per sweep column, its bias memory (``None`` for a layer without bias)."""
        if layer.bias is None:
            return None
        rows, width = self.rows, self._updates
        bias = np.zeros(rows * width, dtype=np.int64)
        bias[:layer.n_out] = layer.bias_vector()
        bias = bias.reshape(rows, width)
        return [store.add(f"{layer.name}.bias{u}", signed(self._current_bits), rows,
                          [int(b) for b in bias[:, u]]) for u in range(width)]

    @property
    def packed(self):
        """The weights as laid out in the lanes' memories (:class:`hdl.weights.PackedWeights`)."""
        return self._packed

    @property
    def weight_format(self):
        """Weight memory format: ``"csr"``, ``"bitmap"`` or ``"dense"``."""
        return self._packed.fmt

    @property
    def weight_bits_stored(self):
        """Bits of the weight memories: every lane's entries and row records."""
        return self._packed.stored_bits

    @property
    def weight_figures(self):
        """Further weight figures for reports: the bits CSR and bitmap store, by formula."""
        w, wb = self._layer.weight, self._layer.weight_bits
        return {"csr_formula_bits": csr_bits(w, wb), "bitmap_formula_bits": bitmap_bits(w, wb)}

    def estimate_cycles(self, active_inputs, out_events):
        """Cycles of steps with the given input activity: ``(lower_bound, estimate)``.

        The bound is DESIGN.md section 7's (:func:`hdl.cycles.lower_bound`), the estimate
        :func:`hdl.cycles.linear_estimate`; ``out_events`` (the steps' output spikes) does not
        change either. Numbers for one step, int64 arrays ``[steps]`` for a batch.
        """
        act = activity(active_inputs, self._layer.n_in)
        rows = []
        for e, a in zip(*self._work(act)):
            e, a = math.ceil(e), math.ceil(a)
            n, lanes, updates = self._layer.n_out, self._lanes, self._updates
            rows.append((lower_bound(a, e, n, lanes=lanes, updates=updates),
                         linear_estimate(a, e, n, lanes=lanes, updates=updates)))
        return tuple(act.answer(np.array(col, dtype=np.int64)) for col in zip(*rows))

    def _work(self, act):
        layer = self._layer
        if self._dense:
            row_sops = np.full(layer.n_in, layer.n_out, dtype=np.int64)
        else:
            row_sops = np.count_nonzero(layer.weight, axis=0).astype(np.int64)
        if act.density is not None:
            return (np.array([act.density * layer.n_in]),
                    np.array([act.density * row_sops.sum()]))
        return np.count_nonzero(act.active, axis=1), act.active.astype(np.int64) @ row_sops

    @property
    def rows(self):
        """Rows of the neuron sweep: ``ceil(n_out / updates)``, one per sweep cycle."""
        return -(-self._packed.bank_size // (self._updates // self._lanes))

    def elaborate(self, platform):
        # Input -> step sequencer -> L lanes (each: event queue, row reader, walker, weight
        # reader) -> L banked accumulators -> neuron sweep -> spike compressor -> output.
        #
        # Lane k owns neurons j = p * L + k (p: its local index). The sweep reads U = L * sub
        # neurons per cycle: accumulator k keeps its currents in sub sub-banks (p = row * sub
        # + s), and column s * L + k of the sweep is its sub-bank s, so the sweep's neuron
        # row * U + s * L + k is (row * sub + s) * L + k: exactly lane k's neuron p.
        m = Module()
        layer, pw, lanes = self._layer, self._packed, self._lanes
        vshape, cb, rows, width = self._value_shape, self._current_bits, self.rows, self._updates
        sub = width // lanes
        depth = rows * sub                           # currents per bank, padded to full rows

        # ---- Input: events land in registers (the event-driven engine's input queue: its
        # room is a register, so no ready logic of ours reaches the producer, and nothing of
        # the producer's reaches ours); the dense baseline first sums a step's events per
        # input, then offers every input, zeros included, in order.
        if self._dense:
            m.submodules.inputs = inputs = DenseInputs(layer.n_in, value_shape=vshape)
        else:
            m.submodules.inputs = inputs = ReadQueue(self.i.p.shape(), depth=STREAM_SLOTS)
        event = inputs.o

        # ---- Step sequencer: banks per step, the event broadcast, closed steps to the sweep.
        m.submodules.steps = steps = StepSequencer(rows)
        m.d.comb += [
            steps.i.valid.eq(event.valid), event.ready.eq(steps.i.ready),
            steps.i.p.work.eq(1 if self._dense else event.p.value != 0),
            steps.i.p.last.eq(event.p.last), steps.i.p.first.eq(event.p.first),
        ]

        # ---- Lanes and their accumulators. An accumulator is ready once its reset clear is
        # over, and from then on takes an operation every cycle: the engine takes no input
        # before that, and the lanes never wait for it.
        # Events with work have a non-zero value: a one-bit value is 1, so lanes carry none.
        spikes = vshape == unsigned(1) and not self._dense
        lane_value = unsigned(0) if spikes else vshape
        room, busy, ops, accumulators = [], [], [], []
        for k in range(lanes):
            load = {} if self._store is None else {"loads": self._loads[k],
                                                   "store": self._store}
            lane = LinearLane(pw, k, value_shape=lane_value, depth=depth, current_bits=cb,
                              queue_depth=self._fifo_depth, **load)
            if load:
                m.d.comb += lane.load.eq(self.load)
            acc = BankedAccumulator(depth, current_bits=cb, sweep_width=sub)
            m.submodules[f"lane{k}"], m.submodules[f"current{k}"] = lane, acc
            wiring.connect(m, lane.o, acc.i)
            m.d.comb += [lane.i.valid.eq(steps.push), lane.i.p.addr.eq(event.p.addr),
                         lane.i.p.value.eq(event.p.value), lane.i.p.bank.eq(steps.bank)]
            room.append(lane.room)
            busy.append(lane.busy | acc.busy)
            ops.append(acc.i.valid)
            accumulators.append(acc)
        cleared = Cat(*(acc.i.ready for acc in accumulators)).all()
        if self._dense:
            m.d.comb += [inputs.i.valid.eq(self.i.valid & cleared), inputs.i.p.eq(self.i.p),
                         self.i.ready.eq(inputs.i.ready & cleared)]
        else:
            _enqueue(m, self.i, inputs, enable=cleared)
        m.d.comb += [steps.room.eq(Cat(*room).all()),
                     steps.busy.eq(Cat(*(Cat(*(b[n] for b in busy)).any() for n in range(2))))]

        # ---- Neuron sweep over the accumulators' rows, spikes into the compressor.
        bias = np.zeros(rows * width, dtype=np.int64)
        bias[:layer.n_out] = layer.bias_vector()
        if self._store is None:
            loaded = {"bias": bias.reshape(rows, width)}
        else:
            loaded = {"bias_load": self._bias_loads, "threshold_load": self._threshold_load,
                      "store": self._store}
        m.submodules.sweep = sweep = NeuronSweep(
            layer.neuron, current_bits=cb, rows=rows, width=width,
            live=live_rows(layer.n_out, width), **loaded)
        if self._store is not None:
            m.d.comb += sweep.load.eq(self.load)
        wiring.connect(m, steps.o, sweep.i)
        read = sweep.o_read
        m.d.comb += [steps.i_read.valid.eq(read.valid), steps.i_read.p.eq(read.p),
                     sweep.i_current.valid.eq(accumulators[0].o_sweep.valid)]
        for k, acc in enumerate(accumulators):
            m.d.comb += [acc.i_sweep.valid.eq(read.valid), acc.i_sweep.p.eq(read.p)]
            m.d.comb += [sweep.i_current.p[s * lanes + k].eq(acc.o_sweep.p[s])
                         for s in range(sub)]
        # A two-slot queue between the sweep's word queue and the compressor: the compressor
        # then loads its word from a 2:1 multiplexer, not from the sweep queue's eight slots.
        m.submodules.words = words = ReadQueue(sweep.o.p.shape(), depth=STREAM_SLOTS)
        m.submodules.compressor = compressor = SpikeCompressor(width=width, n=layer.n_out)
        _enqueue(m, sweep.o, words)
        wiring.connect(m, words.o, compressor.i)
        wiring.connect(m, compressor.o, wiring.flipped(self.o))

        if self._counters:
            swept = read.valid & (read.p.row == rows - 1)
            m.d.sync += [self.counters.steps.eq(self.counters.steps + swept),
                         self.counters.sops.eq(self.counters.sops + sum(ops))]
        return m


class StepMark(data.StructLayout):
    """``{work, last, first}``: an input event as the step sequencer sees it.

    ``work``: the lanes have work for it (a non-zero value, or any input of a dense step).
    """
    def __init__(self):
        super().__init__({"work": unsigned(1), "last": unsigned(1), "first": unsigned(1)})


class StepSequencer(wiring.Component):
    """Give every step a current bank; hand a closed step to the sweep once it has drained.

    Steps alternate between the accumulators' two current banks, so the lanes accumulate one
    step while the sweep updates the neurons of the step before. An event on ``i`` is taken
    when every lane has room (``room``) and the step's bank is free (no closed step in it); one
    with ``work`` goes to the lanes in that cycle (``push``, into bank ``bank``). ``last``
    closes the step: its bank waits for the sweep, and the next events go into the other bank.
    ``first`` on any event of a step makes it open a sample.

    A closed step goes to the sweep on ``o`` (its bank and ``first``), oldest first, once no
    lane holds work for its bank: ``busy`` (which may show the lanes a cycle late) and the
    events pushed in the last two cycles, registered, so the decision comes from a register.
    The bank is free again the cycle after the sweep's read requests (``i_read``) reach its
    last row (registered): every current of it has then been read and cleared. Whether the
    receiving bank is free is a register too.

    Parameters
    ----------
    rows : :class:`int`
        Rows of the sweep.

    Members
    -------
    i : ``In(stream.Signature(StepMark()))``
    room : ``In(1)``
    push : ``Out(1)``
        The event taken in this cycle goes to the lanes.
    bank : ``Out(1)``
        The bank of the step being received.
    busy : ``In(2)``
        Bit ``b``: a lane held work for bank ``b`` in this cycle or the one before (needed
        only for the oldest step's bank).
    o : ``Out(stream.Signature(SweepCommand()))``
    i_read : ``In(stream.Signature(SweepRequest(rows), always_ready=True))``
    """
    def __init__(self, rows):
        self._rows = check_int("Rows", rows, 1)
        super().__init__({
            "i": In(stream.Signature(StepMark())),
            "room": In(1),
            "push": Out(1),
            "bank": Out(1),
            "busy": In(2),
            "o": Out(stream.Signature(SweepCommand())),
            "i_read": In(stream.Signature(SweepRequest(rows), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        receiving = Signal()                         # bank of the step being received
        fresh = Signal()                             # ...which opens a sample
        free = Signal(init=1)                        # ...which is free: it may take events
        closed = Signal(2)                           # per bank: a closed step waits for the sweep
        opens = Signal(2)                            # per bank: that step opens a sample
        swept = Signal(2)                            # per bank: its rows are being read
        oldest = Signal()                            # bank of the oldest closed step
        drained = Signal(2)                          # per bank: no work in the lanes

        def bit(value, index):
            return value.bit_select(index, 1)

        # The sweep read a bank's last row a cycle ago (registered: the sweep's issue decision
        # and the row compare stay out of this cycle's `free`).
        read = self.i_read
        last_row, last_bank = Signal(), Signal()
        m.d.sync += [last_row.eq(read.valid & (read.p.row == self._rows - 1)),
                     last_bank.eq(read.p.bank)]
        freeing = Cat(last_row & ~last_bank, last_row & last_bank)

        m.d.comb += [self.i.ready.eq(self.room & free), self.bank.eq(receiving)]
        take = self.i.valid & self.i.ready
        m.d.comb += self.push.eq(take & self.i.p.work)
        with m.If(take & self.i.p.last):
            other = ~receiving
            m.d.sync += [bit(closed, receiving).eq(1),
                         bit(opens, receiving).eq(fresh | self.i.p.first),
                         fresh.eq(0), receiving.eq(other),
                         free.eq(~bit(closed, other) & (~bit(swept, other) | bit(freeing, other)))]
        with m.Else():
            with m.If(take & self.i.p.first):
                m.d.sync += fresh.eq(1)
            with m.If(bit(freeing, receiving)):
                m.d.sync += free.eq(1)

        # Work pushed in this cycle or the one before may not show in `busy` yet.
        pushed = Cat(self.push & ~receiving, self.push & receiving)
        pushed_before = Signal(2)
        m.d.sync += [pushed_before.eq(pushed),
                     drained.eq(~(self.busy | pushed | pushed_before))]
        m.d.comb += [self.o.valid.eq(bit(closed, oldest) & bit(drained, oldest)),
                     self.o.p.bank.eq(oldest), self.o.p.first.eq(bit(opens, oldest))]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [bit(closed, oldest).eq(0), bit(swept, oldest).eq(1), oldest.eq(~oldest)]
        with m.If(last_row):
            m.d.sync += bit(swept, last_bank).eq(0)
        return m


class DenseInputs(wiring.Component):
    """The dense baseline's input: a step's events summed per input, then every input in order.

    An :class:`~hdl.bitmap.EventBitmap` in dense mode adds up each input's values over the
    step (wrapping to ``value_shape``) while the previous step is handed out; a
    :class:`~hdl.compress.SpikeCompressor` over its all-ones words gives every input address
    in ascending order, and the bitmap looks each one's sum up (0 for an input without events).
    ``first`` and ``last`` frame the step as on ``i``.

    Parameters
    ----------
    n_in : :class:`int`
    value_shape : shape-castable

    Members
    -------
    i : ``In(stream.Signature(EventLayout(n_in, value_shape)))``
    o : ``Out(stream.Signature(EventLayout(n_in, value_shape)))``
    """
    def __init__(self, n_in, *, value_shape):
        self._n_in, self._value_shape = n_in, value_shape
        super().__init__({
            "i": In(stream.Signature(EventLayout(n_in, value_shape))),
            "o": Out(stream.Signature(EventLayout(n_in, value_shape))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.bitmap = bitmap = EventBitmap(self._n_in, value_shape=self._value_shape,
                                                   chunk=CHUNK, dense=True)
        m.submodules.compressor = compressor = SpikeCompressor(width=CHUNK, n=self._n_in)
        wiring.connect(m, wiring.flipped(self.i), bitmap.i)
        wiring.connect(m, bitmap.o, compressor.i)
        wiring.connect(m, compressor.o, bitmap.i_lookup)
        wiring.connect(m, bitmap.o_lookup, wiring.flipped(self.o))
        return m
