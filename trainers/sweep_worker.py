"""What one dask task of a sweep does: train (or finish) one run into its store.

A task always trains with ``resume=True``: a missing store starts fresh, a complete one is left alone,
an interrupted or killed one continues bit-exactly from the resume state of its last checkpoint (see
:mod:`trainers.loop`). The lock of a store whose writer was killed (a worker process that died) is
taken over by the next writer on the same host; while the dead process has not been reaped yet it
still counts as alive, so a locked store is retried for up to ``lock_wait`` seconds.

The task stops at the next step boundary — saving the resume state, marking the store
"interrupted" — once the *stop file* exists (the sweep driver creates it on SIGINT/SIGTERM; a file
works for workers on any host that sees the sweep folder).

Failures are returned, not raised, so that the driver counts attempts and records the error text:
the result is a JSON-able dict ``{"status": "complete" | "failed" | "interrupted", "trained": bool,
"retry": bool, "error": str | None, "seconds": float}``; ``trained``: the run was started (a task
that found its store complete, or could not take its lock, did not start it); ``retry``: the failure
can go away on a retry (:func:`retryable`).

:func:`worker_preload` names the modules a task imports (torch, ``torch._dynamo`` — imported by the
first ``torch.optim.Optimizer`` —, the trainer, the data sets' readers): a local cluster's worker
processes start with them imported (:func:`dynamics.cluster.open_client`), so no task pays for them.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

from dynamics.cluster import SWEEP_MODULES, single_threaded
from dynamics.errors import StoreIOError, StoreLockedError
from dynamics.sweep_manifest import store_status

LOCK_WAIT = 60.0


def worker_preload(data_names: Iterable[str]) -> list[str]:
    """Modules a task training data sets ``data_names`` imports: :data:`dynamics.cluster.SWEEP_MODULES`
    and the packages of those data sets' readers (:data:`trainers.data.READER_IMPORTS`)."""
    from trainers.data import READER_IMPORTS

    readers = [module for name in dict.fromkeys(data_names) for module in READER_IMPORTS.get(name, ())]
    return [*SWEEP_MODULES, *readers]


#: Failures caused by the environment, not by the run: they can go away on a retry. Training is
#: deterministic (a resumed run equals an uninterrupted one bit for bit), so any other error — a
#: ConfigError of the grid point, a divergence, a refused resume, an error of the training code —
#: recurs when the run is started again.
TRANSIENT = (OSError, MemoryError, StoreLockedError, StoreIOError)


def retryable(error: BaseException) -> bool:
    """Whether a run that failed with ``error`` may succeed when it is started again (:data:`TRANSIENT`)."""
    return isinstance(error, TRANSIENT)


def train_run(config: dict, optimizer: str, store: str, stop_file: str, *, lock_wait: float = LOCK_WAIT,
              progress: bool | str = False, data: object = None) -> dict:
    """Train run ``config`` / ``optimizer`` into ``store`` (resuming it); see the module docstring.

    The process's BLAS/OpenMP pools are single-threaded (:func:`dynamics.cluster.single_threaded`);
    the run computes with its config's ``train.threads`` torch threads (:func:`trainers.loop.train`).
    ``progress``: as :func:`trainers.loop.train` ("lines" where several runs train side by side);
    ``data``: the data set already loaded (:func:`trainers.setup.load_data`), None loads it.
    """
    start = time.perf_counter()
    single_threaded()
    from trainers.loop import train

    def result(status: str, trained: bool, error: BaseException | None = None) -> dict:
        return {"status": status, "trained": trained, "retry": error is not None and retryable(error),
                "error": None if error is None else f"{type(error).__name__}: {error}",
                "seconds": time.perf_counter() - start}

    if store_status(store) == "complete":
        return result("complete", False)
    stop = Path(stop_file)

    def check_stop(step: int) -> None:
        if stop.exists():
            raise KeyboardInterrupt

    deadline = time.monotonic() + lock_wait
    while True:
        if stop.exists():
            return result("interrupted", False)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="taking over the stale lock", category=RuntimeWarning)
                train(config, optimizer, store, resume=True, progress=progress, callback=check_stop, data=data,
                      label=Path(store).name.removesuffix(".zarr"))
        except StoreLockedError as error:
            if time.monotonic() > deadline:
                return result("failed", False, error)
            time.sleep(0.25)
            continue
        except KeyboardInterrupt:
            return result("interrupted", True)
        except Exception as error:  # recorded in the manifest; never stops the sweep
            return result("failed", True, error)
        return result("complete", True)


def worker_pid() -> int:
    """The worker process's id (tests kill workers by it)."""
    return os.getpid()
