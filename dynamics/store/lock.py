"""One writer per run store: a lock file ``<store>/.lock``, created atomically, held by an OS lock.

Creation: the holder writes ``{"pid", "host", "boot_id", "pid_ns", "created", "flock"}`` to a private
temporary file, takes an exclusive ``flock`` on it, and hard-links it to ``.lock`` (``link`` fails if
``.lock`` exists, so exactly one process wins; the temporary name is removed either way). A reader
therefore never sees a partly written lock, and a full disk leaves no ``.lock`` behind.

Liveness: the ``flock`` is held on the open file for the holder's whole life and the kernel drops it
when the process ends, however it ends (SIGKILL included). A lock is judged *stale* only when
(1) it was written on this host name and under this kernel boot (``/proc/sys/kernel/random/boot_id``;
the same kernel sees every process's flock, whatever PID namespace or container the holder runs in)
and (2) no process holds its ``flock``. A stale lock is taken over with a warning. A held flock →
:class:`~dynamics.errors.StoreLockedError` naming the holder. Anything that cannot be verified — a lock
from another host or boot, an unreadable lock, a lock without flock, a file system without flock — is
refused with a message naming the holder and the way out: ``dynamics unlock STORE`` (:func:`unlock`)
once the user knows the holder is gone (e.g. its host died).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from dynamics.errors import StoreError, StoreLockedError, io_error

LOCK_NAME = ".lock"


def lock_path(store: str | os.PathLike) -> Path:
    """The lock file of the store directory ``store``."""
    return Path(store) / LOCK_NAME


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _pid_ns() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _identity(flock: bool) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(), "pid_ns": _pid_ns(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "flock": flock}


def _try_flock(fd: int) -> bool | None:
    """Take an exclusive flock on ``fd`` without waiting: True taken, False held by another open file,
    None when the file system does not support flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None
    return True


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        holder = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def read_holder(store: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON content of ``store``'s lock file; None when there is none or it is unreadable."""
    try:
        return _parse(lock_path(store).read_bytes())
    except OSError:
        return None


def describe(holder: dict[str, Any] | None) -> str:
    """``process 123 on host 'node7' (since 2026-11-30T15:00:00+0000)`` for a lock's content."""
    if holder is None:
        return "an unknown process (the lock file is empty or unreadable)"
    host = holder.get("host")
    where = "this host" if host == socket.gethostname() else f"host {host!r}"
    since = f" (since {holder['created']})" if isinstance(holder.get("created"), str) else ""
    return f"process {holder.get('pid')} on {where}{since}"


def _verdict(fd: int, holder: dict[str, Any] | None) -> tuple[str, str]:
    """("alive" | "dead" | "unknown", reason) for the lock open as ``fd`` with content ``holder``.
    When the verdict is "dead", this process now holds the flock on ``fd``."""
    probe = _try_flock(fd)
    if probe is False:
        return "alive", "it holds the lock's flock"
    if holder is None:
        return "unknown", "the lock file is empty or unreadable"
    if holder.get("host") != socket.gethostname():
        return "unknown", "it runs on another host, whose processes cannot be checked from here"
    if holder.get("boot_id") is None or holder.get("boot_id") != _boot_id():
        return "unknown", "it was started under another kernel boot (another machine of the same name?)"
    if holder.get("flock") is not True or probe is None:
        return "unknown", "the lock carries no flock that this file system can check"
    return "dead", "no process holds the lock's flock"


class StoreLock:
    """Exclusive writer lock of the store directory ``store``; ``acquire()`` then ``release()``."""

    def __init__(self, store: str | os.PathLike) -> None:
        self.path = lock_path(store)
        self.held = False
        self._fd: int | None = None

    def acquire(self) -> StoreLock:
        """Create the lock or raise StoreLockedError naming the holder; takes over a stale lock (see
        the module docstring) with a RuntimeWarning. StoreIOError (path and errno) when the lock cannot
        be written, e.g. on a full disk; its subclass StoreReadOnlyError on a read-only file system or
        without write permission (:func:`dynamics.errors.io_error`)."""
        for _ in range(5):
            # an existing lock is judged first: a store whose writer is alive is never written into,
            # not even by the temporary file of a creation attempt (a live view reads such stores)
            if not os.path.lexists(self.path) and self._try_create():
                self.held = True
                sweep_temporary(self.path.parent, f"{LOCK_NAME}.*.tmp")   # left by killed creators
                return self
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # released between our two looks: try again
            try:
                holder = _parse(os.read(fd, 1 << 16))
                verdict, reason = _verdict(fd, holder)
                if verdict == "dead":
                    if self._same_file(fd):
                        os.unlink(self.path)   # we hold its flock: nobody else can judge it dead now
                        warnings.warn(f"taking over the stale lock {self.path} of {describe(holder)}, "
                                      f"which no longer runs ({reason})", RuntimeWarning, stacklevel=3)
                    continue
                if verdict == "alive":
                    time.sleep(0.05)
                    if not self._same_file(fd):
                        continue  # released or replaced meanwhile: look again
                    raise StoreLockedError(f"store {self.path.parent} is locked by {describe(holder)}, which "
                                           f"is running (lock file {self.path}); only one writer may "
                                           f"append to a store")
                raise StoreLockedError(f"store {self.path.parent} is locked by {describe(holder)} and whether "
                                       f"it still runs cannot be verified: {reason}. If it is gone (e.g. "
                                       f"its host died), run: dynamics unlock {self.path.parent}")
            finally:
                os.close(fd)
        raise StoreLockedError(f"could not acquire {self.path}: other processes keep taking it")

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _try_create(self) -> bool:
        """Write the holder's identity aside, flock it, link it to the lock path; False if it exists."""
        tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        try:
            # Held through a read-only descriptor: the holder keeps no file open for writing (a
            # remount read-only is not blocked by it); the file is private until it is linked.
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDONLY, 0o644)
        except OSError as err:
            raise io_error(f"cannot create the lock of store {self.path.parent}", err) from None
        try:
            flocked = _try_flock(fd) is True
            with open(tmp, "w") as handle:
                handle.write(json.dumps(_identity(flocked)))
            os.link(tmp, self.path)
        except FileExistsError:
            os.close(fd)
            return False
        except OSError as err:
            os.close(fd)
            err.filename = err.filename or str(tmp)
            raise io_error(f"cannot create the lock of store {self.path.parent}", err) from None
        except BaseException:
            os.close(fd)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        self._fd = fd
        return True

    def moved_to(self, store: str | os.PathLike) -> None:
        """The store directory holding this lock was renamed to ``store`` (the lock moved with it)."""
        self.path = lock_path(store)

    def release(self) -> None:
        """Remove the lock file if this object holds it, then drop the flock (idempotent)."""
        if not self.held:
            return
        self.held = False
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._same_file(fd):
                self.path.unlink(missing_ok=True)
        except OSError:
            pass   # e.g. a read-only file system: the flock dies with the fd, the next writer takes over
        finally:
            os.close(fd)


