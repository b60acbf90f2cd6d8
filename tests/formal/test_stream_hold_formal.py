# amaranth: UnusedElaboratable=no
"""Formal: output streams hold ``valid`` and the payload until the transfer (DESIGN.md 5).

For each component the proof watches its ``o`` from the outside: after an edge with
``valid & ~ready``, ``valid`` is still high and the payload unchanged, whatever the inputs do
(their own stream rules and protocol assumed, reset assumed low). A register slice holds this by
induction from any state; the credit queue (``hdl.queue.ReadQueue``, the compressor's output
stage) holds it from reset for every trace up to the bound (an induction would need its internal
count invariants). Each proof also runs on a mutant with a seeded bug and must fail.

The engines (linear, conv, pool) are proven on tiny layers from reset for every trace up to a
bound long enough for their first output events under a stall: a vacuity check requires a
state with ``valid & ~ready`` to be reachable within the bound, so a proof cannot pass because
the output never moves. Their seeded bug: the output stage ignores ``ready`` and advances.
"""
import sys

import pytest
from amaranth import *
from amaranth.hdl import Assert, Assume
from amaranth.lib import wiring

from hdl import compress, conv, linear, link, neuron, pool, queue
from models.bundle import Leak, Neuron
from models.synth import random_csnn_bundle, random_linear_bundle
from tests.formal.prover import mutant, prove

pytestmark = pytest.mark.formal

BOUND = 10                          # cycles from reset, where no induction is made
NEURON = Neuron("lif", "subtract", 9, 6, Leak("mul", beta=13, frac_bits=4))


def hold_proof(dut, *, environment=None, vacuity=False):
    """``dut.o`` holds valid and payload while stalled; every input of ``dut`` is free.
    ``vacuity``: assert instead that ``dut.o`` is never stalled (a proof that must fail within
    the bound, showing the stall the real proof checks is reachable)."""
    m = Module()
    m.submodules.dut = dut
    o = dut.o
    payload = Value.cast(o.payload)
    stalled = Signal()
    held = Signal(len(payload))
    m.d.sync += [stalled.eq(o.valid & ~o.ready), held.eq(payload)]
    if vacuity:
        m.d.comb += Assert(~stalled, "stalled")
    with m.If(stalled & (0 if vacuity else 1)):
        m.d.comb += [Assert(o.valid, "valid fell before the transfer"),
                     Assert(payload == held, "payload changed before the transfer")]
    m.d.comb += Assume(~ResetSignal())
    if environment is not None:
        environment(m, dut)
    ports = [Value.cast(value) for _, member, value in dut.signature.flatten(dut)
             if member.flow == wiring.In and not isinstance(value, Const)]
    return m, ports + [o.valid, o.ready, payload]


def credit_environment(m, dut):
    """The ReadQueue's producer: issue only with room; data one cycle after its issue."""
    issued = Signal()
    m.d.sync += issued.eq(dut.issue)
    m.d.comb += [Assume(~dut.issue | dut.room), Assume(dut.i.valid == issued)]


LINEAR = random_linear_bundle(n_in=3, n_out=3, sparsity=0.3, seed=1, steps=2, weight_bits=3,
                              potential_bits=5).layers[0]
CSNN = random_csnn_bundle(in_shape=(1, 3, 3), channels=(1,), kernel=2, stride=1, padding=0,
                          pool=2, n_out=2, seed=1, steps=2, weight_bits=3,
                          potential_bits=6).layers
# Seeded bug of the engines: the output stage ignores backpressure (it always advances).
GATED = ("m.d.comb += [{o}.payload.eq({src}.payload), {o}.valid.eq({src}.valid), "
         "{src}.ready.eq(1)]")

