"""Damaged stores are reported, never read as data (issue 14, case 14): chunk files truncated, zeroed,
bit-flipped or deleted; malformed root metadata; deleted group/array metadata. Each → StoreError
naming the store, the variable and (for data) the chunk; real stores on disk, damaged as a disk would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dynamics.errors import StoreError
from dynamics.store import RunWriter, open_run
from dynamics.store.writer import _strip_consolidated


def _write(path: Path, consolidated: bool = True) -> Path:
    rng = np.random.default_rng(0)
    w = RunWriter.create(path, config={"a": 1}, probe_x=rng.standard_normal((6, 4)).astype(np.float32),
                         probe_y=rng.integers(0, 3, 6))
    w.append_metrics(np.arange(1, 11), np.arange(10) / 10, {"loss": rng.standard_normal(10)})
    for k in range(3):
        factor = rng.standard_normal((6, 6))
        w.append_checkpoint(5 * k, k / 2, {"acc": 0.5}, {"ntk": (("probe", "probe_"), factor @ factor.T)},
                            {"w": (("w_dim0",), rng.standard_normal(4))})
    w.close("complete")
    if not consolidated:
        _strip_consolidated(path)
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("pristine") / "run.zarr")


@pytest.fixture
def store(pristine, tmp_path):
    copy = tmp_path / "run.zarr"
    shutil.copytree(pristine, copy)
    return copy


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[:7])


def _zero(f: Path) -> None:
    f.write_bytes(bytes(len(f.read_bytes())))


def _flip(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _zero, _flip], ids=["truncated", "zeroed", "bit-flipped"])
@pytest.mark.parametrize("variable, key", [("checkpoints/ntk", "c.0.0.0"), ("metrics/loss", "c.0"),
                                           ("params/w", "c.0.0"), ("probe/x", "c.0.0")])
def test_damaged_chunk_is_named(store, damage, variable, key):
    damage(store / variable / key)
    with pytest.raises(StoreError) as info:
        open_run(store).load()
    message = str(info.value)
    assert str(store) in message and f"chunk {key} of {variable}" in message and "\n" not in message


def test_only_the_damaged_variable_fails(store):
    _zero(store / "checkpoints" / "ntk" / "c.0.0.0")
    tree = open_run(store)
    np.testing.assert_array_equal(tree["metrics"]["step"].values, np.arange(1, 11))
    np.testing.assert_array_equal(tree["checkpoints"]["acc"].values, [0.5] * 3)
    with pytest.raises(StoreError, match="chunk c.0.0.0 of checkpoints/ntk"):
        tree["checkpoints"]["ntk"].values


@pytest.mark.parametrize("variable, key", [("checkpoints/ntk", "c.0.0.0"), ("metrics/loss", "c.0"),
                                           ("params/checkpoint", "c.0"), ("probe/y", "c.0")])
def test_deleted_chunk_inside_committed_range_is_an_error_not_nan(store, variable, key):
    (store / variable / key).unlink()
    with pytest.raises(StoreError, match=f"chunk {key} of {variable} .* is missing"):
        open_run(store)


def _set_attr(store: Path, **changes) -> None:
    meta_path = store / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"].update(changes)
    meta_path.write_text(json.dumps(meta))


def _committed(store: Path, **changes) -> str:
    mark = json.loads(json.loads((store / "zarr.json").read_text())["attributes"]["committed"])
    mark.update(changes)
    return json.dumps(mark)


@pytest.mark.parametrize("case, expected", [
    ("committed-empty", "committed mark lacks 'metrics'"),
    ("committed-negative", r"committed.metrics must be an int >= 0, got -5"),
    ("committed-float", r"committed.checkpoint must be an int >= 0, got 2.5"),
    ("committed-too-many", r"metrics/step holds 10 rows but the committed mark says 1000"),
    ("variables-not-lists", "committed.variables must map"),
    ("config-list", "root attribute 'config' must be a JSON object, got list"),
    ("config-number", "root attribute 'config' must be a JSON object, got int"),
    ("nonfinite-string", "root attribute 'nonfinite' must be a JSON object"),
    ("status-bogus", "status must be one of"),
])
def test_malformed_root_attributes(store, case, expected):
    changes = {
        "committed-empty": {"committed": "{}"},
        "committed-negative": {"committed": _committed(store, metrics=-5)},
        "committed-float": {"committed": _committed(store, checkpoint=2.5)},
        "committed-too-many": {"committed": _committed(store, metrics=1000)},
        "variables-not-lists": {"committed": _committed(store, variables={"metrics": "step"})},
        "config-list": {"config": "[1, 2]"},
        "config-number": {"config": "5"},
        "nonfinite-string": {"nonfinite": json.dumps("x")},
        "status-bogus": {"status": "bogus"},
    }[case]
    _set_attr(store, **changes)
    with pytest.raises(StoreError, match=expected) as info:
        open_run(store)
    assert str(store) in str(info.value)
    with pytest.raises(StoreError, match=expected):
        RunWriter.resume(store)
    assert not (store / ".lock").exists()


@pytest.mark.parametrize("meta, expected", [
    ("metrics/zarr.json", "group metrics: its metadata file .*metrics/zarr.json is missing"),
    ("checkpoints/ntk/zarr.json", "variable checkpoints/ntk: its metadata file .*checkpoints/ntk/zarr.json is missing"),
    ("probe/zarr.json", "group probe: its metadata file .*probe/zarr.json is missing"),
])
def test_deleted_metadata_of_unconsolidated_store(tmp_path, meta, expected):
    store = _write(tmp_path / "run.zarr", consolidated=False)
    (store / meta).unlink()
    with pytest.raises(StoreError, match=expected) as info:
        open_run(store)
    assert str(store) in str(info.value)


# ------------------------------------------------------------------ damaged metadata documents (issue 22 §1)
def _edit_document(file: Path, **changes) -> None:
    document = json.loads(file.read_text())
    document.update(changes)
    file.write_text(json.dumps(document))


def _edit_record(store: Path, key: str, **changes) -> None:
    root = json.loads((store / "zarr.json").read_text())
    root["consolidated_metadata"]["metadata"][key].update(changes)
    (store / "zarr.json").write_text(json.dumps(root))


@pytest.mark.parametrize("consolidated", [True, False], ids=["consolidated", "unconsolidated"])
@pytest.mark.parametrize("document", ["checkpoints/ntk/zarr.json", "metrics/loss/zarr.json", "params/w/zarr.json",
                                      "probe/x/zarr.json", "checkpoints/zarr.json"])
def test_truncated_document_is_named_with_its_file(tmp_path, consolidated, document):
    store = _write(tmp_path / "run.zarr", consolidated=consolidated)
    _truncate(store / document)
    node = document.removesuffix("/zarr.json")
    what = ("group " if "/" not in node else "variable ") + node
    for attempt in (lambda: open_run(store), lambda: RunWriter.resume(store)):
        with pytest.raises(StoreError) as info:
            attempt()
        message = str(info.value)
        assert message.startswith(f"store {store}: {what}: ") and str(store / document) in message
        assert "JSONDecodeError" in message and "\n" not in message
    assert not (store / ".lock").exists()


@pytest.mark.parametrize("field, value", [("data_type", "float16"), ("data_type", "float32"), ("fill_value", 0.0),
                                          ("chunk_grid", {"name": "regular", "configuration": {"chunk_shape": [1, 6, 6]}})])
def test_edited_layout_of_an_array_document_is_named(store, field, value):
    _edit_document(store / "checkpoints" / "ntk" / "zarr.json", **{field: value})
    with pytest.raises(StoreError, match=rf"store {store}: variable checkpoints/ntk: its metadata file "
                                         rf"{store}/checkpoints/ntk/zarr.json says {field} = .* where the store's "
                                         rf"commit record \({store}/zarr.json\) says"):
        open_run(store)


@pytest.mark.parametrize("where", ["document", "record"])
def test_impossible_dtype_is_named_where_it_is(store, where):
    if where == "document":
        _edit_document(store / "checkpoints" / "ntk" / "zarr.json", data_type="float99")
        expected = rf"variable checkpoints/ntk: the metadata in {store}/checkpoints/ntk/zarr.json is damaged"
    else:
        _edit_record(store, "checkpoints/ntk", data_type="float99")
        expected = rf"variable checkpoints/ntk \(commit record\): the metadata in {store}/zarr.json is damaged"
    with pytest.raises(StoreError, match=expected + r" \(ValueError: .*float99"):
        open_run(store)


def test_every_reader_names_the_damaged_document(tmp_path, capsys):
    """The reported case: a truncated checkpoints/ntk/zarr.json of an analysed store made `dynamics
    analyze` and `report` end with a JSONDecodeError traceback."""
    from analysis import analyze, open_runs
    from dynamics.cli import main
    store = _write(tmp_path / "run.zarr")
    analyze(store, probe_checkpoints="none")
    _truncate(store / "checkpoints" / "ntk" / "zarr.json")
    for argv in (["analyze", str(store)], ["report", str(store)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"variable checkpoints/ntk: its metadata file {store}/checkpoints/ntk/zarr.json is damaged" in err
    with pytest.raises(StoreError, match="checkpoints/ntk/zarr.json is damaged"):
        open_runs([store])


def test_damaged_chunk_of_an_analysed_store_is_named_not_called_out_of_date(tmp_path):
    from analysis import analyze
    store = _write(tmp_path / "run.zarr")
    analyze(store, probe_checkpoints="none")
    _flip(store / "params" / "w" / "c.0.0")
    with pytest.raises(StoreError, match=rf"store {store}: chunk c.0.0 of params/w \(rows 0–\d+, file "
                                         rf"{store}/params/w/c.0.0\) cannot be read"):
        open_run(store)


def test_damaged_analysis_chunk_is_named_and_computed_again_by_open_runs(tmp_path):
    from analysis import analyze, open_runs
    store = _write(tmp_path / "run.zarr")
    analyze(store, probe_checkpoints="none")
    chunk = store / "analysis" / "ntk_alignment_init" / "c" / "0"
    _flip(chunk)
    with pytest.raises(StoreError, match=rf"store {store}: chunk c/0 of analysis/ntk_alignment_init .*file {chunk}\) "
                                         rf"cannot be read"):
        open_run(store)
    assert "analysis" not in open_run(store, analysis="omit").children
    assert open_runs([store]).sizes["run"] == 1          # derived data: computed and written again
    assert open_run(store, analysis="require")["analysis"].sizes["checkpoint"] == 3
