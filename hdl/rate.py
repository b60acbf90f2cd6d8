"""On-board rate encoding: spikes drawn on the board from a sample's intensities and seed.

A rate-coded sample sent as spike events costs the host link one event per spike and step.
:class:`RateInput` puts a :class:`RateEncoder` in front of an accelerator instead, so the host
sends each sample once, as its seed and its intensities, and a board link replays that one
stored step ``steps`` times (``HostLink(..., replay=True)``): the encoder draws a new step of
spikes on every pass. The generator is :mod:`models.onboard`'s, bit for bit, so the golden model
runs the very spikes the board draws:

* Marsaglia's 32-bit xorshift with shifts (13, 17, 5), one state per sample, seeded with the
  sample's 32-bit seed (nonzero: 0 is the generator's fixed point, where every intensity above 0
  would spike every step);
* every step walks the input addresses in order, ``0`` to ``n_in - 1``, and every address
  advances the state once, whatever its intensity;
* address ``a`` spikes when the top ``bits`` bits of the state drawn for it are below its
  intensity ``q`` (an integer in ``[0, 2^bits - 1]``).

Input (one step of a sample, as the link stores it; :func:`rate_sample` packs it): first
:func:`seed_events` events whose ``addr`` and ``value`` fields carry the seed, least significant
bits first (``addr`` below ``value``, event 0 first), then one event per address of nonzero
intensity, in ascending address, ``value = q``; ``last`` on the step's final event. The seed is
loaded when the first seed event carries ``first`` (the sample's first pass: the link sets it on
a BATCH sample's first event); on later passes the seed events are skipped and the state goes on
from where the previous step left it.

Output: the accelerator's input stream of DESIGN.md section 5, ``value = 1`` spikes in ascending
address, ``last`` on the step's final event (an empty step is one ``value = 0`` event), ``first``
on the sample's first event. The encoder holds each drawn spike until the next one (or the end
of the step) so that it can set ``last`` on it: no event is spent on closing a step that spikes.

A step takes ``seed_events + n_in + 1`` cycles when the accelerator keeps up (one address per
cycle, one cycle to close the step). Input that breaks the format (addresses not ascending, an
address twice, an address beyond ``n_in - 1``) never stalls the stream or changes the draws: an
event is taken only when the walk is at its address, so the first event whose address the walk
has passed (or never reaches) ends the step's intensities there, and it and the rest of the step
are taken and dropped once the walk is through. Every step is still closed by one ``last``.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .event import EventLayout, addr_bits
from .link import SkidBuffer, check_accelerator

__all__ = ["MAX_BITS", "RateEncoder", "RateInput", "rate_sample", "seed_events", "xorshift32"]

MAX_BITS = 8      # intensity bits: the INFO reply's rate-bits byte, and models.onboard's range


def _check(n_in, bits):
    if isinstance(n_in, bool) or not isinstance(n_in, int) or n_in < 1:
        raise TypeError(f"N in must be a positive integer, not {n_in!r}")
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"Intensity bits must be an integer, not {bits!r}")
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"Intensity bits must be in [1, {MAX_BITS}], not {bits}")


def seed_events(n_in, bits):
    """Events that carry a sample's 32-bit seed: ``ceil(32 / (addr_bits(n_in) + bits))``."""
    _check(n_in, bits)
    per = addr_bits(n_in) + bits
    return -(-32 // per)


def xorshift32(state):
    """One step of the generator as a combinational value of a 32-bit ``state``."""
    x = Value.cast(state)
    x = x ^ (x << 13)[:32]
    x = x ^ (x >> 17)
    return (x ^ (x << 5)[:32])[:32]


def rate_sample(intensities, seed, *, n_in, bits, first=False):
    """One sample as the encoder takes it, packed for the host link (little-endian events of
    ``ceil((addr_bits + bits + 2) / 8)`` bytes, the layout of :class:`RateEncoder`'s input).

    ``intensities`` are ``n_in`` integers in ``[0, 2^bits - 1]`` (:func:`models.onboard.quantize`)
    and ``seed`` the sample's seed in ``[1, 2^32 - 1]``. ``first`` sets ``first`` on the first
    event (a BATCH frame needs it clear: the link sets it). Returns ``(bytes, events)``.
    """
    import numpy as np
    _check(n_in, bits)
    q = np.asarray(intensities)
    if q.shape != (n_in,) or not np.issubdtype(q.dtype, np.integer):
        raise ValueError(f"Intensities must be {n_in} integers, not {q.dtype} of shape "
                         f"{list(q.shape)}")
    if q.size and (q.min() < 0 or q.max() > 2 ** bits - 1):
        bad = int(q.min() if q.min() < 0 else q.max())
        raise ValueError(f"Intensity must be in [0, {2 ** bits - 1}], not {bad}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
            or not 1 <= seed <= 2 ** 32 - 1:
        raise ValueError(f"Seed must be an integer in [1, {2 ** 32 - 1}] (0 is the generator's "
                         f"fixed point), not {seed!r}")
    abits = addr_bits(n_in)
    per = abits + bits
    words = [(int(seed) >> (k * per)) & ((1 << per) - 1) for k in range(seed_events(n_in, bits))]
    words += [int(a) | (int(q[a]) << abits) for a in np.flatnonzero(q)]
    words[-1] |= 1 << per                            # last
    if first:
        words[0] |= 1 << (per + 1)
    nbytes = (per + 2 + 7) // 8
    return b"".join(w.to_bytes(nbytes, "little") for w in words), len(words)


class RateEncoder(wiring.Component):
    """Draws each step's spikes from a stored step of seed and intensity events (module doc).

    Parameters
    ----------
    n_in : :class:`int`
        Input neurons.
    bits : :class:`int`
        Bits of an intensity, 1 to 8.

    Members
    -------
    i : ``In(stream.Signature(EventLayout(n_in, unsigned(bits))))``
        Seed and intensity events, one step at a time.
    o : ``Out(stream.Signature(EventLayout(n_in)))``
        Spike events (a registered output).
    """
    def __init__(self, n_in, bits):
        _check(n_in, bits)
        self._n_in, self._bits = n_in, bits
        super().__init__({
            "i": In(stream.Signature(EventLayout(n_in, unsigned(bits)))),
            "o": Out(stream.Signature(EventLayout(n_in))),
        })

    @property
    def seed_events(self):
        """Events that carry the seed at the start of every step."""
        return seed_events(self._n_in, self._bits)

    def elaborate(self, platform):
        # "Seed" takes the step's seed events (loading the state on a sample's first pass);
        # "Walk" visits one address per cycle, drawing from `draw`, the state drawn for the
        # address at `cursor` (kept one step ahead, so the comparison starts at a register);
        # "Close" drops any input left of the step and sends the held spike with `last` (or an
        # empty event). A drawn spike waits in `held` until the next one is drawn.
        m = Module()
        n_in, bits = self._n_in, self._bits
        k_seed = self.seed_events
        per = addr_bits(n_in) + bits
        ev = self.i.payload

        draw = Signal(32, init=1)
        cursor = Signal(range(n_in))
        seed = Signal(k_seed * per)
        seed_k = Signal(range(k_seed))
        loading = Signal()
        taken = Signal()                    # the step's input events are all in
        held = Signal(range(n_in))
        held_valid = Signal()
        first = Signal()                    # the next event sent opens a sample

        o_free = ~self.o.valid | self.o.ready
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        def send(addr, value, last):
            m.d.sync += [self.o.valid.eq(1), self.o.p.addr.eq(addr), self.o.p.value.eq(value),
                         self.o.p.last.eq(last), self.o.p.first.eq(first), first.eq(0)]

        with m.FSM():
            with m.State("Seed"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    shifted = Cat(seed[per:], ev.as_value()[:per])
                    load = Mux(seed_k == 0, ev.first, loading)
                    m.d.sync += [seed.eq(shifted), loading.eq(load)]
                    with m.If((seed_k == k_seed - 1) | ev.last):
                        with m.If(load):
                            m.d.sync += [draw.eq(xorshift32(shifted[:32])), first.eq(1)]
                        m.d.sync += [seed_k.eq(0), cursor.eq(0), taken.eq(ev.last)]
                        m.next = "Walk"
                    with m.Else():
                        m.d.sync += seed_k.eq(seed_k + 1)

            with m.State("Walk"):
                # The walk waits for the next input event (or the step's end) and, while a
                # spike is held, for room at the output: whether this address spikes is not
                # on the path to the enables.
                here = self.i.valid & ~taken & (ev.addr == cursor)
                spike = here & (draw[32 - bits:] < ev.value)
                step = (taken | self.i.valid) & (~held_valid | o_free)
                with m.If(step):
                    m.d.sync += [draw.eq(xorshift32(draw)), cursor.eq(cursor + 1)]
                    with m.If(here):
                        m.d.comb += self.i.ready.eq(1)
                        m.d.sync += taken.eq(ev.last)
                    with m.If(spike):
                        m.d.sync += [held.eq(cursor), held_valid.eq(1)]
                        with m.If(held_valid):
                            send(held, 1, 0)
                    with m.If(cursor == n_in - 1):
                        m.next = "Close"

            with m.State("Close"):
                with m.If(~taken):
                    m.d.comb += self.i.ready.eq(1)
                    m.d.sync += taken.eq(self.i.valid & ev.last)
                with m.Elif(o_free):
                    send(Mux(held_valid, held, 0), held_valid, 1)
                    m.d.sync += held_valid.eq(0)
                    m.next = "Seed"
        return m


class RateInput(wiring.Component):
    """An accelerator with a :class:`RateEncoder` in front: takes seed and intensity events.

    The encoder sits between two :class:`~hdl.link.SkidBuffer` slices, so neither its
    ``i.ready`` (which depends on the address compare) nor the accelerator's reaches past a
    register. A :class:`~hdl.link.HostLink` built
    around it reports :data:`~hdl.protocol.FLAG_RATE` and ``rate_bits`` in INFO.

    Parameters
    ----------
    accelerator : :class:`wiring.Component`
        The ports of DESIGN.md section 5 for ``n_in`` inputs of 1-bit unsigned values (a
        rate-coded bundle's), with ROM weights.
    n_in : :class:`int`
    bits : :class:`int`
        Bits of an intensity, 1 to 8.

    Members
    -------
    i : ``In(stream.Signature(EventLayout(n_in, unsigned(bits))))``
    o : the accelerator's ``o``
    """
    def __init__(self, accelerator, *, n_in, bits):
        _check(n_in, bits)
        if not isinstance(accelerator, wiring.Component) \
                or "o" not in accelerator.signature.members:
            raise TypeError(f"Accelerator must be a wiring.Component with the ports of "
                            f"DESIGN.md section 5, not {accelerator!r}")
        o_addr = accelerator.signature.members["o"].signature.members["payload"].shape["addr"]
        # n_out is the link's to check; any count with this address width passes here.
        layout = check_accelerator(accelerator, n_in, 2 ** Shape.cast(o_addr.shape).width)
        value = Shape.cast(layout["value"].shape)
        if value != unsigned(1):
            raise ValueError(f"Rate input feeds 1-bit spikes, but the accelerator takes "
                             f"{value!r} input values (a rate-coded bundle has unsigned(1))")
        members = accelerator.signature.members
        if "load" in members:
            raise ValueError("Rate input is not built for weights loaded at run time: build "
                             "with ROM weights")
        self._accelerator, self._n_in, self._bits = accelerator, n_in, bits
        o = members["o"].signature
        super().__init__({
            "i": In(stream.Signature(EventLayout(n_in, unsigned(bits)))),
            "o": Out(o.flip() if isinstance(o, wiring.FlippedSignature) else o),
        })

    @property
    def accelerator(self):
        return self._accelerator

    @property
    def rate_bits(self):
        """Bits of an intensity."""
        return self._bits

    @property
    def seed_events(self):
        return seed_events(self._n_in, self._bits)

    def elaborate(self, platform):
        m = Module()
        m.submodules.take = take = SkidBuffer(EventLayout(self._n_in, unsigned(self._bits)))
        m.submodules.encoder = encoder = RateEncoder(self._n_in, self._bits)
        m.submodules.skid = skid = SkidBuffer(EventLayout(self._n_in))
        m.submodules.accelerator = acc = self._accelerator
        wiring.connect(m, wiring.flipped(self.i), take.i)
        wiring.connect(m, take.o, encoder.i)
        wiring.connect(m, encoder.o, skid.i)
        wiring.connect(m, skid.o, acc.i)
        wiring.connect(m, acc.o, wiring.flipped(self.o))
        return m
