"""SIGTERM, SIGHUP (and SIGINT) stop `dynamics train` / `dynamics run` cleanly (issue 14, case 10):
buffered rows written, resume state saved, status "interrupted", lock released, exit 128 + signum,
one line on stderr; `--resume` then completes the run. Real processes, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dynamics
from dynamics.cli import main

ROOT = Path(__file__).parents[2]
TINY = """preset = "digits"
name = "tiny"
[data]
n_train = 160
n_test = 60
probe_size = 16
[model]
hidden = 16
depth = 2
[train]
optimizers = ["adam", "sgd"]
steps = 200
batch_size = 16
checkpoints = 12
"""


def _start(args: list[str], watch: Path) -> subprocess.Popen:
    """Start ``dynamics ARGS`` and return once ``watch`` (a resume state) exists."""
    process = subprocess.Popen([sys.executable, "-m", "dynamics.cli", *args, "--quiet"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not watch.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    return process


def _check_interrupted(store: Path, process: subprocess.Popen, signum: int) -> None:
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == 128 + signum, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and signal.Signals(signum).name in lines[0]
    assert "--resume" in lines[0]
    tree = dynamics.open_run(store)
    assert tree.attrs["status"] == "interrupted"
    assert not (store / ".lock").exists()
    state = torch.load(store / "resume" / "state.pt", weights_only=True)
    steps = tree["metrics"]["step"].values
    # every row logged up to the step of the saved state is in the store, none after it
    assert steps.tolist() == list(range(1, state["step"] + 1)) and state["step"] < 200


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGHUP, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "SIGHUP"])
def test_train_stopped_by_signal_is_interrupted_and_resumes(tmp_path, signum):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    store = tmp_path / "adam.zarr"
    args = ["train", "--optimizer", "adam", "--config", str(config), "--out", str(store)]
    process = _start(args, store / "resume" / "state.pt")
    time.sleep(0.3)
    process.send_signal(signum)
    _check_interrupted(store, process, signum)
    assert main([*args, "--resume", "--quiet"]) == 0
    tree = dynamics.open_run(store)
    assert tree.attrs["status"] == "complete" and tree["metrics"]["step"].values.tolist() == list(range(1, 201))


def test_second_sigterm_stops_at_once_and_still_releases_the_lock(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    store = tmp_path / "adam.zarr"
    process = _start(["train", "--optimizer", "adam", "--config", str(config), "--out", str(store)],
                     store / "resume" / "state.pt")
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == 143 and "Traceback" not in err, err
    assert dynamics.open_run(store).attrs["status"] == "interrupted"
    assert not (store / ".lock").exists()


def test_run_stopped_by_sigterm_leaves_resumable_stores(tmp_path):
    """One run at a time (--workers 1): the first run is interrupted, the second never starts."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "exp"
    process = _start(["run", "--config", str(config), "--out", str(out), "--workers", "1"],
                     out / "adam.zarr" / "resume" / "state.pt")
    process.send_signal(signal.SIGTERM)
    _check_interrupted(out / "adam.zarr", process, signal.SIGTERM)
    assert not (out / "sgd.zarr").exists() and not (out / "report.html").exists()


@pytest.mark.slow
def test_parallel_run_stopped_by_sigterm_exits_143_with_resumable_stores(tmp_path):
    """Runs side by side (the default on 2 cores): SIGTERM to the driver stops every running run at its
    next step (the stop file), exit status 143 as for one process; --resume ends the experiment."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "exp"
    process = _start(["run", "--config", str(config), "--out", str(out), "--workers", "2"],
                     out / "adam.zarr" / "resume" / "state.pt")
    process.send_signal(signal.SIGTERM)
    _check_interrupted(out / "adam.zarr", process, signal.SIGTERM)
    assert not (out / "report.html").exists()
    assert main(["run", "--config", str(config), "--out", str(out), "--resume", "--quiet"]) == 0
    assert all(dynamics.open_run(out / name).attrs["status"] == "complete" for name in ("adam.zarr", "sgd.zarr"))
