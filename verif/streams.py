"""cocotb drivers for Amaranth ``lib.stream`` ports of emitted Verilog.

:class:`StreamSource` drives ``<name>__valid`` / ``<name>__payload`` and :class:`StreamSink`
drives ``<name>__ready``; both pack and unpack payloads with the same
:class:`amaranth.lib.data.Layout` object the RTL was built from, so the testbench and the
hardware can never disagree about bit positions.

Both drive their idle values on construction (``valid = 0``, ``ready = 0``), then run one
coroutine each that wakes on every rising edge of ``clk``. A transfer is decided right after the
edge from the values the DUT saw at that edge: ``valid & ready``. Random gaps (source) and random
stalls (sink) come from pause generators, iterators of booleans where ``True`` withholds
``valid`` (source, only while no payload is pending, as the stream rules require) or ``ready``
(sink) for that cycle. :func:`random_pauses` gives a seeded one.

The sink also enforces the stream rules on the DUT's output (:class:`verif.scoreboard.
StreamRules`): ``valid`` and the payload hold from the first edge ``valid`` is high until the
transfer, ``valid`` is never X or Z, and after :meth:`StreamSink.close` (the final expected
event) ``ready`` stays low and any ``valid`` is an extra event. A violation ends the sink with a
message, as an X on a handshake does.
"""
from __future__ import annotations

import collections
import itertools
import random

import cocotb
from amaranth.hdl import Const
from cocotb.triggers import Event, RisingEdge
from cocotb.utils import get_sim_time

from verif.scoreboard import StreamRules

__all__ = ["StreamSink", "StreamSource", "Transfer", "no_pauses", "random_pauses"]


def random_pauses(probability, seed):
    """Infinite seeded pause generator: each cycle pauses with ``probability``."""
    if not 0 <= probability < 1:
        raise ValueError(f"Pause probability must be in [0, 1), not {probability!r}")
    if probability == 0:
        return no_pauses()
    rng = random.Random(seed)
    return (rng.random() < probability for _ in itertools.count())


def no_pauses():
    """Pause generator that never pauses."""
    return itertools.repeat(False)


class Transfer:
    """One accepted transfer: the clock ``cycle`` it happened at and its ``payload`` dict."""
    __slots__ = ("cycle", "payload")

    def __init__(self, cycle, payload):
        self.cycle, self.payload = cycle, payload

    def __repr__(self):
        return f"Transfer(cycle={self.cycle}, payload={self.payload!r})"


def _ports(dut, name):
    try:
        return tuple(getattr(dut, f"{name}__{member}") for member in ("payload", "valid", "ready"))
    except AttributeError:
        raise AttributeError(f"DUT has no stream {name!r} (expected ports {name}__payload, "
                             f"{name}__valid, {name}__ready)") from None


