"""Malformed data files and extreme values: one DataError naming the file, never a silent wrong value.

References are computed here, independently of :mod:`trainers.data`: standardisation by the textbook
formula in extended precision (``np.longdouble``, whose exponent range holds the squares of 1e300).
"""

import numpy as np
import pytest

from dynamics.cli import main
from dynamics.errors import DataError
from trainers.data import load_dataset, standardize
from trainers.data.npz import read_npz


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def good_arrays(n=12, d=3, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, d)), "y": np.arange(n) % classes}


@pytest.mark.parametrize("cut", [0, 10, 100, -20])
def test_truncated_npz_is_a_data_error(tmp_path, cut):
    path = save_npz(tmp_path / "d.npz", **good_arrays())
    content = path.read_bytes()
    path.write_bytes(content[:cut] if cut >= 0 else content[:cut])
    with pytest.raises(DataError, match="d.npz"):
        read_npz(str(path))


def test_npy_where_npz_expected(tmp_path):
    path = tmp_path / "d.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.zeros((4, 2)))
    with pytest.raises(DataError, match="single .npy array.*np.savez"):
        read_npz(str(path))


def test_random_bytes_are_a_data_error(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match="noise.npz"):
        read_npz(str(path))


@pytest.mark.parametrize("labels", [
    np.array([0, 1, 2**63], dtype=np.uint64),           # would wrap to -2**63
    np.array([0, 1, 2**64 - 1], dtype=np.uint64),       # would wrap to -1
    np.array([0, 1, 2**63 + 5, 1], dtype=np.uint64),
])
def test_unsigned_labels_beyond_int64_are_refused(tmp_path, labels):
    x = np.ones((len(labels), 2))
    path = save_npz(tmp_path / "d.npz", x=x, y=labels)
    with pytest.raises(DataError, match="d.npz"):
        read_npz(str(path))


@pytest.mark.parametrize("labels", [[0, 1, 10**9], [0, 1, 7], [0, 0, 1, 100_001]])
def test_labels_far_beyond_the_class_count_are_refused(tmp_path, labels):
    path = save_npz(tmp_path / "d.npz", x=np.ones((len(labels), 2)), y=np.array(labels))
    with pytest.raises(DataError, match="relabel"):
        read_npz(str(path))


def test_labels_with_few_gaps_are_kept(tmp_path):
    path = save_npz(tmp_path / "d.npz", x=np.ones((4, 2)), y=np.array([0, 1, 2, 5]))
    raw = read_npz(str(path))
    assert raw.n_classes == 6 and raw.y.dtype == np.int64
    np.testing.assert_array_equal(raw.y, [0, 1, 2, 5])


def test_test_split_labels_count_towards_the_classes(tmp_path):
    path = save_npz(tmp_path / "d.npz", x=np.ones((4, 2)), y=np.array([0, 1, 0, 1]),
                    x_test=np.ones((2, 2)), y_test=np.array([2, 2], dtype=np.uint64))
    raw = read_npz(str(path))
    assert raw.n_classes == 3 and raw.y_test.dtype == np.int64


@pytest.mark.parametrize("x", [np.ones((5, 0)), np.ones((5, 0, 3)), np.ones((5, 4, 0))])
def test_zero_features_are_refused(tmp_path, x):
    path = save_npz(tmp_path / "d.npz", x=x, y=np.arange(5) % 2)
    with pytest.raises(DataError, match="zero features"):
        read_npz(str(path))


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("imag", [0.0, 1.5])
def test_complex_features_are_refused(tmp_path, dtype, imag):
    x = (np.ones((6, 2)) + 1j * imag).astype(dtype)
    path = save_npz(tmp_path / "d.npz", x=x, y=np.arange(6) % 2)
    with pytest.raises(DataError, match="complex"):
        read_npz(str(path))


def textbook_standardize(x_train, x_test):
    """(x − μ)/max(σ, 0.1·mean σ) in extended precision, as float64."""
    a, b = x_train.astype(np.longdouble), x_test.astype(np.longdouble)
    mean = a.mean(axis=0)
    std = np.sqrt(((a - mean) ** 2).mean(axis=0))
    scale = np.maximum(std, 0.1 * std.mean())
    return [((m - mean) / scale).astype(np.float64) for m in (a, b)]


@pytest.mark.parametrize("scales", [[1e300, 1e300, 1e300], [1e300, 1.0, 1e-300], [1e-300] * 3,
                                    [1e307, 3e307, 1e200], [1.0, 2.0, 3.0]])
def test_standardize_is_overflow_free(scales):
    if np.finfo(np.longdouble).maxexp < 2048:
        pytest.skip("np.longdouble has no extended exponent range on this platform")
    rng = np.random.default_rng(5)
    x = rng.normal(0.5, 1.0, size=(40, 3)) * np.array(scales)
    x_test = rng.normal(0.5, 1.0, size=(7, 3)) * np.array(scales)
    got = standardize(x, x_test)
    want = textbook_standardize(x, x_test)
    for g, w in zip(got, want):
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_large_features_through_the_npz_reader(tmp_path):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(30, 4)) * 1e300
    path = save_npz(tmp_path / "d.npz", x=x, y=np.arange(30) % 3)
    data = load_dataset("npz", str(path), test_fraction=0.2)
    assert np.isfinite(data.x_train).all()
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", ["mnist1d", "digits", "mnist5k"])
def test_data_dir_for_a_bundled_set_is_an_error(tmp_path, name):
    with pytest.raises(DataError, match=f"'{name}' is bundled"):
        load_dataset(name, str(tmp_path))


def test_cli_data_dir_for_a_bundled_set_is_one_line(tmp_path, capsys):
    status = main(["train", "--optimizer", "adam", "--preset", "digits", "--data-dir", str(tmp_path),
                   "--out", str(tmp_path / "a.zarr"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "'digits' is bundled" in err[0]
    assert not (tmp_path / "a.zarr").exists()


def test_cli_truncated_npz_is_one_line(tmp_path, capsys):
    path = save_npz(tmp_path / "d.npz", **good_arrays())
    path.write_bytes(path.read_bytes()[:50])
    config = tmp_path / "c.toml"
    config.write_text('preset = "digits"\n[data]\nname = "npz"\n')
    status = main(["train", "--optimizer", "adam", "--config", str(config), "--data-dir", str(path),
                   "--out", str(tmp_path / "a.zarr"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "d.npz" in err[0]
