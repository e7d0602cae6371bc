"""Stores on a read-only file system (an archive, a shared data set) are analysed in memory, without a
lock, or into ``--out`` elsewhere (issue 22 §2). The file system is a real read-only bind mount of a
folder holding real stores (tests/conftest.py ``read_only_view``); nothing in it may change."""

import os
import warnings

import numpy as np
import pytest
import xarray as xr

from analysis import analyze, analyze_experiment, open_runs
from analysis_runs_fixture import write_run
from dynamics.cli import main
from dynamics.errors import NotWrittenWarning, StoreReadOnlyError


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """An experiment folder of two runs, one of them analysed (its analysis is current)."""
    folder = tmp_path_factory.mktemp("archive") / "exp"
    write_run(folder / "sgd.zarr", steps=12, checkpoint_every=6)
    write_run(folder / "adam.zarr", optimizer="adam", steps=12, checkpoint_every=6)
    analyze(folder / "adam.zarr", probe_checkpoints="none")
    return folder


def listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.parent.rglob("*"))


def test_analyze_and_open_runs_work_in_memory_and_write_nothing(archive, read_only_view):
    before = listing(archive)
    view = read_only_view(archive.parent) / "exp"
    expected = analyze(archive / "sgd.zarr", write=False, probe_checkpoints="none")
    with pytest.warns(NotWrittenWarning, match=rf"store {view}/sgd.zarr cannot be written \(Read-only file "
                                               rf"system \(EROFS\)\): its analysis is kept in memory"):
        result = analyze(view / "sgd.zarr", probe_checkpoints="none")
    xr.testing.assert_identical(result.drop_attrs(), expected.drop_attrs())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        combined = open_runs([view / "sgd.zarr", view / "adam.zarr"])   # adam's stored analysis is used
    assert [str(w.message).split(" cannot")[0] for w in caught if w.category is NotWrittenWarning] == \
        [f"store {view}/sgd.zarr"]
    assert combined.sizes["run"] == 2
    assert listing(archive) == before and not (archive / "sgd.zarr" / "analysis").exists()


def test_analyze_experiment_keeps_the_combined_analysis_in_memory_or_writes_it_to_out(archive, read_only_view,
                                                                                        tmp_path):
    before = listing(archive)
    view = read_only_view(archive.parent) / "exp"
    with pytest.warns(NotWrittenWarning, match=rf"{view}/analysis.zarr cannot be written"):
        combined = analyze_experiment(view, probe_checkpoints="none")
    with pytest.warns(NotWrittenWarning):
        written = analyze_experiment(view, out=tmp_path / "elsewhere.zarr", probe_checkpoints="none")
    stored = xr.open_zarr(tmp_path / "elsewhere.zarr").load()
    np.testing.assert_array_equal(stored["ntk_alignment_init"].values, written["ntk_alignment_init"].values)
    assert combined.sizes["run"] == 2 and listing(archive) == before
    with pytest.raises(StoreReadOnlyError, match="Read-only file system"):   # asked for a place there: refused
        analyze_experiment(view, out=view / "mine.zarr", probe_checkpoints="none")


def test_command_line_on_a_read_only_folder(archive, read_only_view, tmp_path, capsys):
    before = listing(archive)
    view = read_only_view(archive.parent) / "exp"
    assert main(["analyze", str(view / "sgd.zarr"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"dynamics analyze: note: store {view}/sgd.zarr cannot be written")
    assert "--out PATH" in err and err.count("\n") == 1
    assert main(["analyze", str(view / "sgd.zarr"), "--out", str(tmp_path / "sgd-analysis.zarr"), "--quiet"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'sgd-analysis.zarr'}\n"
    assert xr.open_zarr(tmp_path / "sgd-analysis.zarr").sizes["checkpoint"] == 3
    assert main(["report", str(view)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("dynamics report: error: cannot write the report: ") and "(EROFS)" in err[-1]
    assert err[-1].endswith("write it elsewhere with --out FILE.html")
    assert main(["report", str(view), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").is_file() and listing(archive) == before
    assert main(["analyze", str(view), str(view / "sgd.zarr"), "--out", str(tmp_path / "x.zarr")]) == 2


def test_a_writer_is_refused_on_a_read_only_store_naming_the_path(archive, read_only_view):
    from dynamics import Recorder
    view = read_only_view(archive.parent) / "exp"
    with pytest.raises(StoreReadOnlyError, match=rf"cannot create the lock of store {view}/sgd.zarr: .*EROFS"):
        Recorder(view / "sgd.zarr", *_model_and_probe(), resume=True)
    assert not os.path.exists(archive / "sgd.zarr" / ".lock")


def _model_and_probe():
    import torch

    from dynamics.models import RevMLP
    return RevMLP(8, 16, 2, 3, seed=0, dtype=torch.float64), (torch.zeros(24, 8, dtype=torch.float64),
                                                              torch.zeros(24, dtype=torch.long))
