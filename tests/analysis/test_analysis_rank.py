"""Effective ranks on matrices with known spectra, against the textbook formulas."""

import numpy as np
import pytest
import torch

from analysis.rank import effective_rank, rank_of_spectrum
from analysis_textbook import centred_orthonormal_columns, random_orthogonal


def textbook_ranks(s):
    s = np.asarray(s, dtype=float)
    p = s[s > 0] / s.sum()
    return {
        "entropy": np.exp(-np.sum(p * np.log(p))),
        "participation": np.sum(s ** 2) ** 2 / np.sum(s ** 4),
        "stable": np.sum(s ** 2) / np.max(s) ** 2,
        "numerical": np.count_nonzero(s > 1e-9 * np.max(s)),
    }


def data_with_spectrum(n, d, s, rng):
    """X (n, d) whose column-centred singular values are exactly s (len(s) ≤ min(n − 1, d))."""
    u = centred_orthonormal_columns(n, len(s), rng)
    v = random_orthogonal(d, rng)[:, : len(s)]
    return u @ np.diag(s) @ v.T + rng.normal(size=d)  # a translation: centring removes it


SPECTRA = [[1.0], [3.0, 3.0, 3.0], [5.0, 2.0, 1.0, 0.1], list(np.geomspace(10, 1e-3, 12)), [1.0, 1e-12]]


@pytest.mark.parametrize("s", SPECTRA)
@pytest.mark.parametrize("kind", ["entropy", "participation", "stable", "numerical"])
def test_data_matrix_ranks_match_textbook(s, kind):
    rng = np.random.default_rng(len(s))
    x = data_with_spectrum(40, 15, s, rng)
    expected = textbook_ranks(s)[kind]
    tol = {"tol": 1e-9 * max(s)} if kind == "numerical" else {}
    assert effective_rank(x, kind=kind, **tol) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("s", SPECTRA)
@pytest.mark.parametrize("kind", ["entropy", "participation", "stable", "numerical"])
def test_kernel_ranks_use_eigenvalues(s, kind):
    rng = np.random.default_rng(7)
    q = random_orthogonal(20, rng)[:, : len(s)]
    k = q @ np.diag(s) @ q.T
    tol = {"tol": 1e-9 * max(s)} if kind == "numerical" else {}
    assert effective_rank(k, kind=kind, matrix="kernel", **tol) == pytest.approx(textbook_ranks(s)[kind], rel=1e-9)


def test_default_numerical_tolerance_is_size_times_eps_times_largest():
    rng = np.random.default_rng(8)
    x = data_with_spectrum(40, 15, [1.0, 1e-12], rng)
    assert effective_rank(x, kind="numerical") == 2.0  # 1e-12 > 40 · 2.2e-16
    assert effective_rank(x.astype(np.float32), kind="numerical") == 1.0  # float32 eps: 40 · 1.2e-7


def test_flat_spectrum_gives_the_dimension_for_every_kind():
    x = data_with_spectrum(30, 10, [2.0] * 6, np.random.default_rng(3))
    for kind in ("entropy", "participation", "stable", "numerical"):
        assert effective_rank(x, kind=kind) == pytest.approx(6.0, rel=1e-9)


def test_kernel_of_data_has_the_squared_spectrum():
    rng = np.random.default_rng(4)
    s = [4.0, 2.0, 1.0, 0.5]
    x = data_with_spectrum(25, 9, s, rng)
    xc = x - x.mean(axis=0)
    expected = textbook_ranks(np.square(s))["entropy"]
    assert effective_rank(xc @ xc.T, matrix="kernel") == pytest.approx(expected, rel=1e-9)
    assert effective_rank(x) == pytest.approx(textbook_ranks(s)["entropy"], rel=1e-9)


def test_float32_torch_input_and_its_numerical_tolerance():
    rng = np.random.default_rng(5)
    s = [3.0, 1.0, 0.2]
    x = torch.tensor(data_with_spectrum(50, 12, s, rng), dtype=torch.float32)
    for kind in ("entropy", "participation", "stable"):
        assert effective_rank(x, kind=kind) == pytest.approx(textbook_ranks(s)[kind], rel=1e-4)
    assert effective_rank(x, kind="numerical") == 3.0  # float32 noise lies below 50·eps32·σ_max
    assert effective_rank(x, kind="numerical", tol=0.5) == 2.0


def test_zero_matrix_gives_nan_with_warning_and_numerical_zero():
    for kind in ("entropy", "participation", "stable"):
        with pytest.warns(RuntimeWarning, match="all-zero spectrum"):
            assert np.isnan(effective_rank(np.ones((6, 3)), kind=kind))  # constant data
        with pytest.warns(RuntimeWarning, match="all-zero spectrum"):
            assert np.isnan(effective_rank(np.zeros((4, 4)), kind=kind, matrix="kernel"))
    assert effective_rank(np.ones((6, 3)), kind="numerical") == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="'bogus'"):
        effective_rank(np.eye(3), kind="bogus")
    with pytest.raises(ValueError, match="'gram'"):
        effective_rank(np.eye(3), matrix="gram")
    with pytest.raises(ValueError, match="not symmetric"):
        effective_rank(np.array([[1.0, 2.0], [0.0, 1.0]]), matrix="kernel")
    with pytest.raises(ValueError, match="not positive semi-definite"):
        effective_rank(np.diag([1.0, -1.0]), matrix="kernel")
    with pytest.raises(ValueError, match="square"):
        effective_rank(np.ones((3, 2)), matrix="kernel")
    with pytest.raises(ValueError, match="tol"):
        effective_rank(np.eye(3), kind="numerical", tol=-1.0)
    with pytest.raises(ValueError, match="non-negative"):
        rank_of_spectrum([1.0, -2.0])
    with pytest.raises(ValueError, match="NaN"):
        effective_rank(np.array([[np.nan, 1.0], [1.0, 2.0]]))
