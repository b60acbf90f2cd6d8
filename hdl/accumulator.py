"""Banked current accumulator: a pipelined read-modify-write with forwarding, two banks.

Every event-driven engine adds synaptic contributions into per-neuron currents, one per cycle
per lane, while a neuron sweep reads and clears the currents of the step before. The one-stage
read-modify-write (RAM output -> adder -> RAM input in one cycle) caps an iCE40 near 22-30 MHz;
registering the RAM output and forwarding the sums still in flight reached about 60 MHz with 8
lanes (TOOLCHAIN.md). :class:`BankedAccumulator` is that datapath, written once.
"""
from amaranth import *
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2
from amaranth.vendor import SiliconBluePlatform

__all__ = ["READ_LATENCY", "AccumulateOp", "SweepRequest", "BankedAccumulator",
           "accumulate_ref"]

#: Cycles from a sweep read request to its currents: the memory read, then the registered RAM
#: output (no RAM output feeds the sweep's adders directly).
READ_LATENCY = 2


class AccumulateOp(data.StructLayout):
    """``{addr, delta, bank}``: add ``delta`` to the current at ``addr`` of ``bank``."""
    def __init__(self, depth, current_bits):
        super().__init__({"addr": range(depth), "delta": signed(current_bits),
                          "bank": unsigned(1)})


class SweepRequest(data.StructLayout):
    """``{row, bank}``: read (and clear) one row of currents of ``bank``."""
    def __init__(self, rows):
        super().__init__({"row": range(rows), "bank": unsigned(1)})


