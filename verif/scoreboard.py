"""Input event sequences and the output scoreboard of the generated top (DESIGN.md section 5).

:func:`input_sequence` turns test vectors (input events ``[n, 4]`` rows ``(sample, step, addr,
value)``) into the payload dicts of the top's ``i`` stream: ``first`` on a sample's first event,
``last`` on each step's final event, an empty step as one ``value = 0`` event carrying ``last``
(and ``first`` where due); optionally shuffled within each step and salted with extra
``value = 0`` events, both of which the contract says must not change the result.

:func:`expected_steps` runs the golden model (:func:`models.golden.run`) and lists, for every step
of every sample, the ascending addresses of the last layer's spikes.

:class:`Scoreboard` consumes the top's ``o`` stream payload dicts one by one and checks them
against that list, framed by ``last``: each step must be its spikes in strictly ascending
``addr`` with ``spike = 1`` and ``last`` on the final one, or, for a step without spikes, exactly
one ``spike = 0`` event with ``last``. Differences are counted per event (missing, extra, out of
order, bad framing); the first one is kept with its sample, step and address.

:class:`StreamRules` checks the handshake of an output stream edge by edge, whatever its
payload means: once ``valid`` is high it holds, with the same payload, until the transfer
(``valid & ready``), and after :meth:`StreamRules.close` (the final expected step) any ``valid``
is an extra event. The cocotb sink (:class:`verif.streams.StreamSink`) and the Amaranth
testbenches (:func:`tests.sim.run_sim`) both use it, so both enforce the same rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models import golden

__all__ = ["Mismatch", "Scoreboard", "StreamRules", "expected_layer_steps", "expected_steps",
           "golden_output", "input_sequence", "steps_of"]


def input_sequence(events, samples, steps, *, shuffle_seed=None, zero_events=0.0,
                   zero_seed=0):
    """Build the input stream for ``samples`` x ``steps`` from event rows.

    Parameters
    ----------
    events : array ``[n, 4]``
        Rows ``(sample, step, addr, value)``; any order (they are grouped by sample and step,
        keeping the given order within a step).
    samples, steps : :class:`int`
        Every sample has ``steps`` steps, whether or not it has events.
    shuffle_seed : :class:`int` or ``None``
        If given, shuffle the events of every step with this seed.
    zero_events : :class:`float`
        Expected number of extra ``value = 0`` events per real event (random addresses),
        inserted at random positions within the step.
    zero_seed : :class:`int`
        Seed for the extra events.

    Returns
    -------
    ``(payloads, index)``: the payload dicts (``addr``, ``value``, ``last``, ``first``) and a
    parallel list of ``(sample, step)``.
    """
    ev = np.asarray(events, dtype=np.int64).reshape(-1, 4)
    if len(ev):
        if ev[:, 0].min() < 0 or ev[:, 0].max() >= samples:
            raise ValueError(f"Event sample index outside [0, {samples})")
        if ev[:, 1].min() < 0 or ev[:, 1].max() >= steps:
            raise ValueError(f"Event step index outside [0, {steps})")
    order = np.argsort(ev[:, 0] * steps + ev[:, 1], kind="stable")
    ev = ev[order]
    keys = ev[:, 0] * steps + ev[:, 1]
    bounds = np.searchsorted(keys, np.arange(samples * steps + 1))
    shuffle_rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    zero_rng = np.random.default_rng(zero_seed)
    n_addr = int(ev[:, 2].max()) + 1 if len(ev) else 1
    payloads, index = [], []
    for s in range(samples):
        for t in range(steps):
            k = s * steps + t
            rows = [(int(a), int(v)) for a, v in ev[bounds[k]:bounds[k + 1], 2:4]]
            if shuffle_rng is not None and len(rows) > 1:
                rows = [rows[i] for i in shuffle_rng.permutation(len(rows))]
            if zero_events > 0:
                extra = int(zero_rng.poisson(zero_events * max(1, len(rows))))
                for _ in range(extra):
                    pos = int(zero_rng.integers(0, len(rows) + 1))
                    rows.insert(pos, (int(zero_rng.integers(0, n_addr)), 0))
            if not rows:
                rows = [(0, 0)]                       # an empty step: one value = 0 event
            for j, (a, v) in enumerate(rows):
                payloads.append({"addr": a, "value": v, "last": int(j == len(rows) - 1),
                                 "first": int(t == 0 and j == 0)})
                index.append((s, t))
    return payloads, index


def golden_output(bundle, events, samples):
    """The golden last-layer spikes ``[samples, steps, n_out]`` for the given events."""
    dense = golden.events_to_dense(events, samples, bundle.input.steps, bundle.input.size)
    return golden.run(bundle, dense).output


def expected_steps(bundle, events, samples):
    """Per sample, per step, the ascending spike addresses of the golden last layer."""
    return steps_of(golden_output(bundle, events, samples))


def steps_of(spikes):
    """Spikes ``[S, T, n]`` -> per sample, per step, the ascending spike addresses."""
    return [[[int(a) for a in np.flatnonzero(spikes[s, t])] for t in range(spikes.shape[1])]
            for s in range(spikes.shape[0])]


def expected_layer_steps(bundle, events, samples, layers):
    """``{index: steps}``: :func:`steps_of` for each of ``bundle.layers[index]`` in ``layers``
    (one golden run), for checking a trace port."""
    dense = golden.events_to_dense(events, samples, bundle.input.steps, bundle.input.size)
    run = golden.run(bundle, dense)
    return {index: steps_of(run.spikes[index]) for index in layers}


@dataclass
class Mismatch:
    """One difference between the hardware's output and the golden model."""
    sample: int
    step: int
    addr: int | None
    kind: str
    detail: str

    def __str__(self):
        where = f"sample {self.sample}, step {self.step}"
        if self.addr is not None:
            where += f", addr {self.addr}"
        return f"{where}: {self.kind}: {self.detail}"

    def to_json(self):
        return {"sample": self.sample, "step": self.step, "addr": self.addr, "kind": self.kind,
                "detail": self.detail}


