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


def check_labels(y: np.ndarray, n_classes: int, source: str) -> np.ndarray:
    """``y`` as int64 if every label lies in [0, n_classes); else a DataError naming ``source``."""
    y = np.asarray(y).astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"{source}: labels must lie in [0, {n_classes}), found range "
                        f"[{int(y.min())}, {int(y.max())}]")
    return y
