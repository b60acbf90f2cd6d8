"""Co-design exploration: model and hardware parameters together, on Dask.

``python -m models dse`` trains one network per model point (neuron model, beta, threshold,
encoding, surrogate and slope, sparsity, weight bits), quantizes it to the golden model, and
prices it on every hardware configuration (lanes per layer, weight format, neuron updates per
cycle) with the engines' cycle model (:mod:`hdl.cycles` through :func:`gen.make_report`). A
sampled subset of (model, hardware) pairs is also measured: cycles in cosimulation of the
emitted Verilog (the cycle model's error) and logic cells from ``boards fit``.

Every point is a task on Dask's distributed scheduler: a local cluster on this machine by
default, or any running scheduler (``--scheduler tcp://HOST:8786``), unchanged. Results are cached
on disk by their parameters (``OUT/cache/<key>.json``, bundles in ``OUT/bundles/<key>``), so a
killed sweep resumes where it stopped and a widened grid computes only its new points.

The figures of a point:

* accuracy of the float network and of the golden model on the test samples, their agreement;
* golden spikes per inference, total and per layer; synaptic operations per inference;
* per hardware configuration: cycles per inference (cycle model, mean over the test samples
  used), the lower bound of DESIGN.md section 7, inferences/s at ``--clock``;
* sampled: measured cycles per inference (Icarus, no stalls) and the model's error; logic
  cells, block RAM and DSP on ``--board`` (``boards fit``), inferences/s per 1,000 logic cells.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

__all__ = ["DSE_VERSION", "HardwareConfig", "model_grid", "point_key", "evaluate_model",
           "measure_pair", "run_dse", "balanced_lanes", "pareto_front"]

DSE_VERSION = 2     # 2: input gain for direct input, threshold-scaled initial weights
EST_SAMPLES = 200          # test samples the cycle model is averaged over (golden activity)


class HardwareConfig(dict):
    """``{"lanes": int | [int per neuron layer], "fmt": str | None, "updates": int}``, with a
    label such as ``L2`` or ``L2,1 csr U2``."""
    @property
    def label(self):
        lanes = self["lanes"]
        text = "L" + (",".join(map(str, lanes)) if isinstance(lanes, list) else str(lanes))
        if self.get("fmt"):
            text += f" {self['fmt']}"
        if self.get("updates", 1) != 1:
            text += f" U{self['updates']}"
        if self.get("balanced_from"):
            text += f" (balanced from L{self['balanced_from']})"
        return text


def model_grid(ncfg, tcfg, *, neurons, betas, thresholds, encodings, surrogates, slopes,
               sparsities, weight_bits):
    """Every model point: ``(ncfg, tcfg, weight_bits)`` (Lapicque with beta below 1/e has a
    negative decay in snnTorch and is left out, as in ``models sweep``)."""
    from .encoders import input_gain
    points = []
    for neuron, beta, theta, enc, sur, slope, sp, wb in itertools.product(
            neurons, betas, thresholds, encodings, surrogates, slopes, sparsities, weight_bits):
        if neuron == "lapicque" and beta < math.exp(-1):
            continue
        n = replace(ncfg, neuron=neuron, beta=beta, threshold=theta, surrogate=sur,
                    slope=slope)
        t = replace(tcfg, encoding=enc, sparsity=sp,
                    prune_epochs=tcfg.prune_epochs if sp == 0 else max(1, tcfg.prune_epochs))
        n = replace(n, input_gain=input_gain(enc, t.direct_bits))
        points.append((n, t, wb))
    return points


# snnTorch's own slopes: fast_sigmoid(slope=25), atan(alpha=2). The paper study gives each
# surrogate its own, since the two scale their slopes differently.
SURROGATE_SLOPES = {"fast_sigmoid": 25.0, "atan": 2.0}
PAPER_ENCODINGS = ("direct", "rate", "delta", "latency")


def paper_grid(ncfg, tcfg, *, neurons, betas, thresholds, weight_bits):
    """The seed paper's three experiments as one grid (duplicates dropped): the beta x threshold
    heat maps at ``tcfg.encoding`` and ``ncfg.surrogate``; Table I, every encoding x neuron
    model at the reference point (the middle of ``betas`` and of ``thresholds``); and the
    surrogates (each at its snnTorch slope) x neuron model at the reference point and
    encoding."""
    beta, theta = sorted(betas)[len(betas) // 2], sorted(thresholds)[len(thresholds) // 2]
    ncfg = replace(ncfg, beta=beta, threshold=theta)
    common = {"slopes": [ncfg.slope], "sparsities": [tcfg.sparsity], "weight_bits": weight_bits}
    parts = [
        model_grid(ncfg, tcfg, neurons=neurons, betas=betas, thresholds=thresholds,
                   encodings=[tcfg.encoding], surrogates=[ncfg.surrogate], **common),
        model_grid(ncfg, tcfg, neurons=neurons, betas=[ncfg.beta], thresholds=[ncfg.threshold],
                   encodings=list(PAPER_ENCODINGS), surrogates=[ncfg.surrogate], **common),
    ]
    for sur, slope in SURROGATE_SLOPES.items():
        parts.append(model_grid(ncfg, tcfg, neurons=neurons, betas=[ncfg.beta],
                                thresholds=[ncfg.threshold], encodings=[tcfg.encoding],
                                surrogates=[sur], **dict(common, slopes=[slope])))
    grid, seen = [], set()
    for part in parts:
        for n, t, wb in part:
            key = point_key(n, t, wb, None)
            if key not in seen:
                seen.add(key)
                grid.append((n, t, wb))
    return grid


def point_key(ncfg, tcfg, weight_bits, test_samples):
    """The cache key of a model point: a hash of everything that decides its figures."""
    blob = json.dumps({"v": DSE_VERSION, "net": ncfg.to_dict(), "train": asdict(tcfg),
                       "weight_bits": weight_bits, "test_samples": test_samples},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _subset(bundle, n, start=0):
    """``bundle`` with its vectors cut to samples ``start .. n - 1`` (for cycle estimates)."""
    from . import golden
    v = bundle.vectors
    n = min(n, v.samples)
    keep = (v.events[:, 0] >= start) & (v.events[:, 0] < n)
    events = v.events[keep].copy()
    events[:, 0] -= start
    cut = replace(bundle)
    cut.vectors = golden.make_vectors(bundle, events, n - start,
                                      labels=None if v.labels is None else v.labels[start:n])
    return cut


def _priced(top):
    """``top``, only asked for its cycle model: never elaborated, and that is intended."""
    for obj in [top] + [engine for _, engine in top.engines]:
        obj._MustUse__silence = True
    return top


def hardware_figures(bundle, hw, clock_mhz):
    """The cycle model's figures of ``bundle`` on hardware ``hw``."""
    from gen import make_report
    from hdl.top import Accelerator

    top = _priced(Accelerator(bundle, lanes=hw["lanes"], fmt=hw.get("fmt"),
                              updates=hw.get("updates")))
    report = make_report(top)
    steps = bundle.input.steps
    per_layer = {layer["name"]: layer["estimated_cycles_per_step"] for layer in report["layers"]
                 if "estimated_cycles_per_step" in layer}
    sops = sum(layer.get("active_sops_per_step", 0) for layer in report["layers"]) * steps
    bound = sum(layer.get("lower_bound_cycles_per_step", 0) for layer in report["layers"])
    cycles = report["estimated_cycles_per_sample"]
    return {"hardware": hw.label, "lanes": [engine.lanes for _, engine in top.engines
                                            if engine.weight_format is not None],
            "requested_lanes": hw["lanes"], "fmt": hw.get("fmt"),
            "updates": hw.get("updates") or 1,
            "balanced_from": hw.get("balanced_from"),
            "cycles_per_inference": cycles, "layer_cycles_per_step": per_layer,
            "sops_per_inference": sops, "bound_cycles_per_step_sum": bound,
            "bottleneck_layer": report["bottleneck_layer"],
            "inferences_per_s": clock_mhz * 1e6 / cycles if cycles else None,
            "weight_bits_stored": report["totals"]["stored_weight_bits"]}


