"""The scoreboard, the stream rules and the input sequencing of verif.

Most of it in plain Python (no simulator). The stream rules are also shown to catch deliberately
broken designs in both places they are enforced: the Amaranth testbenches (``tests.sim.run_sim``)
and the cocotb cosimulation of emitted Verilog (``verif.streams.StreamSink``), each with a correct
twin that must pass.
"""
# amaranth: UnusedElaboratable=no
import random

import numpy as np
import pytest
from amaranth import *
from amaranth.back import verilog
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from models import golden
from models.synth import random_events, random_linear_bundle
from tests.cosim.conftest import assert_exact
from tests.cosim.standin import Forwarder, identity_bundle
from tests.sim import output_streams, run_sim, stall_stream_get
from verif.config import CosimConfig
from verif.scoreboard import Scoreboard, StreamRules, expected_steps, input_sequence
from verif.test_top import measure_cycles, tail_cycles


def _events():
    return random_events(np.random.default_rng(4), samples=3, steps=5, n_in=12, density=0.2)


def test_input_sequence_matches_golden_stream():
    ev = _events()
    payloads, index = input_sequence(ev, 3, 5)
    mine = [(p["addr"] if p["value"] else 0, p["value"], p["last"], p["first"])
            for p in payloads]
    theirs = [(a if v else 0, v, last, first)
              for a, v, last, first in golden.input_stream(ev, 3, 5)]
    assert mine == theirs
    assert len(index) == len(payloads)


def test_input_sequence_framing():
    ev = np.array([[0, 0, 3, 1], [0, 0, 1, 1], [0, 2, 5, 1], [2, 1, 0, 1]])
    payloads, index = input_sequence(ev, 3, 3)
    # 3 samples x 3 steps; steps without events become one value=0 event.
    assert sum(p["last"] for p in payloads) == 9
    assert sum(p["first"] for p in payloads) == 3
    assert [(p["addr"], p["value"], p["last"], p["first"]) for p in payloads[:4]] == [
        (3, 1, 0, 1), (1, 1, 1, 0), (0, 0, 1, 0), (5, 1, 1, 0)]
    assert index[:4] == [(0, 0), (0, 0), (0, 1), (0, 2)]
    # Sample 1 has no events at all: three empty steps, the first one opening the sample.
    assert [(p["value"], p["last"], p["first"]) for p in payloads[4:7]] == [
        (0, 1, 1), (0, 1, 0), (0, 1, 0)]


def test_input_sequence_shuffle_and_zeros_keep_the_input():
    ev = _events()
    payloads, index = input_sequence(ev, 3, 5, shuffle_seed=9, zero_events=0.5, zero_seed=2)
    plain, _ = input_sequence(ev, 3, 5)
    assert len(payloads) > len(plain)
    assert any(p["value"] == 0 for p in payloads)
    rows = [(s, t, p["addr"], p["value"]) for p, (s, t) in zip(payloads, index)]
    dense = golden.events_to_dense(rows, 3, 5, 12)
    assert np.array_equal(dense, golden.events_to_dense(ev, 3, 5, 12))
    assert sum(p["last"] for p in payloads) == 15
    assert [p["first"] for p in payloads].count(1) == 3
    firsts = [i for i, p in enumerate(payloads) if p["first"]]
    assert all(index[i][1] == 0 and (i == 0 or payloads[i - 1]["last"]) for i in firsts)
    order = [(p["addr"], p["value"]) for p in payloads if p["value"]]
    assert order != [(p["addr"], p["value"]) for p in plain if p["value"]]


def test_input_sequence_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"^Event step index outside \[0, 2\)$"):
        input_sequence(np.array([[0, 2, 0, 1]]), 1, 2)


def _stream(expected):
    out = []
    for steps in expected:
        for spikes in steps:
            if spikes:
                out += [{"addr": a, "spike": 1, "last": int(k == len(spikes) - 1)}
                        for k, a in enumerate(spikes)]
            else:
                out.append({"addr": 7, "spike": 0, "last": 1})
    return out


EXPECTED = [[[1, 4, 6], [], [2]], [[], [0, 3], []]]


def _check(stream, expected=EXPECTED):
    sb = Scoreboard(expected)
    for k, payload in enumerate(stream):
        sb.push(payload, cycle=k)
    sb.finish()
    return sb


def test_scoreboard_accepts_the_golden_stream():
    sb = _check(_stream(EXPECTED))
    assert sb.done
    assert sb.counts()["mismatches"] == 0
    assert sb.counts()["spikes_compared"] == 6
    assert sb.counts()["steps_checked"] == 6
    assert sb.step_close_cycles == [2, 3, 4, 5, 7, 8]


