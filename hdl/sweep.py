"""Neuron sweep: after a step's currents are complete, update every neuron and emit its spikes.

The sweep walks the neurons ``width`` at a time (one *row* per cycle): it asks the current
accumulators for the row's currents (a :class:`~hdl.accumulator.BankedAccumulator` reads and
clears them), reads the row's potentials and last spikes, applies DESIGN.md section 3 bit for
bit with the shared staged arithmetic (:func:`hdl.neuron.neuron_leak`,
:func:`~hdl.neuron.neuron_sum`, :func:`~hdl.neuron.neuron_clamp`, one registered stage each),
writes the state back from registers and emits the row's spikes as one spike word.
"""
import math

import numpy as np
from amaranth import *
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .accumulator import SweepRequest
from .compress import SpikeWord
from .neuron import check_neuron, neuron_clamp, neuron_leak, neuron_sum
from .queue import ReadQueue, full_rate_depth
from .wload import WEIGHT_WRITE, weight_memory

__all__ = ["LATENCY", "SweepCommand", "NeuronSweep", "live_rows", "sweep_ref"]

#: Cycles from a row's issue to its spike word: request, read state, leak, sum, clamp, write
#: back.
LATENCY = 6


class SweepCommand(data.StructLayout):
    """``{bank, first}``: sweep the currents of ``bank``; ``first``: the step opens a sample."""
    def __init__(self):
        super().__init__({"bank": unsigned(1), "first": unsigned(1)})


def sweep_ref(neuron, sweeps, *, rows, width, bias=None, live=None):
    """Reference: the spike words of ``sweeps`` ``[(first, currents)]``, in order.

    ``currents`` is ``[rows][width]`` (neuron ``row * width + u``). The state starts at zero
    (as after reset) and a ``first`` sweep takes the previous potential and spike as zero.
    Returns ``[(bits, index, end, first)]`` as :class:`NeuronSweep` emits them: the update is
    :func:`models.golden.neuron_step`, with ``bias`` added to the current; spikes of neurons
    beyond ``live`` rows of their column are dropped (and stored as 0).
    """
    from models.golden import neuron_step
    bias = np.zeros((rows, width), np.int64) if bias is None else np.asarray(bias, np.int64)
    live = [rows] * width if live is None else list(live)
    alive = np.array([[r < live[u] for u in range(width)] for r in range(rows)])
    u = np.zeros((rows, width), np.int64)
    s = np.zeros((rows, width), np.int64)
    words = []
    for first, currents in sweeps:
        if first:
            u, s = np.zeros_like(u), np.zeros_like(s)
        u, s = neuron_step(u, s, np.asarray(currents, np.int64) + bias, neuron)
        s = s * alive
        words += [(sum(int(s[r, c]) << c for c in range(width)), r, int(r == rows - 1),
                   int(bool(first) and r == 0)) for r in range(rows)]
    return words


