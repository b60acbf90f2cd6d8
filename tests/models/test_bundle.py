"""Bundle contract (DESIGN.md section 4): round trips, and bad files rejected in one line."""
import copy
import json
import re
import zipfile

import numpy as np
import pytest

from models import bundle as B
from models.bundle import Bundle, BundleError, InputSpec, Layer, Leak, Neuron, Vectors

NEURON = Neuron("lif", "subtract", 100, 12, Leak("mul", beta=230, frac_bits=8))


def small_csnn():
    """conv2d -> spike_pool -> flatten -> linear, every field of the contract in use."""
    rng = np.random.default_rng(0)
    conv = Layer("conv1", "conv2d", (1, 6, 6), (2, 6, 6), rng.integers(-8, 8, (2, 1, 3, 3)),
                 np.array([3, -4]), 4, NEURON, kernel=3, stride=1, padding=1)
    pool = Layer("pool1", "spike_pool", (2, 6, 6), (2, 3, 3), kernel=2)
    flat = Layer("flat", "flatten", (2, 3, 3), (18,))
    fc = Layer("fc1", "linear", (18,), (4,), rng.integers(-100, 100, (4, 18)), None, 8,
               Neuron("lapicque", "zero", 50, 10, Leak("shift", shift=2)))
    events = np.array([[0, 0, 3, 1], [0, 0, 1, 1], [0, 2, 35, 1], [1, 1, 0, 1]])
    vec = Vectors(events, np.zeros((0, 3), dtype=np.int64), 2, 3, np.array([1, 2]),
                  np.array([0, 0]))
    return Bundle(InputSpec((1, 6, 6), 1, False, "rate", 3), [conv, pool, flat, fc],
                  provenance={"source": "test"}, vectors=vec)


