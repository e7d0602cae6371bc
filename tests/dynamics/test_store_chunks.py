"""dynamics.store.chunks.RowArray against zarr itself: the same documents, the same chunk files byte for
byte, the same values read back, for a seeded grid of dtypes, shapes, chunk sizes and row writes."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import GzipCodec, ZstdCodec

from dynamics.errors import StoreError
from dynamics.store.chunks import FILL, RowArray, group_document

DTYPES = ["float16", "float32", "float64", "int8", "int32", "int64", "uint8", "uint64", "bool"]
#: (shape per row, rows per chunk)
LAYOUTS = [((), 1), ((), 4), ((), 64), ((3,), 1), ((3,), 8), ((2, 5), 3), ((0,), 2), ((1, 1, 2), 5)]


def _zarr_twin(folder: Path, dims, shape, chunk_rows, dtype, attrs, separator=".", compressors=None):
    """The array zarr itself creates with the writer's settings (the reference)."""
    dtype = np.dtype(dtype)
    return zarr.create_array(
        str(folder), shape=shape, chunks=(chunk_rows,) + tuple(max(n, 1) for n in shape[1:]), dtype=dtype,
        fill_value=FILL.get(dtype.kind, 0), dimension_names=list(dims), attributes=attrs,
        compressors=compressors if compressors is not None else ZstdCodec(level=1, checksum=True),
        chunk_key_encoding={"name": "default", "separator": separator}, config={"write_empty_chunks": True})


def _values(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _files(folder: Path) -> dict[str, bytes]:
    return {os.path.relpath(os.path.join(root, name), folder): Path(root, name).read_bytes()
            for root, _, names in os.walk(folder) for name in names if name != "zarr.json"}


def _writes(rng: np.random.Generator, capacity: int) -> list[tuple[int, int]]:
    """(start, rows) of a run of appends, then two rewrites inside the written range."""
    out, start = [], 0
    while start < capacity:
        n = int(min(capacity - start, rng.integers(1, 9)))
        out.append((start, n))
        start += n
    return out + [(int(rng.integers(0, capacity)), 1), (0, min(capacity, 3))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row_shape,chunk_rows", LAYOUTS)
def test_documents_chunk_files_and_values_equal_zarrs(tmp_path, dtype, row_shape, chunk_rows):
    rng = np.random.default_rng(zlib.crc32(repr((dtype, row_shape, chunk_rows)).encode()))
    capacity = 13
    shape = (capacity,) + row_shape
    dims = ("checkpoint",) + tuple(f"d{i}" for i in range(len(row_shape)))
    attrs = {"long_name": "x", "coordinates": "checkpoint_step"}
    ours = RowArray.create(tmp_path / "ours", dims, shape, chunk_rows, dtype, attrs)
    twin = _zarr_twin(tmp_path / "twin", dims, shape, chunk_rows, dtype, attrs)
    assert ours.document == json.loads((tmp_path / "twin" / "zarr.json").read_text())
    assert json.loads((tmp_path / "ours" / "zarr.json").read_text()) == ours.document
    expected = np.full(shape, FILL.get(np.dtype(dtype).kind, 0), dtype=dtype)   # the numpy reference
    for start, n in _writes(rng, capacity):
        values = _values(rng, dtype, (n,) + row_shape)
        ours.write_rows(start, values)
        twin[start:start + n] = values
        expected[start:start + n] = values
        assert _files(tmp_path / "ours") == _files(tmp_path / "twin")
    read = zarr.open_array(str(tmp_path / "ours"))[...]
    np.testing.assert_array_equal(read, expected)
    np.testing.assert_array_equal(ours.read_rows(capacity), expected)
    np.testing.assert_array_equal(RowArray.open(tmp_path / "ours").read_rows(7), expected[:7])


@pytest.mark.parametrize("rows", [0, 1, 5, 40])
def test_resize_writes_the_document_zarr_writes(tmp_path, rows):
    ours = RowArray.create(tmp_path / "ours", ("step", "u"), (8, 2), 4, "float32", {})
    twin = _zarr_twin(tmp_path / "twin", ("step", "u"), (8, 2), 4, "float32", {})
    ours.write_rows(0, np.ones((8, 2)))
    ours.resize(rows)
    twin.resize((rows, 2))
    assert ours.shape == (rows, 2)
    assert json.loads((tmp_path / "ours" / "zarr.json").read_text()) == json.loads(
        (tmp_path / "twin" / "zarr.json").read_text()) == ours.document
    kept = min(rows, 8)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "ours"))[:kept], np.ones((kept, 2)))
    if rows > 8:
        assert np.isnan(zarr.open_array(str(tmp_path / "ours"))[8:]).all()


def test_group_document_is_zarrs(tmp_path):
    zarr.create_group(str(tmp_path / "g"), zarr_format=3)
    assert json.loads((tmp_path / "g" / "zarr.json").read_text()) == group_document()


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
def test_appends_to_an_array_zarr_created_with_the_slash_separator(tmp_path, dtype):
    """Stores written before the '.' separator keep chunks in folders (c/0/0); appending writes there."""
    rng = np.random.default_rng(1)
    _zarr_twin(tmp_path / "old", ("checkpoint", "u"), (6, 3), 2, dtype, {}, separator="/")
    twin = _zarr_twin(tmp_path / "twin", ("checkpoint", "u"), (6, 3), 2, dtype, {}, separator="/")
    ours = RowArray.open(tmp_path / "old")
    for start, n in [(0, 3), (3, 3), (1, 1)]:
        values = _values(rng, dtype, (n, 3))
        ours.write_rows(start, values)
        twin[start:start + n] = values
    assert _files(tmp_path / "old") == _files(tmp_path / "twin")
    assert "c/0/0" in _files(tmp_path / "old")
    ours.delete_chunks_past(2)
    assert sorted(_files(tmp_path / "old")) == ["c/0/0"]


