"""Every command line that reads a bundle refuses a corrupt one in one line (DESIGN.md section 4).

Each case damages a fresh copy of a small valid bundle in one way; each command line
(``python -m gen``, ``verif``, ``boards build``, ``boards run``, ``models eval``) must then exit
with status 2, print nothing on stdout and exactly one line on stderr that names the damaged
file and the fault, show no traceback, and write nothing. Every case calls each command line's
``main(argv)``; a dozen of them also run it as a real process (``python -m``), which is slower.
"""
import importlib
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models import bundle as bundle_io
from models import golden
from models.synth import random_events, random_linear_bundle

ROOT = Path(__file__).resolve().parents[1]
SAMPLES, STEPS, N_IN, N_OUT = 2, 3, 6, 4


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """6 -> 5 -> 4 linear layers with biases, and vectors with labels and predictions."""
    bundle = random_linear_bundle(n_in=N_IN, n_out=N_OUT, sparsity=0.5, seed=3, steps=STEPS,
                                  layers=2, hidden=5)
    events = random_events(np.random.default_rng(0), samples=SAMPLES, steps=STEPS, n_in=N_IN,
                           density=0.4)
    bundle.vectors = golden.make_vectors(bundle, events, SAMPLES, labels=[1, 3])
    return bundle_io.save(bundle, tmp_path_factory.mktemp("good") / "bundle")


# Ways to damage one file of the bundle folder `d`.

def edit_json(change):
    def corrupt(d):
        obj = json.loads((d / "bundle.json").read_text())
        change(obj)
        (d / "bundle.json").write_text(json.dumps(obj, indent=2))
    return corrupt


def edit_text(old, new):
    def corrupt(d):
        text = (d / "bundle.json").read_text()
        assert old in text
        (d / "bundle.json").write_text(text.replace(old, new, 1))
    return corrupt


def edit_npz(name, change):
    def corrupt(d):
        with np.load(d / name) as npz:
            arrays = {key: npz[key] for key in npz.files}
        change(arrays)
        np.savez(d / name, **arrays)               # allows object arrays (pickled), on purpose
    return corrupt


def set_array(name, key, value):
    def change(arrays):
        arrays[key] = value(arrays[key]) if callable(value) else value
    return edit_npz(name, change)


def drop_array(name, key):
    return edit_npz(name, lambda arrays: arrays.pop(key))