def _wrap(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def accumulate_ref(commands, *, depth, current_bits, sweep_width=1):
    """Reference: the rows that the sweep reads for ``commands``, in order.

    ``commands`` are ``("add", addr, delta, bank)`` and ``("sweep", row, bank)``. A sweep reads
    the ``sweep_width`` currents ``row * sweep_width + s`` of the bank (0 beyond ``depth``) and
    clears them. Sums wrap to ``signed(current_bits)``, as the hardware does.
    """
    banks = [[0] * depth for _ in range(2)]
    rows = []
    for kind, where, *rest in commands:
        if kind == "add":
            delta, bank = rest
            banks[bank][where] = _wrap(banks[bank][where] + delta, current_bits)
        else:
            bank, = rest
            addrs = [where * sweep_width + s for s in range(sweep_width)]
            rows.append(tuple(banks[bank][a] if a < depth else 0 for a in addrs))
            for a in addrs:
                if a < depth:
                    banks[bank][a] = 0
    return rows


class BankedAccumulator(wiring.Component):
    """Add deltas into one of two banks of currents, one per cycle; sweep and clear the other.

    *Accumulate*: an operation accepted on ``i`` in cycle ``t`` reads its current (cycle
    ``t``), registers the RAM output (``t + 1``), adds its delta and writes the sum back
    (``t + 2``). The sums of the two operations before it are still in flight when it reads, so
    they are forwarded by address and bank: any sequence of operations, back to back on one
    address included, adds up exactly. Throughput one operation per cycle; ``i.ready`` is low
    only while the banks are cleared after reset (``ceil(depth / sweep_width)`` cycles), so a
    producer that cannot stall waits for it once. Sums wrap to ``signed(current_bits)``.

    *Sweep*: a request on ``i_sweep`` reads row ``row`` of ``bank``, the ``sweep_width``
    currents ``row * sweep_width + s`` (bank ``s`` of the row is a memory of its own, so they
    come out together), and clears them in the same cycle; they leave on ``o_sweep``
    :data:`READ_LATENCY` cycles later, registered. Neither stream can stall.

    The caller keeps the banks apart: no operation may be sent into a bank while it is swept,
    and a bank may be swept once ``busy`` shows no operation of it in flight (sums are written
    two cycles after the operation was accepted). Equal to :func:`accumulate_ref`.

    Parameters
    ----------
    depth : :class:`int`
        Currents per bank.
    current_bits : :class:`int`
        Width of the signed currents and deltas.
    sweep_width : :class:`int`
        Currents per sweep read, a power of two (sub-banks: address ``a`` lives in sub-bank
        ``a % sweep_width``, row ``a // sweep_width``).
    raw_outputs : :class:`bool` or ``None``
        ``True``: every RAM output goes into a register of its own and the bank (and sub-bank)
        is selected after it, in the add stage and on ``o_sweep`` (for the ECP5, whose block
        RAM clock-to-out leaves no time for a multiplexer at 130 MHz). ``False``: the bank is
        selected between the RAM outputs and the registers (fewer flip-flops and a shorter add
        stage: the iCE40 form). ``None`` (default): ``False`` when elaborated for an iCE40
        platform, ``True`` otherwise. The latency and the results are the same.

    Members
    -------
    i : ``In(stream.Signature(AccumulateOp(depth, current_bits)))``
    busy : ``Out(2)``
        Bit ``b``: an accepted operation on bank ``b`` has not been written yet.
    i_sweep : ``In(stream.Signature(SweepRequest(rows), always_ready=True))``
    o_sweep : ``Out(stream.Signature(ArrayLayout(signed(current_bits), sweep_width),
    always_ready=True))``

    FIXME(amaranth-lang/amaranth#1574): ``verilog.convert`` cannot take this component as the
    top (the ``ready`` of an ``always_ready`` stream is a constant); build it inside another
    module, as the engines do.
    """
    def __init__(self, depth, *, current_bits, sweep_width=1, raw_outputs=None):
        for name, value, lo in (("Depth", depth, 1), ("Current bits", current_bits, 2),
                                ("Sweep width", sweep_width, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                kind = "a positive integer" if lo == 1 else f"an integer of at least {lo}"
                raise TypeError(f"{name} must be {kind}, not {value!r}")
        if sweep_width & (sweep_width - 1):
            raise ValueError(f"Sweep width must be a power of two, not {sweep_width}")
        if sweep_width > depth:
            raise ValueError(f"Sweep width must be at most the depth ({depth}), "
                             f"not {sweep_width}")
        if raw_outputs is not None and not isinstance(raw_outputs, bool):
            raise TypeError(f"Raw outputs must be None or a bool, not {raw_outputs!r}")
        self._depth, self._current_bits, self._sweep_width = depth, current_bits, sweep_width
        self._raw_outputs = raw_outputs
        self._rows = -(-depth // sweep_width)
        super().__init__({
            "i": In(stream.Signature(AccumulateOp(depth, current_bits))),
            "busy": Out(2),
            "i_sweep": In(stream.Signature(SweepRequest(self._rows), always_ready=True)),
            "o_sweep": Out(stream.Signature(
                data.ArrayLayout(signed(current_bits), sweep_width), always_ready=True)),
        })

    @property
    def depth(self):
        """Currents per bank."""
        return self._depth

    @property
    def rows(self):
        """Sweep rows per bank: ``ceil(depth / sweep_width)``."""
        return self._rows

    def elaborate(self, platform):
        m = Module()
        cb, width, rows = self._current_bits, self._sweep_width, self._rows
        sub_bits = exact_log2(width)                 # address = row * width + sub-bank

        rd, wr = [[], []], [[], []]                  # [bank][sub-bank]
        for b in range(2):
            for s in range(width):
                mem = m.submodules[f"current{b}_{s}"] = memory.Memory(
                    shape=signed(cb), depth=rows, init=[])
                rd[b].append(mem.read_port())
                wr[b].append(mem.write_port())

        def row_of(addr):
            return addr >> sub_bits

        raw_outputs = self._raw_outputs
        if raw_outputs is None:
            raw_outputs = not isinstance(platform, SiliconBluePlatform)

        def select(bank, addr, outputs):             # `outputs[b][s]`: of `addr` in `bank`
            per_bank = [Array(outputs[b])[addr[:sub_bits]] if sub_bits else outputs[b][0]
                        for b in range(2)]
            return Mux(bank, per_bank[1], per_bank[0])

        ram = [[port.data for port in rd[b]] for b in range(2)]
        if raw_outputs:                              # every RAM output into a register first
            raw = [[Signal(signed(cb), name=f"raw{b}_{s}", reset_less=True)
                    for s in range(width)] for b in range(2)]
            m.d.sync += [raw[b][s].eq(ram[b][s]) for b in range(2) for s in range(width)]

        # ---- Clear after reset. ------------------------------------------------------------
        clearing = Signal(init=1)
        clear_row = Signal(range(rows))
        with m.If(clearing):
            m.d.sync += clear_row.eq(clear_row + 1)
            with m.If(clear_row == rows - 1):
                m.d.sync += clearing.eq(0)
        m.d.comb += self.i.ready.eq(~clearing)

        # ---- Accumulate: read -> register the RAM output -> add (forwarding) and write. ----
        stage = data.StructLayout({"valid": 1, "addr": self.i.p.addr.shape(),
                                   "delta": signed(cb), "bank": 1})
        written = data.StructLayout({"valid": 1, "addr": self.i.p.addr.shape(),
                                     "sum": signed(cb), "bank": 1})
        read, register, add = self.i.p, Signal(stage), Signal(stage)
        wrote = Signal(written)                      # the sum written a cycle ago
        newer = Signal()                             # the sum written a cycle ago is newer

        def same(a, b):
            return a.valid & (a.addr == b.addr) & (a.bank == b.bank)

        # The read in `register` missed two sums: the one `add` writes now and the one written
        # a cycle ago (`wrote`); anything older was in the memory when it read. Which one to
        # take is decided while the RAM output is registered.
        total = Signal(signed(cb))
        if raw_outputs:
            # The add stage selects among the registered RAM outputs and the two sums.
            older = Signal(signed(cb), reset_less=True)  # the sum written two cycles ago...
            use_older = Signal()                     # ...if the read in `add` missed it
            base = Mux(use_older, older, select(add.bank, add.addr, raw))
            m.d.sync += [older.eq(wrote.sum), use_older.eq(same(wrote, register))]
        else:
            # The older sum is chosen while the RAM output is registered, so the add stage has
            # a single 2:1 mux in front of its adder.
            base = Signal(signed(cb), reset_less=True)
            m.d.sync += base.eq(Mux(same(wrote, register), wrote.sum,
                                    select(register.bank, register.addr, ram)))
        m.d.comb += total.eq(Mux(newer, wrote.sum, base) + add.delta)
        m.d.sync += [
            register.valid.eq(self.i.valid & self.i.ready), register.addr.eq(read.addr),
            register.delta.eq(read.delta), register.bank.eq(read.bank),
            add.eq(register),
            newer.eq(same(add, register)),
            wrote.valid.eq(add.valid), wrote.addr.eq(add.addr), wrote.bank.eq(add.bank),
            wrote.sum.eq(total),
        ]
        m.d.comb += self.busy.eq(Cat(*((register.valid & (register.bank == b))
                                       | (add.valid & (add.bank == b)) for b in range(2))))

        # ---- Sweep: read a row of the bank and clear it; register the RAM output. ---------
        req = self.i_sweep
        swept_valid, swept_bank, swept_bank_out = Signal(), Signal(), Signal()
        m.d.sync += [swept_valid.eq(req.valid), swept_bank.eq(req.p.bank),
                     swept_bank_out.eq(swept_bank), self.o_sweep.valid.eq(swept_valid)]
        if raw_outputs:
            m.d.comb += [self.o_sweep.p[s].eq(Mux(swept_bank_out, raw[1][s], raw[0][s]))
                         for s in range(width)]
        else:
            m.d.sync += [self.o_sweep.p[s].eq(Mux(swept_bank, ram[1][s], ram[0][s]))
                         for s in range(width)]

        # ---- Memory ports. Priority: clear after reset, sweep clear, accumulate. ----------
        for b in range(2):
            sweeping = req.valid & (req.p.bank == b)
            for s in range(width):
                # A bank that is not swept reads the operation's address, whether there is an
                # operation or not (its data is used only for one): the producer's `valid`
                # stays out of the memory's address.
                m.d.comb += rd[b][s].addr.eq(Mux(sweeping, req.p.row, row_of(read.addr)))
                with m.If(clearing):
                    m.d.comb += [wr[b][s].addr.eq(clear_row), wr[b][s].en.eq(1)]
                with m.Elif(sweeping):
                    m.d.comb += [wr[b][s].addr.eq(req.p.row), wr[b][s].en.eq(1)]
                with m.Elif(add.valid & (add.bank == b) & (add.addr[:sub_bits] == s)):
                    m.d.comb += [wr[b][s].addr.eq(row_of(add.addr)), wr[b][s].data.eq(total),
                                 wr[b][s].en.eq(1)]
        return m
