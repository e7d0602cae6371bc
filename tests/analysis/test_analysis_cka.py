"""Linear, RBF and minibatch CKA against explicit n×n textbook computations."""

import itertools

import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr

from analysis.cka import linear_cka, minibatch_cka, rbf_cka
from analysis.cka_chunked import LinearCKAAccumulator
from analysis_textbook import (centering_matrix, cka_from_kernels, hsic_unbiased, linear_cka_textbook,
                               random_orthogonal, rbf_kernel_textbook)

SHAPES = list(itertools.product([6, 40, 150], [3, 25, 200], [2, 60]))  # N, D1, D2: both Gram and feature routes


def related_pair(n, d1, d2, seed, offset=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1)) + offset
    y = np.tanh(x @ rng.normal(size=(d1, d2))) + 0.5 * rng.normal(size=(n, d2)) - offset
    return x, y


@pytest.mark.parametrize("n,d1,d2", SHAPES)
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_matches_textbook_float64(n, d1, d2, debiased):
    x, y = related_pair(n, d1, d2, seed=n + d1 + d2)
    expected = linear_cka_textbook(x, y, debiased=debiased)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("n,d1,d2", [(40, 25, 60), (150, 3, 2)])
def test_linear_cka_float32_torch_within_float32_tolerance(n, d1, d2):
    x, y = related_pair(n, d1, d2, seed=1)
    expected = linear_cka_textbook(x, y)
    got = linear_cka(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    assert got == pytest.approx(expected, rel=1e-5)  # float32 storage: ~1e-7 relative input error


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("debiased", [False, True])
def test_chunked_equals_in_memory(chunk, debiased):
    x, y = related_pair(150, 25, 60, seed=3, offset=30.0)  # a large offset tests the shifted accumulation
    assert linear_cka(x, y, debiased=debiased, chunk_size=chunk) == pytest.approx(
        linear_cka(x, y, debiased=debiased), rel=1e-9, abs=1e-12)


def test_dask_input_is_processed_chunkwise_with_the_in_memory_value():
    x, y = related_pair(200, 30, 10, seed=4)
    lazy_x, lazy_y = da.from_array(x, chunks=(33, 30)), da.from_array(y, chunks=(50, 10))
    rep = xr.DataArray(lazy_x, dims=("probe", "unit"))
    for debiased in (False, True):
        expected = linear_cka(x, y, debiased=debiased)
        assert linear_cka(lazy_x, lazy_y, debiased=debiased) == pytest.approx(expected, rel=1e-10)
        assert linear_cka(rep, y, debiased=debiased) == pytest.approx(expected, rel=1e-10)


def test_accumulator_rejects_changing_widths_and_too_few_samples():
    acc = LinearCKAAccumulator()
    acc.update(np.ones((2, 3)) * [[1], [2]], np.arange(4.0).reshape(2, 2))
    with pytest.raises(ValueError, match="debiased"):
        acc.cka(debiased=True)
    with pytest.raises(ValueError, match="differ"):
        acc.update(np.ones((2, 4)), np.ones((2, 2)))


def test_linear_cka_invariances():
    rng = np.random.default_rng(5)
    x, y = related_pair(80, 12, 9, seed=5)
    base = linear_cka(x, y)
    q = random_orthogonal(12, rng)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)          # orthogonal map
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, rel=1e-10)  # isotropic scaling
    assert linear_cka(x + rng.normal(size=12), y - 5.0) == pytest.approx(base, rel=1e-10)  # translation
    assert linear_cka(x * np.linspace(0.1, 10, 12), y) != pytest.approx(base, rel=1e-3)  # anisotropic scaling
    assert linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), rel=1e-12)