def unlock(store: str | os.PathLike) -> str:
    """Remove the lock of ``store`` whose holder is gone; returns a description of the removed holder.

    Refuses (StoreLockedError naming the holder) while a process holds the lock's flock — e.g. a live
    writer on this host, in any container or PID namespace of this kernel. A lock from another host
    or boot cannot be checked: the caller asserts that its holder is gone (its host died) by calling
    this. StoreError when ``store`` has no lock."""
    path = lock_path(store)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise StoreError(f"store {Path(store)} is not locked (no {path})") from None
    try:
        holder = _parse(os.read(fd, 1 << 16))
        if _try_flock(fd) is False:
            raise StoreLockedError(f"store {Path(store)} is locked by {describe(holder)}, which is running "
                                   f"(it holds the lock's flock); not unlocking")
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
    finally:
        os.close(fd)
    return describe(holder)


def abandoned(store: str | os.PathLike, grace_s: float = 60.0) -> bool:
    """Whether the directory ``store`` was left by a writer that is gone: its lock is stale (verified
    as in :meth:`StoreLock.acquire`), or it has no lock and was last changed over ``grace_s`` ago."""
    path = lock_path(store)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        try:
            return time.time() - os.stat(store).st_mtime > grace_s
        except OSError:
            return False
    except OSError:
        return False
    try:
        return _verdict(fd, _parse(os.read(fd, 1 << 16)))[0] == "dead"
    finally:
        os.close(fd)


def sweep_temporary(directory: str | os.PathLike, pattern: str, grace_s: float = 60.0) -> None:
    """Delete files matching ``pattern`` in ``directory`` that were last changed over ``grace_s`` ago:
    temporary files of writers that were killed before they could rename or remove them."""
    now = time.time()
    for tmp in Path(directory).glob(pattern):
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime > grace_s:
                tmp.unlink()
        except OSError:
            pass
