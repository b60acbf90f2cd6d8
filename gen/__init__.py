"""``python -m gen``: a bundle (or a random pruned layer) in, Verilog, bundle and report out.

No hardware logic lives here: :mod:`hdl` builds the accelerator, this package converts it and
writes what a user needs beside it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["emit_verilog", "make_report", "write_outputs", "DEFAULT_NAME"]

DEFAULT_NAME = "snn_top"


def emit_verilog(bundle, *, lanes=1, fmt=None, dense=False, status=False, updates=None,
                 name=DEFAULT_NAME, trace=False):
    """Return ``(top, verilog)`` for ``bundle``; the text is deterministic (no source paths)."""
    import os

    from amaranth.back import verilog

    from hdl.top import Accelerator

    top = Accelerator(bundle, lanes=lanes, fmt=fmt, dense=dense, status=status,
                      updates=updates, trace=trace)
    # Use Amaranth's own Yosys for reproducible output even if YOSYS points elsewhere.
    saved = {k: os.environ.pop(k) for k in ("YOSYS", "AMARANTH_USE_YOSYS") if k in os.environ}
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    try:
        return top, verilog.convert(top, name=name, emit_src=False)
    finally:
        os.environ.pop("AMARANTH_USE_YOSYS")
        os.environ.update(saved)


def make_report(top, *, density=None, name=DEFAULT_NAME):
    """Figures of a built :class:`hdl.top.Accelerator`: memories, widths, lanes, cycles.

    Every layer gets its weight format and stored bits (where it has weights) and the cycle
    model's figures per step (:mod:`hdl.cycles`): input events, active synaptic operations,
    output events, the lower bound of DESIGN.md section 7 and the engine's estimate. The
    activity comes from the golden model run on the bundle's test vectors (each layer sees the
    spikes the layer before it really fires), or, with ``density``, every layer's inputs and
    outputs are assumed active at that rate. Layers run as a pipeline, so a step costs what the
    slowest layer takes.
    """
    bundle = top.bundle
    if density is None and bundle.vectors is None:
        raise ValueError("The cycle estimate needs the bundle's vectors or an input density")
    activity = _activity(bundle, density)
    engines = dict((id(layer), engine) for layer, engine in top.engines)
    layers, total = [], {"stored_weight_bits": 0, "dense_weight_bits": 0}
    step_costs = []
    for layer, act in zip(bundle.layers, activity):
        entry = {"name": layer.name, "kind": layer.kind, "in": layer.n_in, "out": layer.n_out,
                 "in_shape": list(layer.in_shape), "out_shape": list(layer.out_shape)}
        engine = engines.get(id(layer))
        if layer.has_neurons:
            w = layer.weight
            entry.update({
                "weight_bits": layer.weight_bits, "nonzero_weights": int(np.count_nonzero(w)),
                "weight_sparsity": round(1 - np.count_nonzero(w) / w.size, 6),
                "potential_bits": layer.neuron.potential_bits,
                "neuron": layer.neuron.to_json(),
                "dense_weight_bits": engine.weight_bits_dense,
                "lanes": engine.lanes, "current_bits": engine.current_bits,
                "dense_baseline": engine.dense,
            })
        # The layer's geometry, as the bundle writes it.
        entry.update((key, value) for key, value in layer.to_json().items()
                     if key in ("kernel", "stride", "padding"))
        if engine is None:
            entry["hardware"] = "none: a convolution's output order is the flatten order"
        else:
            if engine.weight_format is not None:
                entry.update({"format": engine.weight_format,
                              "updates_per_cycle": engine.updates,
                              "stored_weight_bits": engine.weight_bits_stored,
                              **engine.weight_figures})
            total["stored_weight_bits"] += engine.weight_bits_stored
            total["dense_weight_bits"] += engine.weight_bits_dense
            events, sops, out_events, bound, estimate = _layer_cycles(layer, engine, act)
            entry.update({
                "input_events_per_step": round(float(np.mean(events)), 3),
                "active_sops_per_step": round(float(np.mean(sops)), 3),
                "output_events_per_step": round(float(np.mean(out_events)), 3),
                "lower_bound_cycles_per_step": round(float(np.mean(bound)), 3),
                "estimated_cycles_per_step": round(float(np.mean(estimate)), 3),
                "estimated_cycles_per_step_max": int(np.max(estimate)),
            })
            step_costs.append(estimate)
        layers.append(entry)
    costs = np.stack(step_costs)                             # [layers, steps]
    per_step = costs.max(axis=0)
    steps = bundle.input.steps
    if density is None:
        source = {"source": "vectors", "samples": bundle.vectors.samples, "steps": steps}
        per_sample = per_step.reshape(-1, steps).sum(axis=1)
    else:
        source = {"source": "density", "density": density}
        per_sample = per_step * steps
    slowest = [entry["name"] for entry in layers if "estimated_cycles_per_step" in entry]
    return {
        "top": name,
        "input": bundle.input.to_json(),
        "outputs": bundle.n_out,
        "ports": {"i__payload": len(top.i.payload.as_value()),
                  "o__payload": len(top.o.payload.as_value()),
                  **({"trace__payload": len(top.trace.payload.as_value())}
                     if top.traced_layers else {})},
        "traced_layers": [bundle.layers[index].name for index in top.traced_layers],
        "activity": source,
        "layers": layers,
        "totals": total,
        "estimated_cycles_per_step": round(float(per_step.mean()), 3),
        "estimated_cycles_per_step_max": int(per_step.max()),
        "estimated_cycles_per_sample": round(float(per_sample.mean()), 3),
        "bottleneck_layer": slowest[int(np.argmax(costs.mean(axis=1)))],
        "provenance": bundle.provenance,
    }


def _activity(bundle, density):
    """Per layer, per step of every test sample: input events, output events, and the input
    activity as a dense ``[steps, n_in]`` 0/1 array, from the golden model on the bundle's
    vectors; or, with ``density``, expected figures for inputs active at that rate."""
    from models import golden

    if density is None:
        v = bundle.vectors
        x = golden.events_to_dense(v.events, v.samples, v.steps, bundle.input.size)
        trace = golden.run(bundle, x)
        inputs = [x] + trace.spikes[:-1]
        out = []
        for layer, a, s in zip(bundle.layers, inputs, trace.spikes):
            active = (a.reshape(-1, layer.n_in) != 0)
            out.append({"active": active,
                        "out_events": np.count_nonzero(s.reshape(-1, layer.n_out), axis=1)})
        return out
    return [{"density": density, "n_in": layer.n_in, "n_out": layer.n_out}
            for layer in bundle.layers]


def _layer_cycles(layer, engine, act):
    """Per-step figures of one layer from its engine's cycle model: ``(events, sops,
    out_events, bound, estimate)`` arrays (one entry per step, or a single expected step at an
    assumed density)."""
    if "density" in act:
        active = act["density"]
        out_events = np.array([act["density"] * layer.n_out])
    else:
        active, out_events = act["active"], act["out_events"]
    events, sops = engine.work(active)
    bound, estimate = engine.estimate_cycles(active, out_events)
    return tuple(np.atleast_1d(v) for v in (events, sops, out_events, bound, estimate))


def write_outputs(out_dir, *, verilog_text, bundle, report, name=DEFAULT_NAME):
    """Write ``<name>.v``, ``bundle/`` and ``report.json`` into ``out_dir``."""
    from models import bundle as bundle_io

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.v").write_text(verilog_text)
    bundle_io.save(bundle, out / "bundle")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return out
