"""Board tops: clock (oscillator or PLL), reset, UART pins and LEDs around a :class:`HostLink`.

:data:`BOARDS` names the supported boards. :class:`BoardTop` holds no logic of its own besides
clocking: everything that talks to the host is in :class:`hdl.link.HostLink`, which is also
what the cosimulation runs.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth import *
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .pll import PLL, ecp5_pll, ice40_pll

__all__ = ["BOARDS", "Board", "BoardTop", "board"]


@dataclass(frozen=True)
class Board:
    """A supported board: its amaranth-boards platform, FPGA family and clock targets."""
    name: str
    family: str
    oscillator: float           # Hz
    aim: float                  # Hz: the first clock a build tries
    variants: tuple = ()
    default_variant: str | None = None

    def platform(self, variant=None):
        variant = variant or self.default_variant
        if self.name == "icebreaker":
            from amaranth_boards.icebreaker import ICEBreakerPlatform
            return ICEBreakerPlatform()
        if variant not in self.variants:
            raise ValueError(f"Variant must be one of {', '.join(self.variants)}, "
                             f"not {variant!r}")
        from amaranth_boards import ulx3s
        return getattr(ulx3s, f"ULX3S_{variant}_Platform")()

    def device(self, variant=None):
        variant = variant or self.default_variant
        return "iCE40UP5K-SG48" if self.family == "ice40" else f"LFE5U-{variant}-CABGA381"

    def pll(self, f_target):
        """The PLL for ``f_target`` Hz, or ``None`` where the oscillator itself is asked for."""
        if abs(f_target - self.oscillator) < 1:
            return None
        search = ice40_pll if self.family == "ice40" else ecp5_pll
        return search(self.oscillator, f_target)


BOARDS = {
    "icebreaker": Board("icebreaker", "ice40", 12e6, 48e6),
    "ulx3s": Board("ulx3s", "ecp5", 25e6, 125e6, ("12F", "25F", "45F", "85F"), "85F"),
}


def board(name):
    """The :class:`Board` called ``name``."""
    if name not in BOARDS:
        raise ValueError(f"Board must be one of {', '.join(BOARDS)}, not {name!r}")
    return BOARDS[name]


class BoardTop(Elaboratable):
    """A host link on a board: PLL (or the oscillator), power-on reset, UART, two LEDs.

    The ``sync`` domain runs from the PLL output (or the oscillator when ``pll`` is ``None``)
    and is held in reset until the PLL locks and a further ``por_us`` microseconds have passed
    (iCE40 block RAMs read as zero for a few microseconds after configuration). LED 0 is lit
    while a sample runs, LED 1 while the last reply was an error.

    Parameters
    ----------
    link : :class:`hdl.link.HostLink`
    clock_hz : :class:`float`
        Frequency of the ``sync`` domain, for the timing constraint.
    pll : :class:`boards.pll.PLL` or ``None``
    """
    def __init__(self, link, *, clock_hz, pll=None, por_us=20):
        if pll is not None and not isinstance(pll, PLL):
            raise TypeError(f"PLL must be a boards.pll.PLL or None, not {pll!r}")
        self._link, self._clock_hz, self._pll, self._por_us = link, clock_hz, pll, por_us

    def elaborate(self, platform):
        m = Module()
        clk_port = platform.request(platform.default_clk, dir="-")
        clk = Signal()
        locked = Signal()
        if self._pll is None:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
            m.d.comb += [clk.eq(clk_buf.i), locked.eq(1)]
        elif self._pll.family == "ice40":
            # The PLL takes the pad itself (SB_PLL40_PAD): no input buffer in between.
            m.submodules.pll = self._pll.instance(clk_port.io, clk, locked)
        else:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
            m.submodules.pll = self._pll.instance(clk_buf.i, clk, locked)

        # Power-on reset, counted in the new clock, from a register that starts at zero.
        m.domains.por = cd_por = ClockDomain("por", reset_less=True, local=True)
        m.d.comb += cd_por.clk.eq(clk)
        delay = max(1, int(self._por_us * 1e-6 * self._clock_hz))
        timer = Signal(range(delay + 1))
        ready = Signal()
        with m.If(~locked):
            m.d.por += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == delay):
            m.d.por += ready.eq(1)
        with m.Else():
            m.d.por += timer.eq(timer + 1)

        m.domains.sync = cd_sync = ClockDomain("sync")
        m.d.comb += cd_sync.clk.eq(clk)
        m.submodules.reset_sync = ResetSynchronizer(~ready, domain="sync")
        platform.add_clock_constraint(clk, self._clock_hz)

        m.submodules.link = link = self._link
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.submodules.busy_buf = busy_buf = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.submodules.error_buf = error_buf = io.Buffer("o", platform.request("led", 1, dir="-"))
        m.d.comb += [link.rx.eq(rx_buf.i), tx_buf.o.eq(link.tx),
                     busy_buf.o.eq(link.busy), error_buf.o.eq(link.error)]
        return m
