"""Layout of a run store (schema "dynamics.run/1") and validation of what goes into it.

A run store is one zarr v3 group (DESIGN §4):

- root attrs: ``schema`` = "dynamics.run/1"; ``config`` (JSON string); ``versions`` (JSON string:
  python, torch, numpy, xarray, zarr, dynamics); ``status`` ("running" | "complete" | "interrupted"
  | "failed"); ``error`` (text, only when failed); ``committed`` (JSON string, see below);
  ``nonfinite`` (JSON string, see below).
- ``metrics``: dim ``step`` (int64 index coordinate) with ``epoch`` (float64, NaN where not given) and
  one float64 variable per logged scalar name.
- ``checkpoints``: dim ``checkpoint`` (int64 index 0, 1, …) with non-index coordinates
  ``checkpoint_step`` (int64) and ``checkpoint_epoch`` (float64) — named ``step`` and ``epoch`` in
  stores written before, which readers see renamed (:data:`LEGACY_CHECKPOINT_COORDS`); one float64 variable per checkpoint scalar; ``ntk``
  (checkpoint, probe, probe_); ``rep_<layer>`` (checkpoint, probe, unit_<layer>).
- ``params``: same coordinates as ``checkpoints``; one variable per trained parameter, named by its
  store key (:mod:`dynamics.store.names`: "." → "__", other characters escaped; the name itself is
  the variable's attribute ``name``), dims (checkpoint, <key>_dim0, <key>_dim1, …).
- ``probe``: ``x`` (probe, feature) — (probe, feature_0, feature_1, …) for inputs of rank > 2 —
  and ``y`` (probe) or (probe, output).

Chunks: metrics variables hold :data:`METRICS_CHUNK` steps per chunk; ``checkpoints`` and ``params``
variables :func:`checkpoint_chunk_rows` checkpoints per chunk (about :data:`CHUNK_BYTES` per chunk,
one checkpoint per chunk for rows larger than that; stores written before this rule have one per
chunk, and are read and appended to the same way); zstd level 1; chunk keys use the "." separator
(``c.5.0.0``).

``committed`` is the crash-safety mark, written after the data it describes::

    {"metrics": rows, "step": last metrics step | null,
     "checkpoint": checkpoints, "checkpoint_step": last checkpoint step | null,
     "variables": {"metrics": [...], "checkpoints": [...], "params": [...]}}

Readers use the first ``rows`` / ``checkpoints`` entries of the listed variables only.
``nonfinite`` counts the non-finite values: scalars (stored as NaN) by row, and the rows of array
variables (parameters, NTK, representations; stored as they are) that hold one, per variable key::

    {"metrics": {"loss": {"count": 3, "steps": [[120, 122]]}}, "checkpoints": {...}, "params": {...}}

(``steps`` are inclusive runs, kept so that truncation can keep the counts exact).
"""

from __future__ import annotations

import json
import numbers
from typing import Any

import numpy as np

SCHEMA = "dynamics.run/1"
STATUSES = ("running", "complete", "interrupted", "failed")
ROW_DIM = {"metrics": "step", "checkpoints": "checkpoint", "params": "checkpoint"}
METRICS_COORDS = ("step", "epoch")
CHECKPOINT_COORDS = ("checkpoint", "checkpoint_step", "checkpoint_epoch")
#: The coordinates of ``checkpoints``/``params`` in stores written before they were named like the
#: analysis' (one name for a checkpoint's step in every group); such stores are read with the new
#: names (:func:`dynamics.open_run`) and appended to with their own.
LEGACY_CHECKPOINT_COORDS = ("checkpoint", "step", "epoch")
METRICS_CHUNK = 4096          # steps per chunk of a metrics variable
CHUNK_BYTES = 256 * 1024      # target size of an uncompressed chunk of a checkpoints/params variable
PARAMS_MODES = ("all", "first_last", "none")
"""What the ``params`` group holds (root attribute ``params``; a store without it holds "all"):
"all" — every checkpoint's parameters; "first_last" — those of the first checkpoint and of the
latest one written (once a new checkpoint's parameters are committed, the previous non-first row
is set to NaN, the float fill value: after a kill at any moment the store holds the first and the
latest committed parameters, and at worst the previous row too);
"none" — no parameter variables (the group keeps its ``checkpoint``/``step``/``epoch`` coordinates)."""


def params_mode(attrs: dict[str, Any]) -> str:
    """The ``params`` mode of a store from its root attributes ("all" for stores written before it)."""
    return attrs.get("params", "all")


def check_params_mode(mode: Any) -> str:
    """``mode`` if it is one of :data:`PARAMS_MODES`; otherwise ValueError naming it."""
    if mode not in PARAMS_MODES:
        raise ValueError(f"params must be one of {', '.join(map(repr, PARAMS_MODES))}, got {mode!r}")
    return mode


def identity_attrs(config: dict | None) -> dict[str, Any]:
    """Root attributes ``optimizer`` (its name, or a table's ``name``), ``seed`` (int) and ``preset``
    taken from a run's ``config`` where it holds them (``seed`` or ``train.seed``), so that a reader
    sees what the run is without parsing the JSON config."""
    config = config or {}
    out: dict[str, Any] = {}
    optimizer = config.get("optimizer")
    if isinstance(optimizer, dict):
        optimizer = optimizer.get("name") or optimizer.get("kind")
    if isinstance(optimizer, str) and optimizer:
        out["optimizer"] = optimizer
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    seed = config.get("seed", train.get("seed"))
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        out["seed"] = int(seed)
    if isinstance(config.get("preset"), str) and config["preset"]:
        out["preset"] = config["preset"]
    return out


