"""Neuron sweep: after a step's currents are complete, update every neuron and emit its spikes.

The sweep walks the neurons ``width`` at a time (one *row* per cycle): it asks the current
accumulators for the row's currents (a :class:`~hdl.accumulator.BankedAccumulator` reads and
clears them), reads the row's potentials and last spikes, applies DESIGN.md section 3 bit for
bit with the shared staged arithmetic (:func:`hdl.neuron.neuron_leak`,
:func:`~hdl.neuron.neuron_sum`, :func:`~hdl.neuron.neuron_clamp`, one registered stage each),
writes the state back and emits the row's spikes as one spike word.
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

__all__ = ["LATENCY", "SweepCommand", "NeuronSweep", "live_rows", "sweep_ref"]

#: Cycles from a row's issue to its spike word: read state, leak, sum, clamp and write back.
LATENCY = 4


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


def _bias_runs(bias, rows):
    """Rows per run of equal bias rows: runs start at multiples of it (``rows``: constant)."""
    changes = [r for r in range(1, rows) if list(bias[r]) != list(bias[r - 1])]
    return math.gcd(rows, *changes)


class NeuronSweep(wiring.Component):
    """Update ``rows * width`` neurons, ``width`` per cycle, and emit one spike word per row.

    A command on ``i`` starts a sweep of the currents in ``bank``. Row ``r`` is *issued* when
    the output queue has credit: its current read goes out on ``o_read`` (to the
    accumulators, which clear it), its state is read; the currents come back on ``i_current``
    exactly :data:`~hdl.accumulator.READ_LATENCY` cycles later. Then, one registered stage each:
    the leak of the previous potential and the current plus the bias; the sum with the reset;
    the clamp and the spike compare, the state write-back, and the word of spike bits
    ``(bits, index = r, end = (r == rows - 1), first)`` into a :class:`~hdl.queue.ReadQueue`,
    :data:`LATENCY` cycles after the issue; ``o`` follows the stream rules. (Without the output
    queue, see ``output_queue``, rows issue without credit and the words leave a register.)

    Throughput one row per cycle while ``o`` keeps up. The bank's currents have all been read
    when ``o_read`` carries row ``rows - 1``; ``i`` takes the next command from the cycle after
    that (after the rows in flight have been written back, if ``rows < LATENCY``), so
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
                 queue_depth=None, output_queue=True):
        check_neuron(neuron)
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
        super().__init__({
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
        issue_ctrl, read, leak, add, clamp = (Signal(ctrl, name=n) for n in
                                              ("issue_ctrl", "read", "leak", "add", "clamp"))

        # ---- Issue: a row per cycle on credit; its currents are read (and cleared). -------
        active, bank, first, zero = Signal(), Signal(), Signal(), Signal()
        fresh = Signal(init=1)                       # no sweep since reset: state is unknown
        row, in_run, run = Signal(range(rows)), Signal(range(runs)), Signal.like(read.run)
        in_flight = read.valid | leak.valid | add.valid | clamp.valid
        m.d.comb += self.i.ready.eq(~active & (~in_flight if rows < LATENCY else 1))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [active.eq(1), bank.eq(self.i.p.bank), first.eq(self.i.p.first),
                         zero.eq(self.i.p.first | fresh), fresh.eq(0), row.eq(0),
                         in_run.eq(0), run.eq(0)]
        issue = active & room
        m.d.comb += [
            self.o_read.valid.eq(issue), self.o_read.p.row.eq(row), self.o_read.p.bank.eq(bank),
            issue_ctrl.valid.eq(issue), issue_ctrl.row.eq(row), issue_ctrl.zero.eq(zero),
            issue_ctrl.first.eq(first), issue_ctrl.run.eq(run),
        ]
        with m.If(issue):
            m.d.sync += [row.eq(row + 1), in_run.eq(in_run + 1)]
            with m.If(in_run == runs - 1):
                m.d.sync += [in_run.eq(0), run.eq(run + 1)]
            with m.If(row == rows - 1):
                m.d.sync += active.eq(0)
        # The currents come back READ_LATENCY (2) cycles after the issue: in the leak stage,
        # beside the state, which is read at the issue and registered in the read stage.
        m.d.sync += [read.eq(issue_ctrl), leak.eq(read), add.eq(leak), clamp.eq(add)]

        spikes = []
        for u in range(width):
            state = memory.Memory(shape=data.StructLayout({"u": signed(neuron.potential_bits),
                                                           "s": 1}), depth=rows, init=[])
            m.submodules[f"state{u}"] = state
            st_wr = state.write_port()
            st_rd = state.read_port(transparent_for=(st_wr,))
            m.d.comb += st_rd.addr.eq(row)

            # Read: the state's RAM output is registered into the leak stage.
            prev = Signal.like(st_rd.data, name=f"prev{u}")
            m.d.sync += prev.eq(st_rd.data)
            bias = self._bias_of(m, u, read, leak, runs)

            # Leak: leak(u) (a multiplier for a mul leak) and current + bias, registered.
            leaked = neuron_leak(neuron, Mux(leak.zero, 0, prev.u))
            add_leak = Signal(leaked.shape(), name=f"leaked{u}")
            add_cur = Signal(signed(cb + 1), name=f"current{u}")
            add_s = Signal(name=f"last_spike{u}")
            m.d.sync += [add_leak.eq(leaked), add_cur.eq(self.i_current.p[u] + bias),
                         add_s.eq(Mux(leak.zero, 0, prev.s))]

            # Add: the reset and the sum, registered; Clamp: clamp, spike, write back.
            v = neuron_sum(neuron, add_leak, add_s, add_cur)
            clamp_v = Signal(v.shape(), name=f"v{u}")
            m.d.sync += clamp_v.eq(v)
            u_next, s_next = neuron_clamp(neuron, clamp_v)
            spike = Signal(name=f"spike{u}")
            live = self._live[u]
            m.d.comb += spike.eq(s_next & (clamp.row < live) if live < rows else s_next)
            m.d.comb += [st_wr.addr.eq(clamp.row), st_wr.data.u.eq(u_next),
                         st_wr.data.s.eq(spike), st_wr.en.eq(clamp.valid)]
            spikes.append(spike)

        word = Signal(SpikeWord(width, rows))
        m.d.comb += [
            word.bits.eq(Cat(*spikes)),
            word.index.eq(clamp.row),
            word.end.eq(clamp.row == rows - 1),
            word.first.eq(clamp.first & (clamp.row == 0)),
        ]
        if self._output_queue:
            m.d.comb += [words.issue.eq(issue), words.i.valid.eq(clamp.valid),
                         words.i.payload.eq(word)]
        else:
            m.d.sync += [self.o.valid.eq(clamp.valid), self.o.payload.eq(word)]
        return m

    def _bias_of(self, m, u, read, leak, runs):
        """Column ``u``'s bias in the leak stage (a value; ``read``/``leak`` are stages)."""
        cb = self._current_bits
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
