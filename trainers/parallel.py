"""The runs of ``dynamics run`` (every optimiser × seed of one config) trained side by side in
separate processes, on the sweep's machinery (:mod:`dynamics.cluster`, :mod:`trainers.sweep_driver`).

``train.threads`` (default 1) is each run's thread count, part of its config (:mod:`trainers.runtime`);
:func:`trainers.runtime.concurrent_runs` of them train at once: ``cores // threads`` single-process
workers of a local dask cluster whose processes are forked from a forkserver that has imported torch
and the trainer once. Each run computes exactly what it would compute alone in one process with the
same thread count, so the stores are bit-identical to a sequential ``dynamics run`` (tested in
``tests/trainers/test_parallel.py``); where one run at a time fits (one run, or threads ≥ cores) no
cluster is started and the runs train here, one after the other.

The data set is loaded once, here, and sent to the workers (generating MNIST-1D takes seconds of
CPU); the runs go to the workers longest first (:func:`trainers.sweep_driver.expected_cost`). Each
worker prints its run's progress lines (:mod:`trainers.progress`, "lines": bars of several
processes would overwrite each other). Ctrl-C or SIGTERM: the driver creates a stop file; every
running run stops at its next step, saves its resume state and marks its store "interrupted"
(waited for up to :data:`GRACE` seconds), then KeyboardInterrupt is raised (``dynamics run``
exits 130; ``--resume`` continues).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dynamics.errors import DynamicsError

GRACE = 30.0
STOP_FILE = ".run-stop"


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment: optimiser name, seed and the store it trains into."""

    optimizer: str
    seed: int
    path: Path

    @property
    def label(self) -> str:
        return f"{self.optimizer} seed {self.seed}"


@dataclass(frozen=True)
class Outcome:
    """How a run ended: "complete", "failed" (its store marked so; ``error`` says why) or "interrupted"."""

    run: RunSpec
    status: str
    error: str | None = None
    warnings: tuple[tuple[str, str], ...] = ()   # (category name, message) raised by ``after``


def train_task(config: dict, run: RunSpec, stop_file: str, *, progress: bool | str, data: object = None,
               after: Callable[[Path], object] | None = None) -> dict:
    """What one worker does: train ``run`` of ``config`` (a validated config as a dict) into its store,
    resuming it when it exists (the driver has checked that it may: ``--resume``, or removed it for
    ``--overwrite``), so a task that a killed worker's replacement takes over continues the run; then
    ``after(store path)`` when given (``dynamics run`` analyses the store there, in the same worker).

    Returns ``{"status": "complete" | "failed" | "interrupted", "error": str | None, "warnings":
    [(category name, message), ...]}`` (the warnings of ``after``, for the driver to show once for
    all runs). The stop file interrupts the run at its next step."""
    from dynamics.cluster import single_threaded

    single_threaded()   # the process's BLAS/OpenMP pools; the run itself uses train.threads
    from trainers.loop import train

    stop = Path(stop_file)

    def check_stop(step: int) -> None:
        if stop.exists():
            raise KeyboardInterrupt

    result = {"status": "complete", "error": None, "warnings": []}
    try:
        train(config, run.optimizer, run.path, seed=run.seed, resume=True, progress=progress,
              callback=check_stop, data=data, label=run.label)
    except KeyboardInterrupt:
        return {**result, "status": "interrupted"}
    except Exception as error:   # returned: the driver decides (a failed run does not stop the others)
        result.update(status="failed", error=f"{type(error).__name__}: {error}")
    result["warnings"] = run_after(after, run.path)
    return result


def run_after(after: Callable[[Path], object] | None, path: Path) -> list[tuple[str, str]]:
    """Call ``after(path)`` (when given and the store exists); the distinct warnings it raised, as
    (category name, message), recorded instead of shown."""
    if after is None or not path.exists():
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        after(path)
    return list(dict.fromkeys((w.category.__name__, str(w.message)) for w in caught))


def _outcome(run: RunSpec, result: dict) -> Outcome:
    """The run's Outcome; DynamicsError when it failed without a store marked "failed" (nothing was
    trained: a config that does not fit in memory, a complete store of another config)."""
    if result["status"] == "failed" and not failed_store(run.path):
        raise DynamicsError(f"{run.path}: {result['error']}")
    return Outcome(run, result["status"], result["error"], tuple(result.get("warnings", ())))


def failed_store(path: Path) -> bool:
    """Whether ``path`` is a run store marked "failed"."""
    from dynamics.store import check_store

    try:
        return check_store(path).get("status") == "failed"
    except DynamicsError:
        return False