#: Keys no metric or checkpoint scalar may take (besides ``rep_*``): coordinates, and the names of the
#: Recorder's own variables (:class:`dynamics.recorder_names.RecorderNames`).
RESERVED_SCALARS = {"step", "epoch", "checkpoint", "checkpoint_step", "checkpoint_epoch", "ntk", "probe", "x", "y"}


def store_name(name: str) -> str:
    """The store key of a module, parameter or scalar name: :func:`dynamics.store.names.encode`
    ("." → "__" between parts, other characters escaped: ``blocks.0.F`` → ``blocks__0__F``)."""
    from dynamics.store.names import encode
    return encode(name)


INT64_MAX = 2 ** 63 - 1


def scalar_value(name: str, value: Any) -> float:
    """``value`` as a float: Python/NumPy numbers, 0-d or one-element arrays and tensors.

    Strings, lists, None, complex numbers and arrays/tensors with more than one element → TypeError
    naming ``name``; a number beyond the float64 range (``10**400``) → ValueError naming it.
    Non-finite values come back unchanged (the caller stores them as NaN and counts them).
    """
    if isinstance(value, (numbers.Real, np.bool_)):
        return _as_float(name, value)
    size = getattr(value, "numel", None)
    n = size() if callable(size) else getattr(value, "size", None)
    if n == 1 and hasattr(value, "item") and not isinstance(value, (str, bytes)):
        item = value.item()
        if isinstance(item, (numbers.Real, np.bool_)):
            return _as_float(name, item)
    raise TypeError(f"value of {name!r} must be a real scalar (number, or a one-element array/tensor), "
                    f"got {type(value).__name__}" + (f" with {n} elements" if isinstance(n, int) else ""))


def _as_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"value of {name!r} is beyond the float64 range: {value!r}") from None


def check_step(step: Any, what: str = "step") -> int:
    """``step`` as an int in [0, 2**63 − 1] (stored as int64); bool/float/str → TypeError, negative
    or too large → ValueError (both name it)."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {step!r} ({type(step).__name__})")
    step = int(step)
    if step < 0:
        raise ValueError(f"{what} must be >= 0, got {step}")
    if step > INT64_MAX:
        raise ValueError(f"{what} must be <= 2**63 - 1 (it is stored as int64), got {step}")
    return step


def checkpoint_chunk_rows(row_bytes: int) -> int:
    """Checkpoints per chunk of a ``checkpoints``/``params`` variable whose rows take ``row_bytes``:
    the largest power of two with rows·row_bytes ≤ :data:`CHUNK_BYTES`, in [1, :data:`METRICS_CHUNK`].

    Small rows (scalars, coordinates, a small model's NTK) share files, so a store of thousands of
    checkpoints is read from few files; a row larger than the target gets a chunk of its own. Each
    checkpoint rewrites one chunk per variable (at most about ``CHUNK_BYTES`` before compression)."""
    rows = max(1, CHUNK_BYTES // max(1, int(row_bytes)))
    return min(1 << (rows.bit_length() - 1), METRICS_CHUNK)


def empty_committed() -> dict[str, Any]:
    """The ``committed`` mark of a store that holds no rows yet."""
    return {"metrics": 0, "step": None, "checkpoint": 0, "checkpoint_step": None,
            "variables": {"metrics": ["step", "epoch"], "checkpoints": list(CHECKPOINT_COORDS),
                          "params": list(CHECKPOINT_COORDS)}}


def checkpoint_coords(committed: dict[str, Any]) -> tuple[str, str, str]:
    """The names of the ``checkpoints``/``params`` coordinates in a store with ``committed`` mark:
    :data:`CHECKPOINT_COORDS`, or :data:`LEGACY_CHECKPOINT_COORDS` for a store written before them."""
    legacy = "step" in committed["variables"]["checkpoints"]
    return LEGACY_CHECKPOINT_COORDS if legacy else CHECKPOINT_COORDS


def committed_rows(committed: dict[str, Any], group: str) -> int:
    """Rows of ``group`` ("metrics", "checkpoints" or "params") under the ``committed`` mark."""
    return committed["metrics" if group == "metrics" else "checkpoint"]


def parse_json_attr(attrs: dict[str, Any], key: str, path: object) -> Any:
    """Root attribute ``key`` decoded from JSON; a missing or malformed one → StoreError naming it."""
    from dynamics.errors import StoreError
    if key not in attrs:
        raise StoreError(f"{path}: root attribute {key!r} is missing; the store is damaged or not a run store")
    try:
        return json.loads(attrs[key])
    except (TypeError, ValueError) as err:
        raise StoreError(f"{path}: root attribute {key!r} is not valid JSON ({err})") from None


def count_nonfinite(record: dict[str, Any], group: str, name: str, step: int) -> None:
    """Add one non-finite value of ``group``/``name`` at ``step`` to a ``nonfinite`` record, in place."""
    entry = record.setdefault(group, {}).setdefault(name, {"count": 0, "steps": []})
    entry["count"] += 1
    runs = entry["steps"]
    if runs and runs[-1][1] == step - 1:
        runs[-1][1] = step
    else:
        runs.append([step, step])


def trim_nonfinite(record: dict[str, Any], group: str, last_step: int) -> None:
    """Drop the counts of ``group`` at steps > ``last_step`` from a ``nonfinite`` record, in place."""
    entries = record.get(group, {})
    for name in list(entries):
        runs = [[a, min(b, last_step)] for a, b in entries[name]["steps"] if a <= last_step]
        if runs:
            entries[name] = {"count": sum(b - a + 1 for a, b in runs), "steps": runs}
        else:
            del entries[name]
    if group in record and not entries:
        del record[group]

