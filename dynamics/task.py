"""The task of a run's probe targets: "classification" (class labels) or "regression" (real targets).

Quantities that use the probe targets depend on it — the kernel–target alignment (one-hot Y of the
labels, or the targets themselves) and the linear probes (accuracy, or R²) — so it is never guessed
from a dtype alone. It is stated (``Recorder(..., task=...)``, or the key ``task`` of the config the
Recorder stores), else inferred by :func:`infer_task`, and recorded in the run store as the root
attributes ``task`` and ``task_source`` ("stated", "config" or "inferred: <why>"). Stores written before
tasks were recorded are read with the same rule, the model's outputs unknown (:func:`recorded_task`).

Inference (:func:`infer_task`), in order:

1. a cross-entropy loss in the config (``loss`` or ``train.loss`` = "ce", "cross_entropy", "nll") →
   classification; the targets must then be class labels (ValueError otherwise);
2. targets of shape (N, 1) are read as a vector (N,) (a column of labels, or one regression target);
3. targets that cannot be class labels → regression: non-integer or negative values, 2-D rows that
   are not one-hot;
4. 2-D targets whose rows are one-hot (0/1 with exactly one 1) → classification (label = the 1's column);
5. 1-D targets that are non-negative integers — class labels, or integer-valued regression targets —
   by their dtype and the model's outputs per sample (``n_outputs``):

   - ``n_outputs`` = 1: regression (integer-valued regression, e.g. counts fitted by MSE), except
     targets that are 0 and 1 (both present), which one logit trained with binary cross-entropy fits
     as well: ambiguous;
   - ``n_outputs`` > 1 with every target < ``n_outputs``: an integer (or bool) dtype → classification;
     a floating-point dtype is ambiguous (class labels stored as floats, or integer-valued regression
     targets of a multi-output model), unless all targets are equal (placeholder targets: regression);
   - ``n_outputs`` > 1 with a target ≥ ``n_outputs``: not the model's class labels; a floating-point
     dtype → regression, an integer dtype is ambiguous;
   - ``n_outputs`` unknown (a store written before): an integer (or bool) dtype → classification, a
     floating-point dtype → regression.

   An ambiguous case raises ValueError asking the caller to state the task (``task=`` or the
   config's ``task``): no quantity is computed for a task that was guessed. Every entry point that
   creates a Recorder can state it: ``Recorder(task=...)``, the trainers (which state
   "classification"), and the Lightning and Hugging Face callbacks (``task=``, passed on; the Hugging
   Face one states the task of the model's own loss where transformers fixes it). On resume the
   stored task decides an ambiguous case.

A stated task is checked against the targets: "classification" needs integer-valued, non-negative
labels (N,) or (N, 1) — any dtype that holds them exactly — or one-hot rows (N, C); "regression" takes
any real targets (N,) or (N, O).
"""

from __future__ import annotations

from typing import Any

import numpy as np

TASKS = ("classification", "regression")
CLASSIFICATION_LOSSES = frozenset({"ce", "cross_entropy", "crossentropy", "cross-entropy", "nll"})


