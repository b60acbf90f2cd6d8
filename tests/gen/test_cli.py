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
    # Options that would be ignored are refused.
    (["--neurons", "8", "--beta", "0.5"], "--beta sets the mul leak; add --leak mul or drop it"),
    (["--neurons", "8", "--frac-bits", "4"],
     "--frac-bits sets the mul leak; add --leak mul or drop it"),
    (["--neurons", "8", "--leak", "mul", "--shift", "2"],
     "--shift sets the shift leak, not --leak mul"),
    (["--neurons", "8", "--dense", "--format", "bitmap"],
     "--dense needs --format dense or auto, not bitmap"),
    (["--neurons", "8", "--dense", "--updates", "2"],
     "--updates sets the sparse engine's sweep; the dense baseline sweeps one neuron per lane"),
    (["--neurons", "8", "--lanes", "2,2"],
     "--lanes must give one number or one per neuron layer (1), not 2"),
    (["--neurons", "8", "--lanes", "2,x"], "argument --lanes: must be an integer, not 'x'"),
    (["--bundle", "models/zoo/digits_mlp", "--neurons", "8"],
     "--bundle cannot be combined with --neurons or --sparsity"),
    (["--bundle", "models/zoo/digits_mlp", "--steps", "3", "--seed", "2"],
     "--steps, --seed shape the random layer; with --bundle the network comes from the bundle"),
    (["--bundle", "models/zoo/digits_mlp", "--inputs", "3"],
     "--inputs shapes the random layer; with --bundle the network comes from the bundle"),
    (["--bundle", "models/zoo/digits_mlp", "--signed-input"],
     "--signed-input shapes the random layer; with --bundle the network comes from the bundle"),
    (["--bundle", "models/zoo/digits_mlp", "--lanes", "1,2,3"],
     "--lanes must give one number or one per neuron layer (2), not 3"),
    (["--bundle", "models/zoo/digits_csnn", "--lanes", "9,1,1"],
     "Layer 'conv1': Lanes must be at most the output channels (8), not 9"),
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


ZOO = ROOT / "models" / "zoo"


@pytest.mark.parametrize("name", ["digits_mlp", "digits_csnn", "digits_mlp_lapicque",
                                  "digits_csnn_lapicque"])
