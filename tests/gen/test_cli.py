import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gen.__main__ import main
from hdl.weights import pack_linear
from models import bundle as bundle_io
from models import golden

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "gen", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_quick_start_command(tmp_path):
    out = tmp_path / "b"
    r = run_cli("--neurons", "64", "--sparsity", "0.75", "-o", str(out))
    assert r.returncode == 0, r.stderr
    verilog = (out / "snn_top.v").read_text()
    assert "module snn_top(" in verilog
    for port in ("i__payload", "i__valid", "i__ready", "o__payload", "o__valid", "o__ready",
                 "clk", "rst"):
        assert port in verilog
    report = json.loads((out / "report.json").read_text())
    b = bundle_io.load(out / "bundle")
    layer = b.layers[0]
    assert layer.weight.shape == (64, 64)
    assert np.count_nonzero(layer.weight) == round(0.25 * 64 * 64)
    entry = report["layers"][0]
    packed = pack_linear(layer.weight, lanes=1, fmt=entry["format"], weight_bits=8)
    assert entry["stored_weight_bits"] == packed.stored_bits
    assert entry["dense_weight_bits"] == 64 * 64 * 8
    assert entry["stored_weight_bits"] < entry["dense_weight_bits"]
    # The bundle carries vectors that the golden model reproduces.
    v = b.vectors
    trace = golden.run(b, golden.events_to_dense(v.events, v.samples, v.steps, 64))
    assert np.array_equal(golden.spike_rows(trace.output), v.spikes)


def test_same_arguments_same_bytes(tmp_path):
    for name in ("a", "b"):
        assert main(["--neurons", "24", "--sparsity", "0.5", "--lanes", "2", "-q",
                     "-o", str(tmp_path / name)]) == 0
    for rel in ("snn_top.v", "report.json", "bundle/bundle.json", "bundle/weights.npz",
                "bundle/vectors.npz"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_from_bundle(tmp_path):
    assert main(["--neurons", "16", "--sparsity", "0.9", "--layers", "2", "-q",
                 "-o", str(tmp_path / "a")]) == 0
    assert main(["--bundle", str(tmp_path / "a" / "bundle"), "--lanes", "4", "-q",
                 "-o", str(tmp_path / "b")]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [layer["lanes"] for layer in report["layers"]] == [4, 4]


@pytest.mark.parametrize("args, message", [
    (["--neurons", "0"], "argument --neurons: must be in [1, 4096], not 0"),
    (["--neurons", "-5"], "argument --neurons: must be in [1, 4096], not -5"),
    (["--neurons", "1e3"], "argument --neurons: must be an integer, not '1e3'"),
    (["--neurons", "ten"], "argument --neurons: must be an integer, not 'ten'"),
    (["--neurons", "100000"], "argument --neurons: must be in [1, 4096], not 100000"),
    (["--neurons", "8", "--sparsity", "1"], "argument --sparsity: must be in [0.0, 1.0), not 1"),
    (["--neurons", "8", "--sparsity", "-0.1"],
     "argument --sparsity: must be in [0.0, 1.0), not -0.1"),
    (["--neurons", "8", "--sparsity", "nan"],
     "argument --sparsity: must be in [0.0, 1.0), not nan"),
    (["--neurons", "8", "--sparsity", "lots"], "argument --sparsity: must be a number, not 'lots'"),
    (["--neurons", "8", "--lanes", "0"], "argument --lanes: must be in [1, 16], not 0"),
    (["--neurons", "8", "--bogus"], "unrecognized arguments: --bogus"),
    (["--sparsity", "0.5"], "give --neurons N (with --sparsity S) or --bundle DIR"),
    (["--neurons", "8", "--shift", "20", "--potential-bits", "16", "--reset", "zero"],
     "--shift must be less than --potential-bits (16), not 20"),
])
def test_bad_arguments(tmp_path, args, message):
    out = tmp_path / "out"
    r = run_cli(*args, "-o", str(out))
    assert r.returncode == 2
    assert r.stderr == f"python -m gen: error: {message}\n"
    assert not out.exists()


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = run_cli("--neurons", "8", "-o", str(blocker / "sub"))
    assert r.returncode == 2
    assert r.stderr.startswith("python -m gen: error: output folder ")
    assert r.stderr.count("\n") == 1
    r = run_cli("--neurons", "8", "-o", str(blocker))
    assert r.returncode == 2
    assert "exists and is not a folder" in r.stderr
    assert blocker.read_text() == "not a folder"


def test_bad_bundle(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bundle.json").write_text('{"format": "snn-bundle", "version": 9}')
    np.savez(tmp_path / "bad" / "weights.npz", x=np.zeros(1))
    r = run_cli("--bundle", str(tmp_path / "bad"), "-o", str(tmp_path / "out"))
    assert r.returncode == 2
    assert r.stderr == ("python -m gen: error: bad bundle: bundle.json: version: must be 1, "
                        "not 9\n")
    assert not (tmp_path / "out").exists()
