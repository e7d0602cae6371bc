"""The divergence rule of a training run, and the error that reports it.

Rule (checked after every update, on the losses the loop logs): a run has **diverged** at step t when

- the loss after the update (own batch, ``loss_after``, or the fixed other batch, ``other_loss_after``)
  is not finite, or
- either of them exceeds :data:`DIVERGENCE_FACTOR` × the initial loss, where the initial loss is the
  other batch's loss at step 0 (before any update; a fixed batch, so the reference does not depend on
  which mini-batch came first); an initial loss of 0 leaves only the first test.

At the usual initial cross-entropy of ln(10) ≈ 2.3 the bound is ≈ 2300 nats — logits wrong by
thousands; no run that is still learning gets there, while an undamped GN step at ``lr = 1e6`` lands at
≈ 1e126. A diverged run stops at once with status "failed" and a one-line message; every row logged
before the diverging step is kept (the diverging step's row is not written).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from dynamics.errors import ConfigError, StoreError
from dynamics.store import check_store

#: A loss above this multiple of the initial loss counts as divergence.
DIVERGENCE_FACTOR = 1000.0


class Diverged(ConfigError):
    """A run met the divergence rule; the message names optimiser, step, loss and bound. A
    ConfigError (the usual cure is a smaller ``lr``), so the command line prints one line."""


def check_divergence(optimizer: str, step: int, initial: float, losses: dict[str, float]) -> None:
    """Raise :class:`Diverged` when any of ``losses`` (name → value after the update of ``step``) is
    non-finite or above :data:`DIVERGENCE_FACTOR` × ``initial`` (the initial loss, ≥ 0)."""
    bound = DIVERGENCE_FACTOR * initial if math.isfinite(initial) and initial > 0 else math.inf
    for name, value in losses.items():
        if not math.isfinite(value):
            why = f"{name} = {value} is not finite"
        elif value > bound:
            why = f"{name} = {value:.3g} exceeds {DIVERGENCE_FACTOR:g} x the initial loss {initial:.3g}"
        else:
            continue
        raise Diverged(f"optimizer {optimizer!r} diverged at step {step} ({why}); lower its lr in "
                       f"[optimizers.{optimizer}]")


# ----------------------------------------------------------------------------- resuming
# A resume must never make a store worse: a complete store is left alone, and a resume that cannot
# start (unreadable or foreign resume state, a different config) leaves the status it found.

def already_complete(path: Path, config: dict) -> bool:
    """Whether the store at ``path`` is "complete" (then resuming it does nothing); StoreError when it
    is complete but was trained with another config than ``config`` (the resolved config)."""
    attrs = check_store(path)
    if attrs.get("status") != "complete":
        return False
    stored = json.loads(attrs["config"])
    wanted = json.loads(json.dumps(config))
    changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if changed:
        raise StoreError(f"{path} is a complete run of another config (keys {changed} differ); choose "
                         f"another --out or delete it")
    return True


def status_after_failed_resume(previous: str | None) -> str:
    """The status to leave when a resume fails before training: "failed" stays "failed", anything else
    (interrupted, or "running" of a killed writer) becomes "interrupted" — never a downgrade."""
    return "failed" if previous == "failed" else "interrupted"


def unusable_state(path: Path, state_path: Path, error: BaseException, previous: str | None) -> StoreError:
    """The error for a resume state that cannot be loaded or does not fit the run (truncated, foreign)."""
    return StoreError(f"cannot resume {path}: its resume state {state_path} is unusable "
                      f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); the store "
                      f"stays {status_after_failed_resume(previous)!r}. Delete {state_path} to train it again "
                      f"from step 0")


def close_quietly(recorder, status: str, error: str | None = None) -> None:
    """Close ``recorder`` with ``status`` after an error; if closing fails too (a full disk, a read-only
    file system) the store keeps its last status, the lock is released all the same, and the caller
    re-raises the first error rather than this one."""
    try:
        recorder.close(status=status, error=error)
    except Exception:
        pass