def balanced_lanes(bundle, uniform, *, fmt=None, updates=None):
    """Per-layer lanes at the throughput of ``uniform`` lanes everywhere (Aliyev et al.'s
    alignment of hardware with each layer's work): each layer gets the fewest lanes whose
    estimated cycles per step stay within the uniform design's slowest layer."""
    from gen import make_report
    from hdl.top import Accelerator

    est = {}
    for lanes in range(1, uniform + 1):
        report = make_report(_priced(Accelerator(bundle, lanes=lanes, fmt=fmt,
                                                 updates=updates)))
        est[lanes] = {layer["name"]: layer["estimated_cycles_per_step"]
                      for layer in report["layers"] if "estimated_cycles_per_step" in layer}
    target = max(est[uniform].values())
    names = [layer.name for layer in bundle.neuron_layers]        # lanes go to neuron layers
    chosen = []
    for name in names:
        fits = [lanes for lanes in range(1, uniform + 1) if est[lanes][name] <= target]
        chosen.append(min(fits) if fits else uniform)
    return chosen


def evaluate_model(ncfg_dict, tcfg_dict, weight_bits, test_samples, hardware, clock_mhz,
                   bundle_dir):
    """One model point (runs on a Dask worker): train, quantize, price on every hardware
    configuration. Returns a JSON-able dict."""
    from . import bundle as bundle_io
    from .data import TrainConfig
    from .export import build_bundle
    from .nets import NetConfig
    from .train import train

    ncfg = NetConfig.from_dict(ncfg_dict)
    tcfg = TrainConfig(**tcfg_dict)
    start, cpu = time.monotonic(), time.process_time()
    net, metrics = train(ncfg, tcfg, progress=lambda line: None)
    bundle, gm = build_bundle(net, tcfg, weight_bits=weight_bits, samples=test_samples,
                              train_metrics=metrics)
    bundle_io.save(bundle, bundle_dir)
    cut = _subset(bundle, EST_SAMPLES)
    configs = [HardwareConfig(hw) for hw in hardware]
    for hw in list(configs):
        if hw.get("balance") and isinstance(hw["lanes"], int) and hw["lanes"] > 1:
            lanes = balanced_lanes(cut, hw["lanes"], fmt=hw.get("fmt"),
                                   updates=hw.get("updates"))
            configs.append(HardwareConfig(lanes=lanes, fmt=hw.get("fmt"),
                                          updates=hw.get("updates"),
                                          balanced_from=hw["lanes"]))
    rows = [hardware_figures(cut, hw, clock_mhz) for hw in configs]
    return {
        "model": {"neuron": ncfg.neuron, "beta": ncfg.beta, "threshold": ncfg.threshold,
                  "encoding": tcfg.encoding, "surrogate": ncfg.surrogate, "slope": ncfg.slope,
                  "sparsity": tcfg.sparsity, "weight_bits": weight_bits},
        "net": ncfg.to_dict(), "train": asdict(tcfg), "test_samples": gm["samples"],
        "float_accuracy": gm["float_accuracy"], "golden_accuracy": gm["golden_accuracy"],
        "agreement": gm["agreement"],
        "spikes_per_inference": gm["spikes_total_per_inference"]["golden"],
        "float_spikes_per_inference": gm["spikes_total_per_inference"]["float"],
        "layer_spikes_per_inference": gm["spikes_per_inference"]["golden"],
        "input_events_per_inference": gm["input_events_per_inference"],
        "cycle_model_samples": cut.vectors.samples,
        "hardware": rows,
        "train_seconds": metrics.get("train_seconds"),
        "seconds": time.monotonic() - start, "cpu_seconds": time.process_time() - cpu,
        "bundle": str(bundle_dir),
    }


