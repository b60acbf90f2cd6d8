"""``python -m gen``: a bundle (or a random pruned layer) in, Verilog, bundle and report out.

No hardware logic lives here: :mod:`hdl` builds the accelerator, this package converts it and
writes what a user needs beside it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["emit_verilog", "make_report", "write_outputs", "DEFAULT_NAME"]

DEFAULT_NAME = "snn_top"


def emit_verilog(bundle, *, lanes=1, fmt=None, dense=False, status=False, updates=None,
                 name=DEFAULT_NAME):
    """Return ``(top, verilog)`` for ``bundle``; the text is deterministic (no source paths)."""
    import os

    from amaranth.back import verilog

    from hdl.top import Accelerator

    top = Accelerator(bundle, lanes=lanes, fmt=fmt, dense=dense, status=status,
                      updates=updates)
    # Use Amaranth's own Yosys for reproducible output even if YOSYS points elsewhere.
    saved = {k: os.environ.pop(k) for k in ("YOSYS", "AMARANTH_USE_YOSYS") if k in os.environ}
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    try:
        return top, verilog.convert(top, name=name, emit_src=False)
    finally:
        os.environ.pop("AMARANTH_USE_YOSYS")
        os.environ.update(saved)


def make_report(top, *, density, name=DEFAULT_NAME):
    """Figures of a built :class:`hdl.top.Accelerator`: memories, widths, lanes, cycles."""
    from hdl import cycles, weights
    from hdl.linear import LinearEngine

    bundle = top.bundle
    layers, total = [], {"stored_weight_bits": 0, "dense_weight_bits": 0}
    events = density * bundle.input.size
    est_step = 0
    for layer, engine in top.engines:
        entry = {"name": layer.name, "kind": layer.kind, "in": layer.n_in, "out": layer.n_out}
        if layer.has_neurons:
            w, wb = layer.weight, layer.weight_bits
            entry.update({
                "weight_bits": wb, "nonzero_weights": int(np.count_nonzero(w)),
                "weight_sparsity": round(1 - np.count_nonzero(w) / w.size, 6),
                "potential_bits": layer.neuron.potential_bits,
                "neuron": layer.neuron.to_json(),
                "dense_weight_bits": weights.dense_bits(w, wb),
                "csr_formula_bits": weights.csr_bits(w, wb),
                "bitmap_formula_bits": weights.bitmap_bits(w, wb),
            })
            total["dense_weight_bits"] += entry["dense_weight_bits"]
        if isinstance(engine, LinearEngine):
            pw = engine.packed
            active = int(round(events))
            sops = layer.weight.shape[0] * (1 - entry["weight_sparsity"]) * active
            entry.update({
                "lanes": engine.lanes, "updates_per_cycle": engine.updates,
                "format": pw.fmt, "dense_baseline": engine.dense,
                "stored_weight_bits": pw.stored_bits, "current_bits": engine.current_bits,
                "input_events_per_step": active,
                "active_sops_per_step": round(sops, 1),
                "lower_bound_cycles_per_step": cycles.lower_bound(
                    math.ceil(sops), active, layer.n_out, lanes=engine.lanes,
                    updates=engine.updates),
                "estimated_cycles_per_step": cycles.linear_estimate(
                    math.ceil(sops), active, layer.n_out, lanes=engine.lanes,
                    updates=engine.updates),
            })
            total["stored_weight_bits"] += pw.stored_bits
            est_step = max(est_step, entry["estimated_cycles_per_step"])
            # The next layer's event count: assume the same density of spikes.
            events = density * layer.n_out
        elif hasattr(engine, "weight_bits_stored"):
            entry.update({"lanes": getattr(engine, "lanes", None),
                          "stored_weight_bits": engine.weight_bits_stored})
            total["stored_weight_bits"] += engine.weight_bits_stored
        layers.append(entry)
    return {
        "top": name,
        "input": bundle.input.to_json(),
        "outputs": bundle.n_out,
        "ports": {"i__payload": len(top.i.payload.as_value()),
                  "o__payload": len(top.o.payload.as_value())},
        "assumed_input_density": density,
        "layers": layers,
        "totals": total,
        "estimated_cycles_per_step": est_step,
        "estimated_cycles_per_sample": est_step * bundle.input.steps,
        "provenance": bundle.provenance,
    }


def write_outputs(out_dir, *, verilog_text, bundle, report, name=DEFAULT_NAME):
    """Write ``<name>.v``, ``bundle/`` and ``report.json`` into ``out_dir``."""
    from models import bundle as bundle_io

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.v").write_text(verilog_text)
    bundle_io.save(bundle, out / "bundle")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return out
