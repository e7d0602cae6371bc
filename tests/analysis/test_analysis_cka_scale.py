"""CKA and alignments are scale-invariant: features or kernels of 1e±90 … 1e±300 give the unscaled value.

Issue #11 case 8: ``linear_cka(1e90 * X, Y)`` returned 0.0 and the debiased form NaN; at 1e-90 both
were NaN; RBF CKA lost ≈1e-10 with a 1e4 offset. References: the textbook formulas of
``analysis_textbook`` (explicit H = I − 11ᵀ/n, explicit pairwise differences) in float64 on the
*unscaled* data. Tolerance 1e-12 absolute: CKA is O(1) and both sides only carry round-off.
"""

import warnings

import numpy as np
import pytest
import torch
from analysis_textbook import (centering_matrix, cka_from_kernels, hsic_unbiased, linear_cka_textbook,
                               rbf_kernel_textbook)

from analysis.cka import linear_cka, minibatch_cka, rbf_cka
from analysis.cka_chunked import LinearCKAAccumulator
from analysis.kernels import alignment, kernel_distance, target_alignment

SCALES = [1e90, 1e-90, 1e150, 1e-150, 1e300, 1e-300]
TOL = 1e-12


def pair(n=24, d1=5, d2=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1))
    y = np.tanh(x @ rng.normal(size=(d1, d2))) + 0.5 * rng.normal(size=(n, d2))
    return x, y


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_in_memory_and_chunked(scale, debiased):
    x, y = pair()
    expected = linear_cka_textbook(x, y, debiased=debiased)
    assert 0.2 < abs(expected) < 0.99
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for a, b in [(scale * x, y), (x, scale * y), (scale * x, scale * y), (scale * x, y / scale)]:
            assert linear_cka(a, b, debiased=debiased) == pytest.approx(expected, abs=TOL)
            for chunk in (5, 24):
                assert linear_cka(a, b, debiased=debiased, chunk_size=chunk) == pytest.approx(expected, abs=TOL)
            assert linear_cka(torch.from_numpy(a), b, debiased=debiased) == pytest.approx(expected, abs=TOL)


def test_issue_case_values_before_the_fix():
    """The two reported failures: 1e90 gave 0.0 (biased) / NaN (debiased); 1e-90 gave NaN."""
    x, y = pair(seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for scale in (1e90, 1e-90):
            assert linear_cka(scale * x, y) == pytest.approx(linear_cka_textbook(x, y), abs=TOL)
            assert linear_cka(scale * x, y, debiased=True) == pytest.approx(
                linear_cka_textbook(x, y, debiased=True), abs=TOL)


def test_accumulator_fed_chunks_of_different_scales():
    """Rows of X at different scales per chunk: the reference is the textbook CKA of the whole X."""
    rng = np.random.default_rng(4)
    for exponents in ([0, 0, 60, 60], [-150, -150, -150, -150], [-100, 0, 100, 0], [200, 200, 150, 150]):
        x, y = pair(n=32, seed=5)
        scales = np.repeat(10.0 ** np.array(exponents, dtype=np.float64), 8)[:, None]
        xs = x * scales
        # reference on a rescaled copy (the same multiplier for every row: CKA-invariant), so the
        # textbook formula itself stays in range
        reference = xs / 10.0 ** max(exponents)
        ys = y * 10.0 ** rng.integers(-200, 200)
        for debiased in (False, True):
            expected = linear_cka_textbook(reference, y, debiased=debiased)
            acc = LinearCKAAccumulator()
            for start in range(0, 32, 8):
                acc.update(xs[start:start + 8], ys[start:start + 8])
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)
                assert acc.cka(debiased=debiased) == pytest.approx(expected, abs=TOL)


