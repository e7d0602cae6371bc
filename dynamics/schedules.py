"""Checkpoint schedules: predicates step → bool that say when a :class:`dynamics.Recorder` stores a checkpoint.

A schedule is any callable ``schedule(step: int) -> bool``; the ones here also combine with ``|``
(either says yes) and ``&`` (both say yes) and print readably::

    every(100) | log_spaced(10_000, 30)        # every 100 steps, plus 30 log-spaced early ones
    at([0, 5, 50]) & every(5)                  # steps 0 and 5 only

Steps are the caller's integer step counter (≥ 0); the Recorder passes the step it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class Schedule:
    """A step predicate with a readable repr; ``a | b`` and ``a & b`` build combined schedules."""

    def __init__(self, predicate: Callable[[int], bool], description: str) -> None:
        if not callable(predicate):
            raise TypeError(f"predicate must be callable, got {predicate!r}")
        self._predicate = predicate
        self._description = description

    def __call__(self, step: int) -> bool:
        return bool(self._predicate(step))

    def __or__(self, other: Callable[[int], bool]) -> Schedule:
        other = as_schedule(other)
        return Schedule(lambda step: self(step) or other(step), f"({self!r} | {other!r})")

    def __and__(self, other: Callable[[int], bool]) -> Schedule:
        other = as_schedule(other)
        return Schedule(lambda step: self(step) and other(step), f"({self!r} & {other!r})")

    __ror__ = __or__
    __rand__ = __and__

    def __repr__(self) -> str:
        return self._description


def as_schedule(schedule: Callable[[int], bool]) -> Schedule:
    """``schedule`` as a :class:`Schedule` (a plain callable is wrapped); anything else → TypeError."""
    if isinstance(schedule, Schedule):
        return schedule
    if not callable(schedule):
        raise TypeError(f"a schedule must be a callable step -> bool, got {schedule!r}")
    return Schedule(schedule, getattr(schedule, "__name__", repr(schedule)))


def every(n: int, *, start: int = 0) -> Schedule:
    """True at steps start, start + n, start + 2n, …  (n ≥ 1, start ≥ 0)."""
    n = _check_int("n", n, 1)
    start = _check_int("start", start, 0)
    return Schedule(lambda step: step >= start and (step - start) % n == 0,
                    f"every({n})" if start == 0 else f"every({n}, start={start})")


def at(steps: Iterable[int]) -> Schedule:
    """True exactly at the given steps (integers ≥ 0; duplicates are ignored)."""
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Iterable):
        raise TypeError(f"steps must be an iterable of ints, got {steps!r}")
    chosen = frozenset(_check_int("step", s, 0) for s in steps)
    shown = sorted(chosen)
    text = ", ".join(map(str, shown[:8])) + (", ..." if len(shown) > 8 else "")
    return Schedule(lambda step: step in chosen, f"at([{text}])")


def log_spaced_steps(n_total: int, n_points: int) -> list[int]:
    """About ``n_points`` unique integer steps in [0, n_total − 1], geometrically spaced, with both ends.

    The points are round(exp(linspace(0, log(n_total), n_points))) − 1 (so step 0 and step
    n_total − 1 are always included); where rounding makes early points coincide, the duplicates
    are replaced by the next unused integers, so exactly min(n_points, n_total) steps come back,
    sorted. Shapes: returns a list of ints.
    """
    n_total = _check_int("n_total", n_total, 1)
    n_points = _check_int("n_points", n_points, 2 if n_total > 1 else 1)
    if n_points >= n_total:
        return list(range(n_total))
    raw = np.rint(np.exp(np.linspace(0.0, math.log(n_total), n_points))).astype(np.int64) - 1
    steps: list[int] = []
    for value in raw:
        value = max(int(value), steps[-1] + 1 if steps else 0)
        steps.append(value)
    # Pushing duplicates forward may overshoot the end; pull the tail back below n_total − 1.
    steps[-1] = n_total - 1
    for i in range(len(steps) - 2, -1, -1):
        steps[i] = min(steps[i], steps[i + 1] - 1)
    return steps


def log_spaced(n_total: int, n_points: int) -> Schedule:
    """True at :func:`log_spaced_steps` (n_total, n_points): dense early, sparse late, ends included."""
    steps = log_spaced_steps(n_total, n_points)
    chosen = frozenset(steps)
    return Schedule(lambda step: step in chosen, f"log_spaced({n_total}, {n_points})")


def never() -> Schedule:
    """False at every step (records metrics only)."""
    return Schedule(lambda step: False, "never()")
