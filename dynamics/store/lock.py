"""One writer per run store: a lock file ``<store>/.lock`` created with O_CREAT | O_EXCL.

The file holds JSON ``{"pid": …, "host": …, "created": …}``. A lock left by a process that no longer
exists on this host is taken over with a warning (the stale file is first renamed away atomically, so
two processes racing for a stale lock cannot both win); a live holder, or a holder on another host
whose liveness cannot be checked, → :class:`dynamics.errors.StoreLockedError` naming pid and host.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path

from dynamics.errors import StoreLockedError

LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


class StoreLock:
    """Exclusive writer lock of the store directory ``store``; ``acquire()`` then ``release()``."""

    def __init__(self, store: str | os.PathLike) -> None:
        self.path = Path(store) / LOCK_NAME
        self.held = False

    def acquire(self) -> StoreLock:
        """Create the lock file or raise StoreLockedError; takes over a stale lock of a dead local pid."""
        for _ in range(3):
            if self._try_create():
                self.held = True
                return self
            holder = _read_holder(self.path)
            if holder is None:
                if not self.path.exists():
                    continue  # released between our two looks: try again
                # Unreadable: possibly being written this instant by its creator.
                time.sleep(0.05)
                holder = _read_holder(self.path)
                if holder is None:
                    raise StoreLockedError(f"{self.path} exists but is unreadable; if no process writes to "
                                           f"this store, delete the lock file")
            pid, host = holder.get("pid"), holder.get("host")
            if host == socket.gethostname() and isinstance(pid, int) and pid > 0 and not _pid_alive(pid):
                if self._take_over_stale(pid):
                    warnings.warn(f"taking over the stale lock {self.path} of process {pid} on {host}, "
                                  f"which no longer runs", RuntimeWarning, stacklevel=3)
                continue
            where = "this host" if host == socket.gethostname() else f"host {host!r}"
            raise StoreLockedError(f"store {self.path.parent} is locked by process {pid} on {where} "
                                   f"(lock file {self.path}); only one writer may append to a store. "
                                   f"If that process is gone, delete the lock file")
        raise StoreLockedError(f"could not acquire {self.path}: other processes keep taking it")

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "created": time.time()}, f)
        return True

    def _take_over_stale(self, pid: int) -> bool:
        """Move the stale lock of ``pid`` aside; False when the file turned out not to be that lock."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        holder = _read_holder(aside)
        other = holder.get("pid") if holder is not None else None
        if isinstance(other, int) and other > 0 and other != pid and _pid_alive(other):
            # We raced with a process that had just taken the lock: give it back.
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def release(self) -> None:
        """Remove the lock file if this object holds it (idempotent)."""
        if self.held:
            holder = _read_holder(self.path)
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
