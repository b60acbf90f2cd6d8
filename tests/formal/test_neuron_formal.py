# amaranth: UnusedElaboratable=no
"""Formal: the neuron arithmetic of ``hdl.neuron`` equals its integer reference, every input.

For small widths (potential 6 bits, current 7 bits, every reset mode and both leaks) Yosys's
SAT solver proves, for all inputs at once:

* ``neuron_leak`` equals the golden model's ``leak`` (:func:`models.golden.leak`), tabulated;
* ``neuron_sum`` equals DESIGN.md section 3's unclamped ``v`` for every leaked value, previous
  spike and current (the formula in wide, exact integer arithmetic);
* ``neuron_clamp`` equals ``clip(v, lo, hi)`` and its spike, taken beside the clamp from ``v``,
  equals the compare ``clip(v) > theta`` for every ``v`` the sum can give;
* the whole ``neuron_update`` equals :func:`models.golden.neuron_step`, tabulated over every
  ``(u, s, I)``.

Each proof is also run on a mutant of ``hdl/neuron.py`` with one seeded bug, and must fail.
"""
from dataclasses import replace

import numpy as np
import pytest
from amaranth import *
from amaranth.hdl import Assert

from hdl import neuron as neuron_module
from models import golden
from models.bundle import Leak, Neuron
from tests.formal.prover import mutant, prove

pytestmark = pytest.mark.formal

P, C = 6, 7                       # potential bits, current bits of the stage proofs
UP, UC = 5, 5                     # and of the tabulated update: 2**10 (u, I) pairs per spike
NEURONS = {
    "lif-subtract-mul": Neuron("lif", "subtract", 9, P, Leak("mul", beta=13, frac_bits=4)),
    "lif-zero-shift": Neuron("lif", "zero", 5, P, Leak("shift", shift=2)),
    "lapicque-zero-mul": Neuron("lapicque", "zero", 20, P, Leak("mul", beta=16, frac_bits=4)),
    "lif-none-shift": Neuron("lif", "none", 0, P, Leak("shift", shift=1)),
    "lapicque-subtract-mul": Neuron("lapicque", "subtract", 31, P,
                                    Leak("mul", beta=5, frac_bits=3)),
}


def _values(bits):
    return range(-2 ** (bits - 1), 2 ** (bits - 1))


def _table(m, key, entries, width):
    """A signal equal to ``entries[k]`` when ``key`` (signed) is ``k``: a tabulated reference."""
    out = Signal(signed(width))
    with m.Switch(key.as_unsigned()):
        for k, value in entries.items():
            with m.Case(k & (2 ** len(key) - 1)):
                m.d.comb += out.eq(value)
    return out


def leak_proof(neuron, lib=neuron_module):
    m = Module()
    u = Signal(signed(P))
    leaked = lib.neuron_leak(neuron, u)
    ref = {k: int(golden.leak(np.array([k]), neuron)[0]) for k in _values(P)}
    m.d.comb += Assert(leaked == _table(m, u, ref, P + 2))
    return m, [u]


def _sum_ref(neuron, leaked, s, cur):
    """DESIGN.md section 3's ``v`` from the leaked potential (leak(0) = 0 folds the lif zero
    reset's ``leak((1 - r) * u)`` into ``(1 - r) * leak(u)``); Amaranth widens every operation,
    so this is exact integer arithmetic."""
    keep = 1 - s                                 # (1 - r), a signed 0 or 1
    if neuron.reset == "subtract":
        return leaked + cur - s * neuron.threshold
    if neuron.reset == "zero" and neuron.model == "lif":
        return keep * leaked + cur
    if neuron.reset == "zero":
        return keep * (leaked + cur)
    return leaked + cur


def sum_proof(neuron, lib=neuron_module):
    m = Module()
    width = len(lib.neuron_leak(neuron, Signal(signed(P))))
    leaked, s, cur = Signal(signed(width)), Signal(), Signal(signed(C))
    v = lib.neuron_sum(neuron, leaked, s, cur)
    m.d.comb += Assert(v == _sum_ref(neuron, leaked, s, cur))
    return m, [leaked, s, cur]


def clamp_proof(neuron, lib=neuron_module):
    """Every ``v`` of the sum's width: ``u = clip(v)`` and ``s = u > theta``."""
    m = Module()
    width = len(lib.neuron_sum(neuron, lib.neuron_leak(neuron, Signal(signed(P))), Signal(),
                               Signal(signed(C))))
    v = Signal(signed(width))
    u, s = lib.neuron_clamp(neuron, v)
    clipped = Mux(v < neuron.lo, neuron.lo, Mux(v > neuron.hi, neuron.hi, v))
    m.d.comb += [Assert(u == clipped), Assert(s == (clipped > neuron.threshold))]
    return m, [v]


def update_proof(neuron, lib=neuron_module):
    """The whole update against the golden model's step, tabulated over every (u, I)."""
    m = Module()
    neuron = replace(neuron, potential_bits=UP, threshold=min(neuron.threshold, 2 ** (UP - 1) - 1))
    u_prev, s_prev, cur = Signal(signed(UP)), Signal(), Signal(signed(UC))
    u, s = lib.neuron_update(neuron, u_prev, s_prev, cur)
    us, cs = np.meshgrid(np.arange(-2 ** (UP - 1), 2 ** (UP - 1)),
                         np.arange(-2 ** (UC - 1), 2 ** (UC - 1)), indexing="ij")
    key = Cat(cur, u_prev).as_signed()
    for spike in (0, 1):
        gu, gs = golden.neuron_step(us.ravel(), np.full(us.size, spike), cs.ravel(), neuron)
        k = (us.ravel() << UC) | (cs.ravel() & (2 ** UC - 1))
        want = _table(m, key, dict(zip(k.tolist(), (gu * 2 + gs).tolist())), UP + 1)
        with m.If(s_prev == spike):
            m.d.comb += Assert(Cat(s, u) == want.as_unsigned())
    return m, [u_prev, s_prev, cur]


PROOFS = {"leak": leak_proof, "sum": sum_proof, "clamp": clamp_proof, "update": update_proof}


@pytest.mark.parametrize("stage", list(PROOFS))
@pytest.mark.parametrize("name", list(NEURONS))
def test_neuron_arithmetic_proven(tmp_path, stage, name):
    top, ports = PROOFS[stage](NEURONS[name])
    proof = prove(top, ports, tmp_path, maxsteps=1)
    assert proof.proven, str(proof)


# One seeded bug per stage, each in the real source of hdl/neuron.py.
SEEDED = {
    "leak": ("lif-subtract-mul", ">> lk.frac_bits", "+ 1 >> lk.frac_bits"),          # rounds
    "sum": ("lif-subtract-mul", "Mux(s_prev, neuron.threshold if theta is None else theta, 0)",
            "Mux(s_prev, (neuron.threshold if theta is None else theta) - 1, 0)"),    # reset
    "clamp": ("lif-zero-shift", "Mux(v < lo, lo,", "Mux(v < lo - 1, lo,"),           # wraps
    "update": ("lif-subtract-mul", "v > theta)", "v >= theta)"),                      # compare
}


@pytest.mark.parametrize("stage", list(SEEDED))
def test_neuron_proof_fails_on_seeded_bug(tmp_path, stage):
    name, old, new = SEEDED[stage]
    top, ports = PROOFS[stage](NEURONS[name], lib=mutant("hdl.neuron", old, new))
    proof = prove(top, ports, tmp_path, maxsteps=1)
    assert not proof.proven, f"the seeded bug {old!r} -> {new!r} was not caught"
    assert "proof did fail" in proof.log
