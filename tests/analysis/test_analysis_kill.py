"""Interrupted and concurrent ``dynamics analyze`` / ``report`` (issue 14 case 9) and reading a live run
(issue 15 §3), with real processes: SIGKILL at random moments, several analyses at once, a writer
that holds its store open while the CLI analyses and reports it."""

import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from analysis import analyze, analyze_experiment
from analysis.freshness import source_token
from analysis.store_io import read_analysis_group, read_dataset
from dynamics import open_run
from dynamics.cli import main
from fresh_runs import record

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}", "OMP_NUM_THREADS": "1"}


def cli(*args):
    return [sys.executable, "-m", "dynamics.cli", *map(str, args)]


def files_digest(store):
    """Every file of ``store`` (names and bytes): proves that nothing was written into it."""
    h = hashlib.sha256()
    for file in sorted(p for p in store.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(store)).encode() + file.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """Two Recorder-written stores and the reference analyses (computed in memory)."""
    folder = tmp_path_factory.mktemp("kill") / "exp"
    stores = [record(folder / "sgd.zarr", 0, 20), record(folder / "adam.zarr", 0, 10)]
    reference = {s.name: analyze(s, write=False) for s in stores}
    return folder, stores, reference


def check_consistent(folder, stores, reference):
    """What a kill may leave: each store opens; its analysis group is absent or complete, equal to the
    reference and stamped with the store's token; ``analysis.zarr`` is absent or complete."""
    for store in stores:
        tree = open_run(store)
        assert tree["checkpoints"].sizes["checkpoint"] == reference[store.name].sizes["checkpoint"]
        stored = read_analysis_group(store)
        if stored is not None:
            xr.testing.assert_allclose(stored, reference[store.name])
            assert stored.attrs["source"] == reference[store.name].attrs["source"]
            assert set(tree["analysis"].to_dataset().data_vars) == set(reference[store.name].data_vars)
    combined = read_dataset(folder / "analysis.zarr")
    if combined is not None:
        assert combined.sizes["run"] == 2 and np.isfinite(combined["train_loss"].values).sum() == 5 + 3


def check_repaired(folder, stores, reference):
    """A later ``dynamics analyze`` succeeds and leaves no lock and no temporary folder behind."""
    done = subprocess.run(cli("analyze", folder), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for store in stores:
        assert not (store / ".lock").exists()
        xr.testing.assert_allclose(read_analysis_group(store), reference[store.name])
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    check_consistent(folder, stores, reference)


def in_write_window(folder, stores):
    """True once an analysis holds a store's lock or has a staging folder: it is writing."""
    return any((s / ".lock").exists() for s in stores) or any(p.name.endswith(".tmp") for p in folder.iterdir())


def kill_trials(experiment, n, seed):
    """``n`` SIGKILLs of ``dynamics analyze``: odd trials at a random moment of its life, even trials a
    random 0-40 ms after it started writing (its lock or staging folder appeared), since writing is
    a small part of its life. Returns how many kills landed while it was writing."""
    folder, stores, reference = experiment
    start = time.monotonic()
    subprocess.run(cli("analyze", folder), env=ENV, check=True, capture_output=True, timeout=300)
    duration = time.monotonic() - start
    rng = random.Random(seed)
    writing = 0
    for trial in range(n):
        process = subprocess.Popen(cli("analyze", folder), env=ENV, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        if trial % 2:
            time.sleep(rng.uniform(0.4, 1.0) * duration)
        else:
            while process.poll() is None and not in_write_window(folder, stores):
                time.sleep(0.0005)
            time.sleep(rng.uniform(0.0, 0.04))
        process.kill()
        process.wait()
        writing += in_write_window(folder, stores)
        check_consistent(folder, stores, reference)
    check_repaired(folder, stores, reference)
    return writing


def test_sigkill_of_dynamics_analyze(experiment):
    kill_trials(experiment, 1, seed=0)   # more moments in the slow case below


@pytest.mark.slow
def test_sigkill_of_dynamics_analyze_many_moments(experiment):
    assert kill_trials(experiment, 24, seed=1) >= 3  # several kills left a lock or staging folder behind


@pytest.mark.slow
def test_concurrent_analyses_all_succeed(experiment):
    folder, stores, reference = experiment
    processes = [subprocess.Popen(cli("analyze", target), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for target in (folder, folder, stores[0])]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0 and "Traceback" not in err, err
    check_repaired(folder, stores, reference)


def test_live_run_is_analysed_and_reported_without_writing_into_it(tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    store = folder / "sgd.zarr"
    writer = subprocess.Popen([sys.executable, str(HERE / "fresh_runs.py"), "live", str(store)], env=ENV,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        before = files_digest(store)
        assert main(["analyze", str(store)]) == 0
        assert main(["analyze", str(folder)]) == 0
        assert main(["report", str(folder)]) == 0
        assert main(["report", str(store)]) == 0
        assert files_digest(store) == before  # the live store was read, never written
        assert (folder / "report.html").is_file() and (folder / "sgd-report.html").is_file()
        combined = read_dataset(folder / "analysis.zarr")
        assert combined.sizes["checkpoint"] == 3 and np.isfinite(combined["loss"].values).all()
        assert combined.sizes["step"] == 10
    finally:
        writer.stdin.close()
        writer.wait(timeout=120)
    assert writer.returncode == 0
    assert not analyze_is_fresh(folder)  # the store was closed since: its shapes changed
    assert main(["analyze", str(store)]) == 0 and read_analysis_group(store).attrs["source"]


def analyze_is_fresh(folder):
    from analysis.runs import experiment_analysis_is_fresh
    return experiment_analysis_is_fresh(folder)


def one_line_error(capsys, *pieces):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for piece in pieces:
        assert piece in err, err


def test_cli_takes_a_single_store_and_refuses_folders_without_runs(tmp_path, capsys):
    store = record(tmp_path / "exp" / "sgd.zarr", 0, 5)
    assert main(["analyze", str(store)]) == 0
    assert capsys.readouterr().out.strip() == str(store)
    assert read_analysis_group(store).attrs["source"] and not (store / "analysis.zarr").exists()
    assert main(["report", str(store)]) == 0
    assert (tmp_path / "exp" / "sgd-report.html").is_file()
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["analyze", str(empty)]) == 2
    one_line_error(capsys, "holds no run stores", str(empty))
    foreign = tmp_path / "foreign"
    (foreign / "notes.zarr").mkdir(parents=True)
    (foreign / "notes.zarr" / "readme.txt").write_text("not a store")
    assert main(["analyze", str(foreign)]) == 2
    one_line_error(capsys, "notes.zarr")
    assert main(["report", str(empty)]) == 2
    one_line_error(capsys, str(empty))


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_report_files_follow_the_umask(tmp_path, umask):
    from reports import write_report
    from reports.html import write_text_atomic

    old = os.umask(umask)
    try:
        page = tmp_path / "page.html"
        write_text_atomic(page, "<p>x</p>")
        assert page.stat().st_mode & 0o777 == 0o666 & ~umask
        if umask == 0o022:  # one whole report: the page and every figure
            store = record(tmp_path / "sgd.zarr", 0, 5)
            report = write_report(store)
            for file in [report, *report.parent.joinpath("sgd-report-figures").glob("*.png")]:
                assert file.stat().st_mode & 0o777 == 0o644, file
    finally:
        os.umask(old)
