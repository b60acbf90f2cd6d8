"""``python -m verif``: emit, cosimulate and report a user's bundle."""
import json

import numpy as np
import pytest

from models import bundle as bundle_io
from models import golden
from models.synth import random_events, random_linear_bundle
from verif.__main__ import main
from verif.runner import RUNS


def _bundle_with_vectors(path, *, stale=False):
    bundle = random_linear_bundle(n_in=24, n_out=12, sparsity=0.5, seed=41, steps=5)
    events = random_events(np.random.default_rng(41), samples=2, steps=5, n_in=24, density=0.3)
    bundle.vectors = golden.make_vectors(bundle, events, 2)
    if stale:                     # golden spikes that the network does not produce
        bundle.vectors.spikes = bundle.vectors.spikes[1:]
    return bundle_io.save(bundle, path)


def test_cli_passes_on_bundle_vectors(tmp_path, capsys):
    path = _bundle_with_vectors(tmp_path / "b")
    out_json = tmp_path / "result.json"
    assert main(["--bundle", str(path), "--lanes", "2", "--shuffle", "--json",
                 str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "PASS: bit-exact" in text and "mismatches      0" in text
    result = json.loads(out_json.read_text())
    assert result["stimulus"] == "vectors"
    assert result["mismatches"] == 0 and result["spikes_compared"] > 0
    assert result["spikes_compared"] == len(bundle_io.load(path).vectors.spikes)


def test_cli_trace_compares_hidden_layers(tmp_path, capsys):
    bundle = random_linear_bundle(n_in=24, n_out=10, hidden=16, layers=2, sparsity=0.5,
                                  seed=43, steps=5)
    events = random_events(np.random.default_rng(43), samples=2, steps=5, n_in=24, density=0.4)
    bundle.vectors = golden.make_vectors(bundle, events, 2)
    path = bundle_io.save(bundle, tmp_path / "b")
    out_json = tmp_path / "result.json"
    assert main(["--bundle", str(path), "--trace", "--json", str(out_json)]) == 0
    hidden = int(golden.run(bundle, golden.events_to_dense(events, 2, 5, 24)).spikes[0].sum())
    text = capsys.readouterr().out
    assert f"  fc1           {hidden} spikes, 10 / 10 steps, 0 mismatches (trace port)" in text
    result = json.loads(out_json.read_text())
    assert result["trace"] and result["hidden_spikes_compared"] == hidden > 0
    with pytest.raises(SystemExit) as exc:           # one layer: nothing to trace
        main(["--bundle", str(_bundle_with_vectors(tmp_path / "one")), "--trace"])
    assert exc.value.code == 2
    assert "only one layer with hardware" in capsys.readouterr().err


def test_cli_fails_on_stale_vectors(tmp_path, capsys):
    path = _bundle_with_vectors(tmp_path / "b", stale=True)
    assert main(["--bundle", str(path)]) == 1
    RUNS[-1]["expect_pass"] = False                 # a negative check in the session summary
    captured = capsys.readouterr()
    assert "FAIL" in captured.out
    assert "disagree with models.golden" in captured.err


def test_cli_first_samples_of_vectors(tmp_path, capsys):
    path = _bundle_with_vectors(tmp_path / "b")
    out_json = tmp_path / "result.json"
    assert main(["--bundle", str(path), "--samples", "1", "--json", str(out_json)]) == 0
    result = json.loads(out_json.read_text())
    spikes = bundle_io.load(path).vectors.spikes
    assert result["samples"] == 1 and result["mismatches"] == 0
    assert result["spikes_compared"] == int(np.count_nonzero(spikes[:, 0] == 0))


def test_cli_first_samples_of_stale_vectors(tmp_path, capsys):
    path = _bundle_with_vectors(tmp_path / "b", stale=True)
    with pytest.raises(SystemExit) as exc:
        main(["--bundle", str(path), "--samples", "1"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == ("python -m verif: error: vectors.npz spikes disagree "
                                       "with models.golden (stale vectors)\n")


@pytest.mark.parametrize("argv, message", [
    (["--bundle", "/nonexistent/bundle"], "/nonexistent/bundle: is not a bundle folder"),
    (["--bundle", "B", "--in-gap", "1.5"], "argument --in-gap: must be in [0.0, 1.0), not 1.5"),
    (["--bundle", "B", "--lanes", "0"], "argument --lanes: must be in [1, 16], not 0"),
    (["--bundle", "B", "--zero-events", "nan"],
     "argument --zero-events: must be in [0.0, 100.0], not nan"),
    (["--bundle", "B", "--zero-events", "-1"],
     "argument --zero-events: must be in [0.0, 100.0], not -1"),
    (["--bundle", "B", "--density", "0.5"],
     "--density sets random stimulus, and the bundle has vectors.npz; add --random to use "
     "random events"),
    (["--bundle", "B", "--samples", "3"], "--samples 3: the bundle's vectors hold 2 samples"),
    (["--bundle", "B", "--lanes", "2,2"],
     "--lanes must give one number or one per neuron layer (1), not 2"),
])
def test_cli_bad_arguments(tmp_path, argv, message, capsys):
    path = _bundle_with_vectors(tmp_path / "b")
    argv = [str(path) if a == "B" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"python -m verif: error: {message}\n"
