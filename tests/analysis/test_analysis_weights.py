"""Relative weight change and cosine to init against the explicit formulas."""

import numpy as np
import pytest
import torch

from analysis.weights import cosine_to_init, grouped_relative_change, relative_change, weight_change_table


@pytest.mark.parametrize("shape", [(3,), (4, 5), (2, 3, 4)])
def test_weight_change_matches_formulas(shape):
    rng = np.random.default_rng(len(shape))
    history = rng.normal(size=(6, *shape))
    rel, cos = weight_change_table(history)
    for t in range(6):
        a, b = history[t].ravel(), history[0].ravel()
        assert rel[t] == pytest.approx(np.sqrt(np.sum((a - b) ** 2) / np.sum(b ** 2)), rel=1e-12, abs=1e-15)
        assert cos[t] == pytest.approx(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)), rel=1e-12)
        assert relative_change(torch.tensor(history[t]), history[0]) == pytest.approx(rel[t], rel=1e-12, abs=1e-15)
        assert cosine_to_init(history[t], history[0]) == pytest.approx(cos[t], rel=1e-12)
    assert rel[0] == 0.0 and cos[0] == pytest.approx(1.0)


def test_zero_initial_parameter_gives_nan_with_warning():
    history = np.zeros((3, 4))
    history[1:] = 1.0
    with pytest.warns(RuntimeWarning, match="all zeros"):
        rel, cos = weight_change_table(history)
    assert np.all(np.isnan(rel)) and np.all(np.isnan(cos))
    with pytest.warns(RuntimeWarning, match="all zeros"):
        assert np.isnan(relative_change(np.ones(4), np.zeros(4)))
    with pytest.warns(RuntimeWarning, match="all zeros"):
        assert np.isnan(cosine_to_init(np.zeros(4), np.ones(4)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        relative_change(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="checkpoint dimension"):
        weight_change_table(np.float64(1.0))
    with pytest.raises(ValueError, match="NaN"):
        cosine_to_init(np.array([np.nan, 1.0]), np.ones(2))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [1.0, 1e200, 1e-200])
def test_grouped_relative_change_is_the_norm_ratio_of_the_concatenated_tensors(seed, scale):
    rng = np.random.default_rng(seed)
    shapes = [(5, 3), (3,), (4, 4), (1,)]
    init = [rng.normal(size=s) for s in shapes]
    moved = [[t + rng.normal(size=t.shape) * 0.1 * c for t in init] for c in range(4)]
    delta = np.array([[np.linalg.norm(m - t) for m, t in zip(ms, init)] for ms in moved])  # (C, P)
    norms = np.array([np.linalg.norm(t) for t in init])
    flat0 = np.concatenate([t.ravel() for t in init])
    want = [np.linalg.norm(np.concatenate([m.ravel() for m in ms]) - flat0) / np.linalg.norm(flat0) for ms in moved]
    # norms of 1e±200 square to beyond float64: the ratio must not overflow or underflow
    np.testing.assert_allclose(grouped_relative_change(delta * scale, norms * scale), want, rtol=1e-12, atol=1e-15)


def test_grouped_relative_change_skips_missing_tensors_and_zero_groups():
    delta = np.array([[3.0, np.nan, 4.0]])
    got = grouped_relative_change(delta, np.array([1.0, 2.0, 0.0]))
    np.testing.assert_allclose(got, [5.0])  # sqrt(9 + 16) / sqrt(1 + 0)
    assert np.isnan(grouped_relative_change(np.array([[1.0]]), np.array([0.0])))[0]
