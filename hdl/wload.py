"""Weights loaded at run time: the memory registry, the byte loader and the UP5K's SPRAM.

A design built with ``weights="load"`` (:class:`hdl.top.Accelerator`) keeps its weights and
biases in memories without initial contents and fills them from a byte stream when it runs, so
that one bitstream runs any bundle of the same shape, and so that the large ones can live in
the iCE40 UP5K's SPRAM, which has no initial contents at all (docs/boards.md, "Weights loaded at
run time").

- :class:`WeightStore`: every loadable memory of a design, registered by the engines when they
  are constructed (before elaboration), in load order. Its :meth:`~WeightStore.image` is the
  byte stream that fills them; its :attr:`~WeightStore.ident` names the layout.
- :class:`WeightLoader`: takes the image byte by byte and writes each memory word as soon as
  its last byte has come, on a broadcast :data:`WEIGHT_WRITE` bus that every loadable memory
  watches for its own ``sel``.
- :func:`weight_memory`: a component's weight memory as a read port; the ROM it always was, or
  (load mode) a RAM written from the bus, in SPRAM where the store placed it.

Image layout: the memories in registration order; each memory's words from address 0 up, every
word of it, padding included; a word is ``ceil(width / 8)`` bytes, little-endian, the field
of its layout in the low bits (as Amaranth packs a :class:`~amaranth.lib.data.StructLayout`).
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass

from amaranth import *
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["WEIGHT_WRITE", "SPRAM_WORDS", "SPRAM_WIDTH", "SPRAM_BLOCKS", "WeightStore",
           "WeightLoader", "SPRAM", "LoadedMemory", "weight_memory", "word_value"]

#: Bus widths of the broadcast write bus (fixed, so a component's signature does not depend on
#: the other memories of the design).
SEL_BITS, ADDR_BITS, DATA_BITS = 8, 20, 32

#: One write on the broadcast bus: memory ``sel`` gets ``data`` at ``addr`` when ``en``.
WEIGHT_WRITE = data.StructLayout({"en": 1, "sel": SEL_BITS, "addr": ADDR_BITS,
                                  "data": DATA_BITS})

#: The UP5K's SB_SPRAM256KA: 16K words of 16 bits, four of them.
SPRAM_WORDS, SPRAM_WIDTH, SPRAM_BLOCKS = 16384, 16, 4
#: Memories smaller than this stay in block RAM even where SPRAM is free (a block RAM is 4 Kbit).
SPRAM_MIN_BITS = 8 * 1024


def word_value(shape, value):
    """The integer a memory word of ``shape`` holds for ``value`` (an int, or a dict of a
    struct's fields), as Amaranth lays it out."""
    if isinstance(shape, data.Layout):
        return Const.cast(shape.const(value)).value
    width = Shape.cast(shape).width
    return int(value) & ((1 << width) - 1)


@dataclass
class Slot:
    """A registered memory: ``name``, ``width`` bits x ``depth`` words, its image ``words``,
    and whether it sits in SPRAM (``spram``: blocks of 16K x 16)."""
    name: str
    width: int
    depth: int
    words: list
    spram: int = 0

    @property
    def nbytes(self):
        return (self.width + 7) // 8

    @property
    def bits(self):
        return self.width * self.depth


class WeightStore:
    """The run-time weight memories of one design, in load order.

    Engines constructed with a store call :meth:`add` for each weight memory; the store then
    knows the image (:meth:`image`), its size and a 32-bit :attr:`ident` of the layout (names,
    widths, depths and ``shape``, the facts the hardware fixes: sizes, neuron parameters).

    Parameters
    ----------
    spram : :class:`int`
        SPRAM blocks (16K x 16) the store may place memories in: 0 (none; block RAM or logic
        only) up to :data:`SPRAM_BLOCKS`. :meth:`place` gives them to the largest memories of
        at most 16 bits and at least :data:`SPRAM_MIN_BITS`.
    """
    def __init__(self, *, spram=0):
        if isinstance(spram, bool) or not isinstance(spram, int) or not \
                0 <= spram <= SPRAM_BLOCKS:
            raise ValueError(f"SPRAM blocks must be an integer from 0 to {SPRAM_BLOCKS}, "
                             f"not {spram!r}")
        self._slots, self._spram, self._placed, self._shape = [], spram, False, []

    @property
    def slots(self):
        return list(self._slots)

    def add(self, name, shape, depth, words):
        """Register a memory of ``shape`` x ``depth`` holding ``words`` (integers or struct
        dicts, at most ``depth`` of them; the rest is zero); returns its ``sel``."""
        if self._placed:
            raise RuntimeError("Weight store is already placed: register memories first")
        width = Shape.cast(shape).width
        if len(self._slots) >= 2 ** SEL_BITS:
            raise ValueError(f"A design may load at most {2 ** SEL_BITS} memories")
        if width > DATA_BITS or depth > 2 ** ADDR_BITS:
            raise ValueError(f"Memory {name!r} of {width} x {depth} is too large to load "
                             f"(at most {DATA_BITS} bits x {2 ** ADDR_BITS} words)")
        if len(words) > depth:
            raise ValueError(f"Memory {name!r} holds {depth} words, not {len(words)}")
        values = [word_value(shape, w) for w in words]
        self._slots.append(Slot(name, width, depth, values + [0] * (depth - len(values))))
        return len(self._slots) - 1

    def describe(self, **facts):
        """Add ``facts`` (JSON-serialisable) to what :attr:`ident` covers."""
        self._shape.append(facts)

    def place(self):
        """Decide which memories go into SPRAM (once; later calls return the same answer)."""
        if not self._placed:
            free = self._spram
            for slot in sorted(self._slots, key=lambda s: -s.bits):
                blocks = math.ceil(slot.depth / SPRAM_WORDS) * math.ceil(slot.width / SPRAM_WIDTH)
                if slot.width <= SPRAM_WIDTH and slot.bits >= SPRAM_MIN_BITS and blocks <= free:
                    slot.spram, free = blocks, free - blocks
            self._placed = True
        return [slot.spram for slot in self._slots]

    @property
    def size(self):
        """Bytes of the image."""
        return sum(slot.nbytes * slot.depth for slot in self._slots)

    def image(self):
        """The bytes that fill every memory, in load order."""
        out = bytearray()
        for slot in self._slots:
            for word in slot.words:
                out += word.to_bytes(slot.nbytes, "little")
        return bytes(out)

    @property
    def ident(self):
        """32-bit identity of the layout (not of the contents): equal for two designs exactly
        when one image fits the other."""
        layout = [[s.name, s.width, s.depth] for s in self._slots]
        return zlib.crc32(json.dumps({"memories": layout, "shape": self._shape},
                                     sort_keys=True).encode())


class WeightLoader(wiring.Component):
    """Write an image's bytes into the store's memories, word by word, in load order.

    ``restart`` (a one-cycle strobe) starts again at the first memory's word 0; each byte on
    ``i`` (always taken) goes into the word being assembled, and the byte that completes a word
    writes it on ``o`` the cycle after (a register). Bytes past the image are ignored; ``done``
    is high once every word has been written. A byte may come every other cycle at most (the
    memory's byte count and depth are decided a cycle ahead); the host link gives one every
    UART character.

    Members
    -------
    restart : ``In(1)``
    i : ``In(stream.Signature(8, always_ready=True))``
    o : ``Out(WEIGHT_WRITE)``
    done : ``Out(1)``
    """
    def __init__(self, store):
        if not isinstance(store, WeightStore) or not store.slots:
            raise ValueError(f"Weight loader needs a weight store with memories, not {store!r}")
        self._store = store
        super().__init__({
            "restart": In(1),
            "i": In(stream.Signature(8, always_ready=True)),
            "o": Out(WEIGHT_WRITE),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        slots = self._store.slots
        maxbytes = max(s.nbytes for s in slots)
        sel = Signal(range(len(slots) + 1))
        addr = Signal(range(max(s.depth for s in slots)))
        lane = Signal(range(maxbytes))
        word = Signal(8 * maxbytes)
        lane_last = Signal()               # registered: this byte completes a word
        addr_last = Signal()               # registered: this word is its memory's last
        m.d.comb += self.done.eq(sel == len(slots))
        nbytes = Array(C(s.nbytes - 1, range(maxbytes)) for s in slots)
        depths = Array(C(s.depth - 1, addr.shape()) for s in slots)
        m.d.sync += self.o.en.eq(0)
        with m.If(sel < len(slots)):
            m.d.sync += [lane_last.eq(lane == nbytes[sel]), addr_last.eq(addr == depths[sel])]
        with m.If(self.restart):
            m.d.sync += [sel.eq(0), addr.eq(0), lane.eq(0),
                         lane_last.eq(slots[0].nbytes == 1), addr_last.eq(slots[0].depth == 1)]
        with m.Elif(self.i.valid & ~self.done):
            m.d.sync += word.word_select(lane, 8).eq(self.i.p)
            with m.If(lane_last):
                m.d.sync += [lane.eq(0), self.o.en.eq(1), self.o.sel.eq(sel),
                             self.o.addr.eq(addr), addr.eq(addr + 1)]
                with m.If(addr_last):
                    m.d.sync += [sel.eq(sel + 1), addr.eq(0)]
            with m.Else():
                m.d.sync += lane.eq(lane + 1)
        # The word's bytes, the last one included, are in `word` when `en` is.
        m.d.comb += self.o.data.eq(word)
        return m


class SPRAM(wiring.Component):
    """A single-port RAM of ``width`` x ``depth`` from iCE40 SB_SPRAM256KA blocks.

    One access per cycle at ``addr``: a write of ``wdata`` when ``we``, else a read whose word
    is on ``rdata`` the next cycle. After a write ``rdata`` is undefined until the next read
    (the SB_SPRAM256KA simulation model gives X); the weight memories are written only while
    nothing reads them. Blocks of 16K x 16 are put side by side for the width and stacked for
    the depth (the block is chosen by the upper address bits, its output by the same bits a
    cycle later). With ``platform=None`` (the simulator, a plain Verilog build) it is an
    Amaranth memory that reads the same (and keeps ``rdata`` over a write).

    Members
    -------
    addr : ``In(range(depth))``
    we : ``In(1)``
    wdata : ``In(width)``
    rdata : ``Out(width)``
    """
    def __init__(self, width, depth):
        for name, value in (("Width", width), ("Depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TypeError(f"{name} must be a positive integer, not {value!r}")
        self._width, self._depth = width, depth
        super().__init__({"addr": In(range(depth)), "we": In(1), "wdata": In(width),
                          "rdata": Out(width)})

    @property
    def blocks(self):
        return math.ceil(self._depth / SPRAM_WORDS) * math.ceil(self._width / SPRAM_WIDTH)

    def elaborate(self, platform):
        m = Module()
        if platform is None:
            mem = m.submodules.mem = memory.Memory(shape=self._width, depth=self._depth,
                                                   init=[])
            wr, rd = mem.write_port(), mem.read_port()
            m.d.comb += [wr.addr.eq(self.addr), rd.addr.eq(self.addr), wr.data.eq(self.wdata),
                         wr.en.eq(self.we), rd.en.eq(~self.we), self.rdata.eq(rd.data)]
            return m
        rows = math.ceil(self._depth / SPRAM_WORDS)
        cols = math.ceil(self._width / SPRAM_WIDTH)
        addr = Value.cast(self.addr)
        low = addr[:14] if len(addr) > 14 else Cat(addr, C(0, 14 - len(addr)))
        high = addr[14:] if len(addr) > 14 else C(0, 1)
        bank = Signal.like(high)
        with m.If(~self.we):
            m.d.sync += bank.eq(high)
        wdata = Cat(self.wdata, C(0, cols * SPRAM_WIDTH - self._width))
        outs = []
        for r in range(rows):
            row_out = []
            for c in range(cols):
                dout = Signal(SPRAM_WIDTH, name=f"dout{r}_{c}")
                m.submodules[f"spram{r}_{c}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=low, i_DATAIN=wdata[c * 16:(c + 1) * 16],
                    i_MASKWREN=C(0b1111, 4), i_WREN=self.we,
                    i_CHIPSELECT=(high == r) if rows > 1 else C(1, 1),
                    i_CLOCK=ClockSignal(), i_STANDBY=C(0, 1), i_SLEEP=C(0, 1),
                    i_POWEROFF=C(1, 1), o_DATAOUT=dout)
                row_out.append(dout)
            outs.append(Cat(*row_out)[:self._width])
        m.d.comb += self.rdata.eq(Array(outs)[bank] if rows > 1 else outs[0])
        return m


class _ReadPort:
    """The read port of a :class:`LoadedMemory`: ``addr`` and ``data``, as a read port of
    ``memory.Memory`` has them."""
    def __init__(self, addr, data_):
        self.addr, self.data = addr, data_


class LoadedMemory:
    """A weight memory filled at run time, as :func:`weight_memory` adds it: one
    :meth:`read_port`."""
    def __init__(self, port):
        self._port = port

    def read_port(self):
        return self._port


def weight_memory(m, name, *, shape, depth, init, attrs=None, load=None, sel=None, spram=0,
                  platform=None):
    """Add a weight memory to ``m`` as submodule ``name``; return it (take its read port with
    ``read_port()``).

    Without ``load``: a ROM of ``init`` (``memory.Memory``; ``attrs`` as given). With ``load``
    (a :data:`WEIGHT_WRITE` value) and ``sel``: a RAM without initial contents that takes the
    bus's writes for ``sel`` (a :class:`LoadedMemory`); in SPRAM (:class:`SPRAM`) when
    ``spram`` blocks were placed for it and ``platform`` is given. Writes come only while the
    design is idle (the host link refuses a load while a sample runs), so a SPRAM's one port
    serves the read otherwise.
    """
    if load is None:
        kwargs = {} if attrs is None else {"attrs": attrs}
        mem = memory.Memory(shape=shape, depth=depth, init=init, **kwargs)
        m.submodules[name] = mem
        return mem
    width = Shape.cast(shape).width
    write = load.en & (load.sel == sel)
    if spram and platform is not None:
        ram = m.submodules[name] = SPRAM(width, depth)
        addr = Signal(range(depth), name=f"{name}_addr")
        m.d.comb += [ram.we.eq(write), ram.wdata.eq(load.data[:width]),
                     ram.addr.eq(Mux(write, load.addr, addr))]
        raw = ram.rdata
    else:
        kwargs = {} if attrs is None else {"attrs": attrs}
        mem = memory.Memory(shape=width, depth=depth, init=[], **kwargs)
        m.submodules[name] = mem
        wr, rd = mem.write_port(), mem.read_port()
        addr = rd.addr
        m.d.comb += [wr.addr.eq(load.addr), wr.data.eq(load.data[:width]), wr.en.eq(write)]
        raw = rd.data
    view = data.View(shape, raw) if isinstance(shape, data.Layout) else \
        raw.as_signed() if Shape.cast(shape).signed else raw
    return LoadedMemory(_ReadPort(addr, view))
