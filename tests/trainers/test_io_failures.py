"""I/O failures end in one line and leave no debris (issue 14, case 13): a disk that fills while the
resume state is saved, a file system turned read-only mid-run, temporary files of killed writers.
Full and read-only disks are real: a small tmpfs mounted for the test (root only; skipped otherwise)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import dynamics
from dynamics import Recorder
from dynamics.errors import StoreError
from dynamics.models import MLP
from full_disk import fill

ROOT = Path(__file__).parents[2]


@pytest.fixture
def tmpfs(mount_tmpfs):
    """A 4 MiB tmpfs mounted at tmp_path/fs (skipped where mounting is impossible)."""
    return mount_tmpfs("4m")


def _recorder(path: Path) -> Recorder:
    torch.manual_seed(0)
    model = MLP(4, 8, 2, 3, dtype=torch.float64)
    x = torch.randn(6, 4, dtype=torch.float64)
    return Recorder(path, model, probe=(x, torch.zeros(6, dtype=torch.long)), layers=[])


@pytest.mark.parametrize("leave", [0, 64 << 10, 256 << 10], ids=["full", "64KiB-left", "256KiB-left"])
def test_full_disk_while_saving_state_removes_the_temporary_and_still_closes(tmpfs, leave):
    """Issue input: torch.save of the resume state on a full disk (a 1 MiB state here)."""
    path = tmpfs / "run.zarr"
    rec = _recorder(path)
    for step in range(1, 6):
        rec.log(step, loss=1.0 / step)
    rec.checkpoint(5)
    rec.flush()
    fill(tmpfs, leave)
    with pytest.raises(StoreError, match=rf"cannot save the resume state {path}/resume/state.pt: No space left "
                                         rf"on device \(ENOSPC\)"):
        rec.save_state({"step": 5, "big": torch.zeros(1 << 17, dtype=torch.float64)})
    assert not any(p.name.endswith(".tmp") for p in (path / "resume").iterdir())
    if leave:   # the space the partial state held is free again: the final status is written
        rec.close("failed", "StoreError: disk full")
        tree = dynamics.open_run(path)
        assert tree.attrs["status"] == "failed" and tree["metrics"].sizes["step"] == 5
    else:
        try:
            rec.close("failed", "StoreError: disk full")
        except (OSError, StoreError) as err:   # nothing at all could be written: said, lock released
            assert "No space left on device" in str(err)
    assert not (path / ".lock").exists() or not rec._writer._lock.held
    (tmpfs / "ballast").unlink()
    with Recorder(path, rec.model, probe=(rec._x_probe, torch.zeros(6, dtype=torch.long)), layers=[],
                  resume=True) as again:
        assert again.last_step == 5


def test_temporaries_of_killed_writers_are_swept_on_resume(tmp_path):
    path = tmp_path / "run.zarr"
    rec = _recorder(path)
    rec.log(1, loss=1.0)
    rec.save_state({"step": 1})
    rec.close("interrupted")
    debris = [path / "resume" / "state.pt.4242.tmp", path / "zarr.json.4242.tmp"]
    for f in debris:
        f.write_bytes(b"\0" * 100)
    rec = Recorder(path, rec.model, probe=(rec._x_probe, torch.zeros(6, dtype=torch.long)), layers=[], resume=True)
    rec.close("complete")
    assert not any(f.exists() for f in debris) and (path / "resume" / "state.pt").exists()


def test_report_temporaries_of_killed_writers_are_swept(tmp_path):
    from reports.html import write_text_atomic
    old = tmp_path / ".report.html.abc123.tmp"
    old.write_text("half a page")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / ".report.html.def456.tmp"    # may be a concurrent writer's: kept
    fresh.write_text("being written")
    write_text_atomic(tmp_path / "report.html", "<html></html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".report.html.def456.tmp", "report.html"]


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
optimizers = ["adam"]
steps = 300
batch_size = 16
checkpoints = 10
"""


def remount_read_only(path):
    """Remount ``path`` read-only while a writer runs. The kernel refuses (EBUSY, "mount point is
    busy") while a file on it is open for writing, so retry for up to 10 s: any moment of the run
    is as good a failure point as another."""
    deadline = time.monotonic() + 10
    while True:
        result = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"could not remount {path} read-only: {result.stderr.strip()}")
        time.sleep(0.005)


def test_read_only_file_system_mid_run_is_one_line(tmpfs, tmp_path):
    """Issue input: the file system turns read-only while `dynamics train` runs → one line naming the
    path and errno (no flood of 'Future exception was never retrieved'), exit 1; once writable
    again, --resume continues from the last committed state."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    store = tmpfs / "adam.zarr"
    args = [sys.executable, "-m", "dynamics.cli", "train", "--optimizer", "adam", "--config", str(config),
            "--out", str(store), "--quiet"]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (store / "resume" / "state.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    remount_read_only(tmpfs)
    _, err = process.communicate(timeout=300)
    if process.returncode == 0:
        pytest.skip("the run finished before the file system turned read-only")
    lines = err.strip().splitlines()
    # exit 1 (an OSError: path and errno) or 2 (the writer's StoreError naming the store and the cause)
    assert process.returncode in (1, 2) and len(lines) == 1, err
    assert "Read-only file system" in lines[0] and str(tmpfs) in lines[0]
    assert "Traceback" not in err and "never retrieved" not in err
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    committed = dynamics.open_run(store)["metrics"].sizes["step"]
    resumed = subprocess.run([*args, "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    tree = dynamics.open_run(store)
    assert tree.attrs["status"] == "complete" and tree["metrics"].sizes["step"] == 300 >= committed
