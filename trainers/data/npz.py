"""Any classification data set saved as ``.npz`` with arrays ``x`` (N, ...) and integer ``y`` (N,),
optionally ``x_test`` and ``y_test``; read with ``np.load(allow_pickle=False)``.

``data_dir`` is the .npz file itself or a directory holding exactly one .npz file. Features are
flattened after the sample dimension; the number of classes is max(label) + 1 over both splits (see
:func:`trainers.data.raw.class_count` for the labels refused).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dynamics.errors import DataError
from trainers.data.raw import RawData, check_features, check_labels, class_count

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
    """Features (N, D) float64 and labels (N,) of ``arrays``, validated (:mod:`trainers.data.raw`)."""
    x = check_features(arrays[xkey], f"'{path}'", xkey)
    y = np.asarray(arrays[ykey])
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise DataError(f"'{path}': array {ykey!r} must hold integer class labels of shape (N,), "
                        f"got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise DataError(f"'{path}': {xkey!r} has {len(x)} examples but {ykey!r} has {len(y)}")
    return x, y


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz archive ``path``; DataError for a truncated, foreign or .npy file."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read '{path}' as {EXPECTED}: {error}") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"'{path}' holds a single .npy array, not an .npz archive; expected {EXPECTED} "
                        f"(save with np.savez(path, x=..., y=...))")
    try:
        with loaded as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read '{path}' as {EXPECTED}: {error}") from error


def read_npz(data_dir: str) -> RawData:
    """The arrays of the .npz file at ``data_dir`` (see the module docstring)."""
    path = locate(data_dir)
    arrays = read_arrays(path)
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
    n_classes = class_count(labels, f"'{path}'")
    y = check_labels(y, n_classes, f"'{path}'")
    y_test = None if y_test is None else check_labels(y_test, n_classes, f"'{path}'")
    return RawData(x, y, x_test, y_test, n_classes)
