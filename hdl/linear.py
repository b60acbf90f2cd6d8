"""Event-driven linear layer: sparse weights, L accumulate lanes, neuron sweep, compressor."""
import math

import numpy as np
from amaranth import *
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from models.bundle import Layer
from models.golden import current_bits

from .compress import SpikeCompressor, SpikeWord
from .cycles import activity, linear_estimate, lower_bound
from .event import EngineCounters, EventLayout
from .neuron import check_neuron, neuron_clamp, neuron_leak, neuron_sum
from .weights import FORMATS, bitmap_bits, choose_format, csr_bits, dense_bits, pack_linear

__all__ = ["LinearEngine", "check_bool", "check_int", "value_max"]


def value_max(shape):
    """Largest magnitude an input value of ``shape`` can have."""
    shape = Shape.cast(shape)
    return 2 ** (shape.width - 1) if shape.signed else 2 ** shape.width - 1


def check_int(name, value, lo):
    """Validate an integer parameter of at least ``lo`` (``TypeError`` naming it otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        kind = "a positive integer" if lo == 1 else f"an integer of at least {lo}"
        raise TypeError(f"{name} must be {kind}, not {value!r}")
    return value


def check_bool(name, value):
    """Validate a flag (``TypeError`` naming it unless it is a :class:`bool`)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {value!r}")
    return value


