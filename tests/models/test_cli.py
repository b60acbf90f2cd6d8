"""``python -m models``: a tiny train -> export -> eval run, and one-line errors for bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import bundle as B
from models.cli import main
from models.data import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--steps", "4", "--epochs", "1", "--prune-epochs", "1", "--hidden", "16"]


def run_main(argv, capsys):
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A checkpoint trained for one dense and one pruning epoch, and its exported bundle."""
    root = tmp_path_factory.mktemp("tiny")
    ckpt, out = root / "tiny.pt", root / "bundle"
    assert main(["train", *TINY, "-o", str(ckpt)]) == 0
    assert main(["export", str(ckpt), "-o", str(out), "--samples", "30"]) == 0
    return ckpt, out


def test_train_with_a_layer_sparsity(tmp_path):
    """--layer-sparsity gives the named layer its own target; the others keep --sparsity."""
    ckpt = tmp_path / "ls.pt"
    assert main(["train", *TINY, "--layer-sparsity", "fc2=0.5", "-o", str(ckpt)]) == 0
    metrics = json.loads(ckpt.with_suffix(".json").read_text())
    assert metrics["weight_sparsity"] == {"fc1": 0.75, "fc2": 0.5}
    from models.data import load_checkpoint
    net, tcfg, _ = load_checkpoint(ckpt)
    assert tcfg.layer_sparsity == (("fc2", 0.5),)
    assert int((net.synapses["fc2"].weight == 0).sum()) == round(0.5 * 16 * 10)


def test_train_export_eval(tiny, capsys):
    ckpt, out = tiny
    metrics = json.loads(ckpt.with_suffix(".json").read_text())
    assert metrics["weight_sparsity"] == {"fc1": 0.75, "fc2": 0.75}
    assert set(metrics["spikes_per_inference"]) == {"fc1", "fc2"}
    assert [h["phase"] for h in metrics["history"]] == ["dense", "prune"]
    bundle = B.load(out)
    assert bundle.input.steps == 4 and bundle.vectors.samples == 30
    assert [layer.weight_bits for layer in bundle.neuron_layers] == [8, 8]
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["agreement"] <= 1 and m["samples"] == 30
    status, stdout, _ = run_main(["eval", str(out), "--json"], capsys)
    assert status == 0
    report = json.loads(stdout.splitlines()[-1])
    assert report["vectors_match"] is True
    assert report["accuracy"] == pytest.approx(m["golden_accuracy"], abs=1e-6)
    assert report["spikes_per_inference"] == pytest.approx(m["spikes_per_inference"]["golden"],
                                                           abs=1e-5)


def test_training_is_reproducible(tiny, tmp_path):
    ckpt, _ = tiny
    again = tmp_path / "again.pt"
    assert main(["train", *TINY, "-o", str(again)]) == 0
    a, _, _ = load_checkpoint(ckpt)
    b, _, _ = load_checkpoint(again)
    for (key, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), key


def test_eval_detects_stale_vectors(tiny, tmp_path, capsys):
    _, out = tiny
    bad = tmp_path / "bad"
    bundle = B.load(out)
    bundle.vectors.spikes = bundle.vectors.spikes[1:]
    B.save(bundle, bad)
    status, stdout, _ = run_main(["eval", str(bad)], capsys)
    assert status == 1 and "DIFFER" in stdout


