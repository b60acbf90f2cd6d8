"""A small 8N1 UART: receiver and transmitter with byte streams, and their integer reference.

The line is idle high; a byte is a start bit (0), eight data bits LSB first and a stop bit (1),
each ``divisor`` clock cycles long (``divisor = round(clk_freq / baud)``). :func:`uart_encode`
gives the line level of every cycle for a byte string and :func:`uart_decode` reads a recorded
line back; the gateware is tested against both.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["MIN_DIVISOR", "baud_divisor", "uart_encode", "uart_decode", "UARTRx", "UARTTx"]

MIN_DIVISOR = 4


def _check_divisor(divisor):
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise TypeError(f"Divisor must be an integer of at least {MIN_DIVISOR}, not {divisor!r}")
    return divisor


def baud_divisor(clk_freq, baud, *, tolerance=0.02):
    """Return the clock cycles per bit for ``baud`` at ``clk_freq`` Hz.

    Raises :class:`ValueError` when the rounded divisor misses the baud rate by more than
    ``tolerance`` (a receiver samples mid-bit, so the error over ten bits must stay well under
    half a bit), or is below :data:`MIN_DIVISOR`.
    """
    if not isinstance(baud, int) or isinstance(baud, bool) or baud <= 0:
        raise TypeError(f"Baud rate must be a positive integer, not {baud!r}")
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"Baud rate {baud} needs at least {MIN_DIVISOR} clock cycles per bit, "
                         f"but the clock of {clk_freq / 1e6:g} MHz gives {clk_freq / baud:.2f}")
    error = abs(clk_freq / divisor - baud) / baud
    if error > tolerance:
        raise ValueError(f"Baud rate {baud} is {100 * error:.1f}% off at "
                         f"{clk_freq / 1e6:g} MHz (divisor {divisor}); at most "
                         f"{100 * tolerance:g}% is allowed")
    return divisor


def uart_encode(data, divisor, *, gaps=None):
    """Line level per cycle for ``data`` (bytes); ``gaps[k]`` idle cycles go before byte k."""
    levels = []
    for index, byte in enumerate(bytes(data)):
        levels += [1] * (gaps[index] if gaps else 0)
        for bit in [0] + [(byte >> k) & 1 for k in range(8)] + [1]:
            levels += [bit] * divisor
    return levels


def uart_decode(levels, divisor):
    """Bytes in a recorded line (one level per cycle), sampled in the middle of every bit.

    Raises :class:`ValueError` on a missing stop bit.
    """
    out, t = bytearray(), 0
    while t < len(levels):
        if levels[t]:
            t += 1
            continue
        mid = t + divisor // 2
        if mid + 9 * divisor >= len(levels):
            raise ValueError(f"Line ends inside a byte that starts at cycle {t}")
        bits = [levels[mid + k * divisor] for k in range(10)]
        if bits[9] != 1:
            raise ValueError(f"Byte starting at cycle {t} has no stop bit")
        out.append(sum(bit << k for k, bit in enumerate(bits[1:9])))
        t = mid + 9 * divisor
    return bytes(out)


class UARTRx(wiring.Component):
    """UART receiver, 8N1, one byte per transfer on ``o``.

    The line goes through a two-flop synchroniser; a falling edge starts a byte, which is checked
    at the middle of the start bit and sampled at the middle of every data bit. A byte whose stop
    bit is low is dropped and ``error`` pulses for one cycle. ``o`` holds one byte: a byte that
    completes while the previous one is still untaken is dropped and ``overrun`` pulses.

    Parameters
    ----------
    divisor : :class:`int`
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    rx : ``In(1)``
        The serial line (idle high).
    o : ``Out(stream.Signature(8))``
        Received bytes.
    error : ``Out(1)``
        Pulses when a byte is dropped for a bad stop bit.
    overrun : ``Out(1)``
        Pulses when a byte is dropped because ``o`` was still full.
    """
    def __init__(self, *, divisor):
        self._divisor = _check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "o": Out(stream.Signature(8)),
            "error": Out(1),
            "overrun": Out(1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(self._divisor))
        bit = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)

        with m.FSM():
            with m.State("Idle"):
                with m.If(~rx):
                    m.d.sync += timer.eq(self._divisor // 2 - 1)
                    m.next = "Start"
            with m.State("Start"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self._divisor - 1), bit.eq(0)]
                    # A start bit that is high again at its middle was a glitch.
                    with m.If(rx):
                        m.next = "Idle"
                    with m.Else():
                        m.next = "Data"
            with m.State("Data"):
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self._divisor - 1), shreg.eq(Cat(shreg[1:], rx)),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "Stop"
            with m.State("Stop"):
                with m.If(timer == 0):
                    with m.If(~rx):
                        m.d.comb += self.error.eq(1)
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.comb += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                    m.next = "Idle"
        return m


class UARTTx(wiring.Component):
    """UART transmitter, 8N1: takes a byte from ``i`` whenever the line is free.

    ``i.ready`` is high only between bytes, so a byte costs ``10 * divisor`` cycles.

    Parameters
    ----------
    divisor : :class:`int`
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Bytes to send.
    tx : ``Out(1)``
        The serial line (idle high).
    """
    def __init__(self, *, divisor):
        self._divisor = _check_divisor(divisor)
        super().__init__({
            "i": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self._divisor))
        bits = Signal(range(11))            # bits still to send, start and stop included
        shreg = Signal(10, init=1)

        m.d.comb += self.tx.eq(shreg[0])
        with m.If(bits == 0):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                m.d.sync += [shreg.eq(Cat(C(0, 1), self.i.payload, C(1, 1))), bits.eq(10),
                             timer.eq(self._divisor - 1)]
        with m.Elif(timer == 0):
            m.d.sync += [shreg.eq(Cat(shreg[1:], C(1, 1))), bits.eq(bits - 1),
                         timer.eq(self._divisor - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m
