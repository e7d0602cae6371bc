"""``dynamics sweep``: every run of a sweep file as a dask.distributed task, resumable and idempotent.

Invocation after invocation the same command does only what is missing (DESIGN §4 "Command line"):
- runs whose store is "complete" are skipped (a finished sweep re-runs in seconds: no cluster starts);
- runs with a store that is not complete (interrupted, killed, failed) continue from their last
  resume state, bit-exactly (:mod:`trainers.sweep_worker`, :mod:`trainers.loop`);
- a run that fails is recorded "failed" with its error in ``DIR/sweep.json`` and the other runs go
  on. It is tried again only when the failure can go away on a retry (:func:`trainers.sweep_worker.retryable`:
  a lost worker, a store locked by another process, a file-system error, memory), until it has failed
  ``1 + retries`` times (counted over invocations). A deterministic failure — training is
  deterministic, so a ConfigError of its grid point, a divergence, a refused resume, any error of the
  training code — would fail again: it is recorded with ``"retry": false`` and not started again,
  in this invocation or a later one (delete its store, ``DIR/runs/NAME.zarr``, to train it anew).
  ``attempts`` counts the times the run was started;
- a worker process that dies mid-run: its task comes back to the driver as ``KilledWorker`` (the
  local cluster's scheduler does not reschedule it itself: ``allowed-failures`` 0), which counts as a
  started attempt that failed retryably; the next attempt resumes the store bit-exactly;
- SIGINT / SIGTERM / SIGHUP: the driver creates the stop file, each running task saves its resume
  state at its next step boundary and marks its store "interrupted" (waited for up to :data:`GRACE`
  seconds; a task that does not finish in time still leaves a store that resumes from its last
  checkpoint), the manifest is written, the folder's lock released, and
  :class:`trainers.signals.Stopped` is raised (the command line exits with 128 + the signal number:
  130, 143, 129);
- a sweep file whose config or grid differs from the folder's manifest → :class:`SweepConflict`
  unless ``force``; with ``force`` the manifest is rewritten and runs whose config changed are
  trained again from scratch (their old stores are replaced).
Only one driver works on a folder at a time (lock file ``DIR/.lock``).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from dynamics.cluster import check_cluster_options
from dynamics.errors import DynamicsError, StoreLockedError
from dynamics.visible import visible
from dynamics.store.lock import StoreLock
from dynamics.sweep_manifest import (RUNS_FOLDER, SCHEMA, read_manifest, store_status, write_manifest)
from trainers.signals import STOP_SIGNALS, Stopped
from trainers.sweep_driver import wanted
from trainers.sweep_plan import SweepPlan, flatten, plan_sweep

GRACE = 30.0
STOP_FILE = ".sweep-stop"


class SweepConflict(DynamicsError):
    """The sweep folder's manifest was written for another sweep config."""


def differences(old: dict, plan: SweepPlan, limit: int = 3) -> list[str]:
    """Dotted keys (config, or ``sweep.<key>``) in which manifest ``old`` and ``plan`` differ."""
    a = {**flatten(old.get("config", {})), **{f"sweep.{k}": v for k, v in old.get("sweep", {}).items()}}
    b = {**flatten(plan.base), **{f"sweep.{k}": v for k, v in plan.grid.items()}}
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    if not keys and list(old.get("sweep", {})) != list(plan.grid):
        keys = ["the order of the [sweep] keys"]
    return keys[:limit] + (["..."] if len(keys) > limit else [])


def build_manifest(plan: SweepPlan, folder: Path, old: dict | None, retry_failed: bool = False) -> dict:
    """The manifest of ``plan`` with each run's status read from its store (and attempts, failures and
    whether a failure may be retried carried over from ``old`` for runs whose config did not change; a
    run that failed without a store stays "failed"). Stores of runs whose config changed are removed
    (this happens under ``force`` only). ``retry_failed``: failed runs get a new budget of attempts."""
    previous = (old or {}).get("runs", {})
    runs = {}
    for name, spec in plan.runs.items():
        store = folder / RUNS_FOLDER / f"{name}.zarr"
        before = previous.get(name)
        if before is not None and before.get("digest") != spec.digest and store.exists():
            shutil.rmtree(store)
        same = before is not None and before.get("digest") == spec.digest
        runs[name] = {"optimizer": spec.optimizer, "store": f"{RUNS_FOLDER}/{name}.zarr", "digest": spec.digest,
                      "status": store_status(store) or "pending", "attempts": before["attempts"] if same else 0,
                      "failures": before.get("failures", 0) if same else 0,
                      "error": before.get("error") if same else None, "config": spec.config}
        if same:
            runs[name].update({k: before[k] for k in ("seconds", "updated", "retry") if k in before})
            if before.get("status") == "failed" and runs[name]["status"] == "pending":
                runs[name]["status"] = "failed"   # it failed before its store was created
        if runs[name]["status"] == "running":  # its writer was killed: resumable
            runs[name]["status"] = "interrupted"
        if retry_failed and runs[name]["status"] == "failed":
            runs[name].update(failures=0, retry=True)
    return {"schema": SCHEMA, "digest": plan.digest, "config": plan.base, "sweep": plan.grid,
            "optimizers": plan.optimizers, "points": plan.points, "runs": runs}


