"""Linear probes: how linearly decodable the probe targets are from a representation.

The task (:mod:`dynamics.task`) decides the probe: class labels → :func:`linear_probe_accuracy`
(logistic regression, accuracy); real targets → :func:`linear_probe_r2` (ridge regression, R²).
Both read the features through :func:`analysis.arrays.feature_matrix`, which divides them by the
power of two of their largest entry (exact, :mod:`analysis.scaling`): the standardisation would
otherwise overflow (features of 1e160: variance 1e320 = inf) or underflow (1e-170: variance 0) and
the probe fall to chance; at any scale the probe gives the value of the unscaled features.

Classification protocol (chosen to be cheap enough to run at every checkpoint of every layer):
features standardised (zero mean, unit variance, fitted on the training folds only) → multinomial
logistic regression (scikit-learn, solver "lbfgs", L2 penalty C=1, ``max_iter`` iterations, default
100) → fraction of probe samples predicted correctly while held out in a ``folds``-fold (default 3)
stratified cross-validation of the probe set (pooled over folds),
shuffled with a fixed ``seed``. Convergence warnings of lbfgs are silenced: with few iterations the
solver stops early by design, and the accuracy is what is reported. Constant features are harmless
(the scaler leaves them at 0).

Degenerate label sets give a defined result, never an exception (a run's analysis must not abort
because its probe set is small or unbalanced):

- fewer than two classes in the whole probe set → NaN, with a RuntimeWarning (nothing to decode);
- the number of folds is min(``folds``, size of the largest class), so classes rarer than the folds
  and probe sets smaller than ``folds`` are split as far as they can be; if that leaves fewer than
  two folds (every class has a single sample) → NaN, with a RuntimeWarning;
- a training fold that holds a single class (e.g. labels [0, 0, 0, 0, 0, 0, 1]: the fold whose test
  part holds the only 1 trains on 0s alone) → the probe of that fold is the constant classifier
  predicting that class, which is what any classifier fitted on one class can do; its test
  samples count as correct exactly when they belong to that class.

Regression protocol (:func:`linear_probe_r2`): targets y (N,) or Y (N, O); features standardised on
the training folds → ridge regression (scikit-learn ``Ridge``, α = ``alpha``, default 1, with
intercept) → out-of-fold predictions of a ``folds``-fold (default 3) cross-validation shuffled with
``seed`` → R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)² pooled over folds, averaged uniformly over outputs
(``sklearn.metrics.r2_score``). Targets are divided by the power of two of their largest entry too
(R² does not change). Every fold keeps at least 2 samples: min(``folds``, N // 2) folds are used;
N < 4 or targets constant over the probe set (R² undefined) → NaN with a RuntimeWarning; an output
that is constant while others vary is left out of the average.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from analysis.arrays import as_labels, as_targets, feature_matrix, nan_with_warning
from analysis.scaling import normalised


def linear_probe_accuracy(x: object, y: object, *, folds: int = 3, max_iter: int = 100, C: float = 1.0,
                          seed: int = 0) -> float:
    """Cross-validated accuracy ∈ [0, 1] of a logistic-regression probe from X (N, D) to labels y (N,).

    Args:
        x: features (N, D), array-like or tensor, finite.
        y: integer class labels (N,), ≥ 0.
        folds: stratified folds (≥ 2; fewer are used when the largest class is smaller).
        max_iter: lbfgs iterations of the logistic regression.
        C: inverse L2 strength of the logistic regression.
        seed: shuffling seed of the folds.

    Returns:
        (number of held-out samples predicted correctly) / N, or NaN with a RuntimeWarning for a
        label set with fewer than two classes or with every class a single sample (module
        docstring: single-class training folds predict their class).

    Raises:
        ValueError / TypeError: bad ``folds``, ``max_iter``, ``seed``, ``C``, features or labels
            (wrong shape, non-integer or negative labels).
    """
    _check_options(folds=folds, max_iter=max_iter, seed=seed, C=C)
    features = feature_matrix(x, "X")[0]
    labels = as_labels(y, features.shape[0])
    classes = np.unique(labels)
    if classes.size < 2:
        return nan_with_warning(f"linear probe: the {labels.size} probe labels hold {classes.size} class(es) "
                                f"{classes.tolist()}; a probe needs at least two, accuracy is NaN")
    largest_class = int(np.bincount(labels).max())
    if largest_class < 2:
        return nan_with_warning(f"linear probe: every class has a single sample among {labels.size}, so no "
                                "stratified split exists; accuracy is NaN")
    splitter = StratifiedKFold(n_splits=min(int(folds), largest_class), shuffle=True, random_state=int(seed))
    correct = 0
    # One BLAS thread: these fits are tiny, and with torch's OpenMP runtime loaded a multi-threaded
    # BLAS makes each lbfgs iteration ~20x slower (threads spinning against each other).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        # "The least populated class has fewer members than n_splits": fine for a probe estimate.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for train, test in splitter.split(features, labels):
            seen = np.unique(labels[train])
            if seen.size == 1:   # a classifier fitted on one class predicts that class
                predicted = np.full(test.size, seen[0])
            else:
                model = make_pipeline(StandardScaler(), LogisticRegression(C=float(C), max_iter=int(max_iter)))
                predicted = model.fit(features[train], labels[train]).predict(features[test])
            correct += int(np.sum(predicted == labels[test]))
    return correct / features.shape[0]


def linear_probe_r2(x: object, y: object, *, folds: int = 3, alpha: float = 1.0, seed: int = 0) -> float:
    """Cross-validated R² ≤ 1 of a ridge-regression probe from X (N, D) to real targets y (N,) or Y (N, O).

    Args:
        x: features (N, D), finite. y: regression targets, finite (any real dtype).
        folds: KFold splits (≥ 2; min(folds, N // 2) are used). alpha: ridge strength (> 0).
        seed: shuffling seed of the folds.

    Returns:
        R² of the pooled out-of-fold predictions (module docstring), uniform average over outputs;
        1 is perfect, 0 the mean's score, negative worse than the mean. NaN with a RuntimeWarning
        for N < 4 or targets that are constant over the samples.

    Raises:
        ValueError / TypeError: bad ``folds``, ``alpha``, ``seed``, features or targets.
    """
    _check_options(folds=folds, max_iter=1, seed=seed, C=alpha, c_name="alpha")
    features = feature_matrix(x, "X")[0]
    targets = normalised(as_targets(y, features.shape[0], task="regression"))
    n = features.shape[0]
    if n < 4:
        return nan_with_warning(f"linear probe: R² needs at least 4 probe samples, got {n}; R² is NaN")
    if not np.any(np.ptp(targets, axis=0) > 0):
        return nan_with_warning("linear probe: the regression targets are constant over the probe set; R² is NaN")
    predicted = np.empty_like(targets)
    splitter = KFold(n_splits=min(int(folds), n // 2), shuffle=True, random_state=int(seed))
    with threadpool_limits(limits=1, user_api="blas"):
        for train, test in splitter.split(features):
            model = make_pipeline(StandardScaler(), Ridge(alpha=float(alpha)))
            predicted[test] = model.fit(features[train], targets[train]).predict(features[test]).reshape(test.size, -1)
    keep = np.ptp(targets, axis=0) > 0   # outputs constant over the probe have no R²
    return float(r2_score(targets[:, keep], predicted[:, keep]))


def _check_options(*, folds: object, max_iter: object, seed: object, C: object, c_name: str = "C") -> None:
    for name, value, minimum in (("folds", folds, 2), ("max_iter", max_iter, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if isinstance(C, bool) or not isinstance(C, (int, float)) or not C > 0 or not np.isfinite(C):
        raise ValueError(f"{c_name} must be a positive number, got {C!r}")