def test_values_are_cast_to_the_stored_dtype_and_byte_order(tmp_path):
    ours = RowArray.create(tmp_path / "ours", ("step",), (4,), 4, "float64", {})
    twin = _zarr_twin(tmp_path / "twin", ("step",), (4,), 4, "float64", {})
    values = np.array([1.5, -2.0, 3.25, 1e300], dtype=">f8")   # big-endian input
    ours.write_rows(0, values)
    twin[:] = values
    assert _files(tmp_path / "ours") == _files(tmp_path / "twin")
    narrow = RowArray.create(tmp_path / "narrow", ("step",), (2,), 2, "float32", {})
    narrow.write_rows(0, np.array([0.5, 2.0]))            # float64 values that float32 holds exactly
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "narrow"))[:], np.array([0.5, 2.0], np.float32))


def test_delete_chunks_past_keeps_the_rows_before(tmp_path):
    ours = RowArray.create(tmp_path / "a", ("step",), (10,), 3, "int64", {})
    ours.write_rows(0, np.arange(10))
    assert sorted(_files(tmp_path / "a")) == ["c.0", "c.1", "c.2", "c.3"]
    ours.delete_chunks_past(4)        # rows 0..3 live in chunks 0 and 1
    assert sorted(_files(tmp_path / "a")) == ["c.0", "c.1"]
    ours.resize(4)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"))[:], np.arange(4))


@pytest.mark.parametrize("start,rows,row_shape", [(-1, 1, (2,)), (3, 2, (2,)), (0, 1, (3,)), (0, 5, (2,))])
def test_writes_outside_the_array_are_refused(tmp_path, start, rows, row_shape):
    ours = RowArray.create(tmp_path / "a", ("step", "u"), (4, 2), 2, "float32", {})
    with pytest.raises(ValueError, match="cannot write rows"):
        ours.write_rows(start, np.zeros((rows,) + row_shape))
    assert _files(tmp_path / "a") == {}


def test_a_failed_file_write_leaves_the_old_chunk_and_no_temporary_file(tmp_path, monkeypatch):
    ours = RowArray.create(tmp_path / "a", ("step",), (4,), 4, "float64", {})
    ours.write_rows(0, np.arange(4.0))
    before = _files(tmp_path / "a")

    def no_space(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError, match="No space"):
        ours.write_rows(1, np.array([9.0]))
    monkeypatch.undo()
    assert _files(tmp_path / "a") == before           # no *.partial file left, old chunk intact
    np.testing.assert_array_equal(ours.read_rows(4), np.arange(4.0))


@pytest.mark.parametrize("make", [
    lambda p: zarr.create_array(str(p), shape=(4,), chunks=(2,), dtype="float32", compressors=GzipCodec()),
    lambda p: zarr.create_array(str(p), shape=(4, 6), chunks=(2, 3), dtype="float32"),          # split along dim 1
    lambda p: zarr.create_array(str(p), shape=(8,), chunks=(2,), shards=(4,), dtype="float32"),  # sharded
    lambda p: zarr.create_array(str(p), shape=(4,), chunks=(2,), dtype="float32", compressors=None),
    lambda p: zarr.create_array(str(p), shape=(4, 3), chunks=(2, 5), dtype="float32",                # wider than the array
                                compressors=ZstdCodec(level=1, checksum=True)),
])
def test_other_layouts_are_refused_by_name(tmp_path, make):
    make(tmp_path / "a")
    with pytest.raises(StoreError, match="not laid out as this writer writes"):
        RowArray.open(tmp_path / "a")


@pytest.mark.parametrize("content", ["", "{", '{"shape": [2]}', '[]', '{"node_type": "array", "shape": "x"}'])
def test_damaged_documents_raise_store_error_naming_the_folder(tmp_path, content):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "zarr.json").write_text(content)
    with pytest.raises(StoreError, match=r"a: the array's zarr.json"):
        RowArray.open(tmp_path / "a")


def test_a_damaged_chunk_is_named_when_a_partial_write_reads_it(tmp_path):
    ours = RowArray.create(tmp_path / "a", ("step",), (4,), 4, "float64", {})
    ours.write_rows(0, np.arange(4.0))
    (tmp_path / "a" / "c.0").write_bytes(b"garbage")
    with pytest.raises(StoreError, match=r"c\.0: the chunk cannot be decoded"):
        ours.write_rows(1, np.array([1.0]))


@pytest.mark.parametrize("stop", [0, 1, 3, 4, 9])
def test_fill_rows_writes_every_chunk_before_a_late_first_row(tmp_path, stop):
    ours = RowArray.create(tmp_path / "a", ("step", "u"), (12, 2), 3, "float32", {})
    ours.fill_rows(stop)
    assert sorted(_files(tmp_path / "a")) == [f"c.{k}.0" for k in range(-(-stop // 3))]
    ours.write_rows(stop, np.ones((2, 2)))
    expected = np.full((12, 2), np.nan, np.float32)
    expected[stop:stop + 2] = 1
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a"))[...], expected)
