"""The client side of a sweep: submit one task per run, retry failures, keep the manifest current,
print progress from the start (a line per run started, progressing and ended), stop cleanly on
KeyboardInterrupt (see :mod:`trainers.sweep`)."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from dynamics.cluster import available_cores, dashboard_link, open_client
from dynamics.sweep_manifest import write_manifest
from trainers.optimizer_options import GN_KINDS
from trainers.sweep_plan import SweepPlan
from trainers.sweep_worker import train_run, worker_preload

# an exact GN step costs about twice a first-order step on the benchmarks' models
# (benchmarks/gn_step.py: 1.75–3.8x Adam; benchmarks/sweep.py's digits runs: 2x)
GN_STEP_COST = 2.0


#: Extra settings of the local cluster's scheduler: a task whose worker dies comes back to the driver
#: (KilledWorker) instead of being rescheduled by the scheduler, so that every start is counted.
SCHEDULER_SETTINGS = {"distributed.scheduler.allowed-failures": 0}


def wanted(run: dict, retries: int) -> bool:
    """Whether an invocation with ``retries`` trains ``run``: not complete; and if it failed, only a
    failure that can go away on a retry (``retry`` true: a lost worker, a locked store, a file-system
    error), fewer than ``1 + retries`` times. A deterministic failure is not started again."""
    if run["status"] == "complete":
        return False
    if run["status"] != "failed":
        return True
    return bool(run.get("retry", True)) and run.get("failures", 0) <= retries


def expected_cost(config: dict) -> float:
    """A run's relative cost, for ordering only: its training length (``train.steps``, else
    ``train.epochs``) × :data:`GN_STEP_COST` when one of its optimisers is an exact GN kind."""
    length = config["train"]["steps"] or config["train"]["epochs"]
    gn = any(options.get("kind") in GN_KINDS for options in config["optimizers"].values())
    return length * (GN_STEP_COST if gn else 1.0)


def longest_first(todo: list[str], plan: SweepPlan) -> list[str]:
    """``todo`` by decreasing :func:`expected_cost`, ties in plan order: longest processing time first
    (Graham 1969), so that the last runs to finish are short ones and no worker idles long at the end
    while another finishes a long run."""
    return sorted(todo, key=lambda name: -expected_cost(plan.runs[name].config))


def progress(quiet: bool):
    """The driver's progress lines on stderr ("dynamics sweep: ..."), printed at once; nothing when ``quiet``."""
    def say(text: str) -> None:
        if not quiet:
            print(f"dynamics sweep: {text}", file=sys.stderr, flush=True)
    return say


def drive(manifest: dict, folder: Path, todo: list[str], plan: SweepPlan, *, workers: int | None,
          scheduler: str | None, retries: int, quiet: bool, stop: Path, grace: float) -> None:
    """Run the runs ``todo`` of ``manifest`` on a dask cluster, updating ``manifest`` in place (and on
    disk after every result). Progress: a line when the sweep starts (before the cluster does), the
    workers' progress lines of every run (:mod:`trainers.progress`, named by the run), and a line as
    each run ends; none when ``quiet``."""
    from distributed import as_completed, wait

    import dask

    say = progress(quiet)
    total = len(manifest["runs"])
    finished = sum(run["status"] == "complete" for run in manifest["runs"].values())
    where = f"the cluster at {scheduler}" if scheduler else f"{workers or available_cores()} local worker process(es)"
    say(f"{len(todo)} of {total} runs to train ({finished} already complete) on {where}")
    preload = worker_preload(plan.runs[name].config["data"]["name"] for name in todo)
    with dask.config.set(SCHEDULER_SETTINGS), \
            open_client(workers=workers, scheduler=scheduler, preload=preload) as client:
        link = dashboard_link(client)
        if link:
            say(f"dask dashboard: {link}")
        names: dict[object, str] = {}
        order = longest_first(todo, plan)
        priority = {name: len(order) - i for i, name in enumerate(order)}  # dask: higher runs first

        def submit(name: str) -> object:
            run, spec = manifest["runs"][name], plan.runs[name]
            run["status"] = "running"
            future = client.submit(train_run, spec.config, spec.optimizer, str(folder / run["store"]), str(stop),
                                   progress="off" if quiet else "lines",
                                   key=f"sweep-train-{name}-{uuid.uuid4().hex[:8]}", pure=False,
                                   priority=priority[name])
            names[future] = name
            return future

        futures = as_completed([submit(name) for name in order])
        write_manifest(folder, manifest)
        try:
            for future in futures:
                name = names.pop(future)
                result = outcome(future)
                record(manifest["runs"][name], result)
                if result["status"] == "failed" and wanted(manifest["runs"][name], retries) and not stop.exists():
                    say(f"{name} failed ({result['error']}); trying it again")
                    futures.add(submit(name))
                else:
                    finished += 1
                    say(f"{name} {result['status']} ({finished} of {total} runs done)")
                write_manifest(folder, manifest)
        except KeyboardInterrupt:
            stop.touch()
            say("interrupted: letting running runs save their state ...")
            outstanding = list(names)
            wait(outstanding, timeout=grace)
            for future in outstanding:
                run = manifest["runs"][names[future]]
                if future.done():
                    record(run, outcome(future))
                else:
                    future.cancel()
                    run["status"] = "interrupted"
            write_manifest(folder, manifest)
            raise


def outcome(future: object) -> dict:
    """The task's result dict; an exception of the task machinery (KilledWorker: its worker died;
    CancelledError...) as a started attempt that failed and may succeed on a retry."""
    try:
        return future.result()
    except Exception as error:
        return {"status": "failed", "trained": True, "retry": True, "error": f"{type(error).__name__}: {error}",
                "seconds": float("nan")}


def record(run: dict, result: dict) -> None:
    """Copy a task's result into the run's manifest entry: ``attempts`` counts the starts (a result
    that trained, or whose worker died), ``failures`` the failed results, ``retry`` whether the last
    failure can go away on a retry."""
    run["status"] = result["status"]
    run["attempts"] = run.get("attempts", 0) + bool(result.get("trained"))
    run["failures"] = run.get("failures", 0) + (result["status"] == "failed")
    run["error"] = result.get("error")
    if result["status"] == "failed":
        run["retry"] = bool(result.get("retry", True))
    else:
        run.pop("retry", None)
    if result["status"] == "complete":
        run["error"] = None
    if result.get("seconds") is not None and result["status"] == "complete" and result.get("trained"):
        run["seconds"] = round(float(result["seconds"]), 3)
    run["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
