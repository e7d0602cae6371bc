"""The store lock (issue 12, 13.4): atomic creation, flock liveness across PID namespaces, refusal of
what cannot be verified (other host, other boot, unreadable), ``dynamics unlock``, debris sweeping.
Every holder here is a real second process; full-disk cases use a small tmpfs (tests run as root)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dynamics.cli import main
from dynamics.errors import StoreError, StoreLockedError
from dynamics.store import RunWriter
from dynamics.store.lock import LOCK_NAME, StoreLock, read_holder
from full_disk import fill

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _probe():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 4)).astype(np.float32), rng.integers(0, 3, 6)


def _store(path: Path) -> Path:
    x, y = _probe()
    RunWriter.create(path, config=None, probe_x=x, probe_y=y).close("complete")
    return path


def _holder(store: Path, prefix: list[str] = ()) -> subprocess.Popen:
    """A second process holding ``store``'s lock (started under ``prefix``, e.g. unshare)."""
    proc = subprocess.Popen([*prefix, sys.executable, str(HERE / "lock_holder.py"), str(store)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "held":
        proc.kill()
        raise RuntimeError(f"holder did not start: {line!r} {proc.stderr.read()}")
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture
def tmpfs(mount_tmpfs):
    """A 1 MiB tmpfs mounted at tmp_path/fs (skipped where mounting is impossible)."""
    return mount_tmpfs("1m")


# ------------------------------------------------------------------- liveness
def test_live_holder_is_refused_and_its_lock_kept(tmp_path):
    store = _store(tmp_path / "run.zarr")
    proc = _holder(store)
    try:
        with pytest.raises(StoreLockedError, match=f"process {proc.pid} on this host .*running"):
            RunWriter.resume(store)
        assert read_holder(store)["pid"] == proc.pid
    finally:
        _kill(proc)


def test_live_holder_in_another_pid_namespace_is_refused(tmp_path):
    """Issue input 12(b): same host name, its pid means nothing here; old code judged it dead."""
    store = _store(tmp_path / "run.zarr")
    if subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode:
        pytest.skip("unshare --pid needs root and a kernel that allows PID namespaces")
    proc = _holder(store, ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"])
    try:
        holder = read_holder(store)
        assert holder["pid"] != proc.pid and holder["pid_ns"] != os.readlink("/proc/self/ns/pid")
        with pytest.raises(StoreLockedError, match=f"process {holder['pid']} on this host .*running"):
            RunWriter.resume(store)
        assert read_holder(store) == holder
    finally:
        _kill(proc)


def test_live_holder_with_pid_that_does_not_exist_here_is_refused(tmp_path):
    """Another member: a lock naming a pid that no process here has, while its flock is held."""
    store = _store(tmp_path / "run.zarr")
    proc = _holder(store)
    try:
        holder = read_holder(store)
        fake = dict(holder, pid=2 ** 22 + 7)
        # rewrite the content in place (same inode, so the holder's flock still covers it)
        with open(store / LOCK_NAME, "r+") as f:
            f.write(json.dumps(fake))
            f.truncate()
        with pytest.raises(StoreLockedError, match=f"process {2 ** 22 + 7} .*running"):
            RunWriter.resume(store)
    finally:
        _kill(proc)


def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    store = _store(tmp_path / "run.zarr")
    proc = _holder(store)
    _kill(proc)
    with pytest.warns(RuntimeWarning, match=f"stale lock .* of process {proc.pid}"):
        w = RunWriter.resume(store)
    assert read_holder(store)["pid"] == os.getpid()
    w.close("complete")
    assert not (store / LOCK_NAME).exists()


@pytest.mark.parametrize("content, reason", [
    ({"pid": 1, "host": "elsewhere.example", "created": "2026-01-01T00:00:00+0000", "flock": True},
     "another host"),
    ({"pid": 12345, "host": socket.gethostname(), "boot_id": "0000-not-this-boot", "flock": True},
     "another kernel boot"),
    ({"pid": 12345, "host": socket.gethostname()}, "another kernel boot"),   # old format: no boot id
    (None, "empty or unreadable"),                                            # issue input 12(a)
])
def test_unverifiable_lock_is_refused_naming_holder_then_unlocked(tmp_path, capsys, content, reason):
    store = _store(tmp_path / "run.zarr")
    (store / LOCK_NAME).write_text("" if content is None else json.dumps(content))
    with pytest.raises(StoreLockedError, match=reason) as info:
        RunWriter.resume(store)
    assert f"dynamics unlock {store}" in str(info.value)
    if content is not None:
        assert f"process {content['pid']}" in str(info.value)
    if content is not None and content["host"] != socket.gethostname():
        assert "host 'elsewhere.example'" in str(info.value)
    assert (store / LOCK_NAME).exists()
    assert main(["unlock", str(store)]) == 0
    out = capsys.readouterr().out
    assert "removed the lock" in out and (content is None or f"process {content['pid']}" in out)
    assert not (store / LOCK_NAME).exists()
    RunWriter.resume(store).close("complete")


def test_unlock_refuses_live_holder_and_unlocked_store(tmp_path, capsys):
    store = _store(tmp_path / "run.zarr")
    assert main(["unlock", str(store)]) == 2
    assert "is not locked" in capsys.readouterr().err
    proc = _holder(store)
    try:
        assert main(["unlock", str(store)]) == 2
        err = capsys.readouterr().err
        assert f"process {proc.pid}" in err and "running" in err and len(err.strip().splitlines()) == 1
        assert read_holder(store)["pid"] == proc.pid
    finally:
        _kill(proc)


# ------------------------------------------------------------------- atomic creation
def test_full_disk_leaves_no_lock_file(tmpfs):
    """Issue input 12(a): the lock cannot be written → StoreError with path and errno, no 0-byte lock."""
    store = tmpfs / "run.zarr"
    store.mkdir()
    fill(tmpfs)
    with pytest.raises(StoreError, match=r"No space left on device \(ENOSPC\)") as info:
        StoreLock(store).acquire()
    assert str(store) in str(info.value)
    assert sorted(p.name for p in store.iterdir()) == []
    (tmpfs / "ballast").unlink()
    StoreLock(store).acquire().release()
    assert sorted(p.name for p in store.iterdir()) == []


def test_read_only_file_system_leaves_no_lock_file(tmpfs):
    store = tmpfs / "run.zarr"
    store.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(StoreError, match=r"EROFS"):
        StoreLock(store).acquire()
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert list(store.iterdir()) == []


def test_creators_killed_at_random_moments_leave_a_readable_lock_or_none(tmp_path):
    """SIGKILL a process that takes and releases the lock in a loop: the lock file is never partial."""
    store = tmp_path / "s"
    store.mkdir()
    code = ("import sys; from dynamics.store.lock import StoreLock\n"
            "print('go', flush=True)\n"
            "while True:\n    StoreLock(sys.argv[1]).acquire().release()\n")
    rng = np.random.default_rng(3)
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", code, str(store)], env=ENV, stdout=subprocess.PIPE)
        proc.stdout.readline()
        time.sleep(float(rng.uniform(0.0, 0.05)))
        _kill(proc)
        if (store / LOCK_NAME).exists():
            holder = read_holder(store)
            assert holder is not None and holder["pid"] == proc.pid
            with pytest.warns(RuntimeWarning, match="stale lock"):
                StoreLock(store).acquire().release()
        assert not (store / LOCK_NAME).exists()


def test_killed_creation_folders_are_swept_live_ones_kept(tmp_path):
    x, y = _probe()
    dead = tmp_path / ".run.zarr.creating-999999"
    dead.mkdir()
    proc = _holder(dead)
    _kill(proc)
    live = tmp_path / ".run.zarr.creating-888888"
    live.mkdir()
    holder = _holder(live)
    old = tmp_path / ".run.zarr.creating-777777"   # killed before it could take its lock
    old.mkdir()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    try:
        RunWriter.create(tmp_path / "run.zarr", config=None, probe_x=x, probe_y=y).close("complete")
        assert sorted(p.name for p in tmp_path.iterdir()) == [".run.zarr.creating-888888", "run.zarr"]
    finally:
        _kill(holder)
