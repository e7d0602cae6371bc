"""Stop signals of a training run: SIGINT (Ctrl-C), SIGTERM (a cluster's preemption notice before its
SIGKILL) and SIGHUP (the terminal went away) are all handled the same way.

The first signal only sets a flag; the loop checks it between steps and raises :class:`Stopped`, so
the run writes what is buffered, saves its resume state, marks the store "interrupted" and releases
the lock. A second stop signal raises :class:`Stopped` at once (then the state saved at the last
checkpoint is the one a resume starts from). :class:`Stopped` is a ``KeyboardInterrupt``, so code that
handles Ctrl-C handles all three; the command line exits with :attr:`Stopped.exit_status` = 128 +
signal number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP), the shell's convention for a process
ended by a signal.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A run stopped by signal ``signum``; ``exit_status`` = 128 + signum."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


def exit_status(error: KeyboardInterrupt) -> int:
    """128 + the signal number of ``error`` (a plain KeyboardInterrupt counts as SIGINT: 130)."""
    return error.exit_status if isinstance(error, Stopped) else 128 + signal.SIGINT


@contextmanager
def deferred_stop() -> Iterator[dict]:
    """Yield a dict whose "signum" becomes the first stop signal received (None until then); the
    second stop signal raises :class:`Stopped` at once. Installed in the main thread only (elsewhere
    signals cannot be handled and the dict stays None); the previous handlers are restored on exit."""
    flag: dict = {"signum": None, "shielded": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["signum"] is not None and not flag.get("shielded"):
            raise Stopped(signum)
        flag["signum"] = signum

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextmanager
def shielded(flag: dict) -> Iterator[None]:
    """Inside this block a further stop signal does not raise: the run is writing its final state
    and releasing its lock, which takes well under a second."""
    flag["shielded"] = True
    try:
        yield
    finally:
        flag["shielded"] = False


def check(flag: dict) -> None:
    """Raise :class:`Stopped` if a stop signal was received (call between steps)."""
    if flag["signum"] is not None:
        raise Stopped(flag["signum"])