@pytest.mark.parametrize("mutate, kind, where", [
    (lambda s: s[:1] + s[2:], "missing spike", (0, 0, 4)),                       # dropped
    (lambda s: [s[1], s[0]] + s[2:], "order", (0, 0, 1)),                       # swapped
    (lambda s: s[:3] + [{"addr": 5, "spike": 1, "last": 1}] + s[4:], "extra spike",
     (0, 1, 5)),                                                               # empty step fires
    (lambda s: s[:2] + [dict(s[2], last=0)] + s[3:], "framing", (0, 0, None)),   # lost `last`
    (lambda s: s + [{"addr": 0, "spike": 0, "last": 1}], "extra output", (-1, -1, 0)),
    (lambda s: s[:-1], "missing steps", (1, 2, None)),
    (lambda s: s[:4] + [{"addr": 2, "spike": 1, "last": 0}, {"addr": 2, "spike": 0, "last": 1}]
     + s[5:], "framing", (0, 2, None)),
    (lambda s: s[:1] + [dict(s[1], addr=5)] + s[2:], "missing spike", (0, 0, 4)),
])
def test_scoreboard_catches(mutate, kind, where):
    sb = _check(mutate(_stream(EXPECTED)))
    assert sb.mismatches > 0
    first = sb.first_mismatch
    assert (first.kind, (first.sample, first.step, first.addr)) == (kind, where), str(first)


@pytest.mark.parametrize("cap", [3, 1000])
def test_scoreboard_gives_up_on_a_runaway_output(cap):
    # Events that never close a step must end the run (done), not wait for `last` forever.
    sb = Scoreboard(EXPECTED, max_mismatches=cap)
    for pushed in range(1, 1000):  # noqa: B007 (read after the loop)
        sb.push({"addr": 1, "spike": 1, "last": 0})
        if sb.done:
            break
    assert sb.done and pushed < 50
    assert sb.mismatches >= min(cap, 6)
    assert sb.first_mismatch.kind == "framing"


def test_expected_steps_from_golden():
    bundle = random_linear_bundle(n_in=12, n_out=8, sparsity=0.5, seed=2, steps=5)
    ev = _events()
    exp = expected_steps(bundle, ev, 3)
    out = golden.run(bundle, golden.events_to_dense(ev, 3, 5, 12)).output
    rows = [(s, t, a) for s in range(3) for t in range(5) for a in exp[s][t]]
    assert rows == [tuple(r) for r in golden.spike_rows(out)]
    assert len(rows) > 0


def test_measure_cycles_adds_up():
    # Two samples of two steps; input transfers at the given cycles, outputs close at others.
    index = [(0, 0), (0, 0), (0, 1), (1, 0), (1, 1)]
    cycles = measure_cycles([10, 11, 15, 40, 41], index, [20, 30, 50, 61], 2, 2)
    assert cycles["per_sample"] == [20, 21]
    assert cycles["per_step"] == [[10, 10], [10, 11]]
    assert cycles["step_latency"] == [[9, 15], [10, 20]]
    assert cycles["mean_per_step"] == 10.25
    # Throughput: sample 1 closes 31 cycles after sample 0; the first sample's latency is 20.
    assert cycles["interval_per_sample"] == [31] and cycles["mean_interval_per_sample"] == 31
    assert cycles["first_sample_latency"] == 20


def test_measure_cycles_queued_sample():
    # Sample 1's input is taken while sample 0 still runs: its per-sample figure counts the
    # wait, the interval does not.
    index = [(0, 0), (0, 1), (1, 0), (1, 1)]
    cycles = measure_cycles([0, 1, 2, 3], index, [100, 200, 300, 400], 2, 2)
    assert cycles["per_sample"] == [200, 398]
    assert cycles["interval_per_sample"] == [200]


def test_config_round_trip():
    cfg = CosimConfig(bundle="/b", result="/r.json", seed=5, in_gap=0.25, out_stall=0.5,
                      shuffle=True, zero_events=0.1, watchdog=77)
    assert CosimConfig.from_env(cfg.to_env()) == cfg


def test_tail_cycles():
    # Twice the longest step (close to close, the first one from the start) on top of the
    # minimum, within the watchdog's limit.
    assert tail_cycles(64, 100, [110, 150, 160], 10_000) == 64 + 2 * 40
    assert tail_cycles(64, 0, [5000], 3000) == 3000
    assert tail_cycles(64, 0, [], 3000) == 64


# The stream rules (DESIGN.md section 5), edge by edge: (valid, ready, payload) per cycle.
HOLDS = [(1, 0, 5), (1, 0, 5), (1, 1, 5), (0, 0, None), (1, 1, 6), (1, 0, 7), (1, 1, 7)]


