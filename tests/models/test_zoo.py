"""The committed trained bundles: valid, reproduced by the golden model, as good as they claim.

These read the files under ``models/zoo`` with numpy only. The figures in each ``metrics.json``
were measured at export; here the golden model recomputes the vectors and accuracy so a stale or
hand-edited bundle fails. Retraining them is the slow test in ``test_fidelity.py``.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from models import bundle as B
from models.export import golden_report

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"
BUNDLES = sorted(p.name for p in ZOO.iterdir() if (p / "bundle.json").is_file())


def test_the_promised_bundles_exist():
    assert {"digits_mlp", "digits_csnn"} <= set(BUNDLES)


@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_reproduces_and_meets_its_targets(name):
    bundle = B.load(ZOO / name)
    metrics = json.loads((ZOO / name / "metrics.json").read_text())
    v = bundle.vectors
    assert v is not None and v.samples >= 100 and v.labels is not None
    report, _ = golden_report(bundle)
    assert report["vectors_match"], "vectors.npz no longer equals the golden model's output"
    np.testing.assert_array_equal(report["predictions"], v.predictions)
    assert report["accuracy"] == pytest.approx(metrics["golden_accuracy"], abs=1e-6)
    assert report["spikes_per_inference"] == pytest.approx(
        metrics["spikes_per_inference"]["golden"], abs=1e-4)
    zeros = total = 0
    for layer in bundle.neuron_layers:
        assert layer.weight_bits == 8 and layer.neuron.potential_bits <= 16
        assert np.abs(layer.bias).max(initial=0) < layer.neuron.threshold * 4
        if metrics["train"]["prune_scope"] == "layer":
            # Each layer at its recipe's target: --sparsity, or its own --layer-sparsity.
            target = dict(metrics["train"].get("layer_sparsity", ())).get(
                layer.name, metrics["train"]["sparsity"])
            assert abs((layer.weight == 0).mean() - target) <= 0.5 / layer.weight.size, \
                layer.name
        zeros += int((layer.weight == 0).sum())
        total += layer.weight.size
    assert zeros / total >= 0.75 - 1e-9
    assert metrics["weight_sparsity_total"] == pytest.approx(zeros / total, abs=1e-6)
    # The fidelity targets of the export (issue: drop <= 1.0 point, agreement >= 97 %).
    assert metrics["float_accuracy"] - metrics["golden_accuracy"] <= 0.010 + 1e-9
    assert metrics["agreement"] >= 0.97
    split = metrics.get("test_split")
    if metrics["train"].get("dataset", "digits") != "digits":   # older digits: no key
        # Vectors hold a fixed subset; the export measured the whole split too (not
        # recomputable from the files, so checked for presence and the same targets).
        assert split and split["samples"] > v.samples
        assert split["accuracy_drop_points"] <= 1.0 + 1e-6 and split["agreement"] >= 0.97


def test_digits_mlp_is_the_shape_the_hardware_expects():
    bundle = B.load(ZOO / "digits_mlp")
    assert [(layer.kind, layer.n_in, layer.n_out) for layer in bundle.layers] == [
        ("linear", 64, 128), ("linear", 128, 10)]
    assert (bundle.input.bits, bundle.input.signed, bundle.input.encoding) == (1, False, "rate")
    assert bundle.vectors.samples == 360 and 16 <= bundle.input.steps <= 25


def test_digits_csnn_is_the_shape_the_hardware_expects():
    bundle = B.load(ZOO / "digits_csnn")
    assert [(layer.kind, layer.out_shape) for layer in bundle.layers] == [
        ("conv2d", (8, 8, 8)), ("spike_pool", (8, 4, 4)), ("conv2d", (16, 4, 4)),
        ("spike_pool", (16, 2, 2)), ("flatten", (64,)), ("linear", (10,))]
    assert all(layer.kernel == 3 and layer.padding == 1 for layer in bundle.layers
               if layer.kind == "conv2d")


CSNN_28 = [("conv2d", (16, 28, 28)), ("spike_pool", (16, 14, 14)), ("conv2d", (32, 14, 14)),
           ("spike_pool", (32, 7, 7)), ("flatten", (1568,)), ("linear", (128,)),
           ("linear", (10,))]


@pytest.mark.parametrize("name, layers, accuracy", [
    ("mnist_mlp", [("linear", (128,)), ("linear", (10,))], 0.975),
    ("mnist_csnn", CSNN_28, 0.985),
    ("fashion_csnn", CSNN_28, 0.88),
])
def test_28x28_bundles_meet_issue_11(name, layers, accuracy):
    """Golden accuracy on the whole test split at least the issue's target (MNIST MLP 97.5 %,
    MNIST CSNN 98.5 %, Fashion CSNN 88 %), drop <= 0.5 point, agreement >= 99 %, at most 20
    minutes of training CPU; 8-bit weights, 16-bit potentials."""
    bundle = B.load(ZOO / name)
    metrics = json.loads((ZOO / name / "metrics.json").read_text())
    assert bundle.input.size == 784
    assert [(layer.kind, layer.out_shape) for layer in bundle.layers] == layers
    split = metrics["test_split"]
    assert split["samples"] == 10000 and split["golden_accuracy"] >= accuracy
    for figures in (split, metrics):
        assert figures["accuracy_drop_points"] <= 0.5 and figures["agreement"] >= 0.99
    assert metrics["train_cpu_seconds"] <= 20 * 60 and metrics["train"]["threads"] == 1
    assert metrics["weight_sparsity_total"] >= 0.75 and bundle.vectors.samples == 2000
