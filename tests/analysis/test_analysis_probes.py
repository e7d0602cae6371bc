"""Linear-probe accuracy: separable, uninformative and reference cross-validation cases."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from analysis.probes import linear_probe_accuracy


def blobs(n, d, classes, spread, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.normal(size=(classes, d)) * 10.0
    return centres[y] + spread * rng.normal(size=(n, d)), y


def test_separable_classes_are_decoded_perfectly():
    x, y = blobs(120, 8, 4, 0.1, seed=0)
    assert linear_probe_accuracy(x, y) == 1.0
    assert linear_probe_accuracy(torch.tensor(x, dtype=torch.float32), torch.tensor(y)) == 1.0


def test_labels_independent_of_features_give_about_chance():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 10)), rng.integers(0, 10, size=300)
    assert linear_probe_accuracy(x, y) < 0.25  # chance is 0.1


def test_matches_an_explicit_cross_validation_loop():
    x, y = blobs(90, 5, 3, 8.0, seed=2)  # overlapping classes: accuracy strictly between chance and 1
    correct = 0
    for train, test in StratifiedKFold(3, shuffle=True, random_state=0).split(x, y):
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        model = LogisticRegression(max_iter=100).fit((x[train] - mean) / std, y[train])
        correct += np.sum(model.predict((x[test] - mean) / std) == y[test])
    expected = correct / 90
    assert 0.4 < expected < 1.0
    assert linear_probe_accuracy(x, y) == pytest.approx(expected, abs=1e-12)
    # standardisation makes the probe blind to per-feature scales
    assert linear_probe_accuracy(x * np.array([1e-3, 1, 10, 1e3, 5]), y) == pytest.approx(expected, abs=1.5 / 90)


def test_bad_inputs():
    x, y = blobs(12, 3, 2, 1.0, seed=3)
    with pytest.raises(ValueError, match="two classes"):
        linear_probe_accuracy(x, np.zeros(12, dtype=int))
    with pytest.raises(ValueError, match="folds"):
        linear_probe_accuracy(x, y, folds=1)
    with pytest.raises(ValueError, match="length 12"):
        linear_probe_accuracy(x, y[:5])
    with pytest.raises(ValueError, match="C must"):
        linear_probe_accuracy(x, y, C=0)


def test_small_probe_sets_use_fewer_folds_and_unsplittable_ones_give_nan():
    rng = np.random.default_rng(3)
    # two samples per class: 3-fold stratification is impossible, 2-fold is used instead
    x = np.concatenate([rng.normal(-5.0, 0.1, (2, 3)), rng.normal(5.0, 0.1, (2, 3))])
    assert linear_probe_accuracy(x, np.array([0, 0, 1, 1]), folds=3) == 1.0
    with pytest.warns(RuntimeWarning, match="single sample"):
        assert np.isnan(linear_probe_accuracy(x, np.array([0, 1, 2, 3]), folds=3))
