"""Reading run stores and writing the ``analysis`` group back into them.

A run is given as a path to a store (schema "dynamics.run/1") or as the ``xarray.DataTree`` that
:func:`dynamics.store.open_run` returns (committed data only, lazily loaded).

The ``analysis`` group is written into the store under the store's lock
(:class:`dynamics.store.lock.StoreLock`) and made visible in one step (:func:`write_analysis_group`):
a reader, or a process killed at any moment, sees the previous complete group, none, or the new
complete group. The training groups (metrics, checkpoints, params, probe) and root attributes are
never rewritten; the root's consolidated metadata leaves the group out during the swap.
While another process holds the lock (a run being trained, another analysis), nothing is written:
the analysis of a live run is computed from its committed data and kept in memory. A store that
cannot be written at all (a read-only file system, an archive; no write permission) is read without
a lock and analysed in memory the same way: :func:`write_analysis_group` raises
:class:`~dynamics.errors.StoreReadOnlyError`, which the callers turn into a
:class:`~dynamics.errors.NotWrittenWarning`. Any other failure of the file system (a full disk) is a
:class:`~dynamics.errors.StoreIOError` naming the path and errno; the store keeps its previous
analysis. Readers here always use unconsolidated metadata and retry when a folder is replaced while
they read it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from analysis.labels import run_identity as identity_from_config
from analysis.freshness import SOURCE_ATTR, analysis_token, recorded_source, source_token, staleness
from dynamics.errors import NotWrittenWarning, StoreError, StoreLockedError, StoreReadOnlyError, io_error
from dynamics.store import open_run
from dynamics.store.lock import StoreLock
from dynamics.store.reader import quiet_zarr_warnings
from dynamics.store import root as root_record
from dynamics.store import schema
from dynamics.store.attributes import cf_attrs

ANALYSIS_GROUP = "analysis"
TRAINING_GROUPS = ("metrics", "checkpoints", "params", "probe")


def open_tree(run: object) -> tuple[xr.DataTree, Path | None]:
    """(DataTree of the run, its store path or None) from a path or a DataTree."""
    if isinstance(run, xr.DataTree):
        return run, None
    if isinstance(run, (str, os.PathLike)):
        path = Path(run)
        return open_run(path, analysis="omit"), path   # the training data; analyses are read on their own
    raise TypeError(f"run must be a path to a run store or an xarray.DataTree, got {type(run).__name__}")


def group(tree: xr.DataTree, name: str) -> xr.Dataset:
    """Child ``name`` of the run tree as a Dataset; StoreError if the store lacks it."""
    if name not in tree.children:
        raise StoreError(f"run has no {name!r} group (it has {sorted(tree.children)}); is it a dynamics run store?")
    return tree[name].to_dataset()


def run_identity(tree: xr.DataTree, path: Path | None) -> tuple[str, dict[str, Any], str, int]:
    """(config JSON, config dict, optimizer name, seed) from the root attributes.

    The optimizer and seed follow :func:`analysis.labels.run_identity`.
    """
    raw = tree.attrs.get("config", "{}")
    try:
        config = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError) as err:
        raise StoreError(f"the run's root attribute 'config' is not valid JSON ({err})") from None
    optimizer, seed = identity_from_config(config, path)
    return json.dumps(config, sort_keys=True), config, optimizer, seed


def store_order(tree: xr.DataTree, group_name: str, names: list[str]) -> list[str]:
    """``names`` in the order the writer created them (the root's ``committed`` variable list, i.e.
    model order), whatever order the reader listed them in; names it does not list keep their order."""
    try:
        listed = json.loads(tree.attrs["committed"])["variables"][group_name]
    except (KeyError, TypeError, ValueError):
        return list(names)
    rank = {name: i for i, name in enumerate(listed)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), names.index(name)))


def write_analysis_group(path: Path, dataset: xr.Dataset, token: dict[str, Any],
                         recorded: dict[str, Any] | None = None) -> bool:
    """Replace group ``analysis`` of the store at ``path`` by ``dataset``, computed from the store
    state ``token`` (:func:`analysis.freshness.source_token`); True when written. The group records
    ``recorded`` as its ``source`` (default ``token``; :func:`analysis.freshness.analysis_token` adds
    the options it was computed with).

    Nothing is written (False) when another process holds the store's lock (a live writer: the
    analysis stays in memory, the store is not touched), or when the store's token is no longer
    ``token`` (it changed while the analysis was computed). StoreReadOnlyError when the store cannot
    be written (nothing is tried without its lock); StoreIOError (path, errno) when a write fails,
    e.g. on a full disk (the store keeps a complete group, old or new, or none, as after a kill). Otherwise, under the lock: debris of
    earlier interrupted writes is removed; the group is written complete (with its own consolidated
    metadata and ``source`` = ``token``) into a staging folder beside the store; the root's
    consolidated metadata is rewritten without the group; the staging folder replaces ``analysis`` by
    renames; the root's consolidated metadata is rewritten with the new group. A process killed at any point leaves the old group, no group, or the new one —
    never a partial one — and root metadata that describes what is on disk or none.
    """
    try:
        lock = StoreLock(path).acquire()
    except StoreLockedError:
        return False
    staging = _aside(path, "new")
    try:
        return _write_locked(path, dataset, token, recorded, staging)
    except OSError as err:
        raise io_error(f"cannot write the analysis of store {path}", err) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        lock.release()


def _write_locked(path: Path, dataset: xr.Dataset, token: dict[str, Any], recorded: dict[str, Any] | None,
                  staging: Path) -> bool:
    """The part of :func:`write_analysis_group` under the store's lock."""
    _sweep(path)
    if source_token(path) != token:
        return False
    dataset = dataset.assign_attrs({SOURCE_ATTR: json.dumps(token if recorded is None else recorded,
                                                            sort_keys=True)})
    with quiet_zarr_warnings(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The data type .* does not have a Zarr V3 specification")
        dataset.to_zarr(str(staging), mode="w", consolidated=True, zarr_format=3, encoding=checksummed(dataset))
        rewrite_root(path, with_analysis=False)
        swap_into_place(staging, path / ANALYSIS_GROUP, _aside(path, "old"))
        rewrite_root(path, with_analysis=True)
    return True


def checksummed(dataset: xr.Dataset) -> dict[str, dict[str, Any]]:
    """zarr encoding of every variable of ``dataset``: zstd with its content checksum, as the store's
    own chunks, so that a corrupted chunk of a stored analysis is detected when read, never decoded
    into other numbers."""
    from zarr.codecs import ZstdCodec
    return {str(name): {"compressors": (ZstdCodec(level=1, checksum=True),)} for name in dataset.variables}


def rewrite_root(path: Path, with_analysis: bool) -> None:
    """Rewrite the root ``zarr.json`` of store ``path`` (one atomic replacement, the store's own commit
    record of :mod:`dynamics.store.root`) with consolidated metadata of the committed view of what is
    on disk, the ``analysis`` group left out unless ``with_analysis``. Called under the store's lock."""
    attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    committed = schema.parse_json_attr(attrs, "committed", path)
    nodes = {key: meta for key, meta in root_record.read_nodes(path).items()
             if with_analysis or key.split("/")[0] != ANALYSIS_GROUP}
    root_record.write_root(path, root_record.root_document(attrs, root_record.committed_view(nodes, committed)))


def _aside(path: Path, what: str) -> Path:
    """A hidden sibling of store ``path`` for a staged (``new``) or replaced (``old``) analysis group."""
    return path.parent / f".{path.name}.analysis-{what}-{os.getpid()}.tmp"


def _sweep(path: Path) -> None:
    """Remove staging folders of the store ``path`` left by killed analyses (called under its lock:
    only the lock holder stages)."""
    for debris in path.parent.glob(f".{path.name}.analysis-*.tmp"):
        shutil.rmtree(debris, ignore_errors=True)


def swap_into_place(staging: Path, target: Path, aside: Path) -> None:
    """Make the complete folder ``staging`` visible as ``target``: move an existing ``target`` to
    ``aside``, rename ``staging`` to ``target``, delete ``aside``. Concurrent swaps retry; the last
    one wins."""
    for _ in range(100):
        try:
            os.rename(target, aside)
        except FileNotFoundError:
            pass
        try:
            os.rename(staging, target)
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(aside, ignore_errors=True)
            time.sleep(0.01)
            continue
        shutil.rmtree(aside, ignore_errors=True)
        return
    raise StoreError(f"could not replace {target}: other processes keep replacing it")


def write_dataset(path: Path, dataset: xr.Dataset) -> None:
    """Write ``dataset`` as a whole zarr v3 store at ``path`` (consolidated), replacing it in one
    step: written beside it in a hidden folder, then renamed into place (:func:`swap_into_place`).
    StoreReadOnlyError when its folder cannot be written, StoreIOError (path, errno) when a write
    fails (a full disk): an earlier store at ``path`` is kept either way."""
    try:
        _write_dataset(path, dataset)
    except OSError as err:
        raise io_error(f"cannot write {path}", err) from err


def write_derived(path: Path, dataset: xr.Dataset, *, required: bool) -> bool:
    """:func:`write_dataset` of derived data (an experiment's combined analysis); True when written.
    Where the folder cannot be written (StoreReadOnlyError) and the place was not asked for
    (``required`` false: the default place beside read-only stores), a NotWrittenWarning says so and
    the caller keeps the result in memory."""
    try:
        write_dataset(path, dataset)
    except StoreReadOnlyError as err:
        if required:
            raise
        warnings.warn(f"{path} cannot be written ({err.reason}): the result is kept in memory (out=PATH, "
                      f"`dynamics analyze DIR --out PATH`, writes it elsewhere)", NotWrittenWarning, stacklevel=3)
        return False
    return True


def _write_dataset(path: Path, dataset: xr.Dataset) -> None:
    for debris in path.parent.glob(f".{path.name}.*.tmp"):  # left by killed writers of this path
        try:
            pid = int(debris.name.rsplit(".", 2)[-2].rsplit("-", 1)[-1])
        except ValueError:
            continue
        if not _pid_alive(pid):
            shutil.rmtree(debris, ignore_errors=True)
    staging = path.parent / f".{path.name}.new-{os.getpid()}.tmp"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            warnings.filterwarnings("ignore", message=r"The data type .* does not have a Zarr V3 specification")
            dataset.to_zarr(str(staging), mode="w", consolidated=True, zarr_format=3, encoding=checksummed(dataset))
        swap_into_place(staging, path, path.parent / f".{path.name}.old-{os.getpid()}.tmp")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_dataset(path: Path, group: str | None = None) -> xr.Dataset | None:
    """The Dataset of zarr ``path`` (``group`` in it), loaded, from unconsolidated metadata; None when
    absent. Retried when the folder is replaced while it is read (:func:`swap_into_place`), so a
    reader never mixes the metadata of one version with the chunks of another."""
    folder = path / group if group else path
    for _ in range(20):
        try:
            before = os.stat(folder).st_ino
        except FileNotFoundError:
            return None
        try:
            with quiet_zarr_warnings(), xr.open_zarr(str(path), group=group, consolidated=False,
                                                     zarr_format=3) as ds:
                loaded = ds.load()
        except (OSError, ValueError, KeyError):
            if _inode(folder) == before:
                raise
            continue
        if _inode(folder) == before:
            return loaded
    raise StoreError(f"{folder} keeps being replaced while it is read; try again")


def _inode(folder: Path) -> int | None:
    try:
        return os.stat(folder).st_ino
    except FileNotFoundError:
        return None


def read_analysis_group(path: Path) -> xr.Dataset | None:
    """The stored ``analysis`` group of the store at ``path`` (loaded), or None when it has none."""
    return read_dataset(path, ANALYSIS_GROUP)


def string_coord(values: list[str]) -> np.ndarray:
    """Labels as a numpy unicode array (stored by zarr v3 as its string type)."""
    return np.asarray(values, dtype=str) if values else np.asarray([], dtype="<U1")


def fresh_analysis(store: Path, *, centered_alignment: bool = False) -> tuple[xr.Dataset | None, str]:
    """(the stored analysis of ``store`` if it was computed from the store's current data with the
    requested kernel alignment, else None; why not: "no analysis group" or the staleness reason of
    :func:`analysis.freshness.staleness`)."""
    current = analysis_token(source_token(store), centered_alignment=centered_alignment)
    try:
        stored = read_analysis_group(store)
    except Exception as err:   # damaged (a truncated document, a corrupted chunk): computed and written again
        return None, f"its analysis group cannot be read ({type(err).__name__}: {err})"
    if stored is None:
        return None, "no analysis group"
    why = staleness(recorded_source(stored.attrs), current)
    return (stored, "") if why is None else (None, f"its analysis group is out of date: {why}")


def with_cf_attrs(dataset: xr.Dataset) -> xr.Dataset:
    """``dataset`` with the registry's ``long_name``, ``units`` and ``description``
    (:func:`dynamics.store.attributes.cf_attrs`, group "analysis") on every variable and coordinate."""
    for name, variable in dataset.variables.items():
        variable.attrs.update(cf_attrs(ANALYSIS_GROUP, str(name)))
    return dataset
