"""The host link: a UART, the frame protocol of :mod:`hdl.protocol`, and an accelerator.

:class:`HostLink` is everything a board top holds besides clocks and pins, so the same gateware
is built for a board and cosimulated from its Verilog (``rx``/``tx`` are its only I/O).
:func:`reply_plan` is the byte layout its replies are sent from, and :class:`SkidBuffer` the
register slice between its event buffer and the accelerator.
"""
import functools

from amaranth import *
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import protocol
from .protocol import COUNT_BITS, RESULT_HEAD, Command, Error, Reply
from .uart import MIN_DIVISOR, UARTRx, UARTTx

__all__ = ["HostLink", "ReplyKind", "SkidBuffer", "WeightsReplyKind", "check_accelerator",
           "crc8_next", "reply_plan"]


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


class WeightsReplyKind(enum.Enum, shape=3):
    """:class:`ReplyKind` of a link that loads weights (WEIGHTS replies too)."""
    INFO = 0
    LOADED = 1
    ERROR = 2
    RESULT = 3
    WEIGHTS = 4


def reply_plan(info, n_out, kinds=ReplyKind):
    """The bytes of every reply up to its spike counts: ``{ReplyKind: [entry, ...]}``.

    An entry is a constant byte (:class:`int`) or ``(field, k)``, byte ``k`` (little-endian) of
    a value the link holds: ``committed`` (LOADED), ``verdict`` and ``command`` (ERROR),
    ``class``, ``steps`` and ``cycles`` (RESULT). A RESULT reply goes on with the ``n_out`` spike
    counts (two bytes each), and every reply ends with its CRC-8. ``info`` is the
    :class:`hdl.protocol.Info` the INFO reply carries.
    """
    def header(code, length):
        return [protocol.SYNC_REPLY, int(code), length & 0xFF, length >> 8]

    def field(name, size):
        return [(name, k) for k in range(size)]

    plan = {
        kinds.INFO: header(Reply.INFO, protocol.INFO_LENGTH) + list(info.pack()),
        kinds.LOADED: header(Reply.LOADED, 2) + field("committed", 2),
        kinds.ERROR: header(Reply.ERROR, 2) + field("verdict", 1) + field("command", 1),
        kinds.RESULT: (header(Reply.RESULT, RESULT_HEAD + 2 * n_out) + field("class", 2)
                       + field("steps", 2) + field("cycles", 4)),
    }
    if kinds is WeightsReplyKind:
        plan[kinds.WEIGHTS] = (header(Reply.WEIGHTS, protocol.WEIGHTS_REPLY)
                               + field("written", 4) + field("loaded", 1))
    return plan


class SkidBuffer(wiring.Component):
    """Register slice whose ``i.ready`` is a register: no combinational path crosses it.

    ``o`` is driven from a register. A transfer on ``i`` while ``o`` stalls lands in a second
    (skid) register and ``i.ready`` falls; it rises again the cycle after ``o`` has taken the
    skid register's payload. Latency 1, throughput one transfer per cycle; nothing is dropped or
    reordered. ``o.ready`` reaches only the enables of the two registers, and ``i.ready``
    depends on nothing but the skid register's valid bit.

    Parameters
    ----------
    shape : shape-castable
        The payload.

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(shape))``
    """
    def __init__(self, shape):
        try:
            Shape.cast(shape)
        except TypeError:
            raise TypeError(f"Shape must be shape-castable, not {shape!r}") from None
        self._shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    @property
    def shape(self):
        """The payload's shape."""
        return self._shape

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self._shape)
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(~self.o.valid | self.o.ready):
            # The output register is free or drains now: refill it, from the skid slot first.
            m.d.sync += [self.o.valid.eq(skid_valid | self.i.valid), skid_valid.eq(0)]
            with m.If(skid_valid):
                m.d.sync += self.o.payload.eq(skid)
            with m.Else():
                m.d.sync += self.o.payload.eq(self.i.payload)
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


def _byte(value, k):
    """Byte ``k`` of ``value``, little-endian, zero beyond its width."""
    value = Value.cast(value)
    return value[8 * k:8 * k + 8] if 8 * k < len(value) else C(0, 8)


