"""Linear-probe accuracy: how linearly decodable the labels are from a representation.

Protocol (chosen to be cheap enough to run at every checkpoint of every layer):
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
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from analysis.arrays import as_float_matrix, as_labels, nan_with_warning


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
    for name, value, minimum in (("folds", folds, 2), ("max_iter", max_iter, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if isinstance(C, bool) or not isinstance(C, (int, float)) or not C > 0:
        raise ValueError(f"C must be a positive number, got {C!r}")
    features = as_float_matrix(x, "X")
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
