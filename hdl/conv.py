"""Event-driven convolution engine: spike compression, sparse kernels, conflict-free lanes.

For every input spike ``(c, y, x)`` with value ``v`` the engine adds ``v`` times the non-zero
weights of kernel slice ``c`` into the output currents the spike touches (PyTorch
cross-correlation, any stride, zero padding), and never visits a silent input or a zero weight.
The step's inputs are compressed once, channel after channel, into a stream of active positions;
every output channel is served from that one stream, so nothing is re-scanned per batch of output
channels.

:func:`plan_conv` lays the weights out for the lanes and :func:`conv_work` counts the work the
engine does per input address: both are integer Python, beside the component they describe.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from amaranth import *
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from models.bundle import Layer
from models.golden import current_bits

from .compress import SpikeCompressor
from .cycles import activity, conv_estimate, conv_lane_work, lower_bound
from .event import EngineCounters, EventLayout
from .linear import check_bool, check_int, value_max
from .neuron import check_neuron, neuron_update

__all__ = [
    "CHUNK",
    "Conv2dEngine",
    "ConvPlan",
    "ConvCounters",
    "const_divmod",
    "conv_work",
    "plan_conv",
    "taps",
    "word_queue",
]

#: Spike bits scanned per cycle by the compressors (16 keeps the iCE40 find-first-set in one
#: cycle at the board clock, TOOLCHAIN.md).
CHUNK = 16


def const_divmod(value, divisor, max_value):
    """``(value // divisor, value % divisor)`` for an unsigned ``value <= max_value``.

    A power of two is a shift; any other divisor is a multiply by a rounded-up reciprocal and a
    shift, whose exactness is checked here for every value up to ``max_value``.
    """
    qw, rw = bits_for(max_value // divisor), bits_for(divisor - 1)
    if divisor & (divisor - 1) == 0:
        shift = divisor.bit_length() - 1
        rem = value[:shift] if shift else Const(0, 1)
        return (value >> shift)[:qw], rem
    vals = np.arange(max_value + 1, dtype=np.int64)
    for shift in range(bits_for(max_value), 48):
        mult = -(-(1 << shift) // divisor)
        if np.array_equal((vals * mult) >> shift, vals // divisor):
            break
    else:                                                   # pragma: no cover
        raise ValueError(f"No reciprocal of {divisor} is exact up to {max_value}")
    quot = ((value * mult) >> shift)[:qw]
    return quot, (value - quot * divisor)[:rw]


def word_queue(m, sink, word, arrive, *, name):
    """A four-word queue from a memory read into ``sink`` (a compressor's input stream).

    ``word`` (the read data and its tags) is valid in the cycle ``arrive`` is high, one cycle
    after the read was issued. Returns ``room``: a read may be issued in this cycle. ``room``
    depends on registers only, so no combinational path runs from ``sink.ready`` back into the
    memory's address and enable.
    """
    width = len(Value.cast(sink.payload))
    slots = [Signal(width, name=f"{name}{n}") for n in range(4)]
    head, count = Signal(2, name=f"{name}_head"), Signal(3, name=f"{name}_count")
    m.d.comb += [sink.valid.eq(count != 0), sink.payload.eq(Array(slots)[head])]
    pop = sink.valid & sink.ready
    with m.If(arrive):
        m.d.sync += Array(slots)[(head + count)[:2]].eq(word)
    with m.If(pop):
        m.d.sync += head.eq(head + 1)
    m.d.sync += count.eq(count + arrive - pop)
    return count + arrive < 4


def taps(kernel, stride, phase):
    """Kernel offsets ``d`` with ``d % stride == phase``: how many a spike of that phase uses."""
    return len(range(phase, kernel, stride))


@dataclass
class ConvPlan:
    """A conv2d layer's weights as laid out in the engine's lane memories.

    Lane ``j`` owns output channels ``channels[j]`` (its *local* channels ``0, 1, ...``). A
    kernel offset ``(dy, dx)`` is written ``(ry + stride * qy, rx + stride * qx)``: a spike whose
    padded position has phase ``(ry, rx)`` modulo the stride uses exactly the offsets of that
    phase. Per input channel ``c`` and phase, each lane keeps a *record* of ``taps`` rows of
    ``taps + 1`` pointers into its *entries*: entries ``[row[qx], row[qx + 1])`` of row ``qy``
    are the weights of offset ``(qy, qx)``, one ``(weight, local, qx)`` per non-zero weight
    (every weight in the dense baseline). One record read gives a spike all its rows; it visits
    only the rows and the column range that land inside the output.
    """
    lanes: int
    dense: bool
    weight_bits: int
    channels: list          # per lane: its output channels, ascending
    taps: int               # kernel rows (and columns) of phase 0: ceil(kernel / stride)
    phases: list            # [(ry, rx)] with at least one kernel offset, in record order
    records: list           # per lane: record c * len(phases) + phase = [taps rows of pointers]
    entries: list           # per lane: [(weight, local, qx)]

    @property
    def local_channels(self):
        """Output channels per lane (``ceil(out channels / lanes)``)."""
        return max(len(ch) for ch in self.channels)

    @property
    def local_bits(self):
        return ceil_log2(self.local_channels)

    @property
    def qx_bits(self):
        return ceil_log2(self.taps)

    @property
    def pointer_bits(self):
        return bits_for(max(len(e) for e in self.entries))

    @property
    def entry_width(self):
        return self.weight_bits + self.local_bits + self.qx_bits

    @property
    def record_width(self):
        return self.taps * (self.taps + 1) * self.pointer_bits

    @property
    def stored_entries(self):
        return sum(len(e) for e in self.entries)

    @property
    def entry_bits(self):
        """Bits of the entry memories (the stored weights with their channel and column)."""
        return self.stored_entries * self.entry_width

    @property
    def record_bits(self):
        """Bits of the record memories (the index)."""
        return sum(len(r) for r in self.records) * self.record_width

    @property
    def stored_bits(self):
        return self.entry_bits + self.record_bits


def _assign_channels(weight, lanes, dense):
    """Spread output channels over lanes, evening out their non-zero weights.

    Every lane gets ``ceil(K / L)`` or one fewer channels (the sweep is as long as the fullest
    lane); within that, heaviest channel first onto the lightest lane.
    """
    kout = weight.shape[0]
    per = -(-kout // lanes)
    full = kout - lanes * (per - 1)                     # lanes that get `per` channels
    cap = [per if j < full else per - 1 for j in range(lanes)]
    nnz = [weight[o].size if dense else int(np.count_nonzero(weight[o])) for o in range(kout)]
    load, channels = [0] * lanes, [[] for _ in range(lanes)]
    for o in sorted(range(kout), key=lambda o: (-nnz[o], o)):
        j = min((j for j in range(lanes) if len(channels[j]) < cap[j]),
                key=lambda j: (load[j], j))
        channels[j].append(o)
        load[j] += nnz[o]
    return [sorted(ch) for ch in channels]


def plan_conv(layer, *, lanes, dense=False):
    """Lay out ``layer``'s weights for ``lanes`` lanes (see :class:`ConvPlan`)."""
    weight = np.asarray(layer.weight, dtype=np.int64)
    k, s = layer.kernel, layer.stride
    cin = layer.in_shape[0]
    channels = _assign_channels(weight, lanes, dense)
    kq = taps(k, s, 0)
    phases = [(ry, rx) for ry in range(s) for rx in range(s) if taps(k, s, ry) and taps(k, s, rx)]
    records, entries = [], []
    for chans in channels:
        lane_records, lane_entries = [], []
        for c in range(cin):
            for ry, rx in phases:
                record = []
                for qy in range(kq):
                    row = []
                    for qx in range(kq):
                        row.append(len(lane_entries))
                        if qy >= taps(k, s, ry) or qx >= taps(k, s, rx):
                            continue
                        for local, o in enumerate(chans):
                            w = int(weight[o, c, ry + s * qy, rx + s * qx])
                            if w or dense:
                                lane_entries.append((w, local, qx))
                    record.append(row + [len(lane_entries)])
                lane_records.append(record)
        records.append(lane_records)
        entries.append(lane_entries)
    return ConvPlan(lanes, bool(dense), layer.weight_bits, channels, kq, phases, records,
                    entries)


def conv_work(layer, *, dense=False):
    """Synaptic operations one input address costs, int64 ``[n_in]``.

    An input ``(c, y, x)`` costs the non-zero weights of kernel slice ``c`` whose target lies
    inside the output (every weight whose target lies inside, in the dense baseline). A step's
    active SOPs ``A`` is the sum over its non-zero inputs (over all inputs when dense).
    """
    weight = np.asarray(layer.weight)
    _, h, w = layer.in_shape
    _, ho, wo = layer.out_shape
    k, s, p = layer.kernel, layer.stride, layer.padding
    per_tap = (np.full(weight.shape[1:], weight.shape[0]) if dense
               else np.count_nonzero(weight, axis=0))           # [C, k, k]

    def hits(size, out):                                        # [size, k]: target inside?
        pos = np.arange(size)[:, None] + p - np.arange(k)[None, :]
        return (pos % s == 0) & (pos >= 0) & (pos // s < out)

    hy, hx = hits(h, ho).astype(np.int64), hits(w, wo).astype(np.int64)
    work = np.einsum("yi,xj,cij->cyx", hy, hx, per_tap.astype(np.int64))
    return work.reshape(-1)


class ConvCounters(EngineCounters):
    """Work counters of a :class:`Conv2dEngine` built with ``counters=True``.

    :class:`hdl.event.EngineCounters` (``steps`` swept, ``sops`` done by the lanes) and more
    running totals: ``spikes`` input positions handed to the lanes (non-zero after summing;
    every position in the dense baseline), ``compress_cycles`` cycles the input compressor
    worked (from a step's start to its last event, less the cycles the lanes held it back),
    ``accumulate_cycles`` cycles the compressor or any lane had work, ``sweep_cycles`` cycles
    of neuron sweeps.

    ``accumulated`` is high for one cycle when a step's accumulation is complete; in that cycle
    ``step_spikes``, ``step_sops`` and ``step_compress_cycles`` are that step's own figures
    (steps overlap in the lanes, so differences of the totals would mix two steps). ``swept``
    is high for one cycle when a sweep ends.
    """
    def __init__(self):
        super().__init__({
            "spikes": unsigned(32), "compress_cycles": unsigned(32),
            "accumulate_cycles": unsigned(32), "sweep_cycles": unsigned(32),
            "step_spikes": unsigned(32), "step_sops": unsigned(32),
            "step_compress_cycles": unsigned(32), "accumulated": unsigned(1),
            "swept": unsigned(1),
        })


class Conv2dEngine(wiring.Component):
    """One conv2d SNN layer, event-driven (DESIGN.md sections 3, 5 and 6).

    A step flows through four stages, each double-buffered so that consecutive steps overlap:

    1. *Receive*: input events (any order; same-address values add up) set bits in a bitmap of
       the ``C * H * W`` inputs, one event per cycle, and add values into a value memory when
       inputs are multi-bit.
    2. *Accumulate*: a :class:`~hdl.compress.SpikeCompressor` scans the bitmap once,
       ``CHUNK`` inputs per cycle and one cycle per active input, in ascending ``(y, x, c)``
       (position-major, so consecutive spikes come from different kernel slices);
       a decoder turns each active input into its row range, column range and target base. Every
       lane takes every spike from a shared queue at its own pace and scatters the spike's
       non-zero weights of slice ``c`` into the currents of its own output channels: lane ``j``
       owns output channels ``plan.channels[j]`` with private weight and current memories, so
       the ``k x k`` targets of a spike are updated by all lanes at once without collisions.
       One synaptic operation per lane per cycle; edges cost nothing (rows and columns whose
       target lies outside the output are never read). Spikes carry their step's current bank
       and each step ends with a marker, so the lanes finish one step while starting the next.
    3. *Sweep*: ``L`` neurons per cycle (one per lane) get the DESIGN.md section 3 update, bit
       for bit (:func:`hdl.neuron.neuron_update`); the current is cleared as it is read, and the
       spikes go to a spike bitmap. A sweep may start while the previous one drains.
    4. *Output*: a second :class:`~hdl.compress.SpikeCompressor` emits the step's spikes in
       ascending ``(k, y, x)``, ``last`` on the final one, one ``value = 0`` event for an empty
       step, ``first`` on the first event of a sample.

    The accumulate read-modify-write is pipelined: the current memory's output is registered and
    the two sums still in flight are forwarded. ``first`` marks a sample's first step, whose sweep
    takes the previous potential and spike as zero. After reset the engine clears its input
    buffers and currents (``max(C*H*W / CHUNK, ceil(K / L) * Ho * Wo)`` cycles, ``C*H*W`` when
    a value memory is kept) before it accepts input. Input addresses ``>= C*H*W`` are ignored.
    Summed values of one address must fit ``value_shape`` (DESIGN.md section 4); they wrap
    otherwise.

    Parameters
    ----------
    layer : :class:`models.bundle.Layer`
        A ``conv2d`` layer with weights, bias and neuron parameters.
    value_shape : shape-castable
        Shape of input event values (``unsigned(1)`` for spikes from another layer).
    lanes : :class:`int`
        Accumulate lanes ``L`` (at most the number of output channels).
    dense : :class:`bool`
        Dense baseline: the same datapath visits every input position and every weight (zeros
        included) whose target lies inside the output.
    queue_depth : :class:`int`
        Spikes the lanes may drift apart by (a power of two); deeper queues even out the lanes.
    counters : :class:`bool`
        Add the ``counters`` member: the work counters of :class:`ConvCounters`.

    Members
    -------
    i : ``In(stream.Signature(EventLayout(C * H * W, value_shape)))``
    o : ``Out(stream.Signature(EventLayout(K * Ho * Wo)))``
    counters : ``Out(ConvCounters())``, only with ``counters=True``

    The engine contract (docs/architecture.md, "Engine contract"): :attr:`layer`,
    :attr:`lanes`, :attr:`updates`, :attr:`weight_format`, :attr:`weight_bits_stored`,
    :attr:`weight_bits_dense`, :attr:`weight_figures`, :attr:`current_bits`, :attr:`dense`,
    :meth:`work` and :meth:`estimate_cycles`.
    """
    def __init__(self, layer, *, value_shape=unsigned(1), lanes=1, dense=False, queue_depth=8,
                 counters=False):
        if not isinstance(layer, Layer) or layer.kind != "conv2d":
            raise TypeError(f"Layer must be a models.bundle.Layer of kind 'conv2d', "
                            f"not {layer!r:.80}")
        check_neuron(layer.neuron)
        kout = layer.out_shape[0]
        expect = [kout, layer.in_shape[0], layer.kernel, layer.kernel]
        if list(np.shape(layer.weight)) != expect:
            raise ValueError(f"Weight shape must be {expect}, not {list(np.shape(layer.weight))}")
        try:
            value_shape = Shape.cast(value_shape)
        except TypeError:
            raise TypeError(f"Value shape must be a shape, not {value_shape!r}") from None
        if value_shape.width < 1 or (value_shape.signed and value_shape.width < 2):
            raise ValueError(f"Value shape must be at least 1 bit wide (2 if signed), "
                             f"not {value_shape!r}")
        check_int("Lanes", lanes, 1)
        if lanes > kout:
            raise ValueError(f"Lanes must be at most the output channels ({kout}), not {lanes}")
        check_bool("Dense", dense)
        check_int("Queue depth", queue_depth, 2)
        if queue_depth & (queue_depth - 1):
            raise ValueError(f"Queue depth must be a power of two, not {queue_depth}")
        self._layer, self._value_shape = layer, value_shape
        self._lanes, self._dense, self._queue_depth = lanes, dense, queue_depth
        self._plan = plan_conv(layer, lanes=lanes, dense=dense)
        self._current_bits = current_bits(layer, value_max(value_shape))
        self._lane_work = None                      # conv_lane_work, made on first use
        self._counters = check_bool("Counters", counters)
        members = {
            "i": In(stream.Signature(EventLayout(layer.n_in, value_shape))),
            "o": Out(stream.Signature(EventLayout(layer.n_out))),
        }
        if counters:
            members["counters"] = Out(ConvCounters())
        super().__init__(members)

    @property
    def layer(self):
        """The layer this engine computes."""
        return self._layer

    @property
    def lanes(self):
        """Accumulate lanes ``L``: synaptic operations per cycle, across output channels."""
        return self._lanes

    @property
    def updates(self):
        """Neuron updates per cycle of the sweep: one per lane."""
        return self._lanes

    @property
    def dense(self):
        """Whether this is the dense baseline (every input position and weight visited)."""
        return self._dense

    @property
    def weight_format(self):
        """Weight memory format: ``"sparse-kernel"``, or ``"dense"`` for the dense baseline."""
        return "dense" if self._dense else "sparse-kernel"

    @property
    def weight_figures(self):
        """Further weight figures for reports: the bits of the entries and of the records."""
        return {"entry_bits": self._plan.entry_bits, "record_bits": self._plan.record_bits}

    def work(self, active_inputs):
        """Input positions and synaptic operations of steps with the given input activity.

        ``active_inputs`` as :func:`hdl.cycles.activity` takes it. Returns ``(events, sops)``:
        numbers for one step, arrays ``[steps]`` for a batch. The dense baseline visits every
        input position, active or not.
        """
        act = activity(active_inputs, self._layer.n_in)
        events, lane_sops = self._work(act)
        return act.answer(events), act.answer(lane_sops.sum(axis=1))

    def estimate_cycles(self, active_inputs, out_events):
        """Cycles of steps with the given input activity: ``(lower_bound, estimate)``.

        The bound is DESIGN.md section 7's (:func:`hdl.cycles.lower_bound`, ``U = L``), the
        estimate :func:`hdl.cycles.conv_estimate`, paced by the busiest lane; ``out_events``
        are the steps' output spikes (a number, or one per step). Numbers for one step, int64
        arrays ``[steps]`` for a batch.
        """
        layer, lanes = self._layer, self._lanes
        act = activity(active_inputs, layer.n_in)
        events, lane_sops = self._work(act)
        rows = []
        for e, ls, o in zip(events, lane_sops, act.per_step(out_events)):
            e, o = math.ceil(e), math.ceil(o)
            ls = [math.ceil(v) for v in ls]
            rows.append((lower_bound(sum(ls), e, layer.n_out, lanes=lanes),
                         conv_estimate(ls, e, in_size=layer.n_in, out_shape=layer.out_shape,
                                       lanes=lanes, out_events=o)))
        return tuple(act.answer(np.array(col, dtype=np.int64)) for col in zip(*rows))

    def _work(self, act):
        """Per step: input positions visited, and each lane's synaptic operations."""
        if self._lane_work is None:
            self._lane_work = conv_lane_work(self._layer, self._plan.channels, dense=self._dense)
        lane_work, n_in = self._lane_work, self._layer.n_in
        if self._dense:
            return (np.full(act.steps, n_in),
                    np.repeat(lane_work.sum(axis=1)[None, :], act.steps, axis=0))
        if act.density is not None:
            return (np.array([act.density * n_in]),
                    act.density * lane_work.sum(axis=1)[None, :])
        return np.count_nonzero(act.active, axis=1), act.active.astype(np.int64) @ lane_work.T

    @property
    def plan(self):
        """The weight layout in the lanes' memories (:class:`ConvPlan`)."""
        return self._plan

    @property
    def current_bits(self):
        """Width of the synaptic current accumulators."""
        return self._current_bits

    @property
    def weight_bits_stored(self):
        """Bits of the weight memories: entries (weight, local channel, column) and records."""
        return self._plan.stored_bits

    @property
    def weight_bits_dense(self):
        """Bits of the plain dense kernel ``K * C * k * k * weight_bits``, for comparison."""
        return int(np.size(self._layer.weight)) * self._layer.weight_bits

    def elaborate(self, platform):
        m = Module()
        layer, plan = self._layer, self._plan
        cin, h, w = layer.in_shape
        kout, ho, wo = layer.out_shape
        s, p = layer.stride, layer.padding
        lanes, dense = self._lanes, self._dense
        neuron, cb = layer.neuron, self._current_bits
        vshape = self._value_shape
        binary = vshape == unsigned(1)
        keep_values = dense or not binary          # a value memory beside (or instead of) bits
        n_in, hw, howo = cin * h * w, h * w, ho * wo
        words_in = -(-n_in // CHUNK)
        local = plan.local_channels
        depth_cur = local * howo                     # neurons per lane
        words_out = -(-howo // CHUNK)                # spike words per output channel
        words_lane = local * words_out               # spike words per lane and step
        kq, n_phases = plan.taps, len(plan.phases)
        qd = self._queue_depth
        bias = layer.bias_vector().reshape(kout, howo)[:, 0] if layer.bias is not None \
            else np.zeros(kout, dtype=np.int64)

        tgt_shape = unsigned(bits_for((ho + kq) * wo + kq))
        spike_layout = data.StructLayout({
            "rec": unsigned(bits_for(cin * n_phases - 1)),   # record: c * phases + phase
            "qy0": unsigned(bits_for(kq - 1)), "qy1": unsigned(bits_for(kq - 1)),
            "qx0": unsigned(bits_for(kq - 1)), "qx1": unsigned(bits_for(kq - 1)),
            "tgt": tgt_shape,                        # by * Wo + bx: target of offset (0, 0)
            "value": vshape,
            "bank": unsigned(1),                     # current bank of the spike's step
            "end": unsigned(1),                      # no spike: the end marker of a step
        })
        seg_layout = data.StructLayout({
            "start": unsigned(plan.pointer_bits), "count": unsigned(plan.pointer_bits),
            "tgt": tgt_shape, "value": vshape, "bank": unsigned(1), "mark": unsigned(1),
        })
        entry_layout = data.StructLayout({
            "weight": signed(plan.weight_bits), "local": unsigned(plan.local_bits),
            "qx": unsigned(plan.qx_bits),
        })
        record_layout = data.ArrayLayout(data.ArrayLayout(unsigned(plan.pointer_bits), kq + 1),
                                         kq)
        state_layout = data.StructLayout({"u": signed(neuron.potential_bits), "s": unsigned(1)})
        cur_addr_bits = bits_for(depth_cur - 1)

        # ---- Reset: clear the input buffers and the currents before taking input. ------------
        clear_depth = max(words_in, depth_cur, n_in if keep_values else 1)
        clearing = Signal(init=1)
        clr = Signal(range(clear_depth))
        with m.If(clearing):
            m.d.sync += clr.eq(clr + 1)
            with m.If(clr == clear_depth - 1):
                m.d.sync += clearing.eq(0)

        # ---- Stage 1, receive: bitmap (and values) of the step, two buffers. -----------------
        bm_wr, bm_rd, val_wr, val_rd = [], [], [], []
        for b in range(2):
            if not dense:
                mem = memory.Memory(shape=CHUNK, depth=words_in, init=[])
                m.submodules[f"in_bits{b}"] = mem
                bm_wr.append(mem.write_port())
                bm_rd.append(mem.read_port(transparent_for=(bm_wr[b],)))
            if keep_values:
                mem = memory.Memory(shape=vshape, depth=n_in, init=[])
                m.submodules[f"in_values{b}"] = mem
                val_wr.append(mem.write_port())
                val_rd.append(mem.read_port(transparent_for=(val_wr[b],)))

        # The bitmap is position-major: input (c, y, x) is bit (y * W + x) * C + c, so the
        # compressor hands out the spikes of different input channels in turn and the lanes'
        # shares of consecutive spikes even out (channel after channel, one lane would carry
        # the heaviest kernel slice of each run). Address -> (c, pos) -> bit -> read -> write.
        wb = Signal()                                # buffer being received
        claimed = [Signal(name=f"in_claimed{b}") for b in range(2)]     # last event accepted
        in_full = [Signal(name=f"in_full{b}") for b in range(2)]        # last event written
        in_first = [Signal(name=f"in_first{b}") for b in range(2)]
        rx_first = Signal()
        m.d.comb += self.i.ready.eq(~clearing & ~Mux(wb, claimed[1], claimed[0]))
        accept = self.i.valid & self.i.ready
        in_addr, in_value = self.i.p.addr, self.i.p.value
        p1_valid, p1_buf, p1_close = Signal(), Signal(), Signal()
        p1_addr, p1_value = Signal(range(n_in)), Signal(vshape)
        m.d.sync += [
            p1_valid.eq(accept & (in_value != 0) & (in_addr < n_in)),
            p1_buf.eq(wb), p1_addr.eq(in_addr), p1_value.eq(in_value),
            p1_close.eq(accept & self.i.p.last),
        ]
        c_in, pos_in = const_divmod(p1_addr, hw, n_in - 1)
        p2_valid, p2_buf, p2_close = Signal(), Signal(), Signal()
        p2_c, p2_pos, p2_value = Signal(range(cin)), Signal(range(hw)), Signal(vshape)
        m.d.sync += [p2_valid.eq(p1_valid), p2_buf.eq(p1_buf), p2_close.eq(p1_close),
                     p2_c.eq(c_in), p2_pos.eq(pos_in), p2_value.eq(p1_value)]
        p2_bit = Signal(range(n_in))                 # read issued here, written back in p3
        m.d.comb += p2_bit.eq(p2_pos * cin + p2_c)
        p3_valid, p3_buf, p3_close = Signal(), Signal(), Signal()
        p3_bit, p3_value = Signal.like(p2_bit), Signal(vshape)
        m.d.sync += [p3_valid.eq(p2_valid), p3_buf.eq(p2_buf), p3_close.eq(p2_close),
                     p3_bit.eq(p2_bit), p3_value.eq(p2_value)]
        with m.If(accept):
            with m.If(self.i.p.last):
                m.d.sync += [wb.eq(~wb), rx_first.eq(0)]
                for b in range(2):
                    with m.If(wb == b):
                        m.d.sync += [claimed[b].eq(1),
                                     in_first[b].eq(rx_first | self.i.p.first)]
            with m.Else():
                m.d.sync += rx_first.eq(rx_first | self.i.p.first)
        # The compressor may read the buffer once the step's last write has landed.
        for b in range(2):
            with m.If(p3_close & (p3_buf == b)):
                m.d.sync += in_full[b].eq(1)

        # ---- Stage 2, accumulate: compressor, spike decoder, queue, lanes. --------------------
        # Two current banks, used by steps in turn. A bank is accumulating from the start of
        # its step's compression until every lane has passed the step's end marker, then full
        # until swept. The compressor moves on to the next step as soon as the bank is free, so
        # the lanes work on the tail of one step and the head of the next at once.
        rb = Signal()                                # next input buffer to compress
        cmp_busy, acc_buf, owned = Signal(), Signal(), Signal()
        cmp_bank = Signal()                          # bank of the step being compressed
        nb = Signal()                                # bank of the next step to compress
        compressed = Signal()                        # the compressor emitted the step's last
        ab = Signal()                                # bank of the oldest accumulating step
        acc_count = Signal(2)                        # steps accumulated, modulo 4
        accumulating = [Signal(name=f"accumulating{b}") for b in range(2)]
        cur_full = [Signal(name=f"cur_full{b}") for b in range(2)]
        cur_first = [Signal(name=f"cur_first{b}") for b in range(2)]
        start_acc = (~cmp_busy & ~clearing & Mux(rb, in_full[1], in_full[0])
                     & ~Mux(nb, accumulating[1] | cur_full[1], accumulating[0] | cur_full[0]))

        # Fetch the bitmap words (every position's mask in the dense baseline) into the
        # compressor, clearing each word a cycle after its read (the read port is transparent).
        m.submodules.in_compressor = icomp = SpikeCompressor(width=CHUNK, n=words_in * CHUNK)
        fetch_w = Signal(range(words_in))
        fetching = Signal()
        f_valid, f_index = Signal(), Signal(range(words_in))
        f_word = Signal.like(icomp.i.payload)
        f_room = word_queue(m, icomp.i, f_word, f_valid, name="in_words")
        f_issue = fetching & f_room
        m.d.sync += [f_valid.eq(f_issue), f_index.eq(fetch_w)]
        with m.If(f_issue):
            m.d.sync += fetch_w.eq(fetch_w + 1)
            with m.If(fetch_w == words_in - 1):
                m.d.sync += [fetching.eq(0), fetch_w.eq(0)]
        wclr_valid, wclr_addr = Signal(), Signal.like(fetch_w)
        m.d.sync += [wclr_valid.eq(f_issue), wclr_addr.eq(fetch_w)]
        if dense:
            tail = n_in - (words_in - 1) * CHUNK
            f_bits = Mux(f_index == words_in - 1, (1 << tail) - 1, (1 << CHUNK) - 1)
        else:
            f_bits = Mux(acc_buf, bm_rd[1].data, bm_rd[0].data)
        m.d.comb += [
            f_word.bits.eq(f_bits),
            f_word.index.eq(f_index),
            f_word.end.eq(f_index == words_in - 1),
        ]

        # Decoder: input address -> (c, y, x) -> (by, ry, bx, rx) -> row and column ranges.
        # All stages advance together, as long as the queue takes the spike at the end.
        ev = icomp.o
        d4_valid, d4_push = Signal(), Signal()
        queue_full = Signal()
        marking = Signal()                           # the step's end marker is due
        adv = ~marking & (~d4_valid | ~d4_push | ~queue_full)
        m.d.comb += ev.ready.eq(adv)

        v_valid, v_spike, v_last = Signal(), Signal(), Signal()
        r_q, c_q = const_divmod(ev.p.addr, cin, words_in * CHUNK - 1)   # bit -> (pos, c)
        v_c, v_r = Signal(range(cin)), Signal(range(hw))
        vclr_valid, vclr_addr = Signal(), Signal.like(ev.p.addr)
        m.d.sync += [vclr_valid.eq(adv & ev.valid & ev.p.value), vclr_addr.eq(ev.p.addr)]
        with m.If(adv):
            m.d.sync += [v_valid.eq(ev.valid), v_spike.eq(ev.valid & ev.p.value),
                         v_last.eq(ev.valid & ev.p.last), v_c.eq(c_q), v_r.eq(r_q)]
        if keep_values:
            v_value = Mux(acc_buf, val_rd[1].data, val_rd[0].data)
        else:
            v_value = Const(1, vshape)

        d2_valid, d2_spike, d2_last = Signal(), Signal(), Signal()
        d2_c, d2_value = Signal.like(v_c), Signal(vshape)
        y_q, x_q = const_divmod(v_r, w, hw - 1)
        d2_y, d2_x = Signal(range(h)), Signal(range(w))
        v_keep = v_spike & ((v_value != 0) if not dense else 1)
        with m.If(adv):
            m.d.sync += [d2_valid.eq(v_valid), d2_spike.eq(v_keep), d2_last.eq(v_last),
                         d2_c.eq(v_c), d2_value.eq(v_value), d2_y.eq(y_q), d2_x.eq(x_q)]

        d3_valid, d3_spike, d3_last = Signal(), Signal(), Signal()
        d3_c, d3_value = Signal.like(v_c), Signal(vshape)
        by_q, ry_q = const_divmod(d2_y + p, s, h - 1 + p)
        bx_q, rx_q = const_divmod(d2_x + p, s, w - 1 + p)
        d3_by, d3_ry = Signal(range((h - 1 + p) // s + 1)), Signal(range(s))
        d3_bx, d3_rx = Signal(range((w - 1 + p) // s + 1)), Signal(range(s))
        with m.If(adv):
            m.d.sync += [d3_valid.eq(d2_valid), d3_spike.eq(d2_spike), d3_last.eq(d2_last),
                         d3_c.eq(d2_c), d3_value.eq(d2_value),
                         d3_by.eq(by_q), d3_ry.eq(ry_q), d3_bx.eq(bx_q), d3_rx.eq(rx_q)]

        # Valid kernel rows qy: 0 <= qy < taps(ry) and 0 <= by - qy < Ho; columns alike.
        k = layer.kernel
        taps_tab = Array(Const(taps(k, s, r), range(kq + 1)) for r in range(s))

        def qrange(base, phase, out):
            n = taps_tab[phase]
            lo = Mux(base > out - 1, base - (out - 1), 0)
            hi = Mux(base < n - 1, base, n - 1)
            return lo, hi, (n == 0) | (lo > hi)

        qy0, qy1, y_none = qrange(d3_by, d3_ry, ho)
        qx0, qx1, x_none = qrange(d3_bx, d3_rx, wo)
        phase_tab = Array(Const(plan.phases.index((ry, rx)) if (ry, rx) in plan.phases else 0,
                                range(n_phases)) for ry in range(s) for rx in range(s))
        d4 = Signal(spike_layout)
        d4_last = Signal()
        with m.If(adv):
            m.d.sync += [
                d4_valid.eq(d3_valid), d4_push.eq(d3_spike & ~y_none & ~x_none),
                d4_last.eq(d3_last),
                d4.rec.eq(d3_c * n_phases + phase_tab[d3_ry * s + d3_rx]),
                d4.qy0.eq(qy0), d4.qy1.eq(qy1), d4.qx0.eq(qx0), d4.qx1.eq(qx1),
                d4.tgt.eq(d3_by * wo + d3_bx), d4.value.eq(d3_value), d4.bank.eq(cmp_bank),
            ]

        # The input buffer is free once the step's last spike has had its value read (and
        # cleared); the accumulation ends when the decoder is empty and every lane is idle.
        with m.If(start_acc):
            m.d.sync += [cmp_busy.eq(1), acc_buf.eq(rb), owned.eq(1), compressed.eq(0),
                         cmp_bank.eq(nb), nb.eq(~nb), fetching.eq(1), fetch_w.eq(0)]
            for b in range(2):
                with m.If(nb == b):
                    m.d.sync += [accumulating[b].eq(1),
                                 cur_first[b].eq(Mux(rb, in_first[1], in_first[0]))]
        with m.If(adv & v_valid & v_last):
            m.d.sync += [owned.eq(0), rb.eq(~rb)]
            for b in range(2):
                with m.If(acc_buf == b):
                    m.d.sync += [claimed[b].eq(0), in_full[b].eq(0)]
        with m.If(adv & d4_valid & d4_last):
            m.d.sync += marking.eq(1)
        with m.If(ev.valid & ev.ready & ev.p.last):
            m.d.sync += compressed.eq(1)

        # Input buffer ports: the receiver's, except while the accumulate stage owns a buffer.
        for b in range(2):
            mine = owned & (acc_buf == b)
            if not dense:
                m.d.comb += [bm_rd[b].addr.eq(Mux(mine, fetch_w, p2_bit >> 4)),
                             bm_rd[b].en.eq(1)]
                with m.If(clearing):
                    m.d.comb += [bm_wr[b].addr.eq(clr), bm_wr[b].en.eq(clr < words_in)]
                with m.Elif(p3_valid & (p3_buf == b)):
                    word = Mux(p3_buf, bm_rd[1].data, bm_rd[0].data)
                    m.d.comb += [bm_wr[b].addr.eq(p3_bit >> 4),
                                 bm_wr[b].data.eq(word | (Const(1, CHUNK) << p3_bit[:4])),
                                 bm_wr[b].en.eq(1)]
                with m.Elif(mine & wclr_valid):
                    m.d.comb += [bm_wr[b].addr.eq(wclr_addr), bm_wr[b].en.eq(1)]
            if keep_values:
                m.d.comb += [val_rd[b].addr.eq(Mux(mine, ev.p.addr, p2_bit)),
                             val_rd[b].en.eq(~mine | adv)]
                with m.If(clearing):
                    m.d.comb += [val_wr[b].addr.eq(clr), val_wr[b].en.eq(1)]
                with m.Elif(p3_valid & (p3_buf == b)):
                    old = Mux(p3_buf, val_rd[1].data, val_rd[0].data)
                    m.d.comb += [val_wr[b].addr.eq(p3_bit), val_wr[b].data.eq(old + p3_value),
                                 val_wr[b].en.eq(1)]
                with m.Elif(mine & vclr_valid):
                    m.d.comb += [val_wr[b].addr.eq(vclr_addr), val_wr[b].en.eq(1)]

        # Spike queue shared by the lanes; each lane reads it at its own pointer.
        qa = ceil_log2(qd)
        q_data = [Signal(spike_layout.size, name=f"queue{n}") for n in range(qd)]
        q_wp = Signal(qa + 1)
        q_rps = [Signal(qa + 1, name=f"queue_rp{j}") for j in range(lanes)]
        # A step's spikes, then its end marker, each tagged with the step's bank.
        push = (marking | (d4_valid & d4_push)) & ~queue_full
        # Registered, so that no combinational path runs from the lanes' pointers through the
        # decoder into the compressor: full now if the slowest lane's backlog plus this cycle's
        # push leaves no slot (pops this cycle only make room, so it errs on the safe side).
        backlog = Cat(((q_wp - rp)[:qa + 1] + push >= qd) for rp in q_rps).any()
        m.d.sync += queue_full.eq(backlog)
        marker = Signal(spike_layout)
        m.d.comb += [marker.bank.eq(cmp_bank), marker.end.eq(1)]
        with m.If(push):
            m.d.sync += [Array(q_data)[q_wp[:qa]].eq(Mux(marking, marker, d4)),
                         q_wp.eq(q_wp + 1)]
        with m.If(marking & ~queue_full):
            m.d.sync += [marking.eq(0), cmp_busy.eq(0)]

        # ---- Stage 3 and 4 shared control: sweep and output. ----------------------------------
        sb = Signal()                                # current bank swept
        hb = Signal()                                # spike-bitmap half written by the sweep
        ob = Signal()                                # spike-bitmap half read by the output
        bm_full = [Signal(name=f"spikes_full{b}") for b in range(2)]
        bm_first = [Signal(name=f"spikes_first{b}") for b in range(2)]
        fresh = Signal(init=1)                       # no sample has started since reset
        sw_active, sw_zero, sw_first = Signal(), Signal(), Signal()
        sw_i = Signal(range(depth_cur + 1))
        sw_lc = Signal(range(local))
        sw_pos = Signal(range(howo))
        sw_bit = Signal(range(CHUNK))
        sw_word = Signal(range(words_lane))
        sw_issue = sw_active & (sw_i < depth_cur)
        s1_valid, s2_valid, s3_valid = Signal(), Signal(), Signal()
        s1_i, s2_i, s3_i = (Signal(range(depth_cur), name=f"s{n}_i") for n in (1, 2, 3))
        s1_lc, s2_lc = Signal.like(sw_lc), Signal.like(sw_lc)
        s1_bit, s2_bit, s3_bit = (Signal(range(CHUNK), name=f"s{n}_bit") for n in (1, 2, 3))
        s1_word, s2_word, s3_word = (Signal.like(sw_word, name=f"s{n}_word") for n in (1, 2, 3))
        s1_end, s2_end, s3_end = Signal(), Signal(), Signal()
        # What a sweep's last neuron carries to the end of the pipeline: the next sweep may
        # start while this one drains.
        s1_bank, s1_zero = Signal(), Signal()
        s1_half, s2_half, s3_half = Signal(), Signal(), Signal()
        s1_first, s2_first, s3_first = Signal(), Signal(), Signal()
        s1_last, s2_last, s3_last = Signal(), Signal(), Signal()
        sw_final = sw_issue & (sw_i == depth_cur - 1)
        m.d.sync += [
            s1_valid.eq(sw_issue), s1_i.eq(sw_i), s1_lc.eq(sw_lc), s1_bit.eq(sw_bit),
            s1_word.eq(sw_word), s1_end.eq((sw_bit == CHUNK - 1) | (sw_pos == howo - 1)),
            s1_bank.eq(sb), s1_zero.eq(sw_zero), s1_half.eq(hb), s1_first.eq(sw_first),
            s1_last.eq(sw_final),
            s2_valid.eq(s1_valid), s2_i.eq(s1_i), s2_lc.eq(s1_lc), s2_bit.eq(s1_bit),
            s2_word.eq(s1_word), s2_end.eq(s1_end), s2_half.eq(s1_half),
            s2_first.eq(s1_first), s2_last.eq(s1_last),
            s3_valid.eq(s2_valid), s3_i.eq(s2_i), s3_bit.eq(s2_bit), s3_word.eq(s2_word),
            s3_end.eq(s2_end), s3_half.eq(s2_half), s3_first.eq(s2_first),
            s3_last.eq(s2_last),
        ]
        with m.If(sw_issue):
            m.d.sync += sw_i.eq(sw_i + 1)
            with m.If(sw_pos == howo - 1):
                m.d.sync += [sw_pos.eq(0), sw_lc.eq(sw_lc + 1), sw_bit.eq(0),
                             sw_word.eq(sw_word + 1)]
            with m.Else():
                m.d.sync += [sw_pos.eq(sw_pos + 1), sw_bit.eq(sw_bit + 1)]
                with m.If(sw_bit == CHUNK - 1):
                    m.d.sync += sw_word.eq(sw_word + 1)
        start_sweep = (~sw_active & Mux(sb, cur_full[1], cur_full[0])
                       & ~Mux(hb, bm_full[1], bm_full[0]))
        with m.If(start_sweep):
            first = Mux(sb, cur_first[1], cur_first[0])
            m.d.sync += [sw_active.eq(1), sw_zero.eq(first | fresh), sw_first.eq(first),
                         fresh.eq(0), sw_i.eq(0), sw_lc.eq(0), sw_pos.eq(0), sw_bit.eq(0),
                         sw_word.eq(0)]
        # The bank is read and cleared once its last neuron is issued; the spike words are
        # complete once that neuron leaves the pipeline.
        with m.If(sw_final):
            m.d.sync += [sw_active.eq(0), sb.eq(~sb), hb.eq(~hb)]
            for b in range(2):
                with m.If(sb == b):
                    m.d.sync += cur_full[b].eq(0)
        sweep_done = s3_valid & s3_last
        with m.If(sweep_done):
            for b in range(2):
                with m.If(s3_half == b):
                    m.d.sync += [bm_full[b].eq(1), bm_first[b].eq(s3_first)]

        # Output fetcher: spike words in ascending (k, word) from the owning lane's bitmap.
        n_words = kout * words_out
        m.submodules.out_compressor = ocomp = SpikeCompressor(width=CHUNK, n=n_words * CHUNK)
        oc_busy, oc_fetching = Signal(), Signal()
        oc_w = Signal(range(n_words))
        oc_k = Signal(range(kout))
        oc_ww = Signal(range(words_out))
        of_valid, of_lane = Signal(), Signal(range(lanes))
        of_index, of_end, of_first = Signal.like(oc_w), Signal(), Signal()
        lane_of, local_of = [0] * kout, [0] * kout
        for j, chans in enumerate(plan.channels):
            for lc, o in enumerate(chans):
                lane_of[o], local_of[o] = j, lc
        lane_tab = Array(Const(lane_of[o], range(lanes)) for o in range(kout))
        word_tab = Array(Const(local_of[o] * words_out, range(words_lane + 1))
                         for o in range(kout))
        oc_addr = Mux(ob, words_lane, 0) + word_tab[oc_k] + oc_ww
        of_word = Signal.like(ocomp.i.payload)
        o_room = word_queue(m, ocomp.i, of_word, of_valid, name="out_words")
        o_issue = oc_busy & oc_fetching & o_room
        m.d.sync += [of_valid.eq(o_issue), of_lane.eq(lane_tab[oc_k]), of_index.eq(oc_w),
                     of_end.eq(oc_w == n_words - 1),
                     of_first.eq(Mux(ob, bm_first[1], bm_first[0]) & (oc_w == 0))]
        with m.If(o_issue):
            m.d.sync += oc_w.eq(oc_w + 1)
            with m.If(oc_ww == words_out - 1):
                m.d.sync += [oc_ww.eq(0), oc_k.eq(oc_k + 1)]
            with m.Else():
                m.d.sync += oc_ww.eq(oc_ww + 1)
            with m.If(oc_w == n_words - 1):
                m.d.sync += oc_fetching.eq(0)
        with m.If(~oc_busy & Mux(ob, bm_full[1], bm_full[0])):
            m.d.sync += [oc_busy.eq(1), oc_fetching.eq(1), oc_w.eq(0), oc_k.eq(0), oc_ww.eq(0)]
        # The half is free once its end word is in the compressor.
        with m.If(of_valid & of_end):                # the half's last word has been read
            m.d.sync += [oc_busy.eq(0), ob.eq(~ob)]
            for b in range(2):
                with m.If(ob == b):
                    m.d.sync += bm_full[b].eq(0)

        # Compressor addresses count words_out * CHUNK per channel; map to k * Ho * Wo + pos.
        ck, cpos = const_divmod(ocomp.o.p.addr, words_out * CHUNK, n_words * CHUNK - 1)
        with m.If(~self.o.valid | self.o.ready):
            m.d.comb += ocomp.o.ready.eq(1)
            m.d.sync += [
                self.o.valid.eq(ocomp.o.valid),
                self.o.p.addr.eq(ck * howo + cpos),
                self.o.p.value.eq(ocomp.o.p.value),
                self.o.p.last.eq(ocomp.o.p.last),
                self.o.p.first.eq(ocomp.o.p.first),
            ]

        # ---- Lanes. ----------------------------------------------------------------------------
        lane_busy, lane_done, lane_sops, lane_bm_data = [], [], [], []
        sd = 4                                       # segment queue depth per lane
        for j in range(lanes):
            chans = plan.channels[j]

            def sig(name, shape=1, j=j):
                return Signal(shape, name=f"l{j}_{name}")

            # Record stage (g1): one read per spike gives the pointers of all its kernel rows.
            recs = memory.Memory(shape=record_layout, depth=len(plan.records[j]),
                                 init=plan.records[j])
            m.submodules[f"records{j}"] = recs
            rec_rd = recs.read_port()
            rp = q_rps[j]
            has = rp != q_wp
            head = spike_layout(Array(q_data)[rp[:qa]])
            g1_valid, g1 = sig("g1_valid"), Signal(spike_layout, name=f"l{j}_g1")
            # Segment stage (g2): each row's entry range for the spike's valid columns; one
            # non-empty row per cycle goes to the segment queue, empty rows cost nothing. An end
            # marker is one more "row" (bit kq) that becomes a marker segment.
            pw = plan.pointer_bits
            g2_valid, g2_rows = sig("g2_valid"), sig("g2_rows", kq + 1)
            g2_start = [sig(f"g2_start{q}", pw) for q in range(kq)]
            g2_count = [sig(f"g2_count{q}", pw) for q in range(kq)]
            g2_tgt, g2_value = sig("g2_tgt", tgt_shape), sig("g2_value", vshape)
            g2_bank = sig("g2_bank")
            seg_data = [Signal(seg_layout.size, name=f"l{j}_seg{n}") for n in range(sd)]
            seg_head, seg_count = sig("seg_head", range(sd)), sig("seg_count", range(sd + 1))
            pick = sig("pick", range(kq + 1))
            for q in reversed(range(kq + 1)):
                with m.If(g2_rows[q]):
                    m.d.comb += pick.eq(q)
            rest = g2_rows & (g2_rows - 1)
            seg_push = g2_valid & (g2_rows != 0) & (seg_count < sd)
            g2_free = ~g2_valid | (g2_rows == 0) | (seg_push & (rest == 0))
            g2_load = g1_valid & g2_free
            g1_advance = ~g1_valid | g2_load
            m.d.comb += [rec_rd.addr.eq(head.rec), rec_rd.en.eq(g1_advance)]
            with m.If(g1_advance):
                m.d.sync += [g1_valid.eq(has), g1.eq(head)]
                with m.If(has):
                    m.d.sync += rp.eq(rp + 1)
            rec = rec_rd.data
            with m.If(seg_push):
                m.d.sync += g2_rows.eq(rest)
            with m.If(g2_load):
                rows_ok = Cat((rec[q][g1.qx0] != rec[q][g1.qx1 + 1]) & (g1.qy0 <= q)
                              & (g1.qy1 >= q) for q in range(kq))
                m.d.sync += [
                    g2_valid.eq(1), g2_tgt.eq(g1.tgt), g2_value.eq(g1.value),
                    g2_bank.eq(g1.bank),
                    g2_rows.eq(Mux(g1.end, 1 << kq, rows_ok)),
                ]
                m.d.sync += [g2_start[q].eq(rec[q][g1.qx0]) for q in range(kq)]
                m.d.sync += [g2_count[q].eq(rec[q][g1.qx1 + 1] - rec[q][g1.qx0])
                             for q in range(kq)]
            with m.Elif(g2_free):
                m.d.sync += g2_valid.eq(0)
            row_tgt = Array(Const(q * wo, tgt_shape) for q in range(kq))

            # Entry stage: one weight per cycle, segment after segment without a bubble.
            entries = memory.Memory(
                shape=entry_layout, depth=max(1, len(plan.entries[j])),
                init=[{"weight": wt, "local": lc, "qx": qx} for wt, lc, qx in plan.entries[j]])
            m.submodules[f"entries{j}"] = entries
            ent_rd = entries.read_port()
            # A down-counter, not an end pointer: "last entry" is a compare with a constant.
            es_valid, es_e = sig("es_valid"), sig("es_e", unsigned(plan.pointer_bits))
            es_left = sig("es_left", unsigned(plan.pointer_bits))
            es_tgt, es_value = sig("es_tgt", tgt_shape), sig("es_value", vshape)
            es_bank = sig("es_bank")
            es_last = es_left == 1
            seg_pop = (seg_count != 0) & (~es_valid | es_last)
            seg_head_data = seg_layout(Array(seg_data)[seg_head])
            m.d.comb += ent_rd.addr.eq(es_e)
            er_valid, er_tgt = sig("er_valid"), sig("er_tgt", tgt_shape)
            er_value, er_bank, er_mark = sig("er_value", vshape), sig("er_bank"), sig("er_mark")
            m.d.sync += [er_valid.eq(es_valid), er_tgt.eq(es_tgt), er_value.eq(es_value),
                         er_bank.eq(es_bank), er_mark.eq(seg_pop & seg_head_data.mark)]
            with m.If(es_valid):
                m.d.sync += [es_e.eq(es_e + 1), es_left.eq(es_left - 1)]
                with m.If(es_last):
                    m.d.sync += es_valid.eq(0)
            with m.If(seg_pop):
                m.d.sync += seg_head.eq(seg_head + 1)
                with m.If(~seg_head_data.mark):
                    m.d.sync += [es_valid.eq(1), es_e.eq(seg_head_data.start),
                                 es_left.eq(seg_head_data.count), es_tgt.eq(seg_head_data.tgt),
                                 es_value.eq(seg_head_data.value),
                                 es_bank.eq(seg_head_data.bank)]
            with m.If(seg_push):
                new = Signal(seg_layout, name=f"l{j}_seg_new")
                m.d.comb += [new.start.eq(Array(g2_start)[pick[:ceil_log2(kq + 1)]]),
                             new.count.eq(Array(g2_count)[pick[:ceil_log2(kq + 1)]]),
                             new.tgt.eq(g2_tgt - row_tgt[pick]), new.value.eq(g2_value),
                             new.bank.eq(g2_bank), new.mark.eq(pick == kq)]
                m.d.sync += Array(seg_data)[(seg_head + seg_count)[:ceil_log2(sd)]].eq(new)
            m.d.sync += seg_count.eq(seg_count + seg_push - seg_pop)

            # Target and product; then read, register, add (with forwarding), write. The end
            # marker travels beside the last entry of its step; when it leaves, so has the step.
            entry = ent_rd.data
            if binary:
                product = Mux(er_value, entry.weight, 0)
            else:
                product = entry.weight * er_value
            a0_valid, a0_addr = sig("a0_valid"), sig("a0_addr", cur_addr_bits)
            a0_delta, a0_bank, a0_mark = sig("a0_delta", signed(cb)), sig("a0_bank"), \
                sig("a0_mark")
            m.d.sync += [a0_valid.eq(er_valid),
                         a0_addr.eq((er_tgt + entry.local * howo - entry.qx)[:cur_addr_bits]),
                         a0_delta.eq(product), a0_bank.eq(er_bank), a0_mark.eq(er_mark)]
            a1_valid, a1_addr, a1_delta = sig("a1_valid"), Signal.like(a0_addr), \
                Signal.like(a0_delta)
            a1_bank, a1_mark = sig("a1_bank"), sig("a1_mark")
            a2_valid, a2_addr, a2_delta = sig("a2_valid"), Signal.like(a0_addr), \
                Signal.like(a0_delta)
            a2_bank, a2_mark = sig("a2_bank"), sig("a2_mark")
            a2_read, fwd1, fwd2 = sig("a2_read", signed(cb)), sig("fwd1"), sig("fwd2")
            w1_valid, w1_addr, w1_sum = sig("w1_valid"), Signal.like(a0_addr), \
                sig("w1_sum", signed(cb))
            w2_valid, w2_addr, w2_sum = sig("w2_valid"), Signal.like(a0_addr), \
                sig("w2_sum", signed(cb))
            w1_bank, w2_bank = sig("w1_bank"), sig("w2_bank")
            done = sig("done", 2)                    # steps this lane has finished, modulo 4

            cur_wr, cur_rd = [], []
            for b in range(2):
                mem = memory.Memory(shape=signed(cb), depth=depth_cur, init=[])
                m.submodules[f"current{j}_{b}"] = mem
                cur_wr.append(mem.write_port())
                cur_rd.append(mem.read_port())
            total = Signal(signed(cb), name=f"l{j}_total")
            m.d.comb += total.eq(Mux(fwd1, w1_sum, Mux(fwd2, w2_sum, a2_read)) + a2_delta)
            m.d.sync += [
                a1_valid.eq(a0_valid), a1_addr.eq(a0_addr), a1_delta.eq(a0_delta),
                a1_bank.eq(a0_bank), a1_mark.eq(a0_mark),
                a2_valid.eq(a1_valid), a2_addr.eq(a1_addr), a2_delta.eq(a1_delta),
                a2_bank.eq(a1_bank), a2_mark.eq(a1_mark),
                a2_read.eq(Mux(a1_bank, cur_rd[1].data, cur_rd[0].data)),
                # a1's read missed the sums written now (a2) and a cycle ago (w1).
                fwd1.eq(a2_valid & (a2_addr == a1_addr) & (a2_bank == a1_bank)),
                fwd2.eq(w1_valid & (w1_addr == a1_addr) & (w1_bank == a1_bank)),
                w1_valid.eq(a2_valid), w1_addr.eq(a2_addr), w1_sum.eq(total),
                w1_bank.eq(a2_bank),
                w2_valid.eq(w1_valid), w2_addr.eq(w1_addr), w2_sum.eq(w1_sum),
                w2_bank.eq(w1_bank),
                done.eq(done + a2_mark),
            ]
            for b in range(2):
                swept = sw_active & (sb == b)
                m.d.comb += cur_rd[b].addr.eq(Mux(swept, sw_i, a0_addr))
                with m.If(clearing):
                    m.d.comb += [cur_wr[b].addr.eq(clr), cur_wr[b].en.eq(clr < depth_cur)]
                with m.Elif(swept):
                    m.d.comb += [cur_wr[b].addr.eq(sw_i), cur_wr[b].en.eq(sw_issue)]
                with m.Else():
                    m.d.comb += [cur_wr[b].addr.eq(a2_addr), cur_wr[b].data.eq(total),
                                 cur_wr[b].en.eq(a2_valid & (a2_bank == b))]
            lane_done.append(done != acc_count)
            lane_busy.append(has | g1_valid | g2_valid | (seg_count != 0) | es_valid | er_valid
                             | a0_valid | a1_valid | a2_valid)
            lane_sops.append((a2_valid, a2_bank))

            # Sweep: read current and state -> add bias -> neuron update -> write back.
            state = memory.Memory(shape=state_layout, depth=depth_cur, init=[])
            m.submodules[f"state{j}"] = state
            st_rd, st_wr = state.read_port(), state.write_port()
            m.d.comb += st_rd.addr.eq(sw_i)
            bias_tab = Array(Const(int(bias[o]), signed(cb)) for o in chans + [chans[0]]
                             * (local - len(chans)))
            live_tab = Array(Const(lc < len(chans), 1) for lc in range(local))
            s2_cur, s2_u = sig("s2_cur", signed(cb)), sig("s2_u", signed(neuron.potential_bits))
            s2_s = sig("s2_s")
            sw_read = Mux(s1_bank, cur_rd[1].data, cur_rd[0].data)
            m.d.sync += [
                s2_cur.eq(sw_read + bias_tab[s1_lc]),
                s2_u.eq(Mux(s1_zero, 0, st_rd.data.u)),
                s2_s.eq(Mux(s1_zero, 0, st_rd.data.s)),
            ]
            u_next, s_next = neuron_update(neuron, s2_u, s2_s, s2_cur)
            s3_u, s3_s = sig("s3_u", signed(neuron.potential_bits)), sig("s3_s")
            m.d.sync += [s3_u.eq(u_next), s3_s.eq(s_next & live_tab[s2_lc])]
            with m.If(s3_valid):
                m.d.comb += [st_wr.addr.eq(s3_i), st_wr.data.u.eq(s3_u),
                             st_wr.data.s.eq(s3_s), st_wr.en.eq(1)]

            # Spike words: 16 neurons of one channel per word, written when complete.
            spikes = memory.Memory(shape=CHUNK, depth=2 * words_lane, init=[])
            m.submodules[f"spikes{j}"] = spikes
            bm_w, bm_r = spikes.write_port(), spikes.read_port()
            acc_word = sig("spike_word", CHUNK)
            word_now = Mux(s3_bit == 0, 0, acc_word) | (s3_s << s3_bit)
            with m.If(s3_valid):
                m.d.sync += acc_word.eq(word_now)
            m.d.comb += [bm_w.addr.eq(Mux(s3_half, words_lane, 0) + s3_word),
                         bm_w.data.eq(word_now),
                         bm_w.en.eq(s3_valid & s3_end),
                         bm_r.addr.eq(oc_addr)]
            lane_bm_data.append(bm_r.data)

        # The oldest accumulating step is complete once every lane has passed its marker.
        acc_done = Mux(ab, accumulating[1], accumulating[0]) & Cat(*lane_done).all()
        with m.If(acc_done):
            m.d.sync += [ab.eq(~ab), acc_count.eq(acc_count + 1)]
            for b in range(2):
                with m.If(ab == b):
                    m.d.sync += [accumulating[b].eq(0), cur_full[b].eq(1)]
        m.d.comb += [
                     of_word.bits.eq(Array(lane_bm_data)[of_lane]),
                     of_word.index.eq(of_index),
                     of_word.end.eq(of_end),
                     of_word.first.eq(of_first)]

        # ---- Work counters, with counters=True. ---------------------------------------------
        if self._counters:
            st = self.counters
            spike_in = adv & d2_valid & d2_spike
            comp_work = cmp_busy & ~compressed & ~(ev.valid & ~ev.ready)
            bank_sops = [sum(v & (bk == b) for v, bk in lane_sops) for b in range(2)]
            per_bank = {name: [Signal(32, name=f"{name}{b}") for b in range(2)]
                        for name in ("step_spikes", "step_sops", "step_compress_cycles")}
            for b in range(2):
                with m.If(start_acc & (nb == b)):
                    m.d.sync += [per_bank[name][b].eq(0) for name in per_bank]
                with m.Else():
                    m.d.sync += per_bank["step_sops"][b].eq(per_bank["step_sops"][b] + bank_sops[b])
                    with m.If(cmp_bank == b):
                        m.d.sync += [
                            per_bank["step_spikes"][b].eq(per_bank["step_spikes"][b] + spike_in),
                            per_bank["step_compress_cycles"][b].eq(
                                per_bank["step_compress_cycles"][b] + comp_work)]
            m.d.comb += [st.accumulated.eq(acc_done), st.swept.eq(sweep_done)]
            m.d.comb += [getattr(st, name).eq(Mux(ab, regs[1], regs[0]))
                         for name, regs in per_bank.items()]
            m.d.sync += [
                st.sops.eq(st.sops + sum(v for v, _ in lane_sops)),
                st.spikes.eq(st.spikes + spike_in),
                st.compress_cycles.eq(st.compress_cycles + comp_work),
                st.accumulate_cycles.eq(st.accumulate_cycles
                                        + (cmp_busy | Cat(*lane_busy).any())),
                st.sweep_cycles.eq(st.sweep_cycles + (sw_active | s1_valid | s2_valid | s3_valid)),
                st.steps.eq(st.steps + sweep_done),
            ]
        return m