@dataclass
class Scoreboard:
    """Check output payload dicts against the golden steps, in stream order.

    Feed it with :meth:`push` (one payload dict, optionally with the cycle it arrived at).
    It is :attr:`done` when every expected step was closed by ``last``, or when it gave up after
    ``max_mismatches`` mismatches. Events after the final step count as mismatches.
    """
    expected: list
    max_mismatches: int = 1000
    steps_checked: int = 0
    spikes_compared: int = 0
    events_received: int = 0
    mismatches: int = 0
    first_mismatch: Mismatch | None = None
    step_close_cycles: list = field(default_factory=list)
    _buffer: list = field(default_factory=list)
    _s: int = 0
    _t: int = 0

    def __post_init__(self):
        self._flat = [(s, t) for s, steps in enumerate(self.expected) for t in range(len(steps))]
        self.total_steps = len(self._flat)
        self.expected_spikes = sum(len(a) for steps in self.expected for a in steps)

    @property
    def done(self):
        return self.steps_checked >= self.total_steps or self.mismatches >= self.max_mismatches

    @property
    def position(self):
        """``(sample, step)`` the next output event belongs to, or ``None`` after the end."""
        if self.steps_checked >= self.total_steps:
            return None
        return self._flat[self.steps_checked]

    def _miss(self, sample, step, addr, kind, detail, count=1):
        self.mismatches += count
        if self.first_mismatch is None:
            self.first_mismatch = Mismatch(sample, step, addr, kind, detail)

    def push(self, payload, cycle=None):
        """Check one output payload dict (``addr``, ``spike``, ``last``)."""
        self.events_received += 1
        pos = self.position
        if pos is None:
            self._miss(-1, -1, payload.get("addr"), "extra output",
                       f"event {payload} after the final step")
            return
        self._buffer.append(payload)
        if payload["last"]:
            self._close_step(*pos, self._buffer, cycle)
            self._buffer = []
        elif len(self._buffer) > len(self.expected[pos[0]][pos[1]]) + 1:
            # A step longer than any correct one: report it now instead of waiting for `last`,
            # so that an output that never closes its step still fails fast.
            self._close_step(*pos, self._buffer, cycle, unterminated=True)
            self._buffer = []

    def _close_step(self, s, t, events, cycle, unterminated=False):
        want = self.expected[s][t]
        self.steps_checked += 1
        self.step_close_cycles.append(cycle)
        self.spikes_compared += len(want)
        if unterminated:
            self._miss(s, t, events[-1]["addr"], "framing",
                       f"{len(events)} events without `last` where {len(want)} spikes are "
                       f"expected")
            return
        if not want:
            if len(events) == 1 and events[0]["spike"] == 0:
                return
            spikes = [e["addr"] for e in events if e["spike"]]
            if spikes:
                self._miss(s, t, spikes[0], "extra spike",
                           f"spikes at {spikes} in a step where the golden model has none",
                           len(spikes))
            else:
                self._miss(s, t, None, "framing",
                           f"{len(events)} empty-step markers where one is expected")
            return
        bad = 0
        first = None
        markers = [e for e in events if not e["spike"]]
        if markers:
            bad += len(markers)
            first = first or (None, "framing",
                              f"empty-step marker in a step with spikes {want}")
        got = [e["addr"] for e in events if e["spike"]]
        for i in range(1, len(got)):
            if got[i] <= got[i - 1]:
                bad += 1
                first = first or (got[i], "order",
                                  f"addr {got[i]} after {got[i - 1]}: not strictly ascending")
        want_set, got_set = set(want), set(got)
        missing = sorted(want_set - got_set)
        extra = sorted(got_set - want_set)
        if missing:
            bad += len(missing)
            first = first or (missing[0], "missing spike",
                              f"golden spikes {missing} not in output {got}")
        if extra:
            bad += len(extra)
            first = first or (extra[0], "extra spike",
                              f"output spikes {extra} not in golden {want}")
        if bad:
            self._miss(s, t, first[0], first[1], first[2], bad)

    def finish(self):
        """Account for steps that never arrived; call once the output has been drained."""
        if self._buffer:
            pos = self.position
            self._miss(pos[0], pos[1], self._buffer[-1]["addr"], "framing",
                       f"{len(self._buffer)} trailing events without `last`")
        missing = self.total_steps - self.steps_checked
        if missing > 0 and self.mismatches < self.max_mismatches:
            s, t = self._flat[self.steps_checked]
            self._miss(s, t, None, "missing steps",
                       f"{missing} of {self.total_steps} steps never closed by `last`", missing)

    def counts(self):
        """Summary dict for reports."""
        return {
            "steps": self.total_steps,
            "steps_checked": self.steps_checked,
            "spikes_expected": self.expected_spikes,
            "spikes_compared": self.spikes_compared,
            "events_received": self.events_received,
            "mismatches": self.mismatches,
            "first_mismatch": None if self.first_mismatch is None
            else self.first_mismatch.to_json(),
        }


