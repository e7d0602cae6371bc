"""What an analysis was computed from: the *source token* of a run store, and the check that a stored
analysis still matches its store.

An analysis is derived data: it is correct only for the committed data it was computed from. Every
analysis written by :func:`analysis.analyze` records in its attribute ``source`` (JSON) the token of
its store at the time it was computed::

    {"committed": <the store's root attribute "committed", parsed>, "digest": "<blake2b hex>"}

``committed`` is the store's crash-safety mark (rows, checkpoints, last steps, variable names), so a
resumed run (more checkpoints) or a truncated one no longer matches. ``digest`` covers what a
truncation followed by different training could leave with the same mark: the root ``config``, and
every file of the ``metrics``, ``checkpoints``, ``params`` and ``probe`` groups — its relative path,
its size and its bytes (files up to :data:`WHOLE_FILE_BYTES`; of a larger file its first and last
:data:`EDGE_BYTES`, so that the token stays cheap for stores of large parameters). The token is
computed from files only (no decompression); a store copied elsewhere keeps its token.

Whatever changes a store's committed data also removes its derived groups first
(:func:`retire_derived`, called by the writer before the first commit of a resumed store that
changes data, and before a truncation that drops rows): plain xarray readers, which cannot check a
token, never meet an analysis of other data than the store holds.

Readers use a stored analysis only when its ``source`` equals the store's current token:
:func:`analysis.open_runs` and ``dynamics analyze/report`` recompute it otherwise;
:func:`dynamics.open_run` raises StoreError (or leaves the group out when asked, ``analysis="omit"``).
The token lives here, beside the store it describes, so that the store's own reader can check it;
:mod:`analysis.freshness` re-exports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dynamics.errors import StoreError

SOURCE_ATTR = "source"
#: Groups computed from a store's data after training (replaced as a whole; never training data)
DERIVED_GROUPS = ("analysis",)
DATA_GROUPS = ("metrics", "checkpoints", "params", "probe")
WHOLE_FILE_BYTES = 1 << 16
EDGE_BYTES = 1 << 12


def _root_attrs(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError) as err:
        raise StoreError(f"{path} is not a run store: cannot read its zarr.json ({err})") from None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return attrs if isinstance(attrs, dict) else {}


def _file_digest(h: Any, file: Path, rel: str) -> None:
    with open(file, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        h.update(f"{rel}\0{size}\0".encode())
        if size <= WHOLE_FILE_BYTES:
            h.update(handle.read())
        else:
            h.update(handle.read(EDGE_BYTES))
            handle.seek(size - EDGE_BYTES)
            h.update(handle.read(EDGE_BYTES))


def source_token(path: str | os.PathLike) -> dict[str, Any]:
    """The source token of the run store at ``path`` (see the module docstring); StoreError when the
    path holds no readable root metadata. Files that vanish while they are read (a live writer) are
    skipped: such a token never matches a later one, which is the safe direction."""
    path = Path(path)
    attrs = _root_attrs(path)
    raw = attrs.get("committed")
    try:
        committed = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        committed = raw
    h = hashlib.blake2b(digest_size=16)
    h.update(str(attrs.get("config")).encode())
    for group in DATA_GROUPS:
        files = []
        for root, dirs, names in os.walk(path / group):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [os.path.join(root, n) for n in names if not n.startswith(".") and not n.endswith(".partial")]
        for file in sorted(files):
            try:
                _file_digest(h, Path(file), os.path.relpath(file, path))
            except FileNotFoundError:
                continue
    return {"committed": committed, "digest": h.hexdigest()}


def recorded_source(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The ``source`` token recorded in an analysis' attributes, or None when it has none (an
    analysis written before tokens existed: never fresh)."""
    raw = attrs.get(SOURCE_ATTR)
    if not isinstance(raw, str):
        return None
    try:
        token = json.loads(raw)
    except ValueError:
        return None
    return token if isinstance(token, dict) else None


def staleness(recorded: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """None when an analysis with ``recorded`` source matches a store whose token is ``current``;
    otherwise a short reason ("computed from 3 checkpoints and 30 metrics rows; the store now
    holds 6 and 60"). Only the data part of the tokens (``committed``, ``digest``) is compared here;
    analysis options recorded beside it (``kernel_alignment``) are checked by
    :func:`analysis.freshness.staleness` against the request."""
    if recorded is None:
        return "it records no source token (written by an older version)"
    if all(recorded.get(key) == current.get(key) for key in ("committed", "digest")):
        return None
    old, new = recorded.get("committed"), current.get("committed")
    if isinstance(old, dict) and isinstance(new, dict) and old != new:
        return (f"computed from {old.get('checkpoint')} checkpoints and {old.get('metrics')} metrics rows; "
                f"the store now holds {new.get('checkpoint')} and {new.get('metrics')}")
    return "the store's data changed since it was computed (same length, other content)"


def retire_derived(path: Path, write_root: Callable[[], None]) -> list[str]:
    """Remove the derived groups (:data:`DERIVED_GROUPS`) of store ``path`` before its committed data
    change; returns the names removed. Called by the store's writer, which holds its lock:
    ``write_root()`` first replaces the commit record with one whose consolidated metadata leaves them
    out (plain xarray readers no longer see them), then each folder is renamed aside (the name
    ``analysis.analyze`` sweeps as debris) and deleted. A process killed on the way leaves the group in
    place or gone — and still correct, since the data it describes has not changed yet."""
    present = [name for name in DERIVED_GROUPS if (path / name).exists()]
    if not present:
        return []
    write_root()
    for name in present:
        aside = path.parent / f".{path.name}.{name}-old-{os.getpid()}.tmp"
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(path / name, aside)
        shutil.rmtree(aside, ignore_errors=True)
    return present
