"""cocotb test: the generated top (DESIGN.md section 5) equals the golden model, every step.

Run through :mod:`verif.runner`, which passes a :class:`verif.config.CosimConfig` in the
environment. One run feeds every sample of the test vectors back to back (each opened by
``first``) with random ``valid`` gaps, takes the output with random ``ready`` stalls, checks
every output event with :class:`verif.scoreboard.Scoreboard`, and writes a JSON result with the
counts and the measured cycles. A watchdog ends the run when neither stream moves for a number
of cycles, so a handshake bug fails the test instead of hanging it. The sink enforces the
stream rules of DESIGN.md section 5 on ``o`` at every edge (``valid`` and payload held until the
transfer, no X/Z on ``valid``) and, once the final step has closed, watches the output for twice
the longest step with ``ready`` low: any ``valid`` then is an extra event and fails the run.

Cycles are clock edges. Total: from the first input transfer to the close of the final step.
Per sample: from the transfer of its first input event to the output
event with ``last`` that closes its final step. Per step: from the close of the previous step's
output (or the sample's first input, for step 0) to the close of this step's output, so the
steps of a sample add up to the sample. Step latency: from the transfer of the step's final input
event to the close of its output. Interval (the throughput figure): from the close of one
sample's final step to the close of the next one's; the engines take a sample's input while
earlier samples are still in the pipeline, so "per sample" of any sample but the first counts
time spent queued behind the others, and only the first is a latency (it includes the engines'
clearing of their memories after reset). They depend on the stalls; benchmark with
``in_gap = 0`` and ``out_stall = 0``.
"""
from __future__ import annotations

import json
import traceback

import cocotb
import numpy as np
from amaranth import signed, unsigned
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, RisingEdge

from hdl.event import EventLayout, SpikeLayout
from hdl.trace import trace_layout, traced_layers
from models import bundle as bundle_io
from models import golden
from verif.config import CosimConfig
from verif.scoreboard import (Scoreboard, expected_layer_steps, expected_steps, golden_output,
                              input_sequence)
from verif.streams import StreamSink, StreamSource, random_pauses

__all__ = ["default_watchdog", "load_stimulus", "measure_cycles", "tail_cycles"]


def load_stimulus(cfg, bundle):
    """``(events, samples, source)`` from ``cfg.events`` or the bundle's ``vectors.npz``."""
    if cfg.events:
        with np.load(cfg.events, allow_pickle=False) as npz:
            return np.asarray(npz["events"], dtype=np.int64).reshape(-1, 4), \
                int(npz["samples"]), "events"
    if bundle.vectors is None:
        raise ValueError(f"Bundle {cfg.bundle} has no vectors.npz and no events were given")
    vec = bundle.vectors
    # The stored golden spikes must agree with the golden model, else the vectors are stale.
    rows = golden.spike_rows(golden_output(bundle, vec.events, vec.samples))
    stored = np.asarray(vec.spikes, dtype=np.int64).reshape(-1, 3)
    if rows.shape != stored.shape or not np.array_equal(rows, stored):
        raise ValueError(f"vectors.npz spikes of {cfg.bundle} disagree with models.golden: "
                         f"{len(stored)} stored rows vs {len(rows)} computed")
    return vec.events, vec.samples, "vectors"


def default_watchdog(bundle):
    """Idle cycles allowed between transfers: generous for a dense sweep of every layer."""
    work = sum(layer.n_in * layer.n_out + layer.n_out for layer in bundle.neuron_layers)
    return 2000 + 4 * work


def tail_cycles(minimum, start, close_cycles, limit):
    """Cycles to watch the output after the final step: ``minimum`` plus twice the longest step
    (close to close, the first from ``start``), at most ``limit`` (the watchdog's patience)."""
    closes = [start] + [c for c in close_cycles if c is not None]
    longest = max((b - a for a, b in zip(closes, closes[1:])), default=0)
    return max(1, min(limit, minimum + 2 * longest))


def measure_cycles(in_cycles, in_index, close_cycles, samples, steps):
    """Cycles per sample, per step and step latency (see the module docstring)."""
    first_in = {}
    last_in = {}
    for cycle, (s, t) in zip(in_cycles, in_index):
        first_in.setdefault(s, cycle)
        last_in[(s, t)] = cycle
    per_sample, per_step, latency, last_close = [], [], [], []
    for s in range(samples):
        closes = close_cycles[s * steps:(s + 1) * steps]
        if len(closes) < steps or any(c is None for c in closes) or s not in first_in:
            break
        start = first_in[s]
        per_sample.append(closes[-1] - start)
        per_step.append([closes[0] - start] + [closes[t] - closes[t - 1]
                                               for t in range(1, steps)])
        latency.append([closes[t] - last_in[(s, t)] for t in range(steps)])
        last_close.append(closes[-1])
    flat = [c for row in per_step for c in row]
    interval = [b - a for a, b in zip(last_close, last_close[1:])]
    return {
        "per_sample": per_sample,
        "interval_per_sample": interval,
        "mean_interval_per_sample": float(np.mean(interval)) if interval else None,
        "first_sample_latency": per_sample[0] if per_sample else None,
        "per_step": per_step,
        "step_latency": latency,
        "mean_per_sample": float(np.mean(per_sample)) if per_sample else None,
        "mean_per_step": float(np.mean(flat)) if flat else None,
        "max_per_step": int(max(flat)) if flat else None,
    }


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


