"""Checkpoint -> bundle with test vectors, and the fidelity figures of the integer network.

:func:`export_checkpoint` quantizes a trained checkpoint (:func:`models.quantize.quantize`),
encodes the test split of the checkpoint's data set (the first :data:`DEFAULT_SAMPLES` images of
it by default) with the checkpoint's encoder and seed, runs both the float
snnTorch network and the golden model on those same events, and writes the bundle folder:
``bundle.json``, ``weights.npz``, ``vectors.npz`` (events, golden output spikes, labels,
golden predictions) and ``metrics.json`` (accuracies, agreement, spikes per layer per inference).

:func:`golden_report` needs numpy only (no torch): ``python -m models eval`` uses it to read a
bundle's vectors back through the golden model.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from . import bundle as bundle_io
from . import golden

__all__ = ["DEFAULT_SAMPLES", "build_bundle", "export_checkpoint", "golden_report",
           "whole_split", "write_metrics"]

#: Test samples in a bundle's vectors by default: the whole digits test split (360); the first
#: 2,000 of the 10,000 MNIST and Fashion-MNIST test images (the whole split would make
#: vectors.npz about 100 MB at 25 rate-coded steps).
DEFAULT_SAMPLES = {"digits": None, "mnist": 2000, "fashion": 2000}


def golden_report(bundle, vectors=None):
    """Run the golden model on a bundle's vectors; return figures and the trace.

    Returns ``(report, trace)``; ``report`` holds ``samples``, ``spikes_per_inference`` (every
    neuron layer: mean spikes per sample over all steps), ``spikes_total_per_inference``,
    ``input_events_per_inference``, ``predictions``, ``accuracy`` (if labels are known) and
    ``vectors_match`` (whether the recorded output spikes equal the ones recomputed now).
    """
    v = vectors if vectors is not None else bundle.vectors
    if v is None:
        raise ValueError("Bundle has no vectors.npz to evaluate")
    dense = golden.events_to_dense(v.events, v.samples, v.steps, bundle.input.size)
    trace = golden.run(bundle, dense)
    per_layer = {layer.name: float(spikes.sum()) / max(1, v.samples)
                 for layer, spikes in zip(bundle.layers, trace.spikes) if layer.has_neurons}
    preds = golden.predict(trace.output)
    rows = golden.spike_rows(trace.output)
    report = {
        "samples": int(v.samples), "steps": int(v.steps),
        "spikes_per_inference": per_layer,
        "spikes_total_per_inference": float(sum(per_layer.values())),
        "input_events_per_inference": float(np.count_nonzero(dense)) / max(1, v.samples),
        "predictions": preds,
        "vectors_match": bool(rows.shape == v.spikes.shape and np.array_equal(rows, v.spikes)),
    }
    if v.labels is not None:
        report["accuracy"] = float((preds == np.asarray(v.labels)).mean())
    return report, trace


def write_metrics(path, metrics):
    """Write ``metrics`` as indented, key-sorted JSON."""
    Path(path).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def _round(obj, digits=6):
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _round(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v, digits) for v in obj]
    return obj


def build_bundle(net, tcfg, *, weight_bits=8, potential_bits=None, samples=None,
                 train_metrics=None, name="bundle", split=False):
    """Quantize a trained ``net`` and make its vectors; return ``(bundle, metrics)``.

    The test split of ``tcfg.dataset`` is encoded with ``tcfg``'s encoder and ``test_seed``;
    the float network and the golden model both run on those events. ``samples`` keeps the first
    ``samples`` test samples (default: :data:`DEFAULT_SAMPLES`, all 360 digits);
    ``potential_bits`` defaults to ``tcfg``'s. With ``split``, when the vectors hold fewer
    samples than the test split, the float and golden figures of the whole split go into the
    metrics too (``test_split``, :func:`whole_split`; ``None`` otherwise).
    """
    import snntorch
    import torch

    from .data import DATASET_INFO, encode_chunks, evaluate, load_split
    from .encoders import input_spec, to_events
    from .quantize import check_options, quantize

    train_metrics = train_metrics or {}
    potential_bits = tcfg.potential_bits if potential_bits is None else potential_bits
    check_options(weight_bits=weight_bits, potential_bits=potential_bits, leak=tcfg.leak,
                  frac_bits=tcfg.frac_bits)
    if tcfg.qat_epochs and (weight_bits, potential_bits) != (tcfg.qat_bits, tcfg.potential_bits):
        raise ValueError(f"The network was trained on the grid of {tcfg.qat_bits}-bit weights "
                         f"and {tcfg.potential_bits}-bit potentials (--qat-epochs); export it "
                         f"with --weight-bits {tcfg.qat_bits} --potential-bits "
                         f"{tcfg.potential_bits}")
    _, _, x_test, y_test = load_split(tcfg.dataset)
    if samples is None:
        samples = DEFAULT_SAMPLES[tcfg.dataset] or len(y_test)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= len(
            y_test):
        raise ValueError(f"Samples must be an integer in [1, {len(y_test)}], not {samples!r}")
    spec = input_spec(tcfg.encoding, net.input_shape, steps=tcfg.steps, bits=tcfg.direct_bits)
    x_enc = torch.cat([x for _, _, x in encode_chunks(x_test, tcfg, tcfg.test_seed,
                                                       limit=samples)], dim=1)
    labels = y_test[:samples]
    floatm = evaluate(net, x_enc, labels)
    bundle = quantize(net, spec, weight_bits=weight_bits, potential_bits=potential_bits,
                      leak=tcfg.leak, frac_bits=tcfg.frac_bits)
    events = to_events(x_enc)
    vectors = bundle_io.Vectors(events, np.zeros((0, 3), dtype=np.int64), samples, tcfg.steps,
                                np.asarray(labels))
    report, trace = golden_report(bundle, vectors)
    vectors.spikes = golden.spike_rows(trace.output)
    vectors.predictions = report["predictions"]
    bundle.vectors = vectors

    agreement = float((report["predictions"] == floatm["predictions"]).mean())
    whole = None
    if split and samples < len(y_test):
        whole = whole_split(net, bundle, tcfg, x_test, y_test)
        del whole["predictions"]
    sparsity = {layer.name: float((layer.weight == 0).mean()) for layer in bundle.neuron_layers}
    info = DATASET_INFO[tcfg.dataset]
    described = info["description"] + ("" if samples == len(y_test) else
                                       f", the first {samples} of {len(y_test)} test images")
    metrics = {
        "name": name,
        "dataset": described,
        "arch": net.cfg.arch, "neuron": net.cfg.neuron, "reset": net.cfg.reset,
        "beta": net.cfg.beta, "threshold": net.cfg.threshold, "surrogate": net.cfg.surrogate,
        "encoding": tcfg.encoding, "steps": tcfg.steps, "samples": samples,
        "weight_bits": weight_bits, "potential_bits": potential_bits,
        "leak": {layer.name: layer.neuron.leak.to_json() for layer in bundle.neuron_layers},
        "thresholds": {layer.name: layer.neuron.threshold for layer in bundle.neuron_layers},
        "max_abs_bias": {layer.name: int(np.abs(layer.bias).max(initial=0))
                         if layer.bias is not None else 0 for layer in bundle.neuron_layers},
        "weight_sparsity": sparsity,
        "weight_sparsity_total": float(sum(int((layer.weight == 0).sum())
                                           for layer in bundle.neuron_layers)
                                       / sum(layer.weight.size for layer in bundle.neuron_layers)),
        "dense_float_accuracy": train_metrics.get("dense_accuracy"),
        "float_accuracy": floatm["accuracy"],
        "golden_accuracy": report["accuracy"],
        "accuracy_drop_points": 100 * (floatm["accuracy"] - report["accuracy"]),
        "agreement": agreement,
        "spikes_per_inference": {"float": floatm["spikes_per_inference"],
                                 "golden": report["spikes_per_inference"]},
        "spikes_total_per_inference": {"float": floatm["spikes_total_per_inference"],
                                       "golden": report["spikes_total_per_inference"]},
        "input_events_per_inference": report["input_events_per_inference"],
        "test_split": whole,
        "train_seconds": train_metrics.get("train_seconds"),
        "train_cpu_seconds": train_metrics.get("train_cpu_seconds"),
        "net": net.cfg.to_dict(),
        # Without quantization-aware training its options stay out, as before they existed.
        "train": {k: v for k, v in tcfg.__dict__.items()
                  if tcfg.qat_epochs or k not in ("qat_epochs", "qat_bits")},
        "versions": {"torch": torch.__version__, "snntorch": snntorch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
    }
    bundle.provenance = {
        "source": "snntorch", "dataset": info["source"], "arch": net.cfg.arch,
        "neuron": net.cfg.neuron, "float_accuracy": round(floatm["accuracy"], 6),
        "golden_accuracy": round(report["accuracy"], 6), "agreement": round(agreement, 6),
        "note": f"{tcfg.encoding} input, {tcfg.steps} steps, {weight_bits}-bit weights, "
                f"weight sparsity {metrics['weight_sparsity_total']:.3f}",
    }
    return bundle, metrics


def whole_split(net, bundle, tcfg, images, labels):
    """Float and golden figures on the whole test split, one encoding chunk at a time.

    A bundle's vectors hold a fixed subset when the whole split would be too heavy to ship; this
    measures what the subset cannot say. The encoding is the vectors' (same seed, same chunks),
    so its first samples are the vectors'. Returns ``samples``, ``float_accuracy``,
    ``golden_accuracy``, ``accuracy_drop_points``, ``agreement`` and ``predictions`` (``float``
    and ``golden``, one per sample).
    """
    from .data import encode_chunks, evaluate
    from .encoders import to_events

    float_preds, golden_preds = [], []
    for _, _, x in encode_chunks(images, tcfg, tcfg.test_seed):
        float_preds.append(evaluate(net, x)["predictions"])
        n = x.shape[1]
        dense = golden.events_to_dense(to_events(x), n, tcfg.steps, bundle.input.size)
        golden_preds.append(golden.predict(golden.run(bundle, dense).output))
    fp, gp = np.concatenate(float_preds), np.concatenate(golden_preds)
    y = np.asarray(labels)
    float_acc, golden_acc = float((fp == y).mean()), float((gp == y).mean())
    return {"samples": int(len(y)), "float_accuracy": float_acc, "golden_accuracy": golden_acc,
            "accuracy_drop_points": 100 * (float_acc - golden_acc),
            "agreement": float((fp == gp).mean()),
            "predictions": {"float": fp, "golden": gp}}


def export_checkpoint(checkpoint, out, *, weight_bits=8, potential_bits=None, samples=None,
                      name=None, progress=None):
    """Quantize ``checkpoint`` into the bundle folder ``out``; return ``(bundle, metrics)``.

    Writes ``bundle.json``, ``weights.npz``, ``vectors.npz`` and ``metrics.json``.
    """
    import torch

    from .data import load_checkpoint

    net, tcfg, train_metrics = load_checkpoint(checkpoint)
    torch.set_num_threads(tcfg.threads)
    bundle, metrics = build_bundle(net, tcfg, weight_bits=weight_bits,
                                   potential_bits=potential_bits, samples=samples,
                                   train_metrics=train_metrics, name=name or Path(out).name,
                                   split=True)
    out = bundle_io.save(bundle, out)
    write_metrics(out / "metrics.json", _round(metrics))
    if progress:
        progress(f"float {100 * metrics['float_accuracy']:.2f}%, golden "
                 f"{100 * metrics['golden_accuracy']:.2f}%, agreement "
                 f"{100 * metrics['agreement']:.2f}%, golden spikes/inference "
                 f"{metrics['spikes_total_per_inference']['golden']:.1f}")
        split = metrics["test_split"]
        if split:
            progress(f"whole test split ({split['samples']} samples): float "
                     f"{100 * split['float_accuracy']:.2f}%, golden "
                     f"{100 * split['golden_accuracy']:.2f}%, agreement "
                     f"{100 * split['agreement']:.2f}%")
    return bundle, metrics
