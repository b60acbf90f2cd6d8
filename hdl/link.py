"""The host link: a UART, the frame protocol of :mod:`hdl.protocol`, and an accelerator.

:class:`HostLink` is everything a board top holds besides clocks and pins, so the same gateware
is built for a board and cosimulated from its Verilog (``rx``/``tx`` are its only I/O).
"""
from amaranth import *
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import protocol
from .protocol import COUNT_BITS, RESULT_HEAD, Command, Error, Reply
from .uart import MIN_DIVISOR, UARTRx, UARTTx

__all__ = ["HostLink", "check_accelerator", "crc8_next"]


def crc8_next(crc, byte):
    """CRC-8 of :func:`hdl.protocol.crc8` after one more byte, as a combinational value.

    One byte of a CRC is linear in ``crc ^ byte``: output bit i is the XOR of the input bits j
    whose unit vector sets bit i. The matrix comes from the reference itself.
    """
    x = (crc ^ byte)[:8]
    columns = [protocol.crc8(bytes([1 << j])) for j in range(8)]
    bits = []
    for i in range(8):
        taps = [x[j] for j in range(8) if (columns[j] >> i) & 1]
        bit = taps[0]
        for tap in taps[1:]:
            bit = bit ^ tap
        bits.append(bit)
    return Cat(*bits)


def _fields(member, names, what):
    sig = member.signature if member.is_signature else None
    if isinstance(sig, wiring.FlippedSignature):
        sig = sig.flip()
    if not isinstance(sig, stream.Signature):
        raise TypeError(f"Accelerator member {what!r} must be a stream, not {member!r}")
    layout = sig.members["payload"].shape
    if not isinstance(layout, data.StructLayout) or set(dict(layout.members)) != set(names):
        raise TypeError(f"Accelerator member {what!r} must carry a payload with fields "
                        f"{', '.join(names)}, not {layout!r}")
    return layout


def check_accelerator(accelerator, n_in, n_out):
    """Check that ``accelerator`` has the ports of DESIGN.md section 5 for ``n_in``/``n_out``.

    Returns the input event layout.
    """
    if not isinstance(accelerator, wiring.Component):
        raise TypeError(f"Accelerator must be a wiring.Component, not {accelerator!r}")
    members = accelerator.signature.members
    for name, flow in (("i", In), ("o", Out)):
        if name not in members or members[name].flow != flow:
            raise TypeError(f"Accelerator must have an {flow.name} stream member {name!r}, "
                            f"not {members!r}")
    i_layout = _fields(members["i"], ("addr", "value", "last", "first"), "i")
    o_layout = _fields(members["o"], ("addr", "spike", "last"), "o")
    for layout, n, what in ((i_layout, n_in, "i"), (o_layout, n_out, "o")):
        width = Shape.cast(layout["addr"].shape).width
        if width != max(1, ceil_log2(n)):
            raise ValueError(f"Accelerator member {what!r} has a {width}-bit address, but "
                             f"{n} neurons need {max(1, ceil_log2(n))}")
    return i_layout


class ReplyKind(enum.Enum, shape=2):
    INFO = 0
    LOADED = 1
    ERROR = 2
    RESULT = 3


