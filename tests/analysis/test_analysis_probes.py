"""Linear-probe accuracy: separable, uninformative and reference cross-validation cases."""

import warnings

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


# ------------------------------------------------ degenerate label sets: a defined result, never an abort
def reference_accuracy(x, y, folds=3, seed=0, max_iter=100):
    """Explicit stratified CV: standardise on the training part (constant features left at 0), fit
    sklearn's LogisticRegression, or predict the only class a single-class training part holds."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    n_splits = min(folds, int(np.bincount(y).max()))
    correct = 0
    with warnings.catch_warnings():   # "The least populated class has only 1 members": intended here
        warnings.simplefilter("ignore", UserWarning)
        splits = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(x, y))
    for train, test in splits:
        if np.unique(y[train]).size == 1:
            predicted = np.full(test.size, y[train][0])
        else:
            mean, std = x[train].mean(axis=0), x[train].std(axis=0)
            std[std == 0] = 1.0
            model = LogisticRegression(max_iter=max_iter).fit((x[train] - mean) / std, y[train])
            predicted = model.predict((x[test] - mean) / std)
        correct += int(np.sum(predicted == y[test]))
    return correct / y.size


@pytest.mark.parametrize("labels,folds", [
    ([0, 0, 0, 0, 0, 0, 1], 3),                        # issue #11: a training fold holds class 0 only
    ([0] * 9 + [1] * 2 + [2], 5),                      # classes rarer than the folds
    ([1, 1, 1, 1, 0, 2, 2, 2], 4),                      # one-sample class with several folds
    ([0, 0, 1, 1], 5),                                  # fewer samples than folds
])
def test_degenerate_labels_give_the_cross_validated_accuracy(labels, folds):
    rng = np.random.default_rng(4)
    y = np.array(labels)
    x = rng.normal(size=(y.size, 3)) + 3.0 * y[:, None]
    x[:, 2] = 1.0   # a constant feature too
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)    # a defined accuracy: no NaN warning
        got = linear_probe_accuracy(x, y, folds=folds)
    assert got == pytest.approx(reference_accuracy(x, y, folds), abs=1e-12)
    assert 0.0 <= got <= 1.0


def test_issue_case_counts_the_single_class_fold_as_a_constant_classifier():
    x = np.arange(7, dtype=np.float64)[:, None] * np.array([[1.0, -2.0]])
    y = [0, 0, 0, 0, 0, 0, 1]
    # the fold holding the only 1 predicts 0 for it (wrong); the rest is decodable
    assert linear_probe_accuracy(x, y) == pytest.approx(reference_accuracy(x, y), abs=1e-12)
    assert linear_probe_accuracy(x, y) <= 6 / 7


@pytest.mark.parametrize("labels", [[0] * 8, [3] * 5, [0, 1, 2]])
def test_single_class_or_all_singletons_give_nan_with_a_warning(labels):
    x = np.random.default_rng(5).normal(size=(len(labels), 4))
    with pytest.warns(RuntimeWarning, match="accuracy is NaN"):
        assert np.isnan(linear_probe_accuracy(x, labels))


def test_analyze_a_recorded_run_whose_probe_has_a_one_sample_class(tmp_path):
    """A real store written by dynamics.Recorder; probe labels 0×11, 1×1."""
    from analysis import analyze
    from dynamics import Recorder, open_run
    from dynamics.models import MLP

    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 11 + [1])   # the fold holding the only 1 trains on 0s alone
    x = torch.randn(12, 5, generator=g, dtype=torch.float64) + y[:, None].double()
    model = MLP(5, 8, 2, 3, seed=0, dtype=torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    path = tmp_path / "run.zarr"
    with Recorder(path, model, (x, y), config={"optimizer": "sgd", "seed": 0}) as rec:
        for step in range(3):
            rec.checkpoint(step, epoch=float(step))
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            rec.log(step, loss=float(loss.detach()))
    result = analyze(path)
    accuracy = result["probe_accuracy"]
    assert accuracy.shape == (3, 2) and np.all(np.isfinite(accuracy.values))
    checkpoints = open_run(path)["checkpoints"]
    for j, layer in enumerate(result["layer"].values):
        for c in range(3):
            expected = reference_accuracy(checkpoints[f"rep_{layer}"].values[c], y.numpy())
            assert accuracy.values[c, j] == pytest.approx(expected, abs=1e-12)
    import xarray as xr
    written = xr.open_zarr(path, group="analysis", consolidated=False)
    np.testing.assert_array_equal(written["probe_accuracy"].values, accuracy.values)