def test_round_trip(tmp_path):
    original = small_csnn()
    B.save(original, tmp_path / "a")
    loaded = B.load(tmp_path / "a")
    assert loaded.to_json() == original.to_json()
    for a, b in zip(loaded.layers, original.layers):
        assert (a.weight is None) == (b.weight is None)
        if a.weight is not None:
            np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(loaded.vectors.events, original.vectors.events)
    np.testing.assert_array_equal(loaded.vectors.labels, original.vectors.labels)
    assert loaded.layers[0].bias_vector().tolist() == [3] * 36 + [-4] * 36
    # Written bytes depend only on the bundle (no timestamps).
    B.save(loaded, tmp_path / "b")
    for name in ("bundle.json", "weights.npz", "vectors.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def _write(tmp_path, obj, arrays, vectors=None):
    path = tmp_path / "bad"
    path.mkdir(exist_ok=True)
    (path / "bundle.json").write_text(json.dumps(obj))
    np.savez(path / "weights.npz", **arrays)
    if vectors is not None:
        np.savez(path / "vectors.npz", **vectors)
    return path


def _good(tmp_path):
    B.save(small_csnn(), tmp_path / "good")
    obj = json.loads((tmp_path / "good" / "bundle.json").read_text())
    with np.load(tmp_path / "good" / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    with np.load(tmp_path / "good" / "vectors.npz") as npz:
        vectors = {k: npz[k] for k in npz.files}
    return obj, arrays, vectors


def _set(obj, path, value):
    *head, last = path
    for key in head:
        obj = obj[key]
    if value is KeyError:
        del obj[last]
    else:
        obj[last] = value


JSON_CASES = [
    (("format",), "onnx", "bundle.json: format: must be 'snn-bundle', not 'onnx'"),
    (("version",), 2, "bundle.json: version: must be 1, not 2"),
    (("input",), KeyError, "bundle.json: input: is missing"),
    (("input", "shape"), [1, 0, 6], ("bundle.json: input.shape: must be a list of positive "
                                    "integers, not [1, 0, 6]")),
    (("input", "bits"), 17, "bundle.json: input.bits: must be at most 16, not 17"),
    (("input", "signed"), "no", "bundle.json: input.signed: must be true or false, not 'no'"),
    (("input", "signed"), True, ("bundle.json: input.bits: must be at least 2 for signed input, "
                                "not 1")),
    (("input", "encoding"), "morse", ("bundle.json: input.encoding: must be one of 'rate', "
                                     "'delta', 'direct', 'latency', 'raw', not 'morse'")),
    (("input", "steps"), 0, "bundle.json: input.steps: must be at least 1, not 0"),
    (("layers",), [], "bundle.json: layers: must hold at least one layer"),
    (("layers", 0, "kind"), "dense", ("bundle.json: layers[0].kind: must be one of 'linear', "
                                     "'conv2d', 'spike_pool', 'flatten', not 'dense'")),
    (("layers", 0, "out_shape"), [2, 5, 5], ("bundle.json: layers[0].out_shape: is [2, 5, 5] but "
                                            "kernel 3, stride 1, padding 1 give [2, 6, 6]")),
    (("layers", 0, "in_shape"), [1, 8, 8], ("bundle.json: layers[0].in_shape: is [1, 8, 8] but "
                                           "the previous layer gives [1, 6, 6]")),
    (("layers", 0, "weight_bits"), 1, ("bundle.json: layers[0].weight_bits: must be at least 2, "
                                      "not 1")),
    (("layers", 0, "neuron", "model"), "izhikevich",
     "bundle.json: layers[0].neuron.model: must be one of 'lif', 'lapicque', not 'izhikevich'"),
    (("layers", 0, "neuron", "reset"), "soft",
     ("bundle.json: layers[0].neuron.reset: must be one of 'subtract', 'zero', 'none', "
     "not 'soft'")),
    (("layers", 0, "neuron", "threshold"), 2048,
     "bundle.json: layers[0].neuron.threshold: must be at most 2047, not 2048"),
    (("layers", 0, "neuron", "threshold"), 1.5,
     "bundle.json: layers[0].neuron.threshold: must be an integer, not 1.5"),
    (("layers", 0, "neuron", "leak", "beta"), 257,
     "bundle.json: layers[0].neuron.leak.beta: must be at most 256, not 257"),
    (("layers", 0, "neuron", "leak", "mode"), "exp",
     "bundle.json: layers[0].neuron.leak.mode: must be one of 'mul', 'shift', not 'exp'"),
    (("layers", 3, "neuron", "leak", "shift"), 10,
     "bundle.json: layers[3].neuron.leak.shift: must be at most 9, not 10"),
    (("layers", 1, "kernel"), 7, "bundle.json: layers[1].kernel: 7 is larger than the input 6x6"),
    (("layers", 3, "in"), 17, "bundle.json: layers[3].in: is 17 but the previous layer gives 18"),
    (("layers", 3, "weight"), "fc9.weight",
     "bundle.json: layers[3].weight: names 'fc9.weight', which weights.npz does not hold"),
    (("layers", 3, "name"), "conv1", ("bundle.json: layers: names must be unique, not "
                                     "['conv1', 'pool1', 'flat', 'conv1']")),
    (("readout",), "membrane", ("bundle.json: readout: must be one of 'spike_count', "
                               "not 'membrane'")),
]


@pytest.mark.parametrize("path, value, message", JSON_CASES,
                         ids=[".".join(map(str, c[0])) + f"={c[1]!r}" for c in JSON_CASES])
def test_bad_bundle_json(tmp_path, path, value, message):
    obj, arrays, _ = _good(tmp_path)
    obj = copy.deepcopy(obj)
    _set(obj, path, value)
    with pytest.raises(BundleError) as info:
        B.load(_write(tmp_path, obj, arrays))
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_spike_pool_needs_an_image(tmp_path):
    obj, arrays, _ = _good(tmp_path)
    obj["layers"].insert(3, {"name": "pool2", "kind": "spike_pool", "kernel": 2})
    with pytest.raises(BundleError) as info:
        B.load(_write(tmp_path, obj, arrays))
    assert str(info.value) == "bundle.json: layers[3]: spike_pool needs a (C, H, W) input, not [18]"


ARRAY_CASES = [
    ("conv1.weight", np.full((2, 1, 3, 3), 8), ("weights.npz['conv1.weight']: holds 8, outside "
                                               "signed 4-bit range [-8, 7]")),
    ("conv1.weight", np.zeros((2, 1, 3, 2), dtype=np.int32),
     "weights.npz['conv1.weight']: must have shape [2, 1, 3, 3], not [2, 1, 3, 2]"),
    ("conv1.weight", np.zeros((2, 1, 3, 3)), ("weights.npz['conv1.weight']: must be an integer "
                                             "array, not float64")),
    ("conv1.bias", np.array([2048, 0]), ("weights.npz['conv1.bias']: holds 2048, outside signed "
                                        "12-bit range [-2048, 2047]")),
    ("fc1.weight", np.full((4, 18), -129), ("weights.npz['fc1.weight']: holds -129, outside "
                                           "signed 8-bit range [-128, 127]")),
]


@pytest.mark.parametrize("key, array, message", ARRAY_CASES)
def test_bad_weights(tmp_path, key, array, message):
    obj, arrays, _ = _good(tmp_path)
    with pytest.raises(BundleError) as info:
        B.load(_write(tmp_path, obj, {**arrays, key: array}))
    assert str(info.value) == message


VECTOR_CASES = [
    ("steps", np.int64(4), "vectors.npz['steps']: is 4 but bundle.json says 3"),
    ("events", np.array([[0, 1, 3, 1], [0, 0, 1, 1]]),
     "vectors.npz['events']: must be sorted by sample, then step"),
    ("events", np.array([[0, 0, 36, 1]]), "vectors.npz['events']: address outside [0, 36)"),
    ("events", np.array([[0, 0, 3, 2]]), ("vectors.npz['events']: value outside the input range "
                                         "[0, 1]")),
    ("events", np.array([[2, 0, 3, 1]]), "vectors.npz['events']: sample index outside [0, 2)"),
    ("events", np.array([[0, 3, 3, 1]]), "vectors.npz['events']: step index outside [0, 3)"),
    ("events", np.zeros((2, 3), dtype=np.int64),
     ("vectors.npz['events']: must be an integer array [n, 4] (sample, step, addr, value), "
      "not int64 [2, 3]")),
    ("spikes", None, "vectors.npz['spikes']: is missing"),
]


@pytest.mark.parametrize("key, value, message", VECTOR_CASES)
def test_bad_vectors(tmp_path, key, value, message):
    obj, arrays, vectors = _good(tmp_path)
    vectors = dict(vectors)
    if value is None:
        del vectors[key]
    else:
        vectors[key] = value
    with pytest.raises(BundleError) as info:
        B.load(_write(tmp_path, obj, arrays, vectors))
    assert str(info.value) == message


def test_unreadable_files(tmp_path):
    with pytest.raises(BundleError, match=r"^.*nowhere: is not a bundle folder$"):
        B.load(tmp_path / "nowhere")
    (tmp_path / "x").mkdir()
    with pytest.raises(BundleError, match=r"^.*bundle\.json: is missing$"):
        B.load(tmp_path / "x")
    obj, arrays, _ = _good(tmp_path)
    path = _write(tmp_path, obj, arrays)
    (path / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError) as info:
        B.load(path)
    assert str(info.value).startswith(f"{path / 'bundle.json'}: is not valid JSON (")
    (path / "bundle.json").write_text(json.dumps(obj))
    (path / "weights.npz").write_bytes(b"garbage")
    with pytest.raises(BundleError) as info:
        B.load(path)
    assert str(info.value) == (f"{path / 'weights.npz'}: is not an .npz archive (it does not "
                               f"start as a zip file)")
    assert "\n" not in str(info.value)


def test_save_refuses_out_of_range_weights(tmp_path):
    bundle = small_csnn()
    bundle.layers[3].weight = bundle.layers[3].weight * 2
    with pytest.raises(BundleError, match=r"^weights\.npz\['fc1\.weight'\]: holds -?\d+, outside "
                                          r"signed 8-bit range \[-128, 127\]$"):
        B.save(bundle, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_arrays_read_back_as_numpy_wrote_them(tmp_path):
    arrays = {"c": np.arange(12).reshape(3, 4), "f": np.asfortranarray(np.arange(6).reshape(2, 3)),
              "scalar": np.int64(5), "empty": np.zeros((0, 3), dtype=np.int32),
              "big": np.arange(-5, 5, dtype=">i2")}
    np.savez(tmp_path / "a.npz", **arrays)
    np.savez_compressed(tmp_path / "b.npz", **arrays)
    for name in ("a.npz", "b.npz"):
        read = B._read_npz(tmp_path / name)
        assert sorted(read) == sorted(arrays)
        for key, array in arrays.items():
            assert read[key].dtype == np.asarray(array).dtype
            np.testing.assert_array_equal(read[key], array)


def _npz_with_member(path, name, data):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name, data)


def _npy_bytes(header, data=b""):
    text = repr(header).encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


@pytest.mark.parametrize("name, data, message", [
    ("x.npy", _npy_bytes({"descr": "<i4", "fortran_order": False, "shape": (-1, -4)}, bytes(16)),
     r"\['x'\]: is not a readable \.npy array \(shape \[-1, -4\]\)$"),
    ("x.npy", _npy_bytes({"descr": "<i4", "fortran_order": False, "shape": (10 ** 12,)}),
     r"\['x'\]: is truncated or damaged: its header announces 4000000000000 bytes of data, "
     r"not 0$"),
    ("x.npy", _npy_bytes({"descr": "|O", "fortran_order": False, "shape": (1,)}, bytes(8)),
     r"\['x'\]: holds Python objects \(object\), not numbers$"),
    ("x.npy", b"\x93NUMPY\x01\x00\x04\x00{{{\n", r"\['x'\]: is not a readable \.npy array \("),
    ("x.txt", b"text", r"weights\.npz: holds 'x\.txt', which is not a \.npy array$"),
])
def test_damaged_members(tmp_path, name, data, message):
    obj, arrays, _ = _good(tmp_path)
    path = _write(tmp_path, obj, arrays)
    _npz_with_member(path / "weights.npz", name, data)
    with pytest.raises(BundleError, match=message):
        B.load(path)


def test_any_damage_is_a_bundle_error(tmp_path):
    """Cut each file anywhere, or change any byte: the bundle loads or fails in one line."""
    B.save(small_csnn(), tmp_path / "b")
    rng = np.random.default_rng(0)

    def refused(path, version):
        path.write_bytes(version)
        try:
            B.load(tmp_path / "b")
        except BundleError as exc:
            assert "\n" not in str(exc)
            assert re.search(r"bundle\.json|weights\.npz|vectors\.npz", str(exc)), str(exc)
            return True
        return False

    for name in ("bundle.json", "weights.npz", "vectors.npz"):
        path = tmp_path / "b" / name
        data = path.read_bytes()
        assert all(refused(path, data[:n]) for n in range(0, len(data) - 1, 5))
        for offset in rng.integers(0, len(data), 100):
            changed = bytearray(data)
            changed[offset] ^= int(rng.integers(1, 256))
            refused(path, bytes(changed))
        path.write_bytes(data)
    assert B.load(tmp_path / "b").to_json() == small_csnn().to_json()


def test_save_refuses_bad_vectors_and_writes_nothing(tmp_path):
    bundle = small_csnn()
    bundle.vectors.predictions = np.array([0, 4])
    with pytest.raises(BundleError, match=r"^vectors\.npz\['predictions'\]: holds 4, outside the "
                                          r"output classes \[0, 4\)$"):
        B.save(bundle, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _paths(obj, prefix=()):
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) \
        else ()
    for key, value in items:
        yield from _paths(value, prefix + (key,))


ODD_VALUES = [None, [], {}, "x", 1.5, -1, 0, True, 10 ** 30, float("nan"), [1, 2], {"a": 1},
              KeyError]


def test_any_odd_value_in_bundle_json_is_a_bundle_error(tmp_path):
    """Replace or remove any value of bundle.json: the bundle parses or fails in one line."""
    obj, arrays, vectors = _good(tmp_path)
    refused = 0
    for path in _paths(obj):
        for value in ODD_VALUES:
            if not path and value is KeyError:
                continue
            changed = copy.deepcopy(obj)
            if path:
                _set(changed, path, value)
            else:
                changed = value
            try:
                B.parse(changed, arrays, vectors)
            except BundleError as exc:
                refused += 1
                assert "\n" not in str(exc)
    assert refused > 500