class HostLink(wiring.Component):
    """Accelerator behind a UART: load a sample's events, run it, return counts and cycles.

    The protocol is in :mod:`hdl.protocol` and docs/boards.md. LOAD frames append events to
    an on-chip buffer of ``capacity`` events (a failed frame leaves the buffer as it was). RUN
    clears the spike counters, then streams the buffer into the accelerator at up to one event
    per cycle while taking every output event (``o.ready`` is held high), and replies with the
    predicted class, the number of output steps, the cycle count and the spike count of every
    output neuron; the buffer is empty afterwards. The cycle count runs from the cycle of the
    sample's first input transfer to the cycle of the last output transfer of its last step,
    both included. One frame is handled at a time: bytes that arrive while a frame is being
    answered are lost, so the host waits for each reply.

    Parameters
    ----------
    accelerator : :class:`wiring.Component`
        Anything with the ports of DESIGN.md section 5: ``i`` (input events) and ``o`` (output
        spikes), in the ``sync`` domain.
    n_in, n_out : :class:`int`
        Input and output neurons of the accelerator.
    divisor : :class:`int`
        Clock cycles per UART bit.
    capacity : :class:`int`
        Events the buffer holds (one sample), at most 65535.
    timeout : :class:`int`
        Cycles without a byte after which a half-received frame is dropped (TIMEOUT reply).
    clock_hz : :class:`int`
        Clock frequency reported in INFO.
    ident : :class:`int`
        32-bit identity of the network (:func:`hdl.protocol.bundle_ident`), reported in INFO.

    Members
    -------
    rx : ``In(1)``
        UART line from the host.
    tx : ``Out(1)``
        UART line to the host.
    busy : ``Out(1)``
        High while a sample runs.
    error : ``Out(1)``
        High when the last reply was an ERROR.
    """
    def __init__(self, accelerator, *, n_in, n_out, divisor, capacity, timeout, clock_hz,
                 ident=0):
        for name, value, lo, hi in (("N in", n_in, 1, 2 ** COUNT_BITS - 1),
                                    ("N out", n_out, 1, (protocol.MAX_PAYLOAD - RESULT_HEAD) // 2),
                                    ("Capacity", capacity, 1, 2 ** COUNT_BITS - 1),
                                    ("Timeout", timeout, 1, None),
                                    ("Clock", clock_hz, 1, 2 ** 32 - 1),
                                    ("Ident", ident, 0, 2 ** 32 - 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise TypeError(f"{name} must be an integer of at least {lo}, not {value!r}")
            if hi is not None and value > hi:
                raise ValueError(f"{name} must be at most {hi}, not {value!r}")
        self._ev_layout = check_accelerator(accelerator, n_in, n_out)
        self._accelerator = accelerator
        self._n_in, self._n_out = n_in, n_out
        self._capacity, self._timeout = capacity, timeout
        self._clock_hz, self._ident = clock_hz, ident
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < MIN_DIVISOR:
            raise TypeError(f"Divisor must be an integer of at least {MIN_DIVISOR}, "
                            f"not {divisor!r}")
        self._divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "busy": Out(1),
            "error": Out(1),
        })

    @property
    def divisor(self):
        """Clock cycles per UART bit."""
        return self._divisor

    @property
    def capacity(self):
        """Events the buffer holds."""
        return self._capacity

    @property
    def event_bytes(self):
        """Bytes per packed input event."""
        return (Shape.cast(self._ev_layout).width + 7) // 8

    @property
    def info(self):
        """The INFO reply this link gives."""
        return protocol.Info(protocol.VERSION, self.event_bytes, self._n_in, self._n_out,
                             self._capacity, self._clock_hz, self._ident)

    def elaborate(self, platform):
        # One FSM runs the link: parse a frame (Idle .. Checksum), decide (Decide registers the
        # verdict, Dispatch acts on it), run a sample if asked (Clear Counts, Run), then send the
        # reply byte by byte (Reply Start / Fetch / Load / Send: a cycle for the counter memory's
        # registered read, one to register the byte, then offer it). Decisions and bytes are
        # registered a cycle ahead because the UART leaves plenty of cycles and the UP5K few
        # nanoseconds. LOAD payload bytes are assembled into events and written to the event buffer
        # as they arrive; `committed` marks the end of the last good LOAD, so a frame that fails its
        # checksum or length check is rolled back. During Run the buffer's read port register is the
        # accelerator's input register (its enable holds it under backpressure), and output spikes
        # are counted in a memory with a read-modify-write pipeline whose read is transparent to the
        # write one cycle ahead, so back-to-back spikes of one neuron (end of one step, start of the
        # next) add up; the running argmax follows one stage behind.
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(divisor=self._divisor)
        m.submodules.uart_tx = utx = UARTTx(divisor=self._divisor)
        m.submodules.accelerator = acc = self._accelerator
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        width = Shape.cast(self._ev_layout).width
        nbytes = self.event_bytes
        n_out, capacity = self._n_out, self._capacity

        m.submodules.events = ev_mem = memory.Memory(shape=width, depth=capacity, init=[])
        ev_wr = ev_mem.write_port()
        ev_rd = ev_mem.read_port()
        m.submodules.counts = cnt_mem = memory.Memory(shape=COUNT_BITS, depth=n_out, init=[])
        cnt_wr = cnt_mem.write_port()
        cnt_rd = cnt_mem.read_port(transparent_for=(cnt_wr,))

        byte = urx.o.payload
        got = urx.o.valid & urx.o.ready

        # Frame being parsed.
        cmd = Signal(8)
        length = Signal(16)
        remaining = Signal(16)
        crc = Signal(8)
        crc_ok = Signal()
        lane = Signal(range(nbytes))
        ev_shift = Signal(8 * nbytes)
        quiet = Signal(range(self._timeout + 1))
        timed_out = Signal()

        # Event buffer.
        wptr = Signal(range(capacity + 1))
        committed = Signal(range(capacity + 1))
        overflow = Signal()
        frame_steps = Signal(COUNT_BITS)
        frame_last = Signal()
        total_steps = Signal(COUNT_BITS)
        first_ok = Signal()
        last_ok = Signal()

        # Run and its result.
        rptr = Signal(range(capacity + 1))
        feed_valid = Signal()
        started = Signal()
        stopped = Signal()
        cycles = Signal(32)
        steps_out = Signal(COUNT_BITS)
        steps_left = Signal(COUNT_BITS)
        last_step = Signal()
        s1_valid = Signal()
        s1_addr = Signal(len(acc.o.p.addr))
        s2_valid = Signal()
        s2_addr = Signal(len(acc.o.p.addr))
        s2_count = Signal(COUNT_BITS)
        best = Signal(COUNT_BITS)
        best_idx = Signal(COUNT_BITS)
        have_result = Signal()
        running = Signal()
        finished = Signal()
        clear_addr = Signal(range(n_out))

        # Reply being sent.
        kind = Signal(ReplyKind)
        reply_len = Signal(16)
        last_error = Signal()
        m.d.comb += self.error.eq(last_error)

        is_info, is_load, is_run, is_read = Signal(), Signal(), Signal(), Signal()
        verdict = Signal(8)                 # 0, or the error code of the frame
        parsing = Signal()
        with m.If(parsing & ~got):
            m.d.sync += quiet.eq(quiet + 1)
        with m.Else():
            m.d.sync += quiet.eq(0)
        m.d.comb += timed_out.eq(parsing & (quiet == self._timeout))

        # Reply: header, payload, checksum. Counters walk the reply instead of one byte index,
        # so no byte select needs an adder or a wide comparison.
        head = Signal(64)
        with m.Switch(kind):
            with m.Case(ReplyKind.LOADED):
                m.d.comb += head.eq(committed)
            with m.Case(ReplyKind.ERROR):
                m.d.comb += head.eq(Cat(verdict, cmd))
            with m.Case(ReplyKind.RESULT):
                m.d.comb += head.eq(Cat(best_idx, steps_out, cycles))
        info_word = Const(int.from_bytes(self.info.pack(), "little"), 8 * protocol.INFO_LENGTH)
        codes = Array([Const(Reply.INFO, 8), Const(Reply.LOADED, 8), Const(Reply.ERROR, 8),
                       Const(Reply.RESULT, 8)])
        section = Signal(2)                 # 0 header, 1 payload, 2 checksum
        k = Signal(2)                       # header byte
        p = Signal(16)                      # payload byte
        p_left = Signal(16)                 # payload bytes after this one
        in_counts = Signal()                # RESULT: past the fixed fields, into the counts
        cnt_addr = Signal(range(n_out))
        cnt_hi = Signal()
        tx_crc = Signal(8)
        tx_byte = Signal(8)                 # the byte, registered a cycle before it is sent
        header = Array([Const(protocol.SYNC_REPLY, 8), codes[kind.as_value()], reply_len[:8],
                        reply_len[8:]])
        fields = Signal(64)                 # `head`, loaded at Reply Start, shifted per byte
        use_info = Signal()
        is_result = Signal()
        payload_byte = Signal(8)
        with m.If(use_info):
            m.d.comb += payload_byte.eq(info_word.word_select(p[:4], 8))
        with m.Elif(in_counts):
            m.d.comb += payload_byte.eq(Mux(cnt_hi, cnt_rd.data[8:], cnt_rd.data[:8]))
        with m.Else():
            m.d.comb += payload_byte.eq(fields[:8])
        out_byte = Signal(8)
        with m.Switch(section):
            with m.Case(0):
                m.d.comb += out_byte.eq(header[k])
            with m.Case(1):
                m.d.comb += out_byte.eq(payload_byte)
            with m.Default():
                m.d.comb += out_byte.eq(tx_crc)

        sizes = Array([Const(protocol.INFO_LENGTH, 16), Const(2, 16), Const(2, 16),
                       Const(RESULT_HEAD + 2 * n_out, 16)])

        def reply(what):
            # The walk counters and `tx_crc` are zero between replies: Reply Send leaves them so.
            m.d.sync += kind.eq(what)
            m.next = "Reply Start"

        # The run itself, enabled by a register of its own rather than the FSM's state decode.
        with m.If(running):
            # Feed: the read port's register is the input register.
            m.d.comb += [acc.i.valid.eq(feed_valid), acc.i.payload.eq(ev_rd.data)]
            with m.If(~feed_valid | acc.i.ready):
                more = rptr != committed
                m.d.comb += [ev_rd.en.eq(1), ev_rd.addr.eq(rptr)]
                m.d.sync += [feed_valid.eq(more), rptr.eq(rptr + more)]
            with m.Else():
                m.d.comb += ev_rd.en.eq(0)
            fire_in = acc.i.valid & acc.i.ready

            # Take every output event; count spikes per neuron and the running argmax.
            m.d.comb += acc.o.ready.eq(1)
            fire_out = acc.o.valid
            m.d.comb += cnt_rd.addr.eq(acc.o.p.addr)
            m.d.sync += [s1_valid.eq(fire_out & acc.o.p.spike), s1_addr.eq(acc.o.p.addr)]
            count = (cnt_rd.data + 1)[:COUNT_BITS]
            with m.If(s1_valid):
                m.d.comb += [cnt_wr.addr.eq(s1_addr), cnt_wr.data.eq(count), cnt_wr.en.eq(1)]
            # The argmax runs one stage later, on registered counts, off the RAM's path.
            m.d.sync += [s2_valid.eq(s1_valid), s2_count.eq(count), s2_addr.eq(s1_addr)]
            with m.If(s2_valid):
                # Ties go to the lowest index, as models.golden.predict.
                with m.If((s2_count > best) | ((s2_count == best) & (s2_addr < best_idx))):
                    m.d.sync += [best.eq(s2_count), best_idx.eq(s2_addr)]
            # `last_step`: the step now leaving is the sample's last (a down counter keeps the
            # comparison off the output path).
            with m.If(fire_out & acc.o.p.last):
                m.d.sync += [steps_out.eq(steps_out + 1), steps_left.eq(steps_left - 1),
                             last_step.eq(steps_left == 2)]
                with m.If(last_step):
                    m.d.sync += stopped.eq(1)
            with m.If((started | fire_in) & ~stopped):
                m.d.sync += cycles.eq(cycles + 1)
            m.d.sync += [started.eq(started | fire_in),
                         finished.eq(stopped & ~s1_valid & ~s2_valid)]

        with m.FSM():
            with m.State("Idle"):
                m.d.comb += urx.o.ready.eq(1)
                with m.If(got & (byte == protocol.SYNC_REQUEST)):
                    m.d.sync += crc.eq(0)
                    m.next = "Command"

            for state, target in (("Command", "Length Low"), ("Length Low", "Length High")):
                with m.State(state):
                    m.d.comb += [urx.o.ready.eq(1), parsing.eq(1)]
                    with m.If(got):
                        m.d.sync += crc.eq(crc8_next(crc, byte))
                        if state == "Command":
                            m.d.sync += [cmd.eq(byte), is_info.eq(byte == Command.INFO),
                                         is_load.eq(byte == Command.LOAD),
                                         is_run.eq(byte == Command.RUN),
                                         is_read.eq(byte == Command.READ)]
                        else:
                            m.d.sync += length[:8].eq(byte)
                        m.next = target
                    with m.Elif(timed_out):
                        m.next = "Timed Out"

            with m.State("Length High"):
                m.d.comb += [urx.o.ready.eq(1), parsing.eq(1)]
                full = Cat(length[:8], byte)
                with m.If(got):
                    m.d.sync += [crc.eq(crc8_next(crc, byte)), length[8:].eq(byte),
                                 remaining.eq(full), lane.eq(0), overflow.eq(0),
                                 frame_steps.eq(0), wptr.eq(committed)]
                    with m.If(full == 0):
                        m.next = "Checksum"
                    with m.Else():
                        m.next = "Payload"
                with m.Elif(timed_out):
                    m.next = "Timed Out"

            with m.State("Payload"):
                m.d.comb += [urx.o.ready.eq(1), parsing.eq(1)]
                word = Cat(ev_shift[8:], byte)
                event = data.View(self._ev_layout, word[:width])
                with m.If(got):
                    m.d.sync += [crc.eq(crc8_next(crc, byte)), remaining.eq(remaining - 1),
                                 ev_shift.eq(word)]
                    with m.If(cmd == Command.LOAD):
                        with m.If(lane == nbytes - 1):
                            m.d.sync += lane.eq(0)
                            with m.If(wptr == capacity):
                                m.d.sync += overflow.eq(1)
                            with m.Else():
                                m.d.comb += [ev_wr.addr.eq(wptr), ev_wr.data.eq(word[:width]),
                                             ev_wr.en.eq(1)]
                                m.d.sync += [wptr.eq(wptr + 1),
                                             frame_steps.eq(frame_steps + event.last),
                                             frame_last.eq(event.last)]
                                with m.If(wptr == 0):
                                    m.d.sync += first_ok.eq(event.first)
                        with m.Else():
                            m.d.sync += lane.eq(lane + 1)
                    with m.If(remaining == 1):
                        m.next = "Checksum"
                with m.Elif(timed_out):
                    m.next = "Timed Out"

            with m.State("Checksum"):
                m.d.comb += [urx.o.ready.eq(1), parsing.eq(1)]
                with m.If(got):
                    m.d.sync += crc_ok.eq(byte == crc)
                    m.next = "Decide"
                with m.Elif(timed_out):
                    m.next = "Timed Out"

            with m.State("Timed Out"):
                m.d.sync += wptr.eq(committed)
                m.d.sync += verdict.eq(Error.TIMEOUT)
                reply(ReplyKind.ERROR)

            with m.State("Decide"):
                # The frame's verdict, in order of precedence, registered for Dispatch.
                length_ok = Mux(is_load, (length != 0) & (lane == 0), length == 0)
                with m.If(~crc_ok):
                    m.d.sync += verdict.eq(Error.CRC)
                with m.Elif(~(is_info | is_load | is_run | is_read)):
                    m.d.sync += verdict.eq(Error.COMMAND)
                with m.Elif(~length_ok):
                    m.d.sync += verdict.eq(Error.LENGTH)
                with m.Elif(is_load & overflow):
                    m.d.sync += verdict.eq(Error.OVERFLOW)
                with m.Elif(is_run & ((committed == 0) | ~first_ok | ~last_ok)):
                    m.d.sync += verdict.eq(Error.SAMPLE)
                with m.Elif(is_read & ~have_result):
                    m.d.sync += verdict.eq(Error.NO_RESULT)
                with m.Else():
                    m.d.sync += verdict.eq(0)
                m.next = "Dispatch"

            with m.State("Dispatch"):
                with m.If(verdict != 0):
                    with m.If(is_load):
                        m.d.sync += wptr.eq(committed)
                    reply(ReplyKind.ERROR)
                with m.Elif(is_info):
                    reply(ReplyKind.INFO)
                with m.Elif(is_load):
                    m.d.sync += [committed.eq(wptr), last_ok.eq(frame_last),
                                 total_steps.eq(total_steps + frame_steps)]
                    reply(ReplyKind.LOADED)
                with m.Elif(is_run):
                    m.d.sync += [clear_addr.eq(0), rptr.eq(0), feed_valid.eq(0),
                                 started.eq(0), stopped.eq(0), cycles.eq(0),
                                 steps_out.eq(0), steps_left.eq(total_steps),
                                 last_step.eq(total_steps == 1), best.eq(0), best_idx.eq(0)]
                    m.next = "Clear Counts"
                with m.Else():
                    reply(ReplyKind.RESULT)

            with m.State("Clear Counts"):
                m.d.comb += [self.busy.eq(1), cnt_wr.addr.eq(clear_addr), cnt_wr.data.eq(0),
                             cnt_wr.en.eq(1)]
                m.d.sync += clear_addr.eq(clear_addr + 1)
                with m.If(clear_addr == n_out - 1):
                    m.d.sync += running.eq(1)
                    m.next = "Run"

            with m.State("Run"):
                m.d.comb += self.busy.eq(1)
                with m.If(finished):
                    m.d.sync += [running.eq(0), finished.eq(0), have_result.eq(1),
                                 committed.eq(0), wptr.eq(0), total_steps.eq(0),
                                 first_ok.eq(0), last_ok.eq(0)]
                    reply(ReplyKind.RESULT)

            with m.State("Reply Start"):
                size = sizes[kind.as_value()]
                m.d.sync += [reply_len.eq(size), p_left.eq(size - 1), fields.eq(head),
                             use_info.eq(kind == ReplyKind.INFO),
                             is_result.eq(kind == ReplyKind.RESULT)]
                m.next = "Reply Fetch"

            with m.State("Reply Fetch"):
                m.d.comb += cnt_rd.addr.eq(cnt_addr)
                m.next = "Reply Load"

            with m.State("Reply Load"):
                m.d.comb += cnt_rd.addr.eq(cnt_addr)
                m.d.sync += tx_byte.eq(out_byte)
                m.next = "Reply Send"

            with m.State("Reply Send"):
                m.d.comb += [utx.i.valid.eq(1), utx.i.payload.eq(tx_byte)]
                with m.If(utx.i.ready):
                    m.next = "Reply Fetch"
                    with m.If((section != 0) | (k != 0)):
                        m.d.sync += tx_crc.eq(crc8_next(tx_crc, tx_byte))
                    with m.Switch(section):
                        with m.Case(0):
                            m.d.sync += k.eq(k + 1)
                            with m.If(k == 3):
                                m.d.sync += section.eq(1)      # every reply has a payload
                        with m.Case(1):
                            m.d.sync += [p.eq(p + 1), p_left.eq(p_left - 1),
                                         fields.eq(fields >> 8),
                                         in_counts.eq(in_counts |
                                                      (is_result & (p[:3] == RESULT_HEAD - 1)))]
                            with m.If(in_counts):
                                m.d.sync += cnt_hi.eq(~cnt_hi)
                                with m.If(cnt_hi):
                                    m.d.sync += cnt_addr.eq(cnt_addr + 1)
                            with m.If(p_left == 0):
                                m.d.sync += section.eq(2)
                        with m.Default():
                            m.d.sync += [section.eq(0), k.eq(0), p.eq(0), in_counts.eq(0),
                                         cnt_addr.eq(0), cnt_hi.eq(0), tx_crc.eq(0),
                                         last_error.eq(kind == ReplyKind.ERROR)]
                            m.next = "Idle"
        return m
