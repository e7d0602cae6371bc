"""A dask.distributed client for many independent runs: a local cluster of single-threaded worker
processes, or an existing cluster reached through its scheduler's address.

Each task of a sweep (training or analysing one run) is single-threaded: on a machine with C cores,
C worker processes with one thread each use every core without oversubscribing it. The thread pools
of OpenMP/MKL/OpenBLAS are sized when a library first starts them, so their variables are set in the
worker's environment before the process starts (``distributed`` also does so by default,
``distributed.nanny.pre-spawn-environ``) and :func:`single_threaded` sets torch's own pool from
inside each task (workers of an existing cluster were started by someone else).

Start-up cost of a local cluster. A worker process that is *spawned* (distributed's default) starts a
fresh interpreter and imports torch and the project on its first task — seconds of CPU per worker,
paid again by every replacement of a killed worker. :func:`open_client` therefore has the local
cluster's worker processes *forked* from multiprocessing's forkserver (``distributed.worker.
multiprocessing-method = "forkserver"``), a single-threaded server process that imports the modules
named by ``preload`` once; each worker is a fork of it with those modules already imported. The
forkserver is started (without waiting for it) before the scheduler, so its imports overlap the
scheduler's start-up; ``dynamics sweep`` starts it even earlier, before the driver's own imports of
the trainers (:func:`start_forkserver` with :data:`SWEEP_MODULES`), so the two import in parallel.
It is one per Python process (multiprocessing's singleton; it exits with that process): a second
sweep in the same process reuses it, with the preload of the first. It is launched with the thread
variables set to 1 (and ``PYTHONHASHSEED`` fixed, as distributed does for spawned workers), so the
forkserver's own imports start no thread pools; each task still calls :func:`single_threaded`. On
platforms without fork (Windows) workers are spawned as before.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator, Sequence

from dynamics.errors import DynamicsError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")
HASH_SEED = "6640"   # distributed's own fixed PYTHONHASHSEED for the worker processes it spawns
# what a sweep task imports (named, never imported here: this layer does not import trainers);
# the forkserver's preload for ``dynamics sweep`` (trainers.sweep_worker.worker_preload adds the data readers)
SWEEP_MODULES = ("torch", "torch._dynamo", "trainers.loop", "trainers.sweep_worker")


# A sweep task is one long single-threaded computation in a worker thread. distributed's periodic
# monitors take the GIL from it: the statistical profiler samples the task thread's stack every 10 ms,
# the event-loop tick runs every 20 ms, the system monitor every 0.5 s and the nanny's memory monitor
# every 0.1 s. On the local cluster they are off or slowed down (benchmarks/sweep.py, 8 runs of 800
# steps on 2 workers: Σ task time 40.3 s with the defaults, 35.9 s with these, against 35.7 s for the
# same runs one after another in one process). The dashboard's profile page stays empty; memory
# limits are still enforced, checked once a second.
QUIET_MONITORS = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s",
                  "distributed.admin.system-monitor.interval": "2s",
                  "distributed.worker.memory.monitor-interval": "1s"}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def single_threaded() -> None:
    """Limit torch (intra- and inter-op) and BLAS pools of the calling process to one thread."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    import torch
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # allowed only before the first inter-op work
        torch.set_num_interop_threads(1)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=1)


def check_cluster_options(workers: object, scheduler: object) -> None:
    """DynamicsError for a worker count that is not an int >= 1, a scheduler address that is not a
    string, or both given (an existing cluster has the workers it was started with)."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise DynamicsError(f"--workers must be an integer >= 1, got {workers!r}")
    if scheduler is not None and not isinstance(scheduler, str):
        raise DynamicsError(f"--scheduler must be an address such as tcp://host:8786, got {scheduler!r}")
    if scheduler is not None and workers is not None:
        raise DynamicsError("--workers applies to the local cluster only; an existing cluster (--scheduler) "
                            "has the workers it was started with")


@contextlib.contextmanager
def open_client(*, workers: int | None = None, scheduler: str | None = None,
                preload: Sequence[str] = ()) -> Iterator[object]:
    """A ``distributed.Client``: connected to ``scheduler`` ("tcp://HOST:PORT") when given, otherwise
    to a new ``LocalCluster`` of ``workers`` (default: one per available core) single-threaded worker
    processes, closed on exit. ``preload``: modules the local cluster's worker processes start with
    (imported once in the forkserver they are forked from; see the module docstring; names that
    cannot be imported are skipped); ignored for an existing cluster. The local scheduler hands each
    worker one task at a time (``worker-saturation`` 1.0: no task waits behind another on a busy
    worker while a worker is idle); its workers run with :data:`QUIET_MONITORS`. DynamicsError when
    the scheduler cannot be reached."""
    import dask
    from distributed import Client, LocalCluster

    check_cluster_options(workers, scheduler)
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as error:
            raise DynamicsError(f"cannot reach the dask scheduler at {scheduler!r}: {error}") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or available_cores()
    env = {name: "1" for name in THREAD_VARIABLES}
    method = "forkserver" if start_forkserver(preload) else "spawn"
    settings = {"distributed.worker.multiprocessing-method": method, "distributed.scheduler.worker-saturation": 1.0,
                **QUIET_MONITORS}
    # the nanny warns when it kills a worker it closes
    with dask.config.set(settings), quiet_logs("distributed", logging.ERROR):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               env=env, silence_logs=logging.ERROR)
        try:
            client = Client(cluster)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()


def start_forkserver(modules: Sequence[str]) -> bool:
    """Launch multiprocessing's forkserver, if this process has none yet, importing ``distributed``
    and ``modules``, with the thread variables at 1 and ``PYTHONHASHSEED`` at :data:`HASH_SEED` in
    its environment (this process's environment is restored afterwards). Returns at once — the server
    imports while the caller goes on; the first process it forks waits for the imports — True, or
    False where the platform has no forkserver. Imports neither distributed nor torch here."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    from multiprocessing import forkserver

    # distributed sets its own preload list on its first worker start; once the server runs, that is moot
    multiprocessing.get_context("forkserver").set_forkserver_preload(["distributed", *modules])
    env = {**{name: "1" for name in THREAD_VARIABLES}, "PYTHONHASHSEED": HASH_SEED}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    # started with SIGINT ignored, the server and the workers forked from it keep ignoring it (Python
    # installs its KeyboardInterrupt handler only where SIGINT is not ignored): a Ctrl-C on the terminal,
    # which reaches the whole process group, stops the driver, which stops the runs through its stop file
    # so each saves its state, instead of killing the workers mid-step
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        forkserver.ensure_running()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return True


@contextlib.contextmanager
def quiet_logs(name: str, level: int) -> Iterator[None]:
    """Raise logger ``name``'s level to ``level`` inside the block."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)


def dashboard_link(client: object) -> str | None:
    """The dashboard address of ``client``'s scheduler when it serves one (bokeh installed), else None."""
    try:
        services = client.scheduler_info().get("services", {})
    except Exception:  # a scheduler that went away: no dashboard to point at
        return None
    return client.dashboard_link if "dashboard" in services and _has_bokeh() else None


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True
