"""Any classification data set saved as ``.npz`` with arrays ``x`` (N, ...) and integer ``y`` (N,),
optionally ``x_test`` and ``y_test``; read with ``np.load(allow_pickle=False)``.

``data_dir`` is the .npz file itself or a directory holding exactly one .npz file. Features are
flattened after the sample dimension; the number of classes is max(label) + 1 over both splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dynamics.errors import DataError
from trainers.data.raw import RawData

EXPECTED = "an .npz file with arrays x (N, ...), integer y (N,) and optionally x_test, y_test"


def locate(data_dir: str) -> Path:
    """The .npz file ``data_dir`` names, or the only one inside the directory ``data_dir``."""
    if not data_dir:
        raise DataError("data set 'npz' needs data.data_dir (or --data-dir) naming the .npz file")
    path = Path(data_dir).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("*.npz"))
        if len(found) == 1:
            return found[0]
        raise DataError(f"expected exactly one .npz file in directory '{path}', found {len(found)}; "
                        f"point data.data_dir at the file")
    raise DataError(f"missing data file '{path.name}' in directory '{path.parent}'; expected {EXPECTED}")


def pair(arrays: dict[str, np.ndarray], xkey: str, ykey: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) float64 and labels (N,) int64 from ``arrays``, validated."""
    x, y = arrays[xkey], arrays[ykey]
    if x.ndim < 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"'{path}': array {xkey!r} must be numeric with shape (N, ...), got {x.dtype} {x.shape}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"'{path}': array {ykey!r} must hold integer class labels of shape (N,), "
                        f"got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise DataError(f"'{path}': {xkey!r} has {len(x)} examples but {ykey!r} has {len(y)}")
    if y.size and y.min() < 0:
        raise DataError(f"'{path}': labels in {ykey!r} must be >= 0, found {int(y.min())}")
    x = x.reshape(len(x), -1).astype(np.float64)
    if not np.isfinite(x).all():
        raise DataError(f"'{path}': array {xkey!r} contains NaN or infinite values")
    return x, y.astype(np.int64)


def read_npz(data_dir: str) -> RawData:
    """The arrays of the .npz file at ``data_dir`` (see the module docstring)."""
    path = locate(data_dir)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read '{path}' as {EXPECTED}: {error}") from error
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"'{path}' lacks array(s) {missing}; found {sorted(arrays)}; expected {EXPECTED}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"'{path}' must hold both x_test and y_test or neither; found {sorted(arrays)}")
    x, y = pair(arrays, "x", "y", path)
    x_test = y_test = None
    labels = [y]
    if "x_test" in arrays:
        x_test, y_test = pair(arrays, "x_test", "y_test", path)
        if x_test.shape[1] != x.shape[1]:
            raise DataError(f"'{path}': x has {x.shape[1]} features per example but x_test has {x_test.shape[1]}")
        labels.append(y_test)
    n_classes = int(max(int(a.max()) for a in labels if a.size)) + 1 if len(y) else 0
    if n_classes < 2:
        raise DataError(f"'{path}': need at least 2 classes, labels give {n_classes}")
    return RawData(x, y, x_test, y_test, n_classes)