def train_runs(config, runs: Sequence[RunSpec], *, data: object, overwrite: bool, progress: bool, workers: int,
               after: Callable[[Path], object] | None = None,
               on_done: Callable[[Outcome], None] = lambda outcome: None) -> list[Outcome]:
    """Train ``runs`` of ``config`` (an :class:`~trainers.config.ExperimentConfig`), ``workers`` at a time.

    Existing stores are continued (the caller checked ``--resume``), or first removed when
    ``overwrite``. ``workers`` = 1 trains the runs here one after the other; more starts a local
    cluster of that many single-process workers (see the module docstring). ``after(store path)`` runs
    after each run, in the same process (``dynamics run`` analyses the store there). ``on_done(outcome)``
    is called here as each run ends. Returns the outcomes in the order of ``runs``. A run that fails
    while training (its store marked "failed") is an Outcome and the others go on; any other error is
    raised (here, or as DynamicsError naming the run from a worker). KeyboardInterrupt (Ctrl-C, or
    SIGTERM on the cluster) after every running run saved its state.
    """
    from trainers.loop import remove_store, train

    if overwrite:
        for run in runs:
            if run.path.exists():
                remove_store(run.path)
    if workers == 1:
        outcomes = []
        for run in runs:
            status, error = "complete", None
            try:   # called directly, so that Ctrl-C / SIGTERM keep their own exit status
                train(config, run.optimizer, run.path, seed=run.seed, resume=True, progress=progress, data=data,
                      label=run.label)
            except Exception as failure:
                if not failed_store(run.path):
                    raise
                status, error = "failed", f"{type(failure).__name__}: {failure}"
            outcomes.append(Outcome(run, status, error, tuple(run_after(after, run.path))))
            on_done(outcomes[-1])
        return outcomes
    stop = Path(runs[0].path).parent / STOP_FILE
    stop.unlink(missing_ok=True)
    try:
        return _train_on_cluster(config.to_dict(), runs, stop, data=data, mode="lines" if progress else "off",
                                 workers=workers, after=after, on_done=on_done)
    finally:
        stop.unlink(missing_ok=True)


def _train_on_cluster(config: dict, runs: Sequence[RunSpec], stop: Path, *, data: object, mode: str,
                      workers: int, after: Callable[[Path], object] | None,
                      on_done: Callable[[Outcome], None]) -> list[Outcome]:
    from distributed import as_completed, wait

    from dynamics.cluster import open_client
    from trainers.sweep_driver import expected_cost
    from trainers.sweep_worker import worker_preload

    # longest first (Graham 1969): the last runs to finish are short ones
    cost = {run: expected_cost({**config, "optimizers": {run.optimizer: _options(config, run.optimizer)}})
            for run in runs}
    order = sorted(runs, key=lambda run: -cost[run])
    outcomes: dict[RunSpec, Outcome] = {}
    with stop_signals_raise(), open_client(workers=workers, preload=worker_preload([config["data"]["name"]])) \
            as client:
        shared = client.scatter(data, broadcast=True) if data is not None else None
        futures = {client.submit(train_task, config, run, str(stop), progress=mode, data=shared, after=after,
                                 key=f"run-{run.optimizer}-{run.seed}-{uuid.uuid4().hex[:8]}", pure=False,
                                 priority=len(order) - i): run for i, run in enumerate(order)}
        try:
            for future in as_completed(list(futures)):
                run = futures[future]
                outcomes[run] = _outcome(run, _result(future))
                if outcomes[run].status == "interrupted":
                    raise KeyboardInterrupt
                on_done(outcomes[run])
        except KeyboardInterrupt:
            stop.touch()
            if mode != "off":
                print("dynamics run: interrupted; letting the running runs save their state ...", file=sys.stderr)
            wait([f for f, run in futures.items() if run not in outcomes], timeout=GRACE)
            raise
    return [outcomes[run] for run in runs]


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Inside the block SIGTERM and SIGHUP raise :class:`trainers.signals.Stopped` in the main thread,
    as Ctrl-C raises KeyboardInterrupt, so the driver stops the runs and exits with 128 + the signal
    number (143, 129) as a run trained in one process does. Main thread only; handlers restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from trainers.signals import Stopped

    def handler(signum, frame):
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _options(config: dict, optimizer: str) -> dict:
    """The options table of ``optimizer`` (a name of [optimizers] or a kind) for cost estimates."""
    return config["optimizers"].get(optimizer) or {"kind": optimizer}


def _result(future: object) -> dict:
    """A task's result; an error of the task machinery (a killed worker) as a failed run."""
    try:
        return future.result()
    except Exception as error:
        return {"status": "failed", "error": f"{type(error).__name__}: {error}"}