def measure_pair(bundle_dir, lanes, fmt, updates, *, board, cosim_samples, sim, fit):
    """Measure one (model, hardware) pair (a Dask task): cycles per inference in cosimulation
    without stalls against the cycle model on the same samples, and ``boards fit``.

    The cycle model predicts the pipeline's throughput, so the measured figure is the interval
    from one sample's close to the next (``mean_interval_per_sample``) over samples
    ``1 .. cosim_samples - 1``, and the model runs on those samples; the first sample's latency
    (pipeline fill and the engines' clearing after reset) is recorded beside it."""
    from gen import emit_verilog
    from verif.runner import cosimulate

    from . import bundle as bundle_io

    bundle = bundle_io.load(bundle_dir)
    out = {}
    if cosim_samples:
        if cosim_samples < 2:
            raise ValueError(f"Measuring cycles per inference needs at least 2 cosimulated "
                             f"samples (the interval between two), not {cosim_samples}")
        cut = _subset(bundle, cosim_samples)
        model = hardware_figures(_subset(bundle, cosim_samples, start=1),
                                 HardwareConfig(lanes=lanes, fmt=fmt, updates=updates), 1)
        _, verilog = emit_verilog(bundle, lanes=lanes, fmt=fmt, updates=updates)
        v = cut.vectors
        result = cosimulate(verilog, bundle_dir, sim=sim, events=v.events, samples=v.samples)
        measured = result["cycles"]["mean_interval_per_sample"]
        out.update({"cosim_passed": result["passed"], "cosim_sim": sim,
                    "cosim_samples": v.samples, "measured_cycles_per_inference": measured,
                    "measured_first_sample_latency": result["cycles"]["first_sample_latency"],
                    "model_cycles_same_samples": model["cycles_per_inference"],
                    "model_error": (model["cycles_per_inference"] - measured) / measured
                    if measured else None})
    if fit:
        from boards.fit import fit as board_fit
        report = board_fit(bundle, board_name=board, lanes=lanes)
        res = report["resources"]
        out.update({"board": board, "fit_verdict": report["verdict"],
                    "logic_cells": res["logic_cells"]["used"],
                    "logic_cells_total": res["logic_cells"]["total"],
                    "bram": res.get("bram", {}).get("used"), "dsp": res.get("dsp", {}).get("used"),
                    "fit_clock_mhz": report["clock_mhz"]})
    return out


