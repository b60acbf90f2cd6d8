"""The scoreboard and input sequencing of verif, in plain Python (no simulator)."""
import numpy as np
import pytest

from models import golden
from models.synth import random_events, random_linear_bundle
from verif.config import CosimConfig
from verif.scoreboard import Scoreboard, expected_steps, input_sequence
from verif.test_top import measure_cycles


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


def test_config_round_trip():
    cfg = CosimConfig(bundle="/b", result="/r.json", seed=5, in_gap=0.25, out_stall=0.5,
                      shuffle=True, zero_events=0.1, watchdog=77)
    assert CosimConfig.from_env(cfg.to_env()) == cfg
