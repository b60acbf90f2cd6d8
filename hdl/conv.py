"""Event-driven convolution engine: spike compression, sparse kernels, conflict-free lanes.

For every input spike ``(c, y, x)`` with value ``v`` the engine adds ``v`` times the non-zero
weights of kernel slice ``c`` into the output currents the spike touches (PyTorch
cross-correlation, any stride, zero padding), and never visits a silent input or a zero weight.
The step's inputs are compressed once into a stream of active positions; every output channel
is served from that one stream, so nothing is re-scanned per batch of output channels.

:func:`plan_conv` lays the weights out for the lanes and :func:`conv_work` counts the work the
engine does per input address: both are integer Python, beside the component they describe.
:class:`SpikeDecoder` is the engine's geometry in gateware; the engine's other own stages are in
:mod:`hdl.conv_stages`, the rest is the engine kit.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import reduce
from types import SimpleNamespace

import numpy as np
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import bits_for, ceil_log2

from models.golden import current_bits

from .accumulator import BankedAccumulator
from .bitmap import EventBitmap
from .compress import SpikeCompressor
from .conv_stages import ChannelPacker, ConvSpike, KernelScatter, SpikeBroadcast, StepBanks
from .cycles import activity, conv_estimate, conv_lane_work, lower_bound
from .divmod import const_divmod
from .event import EngineCounters, EventLayout
from .indexmap import IndexMap
from .contract import EngineBase, check_bool, check_int, check_layer, check_value_shape
from .linear import value_max
from .lsb import CHUNK
from .neuron import check_neuron
from .sweep import NeuronSweep

__all__ = [
    "CHUNK",
    "Conv2dEngine",
    "ConvPlan",
    "ConvCounters",
    "ConvTally",
    "SpikeDecoder",
    "conv_work",
    "decode_ref",
    "plan_conv",
    "taps",
]

# CHUNK (hdl.lsb) is re-exported here for the code that imports it from hdl.conv.


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


class ConvTally(wiring.Component):
    """The :class:`ConvCounters` of a :class:`Conv2dEngine`, from what its stages report.

    Steps take the two current banks in turn, from bank 0 after reset, so a step's bank is its
    number modulo 2 at every stage. A step's compressor cycles and spikes are running counts,
    filed under the step's bank when the step closes at the stage that counts them; its
    synaptic operations are counted per bank. All three are reported (and the bank's count of
    operations restarts) when the step's accumulation completes: a bank takes no new step
    before that.

    The compressor *works* in a cycle when it holds a step (from the cycle after the step's
    first word entered until its closing event has left) and its output is not held back.

    Parameters
    ----------
    lanes : :class:`int`

    Members
    -------
    scan_start : ``In(1)``
        A step's first word enters the input compressor.
    scan_valid, scan_ready, scan_last : ``In(1)``
        The input compressor's output handshake, and ``last`` of its event.
    spike : ``In(1)``
        A spike (a non-zero input position; any position in the dense baseline) is decoded.
    spike_last : ``In(1)``
        The decoder takes a step's closing event.
    ops : ``In(ArrayLayout(range(lanes + 1), 2))``
        Accumulate operations issued in this cycle, per bank.
    busy : ``In(1)``
        The decoder or a lane has work (``accumulate_cycles`` adds the compressor's).
    sweep_start, swept : ``In(1)``
        A sweep takes its command; a sweep's last spike word leaves it.
    accumulated : ``In(1)``
        A step's accumulation is complete.
    counters : ``Out(ConvCounters())``
    """
    def __init__(self, *, lanes):
        super().__init__({
            "scan_start": In(1), "scan_valid": In(1), "scan_ready": In(1), "scan_last": In(1),
            "spike": In(1), "spike_last": In(1),
            "ops": In(data.ArrayLayout(range(lanes + 1), 2)),
            "busy": In(1), "sweep_start": In(1), "swept": In(1), "accumulated": In(1),
            "counters": Out(ConvCounters()),
        })

    def elaborate(self, platform):
        m = Module()
        st = self.counters
        steps_in_scan = Signal(2)                    # steps whose words entered, not closed
        scan_close = self.scan_valid & self.scan_ready & self.scan_last
        m.d.sync += steps_in_scan.eq(steps_in_scan + self.scan_start - scan_close)
        scan_work = (steps_in_scan != 0) & ~(self.scan_valid & ~self.scan_ready)

        per_step = {name: [Signal(32, name=f"{name}{b}") for b in range(2)]
                    for name in ("step_spikes", "step_sops", "step_compress_cycles")}
        for name, add, close in (("step_compress_cycles", scan_work, scan_close),
                                 ("step_spikes", self.spike, self.spike_last)):
            running, bank = Signal(32, name=f"{name}_running"), Signal(name=f"{name}_bank")
            m.d.sync += running.eq(running + add)
            with m.If(close):
                m.d.sync += [running.eq(0), bank.eq(~bank),
                             Array(per_step[name])[bank].eq(running + add)]
        reported = Signal()                          # bank of the oldest step not reported
        with m.If(self.accumulated):
            m.d.sync += reported.eq(~reported)
        for b, sops in enumerate(per_step["step_sops"]):
            restart = self.accumulated & (reported == b)
            m.d.sync += sops.eq(Mux(restart, 0, sops) + self.ops[b])
        m.d.comb += [getattr(st, name).eq(Array(regs)[reported])
                     for name, regs in per_step.items()]

        sweeps = Signal(2)                           # sweeps begun and not yet ended
        m.d.sync += sweeps.eq(sweeps + self.sweep_start - self.swept)
        m.d.comb += [st.accumulated.eq(self.accumulated), st.swept.eq(self.swept)]
        m.d.sync += [
            st.steps.eq(st.steps + self.swept),
            st.sops.eq(st.sops + self.ops[0] + self.ops[1]),
            st.spikes.eq(st.spikes + self.spike),
            st.compress_cycles.eq(st.compress_cycles + scan_work),
            st.accumulate_cycles.eq(st.accumulate_cycles + (self.busy | scan_work)),
            st.sweep_cycles.eq(st.sweep_cycles + (sweeps != 0)),
        ]
        return m


def decode_ref(layer, plan, bit, value, *, dense=False):
    """Reference: the :class:`ConvSpike` fields :class:`SpikeDecoder` makes of input ``bit``.

    ``bit`` is position-major (``(y * W + x) * C + c``). Returns a :class:`dict` without
    ``bank`` and ``end`` (the framing), with ``hits = 0`` for a zero value (outside the dense
    baseline) or a spike without targets inside the output; then the other fields are
    whatever the hardware computes and are not compared.
    """
    cin, h, w = layer.in_shape
    _, ho, wo = layer.out_shape
    k, s, p = layer.kernel, layer.stride, layer.padding
    pos, c = divmod(bit, cin)
    y, x = divmod(pos, w)
    (by, ry), (bx, rx) = divmod(y + p, s), divmod(x + p, s)
    ny, nx = taps(k, s, ry), taps(k, s, rx)
    qy0, qy1 = max(0, by - (ho - 1)), min(by, ny - 1)
    qx0, qx1 = max(0, bx - (wo - 1)), min(bx, nx - 1)
    hits = bool(value or dense) and ny > 0 and nx > 0 and qy0 <= qy1 and qx0 <= qx1
    if not hits:
        return {"hits": 0}
    return {"rec": c * len(plan.phases) + plan.phases.index((ry, rx)), "qy0": qy0,
            "qy1": qy1, "qx0": qx0, "qx_end": qx1 + 1, "tgt": by * wo + bx, "value": value,
            "hits": 1}


class SpikeDecoder(wiring.Component):
    """Input bits in, the spikes the lanes scatter out: the convolution's geometry.

    Input ``(c, y, x)`` is bit ``(y * W + x) * C + c`` (position-major, see
    :class:`Conv2dEngine`). Four registered stages, all advancing while ``o`` is empty or taken:

    1. *Channel*: bit -> position ``y * W + x`` and channel ``c``;
    2. *Position*: -> ``(y, x)``;
    3. *Phase*: the padded position ``(y + p, x + p)`` -> ``(by, ry)`` and ``(bx, rx)``, the
       quotient and phase modulo the stride;
    4. *Ranges*: the kernel rows ``qy`` with ``0 <= qy < taps(ry)`` and ``0 <= by - qy < Ho``
       (columns alike), the record ``c * phases + phase`` and the target ``by * Wo + bx`` of
       offset ``(0, 0)``, registered on ``o``.

    The divisions are :func:`hdl.divmod.const_divmod`. An event leaves on ``o`` when it is a
    spike (a non-zero value; any position in the dense baseline) with targets inside the
    output, or when it closes its step (``end``). Steps take the two current banks in turn,
    from bank 0 after reset; each spike carries its step's bank. Latency 4 cycles, one event
    per cycle.

    Parameters
    ----------
    layer : :class:`models.bundle.Layer`
    plan : :class:`ConvPlan`
    value_shape : shape-castable
    dense : :class:`bool`

    Members
    -------
    i : ``In(stream.Signature(EventLayout(C * H * W, value_shape)))``
    o : ``Out(stream.Signature(ConvSpike(...)))``
    busy : ``Out(1)``
        An event is in the stages.
    """
    def __init__(self, layer, plan, *, value_shape, dense):
        self._layer, self._plan, self._dense = layer, plan, dense
        _, ho, wo = layer.out_shape
        spike = ConvSpike(records=layer.in_shape[0] * len(plan.phases), taps=plan.taps,
                          targets=(ho + plan.taps) * wo + plan.taps, value_shape=value_shape)
        super().__init__({
            "i": In(stream.Signature(EventLayout(layer.n_in, value_shape))),
            "o": Out(stream.Signature(spike)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        layer, plan = self._layer, self._plan
        cin, h, w = layer.in_shape
        _, ho, wo = layer.out_shape
        k, s, p = layer.kernel, layer.stride, layer.padding
        advance = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(advance)

        bank = Signal()                              # the bank of the step at the input
        with m.If(self.i.valid & self.i.ready & self.i.p.last):
            m.d.sync += bank.eq(~bank)

        def stage(name, previous=None, **fields):
            """Register ``fields`` and the framing of ``previous`` while the stages advance."""
            if previous is not None:
                fields = {"valid": previous.valid, "spike": previous.spike,
                          "end": previous.end, "value": previous.value, "bank": previous.bank,
                          "c": previous.c, **fields}
            regs = {}
            for field, value in fields.items():
                value = Value.cast(value)
                regs[field] = Signal(value.shape(), name=f"{name}_{field}")
                with m.If(advance):
                    m.d.sync += regs[field].eq(value)
            return SimpleNamespace(**regs)

        event = self.i.p
        pos, c = const_divmod(event.addr, cin, layer.n_in - 1)
        channel = stage("channel", valid=self.i.valid, end=event.last, value=event.value,
                        spike=1 if self._dense else event.value != 0, bank=bank, c=c, pos=pos)
        y, x = const_divmod(channel.pos, w, h * w - 1)
        position = stage("position", channel, y=y, x=x)
        by, ry = const_divmod(position.y + p, s, h - 1 + p)
        bx, rx = const_divmod(position.x + p, s, w - 1 + p)
        phase = stage("phase", position, by=by, ry=ry, bx=bx, rx=rx)

        # Ranges: rows qy with 0 <= qy < taps(ry) and 0 <= by - qy < Ho; columns alike.
        taps_of = Array(Const(taps(k, s, r), range(plan.taps + 1)) for r in range(s))

        def span(base, r, size):
            n = taps_of[r]
            lo = Mux(base > size - 1, base - (size - 1), 0)
            hi = Mux(base < n - 1, base, n - 1)
            return lo, hi, Mux(base < n - 1, base + 1, n), (n != 0) & (lo <= hi)

        qy0, qy1, _, rows_inside = span(phase.by, phase.ry, ho)
        qx0, _, qx_end, columns_inside = span(phase.bx, phase.rx, wo)
        phase_index = Array(Const(plan.phases.index((ry, rx)) if (ry, rx) in plan.phases else 0,
                                  range(len(plan.phases))) for ry in range(s) for rx in range(s))
        hits = phase.spike & rows_inside & columns_inside
        out = self.o.p
        with m.If(advance):
            m.d.sync += [
                self.o.valid.eq(phase.valid & (hits | phase.end)),
                out.rec.eq(phase.c * len(plan.phases) + phase_index[phase.ry * s + phase.rx]),
                out.qy0.eq(qy0), out.qy1.eq(qy1), out.qx0.eq(qx0), out.qx_end.eq(qx_end),
                out.tgt.eq(phase.by * wo + phase.bx), out.value.eq(phase.value),
                out.bank.eq(phase.bank), out.hits.eq(hits), out.end.eq(phase.end),
            ]
        m.d.comb += self.busy.eq(channel.valid | position.valid | phase.valid | self.o.valid)
        return m


class Conv2dEngine(EngineBase):
    """One conv2d SNN layer, event-driven (DESIGN.md sections 3, 5 and 6).

    A step flows through four stages joined by streams; each keeps two buffers (or banks), so
    consecutive steps overlap:

    1. *Receive*: input events (any order; same-address values add up) set bits in an
       :class:`~hdl.bitmap.EventBitmap` of the ``C * H * W`` inputs, one event per cycle, and
       add values into its value memory when inputs are multi-bit. An
       :class:`~hdl.indexmap.IndexMap` puts the bitmap in position-major order: input
       ``(c, y, x)`` is bit ``(y * W + x) * C + c``.
    2. *Accumulate*: a :class:`~hdl.compress.SpikeCompressor` scans the bitmap once, ``CHUNK``
       inputs per cycle and one cycle per active input, in ascending ``(y, x, c)`` (so
       consecutive spikes come from different kernel slices). :class:`~hdl.conv_stages.StepBanks`
       lets a step in when its current bank is free; the :class:`SpikeDecoder` turns each
       active input into its record, row range, column range and target base; a
       :class:`~hdl.conv_stages.SpikeBroadcast` queue hands every spike to every lane, each at
       its own pace. Lane ``j`` owns output channels ``plan.channels[j]`` with private weight
       and current memories: its :class:`~hdl.conv_stages.KernelScatter` turns the spike's
       non-zero weights of slice ``c`` into one accumulate operation per cycle for its
       :class:`~hdl.accumulator.BankedAccumulator`, so the ``k x k`` targets of a spike are
       updated by all lanes at once without collisions. Edges cost nothing (rows and columns
       whose target lies outside the output are never read). Spikes carry their step's bank
       and a step's last spike its end, so the lanes finish one step while starting the next.
    3. *Sweep*: a :class:`~hdl.sweep.NeuronSweep` updates ``L`` neurons per cycle (one per
       lane) with the DESIGN.md section 3 update, bit for bit, and the channel's bias; the
       currents are cleared as they are read. A sweep may start while the previous one drains.
    4. *Output*: a :class:`~hdl.conv_stages.ChannelPacker` packs the spikes into words per
       output channel, a second :class:`~hdl.compress.SpikeCompressor` emits them in ascending
       ``(k, y, x)``, ``last`` on the final one, one ``value = 0`` event for an empty step,
       ``first`` on the first event of a sample, and an :class:`~hdl.indexmap.IndexMap` turns
       its word addresses into output addresses.

    ``first`` marks a sample's first step, whose sweep takes the previous potential and spike
    as zero. After reset the engine clears its input buffers and currents
    (``max(C*H*W / CHUNK, ceil(K / L) * Ho * Wo)`` cycles, ``C*H*W`` when a value memory is
    kept) before it starts a step. Input addresses ``>= C*H*W`` are ignored. Summed values of
    one address must fit ``value_shape`` (DESIGN.md section 4); they wrap otherwise.

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
        check_layer(layer, "conv2d")
        check_neuron(layer.neuron)
        kout = layer.out_shape[0]
        expect = [kout, layer.in_shape[0], layer.kernel, layer.kernel]
        if list(np.shape(layer.weight)) != expect:
            raise ValueError(f"Weight shape must be {expect}, not {list(np.shape(layer.weight))}")
        value_shape = check_value_shape(value_shape)
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
        self._lanes, self._updates, self._dense = lanes, lanes, dense
        self._queue_depth = queue_depth
        self._plan = plan_conv(layer, lanes=lanes, dense=dense)
        self._current_bits = current_bits(layer, value_max(value_shape))
        self._lane_work = None                      # conv_lane_work, made on first use
        super().__init__(layer, value_shape=value_shape, counters=counters,
                         counters_signature=ConvCounters())

    @property
    def weight_format(self):
        """Weight memory format: ``"sparse-kernel"``, or ``"dense"`` for the dense baseline."""
        return "dense" if self._dense else "sparse-kernel"

    @property
    def weight_figures(self):
        """Further weight figures for reports: the bits of the entries and of the records."""
        return {"entry_bits": self._plan.entry_bits, "record_bits": self._plan.record_bits}

    def estimate_cycles(self, active_inputs, out_events):
        """Cycles of steps with the given input activity: ``(lower_bound, estimate)``.

        The bound is DESIGN.md section 7's (:func:`hdl.cycles.lower_bound`, ``U = L``), the
        estimate :func:`hdl.cycles.conv_estimate`, paced by the busiest lane; ``out_events``
        are the steps' output spikes (a number, or one per step). Numbers for one step, int64
        arrays ``[steps]`` for a batch.
        """
        layer, lanes = self._layer, self._lanes
        act = activity(active_inputs, layer.n_in)
        events, lane_sops = self._lane_work_of(act)
        rows = []
        for e, ls, o in zip(events, lane_sops, act.per_step(out_events)):
            e, o = math.ceil(e), math.ceil(o)
            ls = [math.ceil(v) for v in ls]
            rows.append((lower_bound(sum(ls), e, layer.n_out, lanes=lanes),
                         conv_estimate(ls, e, in_size=layer.n_in, out_shape=layer.out_shape,
                                       lanes=lanes, out_events=o)))
        return tuple(act.answer(np.array(col, dtype=np.int64)) for col in zip(*rows))

    def _work(self, act):
        """Per step: input positions visited (the dense baseline visits every position,
        active or not) and synaptic operations."""
        events, lane_sops = self._lane_work_of(act)
        return events, lane_sops.sum(axis=1)

    def _lane_work_of(self, act):
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
    def weight_bits_stored(self):
        """Bits of the weight memories: entries (weight, local channel, column) and records."""
        return self._plan.stored_bits

    def _sweep_bias(self):
        """The sweep's bias ``[rows][lanes]``: each lane's channels, ``Ho * Wo`` rows each."""
        layer, channels = self._layer, self._plan.channels
        if layer.bias is None:
            return None
        kout, ho, wo = layer.out_shape
        per_channel = layer.bias_vector().reshape(kout, ho * wo)[:, 0]
        rows = self._plan.local_channels * ho * wo
        return [[int(per_channel[chans[r // (ho * wo)]]) if r // (ho * wo) < len(chans) else 0
                 for chans in channels] for r in range(rows)]

    def elaborate(self, platform):
        # Events -> position-major bit index -> bitmap -> compressor -> bank gate (-> value
        # lookup) -> decoder -> broadcast queue -> per lane: kernel scatter -> accumulator.
        # A full bank -> neuron sweep (reads and clears the lanes' currents) -> channel packer
        # -> compressor -> output address. Every stage is a component; what is left here is
        # the wiring, and the few signals that fan in from the lanes or out to them.
        m = Module()
        layer, plan, lanes = self._layer, self._plan, self._lanes
        cin, h, w = layer.in_shape
        kout, ho, wo = layer.out_shape
        n_in, positions, value_shape = layer.n_in, ho * wo, self._value_shape
        depth = plan.local_channels * positions          # currents (neurons) per lane

        # ---- Receive: input (c, y, x) sets bit (y * W + x) * C + c of the step's bitmap. ---
        def split(fields):
            c, pos = const_divmod(fields["addr"], h * w, n_in - 1)
            return {"c": c, "pos": pos}
        m.submodules.order = order = IndexMap(
            n_in, n_in, [split, lambda fields: {"addr": fields["pos"] * cin + fields["c"]}],
            value_shape=value_shape)
        m.submodules.bitmap = bitmap = EventBitmap(n_in, value_shape=value_shape,
                                                   dense=self._dense)
        m.submodules.scan = scan = SpikeCompressor(width=CHUNK, n=n_in)
        connect(m, flipped(self.i), order.i)
        connect(m, order.o, bitmap.i)
        connect(m, bitmap.o, scan.i)

        # ---- Accumulate: a step in when its bank is free, decode, broadcast to the lanes. --
        m.submodules.banks = banks = StepBanks(n_in, lanes=lanes)
        m.submodules.decoder = decoder = SpikeDecoder(layer, plan, value_shape=value_shape,
                                                      dense=self._dense)
        m.submodules.spikes = spikes = SpikeBroadcast(decoder.o.p.shape(),
                                                      depth=self._queue_depth, readers=lanes)
        connect(m, scan.o, banks.i)
        if bitmap.keeps_values:                      # the summed values, looked up by address
            connect(m, banks.o, bitmap.i_lookup)
            connect(m, bitmap.o_lookup, decoder.i)
        else:
            connect(m, banks.o, decoder.i)
        connect(m, decoder.o, spikes.i)

        scatters, currents = [], []
        for j in range(lanes):
            scatter = m.submodules[f"scatter{j}"] = KernelScatter(
                plan, j, spike=decoder.o.p.shape(), width=wo, positions=positions,
                current_bits=self._current_bits)
            acc = m.submodules[f"currents{j}"] = BankedAccumulator(
                depth, current_bits=self._current_bits)
            connect(m, spikes.o[j], scatter.i)
            m.d.comb += [acc.i.valid.eq(scatter.o.valid), acc.i.p.eq(scatter.o.p)]
            scatters.append(scatter)
            currents.append(acc)
        m.d.comb += [
            banks.cleared.eq(currents[0].i.ready),   # the lanes clear their banks together
            banks.lane_end.eq(Cat(scatter.end for scatter in scatters)),
            banks.busy.eq(reduce(operator.or_, (acc.busy for acc in currents))),
        ]

        # ---- Sweep: L neurons per cycle, lane j's current in column j. ---------------------
        m.submodules.sweep = sweep = NeuronSweep(
            layer.neuron, current_bits=self._current_bits, rows=depth, width=lanes,
            bias=self._sweep_bias(), live=[len(chans) * positions for chans in plan.channels],
            output_queue=False)                      # the packer has room for whole sweeps
        connect(m, banks.o_sweep, sweep.i)
        for j, acc in enumerate(currents):
            m.d.comb += [acc.i_sweep.valid.eq(sweep.o_read.valid),
                         acc.i_sweep.p.eq(sweep.o_read.p),
                         sweep.i_current.p[j].eq(acc.o_sweep.p[0])]
        m.d.comb += [sweep.i_current.valid.eq(currents[0].o_sweep.valid),
                     banks.swept.eq(sweep.o_read.valid & (sweep.o_read.p.row == depth - 1))]

        # ---- Output: words per channel -> compressor -> address k * Ho * Wo + position. ----
        m.submodules.packer = packer = ChannelPacker(plan.channels, positions)
        m.d.comb += [banks.sweep_room.eq(packer.room),
                     packer.reserve.eq(sweep.i.valid & sweep.i.ready)]
        m.submodules.emit = emit = SpikeCompressor(width=CHUNK, n=packer.words * CHUNK)
        words_out = packer.words // kout             # words per channel

        def address(fields):
            k, pos = const_divmod(fields["addr"], words_out * CHUNK, packer.words * CHUNK - 1)
            return {"addr": k * positions + pos}
        m.submodules.address = out_map = IndexMap(packer.words * CHUNK, layer.n_out, [address])
        connect(m, sweep.o, packer.i)
        connect(m, packer.o, emit.i)
        connect(m, emit.o, out_map.i)
        connect(m, out_map.o, flipped(self.o))

        # ---- Work counters, with counters=True. --------------------------------------------
        if self._counters:
            m.submodules.tally = tally = ConvTally(lanes=lanes)
            decoded = decoder.i.valid & decoder.i.ready
            m.d.comb += [
                tally.scan_start.eq(scan.i.valid & scan.i.ready & (scan.i.p.index == 0)),
                tally.scan_valid.eq(scan.o.valid), tally.scan_ready.eq(scan.o.ready),
                tally.scan_last.eq(scan.o.p.last),
                tally.spike.eq(decoded & (1 if self._dense else decoder.i.p.value != 0)),
                tally.spike_last.eq(decoded & decoder.i.p.last),
                tally.busy.eq(Cat(decoder.busy, *(s.busy for s in scatters),
                                  *(acc.busy for acc in currents)).any()),
                tally.sweep_start.eq(sweep.i.valid & sweep.i.ready),
                tally.swept.eq(sweep.o.valid & sweep.o.ready & sweep.o.p.end),
                tally.accumulated.eq(banks.accumulated),
                self.counters.eq(tally.counters),
            ]
            m.d.comb += [tally.ops[b].eq(sum(s.o.valid & (s.o.p.bank == b) for s in scatters))
                         for b in range(2)]
        return m
