"""The writer's arrays on disk: zarr v3 array documents and chunk files, written without zarr.

Every array a run store's writer makes has one layout: a regular chunk grid split along the first
(row) dimension only, the "default" chunk key encoding, and the codecs ``bytes`` (little-endian)
then ``zstd`` (zarr v3 core specification; see :mod:`dynamics.store.schema` for the chunk sizes).
For that layout the chunk holding rows ``[k·c, (k+1)·c)`` is the file ``c<sep>k<sep>0…<sep>0`` of
the array's folder, and its content is one zstd frame of the chunk's values in C order,
little-endian; every chunk is full size, the part past the array's shape holding the fill value.
:class:`RowArray` writes exactly that: the frame comes from numcodecs' ``Zstd(level, checksum)``,
the library zarr's own zstd codec calls, so the bytes equal the ones zarr writes for the same rows,
and the documents equal zarr's own (both tested against zarr). Readers open the store with zarr and
xarray.

Why not zarr's ``Array.__setitem__``: it runs every chunk write as a tree of asyncio tasks on zarr's
event-loop thread, Python work that holds the interpreter lock while the training loop that the
writer overlaps waits for it. In the checkpoint-dense case of ``benchmarks/recorder_overhead.py``
(11 checkpoints of about 30 variables in 400 training steps) the Recorder cost 1.23× the bare loop
with zarr's write path and 1.16× with these direct writes, against 1.15× with no chunk written at all
(12 pairs each, one run).

Each file is written to a temporary ``*.partial`` file beside it and renamed into place, as zarr's
local store does, so a killed writer leaves either the old chunk or the new one (and perhaps a
``*.partial`` file, which the writer removes when it resumes the store).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from numcodecs import Zstd

from dynamics.errors import StoreError

#: Fill value of a new array by dtype kind: NaN for floats (a missing value), -1 for signed integers
FILL = {"i": -1, "u": 0, "f": np.nan, "b": False}
#: zstd settings of every array the writer creates
ZSTD = {"level": 1, "checksum": True}


def _fill_json(value: Any) -> Any:
    """``value`` as a zarr v3 document writes a fill value: "NaN"/"Infinity"/"-Infinity" for
    non-finite floats, plain JSON otherwise."""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return float(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return int(value)


def _fill_value(value: Any, dtype: np.dtype) -> Any:
    """A fill value read from a document, as a value of ``dtype``."""
    if isinstance(value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[value]
    return np.asarray(value).astype(dtype).item()


def _bytes_codec(dtype: np.dtype) -> dict[str, Any]:
    return {"name": "bytes"} if dtype.itemsize == 1 else {"name": "bytes", "configuration": {"endian": "little"}}


def write_document(folder: Path, document: dict[str, Any]) -> None:
    """Write ``folder``/zarr.json (a temporary file, then ``os.replace``; removed when the write fails)."""
    _write_file(folder / "zarr.json", json.dumps(document).encode())   # the C encoder (indent= is pure Python)


def _write_file(target: Path, data: bytes | memoryview) -> None:
    tmp = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def group_document(attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The zarr v3 document of a group (what ``zarr.create_group`` writes)."""
    return {"attributes": attributes or {}, "zarr_format": 3, "node_type": "group"}


