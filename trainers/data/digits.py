"""scikit-learn's bundled 8×8 handwritten digits: 1797 examples, 64 features (0–16), 10 classes, no split.

The data are the file ``sklearn/datasets/data/digits.csv.gz`` of the installed scikit-learn (one row
per example: 64 pixel counts, then the label). It is read directly with numpy, without importing
scikit-learn (whose import costs about a second of CPU, paid by every process that trains on digits:
a sweep's worker processes, the sequential baseline); the values are those of
``sklearn.datasets.load_digits()``, which reads the same file. Where the file is not found (a
scikit-learn that packs its data otherwise) ``load_digits`` is used.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from trainers.data.raw import RawData, check_labels

N_FEATURES = 64


def digits_file() -> Path | None:
    """The installed scikit-learn's ``digits.csv.gz`` (located without importing scikit-learn), or None."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def read_digits() -> RawData:
    """x (1797, 64) float64, y (1797,) int64; no test split (the caller splits it)."""
    path = digits_file()
    if path is not None:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        labels = table[:, -1] if table.shape[1] == N_FEATURES + 1 else None
        if labels is not None and np.array_equal(labels, np.floor(labels)):
            return RawData(np.ascontiguousarray(table[:, :N_FEATURES]),
                           check_labels(labels.astype(np.int64), 10, "digits"), None, None, 10)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return RawData(np.asarray(bunch.data, dtype=np.float64), check_labels(bunch.target, 10, "digits"),
                   None, None, 10)
