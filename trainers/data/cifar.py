"""CIFAR-10 in its *binary* distribution (never the pickled Python version).

Each file is a sequence of 3073-byte records: one label byte (0–9), then 3072 pixel bytes
(1024 red, 1024 green, 1024 blue, row-major 32×32). Training files ``data_batch_1.bin`` …
``data_batch_5.bin``, test file ``test_batch.bin``; looked for in ``data_dir`` and in
``data_dir/cifar-10-batches-bin``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dynamics.errors import DataError
from trainers.data.raw import RawData, check_labels, data_directory

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"


def batch_directory(data_dir: str) -> Path:
    """The directory holding the batch files: ``data_dir`` or its ``cifar-10-batches-bin`` folder."""
    directory = data_directory(data_dir, "cifar10")
    for candidate in (directory, directory / "cifar-10-batches-bin"):
        if (candidate / TEST_FILE).is_file() or (candidate / TRAIN_FILES[0]).is_file():
            return candidate
    return directory


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 3072) float64 and labels (N,) of one binary batch file."""
    if not path.is_file():
        raise DataError(f"missing data file '{path.name}' in directory '{path.parent}' (also looked in its "
                        f"parent for cifar-10-batches-bin); expected CIFAR-10 binary batches "
                        f"({', '.join(TRAIN_FILES)}, {TEST_FILE}) of {RECORD}-byte records")
    content = path.read_bytes()
    if len(content) == 0 or len(content) % RECORD:
        raise DataError(f"CIFAR-10 file '{path}' has {len(content)} bytes, not a positive multiple of the "
                        f"{RECORD}-byte record (1 label byte + 3072 pixel bytes)")
    records = np.frombuffer(content, dtype=np.uint8).reshape(-1, RECORD)
    return records[:, 1:].astype(np.float64), check_labels(records[:, 0], 10, str(path))


def read_cifar10(data_dir: str) -> RawData:
    """CIFAR-10 train (N, 3072) and test (M, 3072) sets from the binary batch files."""
    directory = batch_directory(data_dir)
    parts = [read_batch(directory / name) for name in TRAIN_FILES]
    x_test, y_test = read_batch(directory / TEST_FILE)
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return RawData(x, y, x_test, y_test, 10)