@cocotb.test()
async def top_matches_golden(dut):
    """Every output event of every step of every sample equals the golden model."""
    cfg = CosimConfig.from_env()
    result = {"passed": False, "timeout": False, "error": None, "config": vars(cfg),
              "stimulus": None, "samples": 0, "steps_per_sample": 0, "input_events": 0,
              "steps": 0, "steps_checked": 0, "spikes_expected": 0, "spikes_compared": 0,
              "events_received": 0, "mismatches": 0, "first_mismatch": None,
              "pending_inputs": 0, "cycles": {}, "trace": False, "hidden": {},
              "hidden_steps": 0, "hidden_steps_checked": 0, "hidden_spikes_compared": 0,
              "hidden_mismatches": 0}
    try:
        await _run(dut, cfg, result)
    except Exception:
        result["error"] = traceback.format_exc(limit=4)
        raise
    finally:
        if cfg.result:
            _write_json(cfg.result, result)
    assert not result["timeout"], result["error"]
    assert result["error"] is None, result["error"]
    assert result["pending_inputs"] == 0, f"{result['pending_inputs']} input events never taken"
    assert result["mismatches"] == 0, (
        f"{result['mismatches']} mismatches, first at {result['first_mismatch']}")
    assert result["steps_checked"] == result["steps"], "not every step was checked"
    assert result["hidden_steps_checked"] == result["hidden_steps"], (
        "not every step of every traced layer was checked")


def dut_predictions(outputs, samples, steps, n_out):
    """The readout of what the DUT sent: per sample, argmax of its output spike counts (ties to
    the lowest index); ``None`` for a sample whose steps did not all close."""
    counts = np.zeros((samples, n_out), dtype=np.int64)
    closed = 0
    for payload in outputs:
        sample = closed // steps
        if sample >= samples:
            break
        if payload["spike"] and payload["addr"] < n_out:
            counts[sample, payload["addr"]] += 1
        closed += payload["last"]
    return [int(np.argmax(counts[s])) if (s + 1) * steps <= closed else None
            for s in range(samples)]


def _has_trace(dut):
    """Whether the DUT has the trace port of :mod:`hdl.trace` (``gen --trace``)."""
    try:
        return dut.trace__valid is not None
    except AttributeError:
        return False


def _hidden_counts(result, bundle, hidden):
    """Add the traced layers' counts: per layer, and totals; their mismatches count in
    ``mismatches`` too (the first output mismatch is reported before a hidden one)."""
    result["trace"] = True
    result["hidden"] = {bundle.layers[index].name: {"index": index, **board.counts()}
                        for index, board in hidden.items()}
    result["hidden_steps"] = sum(board.total_steps for board in hidden.values())
    result["hidden_steps_checked"] = sum(board.steps_checked for board in hidden.values())
    result["hidden_spikes_compared"] = sum(board.spikes_compared for board in hidden.values())
    result["hidden_mismatches"] = sum(board.mismatches for board in hidden.values())
    result["mismatches"] += result["hidden_mismatches"]
    if result["first_mismatch"] is None:
        for index, board in hidden.items():
            if board.first_mismatch is not None:
                result["first_mismatch"] = {"layer": bundle.layers[index].name,
                                            **board.first_mismatch.to_json()}
                break


