"""Data readers on small files written here in the real formats, plus split and standardisation."""

import gzip
import random

import numpy as np
import pytest

from dynamics.errors import DataError
from trainers.data import RawData, load_dataset, split, standardize
from trainers.data.cifar import RECORD, read_cifar10
from trainers.data.idx import read_mnist_idx
from trainers.data.npz import read_npz


def write_idx(path, array, compress=False):
    """Write ``array`` (uint8) as an IDX file by hand: 0, 0, 0x08, ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    content = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as handle:
            handle.write(content)
    else:
        path.write_bytes(content)
    return path


def fake_mnist(directory, n_train=7, n_test=3, compress=False, rows=4):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, rows, rows), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, compress)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reader_round_trips(tmp_path, compress):
    arrays = fake_mnist(tmp_path, compress=compress)
    raw = read_mnist_idx(str(tmp_path))
    np.testing.assert_array_equal(raw.x, arrays["train"][0].reshape(7, 16).astype(np.float64))
    np.testing.assert_array_equal(raw.y, arrays["train"][1])
    np.testing.assert_array_equal(raw.x_test, arrays["t10k"][0].reshape(3, 16))
    np.testing.assert_array_equal(raw.y_test, arrays["t10k"][1])
    assert raw.y.dtype == np.int64 and raw.n_classes == 10


def test_idx_reader_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*" + str(tmp_path)):
        read_mnist_idx(str(tmp_path))
    fake_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    content = bytearray(labels.read_bytes())
    content[3] = 3  # images magic in a label file
    labels.write_bytes(bytes(content))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*magic number 2051.*expected 2049"):
        read_mnist_idx(str(tmp_path))
    fake_mnist(tmp_path)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*declares shape"):
        read_mnist_idx(str(tmp_path))
    fake_mnist(tmp_path, n_train=7)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(6, np.uint8))
    with pytest.raises(DataError, match="7 images.*6 labels"):
        read_mnist_idx(str(tmp_path))
    with pytest.raises(DataError, match="data.data_dir"):
        read_mnist_idx("")
    with pytest.raises(DataError, match="does not exist"):
        read_mnist_idx(str(tmp_path / "nowhere"))


def write_cifar(path, n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    pixels = rng.integers(0, 256, size=(n, RECORD - 1), dtype=np.uint8)
    path.write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())
    return pixels, labels


@pytest.mark.parametrize("nested", [False, True])
def test_cifar_reader_round_trips(tmp_path, nested):
    directory = tmp_path / "cifar-10-batches-bin" if nested else tmp_path
    directory.mkdir(exist_ok=True)
    parts = [write_cifar(directory / f"data_batch_{i}.bin", 2 + i, i) for i in range(1, 6)]
    test = write_cifar(directory / "test_batch.bin", 4, 9)
    raw = read_cifar10(str(tmp_path))
    np.testing.assert_array_equal(raw.x, np.concatenate([p[0] for p in parts]).astype(np.float64))
    np.testing.assert_array_equal(raw.y, np.concatenate([p[1] for p in parts]))
    np.testing.assert_array_equal(raw.x_test, test[0])
    np.testing.assert_array_equal(raw.y_test, test[1])
    assert raw.x.shape == (25, 3072)


def test_cifar_reader_errors(tmp_path):
    with pytest.raises(DataError, match="data_batch_1.bin.*" + str(tmp_path)):
        read_cifar10(str(tmp_path))
    for i in range(1, 6):
        write_cifar(tmp_path / f"data_batch_{i}.bin", 2, i)
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * (RECORD + 1))
    with pytest.raises(DataError, match="test_batch.bin.*3074 bytes.*3073-byte record"):
        read_cifar10(str(tmp_path))
    content = bytearray(RECORD)
    content[0] = 12
    (tmp_path / "test_batch.bin").write_bytes(bytes(content))
    with pytest.raises(DataError, match=r"test_batch.bin: labels must lie in \[0, 10\)"):
        read_cifar10(str(tmp_path))


def test_npz_reader(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 2, 3)), rng.integers(0, 4, size=12)
    np.savez(tmp_path / "set.npz", x=x, y=y)
    raw = read_npz(str(tmp_path / "set.npz"))
    np.testing.assert_array_equal(raw.x, x.reshape(12, 6))
    np.testing.assert_array_equal(raw.y, y)
    assert raw.x_test is None and raw.n_classes == int(y.max()) + 1
    raw = read_npz(str(tmp_path))  # the only .npz in the directory
    assert raw.x.shape == (12, 6)
    np.savez(tmp_path / "set.npz", x=x, y=y, x_test=x[:3], y_test=np.array([0, 6, 1]))
    raw = read_npz(str(tmp_path / "set.npz"))
    assert raw.n_classes == 7 and raw.x_test.shape == (3, 6)


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((3, 2))}, r"lacks array\(s\) \['y'\]"),
    ({"x": np.zeros((3, 2)), "y": np.zeros(3)}, "integer class labels"),
    ({"x": np.zeros((3, 2)), "y": np.zeros(4, int)}, "3 examples but 'y' has 4"),
    ({"x": np.zeros((3, 2)), "y": np.array([0, 1, 1]), "x_test": np.zeros((1, 2))}, "both x_test and y_test"),
    ({"x": np.zeros((3, 2)), "y": np.array([0, -1, 1])}, "must be >= 0"),
    ({"x": np.array([[0.0], [np.nan]]), "y": np.array([0, 1])}, "NaN"),
    ({"x": np.array(["a", "b"], dtype=object).reshape(2, 1), "y": np.array([0, 1])}, "cannot read"),
])
def test_npz_reader_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        read_npz(str(tmp_path / "bad.npz"))


def test_npz_missing_file(tmp_path):
    with pytest.raises(DataError, match="missing data file 'no.npz'.*" + str(tmp_path)):
        read_npz(str(tmp_path / "no.npz"))
    with pytest.raises(DataError, match="exactly one .npz"):
        read_npz(str(tmp_path))


def test_split_is_seeded_partition():
    x = np.arange(40, dtype=float).reshape(20, 2)
    raw = RawData(x, np.arange(20) % 3, None, None, 3)
    a, b, c = split(raw, 0.25, 5), split(raw, 0.25, 5), split(raw, 0.25, 6)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    assert len(a.y) == 15 and len(a.y_test) == 5
    together = np.sort(np.concatenate([a.x[:, 0], a.x_test[:, 0]]))
    np.testing.assert_array_equal(together, x[:, 0])
    with pytest.raises(ValueError, match="test_fraction"):
        split(raw, 1.0, 0)


def test_standardize_uses_training_statistics_with_floor():
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 2.0, size=(50, 4))
    x[:, 3] = 7.0  # constant feature: floored scale
    x_test = rng.normal(size=(10, 4))
    out, out_test = standardize(x, x_test)
    std = x.std(axis=0)
    scale = np.maximum(std, 0.1 * std.mean())
    np.testing.assert_allclose(out_test, (x_test - x.mean(axis=0)) / scale, rtol=1e-13)
    np.testing.assert_allclose(out[:, :3].mean(axis=0), 0.0, atol=1e-13)
    np.testing.assert_allclose(out[:, :3].std(axis=0), 1.0, rtol=1e-13)
    np.testing.assert_array_equal(out[:, 3], 0.0)


def test_builtin_sets_and_caps():
    state = np.random.get_state()[1].copy(), random.getstate()
    data = load_dataset("mnist1d", n_train=500, n_test=200, split_seed=3)
    assert (data.x_train.shape, data.x_test.shape, data.n_classes) == ((500, 40), (200, 40), 10)
    np.testing.assert_array_equal(np.random.get_state()[1], state[0])  # global RNG untouched
    assert random.getstate() == state[1]
    again = load_dataset("mnist1d", n_train=500, n_test=200, split_seed=3)
    np.testing.assert_array_equal(data.x_train, again.x_train)
    digits = load_dataset("digits", test_fraction=0.25)
    assert digits.x_train.shape == (1348, 64) and digits.x_test.shape == (449, 64)
    np.testing.assert_allclose(digits.x_train.mean(axis=0), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        load_dataset("imagenet")


@pytest.mark.slow
def test_mnist5k():
    data = load_dataset("mnist5k")
    assert data.x_train.shape == (4000, 784) and data.x_test.shape == (1000, 784)