class LinearEngine(wiring.Component):
    """One linear SNN layer, event-driven (DESIGN.md sections 3, 5 and 6).

    Per input event ``(i, v)`` every lane walks its share of row ``i``'s non-zero weights, one
    per cycle, and adds ``w * v`` into the current of the target neuron; lane ``k`` owns the
    neurons ``j`` with ``j % L == k``, with its own weight, current and potential memories, so
    lanes never collide. When the event that carries ``last`` has been accumulated, a sweep
    updates ``L`` neurons per cycle (DESIGN.md section 3, bit for bit), clears their currents and
    hands the spike words to a :class:`SpikeCompressor` that emits the step's spikes in
    ascending address. Work per step: about ``max(A / L, N / L)`` cycles for ``A`` active
    synaptic operations and ``N`` neurons, instead of ``n_in * n_out / L``.

    The accumulate path is a pipelined read-modify-write: the current memory's output is
    registered and the two sums still in flight are forwarded, so no RAM output feeds an adder
    that feeds a RAM input in one cycle.

    ``first`` on an input event marks the first step of a sample: the sweep of that step takes
    the previous potential and spike as zero, so no clearing pass is needed. After reset the
    engine clears its memories (``ceil(n_out / L)`` cycles) before it accepts input.

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
    fifo_depth : :class:`int`
        Events each lane can queue; deeper queues even out the lanes' work between events.
    updates : :class:`int` or ``None``
        Neuron updates per cycle ``U`` of the sweep: ``L`` times a power of two (each lane's
        neurons are split into ``U / L`` sub-banks, swept in parallel). Default ``L``.
    counters : :class:`bool`
        Add the ``counters`` member: the work counters of :class:`hdl.event.EngineCounters`.

    Members
    -------
    i : ``In(stream.Signature(EventLayout(n_in, value_shape)))``
    o : ``Out(stream.Signature(EventLayout(n_out)))``
    counters : ``Out(EngineCounters())``, only with ``counters=True``

    The engine contract (docs/architecture.md, "Engine contract"): :attr:`layer`,
    :attr:`lanes`, :attr:`updates`, :attr:`weight_format`, :attr:`weight_bits_stored`,
    :attr:`weight_bits_dense`, :attr:`weight_figures`, :attr:`current_bits`, :attr:`dense`,
    :meth:`work` and :meth:`estimate_cycles`.
    """
    def __init__(self, layer, *, value_shape=unsigned(1), lanes=1, fmt=None, dense=False,
                 fifo_depth=8, updates=None, counters=False):
        if not isinstance(layer, Layer) or layer.kind != "linear":
            raise TypeError(f"Layer must be a models.bundle.Layer of kind 'linear', "
                            f"not {layer!r:.80}")
        check_neuron(layer.neuron)
        try:
            value_shape = Shape.cast(value_shape)
        except TypeError:
            raise TypeError(f"Value shape must be a shape, not {value_shape!r}") from None
        check_int("Lanes", lanes, 1)
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
        if fmt is None:
            fmt = choose_format(layer.weight, lanes=lanes, weight_bits=layer.weight_bits)
        if fmt not in FORMATS:
            raise ValueError(f"Weight format must be one of "
                             f"{', '.join(repr(f) for f in FORMATS)}, not {fmt!r}")
        self._layer, self._value_shape, self._lanes = layer, value_shape, lanes
        self._dense, self._fifo_depth, self._updates = bool(dense), fifo_depth, updates
        self._packed = pack_linear(layer.weight, lanes=lanes, fmt=fmt,
                                   weight_bits=layer.weight_bits)
        self._current_bits = current_bits(layer, value_max(value_shape))
        self._counters = check_bool("Counters", counters)
        members = {
            "i": In(stream.Signature(EventLayout(layer.n_in, value_shape))),
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
        """Accumulate lanes ``L``: synaptic operations per cycle."""
        return self._lanes

    @property
    def updates(self):
        """Neuron updates per cycle of the sweep ``U``."""
        return self._updates

    @property
    def packed(self):
        """The weights as laid out in the lanes' memories (:class:`hdl.weights.PackedWeights`)."""
        return self._packed

    @property
    def current_bits(self):
        """Width of the synaptic current accumulators."""
        return self._current_bits

    @property
    def dense(self):
        """Whether this is the dense baseline (every input and weight visited each step)."""
        return self._dense

    @property
    def weight_format(self):
        """Weight memory format: ``"csr"``, ``"bitmap"`` or ``"dense"``."""
        return self._packed.fmt

    @property
    def weight_bits_stored(self):
        """Bits of the weight memories: every lane's entries and row records."""
        return self._packed.stored_bits

    @property
    def weight_bits_dense(self):
        """Bits of the plain dense matrix ``n_out * n_in * weight_bits``, for comparison."""
        return dense_bits(self._layer.weight, self._layer.weight_bits)

    @property
    def weight_figures(self):
        """Further weight figures for reports: the bits CSR and bitmap store, by formula."""
        w, wb = self._layer.weight, self._layer.weight_bits
        return {"csr_formula_bits": csr_bits(w, wb), "bitmap_formula_bits": bitmap_bits(w, wb)}

    def work(self, active_inputs):
        """Input events and synaptic operations of steps with the given input activity.

        ``active_inputs`` as :func:`hdl.cycles.activity` takes it. Returns ``(events, sops)``:
        numbers for one step, arrays ``[steps]`` for a batch. The dense baseline visits every
        weight of an active input's row, zeros included.
        """
        act = activity(active_inputs, self._layer.n_in)
        events, sops = self._work(act)
        return act.answer(events), act.answer(sops)

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

    def elaborate(self, platform):
        m = Module()
        layer, pw, lanes = self._layer, self._packed, self._lanes
        neuron = layer.neuron
        bank = pw.bank_size
        cb, pbits = self._current_bits, neuron.potential_bits
        vshape = self._value_shape
        bias = layer.bias_vector()
        # Each lane's bank is split into `sub` sub-banks (local post p -> sub-bank p % sub, row
        # p // sub) so that the sweep reads U = L * sub neurons per cycle.
        sub = self._updates // lanes
        sub_bits = sub.bit_length() - 1
        sdepth = -(-bank // sub)
        width = lanes * sub

        # Queued work carries the current bank it accumulates into, so the next step can enter
        # the lanes while the previous one is still draining.
        event_layout = data.StructLayout({"addr": self.i.p.addr.shape(), "value": vshape,
                                          "bank": unsigned(1)})
        row_fields = {"start": unsigned(pw.start_bits), "count": unsigned(pw.count_bits)}
        if pw.fmt == "bitmap":
            row_fields["chunk0"] = unsigned(pw.chunk_width)
        row_layout = data.StructLayout(row_fields)
        cw, nchunks = pw.chunk_width, pw.chunks_per_row
        entry_fields = {"weight": signed(pw.weight_bits)}
        if pw.fmt == "csr":
            entry_fields["post"] = unsigned(pw.post_bits)
        entry_layout = data.StructLayout(entry_fields)
        state_layout = data.StructLayout({"u": signed(pbits), "s": unsigned(1)})

        # Step control, shared by all lanes.
        j = Signal(range(sdepth + 1))               # sweep / clear row of the sub-banks
        clearing = Signal()
        fresh = Signal()                            # the step being accumulated opens a sample
        sel = Signal()                              # current bank new events accumulate into
        pend = Signal(2)                            # per bank: a closed step waits for the sweep
        pend_fresh = Signal(2)                      # per bank: that step opens a sample
        next_sweep = Signal()                       # bank of the oldest closed step
        sweep_busy = Signal()
        sweep_bank = Signal()                       # the bank the sweep reads and clears
        sweep_fresh = Signal()                      # the step being swept opens a sample
        start_sweep = Signal()
        # New events may go into bank `sel` only once its previous step has been swept.
        bank_free = ~pend.bit_select(sel, 1) & ~(sweep_busy & (sweep_bank == sel))
        sw1_valid, sw2_valid, sw3_valid, sw4_valid = Signal(), Signal(), Signal(), Signal()
        sw1_j, sw2_j, sw3_j, sw4_j = (Signal.like(j) for _ in range(4))
        issue_sweep = Signal()

        m.submodules.compressor = comp = SpikeCompressor(width=width, n=layer.n_out)
        word_depth = 10
        word = SpikeWord(width, sdepth)
        m.submodules.words = words = fifo.SyncFIFOBuffered(
            width=Shape.cast(word).width, depth=word_depth)
        m.d.comb += [
            comp.i.valid.eq(words.r_rdy),
            comp.i.payload.eq(words.r_data),
            words.r_en.eq(comp.i.ready),
        ]
        wiring.connect(m, comp.o, wiring.flipped(self.o))

        push = Signal()                              # broadcast an event to the lanes
        push_data = Signal(event_layout)
        lane_ready = []
        lane_drained = []
        lane_sops = []
        spike_bits = [[None] * lanes for _ in range(sub)]

        for k in range(lanes):
            lane = pw.lane_data[k]
            # Event queue of this lane.
            q = fifo.SyncFIFOBuffered(width=Shape.cast(event_layout).width,
                                      depth=self._fifo_depth)
            m.submodules[f"queue{k}"] = q
            m.d.comb += [q.w_en.eq(push), q.w_data.eq(push_data)]
            lane_ready.append(q.w_rdy)
            q_data = event_layout(q.r_data)

            # Row stage: (start, count) of the event's row.
            p_valid = Signal(name=f"p_valid{k}")
            p_value = Signal(vshape, name=f"p_value{k}")
            p_addr = Signal.like(q_data.addr, name=f"p_addr{k}")
            p_bank = Signal(name=f"p_bank{k}")
            take = Signal(name=f"take{k}")
            advance = ~p_valid | take
            m.d.comb += q.r_en.eq(advance)
            with m.If(advance):
                m.d.sync += [p_valid.eq(q.r_rdy), p_value.eq(q_data.value),
                             p_addr.eq(q_data.addr), p_bank.eq(q_data.bank)]
            if pw.fmt == "dense":
                start = (p_addr * bank)[:pw.start_bits]
                count = Const(bank, pw.count_bits)
            else:
                rows = memory.Memory(shape=row_layout, depth=pw.n_in, init=[
                    {"start": s, "count": c, **({"chunk0": lane.chunks[i][0]}
                                                if pw.fmt == "bitmap" else {})}
                    for i, (s, c) in enumerate(lane.rows)])
                m.submodules[f"rows{k}"] = rows
                rows_rd = rows.read_port()
                m.d.comb += [rows_rd.addr.eq(q_data.addr), rows_rd.en.eq(advance)]
                start, count = rows_rd.data.start, rows_rd.data.count

            # Iterate stage: one entry read per cycle.
            entries = memory.Memory(
                shape=entry_layout, depth=pw.entry_depth,
                init=[({"post": p, "weight": w} if pw.fmt == "csr" else {"weight": w})
                      for p, w in lane.entries])
            m.submodules[f"entries{k}"] = entries
            ent_rd = entries.read_port()
            cur = Signal(range(pw.entry_depth + 1), name=f"cur{k}")
            rem = Signal(range(bank + 1), name=f"rem{k}")
            it_value = Signal(vshape, name=f"it_value{k}")
            it_idx = Signal(range(bank + 1), name=f"it_idx{k}")
            f_valid = Signal(name=f"f_valid{k}")
            f_value = Signal(vshape, name=f"f_value{k}")
            f_idx = Signal(range(bank + 1), name=f"f_idx{k}")
            it_bank, f_bank = Signal(name=f"it_bank{k}"), Signal(name=f"f_bank{k}")
            if pw.fmt == "bitmap":
                # The bank's posts of the current row come from its bitmap, one set bit per
                # cycle (lowest first); the next chunk is always fetched one ahead.
                bm = Signal(cw, name=f"bm{k}")
                ci = Signal(range(nchunks + 1), name=f"ci{k}")
                cur_row = Signal.like(p_addr, name=f"cur_row{k}")
                lsb = Signal(range(cw), name=f"lsb{k}")
                for b in reversed(range(cw)):
                    with m.If(bm[b]):
                        m.d.comb += lsb.eq(b)
                if nchunks > 1:
                    bitmap = memory.Memory(
                        shape=unsigned(cw), depth=pw.n_in * (nchunks - 1),
                        init=[c for chunks in lane.chunks for c in chunks[1:]])
                    m.submodules[f"bitmap{k}"] = bitmap
                    bm_rd = bitmap.read_port()
                    m.d.comb += bm_rd.en.eq(0)
                    next_chunk = bm_rd.data
                    # Chunk c >= 1 of row r lives at r * (chunks - 1) + c - 1. Both addresses a
                    # fetch can need are registers, so the decision logic only drives a mux:
                    # chunk 1 of the queued row (p_base) or the current row's next chunk.
                    p_base = Signal(range(bitmap.depth + 1), name=f"p_base{k}")
                    nxt = Signal(range(bitmap.depth + 1), name=f"nxt{k}")
                    with m.If(advance):
                        m.d.sync += p_base.eq(q_data.addr * (nchunks - 1))

                    def fetch(row, c, bm_rd=bm_rd, p_base=p_base, nxt=nxt):
                        if c == 1:                              # a new row: chunk 1 of it
                            m.d.comb += [bm_rd.en.eq(1), bm_rd.addr.eq(p_base)]
                            m.d.sync += nxt.eq(p_base + 1)
                        else:                                   # the current row's next chunk
                            m.d.comb += [bm_rd.en.eq(1), bm_rd.addr.eq(nxt)]
                            m.d.sync += nxt.eq(nxt + 1)
                else:
                    next_chunk = Const(0, cw)

                    def fetch(row, c):
                        pass
                can_emit = (rem != 0) & (bm != 0)
            else:
                can_emit = rem != 0
            m.d.comb += take.eq(p_valid & ((rem == 0) | ((rem == 1) & can_emit)))
            m.d.sync += f_valid.eq(0)
            with m.If(can_emit):
                m.d.comb += ent_rd.addr.eq(cur)
                m.d.sync += [cur.eq(cur + 1), rem.eq(rem - 1), f_valid.eq(1),
                             f_value.eq(it_value), f_idx.eq(it_idx), it_idx.eq(it_idx + 1),
                             f_bank.eq(it_bank)]
                if pw.fmt == "bitmap":
                    rest = bm & (bm - 1)                        # clear the lowest set bit
                    m.d.sync += [f_idx.eq(ci * cw + lsb), bm.eq(rest)]
                    with m.If((rest == 0) & (rem > 1)):         # chunk done, row goes on
                        m.d.sync += [bm.eq(next_chunk), ci.eq(ci + 1)]
                        with m.If(ci + 2 < nchunks):
                            fetch(cur_row, None)
            if pw.fmt == "bitmap":
                with m.Elif(rem != 0):                          # an empty chunk: skip it
                    m.d.sync += [bm.eq(next_chunk), ci.eq(ci + 1)]
                    with m.If(ci + 2 < nchunks):
                        fetch(cur_row, None)
                with m.If(take):
                    m.d.sync += [cur.eq(start), rem.eq(count), it_value.eq(p_value),
                                 bm.eq(rows_rd.data.chunk0), ci.eq(0), cur_row.eq(p_addr),
                                 it_bank.eq(p_bank)]
                    if nchunks > 1:
                        fetch(p_addr, 1)
            else:
                with m.If(take & (rem != 0)):
                    m.d.sync += [cur.eq(start), rem.eq(count), it_value.eq(p_value),
                                 it_idx.eq(0), it_bank.eq(p_bank)]
                with m.Elif(take & (count != 0)):
                    m.d.comb += ent_rd.addr.eq(start)
                    m.d.sync += [cur.eq(start + 1), rem.eq(count - 1), f_valid.eq(1),
                                 f_value.eq(p_value), f_idx.eq(0), it_value.eq(p_value),
                                 it_idx.eq(1), it_bank.eq(p_bank), f_bank.eq(p_bank)]

            # Accumulate: F (read current) -> R (register RAM output) -> W (add, write back).
            # Two current banks: the lanes accumulate step t + 1 into one while the sweep
            # updates the neurons of step t from the other.
            cur_rd, cur_wr = [[], []], [[], []]
            for b in range(2):
                for sb in range(sub):
                    cur_mem = memory.Memory(shape=signed(cb), depth=sdepth, init=[])
                    m.submodules[f"current{k}_{b}_{sb}"] = cur_mem
                    cur_rd[b].append(cur_mem.read_port())
                    cur_wr[b].append(cur_mem.write_port())
            st_rd, st_wr = [], []
            for sb in range(sub):
                st_mem = memory.Memory(shape=state_layout, depth=sdepth, init=[])
                m.submodules[f"state{k}_{sb}"] = st_mem
                st_rd.append(st_mem.read_port())
                st_wr.append(st_mem.write_port())

            entry = ent_rd.data

            def pick(ports, post):
                """Read data of the sub-bank that holds local neuron ``post``."""
                if sub == 1:
                    return ports[0].data
                return Array(p.data for p in ports)[post[:sub_bits]]
            f_post = entry.post if pw.fmt == "csr" else f_idx[:pw.post_bits]
            # The weight leaves its RAM into a register; the product is formed a stage later
            # (a spike value of one bit selects, it does not multiply).
            r_weight = Signal(signed(pw.weight_bits), name=f"r_weight{k}")
            r_value = Signal(vshape, name=f"r_value{k}")
            if vshape.width == 1 and not vshape.signed:
                r_prod = Mux(r_value, r_weight, 0)
            else:
                r_prod = r_weight * r_value
            r_valid, r_post = Signal(name=f"r_valid{k}"), Signal(pw.post_bits, name=f"r_post{k}")
            s_valid, s_post = Signal(name=f"s_valid{k}"), Signal(pw.post_bits, name=f"s_post{k}")
            s_prod = Signal(signed(cb), name=f"s_prod{k}")
            s_data = Signal(signed(cb), name=f"s_data{k}")
            s_fwd1, s_fwd2 = Signal(name=f"s_fwd1_{k}"), Signal(name=f"s_fwd2_{k}")
            r_bank, s_bank = Signal(name=f"r_bank{k}"), Signal(name=f"s_bank{k}")
            w1_bank, w2_bank = Signal(name=f"w1_bank{k}"), Signal(name=f"w2_bank{k}")
            w1_valid, w1_post = Signal(name=f"w1_valid{k}"), Signal(pw.post_bits)
            w1_data = Signal(signed(cb), name=f"w1_data{k}")
            w2_valid, w2_post = Signal(name=f"w2_valid{k}"), Signal(pw.post_bits)
            w2_data = Signal(signed(cb), name=f"w2_data{k}")
            m.d.sync += [
                r_valid.eq(f_valid), r_post.eq(f_post), r_bank.eq(f_bank),
                r_weight.eq(entry.weight), r_value.eq(f_value),
                s_valid.eq(r_valid), s_post.eq(r_post), s_prod.eq(r_prod), s_bank.eq(r_bank),
                s_data.eq(Mux(r_bank, pick(cur_rd[1], r_post), pick(cur_rd[0], r_post))),
                # The current read for R was issued a cycle before W's write and two before
                # the write now held in w1: forward whichever is newest.
                s_fwd1.eq(s_valid & (s_post == r_post) & (s_bank == r_bank)),
                s_fwd2.eq(w1_valid & (w1_post == r_post) & (w1_bank == r_bank)),
            ]
            total = Mux(s_fwd1, w1_data, Mux(s_fwd2, w2_data, s_data)) + s_prod
            m.d.sync += [
                w1_valid.eq(s_valid), w1_post.eq(s_post), w1_data.eq(total),
                w1_bank.eq(s_bank),
                w2_valid.eq(w1_valid), w2_post.eq(w1_post), w2_data.eq(w1_data),
                w2_bank.eq(w1_bank),
            ]
            # A bank is never accumulated into and swept at once (see `bank_free`), so its
            # ports go to whichever of the two uses it.
            for b in range(2):
                for sb in range(sub):
                    rd, wr = cur_rd[b][sb], cur_wr[b][sb]
                    m.d.comb += rd.addr.eq(Mux(f_valid & (f_bank == b), f_post >> sub_bits, j))
                    with m.If(s_valid & (s_bank == b) & (s_post[:sub_bits] == sb if sub_bits
                                                         else 1)):
                        m.d.comb += [wr.addr.eq(s_post >> sub_bits), wr.data.eq(total),
                                     wr.en.eq(1)]
                    with m.If((sweep_bank == b) & sw2_valid):
                        m.d.comb += [wr.addr.eq(sw2_j), wr.data.eq(0), wr.en.eq(1)]
                    with m.If(clearing):
                        m.d.comb += [wr.addr.eq(j), wr.data.eq(0), wr.en.eq(1)]
            for sb in range(sub):
                m.d.comb += st_rd[sb].addr.eq(j)

            lane_sops.append(f_valid)
            # Nothing of bank `next_sweep` left in this lane (its queue is in order).
            x = next_sweep
            lane_drained.append(((q.level == 0) | (q.r_rdy & (q_data.bank != x)))
                                & (~p_valid | (p_bank != x)) & ((rem == 0) | (it_bank != x))
                                & (~f_valid | (f_bank != x)) & (~r_valid | (r_bank != x))
                                & (~s_valid | (s_bank != x)))

            # Neuron sweep: issue (read I, u, s) -> sw1 (register) -> sw2 (update, write).
            for sb in range(sub):
                sw_cur = Signal(signed(cb), name=f"sw_cur{k}_{sb}")
                sw_state = Signal(state_layout, name=f"sw_state{k}_{sb}")
                m.d.sync += [sw_cur.eq(Mux(sweep_bank, cur_rd[1][sb].data,
                                           cur_rd[0][sb].data)),
                             sw_state.eq(st_rd[sb].data)]
                # Neuron of lane k, sub-bank sb, row r: ((r * sub) + sb) * L + k.
                index = (sw4_j * sub + sb) * lanes + k
                bias_k = [int(bias[n]) if (n := (r * sub + sb) * lanes + k) < layer.n_out
                          else 0 for r in range(sdepth)]
                if any(bias_k):
                    bias_rom = memory.Memory(shape=signed(cb), depth=sdepth, init=bias_k)
                    m.submodules[f"bias{k}_{sb}"] = bias_rom
                    bias_rd = bias_rom.read_port()
                    m.d.comb += bias_rd.addr.eq(sw1_j)
                    b_val = bias_rd.data
                else:
                    b_val = Const(0, signed(cb))
                # sw2: leak (the multiplier of a mul leak) and current + bias, registered;
                # sw3: reset and sum, registered; sw4: clamp, threshold, write back.
                u_prev = Mux(sweep_fresh, 0, sw_state.u)
                leaked = neuron_leak(neuron, u_prev)
                sw3_leak = Signal(leaked.shape(), name=f"sw3_leak{k}_{sb}")
                sw3_cur = Signal(signed(cb + 1), name=f"sw3_cur{k}_{sb}")
                sw3_s = Signal(name=f"sw3_s{k}_{sb}")
                m.d.sync += [sw3_leak.eq(leaked), sw3_cur.eq(sw_cur + b_val),
                             sw3_s.eq(Mux(sweep_fresh, 0, sw_state.s))]
                v = neuron_sum(neuron, sw3_leak, sw3_s, sw3_cur)
                sw4_v = Signal(v.shape(), name=f"sw4_v{k}_{sb}")
                m.d.sync += sw4_v.eq(v)
                u_next, s_next = neuron_clamp(neuron, sw4_v)
                spike = Signal(name=f"spike{k}_{sb}")
                m.d.comb += spike.eq(s_next & (index < layer.n_out))
                spike_bits[sb][k] = spike
                with m.If(sw4_valid):
                    m.d.comb += [
                        st_wr[sb].addr.eq(sw4_j), st_wr[sb].data.u.eq(u_next),
                        st_wr[sb].data.s.eq(spike), st_wr[sb].en.eq(1),
                    ]
                with m.If(clearing):
                    m.d.comb += [st_wr[sb].addr.eq(j), st_wr[sb].data.eq(0), st_wr[sb].en.eq(1)]

        all_ready = Cat(*lane_ready).all()
        all_drained = Cat(*lane_drained).all()
        if self._counters:
            m.d.sync += self.counters.sops.eq(self.counters.sops + sum(lane_sops))

        # Sweep pipeline bookkeeping and the spike-word queue.
        m.d.sync += [sw1_valid.eq(issue_sweep), sw1_j.eq(j),
                     sw2_valid.eq(sw1_valid), sw2_j.eq(sw1_j),
                     sw3_valid.eq(sw2_valid), sw3_j.eq(sw2_j),
                     sw4_valid.eq(sw3_valid), sw4_j.eq(sw3_j)]
        wdata = Signal(word)
        m.d.comb += [
            wdata.bits.eq(Cat(*(bit for row in spike_bits for bit in row))),
            wdata.index.eq(sw4_j),
            wdata.end.eq(sw4_j == sdepth - 1),
            wdata.first.eq(sweep_fresh & (sw4_j == 0)),
            words.w_data.eq(wdata),
            words.w_en.eq(sw4_valid),
        ]
        credit = words.level + sw1_valid + sw2_valid + sw3_valid + sw4_valid < word_depth

        # Input side: events into the lanes; in dense mode, into an input buffer first.
        if self._dense:
            xshape = (signed if vshape.signed else unsigned)(vshape.width + 4)
            xbuf = memory.Memory(shape=xshape, depth=layer.n_in, init=[])
            m.submodules.inputs = xbuf
            x_wr = xbuf.write_port()
            x_rd = xbuf.read_port(transparent_for=(x_wr,))
            acc_valid = Signal()
            acc_addr = Signal.like(self.i.p.addr)
            acc_value = Signal(vshape)
            m.d.sync += acc_valid.eq(0)
            with m.If(acc_valid):
                m.d.comb += [x_wr.addr.eq(acc_addr), x_wr.data.eq(x_rd.data + acc_value),
                             x_wr.en.eq(1)]
            scan_i = Signal(range(layer.n_in + 1))
            scan_pend = Signal()
            scan_addr = Signal.like(self.i.p.addr)

        def close_step(opens_sample):
            # The step accumulated in bank `sel` is complete once its work drains; new events
            # go to the other bank.
            m.d.sync += [
                pend.bit_select(sel, 1).eq(1),
                pend_fresh.bit_select(sel, 1).eq(opens_sample),
                fresh.eq(0), sel.eq(~sel),
            ]

        with m.FSM(name="step"):
            with m.State("Clear"):
                m.d.comb += clearing.eq(1)
                m.d.sync += j.eq(j + 1)
                with m.If(j == sdepth - 1):
                    m.d.sync += j.eq(0)
                    m.next = "Accumulate"

            with m.State("Accumulate"):
                if self._dense:
                    m.d.comb += [self.i.ready.eq(1), x_rd.addr.eq(self.i.p.addr)]
                else:
                    m.d.comb += [self.i.ready.eq(all_ready & bank_free),
                                 push_data.addr.eq(self.i.p.addr),
                                 push_data.value.eq(self.i.p.value),
                                 push_data.bank.eq(sel)]
                with m.If(self.i.valid & self.i.ready):
                    if self._dense:
                        m.d.sync += [acc_valid.eq(self.i.p.value != 0),
                                     acc_addr.eq(self.i.p.addr), acc_value.eq(self.i.p.value)]
                    else:
                        m.d.comb += push.eq(self.i.p.value != 0)
                    with m.If(self.i.p.first):
                        m.d.sync += fresh.eq(1)
                    with m.If(self.i.p.last):
                        if self._dense:
                            m.next = "Scan Inputs"
                        else:
                            close_step(fresh | self.i.p.first)

            if self._dense:
                with m.State("Scan Inputs"):
                    # Visit every input, zeros included: the dense baseline's work.
                    can_push = all_ready & bank_free
                    issue = ~acc_valid & (scan_i < layer.n_in) & (~scan_pend | can_push)
                    m.d.comb += [
                        x_rd.addr.eq(scan_i), x_rd.en.eq(issue | ~scan_pend),
                        push.eq(scan_pend & can_push),
                        push_data.addr.eq(scan_addr), push_data.value.eq(x_rd.data),
                        push_data.bank.eq(sel),
                    ]
                    with m.If(push):
                        # Clear the input once it is on its way (the read port is
                        # transparent, so clearing at issue would read back the zero).
                        m.d.comb += [x_wr.addr.eq(scan_addr), x_wr.data.eq(0), x_wr.en.eq(1)]
                        m.d.sync += scan_pend.eq(0)
                    with m.If(issue):
                        m.d.sync += [scan_pend.eq(1), scan_addr.eq(scan_i),
                                     scan_i.eq(scan_i + 1)]
                    with m.If((scan_i == layer.n_in) & ~scan_pend):
                        m.d.sync += scan_i.eq(0)
                        close_step(fresh)
                        m.next = "Accumulate"

        # Hand the oldest closed step to the sweep once its work has left every lane and the
        # sweep of the step before it is done.
        with m.If(pend.bit_select(next_sweep, 1) & all_drained & ~sweep_busy & ~clearing):
            m.d.comb += start_sweep.eq(1)
            m.d.sync += [
                pend.bit_select(next_sweep, 1).eq(0),
                sweep_busy.eq(1), sweep_bank.eq(next_sweep),
                sweep_fresh.eq(pend_fresh.bit_select(next_sweep, 1)),
                next_sweep.eq(~next_sweep), j.eq(0),
            ]

        # The sweep: L neurons per cycle, as long as the spike-word queue has room.
        with m.If(sweep_busy & ~start_sweep):
            with m.If(j < sdepth):
                with m.If(credit):
                    m.d.comb += issue_sweep.eq(1)
                    m.d.sync += j.eq(j + 1)
            with m.Elif(~sw1_valid & ~sw2_valid & ~sw3_valid & ~sw4_valid):
                m.d.sync += sweep_busy.eq(0)
                if self._counters:
                    m.d.sync += self.counters.steps.eq(self.counters.steps + 1)

        return m