class StreamRules:
    """The transfer rules of one output stream (DESIGN.md section 5), checked edge by edge.

    Feed :meth:`edge` with what the DUT showed at every rising clock edge: ``valid``, ``ready``
    and the payload (any value that compares equal when the bits are equal, e.g. an integer or
    the simulator's bit string, so X bits count too). It returns a message for the first
    violation and keeps it in :attr:`violation`; later edges are ignored.

    * ``valid`` holds from the first edge it is high until the transfer: an edge with ``valid``
      low after one with ``valid & ~ready`` is a violation.
    * The payload holds as well: it must not change between an edge with ``valid & ~ready``
      and the next one.
    * After :meth:`close` (everything expected has arrived) ``valid`` stays low: any edge with
      ``valid`` high is an extra event, taken or not.

    Parameters
    ----------
    name : :class:`str`
        The stream, as the messages name it (``o``).
    describe : callable, optional
        Turns a payload into the text the messages show (e.g. a layout's field dict).
    """
    def __init__(self, name, describe=None):
        self.name = name
        self._describe = describe if describe is not None else repr
        self.violation = None
        self.closed_at = None
        self._held = None                   # (payload, cycle offered) while stalled

    def reset(self):
        """Forget a pending offer (the DUT was reset)."""
        self._held = None

    def close(self, cycle):
        """The final expected event has been taken: from now on ``valid`` must stay low."""
        self.closed_at = cycle
        self._held = None

    def _text(self, payload):
        try:
            return self._describe(payload)
        except (TypeError, ValueError):
            return repr(payload)

    def edge(self, cycle, valid, ready, payload):
        """Check one clock edge; return the violation message or ``None``."""
        if self.violation is not None:
            return None
        message = None
        if self.closed_at is not None and valid:
            message = (f"{self.name}: extra event {self._text(payload)} offered at cycle "
                       f"{cycle}, {cycle - self.closed_at} cycles after the final expected step "
                       f"closed")
        elif self._held is not None:
            held, since = self._held
            if not valid:
                message = (f"{self.name}: valid fell at cycle {cycle} before the transfer of "
                           f"{self._text(held)}, offered since cycle {since} (stream rule: "
                           f"valid holds until valid & ready)")
            elif payload != held:
                message = (f"{self.name}: payload changed at cycle {cycle} from "
                           f"{self._text(held)} to {self._text(payload)} while waiting for ready "
                           f"since cycle {since} (stream rule: the payload holds until the "
                           f"transfer)")
        if message is not None:
            self.violation = message
            return message
        if valid and not ready:
            if self._held is None:
                self._held = (payload, cycle)
        else:
            self._held = None
        return None
