"""Fixtures shared by every test folder."""

import subprocess

import pytest


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(size)``: a real tmpfs of ``size`` (e.g. "1m") mounted at a fresh folder under tmp_path,
    for full-disk and read-only tests (root only: the test is skipped, with the reason, where mounting
    fails). At teardown each mount is made writable again and lazily unmounted."""
    mounts = []

    def mount(size: str, name: str = "fs"):
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root and mount rights): {done.stderr.strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], capture_output=True)
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
