"""scikit-learn's bundled 8×8 handwritten digits: 1797 examples, 64 features (0–16), 10 classes, no split."""

from __future__ import annotations

import numpy as np

from trainers.data.raw import RawData, check_labels


def read_digits() -> RawData:
    """x (1797, 64) float64, y (1797,) int64; no test split (the caller splits it)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return RawData(np.asarray(bunch.data, dtype=np.float64), check_labels(bunch.target, 10, "digits"),
                   None, None, 10)
