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


@pytest.fixture
def read_only_view(tmp_path):
    """``read_only_view(folder)``: a real read-only bind mount of ``folder`` at a fresh path under
    tmp_path (``mount --bind``, then ``mount -o remount,ro,bind``), its path returned. chmod does not
    stop root; a read-only mount does (EROFS). Skipped, with the reason, where mounting is not
    permitted. At teardown each mount is lazily unmounted."""
    mounts = []

    def mount(folder, name: str = "ro"):
        view = tmp_path / name
        view.mkdir()
        done = subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot bind-mount a folder (needs root and mount rights): {done.stderr.strip()}")
        mounts.append(view)
        done = subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount a bind mount read-only: {done.stderr.strip()}")
        probe = view / ".write-probe"
        try:
            probe.touch()
        except OSError:
            return view
        probe.unlink()
        pytest.skip("the read-only bind mount accepts writes here")

    yield mount
    for view in reversed(mounts):
        subprocess.run(["umount", "-l", str(view)], capture_output=True)