def test_zoo_bundles(tmp_path, name, capsys):
    """Every zoo bundle goes through gen; the report covers every layer with its cycles."""
    from hdl import cycles
    from hdl.conv import conv_work, plan_conv

    assert main(["--bundle", str(ZOO / name), "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    b = bundle_io.load(ZOO / name)
    report = json.loads((tmp_path / "report.json").read_text())
    assert [entry["name"] for entry in report["layers"]] == [layer.name for layer in b.layers]
    assert report["activity"] == {"source": "vectors", "samples": b.vectors.samples,
                                  "steps": b.input.steps}
    v = b.vectors
    x = golden.events_to_dense(v.events, v.samples, v.steps, b.input.size)
    trace = golden.run(b, x)
    inputs = [x] + trace.spikes[:-1]
    engine_layers = []
    for layer, entry, act, out in zip(b.layers, report["layers"], inputs, trace.spikes):
        assert entry["kind"] == layer.kind and entry["out"] == layer.n_out
        assert printed.count(f"  {layer.name}: {layer.kind}") == 1
        if layer.kind == "flatten":
            assert "estimated_cycles_per_step" not in entry
            continue
        engine_layers.append(entry)
        active = act.reshape(-1, layer.n_in) != 0
        assert entry["input_events_per_step"] == pytest.approx(active.sum(axis=1).mean(),
                                                               abs=1e-3)
        assert entry["output_events_per_step"] == pytest.approx(
            np.count_nonzero(out.reshape(-1, layer.n_out), axis=1).mean(), abs=1e-3)
        assert entry["estimated_cycles_per_step"] >= entry["lower_bound_cycles_per_step"] > 0
        if layer.kind == "conv2d":
            plan = plan_conv(layer, lanes=1)
            assert entry["format"] == "sparse-kernel" and entry["lanes"] == 1
            assert entry["stored_weight_bits"] == plan.stored_bits
            assert entry["entry_bits"] + entry["record_bits"] == plan.stored_bits
            sops = (active * conv_work(layer)).sum(axis=1)
            assert entry["active_sops_per_step"] == pytest.approx(sops.mean(), abs=1e-3)
            # One lane: the estimate of every step is the conv model of that step.
            n_out = np.count_nonzero(out.reshape(-1, layer.n_out), axis=1)
            est = [cycles.conv_estimate([int(a)], int(e), in_size=layer.n_in,
                                        out_shape=layer.out_shape, lanes=1, out_events=int(o))
                   for a, e, o in zip(sops, active.sum(axis=1), n_out)]
            assert entry["estimated_cycles_per_step"] == pytest.approx(np.mean(est), abs=1e-3)
        elif layer.kind == "linear":
            packed = pack_linear(layer.weight, lanes=1, fmt=entry["format"], weight_bits=8)
            assert entry["stored_weight_bits"] == packed.stored_bits
            assert entry["csr_formula_bits"] > 0 and entry["bitmap_formula_bits"] > 0
            sops = (active * np.count_nonzero(layer.weight, axis=0)).sum(axis=1)
            assert entry["active_sops_per_step"] == pytest.approx(sops.mean(), abs=1e-3)
    # Layers run as a pipeline: a step costs at least what its slowest layer costs.
    slowest = max(entry["estimated_cycles_per_step"] for entry in engine_layers)
    assert report["estimated_cycles_per_step"] >= slowest
    assert report["bottleneck_layer"] in [entry["name"] for entry in engine_layers]
    assert report["estimated_cycles_per_sample"] >= report["estimated_cycles_per_step"]


def test_conv_lanes_capped_and_reported(tmp_path, capsys):
    assert main(["--bundle", str(ZOO / "digits_csnn"), "--lanes", "12",
                 "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    lanes = {entry["name"]: entry.get("lanes") for entry in report["layers"]}
    assert lanes == {"conv1": 8, "pool1": None, "conv2": 12, "pool2": None, "flat": None,
                     "fc1": 12}
    assert "conv1: conv2d 64->512, sparse-kernel, 8 lanes (capped from 12: one per output " \
           "channel)" in printed


def test_per_layer_lanes_and_density(tmp_path):
    assert main(["--bundle", str(ZOO / "digits_csnn"), "--lanes", "4,8,2", "--density", "0.2",
                 "-q", "-o", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert [e["lanes"] for e in report["layers"] if "lanes" in e] == [4, 8, 2]
    assert report["activity"] == {"source": "density", "density": 0.2}
    conv1 = report["layers"][0]
    assert conv1["input_events_per_step"] == pytest.approx(0.2 * 64)


def test_conv_only_bundle_refuses_linear_options(tmp_path):
    from models.synth import random_csnn_bundle
    b = random_csnn_bundle(in_shape=(1, 6, 6), channels=(2,), seed=3)
    b.layers = [layer for layer in b.layers if layer.kind == "conv2d"][:1]
    bundle_io.save(b, tmp_path / "conv")
    for extra, message in ((["--format", "csr"], "--format csr sets linear layers' weight "
                            "memory, and this bundle has none (convolutions keep sparse "
                            "kernels; --dense builds the dense baseline)"),
                           (["--updates", "2"], "--updates sets linear layers' sweep, and this "
                            "bundle has none (a convolution sweeps one neuron per lane)")):
        r = run_cli("--bundle", str(tmp_path / "conv"), *extra, "-o", str(tmp_path / "out"))
        assert (r.returncode, r.stderr) == (2, f"python -m gen: error: {message}\n")
        assert not (tmp_path / "out").exists()


def test_trace_port(tmp_path, capsys):
    """--trace adds the trace stream (its width in the report, the traced layers named), and
    a network with a single layer refuses it in one line with exit code 2."""
    out = tmp_path / "t"
    assert main(["--neurons", "16", "--inputs", "8", "--layers", "3", "--trace", "-q",
                 "-o", str(out)]) == 0
    verilog = (out / "snn_top.v").read_text()
    for port in ("trace__payload", "trace__valid", "trace__ready"):
        assert f" {port}" in verilog
    report = json.loads((out / "report.json").read_text())
    assert report["traced_layers"] == ["fc1", "fc2"]
    # addr (16 neurons: 4 bits) + spike + last + layer (3 layers: 2 bits)
    assert report["ports"]["trace__payload"] == 8
    plain = tmp_path / "p"
    assert main(["--neurons", "16", "--inputs", "8", "--layers", "3", "-q", "-o",
                 str(plain)]) == 0
    assert "trace__" not in (plain / "snn_top.v").read_text()
    assert json.loads((plain / "report.json").read_text())["traced_layers"] == []
    r = run_cli("--neurons", "16", "--trace", "-o", str(tmp_path / "one"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].endswith(
        "only one layer with hardware: use the o stream")
    assert not (tmp_path / "one" / "snn_top.v").exists()