@pytest.mark.parametrize("n,d1,d2", [(6, 3, 2), (30, 5, 8), (45, 20, 4)])
@pytest.mark.parametrize("fraction", [None, 0.5, 2.0])
@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_cka_matches_textbook(n, d1, d2, fraction, debiased):
    x, y = related_pair(n, d1, d2, seed=7 + n)
    f = 1.0 if fraction is None else fraction
    hsic = hsic_unbiased if debiased else None
    k, l = rbf_kernel_textbook(x, f), rbf_kernel_textbook(y, f)
    expected = cka_from_kernels(k, l, hsic) if hsic else cka_from_kernels(k, l)
    assert rbf_cka(x, y, sigma=fraction, debiased=debiased) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_rbf_cka_invariances():
    rng = np.random.default_rng(8)
    x, y = related_pair(40, 6, 5, seed=8)
    base = rbf_cka(x, y)
    assert rbf_cka(x @ random_orthogonal(6, rng), y) == pytest.approx(base, rel=1e-10)
    assert rbf_cka(4.0 * x + 2.0, y) == pytest.approx(base, rel=1e-10)  # bandwidth follows the median
    assert rbf_cka(x * np.array([0.1, 1, 1, 1, 1, 10.0]), y) != pytest.approx(base, rel=1e-3)


def minibatch_textbook(x, y, bounds):
    sums = np.zeros(3)
    for start, stop in bounds:
        a, b = x[start:stop], y[start:stop]
        k, l = a @ a.T, b @ b.T
        sums += [hsic_unbiased(k, l), hsic_unbiased(k, k), hsic_unbiased(l, l)]
    return sums[0] / np.sqrt(sums[1] * sums[2])


@pytest.mark.parametrize("n,batch,bounds", [
    (40, 10, [(0, 10), (10, 20), (20, 30), (30, 40)]),
    (42, 10, [(0, 10), (10, 20), (20, 30), (30, 42)]),   # remainder of 2 < 4 joins the last batch
    (45, 10, [(0, 10), (10, 20), (20, 30), (30, 40), (40, 45)]),
])
def test_minibatch_cka_matches_textbook(n, batch, bounds):
    x, y = related_pair(n, 7, 5, seed=n)
    expected = minibatch_textbook(x, y, bounds)
    assert minibatch_cka(x, y, batch_size=batch) == pytest.approx(expected, rel=1e-10)
    lazy = minibatch_cka(da.from_array(x, chunks=(9, 7)), torch.tensor(y), batch_size=batch)
    assert lazy == pytest.approx(expected, rel=1e-10)


def test_minibatch_with_one_batch_is_the_debiased_cka():
    x, y = related_pair(30, 7, 5, seed=9)
    assert minibatch_cka(x, y, batch_size=30) == pytest.approx(linear_cka(x, y, debiased=True), rel=1e-10)


def test_constant_features_give_nan_with_warning():
    x, y = related_pair(20, 4, 3, seed=10)
    constant = np.full((20, 4), 0.1)
    for kwargs in ({}, {"debiased": True}, {"chunk_size": 6}):
        with pytest.warns(RuntimeWarning, match="constant"):
            assert np.isnan(linear_cka(constant, y, **kwargs))
    with pytest.warns(RuntimeWarning, match="median distance 0"):
        assert np.isnan(rbf_cka(x, constant))


def test_bad_inputs_raise_with_the_bad_value_named():
    x, y = related_pair(20, 4, 3, seed=11)
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(x[:3], y[:3], debiased=True)
    with pytest.raises(ValueError, match="same number of samples"):
        linear_cka(x, y[:10])
    with pytest.raises(ValueError, match="NaN"):
        linear_cka(np.where(x > 1, np.nan, x), y)
    with pytest.raises(TypeError, match="debiased"):
        linear_cka(x, y, debiased="yes")
    with pytest.raises(TypeError, match="X"):
        linear_cka("abc", y)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cka(x, y, chunk_size=0)
    with pytest.raises(ValueError, match="sigma"):
        rbf_cka(x, y, sigma=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        minibatch_cka(x, y, batch_size=3)
    with pytest.raises(ValueError, match="same number of samples"):
        minibatch_cka(x, y[:8], batch_size=4)


def test_textbook_reference_itself_uses_the_centring_matrix():
    # Guard on the reference: tr(KHLH) with H explicit equals the centred-feature formula.
    x, y = related_pair(12, 3, 4, seed=12)
    h = centering_matrix(12)
    xc, yc = h @ x, h @ y
    direct = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka_textbook(x, y) == pytest.approx(direct, rel=1e-12)
