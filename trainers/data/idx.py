"""MNIST in its original IDX files (LeCun et al.), raw or gzip-compressed.

IDX layout: two zero bytes, a type byte (0x08 = unsigned byte), the number of dimensions k, then k
big-endian uint32 sizes, then the data in C order. Images are ``idx3`` (magic 0x00000803 = 2051,
N×28×28), labels ``idx1`` (magic 0x00000801 = 2049, N). The files looked for in ``data_dir``:
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each also with ``.gz`` or with a dot instead of the last dash
(``train-images.idx3-ubyte``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from dynamics.errors import DataError
from trainers.data.raw import RawData, check_labels, data_directory, find_file

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def candidates(stem: str, kind: str) -> list[str]:
    """File names tried for e.g. stem "train-images", kind "idx3-ubyte"."""
    names = [f"{stem}-{kind}", f"{stem}.{kind}"]
    return names + [n + ".gz" for n in names]


def read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """The uint8 array in IDX file ``path``; DataError if its magic number, rank or size is wrong."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            content = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read IDX file '{path}': {error}") from error
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DataError(f"IDX file '{path}' is truncated: {len(content)} bytes, expected a {header}-byte header")
    found = int.from_bytes(content[:4], "big")
    if found != magic:
        raise DataError(f"IDX file '{path}' has magic number {found} (0x{found:08x}), expected {magic} "
                        f"(0x{magic:08x}, unsigned bytes with {ndim} dimensions)")
    shape = tuple(int.from_bytes(content[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(content) != expected:
        raise DataError(f"IDX file '{path}' declares shape {shape} ({expected} bytes) but has {len(content)} bytes")
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def read_pair(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, rows·cols) and labels (N,) of the ``prefix`` ("train" or "t10k") split."""
    image_file = find_file(directory, candidates(f"{prefix}-images", "idx3-ubyte"),
                           "MNIST IDX image files (magic 2051), raw or .gz")
    label_file = find_file(directory, candidates(f"{prefix}-labels", "idx1-ubyte"),
                           "MNIST IDX label files (magic 2049), raw or .gz")
    images = read_idx(image_file, IMAGES_MAGIC, 3)
    labels = read_idx(label_file, LABELS_MAGIC, 1)
    if len(images) != len(labels):
        raise DataError(f"'{image_file}' holds {len(images)} images but '{label_file}' holds {len(labels)} labels")
    return images.reshape(len(images), -1).astype(np.float64), check_labels(labels, 10, str(label_file))


def read_mnist_idx(data_dir: str) -> RawData:
    """MNIST train and test sets from the IDX files in ``data_dir``: x (N, 784), y (N,)."""
    directory = data_directory(data_dir, "mnist")
    x, y = read_pair(directory, "train")
    x_test, y_test = read_pair(directory, "t10k")
    if x.shape[1] != x_test.shape[1]:
        raise DataError(f"MNIST training images have {x.shape[1]} pixels but test images {x_test.shape[1]} "
                        f"in '{directory}'")
    return RawData(x, y, x_test, y_test, 10)
