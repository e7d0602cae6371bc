"""A live view of runs being trained: ``dynamics report DIR --watch [SECONDS]``.

Every ``interval`` seconds the run stores of DIR (an experiment folder, a sweep folder or one store)
are looked at through their commit records (root attribute ``committed``, and ``status``: one small
file read per store). When any changed since the last report — a checkpoint or a flush was
committed, a run finished, a new store appeared — the report is written again from the committed
data (:func:`reports.write_report`; a run being trained is analysed without writing into its
store, whose writer holds its lock). Open ``DIR/report.html`` in a browser and reload it.

Each report written is announced on ``stream`` with the committed steps and checkpoints of every
run. What cannot be reported yet (no store in DIR yet, a store still being created) is announced once
and retried at the next interval. Ctrl-C stops watching (the report on disk is always a complete one:
it is replaced atomically).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from dynamics.errors import DynamicsError


def commit_state(store: Path) -> tuple[str, str] | None:
    """(committed mark as JSON text, status) of ``store`` from its root ``zarr.json``; None while unreadable."""
    try:
        attrs = json.loads((store / "zarr.json").read_text()).get("attributes") or {}
    except (OSError, ValueError, AttributeError):
        return None
    committed = attrs.get("committed")
    return (committed if isinstance(committed, str) else json.dumps(committed, sort_keys=True),
            str(attrs.get("status", "unknown")))


def progress_line(stores: list[Path]) -> str:
    """"name: S steps, C checkpoints (status)" for every store, from the committed marks."""
    parts = []
    for store in stores:
        state = commit_state(store)
        if state is None:
            continue
        try:
            committed = json.loads(state[0])
            steps, checkpoints = int(committed.get("metrics", 0)), int(committed.get("checkpoint", 0))
        except (ValueError, TypeError, AttributeError):
            steps = checkpoints = 0
        parts.append(f"{store.name.removesuffix('.zarr')}: {steps} steps, {checkpoints} checkpoints ({state[1]})")
    return "; ".join(parts) or "no run stores yet"


def pause(seconds: float) -> None:
    """The wait between two looks (``time.sleep``)."""
    time.sleep(seconds)


def watch_report(generate: Callable[[], Path], stores: Callable[[], list[Path]], *, interval: float,
                 stream: TextIO | None = None, rounds: int | None = None) -> int:
    """Call ``generate()`` (writes the report, returns its path) whenever the commit state of the
    stores listed by ``stores()`` changed, then wait ``interval`` seconds; ``rounds`` looks (None:
    until KeyboardInterrupt, which propagates). DynamicsError from ``generate`` (nothing to report
    yet) is announced once per distinct message and retried. Returns the number of reports written."""
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
        raise ValueError(f"interval must be a number of seconds > 0, got {interval!r}")
    stream = sys.stderr if stream is None else stream
    seen: object = None
    problem = None
    written = 0
    done = 0
    while rounds is None or done < rounds:
        current = stores()
        state = [(str(p), commit_state(p)) for p in current]
        if state != seen:
            try:
                path = generate()
            except DynamicsError as error:
                if str(error) != problem:
                    problem = str(error)
                    print(f"{time.strftime('%H:%M:%S')} not ready: {error}", file=stream, flush=True)
            else:
                seen, problem, written = state, None, written + 1
                print(f"{time.strftime('%H:%M:%S')} wrote {path}: {progress_line(current)}", file=stream, flush=True)
        done += 1
        if rounds is None or done < rounds:
            pause(interval)
    return written
