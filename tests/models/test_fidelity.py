"""Trained fidelity (slow): retrain every zoo recipe and check the integer network against it.

For MLP and CSNN, LIF and Lapicque, at 8-bit weights and 0.75 weight sparsity: the golden
model's accuracy on the exported test samples (the 360 digits; the first 2,000 MNIST or
Fashion-MNIST images, and the whole split beside them) is at most 1.0 point below the pruned
float snnTorch network's, and the two predict the same class for at least 97 % of the
samples; the 28x28 ones meet issue 11's targets on the whole split (golden accuracy, drop <= 0.5
point, agreement >= 99 %). Each recipe trains for minutes (the 28x28 ones up to 16 minutes of
CPU), so this runs only with ``-m slow``.
"""
import json

import pytest

from models.cli import ZOO, main


ISSUE_11_GOLDEN = {"mnist_mlp": 0.975, "mnist_csnn": 0.985, "fashion_csnn": 0.88}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_trained_fidelity(name, tmp_path):
    ckpt, out = tmp_path / f"{name}.pt", tmp_path / name
    assert main(["train", *ZOO[name], "-o", str(ckpt)]) == 0
    assert main(["export", str(ckpt), "-o", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    digits = m["train"]["dataset"] == "digits"
    assert m["weight_bits"] == 8 and m["samples"] == (360 if digits else 2000)
    # The 28x28 recipes: issue 11's targets on the whole split.
    fashion = m["train"]["dataset"] == "fashion"
    if not digits:
        split = m["test_split"]
        assert split["samples"] == 10000 and split["accuracy_drop_points"] <= 0.5
        assert split["agreement"] >= 0.99
        assert split["golden_accuracy"] >= ISSUE_11_GOLDEN[name]
    assert m["weight_sparsity_total"] >= 0.75 - 1e-9
    assert 100 * (m["float_accuracy"] - m["golden_accuracy"]) <= 1.0
    assert m["agreement"] >= 0.97
    assert m["float_accuracy"] >= (0.88 if fashion else 0.90)
