"""Run store layer: exact round trips, plain-xarray reading, consolidated metadata refresh, trimming,
locking and every bad input (each leaves what was written intact)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from dynamics.errors import StoreError, StoreLockedError
from dynamics.store import RunWriter, check_store, open_run
from dynamics.store import schema
from dynamics.store.batch import MIN_CAPACITY


def _probe(rng, n=6, d=4, dtype=np.float32):
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, 3, n)


def _write_random_run(path, seed, dtype):
    """Write a run with random blocks; return the expected content as plain numpy, built independently."""
    rng = np.random.default_rng(seed)
    x, y = _probe(rng, dtype=dtype)
    writer = RunWriter.create(path, config={"seed": seed}, probe_x=x, probe_y=y)
    steps, expected = [], {"loss": [], "lr": []}
    step = 0
    for block in range(4):
        k = int(rng.integers(1, 7))
        block_steps = step + np.cumsum(rng.integers(1, 4, k))
        step = int(block_steps[-1])
        loss = rng.standard_normal(k)
        cols = {"loss": loss}
        if block >= 2:                                  # a name first seen in a later block
            cols["lr"] = rng.random(k)
        writer.append_metrics(block_steps, block_steps / 10, cols)
        steps += block_steps.tolist()
        expected["loss"] += loss.tolist()
        expected["lr"] += cols["lr"].tolist() if "lr" in cols else [np.nan] * k
    ckpts = []
    for c in range(3):
        ntk = rng.standard_normal((6, 6)).astype(dtype)
        weight = rng.standard_normal((2, 3)).astype(dtype)
        scalars = {"acc": float(rng.random())} if c != 1 else {}
        writer.append_checkpoint(10 * c + 1, float(c), scalars, {"ntk": (("probe", "probe_"), ntk)},
                                 {"w": (("w_dim0", "w_dim1"), weight)})
        ckpts.append((10 * c + 1, float(c), scalars.get("acc", np.nan), ntk, weight))
    writer.close("complete")
    return x, y, np.array(steps), expected, ckpts


def _check_content(tree, x, y, steps, expected, ckpts):
    m = tree["metrics"]
    np.testing.assert_array_equal(m["step"].values, steps)
    np.testing.assert_array_equal(m["epoch"].values, steps / 10)
    for name, values in expected.items():
        np.testing.assert_array_equal(m[name].values, np.array(values))
    c = tree["checkpoints"]
    np.testing.assert_array_equal(c["checkpoint"].values, np.arange(len(ckpts)))
    np.testing.assert_array_equal(c["checkpoint_step"].values, [k[0] for k in ckpts])
    np.testing.assert_array_equal(c["checkpoint_epoch"].values, [k[1] for k in ckpts])
    np.testing.assert_array_equal(c["acc"].values, [k[2] for k in ckpts])
    np.testing.assert_array_equal(c["ntk"].values, np.stack([k[3] for k in ckpts]))
    assert c["ntk"].dims == ("checkpoint", "probe", "probe_") and c["ntk"].dtype == x.dtype
    np.testing.assert_array_equal(tree["params"]["w"].values, np.stack([k[4] for k in ckpts]))
    np.testing.assert_array_equal(tree["probe"]["x"].values, x)
    np.testing.assert_array_equal(tree["probe"]["y"].values, y)
    assert tree["probe"]["x"].dims == ("probe", "feature")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact_with_open_run_and_plain_xarray(tmp_path, seed, dtype):
    path = tmp_path / "run.zarr"
    content = _write_random_run(path, seed, dtype)
    _check_content(open_run(path), *content)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # closed store: consolidated, no fallback warning
        plain = xr.open_datatree(path, engine="zarr")
        metrics = xr.open_zarr(path, group="metrics")
    _check_content(plain, *content)
    assert "epoch" in metrics.coords and metrics["loss"].dims == ("step",)
    attrs = open_run(path).attrs
    assert attrs["schema"] == "dynamics.run/1" and attrs["status"] == "complete"
    assert json.loads(attrs["config"]) == {"seed": seed}
    assert set(json.loads(attrs["versions"])) == {"python", "torch", "numpy", "xarray", "zarr", "dynamics"}
    committed = json.loads(attrs["committed"])
    assert committed["metrics"] == len(content[2]) and committed["step"] == int(content[2][-1])
    assert committed["checkpoint"] == 3 and committed["checkpoint_step"] == 21


def test_resume_refreshes_consolidated_metadata(tmp_path):
    path = tmp_path / "run.zarr"
    x, y = _probe(np.random.default_rng(0))
    w = RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    w.append_metrics(np.arange(5), np.zeros(5), {"loss": np.arange(5.0)})
    w.close("complete")
    assert "consolidated_metadata" in json.loads((path / "zarr.json").read_text())
    w = RunWriter.resume(path)
    w.append_metrics(np.arange(5, 12), np.zeros(7), {"loss": np.arange(5.0, 12.0), "new": np.ones(7)})
    running = xr.open_zarr(path, group="metrics")         # while running: the committed view, no warning
    np.testing.assert_array_equal(running["new"].values, [np.nan] * 5 + [1.0] * 7)
    w.close("complete")
    plain = xr.open_zarr(path, group="metrics")          # consolidated metadata again, with the new shapes
    np.testing.assert_array_equal(plain["loss"].values, np.arange(12.0))
    np.testing.assert_array_equal(plain["new"].values, [np.nan] * 5 + [1.0] * 7)
    np.testing.assert_array_equal(xr.open_datatree(path, engine="zarr")["metrics"]["step"].values, np.arange(12))


def test_uncommitted_rows_are_hidden_and_trimmed(tmp_path):
    """Simulate a kill after the data were written but before the mark: grow arrays by hand."""
    path = tmp_path / "run.zarr"
    x, y = _probe(np.random.default_rng(0))
    w = RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    w.append_metrics(np.arange(4), np.zeros(4), {"loss": np.arange(4.0)})
    group = zarr.open_group(str(path), mode="r+")
    group["metrics"]["loss"].resize((9,))               # unequal lengths: plain xarray would refuse
    group["metrics"]["loss"][4:9] = 99.0
    group["metrics"].create_array("ghost", shape=(4,), dtype="f8", dimension_names=["step"])
    w.abandon()
    tree = open_run(path)
    np.testing.assert_array_equal(tree["metrics"]["loss"].values, np.arange(4.0))
    assert "ghost" not in tree["metrics"]
    w = RunWriter.resume(path)
    assert zarr.open_group(str(path))["metrics"]["loss"].shape == (4,)
    assert "ghost" not in zarr.open_group(str(path))["metrics"]
    w.append_metrics(np.arange(4, 6), np.zeros(2), {})
    w.close("complete")
    np.testing.assert_array_equal(xr.open_zarr(path, group="metrics")["loss"].values, [0, 1, 2, 3, np.nan, np.nan])


def test_truncate_keeps_nonfinite_counts_exact(tmp_path):
    path = tmp_path / "run.zarr"
    x, y = _probe(np.random.default_rng(0))
    w = RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    w.nonfinite = {"metrics": {"loss": {"count": 4, "steps": [[2, 3], [7, 8]]}}}
    w.append_metrics(np.arange(10), np.zeros(10), {"loss": np.arange(10.0)})
    for s in (1, 4, 8):
        w.append_checkpoint(s, 0.0, {}, {}, {}, nonfinite=[("params", "w", s)] if s > 1 else ())
    w.truncate(7)
    w.close("interrupted")
    tree = open_run(path)
    np.testing.assert_array_equal(tree["metrics"]["step"].values, np.arange(8))
    np.testing.assert_array_equal(tree["checkpoints"]["checkpoint_step"].values, [1, 4])
    assert json.loads(tree.attrs["nonfinite"]) == {"metrics": {"loss": {"count": 3, "steps": [[2, 3], [7, 7]]}},
                                                   "params": {"w": {"count": 1, "steps": [[4, 4]]}}}
    assert tree.attrs["status"] == "interrupted"


def test_bad_steps_raise_and_lose_nothing(tmp_path):
    path = tmp_path / "run.zarr"
    x, y = _probe(np.random.default_rng(0))
    w = RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    w.append_metrics(np.arange(3), np.zeros(3), {"loss": np.ones(3)})
    w.append_checkpoint(2, 0.0, {}, {}, {"w": (("w_dim0",), np.ones(3))})
    with pytest.raises(StoreError, match=r"\[2, 3\]"):
        w.append_metrics(np.array([2, 3]), np.zeros(2), {"loss": np.ones(2)})
    with pytest.raises(StoreError, match="checkpoint step 2"):
        w.append_checkpoint(2, 0.0, {}, {}, {})
    with pytest.raises(StoreError, match=r"params/w has shape \(3,\)"):
        w.append_checkpoint(5, 0.0, {}, {}, {"w": (("w_dim0",), np.ones(4))})
    w.close("complete")
    tree = open_run(path)
    assert tree["metrics"].sizes["step"] == 3 and tree["checkpoints"].sizes["checkpoint"] == 1


def test_paths_that_are_not_run_stores(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_run(tmp_path / "missing.zarr")
    (tmp_path / "file.zarr").write_text("hello")
    with pytest.raises(StoreError, match="file.zarr is not a run store"):
        open_run(tmp_path / "file.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="not a run store"):
        RunWriter.resume(tmp_path / "empty")
    zarr.create_group(str(tmp_path / "plain.zarr"), zarr_format=3)
    with pytest.raises(StoreError, match="not a dynamics run store"):
        check_store(tmp_path / "plain.zarr")
    zarr.create_group(str(tmp_path / "v2.zarr"), zarr_format=2)
    with pytest.raises(StoreError, match="not a run store"):
        open_run(tmp_path / "v2.zarr")
    zarr.create_group(str(tmp_path / "future.zarr"), zarr_format=3, attributes={"schema": "dynamics.run/2"})
    with pytest.raises(StoreError, match="'dynamics.run/2'"):
        RunWriter.resume(tmp_path / "future.zarr")
    assert not (tmp_path / "future.zarr" / ".lock").exists()


def test_create_refuses_existing_paths(tmp_path):
    x, y = _probe(np.random.default_rng(0))
    path = tmp_path / "run.zarr"
    RunWriter.create(path, config=None, probe_x=x, probe_y=y).close("complete")
    with pytest.raises(StoreError, match="already exists"):
        RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    assert open_run(path).attrs["status"] == "complete"
    with pytest.raises(TypeError, match="JSON"):
        RunWriter.create(tmp_path / "other.zarr", config={"f": object()}, probe_x=x, probe_y=y)
    assert not (tmp_path / "other.zarr").exists()


def test_second_writer_is_refused_with_the_holder_pid(tmp_path):
    x, y = _probe(np.random.default_rng(0))
    path = tmp_path / "run.zarr"
    w = RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    with pytest.raises(StoreLockedError, match=f"process {os.getpid()}"):
        RunWriter.resume(path)
    w.append_metrics(np.arange(2), np.zeros(2), {"a": np.ones(2)})
    w.close("complete")
    assert not (path / ".lock").exists()
    RunWriter.resume(path).close("complete")


def test_stale_lock_is_taken_over_and_foreign_host_refused(tmp_path):
    """More cases (namespaces, boots, unlock, full disk) in test_store_lock.py."""
    x, y = _probe(np.random.default_rng(0))
    path = tmp_path / "run.zarr"
    RunWriter.create(path, config=None, probe_x=x, probe_y=y).close("complete")
    code = "import sys; from dynamics.store.lock import StoreLock; StoreLock(sys.argv[1]).acquire(); print('held')"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    dead = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env)
    assert dead.stdout.strip() == "held"   # exited holding the lock: the file stays, its flock is gone
    dead_pid = json.loads((path / ".lock").read_text())["pid"]
    with pytest.warns(RuntimeWarning, match=f"stale lock .* of process {dead_pid}"):
        w = RunWriter.resume(path)
    assert json.loads((path / ".lock").read_text())["pid"] == os.getpid()
    w.close("complete")
    (path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(StoreLockedError, match="host 'elsewhere.example'"):
        RunWriter.resume(path)


def test_arrays_grow_in_blocks_and_are_cut_to_committed_at_close(tmp_path):
    """Most appends find room and write no array metadata; close (also after resume) leaves exact shapes."""
    path = tmp_path / "run.zarr"
    x, y = _probe(np.random.default_rng(0))
    w = RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    meta = {}
    n = MIN_CAPACITY + 1
    for c in range(n):
        w.append_metrics(np.array([c]), np.zeros(1), {"loss": np.array([float(c)])})
        w.append_checkpoint(c, 0.0, {"acc": 0.5}, {"ntk": (("probe", "probe_"), np.eye(6) * c)},
                            {"w": (("w_dim0",), np.full(3, float(c)))})
        meta[c] = {name: (path / name / "zarr.json").read_bytes()
                   for name in ("metrics/loss", "checkpoints/ntk", "params/w")}
    assert meta[0] == meta[MIN_CAPACITY - 1]            # one block of MIN_CAPACITY rows from the first append
    grown = zarr.open_group(str(path), use_consolidated=False)["checkpoints"]["ntk"]
    chunk = grown.chunks[0]                             # several checkpoints per chunk for small rows
    assert chunk == schema.checkpoint_chunk_rows(6 * 6 * 8)
    assert grown.shape[0] == max(2 * MIN_CAPACITY, chunk) # grown by the next, in whole chunks
    assert zarr.open_group(str(path))["checkpoints"]["ntk"].shape[0] == n   # the consolidated (committed) view
    np.testing.assert_array_equal(open_run(path)["checkpoints"]["checkpoint_step"].values, np.arange(n))
    w.close("complete")
    for _ in range(2):                                  # close, and resume-then-close with no appends
        plain = xr.open_datatree(path, engine="zarr")
        assert plain["metrics"].sizes["step"] == n and plain["checkpoints"].sizes["checkpoint"] == n
        assert plain["params"]["w"].shape == (n, 3)
        np.testing.assert_array_equal(plain["checkpoints"]["checkpoint"].values, np.arange(n))
        np.testing.assert_array_equal(plain["checkpoints"]["ntk"].values[:, 0, 0], np.arange(float(n)))
        np.testing.assert_array_equal(xr.open_zarr(path, group="metrics")["loss"].values, np.arange(float(n)))
        RunWriter.resume(path).close("complete")


def _raw_rows(path: Path, array: str, rows: slice) -> np.ndarray:
    """Rows of a store array as its own metadata (not the committed view) shows them."""
    return zarr.open_array(str(path / array), use_consolidated=False)[rows]


def _failing_after_writing(monkeypatch, times: int) -> list:
    """Make the next ``times`` write batches write their rows and then fail before the commit."""
    from dynamics.store import batch as batch_module
    original, calls = batch_module.grow_then_write, []

    def write_then_fail(plan):
        original(plan)
        calls.append(len(plan))
        if len(calls) <= times:
            raise OSError(28, "No space left on device (simulated)")
    monkeypatch.setattr(batch_module, "grow_then_write", write_then_fail)
    return calls


def test_failed_write_is_kept_and_written_by_the_next_call(tmp_path, monkeypatch):
    """A batch that fails raises StoreError naming the cause; it is kept and written by the next call."""
    path = tmp_path / "run.zarr"
    x, y = _probe(np.random.default_rng(0))
    w = RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    w.append_checkpoint(0, 0.0, {}, {}, {"w": (("w_dim0",), np.zeros(2))})
    _failing_after_writing(monkeypatch, times=1)
    with pytest.raises(StoreError, match=r"checkpoint at step 1 failed \(OSError: \[Errno 28\] No space"):
        w.append_checkpoint(1, 0.0, {}, {}, {"w": (("w_dim0",), np.ones(2))})
    np.testing.assert_array_equal(_raw_rows(path, "params/w", slice(1, 2)), [[1, 1]])   # written, not committed
    assert open_run(path)["params"].sizes["checkpoint"] == 1
    assert xr.open_zarr(path, group="params")["w"].shape == (1, 2)
    w.append_metrics(np.array([5]), np.zeros(1), {"loss": np.ones(1)})   # writes the kept batch first
    w.close("complete")
    tree = open_run(path)
    np.testing.assert_array_equal(tree["params"]["w"].values, [[0, 0], [1, 1]])
    np.testing.assert_array_equal(tree["metrics"]["step"].values, [5])
    assert tree.attrs["status"] == "complete"


def test_failed_write_leaves_no_chunk_files_past_the_shape_after_close(tmp_path, monkeypatch):
    """Rows a failed append wrote past the mark are deleted when the store is closed, and a store whose
    rows could not be written is closed as "failed" even when "complete" was asked for."""
    path = tmp_path / "run.zarr"
    x, y = _probe(np.random.default_rng(0))
    w = RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    w.append_checkpoint(0, 0.0, {}, {}, {"w": (("w_dim0",), np.zeros(2))})
    _failing_after_writing(monkeypatch, times=10)
    w.append_checkpoint(1, 0.0, {}, {}, {"w": (("w_dim0",), np.ones(2))}, wait=False)
    w.close("complete")
    assert zarr.open_array(str(path / "params/w"), use_consolidated=False).shape == (1, 2)
    assert xr.open_datatree(path, engine="zarr")["params"]["w"].shape == (1, 2)
    attrs = open_run(path).attrs
    assert attrs["status"] == "failed" and "No space left on device" in attrs["error"]
    assert "dropped" in attrs["error"]


def test_checkpoint_index_reads_as_arange_after_truncation_and_regrowth(tmp_path):
    """The ``checkpoint`` coordinate reads 0..n-1 in both groups, also after a truncation shrank the
    arrays (deleting the truncated rows' files) and they grew again."""
    path = tmp_path / "run.zarr"
    x, y = _probe(np.random.default_rng(0))
    w = RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    for c in range(5):
        w.append_checkpoint(10 * c, 0.0, {}, {}, {"w": (("w_dim0",), np.full(2, float(c)))})
    w.truncate(15)                                      # keeps steps 0 and 10
    assert zarr.open_array(str(path / "params/w"), use_consolidated=False).shape == (2, 2)
    for c in range(2, 7):
        w.append_checkpoint(10 * c, 0.0, {}, {}, {"w": (("w_dim0",), np.full(2, float(c)))})
    w.close("complete")
    plain = xr.open_datatree(path, engine="zarr")
    for group in ("checkpoints", "params"):
        np.testing.assert_array_equal(plain[group]["checkpoint"].values, np.arange(7))
        np.testing.assert_array_equal(plain[group]["checkpoint_step"].values, 10 * np.arange(7))
    np.testing.assert_array_equal(plain["params"]["w"].values[:, 0], np.arange(7.0))


def test_small_rows_share_chunk_files_and_large_rows_get_their_own(tmp_path):
    """Chunks along ``checkpoint`` hold about CHUNK_BYTES: a store of many small checkpoints is a few
    files (fast to read), a row above the target is one file per checkpoint; values read back exactly."""
    assert schema.checkpoint_chunk_rows(8) == schema.METRICS_CHUNK
    assert schema.checkpoint_chunk_rows(64 * 1024) == 4 and schema.checkpoint_chunk_rows(100 * 1024) == 2
    assert schema.checkpoint_chunk_rows(schema.CHUNK_BYTES + 1) == 1
    path = tmp_path / "run.zarr"
    x, y = _probe(np.random.default_rng(0))
    w = RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    rng = np.random.default_rng(1)
    n, big_cols = 300, schema.CHUNK_BYTES // 8 + 1
    ntks = rng.standard_normal((n, 6, 6))
    bigs = [rng.standard_normal(big_cols) for _ in range(3)]
    for c in range(n):
        params = {"b": (("b_dim0",), bigs[c])} if c < 3 else {}
        w.append_checkpoint(c, 0.0, {"acc": float(c)}, {"ntk": (("probe", "probe_"), ntks[c])}, params,
                            wait=c % 7 == 0)
    w.close("complete")
    assert len(list((path / "checkpoints" / "ntk").glob("c.*"))) == 1          # 300 rows × 288 B in one chunk
    assert len(list((path / "checkpoints" / "acc").glob("c.*"))) == 1
    assert len(list((path / "params" / "b").glob("c.*"))) == n                  # one per checkpoint (NaN rows too)
    tree = open_run(path).load()
    np.testing.assert_array_equal(tree["checkpoints"]["ntk"].values, ntks)
    np.testing.assert_array_equal(tree["checkpoints"]["acc"].values, np.arange(n, dtype=float))
    np.testing.assert_array_equal(tree["params"]["b"].values[:3], np.stack(bigs))
    assert np.isnan(tree["params"]["b"].values[3:]).all()


@pytest.mark.parametrize("group", ["metrics", "checkpoints", "params"])
def test_resume_removes_a_variable_folder_whose_creation_was_killed(tmp_path, group):
    """A writer killed between creating a new variable's folder and renaming its zarr.json into place
    leaves a folder without a document (perhaps with a ``*.partial`` file): plain xarray and open_run
    read the store without a warning, resume removes the folder, and the name can be recorded again."""
    path = tmp_path / "run.zarr"
    x, y = _probe(np.random.default_rng(0))
    w = RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    w.append_checkpoint(0, 0.0, {"acc": 0.5}, {}, {"w": (("w_dim0",), np.zeros(2))})
    w.append_metrics(np.array([0]), np.zeros(1), {"loss": np.ones(1)})
    w.close("interrupted")
    ghost = path / group / "late"
    ghost.mkdir()
    (ghost / f"zarr.json.{os.getpid()}.partial").write_text("{")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xr.open_datatree(path, engine="zarr")
        open_run(path).load()
    w = RunWriter.resume(path)
    assert not ghost.exists()
    if group == "metrics":
        w.append_metrics(np.array([1]), np.zeros(1), {"late": np.array([2.0])})
    else:
        w.append_checkpoint(1, 0.0, {"late": 2.0} if group == "checkpoints" else {}, {},
                            {"w": (("w_dim0",), np.ones(2))} | ({"late": ((), np.array(2.0))} if group == "params" else {}))
    w.close("complete")
    assert open_run(path)[group]["late"].values.tolist()[-1] == 2.0


@pytest.mark.parametrize("group", ["metrics", "checkpoints", "params"])
def test_a_variable_first_written_past_its_first_chunks_reads_and_resumes(tmp_path, group):
    """A variable that appears after its first chunks' rows (a metric first logged at step 4100, a
    checkpoint array or parameter first given at checkpoint 3 with one checkpoint per chunk) reads as
    its fill value before that row in plain xarray and open_run, and the store resumes: every chunk of
    the committed range has a file."""
    path = tmp_path / "run.zarr"
    x, y = _probe(np.random.default_rng(0))
    w = RunWriter.create(path, config=None, probe_x=x, probe_y=y)
    big = np.arange(300 * 300, dtype=np.float64).reshape(300, 300)      # 720 kB: one checkpoint per chunk
    if group == "metrics":
        n = schema.METRICS_CHUNK + 4
        w.append_metrics(np.arange(n), np.zeros(n), {"loss": np.ones(n)})
        w.append_metrics(np.array([n, n + 1]), np.zeros(2), {"loss": np.ones(2), "late": np.array([7.0, 8.0])})
        first, expected_late = n, [7.0, 8.0]
    else:
        for c in range(3):
            w.append_checkpoint(c, 0.0, {"acc": 0.5}, {}, {"w": (("w_dim0",), np.zeros(2))})
        late = {"late": (("u", "v"), big)}
        w.append_checkpoint(3, 0.0, {}, late if group == "checkpoints" else {},
                            {"w": (("w_dim0",), np.zeros(2)), **(late if group == "params" else {})})
        first, expected_late = 3, [big]
    w.close("interrupted")
    for read in (lambda: xr.open_datatree(path, engine="zarr")[group]["late"].values,
                 lambda: open_run(path).load()[group]["late"].values):
        values = read()
        assert np.isnan(values[:first]).all()
        np.testing.assert_array_equal(values[first:], expected_late)
    RunWriter.resume(path).close("complete")
    assert open_run(path).attrs["status"] == "complete"