class _Clocked:
    def __init__(self, clk, period_ns):
        self.clk, self._period = clk, period_ns
        self.error = None
        self.on_error = None

    def cycle(self):
        """The index of the current clock cycle (rising edges since time 0)."""
        return int(get_sim_time("ns") // self._period)

    def _fail(self, message, *, located=False):
        # An X/Z on a handshake or on a transferred payload, or a broken stream rule: stop
        # driving and report it; the owner (``on_error``) ends the test with this message
        # instead of a bare traceback. ``located``: the message names the stream and cycle.
        self.error = message if located else f"{self.name}: {message} at cycle {self.cycle()}"
        if self.on_error is not None:
            self.on_error(self.error)
        else:
            raise ValueError(self.error)


class StreamSource(_Clocked):
    """Drive a stream input of the DUT from a queue of payload dicts.

    Parameters
    ----------
    dut : cocotb handle of the toplevel.
    name : :class:`str`
        Stream member name: ports are ``<name>__payload``, ``<name>__valid``, ``<name>__ready``.
    layout : :class:`amaranth.lib.data.Layout`
        The payload layout the RTL was built with.
    clk : cocotb handle, optional
        Clock; ``dut.clk`` by default.
    pause : iterator of :class:`bool`, optional
        ``True`` inserts an idle cycle before the next payload; none by default.
    period_ns : :class:`float`
        Clock period, used to timestamp transfers in cycles.

    Members
    -------
    transfers : :class:`list` of :class:`Transfer`
        Every accepted payload, in order.
    on_transfer : callable or ``None``
        Called with each :class:`Transfer` as it is accepted.
    on_error : callable or ``None``
        Called with a message if ``ready`` is X/Z while a payload is offered; the source then
        stops. Without it the source raises :exc:`ValueError`.
    """
    def __init__(self, dut, name, layout, *, clk=None, pause=None, period_ns=10):
        super().__init__(clk if clk is not None else dut.clk, period_ns)
        self.layout = layout
        self.payload, self.valid, self.ready = _ports(dut, name)
        self.name = name
        self.pause = pause if pause is not None else no_pauses()
        self.transfers = []
        self.on_transfer = None
        self._queue = collections.deque()
        self._idle = Event()
        self._idle.set()
        self.valid.value = 0                        # never leave a DUT input at X
        self.payload.value = 0
        self._task = cocotb.start_soon(self._run())

    def pack(self, payload):
        """Payload dict -> the integer the RTL's own layout makes of it."""
        return Const.cast(self.layout.const(payload)).value

    def send_nowait(self, payload):
        """Queue one payload dict; it is validated (packed) immediately."""
        packed = self.pack(payload)
        self._queue.append((payload, packed))
        self._idle.clear()

    async def send(self, payload):
        """Queue one payload dict (returns at once; use :meth:`wait` to wait for transfer)."""
        self.send_nowait(payload)

    async def wait(self):
        """Wait until every queued payload has been transferred."""
        await self._idle.wait()

    @property
    def pending(self):
        return len(self._queue)

    def kill(self):
        self._task.cancel()

    async def _run(self):
        current = None
        while True:
            await RisingEdge(self.clk)
            try:
                ready = current is not None and bool(self.ready.value)
            except ValueError:
                self._fail(f"{self.name}__ready is {self.ready.value} while valid")
                return
            if ready:                                        # valid was 1 at this edge
                transfer = Transfer(self.cycle(), current)
                self.transfers.append(transfer)
                if self.on_transfer is not None:
                    self.on_transfer(transfer)
                current = None
            if current is None:
                if self._queue and not next(self.pause):
                    current, packed = self._queue.popleft()
                    self.payload.value = packed
                    self.valid.value = 1
                else:
                    self.valid.value = 0
                    if not self._queue:
                        self._idle.set()


class StreamSink(_Clocked):
    """Accept a stream output of the DUT, with random ``ready``, into payload dicts.

    Parameters are as for :class:`StreamSource`; ``pause`` withholds ``ready`` for a cycle.

    Members
    -------
    transfers : :class:`list` of :class:`Transfer`
        Every accepted payload, in order.
    on_transfer : callable or ``None``
        Called with each :class:`Transfer` as it is accepted (e.g. a scoreboard).
    on_error : callable or ``None``
        Called with a message if ``valid`` is X/Z, the payload of a transfer is, or the DUT
        breaks a stream rule (see :attr:`rules`); the sink then stops. Without it the sink
        raises :exc:`ValueError`.
    rules : :class:`verif.scoreboard.StreamRules`
        The stream rules, checked at every edge while the sink runs.
    """
    def __init__(self, dut, name, layout, *, clk=None, pause=None, period_ns=10):
        super().__init__(clk if clk is not None else dut.clk, period_ns)
        self.layout = layout
        self.payload, self.valid, self.ready = _ports(dut, name)
        self.name = name
        self.pause = pause if pause is not None else no_pauses()
        self.transfers = []
        self.on_transfer = None
        self.rules = StreamRules(f"{name}", describe=self._describe)
        self._closed = False
        self._read = 0
        self._arrived = Event()
        self.ready.value = 0                        # never leave a DUT input at X
        self._task = cocotb.start_soon(self._run())

    def _describe(self, bits):
        try:
            return str(self.unpack(int(bits, 2)))
        except ValueError:
            return f"0b{bits}"                     # X or Z bits: show them as they are

    def close(self):
        """Everything expected has arrived: hold ``ready`` low and report any later ``valid``
        as an extra event."""
        self._closed = True
        self.rules.close(self.cycle())

    def unpack(self, bits):
        """Integer from the RTL -> payload dict of plain ints, via the RTL's own layout."""
        view = self.layout.from_bits(bits)
        return {name: int(view[name]) for name, _ in self.layout}

    async def recv(self):
        """Return the next accepted payload dict (in arrival order)."""
        while self._read >= len(self.transfers):
            self._arrived.clear()
            await self._arrived.wait()
        self._read += 1
        return self.transfers[self._read - 1].payload

    def kill(self):
        self._task.cancel()

    async def _run(self):
        while True:
            ready = not self._closed and not next(self.pause)
            self.ready.value = int(ready)
            await RisingEdge(self.clk)
            try:
                valid = bool(self.valid.value)
            except ValueError:
                self._fail(f"{self.name}__valid is {self.valid.value}")
                return
            # The payload as the simulator shows it, X/Z bits included, for the hold rule.
            message = self.rules.edge(self.cycle(), valid, ready,
                                      str(self.payload.value) if valid else None)
            if message is not None:
                self._fail(message, located=True)
                return
            if ready and valid:
                try:
                    bits = self.payload.value.to_unsigned()
                except ValueError:
                    self._fail(f"{self.name}__payload is {self.payload.value} in a transfer")
                    return
                transfer = Transfer(self.cycle(), self.unpack(bits))
                self.transfers.append(transfer)
                self._arrived.set()
                if self.on_transfer is not None:
                    self.on_transfer(transfer)