def truncate(name):
    def corrupt(d):
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[:len(data) // 2])
    return corrupt


def replace(name, data):
    def corrupt(d):
        (d / name).write_bytes(data)
    return corrupt


def npy_as_npz(name):
    def corrupt(d):
        buf = io.BytesIO()
        np.save(buf, np.zeros((N_OUT, N_IN), dtype=np.int32))
        (d / name).write_bytes(buf.getvalue())
    return corrupt


def flip_compressed_byte(name):
    """Damage the deflated data of the archive's first member (its CRC no longer holds)."""
    def corrupt(d):
        data = bytearray((d / name).read_bytes())
        with zipfile.ZipFile(d / name) as zf:
            first = zf.infolist()[0]
        start = first.header_offset + 30 + len(first.filename.encode())
        data[start + first.compress_size // 2] ^= 0x55
        (d / name).write_bytes(bytes(data))
    return corrupt


def layer(index, *path):
    """A setter for a field of layer ``index`` (``path`` into its object); value KeyError drops."""
    def setter(value):
        def change(obj):
            target = obj["layers"][index]
            for key in path[:-1]:
                target = target[key]
            if value is KeyError:
                del target[path[-1]]
            else:
                target[path[-1]] = value
        return edit_json(change)
    return setter


def rename(obj, old, new):
    obj[new] = obj.pop(old)


W, V, J = "weights.npz", "vectors.npz", "bundle.json"

# (case id, damage, file named in the message, what the message must say about the fault)
CASES = [
    # weights.npz: the archive itself
    ("weights-truncated", truncate(W), W, r"cannot be read: the archive is truncated"),
    ("weights-empty", replace(W, b""), W, r": is empty$"),
    ("weights-not-a-zip", replace(W, b"weights, not a zip"), W, r"is not an \.npz archive"),
    ("weights-npy-as-npz", npy_as_npz(W), W, r"is a single \.npy array, not an \.npz archive"),
    ("weights-bad-crc", flip_compressed_byte(W), W, r"archive is truncated or damaged"),
    # weights.npz: the arrays
    ("weights-extra-array", set_array(W, "fc9.weight", np.zeros((4, 5), np.int32)), W,
     r"\['fc9\.weight'\]: is not named by any layer"),
    ("weights-missing-array", drop_array(W, "fc2.bias"), W,
     r"layers\[1\]\.bias: names 'fc2\.bias', which weights\.npz does not hold"),
    ("weights-float", set_array(W, "fc1.weight", lambda a: a.astype(np.float64)), W,
     r"\['fc1\.weight'\]: must be an integer array, not float64"),
    ("weights-bool", set_array(W, "fc1.weight", lambda a: a != 0), W,
     r"\['fc1\.weight'\]: must be an integer array, not bool"),
    ("weights-object", set_array(W, "fc1.bias", lambda a: a.astype(object)), W,
     r"\['fc1\.bias'\]: holds Python objects"),
    ("weights-shape", set_array(W, "fc1.weight", lambda a: a.T.copy()), W,
     r"\['fc1\.weight'\]: must have shape \[5, 6\], not \[6, 5\]"),
    ("weights-out-of-range", set_array(W, "fc2.weight", lambda a: a + 200), W,
     r"\['fc2\.weight'\]: holds \d+, outside signed 8-bit range \[-128, 127\]"),
    # bundle.json: the text
    ("json-truncated", truncate(J), J, r": is not valid JSON \("),
    ("json-empty", replace(J, b"  \n"), J, r": is empty$"),
    ("json-not-utf8", replace(J, b'{"format": "snn-bundle\xff"}'), J, r": is not UTF-8 text"),
    ("json-top-level-array", replace(J, b"[1, 2]"), J,
     r"bundle\.json: must hold a JSON object, not list"),
    ("json-duplicate-field", edit_text('"threshold": 29', '"threshold": 29, "threshold": 30'), J,
     r": holds the field 'threshold' twice"),
    # bundle.json: values
    ("json-nan-threshold", edit_text('"threshold": 29', '"threshold": NaN'), J,
     r"layers\[0\]\.neuron\.threshold: must be an integer, not nan"),
    ("json-future-version", edit_json(lambda o: o.update(version=2)), J,
     r"bundle\.json: version: must be 1, not 2"),
    ("json-version-true", edit_json(lambda o: o.update(version=True)), J,
     r"bundle\.json: version: must be 1, not True"),
    ("json-unknown-kind", layer(1, "kind")("dense"), J,
     r"layers\[1\]\.kind: must be one of .*, not 'dense'"),
    ("json-unknown-model", layer(0, "neuron", "model")("izhikevich"), J,
     r"layers\[0\]\.neuron\.model: must be one of 'lif', 'lapicque', not 'izhikevich'"),
    ("json-unknown-reset", layer(0, "neuron", "reset")("soft"), J,
     r"layers\[0\]\.neuron\.reset: must be one of .*, not 'soft'"),
    ("json-unknown-leak-mode", layer(1, "neuron", "leak", "mode")("exp"), J,
     r"layers\[1\]\.neuron\.leak\.mode: must be one of 'mul', 'shift', not 'exp'"),
    ("json-unknown-encoding", edit_json(lambda o: o["input"].update(encoding="morse")), J,
     r"input\.encoding: must be one of .*, not 'morse'"),
    ("json-zero-steps", edit_json(lambda o: o["input"].update(steps=0)), J,
     r"input\.steps: must be at least 1, not 0"),
    ("json-weight-bits-too-small", layer(0, "weight_bits")(1), J,
     r"layers\[0\]\.weight_bits: must be at least 2, not 1"),
    ("json-in-mismatch", layer(1, "in")(6), J,
     r"layers\[1\]\.in: is 6 but the previous layer gives 5"),
    # bundle.json: fields that are not in the contract
    ("json-layer-typo", edit_json(lambda o: rename(o["layers"][0], "weight_bits", "wieght_bits")),
     J, r"layers\[0\]\.wieght_bits: is not a field of a linear layer "
        r"\(did you mean 'weight_bits'\?\)"),
    ("json-layer-strid", layer(1, "strid")(2), J,
     r"layers\[1\]\.strid: is not a field of a linear layer"),
    ("json-input-field", edit_json(lambda o: rename(o["input"], "steps", "step")), J,
     r"input\.step: is not a field of the input \(did you mean 'steps'\?\)"),
    ("json-neuron-field", layer(0, "neuron", "treshold")(10), J,
     r"layers\[0\]\.neuron\.treshold: is not a field of a neuron "
     r"\(did you mean 'threshold'\?\)"),
    ("json-leak-field", layer(0, "neuron", "leak", "beta")(200), J,
     r"layers\[0\]\.neuron\.leak\.beta: is not a field of a shift leak"),
    ("json-top-field", edit_json(lambda o: o.update(readuot="spike_count")), J,
     r"bundle\.json: readuot: is not a field of a bundle \(did you mean 'readout'\?\)"),
    # vectors.npz: the archive itself
    ("vectors-truncated", truncate(V), V, r"cannot be read: the archive is truncated"),
    ("vectors-empty", replace(V, b""), V, r": is empty$"),
    ("vectors-npy-as-npz", npy_as_npz(V), V, r"is a single \.npy array, not an \.npz archive"),
    ("vectors-bad-crc", flip_compressed_byte(V), V, r"archive is truncated or damaged"),
    # vectors.npz: the arrays
    ("vectors-extra-array", set_array(V, "label", np.array([1, 3])), V,
     r"\['label'\]: is not an array of the contract"),
    ("vectors-missing-events", drop_array(V, "events"), V, r"\['events'\]: is missing"),
    ("vectors-samples-array", set_array(V, "samples", np.array([2, 2])), V,
     r"\['samples'\]: must be an integer scalar, not int64 \[2\]"),
    ("vectors-samples-negative", set_array(V, "samples", np.int64(-1)), V,
     r"\['samples'\]: must be at least 1, not -1"),
    ("vectors-steps-float", set_array(V, "steps", np.float64(3)), V,
     r"\['steps'\]: must be an integer scalar, not float64 \[\]"),
    ("vectors-steps-zero", set_array(V, "steps", np.int64(0)), V,
     r"\['steps'\]: must be at least 1, not 0"),
    ("vectors-steps-mismatch", set_array(V, "steps", np.int64(4)), V,
     r"\['steps'\]: is 4 but bundle\.json says 3"),
    ("vectors-events-address", set_array(V, "events", np.array([[0, 0, N_IN, 1]])), V,
     r"\['events'\]: address outside \[0, 6\)"),
    ("vectors-spike-sample", set_array(V, "spikes", np.array([[SAMPLES, 0, 0]])), V,
     r"\['spikes'\]: holds sample index 2, outside \[0, 2\)"),
    ("vectors-spike-step", set_array(V, "spikes", np.array([[0, -1, 0]])), V,
     r"\['spikes'\]: holds step index -1, outside \[0, 3\)"),
    ("vectors-spike-address", set_array(V, "spikes", np.array([[0, 0, N_OUT]])), V,
     r"\['spikes'\]: holds address 4, outside \[0, 4\)"),
    ("vectors-spike-columns", set_array(V, "spikes", np.zeros((2, 4), np.int64)), V,
     r"\['spikes'\]: must be an integer array \[n, 3\] \(sample, step, addr\), not int64 \[2, 4\]"),
    ("vectors-labels-length", set_array(V, "labels", np.array([1])), V,
     r"\['labels'\]: must be an integer array \[2\] \(one per sample\), not int64 \[1\]"),
    ("vectors-labels-float", set_array(V, "labels", np.array([1.0, 3.0])), V,
     r"\['labels'\]: must be an integer array \[2\] .*, not float64 \[2\]"),
    ("vectors-labels-2d", set_array(V, "labels", np.array([[1, 3]])), V,
     r"\['labels'\]: must be an integer array \[2\] .*, not int64 \[1, 2\]"),
    ("vectors-labels-negative", set_array(V, "labels", np.array([1, -3])), V,
     r"\['labels'\]: holds -3, but a class is at least 0"),
    ("vectors-prediction-range", set_array(V, "predictions", np.array([0, N_OUT])), V,
     r"\['predictions'\]: holds 4, outside the output classes \[0, 4\)"),
    ("vectors-prediction-negative", set_array(V, "predictions", np.array([-1, 0])), V,
     r"\['predictions'\]: holds -1, but a class is at least 0"),
]


#: The cases also run end to end, as real processes: one or more of each kind of fault.
PROCESS_CASES = ["weights-truncated", "weights-npy-as-npz", "weights-object", "weights-extra-array",
                 "json-not-utf8", "json-top-level-array", "json-nan-threshold", "json-layer-typo",
                 "vectors-truncated", "vectors-samples-array", "vectors-spike-address",
                 "vectors-labels-2d"]

#: Where the ``main(argv)`` of each ``python -m`` package lives.
MAINS = {"gen": "gen.__main__", "verif": "verif.__main__", "boards": "boards.__main__",
         "models": "models.cli"}


def commands(bundle, out):
    """Each command line that reads a bundle: (name, argv after -m, the prefix of its error)."""
    b, o = str(bundle), str(out)
    return [
        ("gen", ["gen", "--bundle", b, "-o", o], "python -m gen: error: bad bundle: "),
        ("verif", ["verif", "--bundle", b, "--json", f"{o}/result.json"],
         "python -m verif: error: "),
        ("boards build", ["boards", "build", "--bundle", b, "-o", o],
         "python -m boards build: error: "),
        ("boards run", ["boards", "run", "--port", f"{o}/tty", "--bundle", b,
                        "--json", f"{o}/run.json"], "python -m boards run: error: "),
        ("models eval", ["models", "eval", b], "python -m models eval: error: "),
    ]


def problems_of(name, status, stdout, stderr, prefix, file, fault):
    """What is wrong with one command line's refusal (an empty list when nothing is)."""
    checks = {
        "exit status 2": status == 2,
        "no traceback": "Traceback" not in stdout + stderr,
        "nothing on stdout": stdout == "",
        "one line on stderr": len(stderr.splitlines()) == 1 and stderr.endswith("\n"),
        "the command's error prefix": stderr.startswith(prefix),
        f"names {file}": file in stderr,
        "says the fault": re.search(fault, stderr.rstrip("\n")) is not None,
    }
    failed = [what for what, ok in checks.items() if not ok]
    if not failed:
        return []
    return [f"{name}: exit status {status}, fails {failed}\n  stdout: {stdout!r}\n"
            f"  stderr: {stderr!r}"]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def damaged_copy(good, tmp_path, damage):
    bundle = tmp_path / "bundle"
    shutil.copytree(good, bundle)
    damage(bundle)
    with pytest.raises(bundle_io.BundleError):     # the damage is real
        bundle_io.load(bundle)
    return bundle, tmp_path / "out", snapshot(tmp_path)


@pytest.mark.parametrize("damage, file, fault", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_every_command_line_refuses(good, tmp_path, capsys, damage, file, fault):
    bundle, out, before = damaged_copy(good, tmp_path, damage)
    problems = []
    for name, argv, prefix in commands(bundle, out):
        main = importlib.import_module(MAINS[argv[0]]).main
        try:                                       # any other exception fails the test
            status = main(argv[1:])
        except SystemExit as exc:
            status = exc.code
        stdout, stderr = capsys.readouterr()
        problems += problems_of(name, status, stdout, stderr, prefix, file, fault)
    assert not problems, "\n".join(problems)
    assert not out.exists()
    assert snapshot(tmp_path) == before            # nothing written, the bundle untouched


@pytest.mark.parametrize("damage, file, fault", [c[1:] for c in CASES if c[0] in PROCESS_CASES],
                         ids=[c[0] for c in CASES if c[0] in PROCESS_CASES])
def test_every_process_refuses(good, tmp_path, damage, file, fault):
    """As above, through ``python -m`` in real processes (run concurrently)."""
    bundle, out, before = damaged_copy(good, tmp_path, damage)
    runs = [(name, prefix, subprocess.Popen([sys.executable, "-m", *argv], cwd=ROOT, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            for name, argv, prefix in commands(bundle, out)]
    problems = []
    for name, prefix, proc in runs:
        stdout, stderr = proc.communicate(timeout=120)
        problems += problems_of(name, proc.returncode, stdout, stderr, prefix, file, fault)
    assert not problems, "\n".join(problems)
    assert not out.exists()
    assert snapshot(tmp_path) == before


def test_the_good_bundle_is_accepted(good, tmp_path):
    """The control: the undamaged bundle loads and runs, so each refusal is the damage's."""
    bundle = bundle_io.load(good)
    assert bundle.vectors.samples == SAMPLES and bundle.n_out == N_OUT
    done = subprocess.run([sys.executable, "-m", "models", "eval", str(good)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")
    assert "vectors match the golden model" in done.stdout
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "gen", "--bundle", str(good), "-o", str(out),
                           "-q"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr) == (0, "")
    assert (out / "snn_top.v").is_file()


def test_the_cases_cover_each_file():
    ids, files = [c[0] for c in CASES], [c[2] for c in CASES]
    assert len(ids) >= 25 and len(set(ids)) == len(ids) and set(PROCESS_CASES) <= set(ids)
    assert all(files.count(f) >= 10 for f in (J, W, V))
