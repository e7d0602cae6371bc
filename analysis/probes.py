"""Linear-probe accuracy: how linearly decodable the labels are from a representation.

Protocol (chosen to be cheap enough to run at every checkpoint of every layer):
features standardised (zero mean, unit variance, fitted on the training folds only) → multinomial
logistic regression (scikit-learn, solver "lbfgs", L2 penalty C=1, ``max_iter`` iterations, default
100) → fraction of probe samples predicted correctly while held out in a ``folds``-fold (default 3)
stratified cross-validation of the probe set (pooled over folds),
shuffled with a fixed ``seed``. Convergence warnings of lbfgs are silenced: with few iterations the
solver stops early by design, and the accuracy is what is reported. Constant features are harmless
(the scaler leaves them at 0). Fewer than two classes, or fewer samples than folds, raise ValueError.
When even the largest class has fewer members than ``folds`` (tiny probe sets), the number of folds
drops to that class size; if that leaves fewer than two folds the accuracy is NaN, with a warning.
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

from analysis.arrays import as_float_matrix, as_labels


def linear_probe_accuracy(x: object, y: object, *, folds: int = 3, max_iter: int = 100, C: float = 1.0,
                          seed: int = 0) -> float:
    """Cross-validated accuracy ∈ [0, 1] of a logistic-regression probe from X (N, D) to labels y (N,)."""
    for name, value, minimum in (("folds", folds, 2), ("max_iter", max_iter, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if isinstance(C, bool) or not isinstance(C, (int, float)) or not C > 0:
        raise ValueError(f"C must be a positive number, got {C!r}")
    features = as_float_matrix(x, "X")
    labels = as_labels(y, features.shape[0])
    if np.unique(labels).size < 2:
        raise ValueError(f"a probe needs at least two classes, got only label(s) {np.unique(labels).tolist()}")
    if features.shape[0] < folds:
        raise ValueError(f"{folds}-fold cross-validation needs at least {folds} samples, got {features.shape[0]}")
    largest_class = int(np.bincount(labels).max())
    if largest_class < 2:
        warnings.warn(f"linear probe: every class has a single sample among {labels.size}; accuracy is NaN",
                      RuntimeWarning, stacklevel=2)
        return float("nan")
    splitter = StratifiedKFold(n_splits=min(int(folds), largest_class), shuffle=True, random_state=int(seed))
    correct = 0
    # One BLAS thread: these fits are tiny, and with torch's OpenMP runtime loaded a multi-threaded
    # BLAS makes each lbfgs iteration ~20x slower (threads spinning against each other).
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        # "The least populated class has fewer members than n_splits": fine for a probe estimate.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for train, test in splitter.split(features, labels):
            model = make_pipeline(StandardScaler(), LogisticRegression(C=float(C), max_iter=int(max_iter)))
            model.fit(features[train], labels[train])
            correct += int(np.sum(model.predict(features[test]) == labels[test]))
    return correct / features.shape[0]