def test_eval_needs_no_torch(tiny):
    _, out = tiny
    code = ("import sys; from models.cli import main; rc = main(['eval', sys.argv[1]]); "
            "assert 'torch' not in sys.modules and 'snntorch' not in sys.modules; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, check=False,
                          capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


BAD_TRAIN = [
    (["--beta", "1.5"], "Beta must be in [0, 1] for lif, not 1.5"),
    (["--neuron", "lapicque", "--beta", "0.2"],
     "Beta must be in [0.3679, 1) for lapicque, not 0.2"),
    (["--threshold", "0"], "Threshold must be a positive number, not 0.0"),
    (["--steps", "0"], "Steps must be an integer in [1, 1000], not 0"),
    (["--sparsity", "1"], "Sparsity must be in [0, 1), not 1.0"),
    (["--frac-bits", "17"], "Frac bits must be an integer in [0, 16], not 17"),
    (["--potential-bits", "40"], "Potential bits must be an integer in [4, 32], not 40"),
    (["--epochs", "-1"], "Epochs must be an integer in [0, 10000], not -1"),
    (["--lr", "0"], "Learning rate must be in (0, 1], not 0.0"),
    (["--prune-epochs", "0"], "Sparsity 0.75 needs at least one prune epoch, not 0"),
    (["--direct-bits", "9", "--encoding", "direct"],
     "Direct input bits must be an integer in [1, 8], not 9"),
    (["--hidden", "64,0"], "Hidden widths must be a list of positive integers, not (64, 0)"),
    # Options the run would ignore.
    (["--arch", "csnn", "--hidden", "32"],
     "--hidden sets the mlp's widths, not the csnn's (use --channels)"),
    (["--channels", "4"], "--channels sets the csnn's convolutions, not the mlp's (use --hidden)"),
    (["--direct-bits", "3"], "--direct-bits applies to --encoding direct, not rate"),
    (["--delta-threshold", "0.1", "--encoding", "rate"],
     "--delta-threshold applies to --encoding delta, not rate"),
    (["--frac-bits", "6", "--leak", "shift"], "--frac-bits applies to --leak mul, not shift"),
    (["--qat-epochs", "-1"], "Qat epochs must be an integer in [0, 20000], not -1"),
    (["--qat-epochs", "31"], "Qat epochs must be at most epochs plus prune epochs (30), not 31"),
    (["--qat-epochs", "2", "--qat-bits", "1"], "Qat bits must be an integer in [2, 16], not 1"),
    (["--qat-bits", "6"], "--qat-bits applies with --qat-epochs, not without"),
    (["--layer-sparsity", "fc2=1.5"], "Layer sparsity of fc2 must be in [0, 1), not 1.5"),
    (["--layer-sparsity", "fc2=0.5,fc2=0.6"],
     "Layer sparsity names a layer twice: (('fc2', 0.5), ('fc2', 0.6))"),
    (["--layer-sparsity", "fc2=0.5", "--prune-scope", "global"],
     "Layer sparsity applies with prune scope layer, not global"),
    (["--layer-sparsity", "fc3=0.5"],
     "Layer sparsity names 'fc3', not a synapse layer of this network (fc1, fc2)"),
    (["--sparsity", "0", "--prune-epochs", "0", "--layer-sparsity", "fc1=0.5"],
     "Sparsity 0.5 needs at least one prune epoch, not 0"),
    (["--fc-hidden", "32"], "--fc-hidden adds linear layers to the csnn; the mlp's are --hidden"),
    (["--arch", "csnn", "--fc-hidden", "32,0"],
     "Hidden linear widths must be a list of positive integers, not (32, 0)"),
]

BAD_SWEEP = [
    (["--beta", "0.5"], "--beta is swept in a sweep: give --betas instead"),
    (["--threshold", "2"], "--threshold is swept in a sweep: give --thresholds instead"),
    (["--neuron", "lif"], "--neuron is swept in a sweep: give --neurons instead"),
    (["--hidden", "8", "--arch", "csnn"],
     "--hidden sets the mlp's widths, not the csnn's (use --channels)"),
]


@pytest.mark.parametrize("args, message", BAD_SWEEP, ids=[" ".join(a) for a, _ in BAD_SWEEP])
def test_bad_sweep_options(args, message, capsys, tmp_path):
    status, out, err = run_main(["sweep", *args, "-o", str(tmp_path / "s")], capsys)
    assert (status, out) == (2, "")
    assert err == f"python -m models sweep: error: {message}\n"
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("args, message", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_train_options(args, message, capsys, tmp_path):
    status, out, err = run_main(["train", *args, "-o", str(tmp_path / "x.pt")], capsys)
    assert status == 2 and out == ""
    assert err == f"python -m models train: error: {message}\n"
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("args, pattern", [
    (["train", "--arch", "rnn"], r"argument --arch: invalid choice: 'rnn'"),
    (["train", "--steps", "many"], r"argument --steps: invalid int value: 'many'"),
    (["train", "--hidden", "a,b"], r"argument --hidden: must be comma-separated integers"),
    (["train", "--layer-sparsity", "fc2:0.5"],
     r"argument --layer-sparsity: must be LAYER=SPARSITY pairs separated by commas, not "
     r"'fc2:0.5'"),
    (["train", "--layer-sparsity", "fc2=half"],
     r"argument --layer-sparsity: must be LAYER=SPARSITY pairs"),
    (["export"], r"the following arguments are required: CHECKPOINT, -o/--output"),
    (["frobnicate"], r"argument command: invalid choice: 'frobnicate'"),
])
def test_bad_arguments_are_one_line(args, pattern, capsys):
    status, out, err = run_main(args, capsys)
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("python -m models")
    assert pytest.importorskip("re").search(pattern, err)


def test_bad_export_options(tiny, capsys, tmp_path):
    ckpt, _ = tiny
    for args, message in [
        (["--weight-bits", "1"], "Weight bits must be an integer in [2, 16], not 1"),
        (["--samples", "0"], "Samples must be an integer in [1, 360], not 0"),
        (["--samples", "361"], "Samples must be an integer in [1, 360], not 361"),
        (["--potential-bits", "3"], "Potential bits must be an integer in [4, 32], not 3"),
    ]:
        status, _, err = run_main(["export", str(ckpt), "-o", str(tmp_path / "o"), *args],
                                  capsys)
        assert (status, err) == (2, f"python -m models export: error: {message}\n")


def test_malformed_checkpoints(tiny, capsys, tmp_path):
    ckpt, _ = tiny
    good = torch.load(ckpt, weights_only=True)
    cases = []
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    cases.append((garbage, f"{garbage}: is not a readable torch checkpoint ("))
    cases.append((tmp_path / "missing.pt", f"{tmp_path / 'missing.pt'}: no such checkpoint file"))
    for name, change, message in [
        ("format", {"format": "keras"}, "format must be 'snn-checkpoint', not 'keras'"),
        ("version", {"version": 7}, "version must be 1, not 7"),
        ("beta", {"net": {**good["net"], "beta": 5.0}},
         "Beta must be in [0, 1] for lif, not 5.0"),
        ("steps", {"train": {**good["train"], "steps": -3}},
         "Steps must be an integer in [1, 1000], not -3"),
        ("nostate", {"state_dict": None}, "'state_dict' is missing or not a mapping"),
        ("shape", {"net": {**good["net"], "hidden": [17]}}, "Error(s) in loading state_dict"),
    ]:
        path = tmp_path / f"{name}.pt"
        torch.save({**good, **change}, path)
        cases.append((path, f"{path}: {message}"))
    plain = tmp_path / "list.pt"
    torch.save([1, 2, 3], plain)
    cases.append((plain, f"{plain}: format must be 'snn-checkpoint', not 'list'"))
    for path, message in cases:
        status, _, err = run_main(["export", str(path), "-o", str(tmp_path / "o")], capsys)
        assert status == 2
        assert len(err.splitlines()) == 1
        assert err.startswith(f"python -m models export: error: {message}"), err


def test_bad_bundle_for_eval(tmp_path, capsys):
    status, _, err = run_main(["eval", str(tmp_path)], capsys)
    assert (status, err) == (2, (f"python -m models eval: error: {tmp_path / 'bundle.json'}: "
                                f"is missing\n"))


def test_real_process_exit_status_and_no_traceback():
    done = subprocess.run([sys.executable, "-m", "models", "train", "--beta", "-0.5"], cwd=ROOT,
                          check=False,
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "python -m models train: error: Beta must be in [0, 1] for lif, " \
                          "not -0.5\n"


def test_weights_in_the_bundle_are_the_quantized_checkpoint(tiny):
    ckpt, out = tiny
    net, _, _ = load_checkpoint(ckpt)
    bundle = B.load(out)
    for layer in bundle.neuron_layers:
        w = net.synapses[layer.name].weight.detach().double().numpy()
        scale = layer.neuron.threshold / net.cfg.threshold
        np.testing.assert_array_equal(layer.weight, np.round(w * scale).astype(np.int64))
