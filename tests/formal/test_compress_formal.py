# amaranth: UnusedElaboratable=no
"""Formal: the spike compressor emits exactly the set bits of each step, ascending, framed.

Two steps of two words (``SpikeCompressor(width=4, n=8)`` and, for completion,
``width=2, n=4``): every value of every word, every pattern of input gaps (one cycle at most)
and output stalls (two cycles in a row at most, enough to fill the two-slot output queue). A
checker beside it records each word as it is accepted and, at every output transfer, requires
what DESIGN.md section 5 and ``compress_ref`` put there:

* a spike (``value = 1``) at a set bit of its step's words, above the step's previous spike,
  with no set bit skipped in between; ``last`` only on the step's final spike, after its end
  word, with no set bit above it;
* a step without spikes as one ``value = 0, last = 1`` event;
* ``first`` on the first event of a step whose word carried ``first``, on no other;
* no event after the last step, and (``width=2``) every step closed within 30 cycles.

Yosys checks every trace of that many cycles from reset (12 for ``width=4``, 30 for
``width=2``: the base case of ``sat -tempinduct``; an induction would need the compressor's
internal state tied to the checker's). Seeded bugs in the real sources (a dropped spike,
descending order, a missing ``last``) must fail; an unmutated copy, loaded the same way, passes.
"""
import pytest
from amaranth import *
from amaranth.hdl import Assert, Assume

from hdl import compress
from tests.formal.prover import mutant, prove

pytestmark = pytest.mark.formal

STEPS = 2
# (width, n, cycles from reset, longest stall, complete): every word value and every pattern
# of input gaps (one cycle at most) and output stalls (up to `longest stall` cycles in a row)
# for that many cycles; with `complete`, every step must also have closed by the end.
CASES = {"order and framing": (4, 8, 12, 2, False), "nothing missing": (2, 4, 30, 2, True)}


def compressor_proof(lib=compress, *, width, n, bound, longest_stall, complete):
    m = Module()
    words_per_step = n // width
    WIDTH, N, WORDS, BOUND = width, n, words_per_step, bound
    m.submodules.dut = dut = lib.SpikeCompressor(width=WIDTH, n=N)
    i, o = dut.i, dut.o
    m.d.comb += Assume(~ResetSignal())

    # The environment: the sweep's words, in order, under the input stream's own rules.
    taken = Signal(range(STEPS * WORDS + 1))
    held, gap = Signal(), Signal()
    stall = Signal(range(longest_stall + 1))
    held_payload = Signal.like(Value.cast(i.payload))
    m.d.sync += [held.eq(i.valid & ~i.ready), held_payload.eq(i.payload),
                 gap.eq(~i.valid & (taken < STEPS * WORDS)),
                 stall.eq(Mux(o.ready, 0, stall + 1))]
    with m.If(held):
        m.d.comb += [Assume(i.valid), Assume(Value.cast(i.payload) == held_payload)]
    position = Signal(range(WORDS))
    m.d.comb += position.eq(taken % WORDS)
    m.d.comb += [
        Assume(~i.valid | (taken < STEPS * WORDS)),
        Assume(i.p.index == position),
        Assume(i.p.end == (position == WORDS - 1)),
        Assume(~i.p.first | (position == 0)),
        Assume(~gap | i.valid | (taken == STEPS * WORDS)),   # gaps of one cycle at most
        Assume((stall < longest_stall) | o.ready),
    ]

    # The checker: words as accepted, per step.
    words = [Signal(WIDTH, name=f"word{k}") for k in range(STEPS * WORDS)]
    firsts = Signal(STEPS * WORDS)
    with m.If(i.valid & i.ready):
        m.d.sync += taken.eq(taken + 1)
        with m.Switch(taken):
            for k in range(STEPS * WORDS):
                with m.Case(k):
                    m.d.sync += [words[k].eq(i.p.bits), firsts[k].eq(i.p.first)]
    step = Signal(range(STEPS + 1))
    seen = Signal()                                  # an event of this step came already
    prev = Signal(range(N))
    bits = Signal(N)
    step_first = Signal()
    step_words_in = Signal()
    with m.Switch(step):
        for s in range(STEPS):
            with m.Case(s):
                m.d.comb += [bits.eq(Cat(*words[s * WORDS:(s + 1) * WORDS])),
                             step_first.eq(firsts[s * WORDS]),
                             step_words_in.eq(taken >= (s + 1) * WORDS)]
    addr = o.p.addr
    with m.If(o.valid & o.ready):
        m.d.comb += [
            Assert(step < STEPS, "an event after the last step"),
            Assert(o.p.first == (~seen & step_first), "first on the wrong event"),
        ]
        with m.If(o.p.value):
            m.d.comb += [
                Assert(bits.bit_select(addr, 1), "a spike at a bit that is not set"),
                Assert(~seen | (addr > prev), "spikes not strictly ascending"),
            ]
            for k in range(N):
                skipped = Mux(seen, k > prev, 1) & (k < addr) & bits[k]
                m.d.comb += Assert(~skipped, "a set bit skipped")
            with m.If(o.p.last):
                m.d.comb += Assert(step_words_in, "last before the step's end word")
                for k in range(N):
                    m.d.comb += Assert(~((k > addr) & bits[k]), "a set bit after last")
        with m.Else():
            m.d.comb += [Assert(o.p.last & ~seen, "a value = 0 event that is not a whole step"),
                         Assert(step_words_in & (bits == 0), "an empty marker in a step with "
                                                            "spikes")]
        m.d.sync += [seen.eq(~o.p.last), prev.eq(addr), step.eq(step + o.p.last)]

    if complete:                                     # every step closed by the end of the bound
        cycle = Signal(range(BOUND + 2))
        m.d.sync += cycle.eq(Mux(cycle == BOUND + 1, cycle, cycle + 1))
        with m.If(cycle == BOUND - 1):
            m.d.comb += Assert(step == STEPS, "a step not closed within the bound")
    return m, [i.valid, Value.cast(i.payload), o.ready, o.valid, Value.cast(o.payload)]


