"""Kernel alignment, distance and kernel–target alignment against explicit formulas."""

import numpy as np
import pytest
import torch

from analysis.kernels import alignment, center_kernel, kernel_distance, target_alignment
from analysis_textbook import centering_matrix


def random_kernel(n, rank, rng):
    f = rng.normal(size=(n, rank)) + 0.3
    return f @ f.T


def textbook_alignment(k1, k2):
    return np.trace(k1.T @ k2) / np.sqrt(np.trace(k1.T @ k1) * np.trace(k2.T @ k2))


@pytest.mark.parametrize("n,rank", [(1, 1), (5, 2), (33, 10), (90, 120)])
def test_alignment_plain_and_centred_match_textbook(n, rank):
    rng = np.random.default_rng(n)
    k1, k2 = random_kernel(n, rank, rng), random_kernel(n, rank, rng)
    assert alignment(k1, k2) == pytest.approx(textbook_alignment(k1, k2), rel=1e-12)
    assert kernel_distance(k1, k2) == pytest.approx(1 - textbook_alignment(k1, k2), rel=1e-12, abs=1e-14)
    if n > 1:
        h = centering_matrix(n)
        expected = textbook_alignment(h @ k1 @ h, h @ k2 @ h)
        assert alignment(k1, k2, centered=True) == pytest.approx(expected, rel=1e-10)
        np.testing.assert_allclose(center_kernel(k1), h @ k1 @ h, rtol=1e-12, atol=1e-12 * np.abs(k1).max())


def test_alignment_of_output_resolved_kernels_and_float32():
    rng = np.random.default_rng(1)
    k1, k2 = rng.normal(size=(6, 6, 3, 3)), rng.normal(size=(6, 6, 3, 3))
    expected = np.sum(k1 * k2) / (np.linalg.norm(k1) * np.linalg.norm(k2))
    assert alignment(k1, k2) == pytest.approx(expected, rel=1e-12)
    got32 = alignment(torch.tensor(k1, dtype=torch.float32), torch.tensor(k2, dtype=torch.float32))
    assert got32 == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_alignment_properties():
    rng = np.random.default_rng(2)
    k1, k2 = random_kernel(20, 5, rng), random_kernel(20, 5, rng)
    assert alignment(k1, 7.5 * k1) == pytest.approx(1.0, rel=1e-12)
    assert alignment(2.0 * k1, 0.1 * k2) == pytest.approx(alignment(k1, k2), rel=1e-12)
    assert alignment(k1, k2) == pytest.approx(alignment(k2, k1), rel=1e-12)
    shifted = k1 + 100.0  # a constant offset dominates the plain alignment but not the centred one
    assert alignment(shifted, k1, centered=True) == pytest.approx(1.0, rel=1e-10)
    assert alignment(shifted, k1) < 0.99


@pytest.mark.parametrize("n,classes", [(4, 2), (30, 3), (64, 10)])
@pytest.mark.parametrize("centered", [False, True])
def test_target_alignment_matches_explicit_one_hot_kernel(n, classes, centered):
    rng = np.random.default_rng(n * classes)
    k = random_kernel(n, 6, rng)
    y = np.arange(n) % classes
    rng.shuffle(y)
    onehot = np.eye(classes)[y]
    target = onehot @ onehot.T
    if centered:
        h = centering_matrix(n)
        expected = textbook_alignment(h @ k @ h, h @ target @ h)
    else:
        expected = textbook_alignment(k, target)
    assert target_alignment(k, y, centered=centered) == pytest.approx(expected, rel=1e-10)
    assert target_alignment(torch.tensor(k), torch.tensor(y), n_classes=classes + 2, centered=centered) == \
        pytest.approx(expected, rel=1e-10)


def test_target_alignment_is_one_for_the_label_kernel():
    y = np.array([0, 1, 1, 2, 0, 2, 2])
    onehot = np.eye(3)[y]
    assert target_alignment(onehot @ onehot.T, y) == pytest.approx(1.0, rel=1e-12)


def test_degenerate_kernels_give_nan_with_warning():
    k = np.zeros((5, 5))
    with pytest.warns(RuntimeWarning, match="zero Frobenius norm"):
        assert np.isnan(alignment(k, np.eye(5)))
    with pytest.warns(RuntimeWarning, match="zero Frobenius norm"):
        assert np.isnan(alignment(np.ones((5, 5)), np.eye(5), centered=True))  # HKH = 0
    with pytest.warns(RuntimeWarning, match="zero Frobenius norm"):
        assert np.isnan(target_alignment(k, np.arange(5)))
    with pytest.warns(RuntimeWarning, match="label kernel"):
        assert np.isnan(target_alignment(np.eye(5), np.zeros(5, dtype=int), centered=True))


def test_bad_inputs():
    k = np.eye(4)
    with pytest.raises(ValueError, match="same shape"):
        alignment(k, np.eye(5))
    with pytest.raises(ValueError, match="square"):
        alignment(np.ones((4, 3)), np.ones((4, 3)), centered=True)
    with pytest.raises(ValueError, match="NaN"):
        alignment(np.full((2, 2), np.nan), k[:2, :2])
    with pytest.raises(TypeError, match="centered"):
        alignment(k, k, centered=1)
    with pytest.raises(ValueError, match="hold 4 targets"):
        target_alignment(k, np.arange(3))
    # such targets are regression targets unless classification is stated (dynamics.task)
    with pytest.raises(TypeError, match="integer class labels"):
        target_alignment(k, np.array([0.5, 1, 2, 3]), task="classification")
    with pytest.raises(ValueError, match="negative"):
        target_alignment(k, np.array([0, -1, 2, 3]), task="classification")
    with pytest.raises(ValueError, match="task must be one of"):
        target_alignment(k, np.array([0, 1, 2, 3]), task="ranking")
    with pytest.raises(ValueError, match="n_classes applies to classification"):
        target_alignment(k, np.array([0.5, 1, 2, 3]), n_classes=4)
    with pytest.raises(ValueError, match="n_classes=2"):
        target_alignment(k, np.array([0, 1, 2, 3]), n_classes=2)
    with pytest.raises(TypeError, match="K1"):
        alignment(None, k)
