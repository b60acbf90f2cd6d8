"""Neuron update: DESIGN.md section 3 in gateware, bit for bit.

:func:`neuron_update` builds the combinational update of one neuron as Amaranth expressions, so
that every engine (linear, convolution) shares one arithmetic. :class:`NeuronUpdate` wraps it as
a one-stage stream component; :func:`neuron_step` is its integer reference, which is the golden
model's own :func:`models.golden.neuron_step` applied to one neuron.
"""
from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from models.bundle import Neuron

__all__ = ["check_neuron", "neuron_leak", "neuron_sum", "neuron_clamp", "neuron_combine",
           "neuron_update", "neuron_step", "NeuronUpdate"]


def check_neuron(neuron):
    """Validate a :class:`models.bundle.Neuron` given to a component."""
    if not isinstance(neuron, Neuron):
        raise TypeError(f"Neuron must be a models.bundle.Neuron, not {neuron!r}")
    if neuron.threshold < 0 or neuron.threshold > neuron.hi:
        raise ValueError(f"Threshold {neuron.threshold} is not representable as "
                         f"signed({neuron.potential_bits})")
    return neuron


def neuron_leak(neuron, u_prev):
    """The leak of section 3 applied to ``u_prev`` (a value, or an integer constant)."""
    p = neuron.potential_bits
    u = u_prev.as_signed() if isinstance(u_prev, Value) else Const(u_prev, signed(p))
    lk = neuron.leak
    if lk.mode == "mul":
        return (u * Const(lk.beta, unsigned(lk.frac_bits + 1))) >> lk.frac_bits
    return u - (u >> lk.shift)


def neuron_sum(neuron, leaked, s_prev, current, theta=None):
    """The unclamped next potential ``v`` from the leaked potential, last spike and current.

    ``theta``: the threshold as a value (a register loaded at run time) instead of
    ``neuron.threshold``."""
    cur = current.as_signed() if current.shape().signed else current
    if neuron.reset == "subtract":
        v = leaked + cur - Mux(s_prev, neuron.threshold if theta is None else theta, 0)
    elif neuron.reset == "zero" and neuron.model == "lif":
        v = Mux(s_prev, 0, leaked) + cur            # leak((1 - r) * u) = (1 - r) * leak(u)
    elif neuron.reset == "zero":
        v = Mux(s_prev, 0, leaked + cur)
    else:
        v = leaked + cur
    return v.as_signed()


def neuron_clamp(neuron, v, theta=None):
    """Return ``(u, s)``: ``v`` clamped to the potential width, and the spike ``u > theta``.

    The spike is taken from ``v`` with comparisons that run beside the clamp's, not after it.
    ``theta``: the threshold as a value (at most ``hi``) instead of ``neuron.threshold``.
    """
    p, lo, hi = neuron.potential_bits, neuron.lo, neuron.hi
    above = int(hi > neuron.threshold) if theta is None else theta < hi
    theta = neuron.threshold if theta is None else theta
    u = Mux(v < lo, lo, Mux(v > hi, hi, v))[:p].as_signed()
    # u = hi above the range (a spike iff hi > theta); u = lo < 0 <= theta below it.
    s = Mux(v > hi, above, v > theta)
    return u, s


def neuron_combine(neuron, leaked, s_prev, current):
    """Return ``(u, s)`` from the leaked potential, the previous spike and the current.

    With :func:`neuron_leak` this is the whole update; engines may register between
    :func:`neuron_leak`, :func:`neuron_sum` and :func:`neuron_clamp` to shorten their paths.
    """
    return neuron_clamp(neuron, neuron_sum(neuron, leaked, s_prev, current))


def neuron_update(neuron, u_prev, s_prev, current):
    """Return ``(u, s)``: the next potential (``signed(potential_bits)``) and spike (1 bit).

    ``u_prev`` is the potential of the previous step, ``s_prev`` its spike (the delayed reset),
    ``current`` the step's synaptic current. Exact: the only saturation is the final clamp.
    """
    return neuron_combine(neuron, neuron_leak(neuron, u_prev), s_prev, current)


def neuron_step(neuron, u_prev, s_prev, current):
    """Integer reference of :func:`neuron_update` for one neuron: the golden model's step."""
    import numpy as np
    from models.golden import neuron_step as golden_step
    u, s = golden_step(np.array([u_prev]), np.array([s_prev]), np.array([current]), neuron)
    return int(u[0]), int(s[0])


class NeuronUpdate(wiring.Component):
    """One neuron update per cycle, registered: latency 1, throughput 1.

    Equal to :func:`neuron_step` (DESIGN.md section 3) for every input.

    Parameters
    ----------
    neuron : :class:`models.bundle.Neuron`
        Model, reset, threshold, potential width and leak.
    current_bits : :class:`int`
        Width of the signed synaptic current.

    Members
    -------
    i : ``In(stream.Signature(NeuronUpdate.Input))``
        ``potential`` (previous step), ``spike`` (previous step) and ``current``.
    o : ``Out(stream.Signature(NeuronUpdate.Output))``
        The updated ``potential`` and ``spike``.
    """
    def __init__(self, neuron, *, current_bits):
        check_neuron(neuron)
        if isinstance(current_bits, bool) or not isinstance(current_bits, int) \
                or current_bits < 2:
            raise TypeError(f"Current bits must be an integer greater than 1, "
                            f"not {current_bits!r}")
        self._neuron, self._current_bits = neuron, current_bits
        p = neuron.potential_bits
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "potential": signed(p), "spike": 1, "current": signed(current_bits)}))),
            "o": Out(stream.Signature(data.StructLayout({"potential": signed(p), "spike": 1}))),
        })

    @property
    def neuron(self):
        return self._neuron

    def elaborate(self, platform):
        m = Module()
        u, s = neuron_update(self._neuron, self.i.p.potential, self.i.p.spike,
                             self.i.p.current)
        # Register slice: take a new input whenever the output register is empty or draining.
        with m.If(~self.o.valid | self.o.ready):
            m.d.comb += self.i.ready.eq(1)
            m.d.sync += [
                self.o.valid.eq(self.i.valid),
                self.o.p.potential.eq(u),
                self.o.p.spike.eq(s),
            ]
        return m
