"""MNIST-1D (Greydanus 2020, "Scaling down deep learning"), generated locally.

Uses ``mnist1d.data.make_dataset(get_dataset_args())`` — never the package's download/pickle path.
The default arguments give 4000 training and 1000 test examples of 40 features, 10 classes
(about 0.7 s). ``make_dataset`` seeds Python's and NumPy's global generators; their states are
restored afterwards so that reading the data leaves no global trace.
"""

from __future__ import annotations

import random

import numpy as np

from trainers.data.raw import RawData, check_labels


def read_mnist1d() -> RawData:
    """The standard MNIST-1D split: x (4000, 40), y (4000,), x_test (1000, 40), y_test (1000,)."""
    from mnist1d.data import get_dataset_args, make_dataset

    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return RawData(np.asarray(data["x"], dtype=np.float64), check_labels(data["y"], 10, "mnist1d"),
                   np.asarray(data["x_test"], dtype=np.float64), check_labels(data["y_test"], 10, "mnist1d"), 10)
