"""Processes of the live-view test.

``python watch_child.py train STORE STOP``: trains a tiny run into STORE, one step every 0.2 s, until
the file STOP exists (at most 2000 steps), then closes the store.

``python watch_child.py watch STORE LOG -- ARGS...``: runs ``dynamics ARGS...`` with a Python audit hook
that appends to LOG every file-system write (open for writing, rename, replace, remove, mkdir, rmdir,
truncate) aimed inside STORE; exits with the command's status.
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
WRITE_EVENTS = {"os.rename", "os.replace", "os.remove", "os.unlink", "os.mkdir", "os.rmdir", "os.truncate",
                "shutil.rmtree", "shutil.move", "os.chmod", "os.utime"}


def train(store: Path, stop: Path) -> None:
    from tiny_runs import tiny_training

    for step in tiny_training(store, steps=2000, checkpoint_every=10):
        if stop.exists():
            break
        time.sleep(0.2)


def watch(store: Path, log: Path, args: list[str]) -> int:
    inside = os.path.realpath(store) + os.sep
    handle = open(log, "a", buffering=1)

    def hook(event, arguments):
        if event == "open":
            path, mode, flags = arguments
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                      (mode is None and isinstance(flags, int) and flags & WRITE_FLAGS)
        elif event in WRITE_EVENTS:
            path, writing = arguments[0], True
        else:
            return
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            target = os.path.realpath(os.fsdecode(path))
            if (target + os.sep).startswith(inside):
                handle.write(f"{event} {target}\n")

    sys.addaudithook(hook)
    from dynamics.cli import main

    return main(args)


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(watch(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[5:]))