def test_accumulator_centred_moments_keep_the_data_units():
    x, y = pair(n=12)
    acc = LinearCKAAccumulator()
    for start in range(0, 12, 5):
        acc.update(1e-90 * x[start:start + 5], 1e90 * y[start:start + 5])
    h = centering_matrix(12)
    xx, yy, xy = acc.centred_moments()
    np.testing.assert_allclose(xx, (h @ (1e-90 * x)).T @ (h @ (1e-90 * x)), rtol=1e-12, atol=1e-192)
    np.testing.assert_allclose(yy, (h @ (1e90 * y)).T @ (h @ (1e90 * y)), rtol=1e-12, atol=1e168)
    np.testing.assert_allclose(xy, (h @ (1e-90 * x)).T @ (h @ (1e90 * y)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", SCALES)
def test_minibatch_cka(scale):
    x, y = pair(n=24)
    k = [x[i:i + 8] @ x[i:i + 8].T for i in range(0, 24, 8)]
    l = [y[i:i + 8] @ y[i:i + 8].T for i in range(0, 24, 8)]
    expected = (sum(hsic_unbiased(a, b) for a, b in zip(k, l))
                / np.sqrt(sum(hsic_unbiased(a, a) for a in k) * sum(hsic_unbiased(b, b) for b in l)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert minibatch_cka(scale * x, y, batch_size=8) == pytest.approx(expected, abs=TOL)
        assert minibatch_cka(scale * x, y / scale, batch_size=8) == pytest.approx(expected, abs=TOL)
        assert minibatch_cka(x + 1e6, y, batch_size=8) == pytest.approx(expected, abs=1e-9)


def test_minibatch_cka_with_batches_of_different_scales():
    x, y = pair(n=24)
    xs = x * np.repeat([1e-120, 1.0, 1e120], 8)[:, None]
    # only the largest batch of X counts at this spread; its HSICs dominate every sum
    k = [xs[i:i + 8] @ xs[i:i + 8].T * 1e-240 for i in range(0, 24, 8)]
    l = [y[i:i + 8] @ y[i:i + 8].T for i in range(0, 24, 8)]
    expected = (sum(hsic_unbiased(a, b) for a, b in zip(k, l))
                / np.sqrt(sum(hsic_unbiased(a, a) for a in k) * sum(hsic_unbiased(b, b) for b in l)))
    assert minibatch_cka(xs, y, batch_size=8) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_cka_scaled(scale, debiased):
    x, y = pair(n=16)
    hsic = hsic_unbiased if debiased else None
    kx, ky = rbf_kernel_textbook(x, 1.0), rbf_kernel_textbook(y, 1.0)
    expected = cka_from_kernels(kx, ky, hsic) if hsic else cka_from_kernels(kx, ky)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert rbf_cka(scale * x, y, debiased=debiased) == pytest.approx(expected, abs=TOL)
        assert rbf_cka(scale * x, y / scale, debiased=debiased) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("offset", [1e4, 1e6, -1e6])
def test_rbf_cka_with_an_offset(offset):
    """Reference: explicit pairwise differences of the offset data as stored (the subtraction of
    nearby floats is exact), so only the package's own round-off is measured; it was 4.6e-12 at
    1e4 and 5.7e-6 at 1e6 with distances formed as |a|² + |b|² − 2ab on uncentred rows."""
    x, y = pair(n=16, seed=6)
    xo = x + offset
    for sigma in (0.5, 1.0):
        expected = cka_from_kernels(rbf_kernel_textbook(xo, sigma), rbf_kernel_textbook(y, sigma))
        assert rbf_cka(xo, y, sigma=sigma) == pytest.approx(expected, abs=1e-13)
        expected = cka_from_kernels(rbf_kernel_textbook(xo, sigma), rbf_kernel_textbook(y + offset, sigma),
                                    hsic_unbiased)
        assert rbf_cka(xo, y + offset, sigma=sigma, debiased=True) == pytest.approx(expected, abs=1e-13)


def textbook_alignment(a, b):
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


@pytest.mark.parametrize("scale", SCALES)
def test_kernel_and_target_alignment(scale):
    x, y = pair(n=20)
    k1, k2 = x @ x.T, np.tanh(y @ y.T)
    h = centering_matrix(20)
    labels = np.arange(20) % 3
    onehot = np.eye(3)[labels]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert alignment(scale * k1, k2) == pytest.approx(textbook_alignment(k1, k2), abs=TOL)
        assert alignment(scale * k1, k2 / scale, centered=True) == pytest.approx(
            textbook_alignment(h @ k1 @ h, h @ k2 @ h), abs=TOL)
        assert kernel_distance(scale * k1, scale * k1) == pytest.approx(0.0, abs=TOL)
        full = np.einsum("nm,op->nmop", k1, np.eye(2))   # an output-resolved (N, N, O, O) kernel
        assert alignment(scale * full, full) == pytest.approx(1.0, abs=TOL)
        assert target_alignment(scale * k1, labels) == pytest.approx(
            textbook_alignment(k1, onehot @ onehot.T), abs=TOL)
        assert target_alignment(scale * k1, labels, centered=True) == pytest.approx(
            textbook_alignment(h @ k1 @ h, h @ onehot @ onehot.T @ h), abs=TOL)


def test_kernel_with_a_large_constant_offset_aligns_after_centring():
    x, _ = pair(n=20)
    k = x @ x.T
    h = centering_matrix(20)
    shifted = k + 1e8   # a constant added to every entry: H removes it exactly in exact arithmetic
    assert alignment(shifted, k, centered=True) == pytest.approx(
        textbook_alignment(h @ shifted @ h, h @ k @ h), abs=1e-9)