def check_task(task: object) -> str:
    """``task`` if it is one of :data:`TASKS`; ValueError naming it otherwise."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return str(task)


def config_loss(config: Any) -> str | None:
    """The loss named by a run config (``loss``, else ``train.loss``), lower-case; None when absent."""
    if not isinstance(config, dict):
        return None
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    loss = config.get("loss", train.get("loss"))
    return loss.lower() if isinstance(loss, str) else None


def _as_targets(y: Any) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim not in (1, 2) or y.shape[0] == 0:
        raise ValueError(f"probe targets must have shape (N,) or (N, O) with N >= 1, got {y.shape}")
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise TypeError(f"probe targets must be numeric, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.complexfloating):
        raise TypeError(f"probe targets must be real, got dtype {y.dtype}")
    return y


def _vector(y: np.ndarray) -> np.ndarray:
    """Targets (N, 1) as (N,); others as they are."""
    return y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y


def _is_one_hot(y: np.ndarray) -> bool:
    return y.ndim == 2 and bool(np.all((y == 0) | (y == 1))) and bool(np.all(y.sum(axis=1) == 1))


def _label_problem(y: np.ndarray) -> str | None:
    """Why ``y`` cannot be class labels, or None when it can."""
    y = _vector(y)
    if y.ndim == 2:
        return None if _is_one_hot(y) else f"targets of shape {y.shape} whose rows are not one-hot"
    if not np.all(np.isfinite(y.astype(np.float64))):
        return "non-finite targets"
    if not np.all(y == np.round(y)):
        return "non-integer targets"
    if y.size and float(y.min()) < 0:
        return f"a negative target {y.min()!r}"
    return None


def infer_task(y: Any, *, loss: str | None = None, n_outputs: int | None = None) -> tuple[str, str]:
    """(task, why) for probe targets ``y`` (N,) or (N, O) by the module's rule.

    Args:
        y: the probe targets. loss: the training loss named by the config, if any. n_outputs: the
            model's outputs per sample (None when unknown).
    Raises ValueError when a cross-entropy loss meets targets that are not class labels, and for the
    ambiguous cases of rule 5 (0/1 targets of a one-output model; float-typed integers below a
    multi-output model's width; integer labels beyond it): state the task then.
    """
    y = _vector(_as_targets(y))
    problem = _label_problem(y)
    if loss in CLASSIFICATION_LOSSES:
        if problem is not None:
            raise ValueError(f"the config's loss {loss!r} is a classification loss but the probe has {problem}; "
                             "give class labels, or state task='regression'")
        return "classification", f"the config's loss is {loss!r}"
    if problem is not None:
        return "regression", f"the probe has {problem}"
    if y.ndim == 2:
        return "classification", "the probe targets are one-hot rows"
    floating = np.issubdtype(y.dtype, np.floating)
    if n_outputs is None:
        return ("regression", f"the probe targets are floating-point ({y.dtype})") if floating else \
            ("classification", f"non-negative integer targets ({y.dtype})")
    largest = int(y.max()) if y.size else 0
    varied = np.unique(y).size > 1   # a single value (placeholder targets) tells no task apart: not ambiguous
    if n_outputs == 1:
        if largest <= 1 and varied:
            raise ValueError(f"the probe targets are 0 and 1 and the model has one output: binary class labels "
                             "(one logit, trained with binary cross-entropy) or regression targets? State "
                             "task='classification' or task='regression'")
        return "regression", "integer-valued targets and a model with one output"
    if largest < n_outputs:
        if floating and varied:
            raise ValueError(f"the probe targets are floating-point ({y.dtype}) but integer-valued in [0, {n_outputs}) "
                             f"and the model has {n_outputs} outputs: class labels stored as floats, or integer-valued "
                             "regression targets? State task='classification' or task='regression'")
        if floating:
            return "regression", f"constant floating-point targets ({y.dtype})"
        return "classification", f"non-negative integer targets ({y.dtype}) below the model's {n_outputs} outputs"
    if floating:
        return "regression", (f"floating-point targets ({y.dtype}) up to {largest}, beyond the model's {n_outputs} "
                              "outputs")
    raise ValueError(f"the probe targets are integers up to {largest} but the model has {n_outputs} outputs, so they "
                     "are not its class labels; state task='classification' or 'regression'")


def resolve_task(y: Any, *, task: str | None = None, config: Any = None,
                 n_outputs: int | None = None) -> tuple[str, str]:
    """(task, source): the stated ``task`` ("stated"), else the config's key ``task`` ("config"), else
    :func:`infer_task` ("inferred: <why>"). A stated task is checked against ``y`` (ValueError when
    "classification" meets targets that are not class labels)."""
    for given, source in ((task, "stated"), (config.get("task") if isinstance(config, dict) else None, "config")):
        if given is None:
            continue
        given = check_task(given)
        problem = _label_problem(_as_targets(y))
        if given == "classification" and problem is not None:
            raise ValueError(f"task='classification' ({source}) but the probe has {problem}; class labels are "
                             "non-negative integers (N,) or one-hot rows (N, C)")
        return given, source
    inferred, why = infer_task(y, loss=config_loss(config), n_outputs=n_outputs)
    return inferred, f"inferred: {why}"


def recorded_task(attrs: dict[str, Any], y: Any, config: Any = None) -> tuple[str, str]:
    """(task, source) of a run store from its root ``attrs``: the recorded ``task``/``task_source``, or
    for a store written before tasks were recorded, :func:`resolve_task` on its probe targets ``y``
    and ``config`` (the model's outputs unknown)."""
    task = attrs.get("task")
    if task is not None:
        return check_task(task), str(attrs.get("task_source", "recorded"))
    inferred, source = resolve_task(y, config=config)
    return inferred, f"{source} (a store written before tasks were recorded)"


def class_labels(y: Any) -> np.ndarray:
    """Class labels (N,) int64 of classification targets: labels (N,) or (N, 1) as given, or the column
    of each one-hot row. ValueError when ``y`` holds no class labels."""
    y = _vector(_as_targets(y))
    problem = _label_problem(y)
    if problem is not None:
        raise ValueError(f"classification needs class labels, but the probe has {problem}")
    return y.argmax(axis=1).astype(np.int64) if y.ndim == 2 else y.astype(np.int64)


def regression_targets(y: Any) -> np.ndarray:
    """Regression targets as a float64 (N, O) matrix (a vector (N,) as one column); ValueError for
    non-finite targets."""
    y = _as_targets(y).astype(np.float64)
    if not np.all(np.isfinite(y)):
        raise ValueError(f"regression targets must be finite, got {int(np.sum(~np.isfinite(y)))} NaN/Inf")
    return y[:, None] if y.ndim == 1 else y