async def _run(dut, cfg, result):
    bundle = bundle_io.load(cfg.bundle)
    events, samples, origin = load_stimulus(cfg, bundle)
    steps = bundle.input.steps
    payloads, index = input_sequence(
        events, samples, steps, shuffle_seed=cfg.seed if cfg.shuffle else None,
        zero_events=cfg.zero_events, zero_seed=cfg.seed + 1)
    sb = Scoreboard(expected_steps(bundle, events, samples))
    traced = _has_trace(dut)
    hidden = {}
    if traced:
        hidden = {index: Scoreboard(steps) for index, steps in expected_layer_steps(
            bundle, events, samples, traced_layers(bundle)).items()}
    result.update({"stimulus": origin, "samples": samples, "steps_per_sample": steps,
                   "input_events": len(payloads), "n_in": bundle.input.size,
                   "n_out": bundle.n_out})

    spec = bundle.input
    value_shape = signed(spec.bits) if spec.signed else unsigned(spec.bits)
    i_layout = EventLayout(spec.size, value_shape)
    o_layout = SpikeLayout(bundle.n_out)

    dut.rst.value = 1
    Clock(dut.clk, cfg.period_ns, unit="ns").start(start_high=False)
    source = StreamSource(dut, "i", i_layout, pause=random_pauses(cfg.in_gap, cfg.seed * 2 + 11),
                          period_ns=cfg.period_ns)
    sink = StreamSink(dut, "o", o_layout, pause=random_pauses(cfg.out_stall, cfg.seed * 2 + 12),
                      period_ns=cfg.period_ns)
    finished = Event()

    def on_output(transfer):
        sb.push(transfer.payload, transfer.cycle)
        if all_done():
            finished.set()

    sink.on_transfer = on_output
    driver_errors = []

    def on_error(message):
        driver_errors.append(message)
        finished.set()

    source.on_error = sink.on_error = on_error
    sinks = [sink]
    if traced:
        trace_sink = StreamSink(dut, "trace", trace_layout(bundle),
                                pause=random_pauses(cfg.trace_stall, cfg.seed * 2 + 13),
                                period_ns=cfg.period_ns)

        def on_trace(transfer):
            board = hidden.get(transfer.payload["layer"])
            if board is None:
                on_error(f"trace: event {transfer.payload} at cycle {transfer.cycle} names "
                         f"layer {transfer.payload['layer']}, which is not traced "
                         f"(traced: {sorted(hidden)})")
                return
            board.push(transfer.payload, transfer.cycle)
            if all_done():
                finished.set()

        trace_sink.on_transfer = on_trace
        trace_sink.on_error = on_error
        sinks.append(trace_sink)

    def all_done():
        return sb.done and all(board.done for board in hidden.values())
    await ClockCycles(dut.clk, cfg.reset_cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    start_cycle = source.cycle()
    for payload in payloads:
        source.send_nowait(payload)

    limit = cfg.watchdog or default_watchdog(bundle)
    state = {"timeout": False}

    async def watchdog():
        last = None
        while True:
            await ClockCycles(dut.clk, limit)
            now = (len(source.transfers), *(len(s.transfers) for s in sinks))
            if now == last:
                state["timeout"] = True
                finished.set()
                return
            last = now

    dog = cocotb.start_soon(watchdog())
    await finished.wait()
    dog.cancel()
    tail = 0
    if not state["timeout"] and not driver_errors and all(
            board.steps_checked == board.total_steps for board in [sb, *hidden.values()]):
        # Every expected step has closed: from now on the output must stay quiet. `ready` is
        # held low and any `valid` is an extra event (the sink reports it), for as long as two
        # of the slowest steps take, so that even a whole extra step would show.
        tail = tail_cycles(cfg.tail_cycles, start_cycle, sb.step_close_cycles, limit)
        for s in sinks:
            s.close()
        await ClockCycles(dut.clk, tail)
    end_cycle = source.cycle()
    source.kill()
    for s in sinks:
        s.kill()
    sb.finish()
    for board in hidden.values():
        board.finish()

    result.update(sb.counts())
    if traced:
        _hidden_counts(result, bundle, hidden)
    result["dut_predictions"] = dut_predictions([t.payload for t in sink.transfers], samples,
                                                steps, bundle.n_out)
    result["pending_inputs"] = len(payloads) - len(source.transfers)
    result["watchdog_cycles"] = limit
    result["tail_cycles"] = tail
    if state["timeout"]:
        pos = sb.position
        result["timeout"] = True
        result["error"] = (f"watchdog: no transfer on i or o for {limit} cycles; "
                           f"{len(source.transfers)}/{len(payloads)} input events taken, "
                           f"{sb.steps_checked}/{sb.total_steps} output steps closed, "
                           f"waiting for sample/step {pos}")
    if driver_errors:
        result["error"] = "; ".join(driver_errors)
    in_cycles = [t.cycle for t in source.transfers]
    closes = [c for c in sb.step_close_cycles if c is not None]
    total = closes[-1] - in_cycles[0] if closes and in_cycles else None
    result["cycles"] = {"total": total, "simulated": end_cycle - start_cycle,
                        **measure_cycles(in_cycles, index, sb.step_close_cycles, samples, steps)}
    result["passed"] = (not result["timeout"] and not driver_errors and result["mismatches"] == 0
                        and result["pending_inputs"] == 0
                        and result["steps_checked"] == result["steps"]
                        and result["hidden_steps_checked"] == result["hidden_steps"])