@pytest.mark.parametrize("case", list(CASES))
def test_compressor_proven(tmp_path, case):
    width, n, bound, longest_stall, complete = CASES[case]
    top, ports = compressor_proof(width=width, n=n, bound=bound, longest_stall=longest_stall,
                                  complete=complete)
    proof = prove(top, ports, tmp_path, maxsteps=bound, bounded=True)
    assert proof.proven, str(proof)


def _with_lsb(lib, old, new):
    """A mutant of hdl.compress whose lowest_set_bit comes from a mutant of hdl.lsb."""
    lsb = mutant("hdl.lsb", old, new)
    lib.lowest_set_bit = lsb.lowest_set_bit
    return lib


SEEDED = {
    # Control: a plain copy of the module, loaded the way the mutants are, must prove.
    "no bug (control)": lambda: mutant("hdl.compress", None, None),
    "drops a spike": lambda: mutant("hdl.compress", "rest = clear_lowest(w_bits)",
                                    "rest = clear_lowest(clear_lowest(w_bits))"),
    "descending order": lambda: _with_lsb(mutant("hdl.compress", None, None),
                                          "for b in reversed(range(len(value))):",
                                          "for b in range(len(value)):"),
    "no last on a step's final spike": lambda: mutant(
        "hdl.compress", "event.last.eq(1),", "event.last.eq(pend_valid == 0),"),
}


@pytest.mark.parametrize("bug", list(SEEDED))
def test_compressor_proof_fails_on_seeded_bug(tmp_path, bug):
    """Each seeded bug fails the proof; the unmutated copy (the control) passes it, over the
    eight cycles in which every seeded bug shows."""
    width, n, bound, longest_stall, complete = CASES["order and framing"]
    bound = 8
    top, ports = compressor_proof(SEEDED[bug](), width=width, n=n, bound=bound,
                                  longest_stall=longest_stall, complete=complete)
    proof = prove(top, ports, tmp_path, maxsteps=bound, bounded=True)
    if bug == "no bug (control)":
        assert proof.proven, str(proof)
        return
    assert not proof.proven, f"the seeded bug ({bug}) was not caught"
    assert "proof did fail" in proof.log