class HostLink(wiring.Component):
    """Accelerator behind a UART: take samples' events, run them, return counts and cycles.

    The protocol is in :mod:`hdl.protocol` and docs/boards.md. The event buffer has two halves
    of ``capacity`` events. LOAD frames append events to the half being filled (a failed frame
    leaves it as it was) and RUN queues that half as one sample; its RESULT reply answers the
    RUN. A BATCH frame fills the half with whole samples and queues them at once, with no reply
    of its own, and the link takes the next frame while they run: each sample's RESULT is sent
    as the sample ends, in order. So a host that keeps two BATCH frames in flight overlaps the
    transfer of one with the computation of the other. A BATCH sample is ``steps`` steps (each
    closed by an event with ``last``); with ``replay`` it is ONE step that the link feeds
    ``steps`` times (direct encoding: the same values every step), so the host sends it once.
    The link sets ``first`` on a BATCH sample's first event itself.

    A run clears the sample's spike counters, streams its events into the accelerator at up to
    one event per cycle while taking every output event (``o.ready`` is held high), and hands
    the predicted class, the number of output steps, the cycle count and the spike counts to the
    reply. The counters have two banks, so the next sample runs while a reply is sent. The cycle
    count runs from the cycle of the sample's first input transfer to the cycle of the last
    output transfer of its last step, both included. A frame other than BATCH is answered
    before the next frame is taken: bytes that arrive meanwhile are dropped, so the host waits
    for each reply.

    Widths. A sample has at most ``max(capacity, steps)`` steps, and a neuron spikes at most
    once per step: the step and spike counters are that wide, zero-extended into their 16-bit
    protocol fields. The cycle counter keeps the full 32 bits of its field (wrapping after
    2**32 cycles): how long a sample runs is up to the accelerator, not bounded by anything the
    link knows.

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
        Events a buffer half holds, at most 65535 (a power of two uses the memory fully).
    timeout : :class:`int`
        Cycles without a byte after which a half-received frame is dropped (TIMEOUT reply).
    clock_hz : :class:`int`
        Clock frequency reported in INFO.
    ident : :class:`int`
        32-bit identity of the network (:func:`hdl.protocol.bundle_ident`), reported in INFO
        (weights loaded at run time: the weight store's layout ident instead).
    steps : :class:`int` or ``None``
        Steps of a BATCH sample; ``None`` builds a link without BATCH (a COMMAND error).
    replay : :class:`bool`
        BATCH samples are one step, fed ``steps`` times.

    An accelerator with the ``load`` members of ``weights="load"`` (:class:`hdl.top.Accelerator`)
    gets the WEIGHTS command: ``ident`` is then its weight store's layout ident, INFO carries
    :data:`~hdl.protocol.FLAG_WEIGHTS`, and RUN and BATCH wait for a whole image (WEIGHTS
    error). A WEIGHTS frame's image bytes go to the loader as they arrive, at the offset the
    frame names: 0 starts a new image, any other must be the bytes written so far. A frame that
    fails after writing starts the image over (offset 0), since the bytes it wrote are in.

    Members
    -------
    rx : ``In(1)``
        UART line from the host.
    tx : ``Out(1)``
        UART line to the host.
    busy : ``Out(1)``
        High while samples run.
    error : ``Out(1)``
        High when the last reply was an ERROR.
    """
    def __init__(self, accelerator, *, n_in, n_out, divisor, capacity, timeout, clock_hz,
                 ident=0, steps=None, replay=False):
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
        if steps is not None:
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise TypeError(f"Steps must be None or an integer of at least 1, not {steps!r}")
            if steps > 2 ** COUNT_BITS - 1:
                raise ValueError(f"Steps must be at most {2 ** COUNT_BITS - 1}, not {steps!r}")
        if not isinstance(replay, bool):
            raise TypeError(f"Replay must be a bool, not {replay!r}")
        if replay and steps is None:
            raise ValueError("Replay needs the steps of a sample (steps=None)")
        self._ev_layout = check_accelerator(accelerator, n_in, n_out)
        self._accelerator = accelerator
        if self.weights:
            ident = accelerator.weight_store.ident      # the layout, not one bundle's weights
        self._n_in, self._n_out = n_in, n_out
        self._capacity, self._timeout = capacity, timeout
        self._clock_hz, self._ident = clock_hz, ident
        self._steps, self._replay = steps, replay
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
        """Events a buffer half holds."""
        return self._capacity

    @property
    def steps(self):
        """Steps of a BATCH sample, or ``None`` without BATCH."""
        return self._steps

    @property
    def replay(self):
        """Whether a BATCH sample is one step fed ``steps`` times."""
        return self._replay

    @property
    def event_bytes(self):
        """Bytes per packed input event."""
        return (Shape.cast(self._ev_layout).width + 7) // 8

    @property
    def weights(self):
        """Whether the accelerator's weights are loaded at run time (WEIGHTS)."""
        return "load" in self._accelerator.signature.members

    @property
    def info(self):
        """The INFO reply this link gives."""
        rate_bits = getattr(self._accelerator, "rate_bits", 0)   # hdl.rate.RateInput
        flags = ((protocol.FLAG_BATCH if self._steps else 0)
                 | (protocol.FLAG_REPLAY if self._replay else 0)
                 | (protocol.FLAG_WEIGHTS if self.weights else 0)
                 | (protocol.FLAG_RATE if rate_bits else 0))
        return protocol.Info(protocol.VERSION, self.event_bytes, self._n_in, self._n_out,
                             self._capacity, self._clock_hz, self._ident, self._steps or 0,
                             flags, rate_bits)

    def elaborate(self, platform):
        # Four small state machines run the link, handing over through registered strobes:
        # "parse" receives a frame (Idle .. Checksum) and waits in Handle until it is released;
        # "control" decides on it (Decide registers the verdict, Dispatch acts on it), queues a
        # buffer half for the runner (RUN, BATCH) and has the frame answered; "run" runs the
        # queued halves sample by sample (Clear Counts, Run) and hands each result to "reply",
        # which sends one answer at a time, the runner's first. The parser and the reply move at
        # UART speed, so every condition they branch on (the end of the payload, a full buffer,
        # the timeout, the end of a run) is registered a cycle ahead, off the fast paths.
        # Registers that are always written before they are read have no reset, so that a clear
        # or a load of their own can use the flip-flop's reset pin.
        #
        # The event buffer is two halves; a half is filled by LOAD or BATCH frames while the
        # other may run. Payload bytes are assembled into events and written to the half as they
        # arrive; `committed` marks the end of the last good LOAD and every LOAD frame starts
        # writing there (a BATCH at the half's start), so a frame that fails a check is simply
        # not committed. Every stored event carries an `end` bit: it closes a pass over a BATCH
        # sample (its `steps`-th step, or its one step with replay). During Run the buffer's
        # read register is the first stage of the feed: it is refilled whenever it is empty or
        # the skid buffer takes its event, decided from registers only, so the accelerator's
        # `i.ready` stops at the skid buffer instead of reaching the RAM. The read after an `end`
        # event is speculative: the cycle after, the feed holds it back and reads the sample's
        # start again (another pass) or stops (the sample is fed), one cycle per pass. Output
        # spikes are counted in a memory with a read-modify-write pipeline whose read is
        # transparent to the write one cycle ahead, so back-to-back spikes of one neuron (end of
        # one step, start of the next) add up; the running argmax follows one stage behind, as
        # one comparison of (count, inverted address) keys. The counts have two banks: a result
        # is latched (class, steps, cycles, bank) when the reply takes it, and the next sample
        # counts in the other bank while the reply reads this one.
        #
        # A reply is sent byte by byte from `reply_plan`: a position counter selects a constant
        # or a byte of a held value, then the counts are read from their memory, then the CRC.
        # Each byte is registered in `tx_byte` before the UART takes it. The transmit CRC starts
        # at the sync byte's own value: CRC-8 is linear, so the sync byte cancels out and the CRC
        # covers code, length and payload as the protocol says.
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(divisor=self._divisor)
        m.submodules.uart_tx = utx = UARTTx(divisor=self._divisor)
        m.submodules.feed = feed = SkidBuffer(self._ev_layout)
        m.submodules.accelerator = acc = self._accelerator
        wiring.connect(m, feed.o, acc.i)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        nbytes = self.event_bytes
        n_out, capacity = self._n_out, self._capacity
        batch_on = self._steps is not None
        weights_on = self.weights
        K = WeightsReplyKind if weights_on else ReplyKind
        span = 1 if self._replay or not batch_on else self._steps   # steps stored per sample
        passes = self._steps if self._replay else 1                 # feeds of a stored sample
        tally = Shape.cast(range(max(capacity, self._steps or 0) + 1))
        addr_shape = Shape.cast(acc.o.p.addr.shape())
        half_bits = ceil_log2(capacity)                             # a half's address bits

        entry = data.StructLayout({"ev": self._ev_layout, "end": 1})
        m.submodules.events = ev_mem = memory.Memory(shape=entry, depth=2 << half_bits, init=[])
        ev_wr = ev_mem.write_port()
        ev_rd = ev_mem.read_port()
        m.submodules.counts = cnt_mem = memory.Memory(shape=tally, depth=2 << addr_shape.width,
                                                      init=[])
        cnt_wr = cnt_mem.write_port()
        cnt_rd = cnt_mem.read_port(transparent_for=(cnt_wr,))     # the run's read-modify-write
        cnt_out = cnt_mem.read_port()                              # the reply's walk

        # A register that is always written before it is read needs no reset.
        register = functools.partial(Signal, reset_less=True)

        # Received bytes are taken at once; outside a frame's parse they are dropped.
        byte = urx.o.payload
        got = urx.o.valid
        m.d.comb += urx.o.ready.eq(1)

        # Frame being parsed, and the strobes that pass it on and close it.
        cmd = register(8)
        is_info = register()
        is_load = register()
        is_run = register()
        is_read = register()
        is_batch = register()
        is_store = register()               # LOAD or BATCH: the payload is events
        remaining = register(16)            # payload bytes still to come
        one_left = register()               # registered `remaining == 1`
        empty = register()                  # the frame has no payload
        crc = register(8)
        crc_ok = register()
        lane = register(range(nbytes))      # byte of the event being assembled
        lane_last = register()              # registered `lane == nbytes - 1`
        ev_bytes = register(8 * (nbytes - 1))  # the event's bytes before its last
        quiet = register(range(self._timeout + 1))
        timed_out = register()              # registered `quiet == timeout`, no byte meanwhile
        frame_timed_out = register()
        framed = Signal()                   # strobe: a frame has ended (parse -> control)
        release = Signal()                  # strobe: the frame is handled (control -> parse)
        replied = Signal()                  # strobe: a reply is out (reply -> control)
        verdict = register(4 if weights_on else 3)   # 0, or the frame's error code

        # Event buffer: the half being filled, and the halves queued for the runner.
        fill = Signal()
        queued = Signal(2)
        legacy = Signal(2)                  # the queued half is one RUN sample
        ends = Array([Signal(range(capacity + 1), name=f"end{h}") for h in range(2)])
        wptr = register(range(capacity + 1))
        committed = Signal(range(capacity + 1))
        blocked = register()                # the half being filled is still queued
        at_start = register()               # registered `wptr == 0`
        full = register()                   # registered `wptr == capacity`
        write_due = register()              # the next payload byte completes an event that fits
        overflow = register()
        lasts = register(range(span))       # `last` events of the frame, modulo `span`
        first_ok = Signal()                 # the LOAD buffer's first event has `first`
        frame_last = register()             # the frame's last event has `last`
        last_ok = Signal()                  # the LOAD buffer's last event has `last`

        # Run and its result.
        run_half = Signal()
        start_run = Signal()                # strobe: a sample starts (first cycle of Clear Counts)
        running = Signal()
        legacy_run = register()             # the sample runs to `end_run` (RUN)
        end_run = register(range(capacity + 1))
        sample_start = register(range(capacity + 1))
        resume = register(range(capacity + 1))   # where the next sample of the half starts
        rptr = register(range(capacity + 1))
        read_valid = Signal()               # the read register holds an event for the feed
        read_done = register()              # the sample's last event has been read
        ended = Signal()                    # the event fed last cycle closed a pass
        pass_no = register(range(passes))
        first_flag = register()             # no event of the sample has been fed yet
        steps_in = register(tally)          # steps that entered the feed
        steps_out = register(tally)         # steps the accelerator closed
        done = Signal()
        finished = Signal()
        counting = Signal()
        cycles = register(32)
        run_bank = Signal()                 # the counts bank of the running sample
        clr_addr = Signal(addr_shape)
        # The argmax key: among equal counts the lower address has the larger `rank`, so one
        # unsigned comparison gives the class, ties to the lowest index (models.golden.predict).
        # The best key is held inverted: `key > best` is then the carry out of `key + best_inv`,
        # a plain carry chain from two registers.
        key_layout = data.StructLayout({"rank": addr_shape, "count": tally})
        s1_valid = Signal()
        s1_addr = register(addr_shape)
        s2_valid = Signal()
        s2_key = register(key_layout)
        best_inv = register(key_layout)

        # The result a reply sends.
        have_result = Signal()
        res_class = register(addr_shape)
        res_steps = register(tally)
        res_cycles = register(32)
        res_bank = register()

        if weights_on:
            # WEIGHTS: the header's checks as its bytes come, the image bytes written so far
            # (`written`, of the last good frame; `wl_count` during a frame) and whether they
            # are the whole image.
            image_size = acc.weight_store.size
            is_weights = register()
            wl_hdr = register(range(protocol.WEIGHTS_HEAD + 1))   # header bytes seen
            wl_id_bad = register()
            wl_off_bad = register()             # the offset is not `written`
            wl_off_nz = register()              # the offset is not 0
            wl_blocked = register()             # samples are queued: no writes
            wl_data = register()                # an image byte came
            wl_wrote = register()               # an image byte was written
            wl_over = register()                # an image byte past the image
            wl_count = register(range(image_size + 1))
            written = Signal(range(image_size + 1))
            loaded = Signal()
            ident_bytes = Array(C((self._ident >> (8 * k)) & 0xFF, 8) for k in range(4))

        # Reply being sent, and who asked for it.
        kind = register(K)
        f_kind = register(K)
        f_req = Signal()
        r_req = Signal()
        f_grant = Signal()
        r_grant = Signal()
        plan = reply_plan(self.info, n_out, K)
        pos = Signal(range(max(len(entries) for entries in plan.values())))
        out_addr = Signal(addr_shape)
        cnt_hi = Signal()
        tx_byte = register(8)
        tx_valid = Signal()
        tx_crc = Signal(8, init=protocol.SYNC_REPLY)

        # Receive CRC over the bytes of a frame after its sync byte (Idle clears it), the
        # silence counter, and the parser's conditions a cycle ahead.
        with m.If(got):
            m.d.sync += [crc.eq(crc8_next(crc, byte)), quiet.eq(0)]
        with m.Else():
            m.d.sync += quiet.eq(quiet + 1)
        m.d.sync += [timed_out.eq((quiet == self._timeout) & ~got),
                     one_left.eq(remaining == 1),
                     at_start.eq(wptr == 0), full.eq(wptr == capacity),
                     lane_last.eq(lane == nbytes - 1),
                     write_due.eq(is_store & (lane == nbytes - 1) & (wptr != capacity)
                                  & ~blocked),
                     framed.eq(0), release.eq(0), replied.eq(0), start_run.eq(0)]

        # Feed: the read register, refilled from registers alone, then the skid buffer.
        take = ~read_valid | feed.i.ready
        xfer = feed.i.valid & feed.i.ready
        m.d.comb += [feed.i.valid.eq(read_valid & ~ended), feed.i.payload.eq(ev_rd.data.ev),
                     feed.i.payload.first.eq(Mux(legacy_run, ev_rd.data.ev.first, first_flag))]
        m.d.comb += ev_rd.en.eq(0)         # its reset value is 1: read only where said below
        with m.If(start_run):
            m.d.sync += [rptr.eq(sample_start), read_valid.eq(0), read_done.eq(0), ended.eq(0),
                         pass_no.eq(0), first_flag.eq(1)]
        with m.Elif(running & ended):
            # The read register holds the speculative read after a pass's `end` event.
            m.d.sync += ended.eq(0)
            with m.If(pass_no == passes - 1):
                m.d.sync += [read_valid.eq(0), read_done.eq(1)]
            with m.Else():
                m.d.comb += [ev_rd.addr.eq(Cat(sample_start[:half_bits], run_half)),
                             ev_rd.en.eq(1)]
                m.d.sync += [rptr.eq(sample_start + 1), read_valid.eq(1),
                             pass_no.eq(pass_no + 1)]
        with m.Elif(running & take):
            m.d.comb += [ev_rd.addr.eq(Cat(rptr[:half_bits], run_half)), ev_rd.en.eq(1)]
            m.d.sync += read_valid.eq(~read_done)
            with m.If(~read_done):
                m.d.sync += [rptr.eq(rptr + 1),
                             read_done.eq(legacy_run & (rptr + 1 == end_run))]
            with m.If(xfer & ev_rd.data.end):
                m.d.sync += [ended.eq(1), resume.eq(rptr)]
        with m.If(xfer):
            m.d.sync += first_flag.eq(0)
        with m.If(start_run):
            m.d.sync += steps_in.eq(0)
        with m.Elif(xfer & feed.i.payload.last):
            m.d.sync += steps_in.eq(steps_in + 1)
        # Every event has left the buffer and the accelerator has closed every step it took,
        # registered: true from the second cycle after the last output transfer.
        with m.If(start_run):
            m.d.sync += done.eq(0)
        with m.Else():
            m.d.sync += done.eq(read_done & ~read_valid & (steps_out == steps_in))

        # Cycle count: `counting` rises the cycle after the first input transfer and falls after
        # the first cycle of `done`, two cycles after the last output transfer; counted from -1
        # that is exactly the first-to-last transfer span, both included.
        m.d.sync += counting.eq((counting | (acc.i.valid & acc.i.ready)) & ~done)
        with m.If(start_run):
            m.d.sync += cycles.eq(-1)
        with m.Elif(counting):
            m.d.sync += cycles.eq(cycles + 1)

        # Take every output event; count spikes per neuron and the running argmax.
        m.d.comb += acc.o.ready.eq(running)
        fire_out = acc.o.valid & running
        m.d.comb += cnt_rd.addr.eq(Cat(acc.o.p.addr, run_bank))
        m.d.sync += [s1_valid.eq(fire_out & acc.o.p.spike), s1_addr.eq(acc.o.p.addr)]
        count = (cnt_rd.data + 1)[:tally.width]
        with m.If(s1_valid):
            m.d.comb += [cnt_wr.addr.eq(Cat(s1_addr, run_bank)), cnt_wr.data.eq(count),
                         cnt_wr.en.eq(1)]
        m.d.sync += [s2_valid.eq(s1_valid), s2_key.rank.eq(~s1_addr), s2_key.count.eq(count)]
        beats_best = (s2_key.as_value() + best_inv.as_value())[-1]
        with m.If(start_run):
            m.d.sync += [best_inv.rank.eq(0), best_inv.count.eq(-1)]
        with m.Elif(s2_valid & beats_best):
            m.d.sync += best_inv.eq(~s2_key.as_value())
        with m.If(start_run):
            m.d.sync += steps_out.eq(0)
        with m.Elif(fire_out & acc.o.p.last):
            m.d.sync += steps_out.eq(steps_out + 1)
        m.d.sync += finished.eq(running & done & ~s1_valid & ~s2_valid)

        # The reply byte at `pos` of `reply_plan`, and whether it is the last before the counts:
        # the constant bytes as a small ROM, each held value's byte through a select of its own,
        # all decoded into registers a cycle ahead. That is early enough: `pos` moves when a byte
        # is registered and the next one is registered at least two cycles later, after the UART
        # took this one; `kind` is set a cycle before the reply starts, and its first byte, the
        # sync byte, is the same for every kind.
        values = {"committed": committed, "verdict": verdict, "command": cmd,
                  "class": res_class, "steps": res_steps, "cycles": res_cycles}
        if weights_on:
            values.update({"written": written, "loaded": loaded})
        # Bytes of held values beyond their width are zero: constants, like the ROM's.
        held = [entry for entries in plan.values() for entry in entries
                if not isinstance(entry, int) and 8 * entry[1] < len(Value.cast(values[entry[0]]))]
        plan_const = register(8)
        plan_last = register()
        plan_sel = register(len(held))
        m.d.sync += [plan_const.eq(0), plan_last.eq(0), plan_sel.eq(0)]
        with m.Switch(kind):
            for what, entries in plan.items():
                with m.Case(what):
                    with m.Switch(pos):
                        for index, entry in enumerate(entries):
                            with m.Case(index):
                                if isinstance(entry, int):
                                    m.d.sync += plan_const.eq(entry)
                                elif entry in held:
                                    m.d.sync += plan_sel[held.index(entry)].eq(1)
                                m.d.sync += plan_last.eq(index == len(entries) - 1)
        plan_byte = plan_const
        for index, (name, k) in enumerate(held):
            plan_byte = plan_byte | Mux(plan_sel[index], _byte(values[name], k), 0)
        m.d.comb += cnt_out.addr.eq(Cat(out_addr, res_bank))
        count_byte = Mux(cnt_hi, _byte(cnt_out.data, 1), _byte(cnt_out.data, 0))

        # The UART takes `tx_byte`; every byte sent goes into the CRC.
        m.d.comb += [utx.i.valid.eq(tx_valid), utx.i.payload.eq(tx_byte)]
        with m.If(utx.i.valid & utx.i.ready):
            m.d.sync += [tx_valid.eq(0), tx_crc.eq(crc8_next(tx_crc, tx_byte))]

        with m.FSM(name="parse"):
            def end_frame(timeout):
                m.d.sync += [framed.eq(1), frame_timed_out.eq(timeout)]
                m.next = "Handle"

            with m.State("Idle"):
                m.d.sync += crc.eq(0)
                with m.If(got & (byte == protocol.SYNC_REQUEST)):
                    m.next = "Command"

            with m.State("Command"):
                with m.If(got):
                    batch = (byte == Command.BATCH) if batch_on else C(0)
                    if weights_on:
                        m.d.sync += is_weights.eq(byte == Command.WEIGHTS)
                    m.d.sync += [cmd.eq(byte), is_info.eq(byte == Command.INFO),
                                 is_load.eq(byte == Command.LOAD),
                                 is_run.eq(byte == Command.RUN),
                                 is_read.eq(byte == Command.READ), is_batch.eq(batch),
                                 is_store.eq((byte == Command.LOAD) | batch)]
                    m.next = "Length Low"
                with m.Elif(timed_out):
                    end_frame(timeout=1)

            with m.State("Length Low"):
                with m.If(got):
                    m.d.sync += remaining[:8].eq(byte)
                    m.next = "Length High"
                with m.Elif(timed_out):
                    end_frame(timeout=1)

            with m.State("Length High"):
                with m.If(got):
                    m.d.sync += [remaining[8:].eq(byte),
                                 empty.eq((remaining[:8] == 0) & (byte == 0)), lane.eq(0),
                                 overflow.eq(0), lasts.eq(0),
                                 wptr.eq(Mux(is_batch, 0, committed)),
                                 blocked.eq(queued.bit_select(fill, 1))]
                    if weights_on:
                        m.d.sync += [wl_hdr.eq(0), wl_id_bad.eq(0), wl_off_bad.eq(0),
                                     wl_off_nz.eq(0), wl_blocked.eq(queued != 0),
                                     wl_data.eq(0), wl_wrote.eq(0), wl_over.eq(0),
                                     wl_count.eq(written)]
                    m.next = "Length Check"
                with m.Elif(timed_out):
                    end_frame(timeout=1)

            with m.State("Length Check"):
                # A cycle to branch on the registered length (no byte comes this soon).
                with m.If(empty):
                    m.next = "Checksum"
                with m.Else():
                    m.next = "Payload"

            with m.State("Payload"):
                word = Cat(ev_bytes, byte)
                event = data.View(self._ev_layout, word[:Shape.cast(self._ev_layout).width])
                with m.If(got):
                    m.d.sync += remaining.eq(remaining - 1)
                    if nbytes > 1:
                        m.d.sync += ev_bytes.eq(word[8:])
                    with m.If(is_store):
                        with m.If(lane_last):
                            m.d.sync += lane.eq(0)
                            with m.If(full | blocked):
                                m.d.sync += overflow.eq(1)
                        with m.Else():
                            m.d.sync += lane.eq(lane + 1)
                    with m.If(write_due):
                        closes = is_batch & event.last & (lasts == span - 1)
                        m.d.comb += [ev_wr.addr.eq(Cat(wptr[:half_bits], fill)),
                                     ev_wr.data.ev.eq(event), ev_wr.data.end.eq(closes),
                                     ev_wr.en.eq(1)]
                        m.d.sync += [wptr.eq(wptr + 1), frame_last.eq(event.last)]
                        with m.If(event.last):
                            m.d.sync += lasts.eq(Mux(lasts == span - 1, 0, lasts + 1))
                        with m.If(at_start):
                            m.d.sync += first_ok.eq(event.first)
                    if weights_on:
                        with m.If(is_weights):
                            self._weights_byte(m, acc, byte, ident_bytes, written, loaded,
                                               image_size, wl_hdr, wl_id_bad, wl_off_bad,
                                               wl_off_nz, wl_blocked, wl_data, wl_wrote,
                                               wl_over, wl_count)
                    with m.If(one_left):
                        m.next = "Checksum"
                with m.Elif(timed_out):
                    end_frame(timeout=1)

            with m.State("Checksum"):
                with m.If(got):
                    m.d.sync += crc_ok.eq(byte == crc)
                    end_frame(timeout=0)
                with m.Elif(timed_out):
                    end_frame(timeout=1)

            with m.State("Handle"):
                with m.If(release):
                    m.next = "Idle"

        def queue_half(one_run, end):
            m.d.sync += [queued.bit_select(fill, 1).eq(1), legacy.bit_select(fill, 1).eq(one_run),
                         ends[fill].eq(end), fill.eq(~fill), committed.eq(0), first_ok.eq(0),
                         last_ok.eq(0)]

        with m.FSM(name="control"):
            wait_half = register()

            with m.State("Idle"):
                with m.If(framed):
                    m.next = "Decide"

            with m.State("Decide"):
                # The frame's verdict, in order of precedence, registered for Dispatch. A buffer
                # with a committed frame has `last_ok` from that frame, so an empty buffer fails
                # `last_ok` too.
                length_ok = Mux(is_store, ~empty & (lane == 0), empty)
                if weights_on:
                    length_ok = Mux(is_weights, wl_data, length_ok)
                with m.If(frame_timed_out):
                    m.d.sync += verdict.eq(Error.TIMEOUT)
                with m.Elif(~crc_ok):
                    m.d.sync += verdict.eq(Error.CRC)
                known = is_info | is_load | is_run | is_read | is_batch
                with m.Elif(~(known | is_weights) if weights_on else ~known):
                    m.d.sync += verdict.eq(Error.COMMAND)
                with m.Elif(~length_ok):
                    m.d.sync += verdict.eq(Error.LENGTH)
                with m.Elif(is_store & overflow):
                    m.d.sync += verdict.eq(Error.OVERFLOW)
                if weights_on:
                    with m.Elif(is_weights & wl_id_bad):
                        m.d.sync += verdict.eq(Error.IDENT)
                    with m.Elif(is_weights & wl_blocked):
                        m.d.sync += verdict.eq(Error.BUSY)
                    with m.Elif(is_weights & wl_off_bad & wl_off_nz):
                        m.d.sync += verdict.eq(Error.SEQUENCE)
                    with m.Elif(is_weights & wl_over):
                        m.d.sync += verdict.eq(Error.OVERFLOW)
                    with m.Elif((is_run | is_batch) & ~loaded):
                        m.d.sync += verdict.eq(Error.WEIGHTS)
                with m.Elif((is_run & ~(first_ok & last_ok))
                            | (is_batch & ~(frame_last & (lasts == 0)))):
                    m.d.sync += verdict.eq(Error.SAMPLE)
                with m.Elif(is_read & ~have_result & (queued == 0)):
                    m.d.sync += verdict.eq(Error.NO_RESULT)
                with m.Else():
                    m.d.sync += verdict.eq(0)
                m.next = "Dispatch"

            with m.State("Dispatch"):
                if weights_on:
                    # A WEIGHTS frame that wrote and failed leaves a broken image: start over.
                    with m.If(is_weights & (verdict != 0) & wl_wrote):
                        m.d.sync += [written.eq(0), loaded.eq(0)]
                with m.If(verdict != 0):
                    m.d.sync += f_kind.eq(K.ERROR)
                    m.next = "Reply"
                with m.Elif(is_info):
                    m.d.sync += f_kind.eq(K.INFO)
                    m.next = "Reply"
                with m.Elif(is_load):
                    m.d.sync += [committed.eq(wptr), last_ok.eq(frame_last),
                                 f_kind.eq(K.LOADED)]
                    m.next = "Reply"
                with m.Elif(is_run):
                    queue_half(1, committed)
                    m.d.sync += wait_half.eq(fill)
                    m.next = "Wait Run"
                with m.Elif(is_batch):
                    queue_half(0, wptr)
                    m.d.sync += release.eq(1)
                    m.next = "Idle"
                if weights_on:
                    with m.Elif(is_weights):
                        m.d.sync += [written.eq(wl_count), loaded.eq(wl_count == image_size),
                                     f_kind.eq(K.WEIGHTS)]
                        m.next = "Reply"
                with m.Else():
                    m.d.sync += f_kind.eq(K.RESULT)
                    m.next = "Wait Idle"

            with m.State("Wait Run"):
                # The runner has taken the RUN's result once the half is no longer queued.
                with m.If(~queued.bit_select(wait_half, 1)):
                    m.next = "Replying"

            with m.State("Wait Idle"):
                # READ answers the last result once every queued sample has run.
                with m.If(queued == 0):
                    m.next = "Reply"

            with m.State("Reply"):
                m.d.comb += f_req.eq(1)
                with m.If(f_grant):
                    m.next = "Replying"

            with m.State("Replying"):
                with m.If(replied):
                    m.d.sync += release.eq(1)
                    m.next = "Idle"

        with m.FSM(name="run"):
            with m.State("Idle"):
                with m.If(queued.bit_select(run_half, 1)):
                    m.d.sync += [start_run.eq(1), sample_start.eq(0), self.busy.eq(1),
                                 legacy_run.eq(legacy.bit_select(run_half, 1)),
                                 end_run.eq(ends[run_half])]
                    m.next = "Clear Counts"

            with m.State("Clear Counts"):
                m.d.comb += [cnt_wr.addr.eq(Cat(clr_addr, run_bank)), cnt_wr.data.eq(0),
                             cnt_wr.en.eq(1)]
                m.d.sync += clr_addr.eq(clr_addr + 1)
                with m.If(clr_addr == n_out - 1):
                    m.d.sync += [clr_addr.eq(0), running.eq(1)]
                    m.next = "Run"

            with m.State("Run"):
                with m.If(finished):
                    m.d.sync += running.eq(0)
                    m.next = "Result"

            with m.State("Result"):
                m.d.comb += r_req.eq(1)
                with m.If(r_grant):
                    m.d.sync += [res_class.eq(best_inv.rank), res_steps.eq(steps_out),
                                 res_cycles.eq(cycles), res_bank.eq(run_bank),
                                 run_bank.eq(~run_bank), have_result.eq(1)]
                    with m.If(legacy_run | (resume == end_run)):
                        m.d.sync += [queued.bit_select(run_half, 1).eq(0),
                                     run_half.eq(~run_half), self.busy.eq(0)]
                        m.next = "Idle"
                    with m.Else():
                        m.d.sync += [start_run.eq(1), sample_start.eq(resume)]
                        m.next = "Clear Counts"

        with m.FSM(name="reply"):
            with m.State("Idle"):
                with m.If(r_req):
                    m.d.comb += r_grant.eq(1)
                    m.d.sync += kind.eq(K.RESULT)
                    m.next = "Fixed"
                with m.Elif(f_req):
                    m.d.comb += f_grant.eq(1)
                    m.d.sync += kind.eq(f_kind)
                    m.next = "Fixed"

            with m.State("Fixed"):
                with m.If(~tx_valid):
                    m.d.sync += [tx_byte.eq(plan_byte), tx_valid.eq(1), pos.eq(pos + 1)]
                    with m.If(plan_last):
                        m.d.sync += pos.eq(0)
                        with m.If(kind == K.RESULT):
                            m.next = "Counts"
                        with m.Else():
                            m.next = "Checksum"

            with m.State("Counts"):
                # The counts memory is read at `out_addr`, which moves on as a byte is
                # registered; the next byte is registered after the UART took this one, two
                # cycles later.
                with m.If(~tx_valid):
                    m.d.sync += [tx_byte.eq(count_byte), tx_valid.eq(1), cnt_hi.eq(~cnt_hi)]
                    with m.If(cnt_hi):
                        m.d.sync += out_addr.eq(out_addr + 1)
                        with m.If(out_addr == n_out - 1):
                            m.d.sync += out_addr.eq(0)
                            m.next = "Checksum"

            with m.State("Checksum"):
                with m.If(~tx_valid):
                    m.d.sync += [tx_byte.eq(tx_crc), tx_valid.eq(1)]
                    m.next = "End"

            with m.State("End"):
                # Sending the CRC byte returned `tx_crc` to zero; start the next reply's at sync.
                with m.If(~tx_valid):
                    m.d.sync += [tx_crc.eq(protocol.SYNC_REPLY), replied.eq(1),
                                 self.error.eq(kind == K.ERROR)]
                    m.next = "Idle"
        return m

    @staticmethod
    def _weights_byte(m, acc, byte, ident_bytes, written, loaded, image_size, hdr, id_bad,
                      off_bad, off_nz, blocked, data_seen, wrote, over, count):
        """A received byte of a WEIGHTS payload: header checks, then into the loader."""
        with m.If(hdr < 4):
            m.d.sync += [id_bad.eq(id_bad | (byte != ident_bytes[hdr[:2]])), hdr.eq(hdr + 1)]
        with m.Elif(hdr < protocol.WEIGHTS_HEAD):
            k = (hdr - 4)[:2]
            near = Cat(written, C(0, 32 - len(written)))
            m.d.sync += [off_bad.eq(off_bad | (byte != near.word_select(k, 8))),
                         off_nz.eq(off_nz | (byte != 0)), hdr.eq(hdr + 1)]
            # The last offset byte: offset 0 restarts the loader (unless the frame is refused).
            with m.If((hdr == protocol.WEIGHTS_HEAD - 1) & ~id_bad & ~blocked
                      & ~off_nz & (byte == 0)):
                m.d.comb += acc.load_restart.eq(1)
                m.d.sync += count.eq(0)
        with m.Else():
            m.d.sync += data_seen.eq(1)
            ok = ~id_bad & ~blocked & ~(off_bad & off_nz)
            with m.If(ok & (count == image_size)):
                m.d.sync += over.eq(1)
            with m.Elif(ok):
                m.d.comb += [acc.load.valid.eq(1), acc.load.p.eq(byte)]
                m.d.sync += [count.eq(count + 1), wrote.eq(1), loaded.eq(0)]