def live_rows(n, width):
    """``live`` for the first ``n`` neurons ``row * width + u``: rows that exist per column."""
    return [max(0, -(-(n - u) // width)) for u in range(width)]


def _clamp(neuron, v, theta=None):
    """:func:`hdl.neuron.neuron_clamp`, bit for bit, with the range checks on ``v``'s top bits.

    The potential range is the whole of ``signed(potential_bits)``, so ``v`` is out of it
    exactly when its bits from ``potential_bits - 1`` up are not all equal: a LUT tree instead
    of two carry-chain compares beside the spike's (on the UP5K the three compares and the
    clamp's multiplexers took a whole 20 ns cycle). ``theta``: the threshold as a value.
    """
    p, lo, hi = neuron.potential_bits, neuron.lo, neuron.hi
    v = v.as_signed()
    if len(v) <= p or (lo, hi) != (-2 ** (p - 1), 2 ** (p - 1) - 1):
        return neuron_clamp(neuron, v) if theta is None else neuron_clamp(neuron, v, theta)
    above = int(hi > neuron.threshold) if theta is None else theta < hi
    theta = neuron.threshold if theta is None else theta
    top = v[p - 1:]
    fits = top.all() | ~top.any()
    u = Mux(fits, v[:p], Mux(v[-1], lo, hi))[:p].as_signed()
    s = Mux(fits | v[-1], v > theta, above)
    return u, s


def _bias_runs(bias, rows):
    """Rows per run of equal bias rows: runs start at multiples of it (``rows``: constant)."""
    changes = [r for r in range(1, rows) if list(bias[r]) != list(bias[r - 1])]
    return math.gcd(rows, *changes)


class NeuronSweep(wiring.Component):
    """Update ``rows * width`` neurons, ``width`` per cycle, and emit one spike word per row.

    A command on ``i`` starts a sweep of the currents in ``bank``. Row ``r`` is *issued* when
    the output queue has credit; a cycle later, from registers, its current read goes out on
    ``o_read`` (to the accumulators, which clear it) and its state is read; the currents come
    back on ``i_current`` exactly :data:`~hdl.accumulator.READ_LATENCY` cycles after the
    request. Then, one registered stage each:
    the leak of the previous potential and the current plus the bias; the sum with the reset;
    the clamp and the spike compare; the state write-back and the word of spike bits
    ``(bits, index = r, end = (r == rows - 1), first)`` into a :class:`~hdl.queue.ReadQueue`,
    :data:`LATENCY` cycles after the issue; ``o`` follows the stream rules. (Without the output
    queue, see ``output_queue``, rows issue without credit and the words leave a register.)

    Throughput one row per cycle while ``o`` keeps up. The bank's currents have all been read
    when ``o_read`` carries row ``rows - 1``; ``i`` takes the next command from the cycle after
    that row's issue (after the rows in flight have been written back, if ``rows < LATENCY``), so
    consecutive sweeps overlap.

    ``first`` on a command (and the first sweep after reset) takes every previous potential and
    spike as zero, so no clearing pass is needed. Neurons whose row is at or beyond
    ``live[u]`` in column ``u`` do not exist: their spike is 0. Equal to :func:`sweep_ref`.

    Parameters
    ----------
    neuron : :class:`models.bundle.Neuron`
    current_bits : :class:`int`
        Width of the signed currents (and of the bias).
    rows : :class:`int`
        Rows per sweep.
    width : :class:`int`
        Neurons per row (updates per cycle); neuron ``row * width + u`` is bit ``u``.
    bias : array-like ``[rows][width]`` of :class:`int`, or ``None``
        Added to every current. Stored as cheaply as its structure allows: nothing when zero,
        a table of runs with a run counter when it changes only every few rows (a convolution's
        per-channel bias), a ROM per column otherwise.
    live : sequence of :class:`int`, or ``None``
        Rows that exist in each column (default: all).
    queue_depth : :class:`int`
        Spike words the output queue holds (default :func:`~hdl.queue.full_rate_depth` of
        :data:`LATENCY`: the fewest that keep one row per cycle).
    output_queue : :class:`bool`
        ``False``: no output queue, for a consumer that takes a word in every cycle (one that
        has room for a whole sweep before it lets the sweep start). ``o`` is then
        ``always_ready`` and each word leaves a register, :data:`LATENCY` + 1 cycles after its
        row's issue as with the queue; rows issue one per cycle, without credit.

    Members
    -------
    i : ``In(stream.Signature(SweepCommand()))``
    o_read : ``Out(stream.Signature(SweepRequest(rows), always_ready=True))``
    i_current : ``In(stream.Signature(ArrayLayout(signed(current_bits), width),
    always_ready=True))``
    o : ``Out(stream.Signature(SpikeWord(width, rows)))``, ``always_ready`` without the output
        queue

    FIXME(amaranth-lang/amaranth#1574): ``verilog.convert`` cannot take this component as the
    top (the ``ready`` of an ``always_ready`` stream is a constant); build it inside another
    module, as the engines do.
    """
    def __init__(self, neuron, *, current_bits, rows, width, bias=None, live=None,
                 queue_depth=None, output_queue=True, bias_load=None, threshold_load=None,
                 store=None):
        check_neuron(neuron)
        if bias_load is not None and (bias is not None or len(bias_load) != width):
            raise ValueError(f"Bias load must give one memory per column ({width}) and comes "
                             f"instead of a bias, not {bias_load!r}")
        for name, value, lo in (("Current bits", current_bits, 2), ("Rows", rows, 1),
                                ("Width", width, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                kind = "a positive integer" if lo == 1 else f"an integer of at least {lo}"
                raise TypeError(f"{name} must be {kind}, not {value!r}")
        if bias is not None:
            if np.shape(bias) != (rows, width):
                raise ValueError(f"Bias must have shape {(rows, width)!r}, "
                                 f"not {np.shape(bias)!r}")
            bias = [[int(b) for b in row] for row in np.asarray(bias)]
            lo, hi = -2 ** (current_bits - 1), 2 ** (current_bits - 1) - 1
            for b in (min(map(min, bias)), max(map(max, bias))):
                if not lo <= b <= hi:
                    raise ValueError(f"Bias {b} is not representable as "
                                     f"signed({current_bits})")
            if not any(map(any, bias)):
                bias = None
        if live is not None:
            counts = list(live) if isinstance(live, (list, tuple)) else []
            if len(counts) != width or not all(
                    isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= rows
                    for v in counts):
                raise ValueError(f"Live must be {width} row counts from 0 to {rows}, "
                                 f"not {live!r}")
            live = counts
        if not isinstance(output_queue, bool):
            raise TypeError(f"Output queue must be a bool, not {output_queue!r}")
        if queue_depth is not None and not output_queue:
            raise ValueError(f"Queue depth must be None without the output queue, "
                             f"not {queue_depth!r}")
        if queue_depth is None:
            queue_depth = full_rate_depth(LATENCY)
        if isinstance(queue_depth, bool) or not isinstance(queue_depth, int) or queue_depth < 1:
            raise TypeError(f"Queue depth must be a positive integer, not {queue_depth!r}")
        self._neuron, self._current_bits = neuron, current_bits
        self._rows, self._width, self._bias = rows, width, bias
        self._live, self._queue_depth = live or [rows] * width, queue_depth
        self._output_queue = output_queue
        self._bias_load, self._threshold_load, self._store = bias_load, threshold_load, store
        loaded = bias_load is not None or threshold_load is not None
        super().__init__({
            **({"load": In(WEIGHT_WRITE)} if loaded else {}),
            "i": In(stream.Signature(SweepCommand())),
            "o_read": Out(stream.Signature(SweepRequest(rows), always_ready=True)),
            "i_current": In(stream.Signature(data.ArrayLayout(signed(current_bits), width),
                                             always_ready=True)),
            "o": Out(stream.Signature(SpikeWord(width, rows), always_ready=not output_queue)),
        })

    @property
    def rows(self):
        """Rows per sweep."""
        return self._rows

    @property
    def width(self):
        """Neurons per row."""
        return self._width

    def elaborate(self, platform):
        m = Module()
        neuron, cb, rows, width = self._neuron, self._current_bits, self._rows, self._width

        if self._output_queue:
            m.submodules.words = words = ReadQueue(SpikeWord(width, rows),
                                                   depth=self._queue_depth)
            wiring.connect(m, words.o, wiring.flipped(self.o))
            room = words.room
        else:
            room = 1                                 # the consumer takes every word

        # The row pipeline's bookkeeping, shifted along beside the neurons' data.
        runs = _bias_runs(self._bias, rows) if self._bias is not None else rows
        ctrl = data.StructLayout({"valid": 1, "row": range(rows), "run": range(-(-rows // runs)),
                                  "zero": 1, "first": 1})
        issue_ctrl, req, read, leak, add, clamp, wb = (
            Signal(ctrl, name=n)
            for n in ("issue_ctrl", "req", "read", "leak", "add", "clamp", "wb"))

        # ---- Issue: a row per cycle on credit; its currents are read (and cleared). -------
        active, bank, first, zero = Signal(), Signal(), Signal(), Signal()
        fresh = Signal(init=1)                       # no sweep since reset: state is unknown
        row, in_run, run = Signal(range(rows)), Signal(range(runs)), Signal.like(read.run)
        in_flight = req.valid | read.valid | leak.valid | add.valid | clamp.valid | wb.valid
        m.d.comb += self.i.ready.eq(~active & (~in_flight if rows < LATENCY else 1))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [active.eq(1), bank.eq(self.i.p.bank), first.eq(self.i.p.first),
                         zero.eq(self.i.p.first | fresh), fresh.eq(0), row.eq(0),
                         in_run.eq(0), run.eq(0)]
        issue = active & room
        # The request leaves a register a cycle after the issue: the credit decision stays out
        # of the accumulators' memory addresses (and their iCE40 read-during-write logic).
        req_bank = Signal()
        m.d.sync += req_bank.eq(bank)
        m.d.comb += [
            self.o_read.valid.eq(req.valid), self.o_read.p.row.eq(req.row),
            self.o_read.p.bank.eq(req_bank),
            issue_ctrl.valid.eq(issue), issue_ctrl.row.eq(row), issue_ctrl.zero.eq(zero),
            issue_ctrl.first.eq(first), issue_ctrl.run.eq(run),
        ]
        with m.If(issue):
            m.d.sync += [row.eq(row + 1), in_run.eq(in_run + 1)]
            with m.If(in_run == runs - 1):
                m.d.sync += [in_run.eq(0), run.eq(run + 1)]
            with m.If(row == rows - 1):
                m.d.sync += active.eq(0)
        # The currents come back READ_LATENCY (2) cycles after the request: in the leak stage,
        # beside the state, which is read with the request and registered in the read stage.
        m.d.sync += [req.eq(issue_ctrl), read.eq(req), leak.eq(read), add.eq(leak),
                     clamp.eq(add), wb.eq(clamp)]

        theta = None
        if self._threshold_load is not None:
            # The threshold loaded at run time: a register the load bus writes (its only word).
            theta = Signal(unsigned(neuron.potential_bits - 1), name="threshold")
            with m.If(self.load.en & (self.load.sel == self._threshold_load)):
                m.d.sync += theta.eq(self.load.data[:len(theta)])

        spikes = []
        for u in range(width):
            state = memory.Memory(shape=data.StructLayout({"u": signed(neuron.potential_bits),
                                                           "s": 1}), depth=rows, init=[])
            m.submodules[f"state{u}"] = state
            st_wr = state.write_port()
            st_rd = state.read_port(transparent_for=(st_wr,))
            m.d.comb += st_rd.addr.eq(req.row)

            # Read: the state's RAM output is registered into the leak stage.
            prev_u = Signal(signed(neuron.potential_bits), name=f"prev_u{u}", reset_less=True)
            prev_s = Signal(name=f"prev_s{u}", reset_less=True)
            m.d.sync += [prev_u.eq(st_rd.data.u), prev_s.eq(st_rd.data.s)]
            bias = self._bias_of(m, u, read, leak, runs, platform)

            # Leak: leak(u) (a multiplier for a mul leak) and current + bias, registered. The
            # multiplier takes the register `prev_u` as it is and its product goes straight
            # into a register (no reset, no enable), so a DSP block can hold both (an iCE40
            # SB_MAC16 without them is a combinational path that nextpnr does not time); a
            # step that opens a sample zeroes the leaked potential in the add stage instead
            # (the leak of 0 is 0).
            leaked = neuron_leak(neuron, prev_u)
            add_leak = Signal(leaked.shape(), name=f"leaked{u}", reset_less=True)
            add_cur = Signal(signed(cb + 1), name=f"current{u}", reset_less=True)
            add_s = Signal(name=f"last_spike{u}", reset_less=True)
            m.d.sync += [add_leak.eq(leaked), add_cur.eq(self.i_current.p[u] + bias),
                         add_s.eq(Mux(leak.zero, 0, prev_s))]

            # Add: the reset and the sum, registered; Clamp: clamp and spike, registered (the
            # compares' carry chains and the clamp's multiplexers fill an iCE40 cycle, so the
            # state write and the spike word come from registers); Write back.
            if theta is None:
                v = neuron_sum(neuron, Mux(add.zero, 0, add_leak), add_s, add_cur)
            else:
                v = neuron_sum(neuron, Mux(add.zero, 0, add_leak), add_s, add_cur, theta)
            clamp_v = Signal(v.shape(), name=f"v{u}", reset_less=True)
            m.d.sync += clamp_v.eq(v)
            u_next, s_next = _clamp(neuron, clamp_v, theta)
            spike = Signal(name=f"spike{u}", reset_less=True)
            wb_u = Signal.like(u_next, name=f"u_next{u}", reset_less=True)
            live = self._live[u]
            m.d.sync += [wb_u.eq(u_next),
                         spike.eq(s_next & (clamp.row < live) if live < rows else s_next)]
            m.d.comb += [st_wr.addr.eq(wb.row), st_wr.data.u.eq(wb_u),
                         st_wr.data.s.eq(spike), st_wr.en.eq(wb.valid)]
            spikes.append(spike)

        word = Signal(SpikeWord(width, rows))
        m.d.comb += [
            word.bits.eq(Cat(*spikes)),
            word.index.eq(wb.row),
            word.end.eq(wb.row == rows - 1),
            word.first.eq(wb.first & (wb.row == 0)),
        ]
        if self._output_queue:
            m.d.comb += [words.issue.eq(issue), words.i.valid.eq(wb.valid),
                         words.i.payload.eq(word)]
        else:
            m.d.sync += [self.o.valid.eq(wb.valid), self.o.payload.eq(word)]
        return m

    def _bias_of(self, m, u, read, leak, runs, platform=None):
        """Column ``u``'s bias in the leak stage (a value; ``read``/``leak`` are stages)."""
        cb = self._current_bits
        if self._bias_load is not None:              # loaded at run time: any values
            sel = self._bias_load[u]
            rom = weight_memory(m, f"bias{u}", shape=signed(cb), depth=self._rows, init=[],
                                load=self.load, sel=sel, spram=self._store.place()[sel],
                                platform=platform)
            rom_rd = rom.read_port()
            m.d.comb += rom_rd.addr.eq(read.row)
            return rom_rd.data
        if self._bias is None:
            return Const(0, signed(cb))
        column = [self._bias[r][u] for r in range(self._rows)]
        if not any(column):
            return Const(0, signed(cb))
        if runs > 1:                                 # constant over runs: a table of the runs
            return Array(Const(b, signed(cb)) for b in column[::runs])[leak.run]
        rom = memory.Memory(shape=signed(cb), depth=self._rows, init=column)
        m.submodules[f"bias{u}"] = rom
        rom_rd = rom.read_port()
        m.d.comb += rom_rd.addr.eq(read.row)         # read in the read stage, used in leak
        return rom_rd.data