@contextlib.contextmanager
def stop_signals_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGINT, SIGTERM and SIGHUP raise :class:`trainers.signals.Stopped` (a
    KeyboardInterrupt carrying the signal) in the main thread; the previous handlers are restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    lock = StoreLock(folder)
    try:
        lock.acquire()
    except StoreLockedError as error:
        raise DynamicsError(f"sweep folder {folder} is in use by another `dynamics sweep`: {error}") from None
    try:
        yield
    finally:
        lock.release()


def run_sweep(config_path: str | Path, out: str | Path, *, workers: int | None = None, scheduler: str | None = None,
              retries: int = 2, force: bool = False, quiet: bool = False,
              overrides: Mapping[str, object] | None = None, retry_failed: bool = False) -> dict:
    """Train every missing run of sweep file ``config_path`` into ``out`` (see the module docstring);
    ``overrides`` (dotted keys → values, ``--set``) apply on top of the file's keys at every point;
    ``retry_failed`` starts the failed runs again, deterministic failures included (after their cause
    was fixed: a data file, the code), with a new budget of ``1 + retries`` attempts.

    Returns the final manifest (see :func:`failed_runs` for the runs that failed). Raises ConfigError
    for a bad sweep file, SweepConflict for a folder of another sweep (unless ``force``), DynamicsError
    for an unreachable scheduler, and KeyboardInterrupt (:class:`trainers.signals.Stopped` for
    SIGTERM/SIGHUP) after a stop signal, every run left resumable.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise DynamicsError(f"--retries must be an integer >= 0, got {retries!r}")
    check_cluster_options(workers, scheduler)
    plan = plan_sweep(config_path, overrides)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise DynamicsError(f"--out {folder} exists and is not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    with stop_signals_as_interrupt(), folder_lock(folder):
        old = read_manifest(folder)
        if old is not None and old["digest"] != plan.digest and not force:
            raise SweepConflict(f"{folder / 'sweep.json'} belongs to a sweep with another config (differs in "
                                f"{', '.join(differences(old, plan))}); use another --out, or --force to "
                                f"retrain the runs whose config changed")
        manifest = build_manifest(plan, folder, old, retry_failed)
        write_manifest(folder, manifest)
        todo = [name for name, run in manifest["runs"].items() if wanted(run, retries)]
        if todo:
            (folder / RUNS_FOLDER).mkdir(exist_ok=True)
            from trainers.sweep_driver import drive  # noqa: PLC0415 (imports distributed)
            stop = folder / STOP_FILE
            stop.unlink(missing_ok=True)
            try:
                drive(manifest, folder, todo, plan, workers=workers, scheduler=scheduler, retries=retries,
                      quiet=quiet, stop=stop, grace=GRACE)
            finally:
                stop.unlink(missing_ok=True)
                write_manifest(folder, manifest)
    return manifest


def summary(manifest: dict) -> str:
    """One line: how many runs are in each status."""
    counts: dict[str, int] = {}
    for run in manifest["runs"].values():
        counts[run["status"]] = counts.get(run["status"], 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{len(manifest['runs'])} runs ({len(manifest['points'])} grid points): {parts}"


def failed_runs(manifest: dict) -> list[str]:
    """The names of the runs recorded "failed"."""
    return [name for name, run in manifest["runs"].items() if run["status"] == "failed"]


def print_summary(manifest: dict, quiet: bool) -> None:
    """The summary line and one line per failed run (its error, whether it is tried again) on stderr;
    nothing with ``quiet``."""
    if quiet:
        return
    print(visible(summary(manifest)), file=sys.stderr)
    for name in failed_runs(manifest):
        run = manifest["runs"][name]
        again = "" if run.get("retry", True) else " (deterministic: not retried)"
        print(visible(f"  failed {name} after {run.get('attempts', 0)} attempt(s){again}: {run['error']}"),
              file=sys.stderr)
