"""The manifest of a sweep folder, ``DIR/sweep.json`` (schema "dynamics.sweep/1").

JSON object:
- ``schema``: "dynamics.sweep/1"; ``digest``: SHA-256 of the sweep's base config and grid (a re-run with
  another config is refused unless forced); ``config``: the base config (the file without ``[sweep]``,
  resolved over its preset); ``sweep``: the grid, dotted key → list of values, in file order;
  ``optimizers``: the optimisers of ``train.optimizers``;
- ``points``: one entry per grid point in row-major order of ``sweep``: ``values`` (key → value) and
  ``runs`` (optimizer → run name); identical runs of several points share a name;
- ``runs``: run name → ``optimizer``, ``store`` (path relative to DIR, ``runs/<name>.zarr``), ``digest``
  (SHA-256 of the run's resolved config), ``config``, ``status`` ("pending" | "running" | "complete" |
  "failed" | "interrupted"), ``attempts`` (the times the run was started, over all invocations; a
  task that found its store complete or locked did not start it, a task whose worker died did),
  ``failures`` (results that failed), ``error`` (the last failure's text, or null), for a failed run
  ``retry`` (whether its failure can go away on a retry: a lost worker, a locked store, a file-system
  error — false for a deterministic failure, which no later invocation starts again unless asked to
  with ``--retry-failed``), and once trained ``seconds`` (wall time of the task that completed it)
  and ``updated`` (UTC time of the last result).

The manifest is the sweep driver's record; a run store's own ``status`` attribute is the truth about
the run (a driver killed by SIGKILL leaves "running" in the manifest, which the next invocation
corrects from the stores), except for a run that failed before its store was created (a ConfigError
of its grid point), which stays "failed" by its manifest entry. Written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dynamics.errors import StoreError, io_error

MANIFEST = "sweep.json"
SCHEMA = "dynamics.sweep/1"
RUNS_FOLDER = "runs"
RUN_STATUSES = ("pending", "running", "complete", "failed", "interrupted")


def manifest_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / MANIFEST


def is_sweep(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a sweep manifest."""
    return manifest_path(folder).is_file()


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of sweep folder ``folder``, or None when it has none; StoreError when the file is
    not a manifest of this schema."""
    path = manifest_path(folder)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StoreError(f"{path} is not a readable sweep manifest: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise StoreError(f"{path} has schema {found!r}; this version of dynamics reads {SCHEMA!r} only")
    for key in ("digest", "config", "sweep", "optimizers", "points", "runs"):
        if key not in manifest:
            raise StoreError(f"{path} lacks the key {key!r} of a sweep manifest")
    return manifest


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` to ``folder/sweep.json`` atomically; returns the path. A failed write (a full
    disk, a read-only folder) leaves the previous manifest and no temporary file, and raises
    StoreIOError naming the manifest and the errno."""
    path = manifest_path(folder)
    tmp = path.with_name(f"{MANIFEST}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        error.filename = error.filename or str(tmp)
        raise io_error(f"cannot write the sweep manifest {path}", error) from error
    return path


def store_path(folder: str | os.PathLike, manifest: dict[str, Any], name: str) -> Path:
    """Absolute path of run ``name``'s store."""
    return Path(folder) / manifest["runs"][name]["store"]


def store_status(store: str | os.PathLike) -> str | None:
    """The ``status`` root attribute of the run store at ``store``; None when there is no store there
    (or only a directory without a store's metadata: a run killed before its first write)."""
    from dynamics.store.reader import check_store

    store = Path(store)
    if not (store / "zarr.json").is_file():
        return None
    return str(check_store(store).get("status", "running"))
