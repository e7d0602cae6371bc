"""Is a run's resume state possible for its store and config? Checked before training continues from it.

The training loop (:mod:`trainers.loop`) saves the resume state ``resume/state.pt`` of a run at every
checkpoint and when it is stopped between steps, always *after* the store committed every metrics row
and checkpoint up to the state's step (``Recorder.save_state`` flushes first). So for a state at step
k of a run of T steps, E steps per epoch and checkpoint schedule S, a store written by that run holds:

- k ≤ T, and k = epoch · E + position with 0 ≤ position < E;
- metrics rows up to step k at least (the committed metrics step L ≥ k), and every checkpoint of S up to k;
- nothing past the first checkpoint of S after k, s₁ (T when there is none): a process killed after
  the state was saved may have committed rows and that checkpoint before saving the next state, never
  more (training goes past s₁ only after saving the state of s₁). L > s₁, or a committed checkpoint
  after s₁, means the state is older than the store (restored from a backup, copied from another run);
- parameters of the model built from the config (same names and shapes), equal — bit for bit — to the
  parameters the store holds for the checkpoint at step k, where it holds them (a state of another run
  of the same config differs there).

A state that breaks any of these cannot continue the run: resuming from it would end "complete" with
rows and checkpoints missing, or would discard committed checkpoints, or continue another run's
weights. :func:`check_resume_state` raises :class:`ResumeStateError` (a StoreError) naming the first
violation; the loop then refuses the resume in one line and leaves the store's status as it was
(:func:`trainers.failures.unusable_state`).
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np
import torch

from dynamics.errors import StoreError

STATE_KEYS = {"step": int, "epoch": int, "position": int, "generator": torch.Tensor, "model": dict,
              "optimizer": dict, "other_loss": float, "config": str}


class ResumeStateError(StoreError):
    """A resume state that is impossible for its store and config (see the module docstring)."""


def _structure(state: object) -> dict:
    if not isinstance(state, dict):
        raise ResumeStateError(f"it is a {type(state).__name__}, not the dict the training loop saves")
    for key, kind in STATE_KEYS.items():
        value = state.get(key)
        if key not in state or isinstance(value, bool) or not isinstance(value, (kind, int) if kind is float else kind):
            raise ResumeStateError(f"its {key!r} is {type(value).__name__ if key in state else 'missing'}, "
                                   f"not {kind.__name__}")
    return state


def check_resume_state(state: object, *, total_steps: int, steps_per_epoch: int, checkpoint_steps: list[int],
                       last_step: int | None, stored_checkpoints: list[int], model: torch.nn.Module,
                       stored_params=None) -> None:
    """Raise ResumeStateError unless ``state`` can continue the run (module docstring).

    ``last_step``: the store's committed metrics step (None: no rows); ``stored_checkpoints``: its
    committed checkpoint steps; ``model``: the model built from the config; ``stored_params``: the
    store's ``params`` Dataset (dim checkpoint, coordinate ``checkpoint_step``), or None to skip the
    comparison of weights."""
    state = _structure(state)
    step, epoch, position = state["step"], state["epoch"], state["position"]
    if not 0 <= step <= total_steps:
        raise ResumeStateError(f"it is at step {step}, outside the run's {total_steps} training steps")
    if not 0 <= position < steps_per_epoch or epoch * steps_per_epoch + position != step:
        raise ResumeStateError(f"its epoch {epoch} and position {position} do not give step {step} with "
                               f"{steps_per_epoch} steps per epoch")
    rows_to = -1 if last_step is None else last_step
    if step > 0 and rows_to < step:
        raise ResumeStateError(f"it is at step {step}, but the store's metrics end at step "
                               f"{'(none)' if last_step is None else last_step}: rows would be missing")
    missing = [s for s in checkpoint_steps if s <= step and s not in stored_checkpoints]
    if missing:
        raise ResumeStateError(f"it is at step {step}, but the store lacks the checkpoints at steps "
                               f"{missing[:5]} before it")
    later = checkpoint_steps[bisect.bisect_right(checkpoint_steps, step):]
    bound = later[0] if later else total_steps
    beyond = [s for s in stored_checkpoints if s > bound]
    if rows_to > bound or beyond:
        what = f"checkpoints at steps {beyond[:5]}" if beyond else f"metrics rows up to step {rows_to}"
        raise ResumeStateError(f"it is at step {step}, older than the store, which holds {what}: a run stopped "
                               f"after that state would have saved a newer one (is it restored or copied from "
                               f"elsewhere?); resuming would discard them")
    _check_parameters(state, step, model, stored_checkpoints, stored_params)


def _check_parameters(state: dict, step: int, model: torch.nn.Module, stored_checkpoints: list[int],
                      stored_params) -> None:
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state["model"].items() if isinstance(t, torch.Tensor)}
    if found != expected:
        odd = sorted(set(found) ^ set(expected)) or sorted(n for n in expected if found[n] != expected[n])
        raise ResumeStateError(f"its model does not fit the model of the config (differs in {odd[:4]})")
    if stored_params is None or step not in stored_checkpoints:
        return
    index = stored_checkpoints.index(step)
    for name, parameter in model.named_parameters():
        key = name.replace(".", "__")
        if key not in stored_params.data_vars:
            continue
        stored = np.asarray(stored_params[key].isel(checkpoint=index).values)
        if stored.dtype.kind == "f" and np.isnan(stored).all():
            continue   # a row the "first_last" mode cleared
        saved = state["model"][name].detach().cpu().numpy().astype(stored.dtype)
        if saved.shape != stored.shape or not np.array_equal(saved, stored, equal_nan=True):
            raise ResumeStateError(f"its parameter {name!r} at step {step} differs from the store's checkpoint "
                                   f"at that step: the state belongs to another run")


def stored_parameters(path: Path):
    """The ``params`` group of the store at ``path`` (committed data, lazily), or None without one."""
    from dynamics.store import open_run

    tree = open_run(path, analysis="omit")
    return tree["params"].to_dataset() if "params" in tree.children else None
