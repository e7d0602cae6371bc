"""Benchmark: a sweep of 8 short digits runs on a dask LocalCluster against the same runs one after
another in one process — the parallel efficiency of ``dynamics sweep``.

    python benchmarks/sweep.py [--workers 2] [--steps 200 800] [--hidden 128] [--repeats 1] [--quick]

The 8 runs: GN and Adam × seeds 0–3 on the digits preset (RevMLP hidden ``--hidden``, batch 100,
``--steps`` steps, 6 checkpoints with the probe NTK and representations).

Both sides start from the same point, a fresh Python process, and are timed from launching it to its
exit (the parent's clock), so each includes its interpreter start and every import it needs:
- sequential: a process that imports torch and the trainer and runs
  ``trainers.sweep_worker.train_run`` for each run, one after another, single-threaded (the
  one-time imports and the data loading of the first run are paid once);
- parallel: a process that runs ``dynamics sweep FILE --out DIR --workers N --quiet`` (through
  ``dynamics.cli.main``) with ``--workers`` single-threaded worker processes: its own imports,
  planning and manifest, the cluster's start (scheduler, forkserver importing torch and the
  trainer, workers forked from it), the runs, and the teardown.
Parallel efficiency = T_sequential / (workers × T_parallel); 1 is perfect.

The breakdown shows where the time goes: the sequential child's import time and per-run times (the
first run includes its one-time work), the tasks' own wall times on the workers (from the manifest),
and the parallel side's *fixed cost* T_parallel − Σ task time / workers (the driver's imports,
cluster start-up, idle workers at the end, teardown). Both sides are run alternately, with the load
average printed before and after (the machine may be shared; load slows the 2-worker side more).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SWEEP = """preset = "digits"
name = "bench-sweep"
[data]
probe_size = 64
[model]
hidden = {hidden}
[train]
optimizers = ["gn", "adam"]
steps = {steps}
batch_size = 100
checkpoints = 6
[sweep]
"train.seed" = [0, 1, 2, 3]
"""


def sequential_child(path: Path, out: Path) -> dict:
    """In a fresh process: train every run of sweep file ``path`` one after another; the timings."""
    start = time.perf_counter()
    import torch

    torch.set_num_threads(1)   # the baseline is one core's work
    from trainers.sweep_plan import plan_sweep
    from trainers.sweep_worker import train_run

    imports = time.perf_counter() - start
    plan = plan_sweep(path)
    runs = {}
    for name, spec in plan.runs.items():
        result = train_run(spec.config, spec.optimizer, str(out / f"{name}.zarr"), str(out / "stop"))
        if result["status"] != "complete":
            raise RuntimeError(f"run {name} ended {result['status']}: {result['error']}")
        runs[name] = result["seconds"]
    return {"imports": imports, "runs": runs}


def parallel_child(path: Path, out: Path, workers: int) -> dict:
    """In a fresh process: ``dynamics sweep PATH --out OUT --workers N --quiet`` (the command line's own
    entry point, so its early forkserver start is included) on a LocalCluster; the tasks' timings."""
    from dynamics.cli import main
    from dynamics.sweep_manifest import read_manifest

    code = main(["sweep", str(path), "--out", str(out), "--workers", str(workers), "--quiet"])
    manifest = read_manifest(out)
    bad = [n for n, r in manifest["runs"].items() if r["status"] != "complete"]
    if code or bad:
        raise RuntimeError(f"dynamics sweep exited {code}; runs {bad} did not complete")
    return {"runs": {n: r["seconds"] for n, r in manifest["runs"].items()}}


def timed_child(side: str, path: Path, out: Path, workers: int) -> tuple[float, dict]:
    """Wall seconds of a fresh ``python benchmarks/sweep.py --child SIDE`` process, and its timings."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--sweep-file", str(path),
               "--out", str(out), "--workers", str(workers)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the {side} child failed:\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def measure(steps: int, hidden: int, workers: int, tmp: Path, repeat: int) -> dict:
    """One sequential and one parallel cold run of the sweep; the row of the table."""
    path = tmp / f"sweep-{steps}.toml"
    path.write_text(SWEEP.format(hidden=hidden, steps=steps))
    seq_out, par_out = tmp / f"seq{steps}-{repeat}", tmp / f"par{steps}-{repeat}"
    t_seq, seq = timed_child("sequential", path, seq_out, workers)
    t_par, par = timed_child("parallel", path, par_out, workers)
    shutil.rmtree(seq_out, ignore_errors=True)
    shutil.rmtree(par_out, ignore_errors=True)
    first = next(iter(seq["runs"]))
    same_kind = [s for n, s in seq["runs"].items() if n != first and n.split("_")[0] == first.split("_")[0]]
    tasks = sum(par["runs"].values())
    return {"steps": steps, "t_seq": t_seq, "t_par": t_par, "efficiency": t_seq / (workers * t_par),
            "seq_imports": seq["imports"], "seq_runs": sum(seq["runs"].values()),
            "first_extra": seq["runs"][first] - sum(same_kind) / max(len(same_kind), 1),
            "seq_fixed": t_seq - sum(seq["runs"].values()) + seq["runs"][first]
            - sum(same_kind) / max(len(same_kind), 1),
            "tasks": tasks, "par_fixed": t_par - tasks / workers,
            "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 800])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="40 steps, hidden 64 (a smoke run)")
    parser.add_argument("--child", choices=["sequential", "parallel"], help=argparse.SUPPRESS)
    parser.add_argument("--sweep-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "sequential":
        print(json.dumps(sequential_child(args.sweep_file, args.out)))
        return
    if args.child == "parallel":
        print(json.dumps(parallel_child(args.sweep_file, args.out, args.workers)))
        return
    if args.quick:
        args.steps, args.hidden = [40], 64
    print(f"load average before: {os.getloadavg()} on {os.cpu_count()} cores")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for steps in args.steps:
            for repeat in range(args.repeats):
                rows.append(measure(steps, args.hidden, args.workers, Path(tmp), repeat))
    print(f"load average after: {os.getloadavg()}")
    print(f"\n8 runs (gn, adam × 4 seeds), digits, hidden {args.hidden}; {args.workers} workers; both sides "
          f"timed from a fresh process to its exit\n")
    print("| steps | sequential (s) | LocalCluster (s) | speed-up | parallel efficiency | load (1 min) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['steps']} | {r['t_seq']:.1f} | {r['t_par']:.1f} | {r['t_seq'] / r['t_par']:.2f}x | "
              f"{100 * r['efficiency']:.0f} % | {r['load']:.1f} |")
    print("\nbreakdown (s): sequential = imports + Σ runs (+ interpreter start); the first run's extra over "
          "later runs of its optimiser is one-time work; parallel fixed cost = T_parallel − Σ tasks / workers")
    print("| steps | seq: imports | seq: Σ runs | seq: first run's extra | seq: one-time total | "
          "par: Σ task time on workers | par: fixed cost |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['steps']} | {r['seq_imports']:.1f} | {r['seq_runs']:.1f} | {r['first_extra']:.1f} | "
              f"{r['seq_fixed']:.1f} | {r['tasks']:.1f} | {r['par_fixed']:.1f} |")


if __name__ == "__main__":
    main()
