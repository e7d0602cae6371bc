"""Mirrors: where a :class:`dynamics.Recorder` also sends the scalars it records (TensorBoard, W&B, ...).

The zarr store stays the source of truth; a mirror is a copy for viewers. A mirror is any object with
``log_scalars(step: int, scalars: dict[str, float])``; ``close()`` is called, if it has one, when
the Recorder closes. The Recorder calls it after validating a call, with

- ``log(step, loss=..., ...)`` → ``{"metrics/loss": ..., ...}`` at ``step``;
- a *stored* ``checkpoint(step, test_acc=...)`` → ``{"checkpoints/test_acc": ...}`` at ``step``;

tags are ``"<group>/<name>"`` (:func:`tag`, the same tags ``dynamics export tensorboard`` writes).
Values stored as NaN (non-finite values, which the Recorder warns about) are not mirrored. Ready
mirrors: :class:`dynamics.integrations.mirrors.TensorBoardMirror` and
:class:`dynamics.integrations.mirrors.WandbMirror`. An error raised by a mirror reaches the caller of
``log``/``checkpoint`` after the row was kept for the store; an error of its ``close`` is a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any


def tag(group: str, name: str) -> str:
    """The viewer tag of scalar ``name`` of store group ``group`` ("metrics", "checkpoints", "analysis")."""
    return f"{group}/{name}"


def check_mirrors(mirrors: Any) -> list:
    """``mirrors`` (None, or an iterable of objects with a callable ``log_scalars``) as a list;
    TypeError naming the first object that is not a mirror."""
    if mirrors is None:
        return []
    if isinstance(mirrors, (str, bytes)) or not isinstance(mirrors, Iterable) or hasattr(mirrors, "log_scalars"):
        raise TypeError(f"mirror must be a list of mirrors (objects with log_scalars(step, scalars)), got "
                        f"{type(mirrors).__name__}")
    mirrors = list(mirrors)
    for mirror in mirrors:
        if not callable(getattr(mirror, "log_scalars", None)):
            raise TypeError(f"mirror {mirror!r} ({type(mirror).__name__}) has no log_scalars(step, scalars) method")
    return mirrors


def send(mirrors: list, step: int, group: str, values: dict[str, float]) -> None:
    """Send the finite ``values`` (name → float) of ``group`` at ``step`` to every mirror."""
    if not mirrors:
        return
    scalars = {tag(group, name): value for name, value in values.items() if not math.isnan(value)}
    if scalars:
        for mirror in mirrors:
            mirror.log_scalars(step, scalars)


def close_mirrors(mirrors: list) -> None:
    """Call ``close()`` of every mirror that has one; an error becomes a RuntimeWarning (the store is
    already closed: a viewer's failure must not turn a finished run into a failed one)."""
    for mirror in mirrors:
        close = getattr(mirror, "close", None)
        if callable(close):
            try:
                close()
            except Exception as error:
                warnings.warn(f"closing mirror {mirror!r} failed: {type(error).__name__}: {error}", RuntimeWarning,
                              stacklevel=3)
