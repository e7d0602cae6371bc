"""The analysis reads each checkpoint of a variable once, in blocks of checkpoints (issue 22 §2): an
operation count on a small store instead of a 10,000-checkpoint timing (benchmarks/analyze_scaling.py
measures that), plus the progress it reports."""

import io
import math

import numpy as np
import pytest
import xarray as xr

from analysis import analyze
from analysis.checkpoint_blocks import CheckpointBlocks, block_rows
from analysis.progress import AnalysisProgress
from analysis_runs_fixture import write_run
from dynamics import open_run
from dynamics.store import validate


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("run") / "sgd.zarr", steps=40, checkpoint_every=1)


def test_block_reader_reads_each_row_once_in_chunk_aligned_blocks(store):
    ntk = open_run(store, analysis="omit")["checkpoints"]["ntk"]
    n, row_bytes = ntk.sizes["checkpoint"], int(np.prod(ntk.shape[1:])) * 8
    whole = np.asarray(ntk.values, dtype=np.float64)
    chunk = ntk.encoding["chunks"][0]
    assert 4 < chunk < n == 41
    for fit, expected in ((4, 4), (chunk + 3, chunk), (n, n)):
        reader = CheckpointBlocks(ntk, 4 * fit * row_bytes)
        assert reader.block == expected == block_rows(ntk, 4 * fit * row_bytes)
        for c in range(n):
            np.testing.assert_array_equal(reader(c), whole[c])
        assert reader.requests == math.ceil(n / expected)


def test_progress_counts_each_checkpoint_once_even_when_read_again(store):
    ntk = open_run(store, analysis="omit")["checkpoints"]["ntk"]
    told = []
    reader = CheckpointBlocks(ntk, 1, progress=told.append)   # one checkpoint per request
    reader(0), reader(0), reader(1), reader(0), reader(2)
    assert sum(told) == 3 and reader.requests == 4
    with pytest.raises(IndexError, match="checkpoint 41 is out of range for 41"):
        reader(41)


def test_analysis_reads_each_stored_row_once_and_gives_the_same_values(store, monkeypatch):
    rows_read, requests = {}, {}
    original = validate.NamedChunks.__getitem__

    def counting(self, key):
        values = original(self, key)
        name = f"{self.group}/{self.name}"
        rows_read[name] = rows_read.get(name, 0) + (values.shape[0] if values.ndim else 1)
        requests[name] = requests.get(name, 0) + 1
        return values

    expected = analyze(store, probe_checkpoints="none", write=False, progress="off")
    monkeypatch.setattr(validate.NamedChunks, "__getitem__", counting)
    ntk_row = 24 * 24 * 8
    result = analyze(store, probe_checkpoints="none", write=False, progress="off", max_memory=4 * 4 * ntk_row)
    xr.testing.assert_identical(result.drop_attrs(), expected.drop_attrs())
    n = 41
    # blocks of 4 checkpoints: 11 requests and 41 rows for the NTK, not one request (and one decoded
    # chunk of 32 rows) per checkpoint
    assert requests["checkpoints/ntk"] == 11 and rows_read["checkpoints/ntk"] == n
    for name, count in rows_read.items():
        if name.startswith(("checkpoints/rep_", "params/blocks")):
            assert count == n, name


def test_progress_reports_every_checkpoint_of_every_variable(store, monkeypatch):
    totals, done = [], []
    monkeypatch.setattr(AnalysisProgress, "__init__", _recording_init(AnalysisProgress.__init__, totals))
    original_update = AnalysisProgress.update
    monkeypatch.setattr(AnalysisProgress, "update", lambda self, k: (done.append(k), original_update(self, k)))
    result = analyze(store, probe_checkpoints="none", write=False, progress="off")
    variables = 1 + result.sizes["layer"] + result.sizes["param"]
    assert totals == [41 * variables] and sum(k for k in done if k > 0) == 41 * variables


def _recording_init(init, totals):
    def recording(self, total, **kwargs):
        totals.append(total)
        init(self, total, **kwargs)
    return recording


def test_progress_lines_after_the_delay_and_silence_before_it():
    stream = io.StringIO()
    with AnalysisProgress(100, desc="gn.zarr", mode="lines", stream=stream, delay=0.0) as bar:
        tick = bar.part(50)
        for _ in range(50):
            tick(1)
        bar.part(50)   # a variable that reports nothing is completed by the next part or close
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("gn.zarr: analysed 10/100 checkpoint-variables (10%), ETA ")
    assert lines[-1].startswith("gn.zarr: analysed 100/100 checkpoint-variables (100%)")
    quiet = io.StringIO()
    with AnalysisProgress(100, desc="x", mode="lines", stream=quiet, delay=3600.0) as bar:
        bar.part(100)(100)
    assert quiet.getvalue() == ""
    with AnalysisProgress(10, desc="x", mode="auto", stream=io.StringIO()) as bar:   # not a terminal
        assert bar.mode == "off"
    with pytest.raises(ValueError, match="progress must be one of"):
        analyze("nowhere.zarr", progress="loud")