class RowArray:
    """One array of a run store with the writer's layout (module docstring), written directly.

    Obtain it from :meth:`create` or :meth:`open`. ``shape`` (rows first), ``dtype``, ``chunk_rows``
    (rows per chunk) and ``document`` (the ``zarr.json`` content) describe it as it is on disk.
    """

    def __init__(self, folder: Path, document: dict[str, Any]) -> None:
        self.folder, self.document = folder, document
        self.shape = tuple(int(n) for n in document["shape"])
        self.dtype = np.dtype(document["data_type"])
        self.chunk_rows = int(document["chunk_grid"]["configuration"]["chunk_shape"][0])
        self.fill_value = _fill_value(document["fill_value"], self.dtype)
        self._separator = document["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
        zstd = document["codecs"][1].get("configuration", {})
        self._zstd = Zstd(level=int(zstd.get("level", 0)), checksum=bool(zstd.get("checksum", False)))
        self._stored = self.dtype.newbyteorder("<")

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(cls, folder: Path, dims: tuple[str, ...], shape: tuple[int, ...], chunk_rows: int, dtype: Any,
               attributes: dict[str, Any]) -> RowArray:
        """A new empty array in ``folder`` (created; its parent must exist), replacing any array there:
        ``shape`` rows first, chunks of ``chunk_rows`` rows (whole extent in the other dimensions),
        fill value from :data:`FILL`, zstd as :data:`ZSTD`, ``dims`` as ``dimension_names``."""
        dtype = np.dtype(dtype)
        if len(dims) != len(shape):
            raise ValueError(f"{folder}: {len(dims)} dimension names for a shape of {len(shape)} dimensions")
        document = {
            "shape": list(shape), "data_type": dtype.name,
            "chunk_grid": {"name": "regular",
                           "configuration": {"chunk_shape": [max(int(chunk_rows), 1)] + [max(n, 1) for n in shape[1:]]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}},
            "fill_value": _fill_json(FILL.get(dtype.kind, 0)),
            "codecs": [_bytes_codec(dtype), {"name": "zstd", "configuration": dict(ZSTD)}],
            "attributes": attributes, "dimension_names": list(dims),
            "zarr_format": 3, "node_type": "array", "storage_transformers": []}
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        write_document(folder, document)
        return cls(folder, document)

    @classmethod
    def open(cls, folder: Path) -> RowArray:
        """The array stored in ``folder``; StoreError when its ``zarr.json`` is missing or damaged, or
        describes a layout other than the writer's (another grid, key encoding or codecs)."""
        try:
            document = json.loads((folder / "zarr.json").read_text())
        except (OSError, ValueError) as err:
            raise StoreError(f"{folder}: the array's zarr.json cannot be read ({type(err).__name__}: {err})") from None
        try:
            shape, grid = document["shape"], document["chunk_grid"]
            chunk_shape = grid["configuration"]["chunk_shape"]
            codecs = [codec["name"] for codec in document["codecs"]]
            supported = (document.get("node_type") == "array" and grid["name"] == "regular"
                         and document["chunk_key_encoding"]["name"] == "default"
                         and len(chunk_shape) == len(shape)
                         and all(c == max(n, 1) for c, n in zip(chunk_shape[1:], shape[1:]))
                         and codecs == ["bytes", "zstd"] and not document.get("storage_transformers")
                         and document["codecs"][0].get("configuration", {}).get("endian", "little") == "little")
            array = cls(folder, document) if supported else None
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise StoreError(f"{folder}: the array's zarr.json is damaged ({type(err).__name__}: {err})") from None
        if array is None:
            raise StoreError(f"{folder}: the array is not laid out as this writer writes (regular chunks along the "
                             f"rows, default chunk keys, bytes + zstd codecs); it cannot be appended to")
        return array

    # ----------------------------------------------------------------- shape
    def resize(self, rows: int) -> None:
        """Set the number of rows (rewrites ``zarr.json`` only; chunk files are left as they are)."""
        self.document = dict(self.document, shape=[int(rows)] + list(self.shape[1:]))
        write_document(self.folder, self.document)
        self.shape = (int(rows),) + self.shape[1:]

    def delete_chunks_past(self, rows: int) -> None:
        """Delete the chunk files that lie wholly past row ``rows``, one at a time (the first failure
        stops)."""
        first_gone = -(-rows // self.chunk_rows)
        for root, _, files in os.walk(self.folder):
            for name in files:
                key = os.path.relpath(os.path.join(root, name), self.folder).replace(os.sep, self._separator)
                parts = key.split(self._separator)
                if parts[0] == "c" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) >= first_gone:
                    os.unlink(os.path.join(root, name))

    # ----------------------------------------------------------------- chunks
    def _chunk_path(self, k: int) -> Path:
        key = self._separator.join(["c", str(k)] + ["0"] * (len(self.shape) - 1))
        return self.folder / key.replace("/", os.sep)

    def _write_chunk(self, k: int, encoded: bytes) -> None:
        path = self._chunk_path(k)
        if self._separator == "/":   # older stores keep chunks in folders (c/k/0)
            path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(path, encoded)

    def _read_chunk(self, k: int) -> np.ndarray | None:
        path = self._chunk_path(k)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        shape = (self.chunk_rows,) + self.shape[1:]
        try:
            return np.frombuffer(self._zstd.decode(data), dtype=self._stored).reshape(shape)
        except Exception as err:
            raise StoreError(f"{path}: the chunk cannot be decoded ({type(err).__name__}: {err})") from None

    def write_rows(self, start: int, values: np.ndarray) -> None:
        """Write ``values`` (n rows, the array's shape per row, any dtype that casts to it) as rows
        ``start`` … ``start + n − 1``; each chunk touched is encoded and written once (a chunk only
        partly covered is read first, or starts as the fill value when it has no file yet). An array
        whose rows hold no elements (a dimension of length 0) has no chunk files, as with zarr."""
        values = np.asarray(values)
        n = values.shape[0] if values.ndim else 0
        if values.shape[1:] != self.shape[1:] or start < 0 or start + n > self.shape[0]:
            raise ValueError(f"{self.folder}: cannot write rows {start}..{start + n - 1} of shape {values.shape[1:]} "
                             f"into an array of shape {self.shape}")
        c = self.chunk_rows
        if 0 in self.shape[1:]:
            return
        for k in range(start // c, (start + n - 1) // c + 1 if n else start // c):
            lo, hi = max(start, k * c), min(start + n, (k + 1) * c)
            if lo == k * c and hi == (k + 1) * c:
                chunk = np.ascontiguousarray(values[lo - start:hi - start], dtype=self._stored)
            else:
                old = self._read_chunk(k)
                chunk = (np.full((c,) + self.shape[1:], self.fill_value, dtype=self._stored) if old is None
                         else old.copy())
                chunk[lo - k * c:hi - k * c] = values[lo - start:hi - start]
            self._write_chunk(k, self._zstd.encode(chunk.reshape(-1).view(np.uint8)))

    def fill_rows(self, stop: int) -> None:
        """Write the fill value into rows 0 … ``stop`` − 1 (a whole chunk of it is encoded once and
        written to every file). A variable first written at a later row thus still has a file for
        every chunk before it, as the readers' check of the committed range expects."""
        c = self.chunk_rows
        if stop <= 0 or 0 in self.shape[1:]:
            return
        chunk = np.full((c,) + self.shape[1:], self.fill_value, dtype=self._stored)
        encoded = self._zstd.encode(chunk.reshape(-1).view(np.uint8))
        for k in range(stop // c):
            self._write_chunk(k, encoded)
        if stop % c:
            self.write_rows(stop - stop % c, chunk[:stop % c])

    def read_rows(self, stop: int) -> np.ndarray:
        """Rows 0 … ``stop`` − 1 (missing chunks read as the fill value), in the native byte order."""
        stop = min(int(stop), self.shape[0])
        out = np.full((stop,) + self.shape[1:], self.fill_value, dtype=self.dtype)
        c = self.chunk_rows
        for k in range(-(-stop // c)):
            chunk = self._read_chunk(k)
            if chunk is not None:
                hi = min(stop, (k + 1) * c)
                out[k * c:hi] = chunk[:hi - k * c]
        return out