def _rules(edges, close_after=None):
    rules = StreamRules("o")
    for cycle, (valid, ready, payload) in enumerate(edges):
        if close_after is not None and cycle == close_after + 1:
            rules.close(close_after)
        message = rules.edge(cycle, bool(valid), bool(ready), payload)
        if message is not None:
            return message
    return None


def test_stream_rules_accept_held_offers():
    assert _rules(HOLDS) is None
    assert _rules(HOLDS + [(0, 0, None)] * 5, close_after=len(HOLDS) - 1) is None


@pytest.mark.parametrize("edges, close_after, message", [
    # valid falls after a stalled edge, the payload never taken
    (HOLDS[:1] + [(0, 1, None)], None,
     r"^o: valid fell at cycle 1 before the transfer of 5, offered since cycle 0 "),
    # the payload changes while stalled (taken at the next edge, as the old sink would have)
    (HOLDS[:2] + [(1, 1, 9)], None,
     r"^o: payload changed at cycle 2 from 5 to 9 while waiting for ready since cycle 0 "),
    # an event after the final expected step, even one that is not taken
    (HOLDS + [(0, 0, None), (1, 0, 8)], len(HOLDS) - 1,
     r"^o: extra event 8 offered at cycle 8, 2 cycles after the final expected step closed$"),
])
def test_stream_rules_catch(edges, close_after, message):
    assert _rules(edges, close_after) is not None
    import re
    assert re.match(message, _rules(edges, close_after)), _rules(edges, close_after)


class OutputStage(wiring.Component):
    """A register slice on the ``o`` stream of ``inner``, correct or with one broken rule.

    ``bug``: ``None`` (correct), ``"drop_valid"`` (while stalled, ``valid`` falls every other
    cycle and comes back with the same payload: nothing is lost, the data is right),
    ``"change_payload"`` (while ``ready`` is low the payload shows its lowest bit flipped; the
    transfer itself carries the right one), ``"extra_event"`` (``delay`` idle cycles after its
    last transfer it offers one more event, ``last`` only, once). Every bug delivers exactly the
    correct data through ``valid & ready`` up to the end, so a sink that only samples transfers
    would pass it.
    """
    BUGS = (None, "drop_valid", "change_payload", "extra_event")

    def __init__(self, inner, *, bug=None, delay=40):
        if bug not in self.BUGS:
            raise ValueError(f"Bug must be one of {self.BUGS}, not {bug!r}")
        self._inner, self._bug, self._delay = inner, bug, delay
        members = {"o": Out(stream.Signature(inner.o.payload.shape()))}
        if "i" in inner.signature.members:
            members["i"] = In(stream.Signature(inner.i.payload.shape()))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = self._inner
        if "i" in self.signature.members:
            connect(m, flipped(self.i), inner.i)
        full = Signal()
        held = Signal(inner.o.payload.shape())
        out = self.o.valid & self.o.ready
        with m.If(out):
            m.d.sync += full.eq(0)
        m.d.comb += inner.o.ready.eq(~full | out)
        with m.If(inner.o.valid & inner.o.ready):
            m.d.sync += [full.eq(1), held.eq(inner.o.payload)]

        valid, payload = full, held.as_value()
        if self._bug == "drop_valid":
            blink = Signal()
            m.d.sync += blink.eq(full & ~self.o.ready & ~blink)
            valid = full & ~blink
        elif self._bug == "change_payload":
            payload = Mux(self.o.ready, payload, payload ^ 1)
        elif self._bug == "extra_event":
            idle = Signal(range(self._delay + 2))
            armed, fired = Signal(), Signal()
            with m.If(out):
                m.d.sync += [idle.eq(0), armed.eq(1)]
            with m.Elif(idle <= self._delay):
                m.d.sync += idle.eq(idle + 1)
            with m.If(armed & ~fired & ~full & (idle == self._delay) & ~inner.o.valid):
                extra = inner.o.payload.shape().const({"last": 1})
                m.d.sync += [full.eq(1), held.eq(extra), fired.eq(1)]
        m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(payload)]
        return m


