"""The common return type of the data readers and the checks they share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynamics.errors import DataError


@dataclass(frozen=True)
class RawData:
    """Unscaled features x (N, D) and integer labels y (N,), optionally with a test split."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    n_classes: int


def find_file(directory: Path, names: list[str], expected: str) -> Path:
    """The first of ``names`` that exists in ``directory``; else a DataError listing what was looked for."""
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise DataError(f"missing data file {names[0]!r} (also tried {names[1:]}) in directory '{directory}'; "
                    f"expected {expected}")


def data_directory(data_dir: str, dataset: str) -> Path:
    """``data_dir`` as an existing directory, or a DataError saying how to point at the files."""
    if not data_dir:
        raise DataError(f"data set {dataset!r} is read from local files: set data.data_dir in the config "
                        f"(or --data-dir) to the directory holding them")
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(f"data directory '{path}' for data set {dataset!r} does not exist or is not a directory")
    return path


MAX_CLASSES = 100_000


def check_labels(y: np.ndarray, n_classes: int, source: str) -> np.ndarray:
    """``y`` as int64 if it holds integer labels in [0, n_classes); else a DataError naming ``source``.

    The range is checked before the cast, so unsigned labels ≥ 2**63 are refused instead of wrapping
    to negative numbers."""
    y = np.asarray(y)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise DataError(f"{source}: labels must be integers of shape (N,), got {y.dtype} {y.shape}")
    if y.size:
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= n_classes:
            raise DataError(f"{source}: labels must lie in [0, {n_classes}), found range [{low}, {high}]")
    return y.astype(np.int64)


def class_count(labels: list[np.ndarray], source: str) -> int:
    """The number of classes C = max(label) + 1 implied by integer labels in [0, C).

    Refused (DataError naming ``source``): negative labels, labels ≥ 2**63, C > :data:`MAX_CLASSES`,
    and label sets that leave more than half of the classes 0 … C−1 empty (labels "far beyond the class
    count", e.g. {0, 1, 10**9}: relabel them 0 … K−1 first); fewer than 2 classes."""
    present = [np.asarray(a) for a in labels if np.asarray(a).size]
    if not present:
        raise DataError(f"{source}: no labels")
    for y in present:
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
            raise DataError(f"{source}: labels must be integers, got {y.dtype}")
    low, high = min(int(y.min()) for y in present), max(int(y.max()) for y in present)
    if low < 0:
        raise DataError(f"{source}: labels must be >= 0, found {low}")
    n_classes = high + 1
    if n_classes > MAX_CLASSES:
        raise DataError(f"{source}: largest label {high} implies {n_classes} classes (more than {MAX_CLASSES}); "
                        f"relabel the classes as 0 ... K-1")
    distinct = len(np.unique(np.concatenate([y.astype(np.int64) for y in present])))
    if 2 * distinct < n_classes:
        raise DataError(f"{source}: {distinct} distinct labels but the largest is {high}, so {n_classes - distinct} "
                        f"of the classes 0 ... {high} would be empty; relabel the classes as 0 ... K-1")
    if n_classes < 2:
        raise DataError(f"{source}: need at least 2 classes, labels give {n_classes}")
    return n_classes


def check_features(x: np.ndarray, source: str, name: str = "x") -> np.ndarray:
    """Features (N, D ≥ 1) as float64, flattened after the sample dimension; else a DataError.

    Refused: non-numeric or complex arrays (casting would drop the imaginary part), zero features,
    NaN or infinite values."""
    x = np.asarray(x)
    if x.ndim < 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{source}: array {name!r} must be numeric with shape (N, ...), got {x.dtype} {x.shape}")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{source}: array {name!r} is complex ({x.dtype}); features must be real numbers")
    x = x.reshape(len(x), -1)
    if x.shape[1] == 0:
        raise DataError(f"{source}: array {name!r} has zero features per example (shape {x.shape})")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise DataError(f"{source}: array {name!r} contains NaN or infinite values")
    return x