CASES = {
    # name: (build(lib), seeded bug (module, old, new), induction?)
    "neuron_update": (lambda lib: lib.NeuronUpdate(NEURON, current_bits=7),
                      ("hdl.neuron", "with m.If(~self.o.valid | self.o.ready):",
                       "with m.If(1):"), True, None),
    "skid_buffer": (lambda lib: lib.SkidBuffer(8),
                    ("hdl.link", "with m.If(~self.o.valid | self.o.ready):", "with m.If(1):"),
                    True, None),
    "read_queue": (lambda lib: lib.ReadQueue(unsigned(4), depth=2),
                   ("hdl.queue", "pop = self.o.valid & self.o.ready", "pop = self.o.valid"),
                   False, credit_environment),
    "spike_compressor": (lambda lib: lib.SpikeCompressor(width=4, n=8),
                         ("hdl.queue", "pop = self.o.valid & self.o.ready", "pop = self.o.valid"),
                         False, None),
    "linear_engine": (lambda lib: lib.LinearEngine(LINEAR, value_shape=unsigned(1), lanes=1),
                      ("hdl.linear", "wiring.connect(m, compressor.o, wiring.flipped(self.o))",
                       GATED.format(o="self.o", src="compressor.o")), False, None),
    "conv_engine": (lambda lib: lib.Conv2dEngine(CSNN[0], value_shape=unsigned(1), lanes=1),
                    ("hdl.conv", "connect(m, out_map.o, flipped(self.o))",
                     GATED.format(o="self.o", src="out_map.o")), False, None),
    "pool_engine": (lambda lib: lib.SpikePool(CSNN[1]),
                    ("hdl.pool", "connect(m, compressor.o, flipped(self.o))",
                     GATED.format(o="self.o", src="compressor.o")), False, None),
}
MODULES = {"neuron_update": neuron, "skid_buffer": link, "read_queue": queue,
           "spike_compressor": compress, "linear_engine": linear, "conv_engine": conv,
           "pool_engine": pool}
# Bounded proofs: cycles from reset (the engines' first stalled output comes after 12-20
# cycles for the linear layer, under 12 for the pool and 30-45 for the convolution).
BOUNDS = {"linear_engine": 30, "pool_engine": 24, "conv_engine": 50}


def bound_of(name, induction):
    return 12 if induction else BOUNDS.get(name, BOUND)


@pytest.mark.parametrize("name", list(CASES))
def test_output_holds_until_accepted(tmp_path, name):
    build, _, induction, environment = CASES[name]
    top, ports = hold_proof(build(MODULES[name]), environment=environment)
    proof = prove(top, ports, tmp_path, maxsteps=bound_of(name, induction),
                  bounded=not induction)
    assert proof.proven, str(proof)


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if not case[2]])
def test_bounded_proof_reaches_a_stall(tmp_path, name):
    """The bounded proofs are not vacuous: within the bound the output can be stalled."""
    build, _, induction, environment = CASES[name]
    top, ports = hold_proof(build(MODULES[name]), environment=environment, vacuity=True)
    proof = prove(top, ports, tmp_path, maxsteps=bound_of(name, induction), bounded=True)
    assert not proof.proven, f"{name}: no stalled output within {bound_of(name, induction)} cycles"


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case[1]])
def test_hold_proof_fails_on_seeded_bug(tmp_path, name):
    build, (module, old, new), induction, environment = CASES[name]
    lib = mutant(module, old, new)
    if MODULES[name].__name__ != module:
        # The bug is in a module the component imports: a mutant of the component's own
        # module that uses the mutated one.
        outer = mutant(MODULES[name].__name__, None, None)
        for attr in dir(lib):
            if attr in vars(outer) and vars(outer)[attr] is getattr(sys.modules[module], attr,
                                                                     None):
                vars(outer)[attr] = getattr(lib, attr)
        lib = outer
    top, ports = hold_proof(build(lib), environment=environment)
    proof = prove(top, ports, tmp_path, maxsteps=bound_of(name, induction),
                  bounded=not induction)
    assert not proof.proven, f"the seeded bug {old!r} -> {new!r} in {module} was not caught"
    assert "proof did fail" in proof.log