def pareto_front(rows, x, y):
    """Indices of ``rows`` not dominated in (maximise ``x``, maximise ``y``)."""
    pts = [(r[x], r[y], i) for i, r in enumerate(rows) if r.get(x) is not None
           and r.get(y) is not None]
    pts.sort(key=lambda p: (-p[0], -p[1]))
    front, best = [], -math.inf
    for _, py, i in pts:
        if py > best:
            front.append(i)
            best = py
    return front


def _bar(done, total, elapsed):
    width = 24
    filled = int(width * done / total) if total else width
    left = elapsed / done * (total - done) if done else float("nan")
    eta = "?" if math.isnan(left) else f"{left / 60:.1f} min"
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}, " \
           f"{elapsed / 60:.1f} min, left ~{eta}"


def _client(scheduler, workers):
    from distributed import Client, LocalCluster
    if scheduler:
        return Client(scheduler), None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    return Client(cluster), cluster


def run_dse(grid, *, hardware, out, test_samples=None, clock_mhz=45.0, board="icebreaker",
            measure=0, cosim_samples=3, sim="icarus", fit=True, scheduler=None, workers=2,
            progress=None):
    """Run the exploration: every model point of ``grid`` (:func:`model_grid`) on every
    hardware configuration, ``measure`` (model, hardware) pairs measured. Writes
    ``out/dse.json`` and the plots; returns the result dict."""
    if progress is None:
        def progress(line):
            print(line, file=sys.stderr, flush=True)
    out = Path(out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    (out / "bundles").mkdir(parents=True, exist_ok=True)
    hardware = [HardwareConfig(hw) for hw in hardware]
    hw_blob = json.dumps(hardware, sort_keys=True)
    start = time.monotonic()
    results, pending = {}, {}
    keys = []
    for ncfg, tcfg, wb in grid:
        key = point_key(ncfg, tcfg, wb, test_samples) + hashlib.sha256(
            (hw_blob + f"{clock_mhz}").encode()).hexdigest()[:6]
        keys.append(key)
        cached = out / "cache" / f"{key}.json"
        if cached.exists():
            results[key] = json.loads(cached.read_text())
        else:
            pending[key] = (ncfg, tcfg, wb)
    progress(f"dse: {len(grid)} model points x {len(hardware)} hardware configurations; "
             f"{len(results)} cached, {len(pending)} to train")
    client, cluster = _client(scheduler, workers)
    try:
        progress(f"dse: scheduler {client.scheduler.address}, "
                 f"{len(client.scheduler_info()['workers'])} workers")
        from distributed import as_completed
        futures = {}
        for key, (ncfg, tcfg, wb) in pending.items():
            fut = client.submit(evaluate_model, ncfg.to_dict(), asdict(tcfg), wb, test_samples,
                                [dict(hw) for hw in hardware], clock_mhz,
                                str((out / "bundles" / key).resolve()), key=f"model-{key}",
                                pure=False)
            futures[fut] = key
        done, failures = 0, []
        for fut in as_completed(futures):
            key = futures[fut]
            done += 1
            try:
                res = fut.result()
            except Exception as exc:            # one bad point must not lose the others
                ncfg, tcfg, wb = pending[key]
                failures.append({"key": key, "net": ncfg.to_dict(), "train": asdict(tcfg),
                                 "error": f"{type(exc).__name__}: {exc}"})
                progress(f"{_bar(done, len(pending), time.monotonic() - start)}  FAILED "
                         f"{ncfg.neuron} beta {ncfg.beta:g} theta {ncfg.threshold:g}: "
                         f"{type(exc).__name__}: {exc}")
                continue
            (out / "cache" / f"{key}.json").write_text(json.dumps(res, indent=1))
            results[key] = res
            m = res["model"]
            progress(f"{_bar(done, len(pending), time.monotonic() - start)}  {m['neuron']} "
                     f"beta {m['beta']:g} theta {m['threshold']:g} {m['encoding']} "
                     f"{m['surrogate']}: golden {100 * res['golden_accuracy']:.2f}%, "
                     f"{res['spikes_per_inference']:.0f} spikes")
        done_keys = [k for k in keys if k in results]
        rows = _rows([results[k] for k in done_keys], done_keys)
        measured = _measure(client, rows, out, board=board, count=measure,
                            cosim_samples=cosim_samples, sim=sim, fit=fit, progress=progress)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    summary = _summarise(rows, measured, clock_mhz)
    result = {"version": DSE_VERSION, "clock_mhz": clock_mhz, "board": board,
              "test_samples": test_samples, "points": len(grid),
              "hardware": [hw.label for hw in hardware],
              "wall_seconds": time.monotonic() - start, "failures": failures, "rows": rows,
              "summary": summary}
    (out / "dse.json").write_text(json.dumps(result, indent=1))
    from .dse_plots import write_plots
    write_plots(result, out)
    return result


def _rows(results, keys):
    rows = []
    for key, res in zip(keys, results):
        for hw in res["hardware"]:
            rows.append({"key": key, **res["model"],
                         **{k: res[k] for k in ("float_accuracy", "golden_accuracy",
                                                "agreement", "spikes_per_inference",
                                                "layer_spikes_per_inference",
                                                "input_events_per_inference",
                                                "train_seconds", "bundle")},
                         **hw})
    return rows


def _measure(client, rows, out, *, board, count, cosim_samples, sim, fit, progress):
    """Measure ``count`` rows spread evenly over the table (cosimulation and fit), plus the
    balanced rows of their model points and their uniform partners (fit only: their logic
    cells are the co-design result)."""
    if not count and not any(r.get("balanced_from") for r in rows):
        return []
    spread = set(np.linspace(0, len(rows) - 1, count).round().astype(int).tolist()) \
        if count else set()
    picks = set(spread)
    # The co-design pairs of the measured model points (of every point when none is measured).
    keys = {rows[i]["key"] for i in spread} or {r["key"] for r in rows}
    for i, r in enumerate(rows):
        if r.get("balanced_from") and r["key"] in keys:
            picks.add(i)
            for j, u in enumerate(rows):
                if _partner(u, r):
                    picks.add(j)
    futures = {}
    from distributed import as_completed
    start = time.monotonic()
    for i in sorted(picks):
        r = rows[i]
        lanes = r["lanes"] if len(set(r["lanes"])) > 1 else r["lanes"][0]
        mkey = hashlib.sha256(json.dumps([r["key"], r["lanes"], r.get("fmt"), r["updates"],
                                          board, cosim_samples, sim, fit]).encode()
                              ).hexdigest()[:16]
        cached = out / "cache" / f"measure-{mkey}.json"
        if cached.exists():
            r.update(json.loads(cached.read_text()))
            continue
        # Cosimulation on the evenly spread picks; the co-design pairs need only logic cells.
        cosim = cosim_samples if i in spread else 0
        fut = client.submit(measure_pair, r["bundle"], lanes, r.get("fmt"), r["updates"],
                            board=board, cosim_samples=cosim, sim=sim, fit=fit,
                            key=f"measure-{mkey}", pure=False)
        futures[fut] = (i, cached)
    done = 0
    for fut in as_completed(futures):
        i, cached = futures[fut]
        res = fut.result()
        cached.write_text(json.dumps(res, indent=1))
        rows[i].update(res)
        done += 1
        progress(f"{_bar(done, len(futures), time.monotonic() - start)}  measured "
                 f"{rows[i]['hardware']} of {rows[i]['neuron']} beta {rows[i]['beta']:g}")
    return sorted(picks)


def _partner(u, r):
    """Whether ``u`` is the uniform design that balanced row ``r`` was sized against."""
    return (u["key"] == r["key"] and not u.get("balanced_from")
            and u["requested_lanes"] == r["balanced_from"] and u.get("fmt") == r.get("fmt")
            and u["updates"] == r["updates"])


def _summarise(rows, measured, clock_mhz):
    for r in rows:
        if r.get("logic_cells"):
            r["inferences_per_s_per_klc"] = r["inferences_per_s"] / (r["logic_cells"] / 1000)
    errors = [abs(r["model_error"]) for r in rows if r.get("model_error") is not None]
    codesign = []
    for r in rows:
        if r.get("balanced_from") and r.get("logic_cells"):
            uni = [u for u in rows if _partner(u, r) and u.get("logic_cells")]
            if uni:
                u = uni[0]
                codesign.append({"key": r["key"], "uniform": u["lanes"], "balanced": r["lanes"],
                                 "uniform_cycles": u["cycles_per_inference"],
                                 "balanced_cycles": r["cycles_per_inference"],
                                 "uniform_logic_cells": u["logic_cells"],
                                 "balanced_logic_cells": r["logic_cells"],
                                 "logic_cells_saved": u["logic_cells"] - r["logic_cells"]})
    front = pareto_front(rows, "golden_accuracy", "inferences_per_s")
    return {"model_error_abs_median": float(np.median(errors)) if errors else None,
            "model_error_abs_max": float(max(errors)) if errors else None,
            "measured_rows": measured, "codesign": codesign,
            "pareto_accuracy_vs_rate": front,
            "pareto_accuracy_vs_rate_per_klc": pareto_front(rows, "golden_accuracy",
                                                            "inferences_per_s_per_klc")}