class Counter(wiring.Component):
    """Offers ``0, 1, ..., n - 1`` on ``o`` (``last`` on the final one), then nothing."""
    def __init__(self, n):
        self._n = n
        super().__init__({"o": Out(stream.Signature(
            data.StructLayout({"value": 8, "last": 1})))})

    def elaborate(self, platform):
        m = Module()
        count = Signal(range(self._n + 1))
        m.d.comb += [self.o.valid.eq(count < self._n), self.o.p.value.eq(count),
                     self.o.p.last.eq(count == self._n - 1)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += count.eq(count + 1)
        return m


def rtl_counter(bug, *, n=30, stall=0.5, seed=3):
    dut = OutputStage(Counter(n), bug=bug, delay=10)
    got = []

    async def consumer(ctx):
        rng = random.Random(seed)
        for _ in range(n):
            got.append((await stall_stream_get(ctx, dut.o, rng, stall)).value)

    run_sim(dut, [consumer], watchdog_cycles=40 * n + 200, name="counter")
    return got


def test_run_sim_watches_every_output_stream():
    assert list(output_streams(OutputStage(Counter(4)))) == ["o"]
    assert sorted(output_streams(OutputStage(Forwarder(8)))) == ["o"]
    from hdl.conv_stages import SpikeBroadcast
    assert sorted(output_streams(SpikeBroadcast(8, depth=4, readers=3))) == [
        "o[0]", "o[1]", "o[2]"]


def test_run_sim_passes_a_correct_stream():
    assert rtl_counter(None) == list(range(30))


@pytest.mark.parametrize("bug, message", [
    ("drop_valid", r"^o: valid fell at cycle \d+ before the transfer of \{'value': \d+, "
                   r"'last': [01]\}, offered since cycle \d+ \(stream rule: valid holds"),
    ("change_payload", r"^o: payload changed at cycle \d+ from \{'value': \d+, 'last': [01]\} "
                       r"to \{'value': \d+, 'last': [01]\} while waiting for ready"),
    ("extra_event", r"^o: extra event \{'value': 0, 'last': 1\} offered at cycle \d+, "
                    r"\d+ cycles after the final expected step closed$"),
])
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_run_sim_catches_a_broken_stream(bug, message):
    with pytest.raises(AssertionError, match=message):
        rtl_counter(bug)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_run_sim_tail_can_be_skipped():
    # A test that leaves events in the DUT on purpose opts out of the watch after the end.
    dut = OutputStage(Counter(8))

    async def consumer(ctx):
        for _ in range(3):
            await stall_stream_get(ctx, dut.o, random.Random(0), 0.0)

    with pytest.raises(AssertionError, match=r"^o: extra event \{'value': 3, 'last': 0\}"):
        run_sim(dut, [consumer], watchdog_cycles=500)
    run_sim(dut, [consumer], watchdog_cycles=500, tail_cycles=0)


# The same broken output stages around the cosimulation kit's stand-in top, as Verilog under
# Icarus: the sink and the scoreboard must pass the correct one and name the broken rule.
N, STEPS, SAMPLES = 16, 5, 3


def _standin_stimulus():
    ev = random_events(np.random.default_rng(1), samples=SAMPLES, steps=STEPS, n_in=N,
                       density=0.3)
    return ev[np.lexsort((ev[:, 2], ev[:, 1], ev[:, 0]))]  # ascending addr: forwardable as is


def _broken_top(bug):
    return verilog.convert(OutputStage(Forwarder(N), bug=bug, delay=80), name="snn_top",
                           emit_src=False)


def test_cosim_passes_the_correct_output_stage(cosim):
    result = cosim(identity_bundle(N, steps=STEPS), _standin_stimulus(), SAMPLES,
                   verilog=_broken_top(None), seed=2, in_gap=0.3, out_stall=0.5)
    assert_exact(result)
    # The watch after the end outlasts the delay of the extra event below.
    assert result["tail_cycles"] > 80 + 10


@pytest.mark.parametrize("bug, message", [
    ("drop_valid", r"^o: valid fell at cycle \d+ before the transfer of \{'addr': \d+, "
                   r"'spike': [01], 'last': [01]\}, offered since cycle \d+"),
    ("change_payload", r"^o: payload changed at cycle \d+ from \{'addr': \d+, 'spike': [01], "
                       r"'last': [01]\} to \{'addr': \d+, "),
    ("extra_event", r"^o: extra event \{'addr': 0, 'spike': 0, 'last': 1\} offered at cycle "
                    r"\d+, \d+ cycles after the final expected step closed$"),
])
def test_cosim_catches_a_broken_output_stage(cosim, bug, message):
    result = cosim(identity_bundle(N, steps=STEPS), _standin_stimulus(), SAMPLES,
                   verilog=_broken_top(bug), seed=2, in_gap=0.3, out_stall=0.5,
                   expect_pass=False)
    assert not result["passed"]
    assert result["error"] is not None
    import re
    assert re.match(message, result["error"]), result["error"]
    # The data itself was right: every transfer before the violation matched the golden model
    # (the steps after it are missing only because the run stopped there).
    first = result["first_mismatch"]
    assert first is None or first["kind"] == "missing steps", first
