"""Benchmark: a sweep of 8 short digits runs on a dask LocalCluster against the same runs one after
another in one process — the parallel efficiency of ``dynamics sweep``.

    python benchmarks/sweep.py [--workers 2] [--steps 200] [--hidden 128] [--repeats 1] [--quick]

The 8 runs: GN and Adam × seeds 0–3 on the digits preset (RevMLP hidden ``--hidden``, batch 100,
``--steps`` steps, 6 checkpoints with the probe NTK and representations).
- sequential: ``trainers.sweep_worker.train_run`` for each run in this process, single-threaded
  (the baseline: the same work as one worker does, nothing in parallel);
- parallel: ``trainers.sweep.run_sweep`` with ``--workers`` single-threaded worker processes, wall
  time of the whole call (cluster start, worker start-up and data loading included).
Parallel efficiency = T_sequential / (workers × T_parallel); 1 is perfect. Both are measured in the
same run, alternating, with the load average printed before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

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


def sequential(path: Path, out: Path) -> float:
    """Seconds to train every run of sweep file ``path`` one after another in this process."""
    from trainers.sweep_plan import plan_sweep
    from trainers.sweep_worker import train_run

    plan = plan_sweep(path)
    start = time.perf_counter()
    for name, spec in plan.runs.items():
        result = train_run(spec.config, spec.optimizer, str(out / f"{name}.zarr"), str(out / "stop"))
        if result["status"] != "complete":
            raise RuntimeError(f"run {name} ended {result['status']}: {result['error']}")
    return time.perf_counter() - start


def parallel(path: Path, out: Path, workers: int) -> float:
    """Seconds of ``run_sweep`` (LocalCluster of ``workers`` processes) over sweep file ``path``."""
    from trainers.sweep import run_sweep

    start = time.perf_counter()
    manifest = run_sweep(path, out, workers=workers, quiet=True)
    seconds = time.perf_counter() - start
    bad = [n for n, r in manifest["runs"].items() if r["status"] != "complete"]
    if bad:
        raise RuntimeError(f"runs {bad} did not complete")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="40 steps, hidden 64 (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.hidden = 40, 64
    import torch

    torch.set_num_threads(1)   # the baseline is one core's work
    print(f"load average before: {os.getloadavg()} on {os.cpu_count()} cores")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.toml"
        path.write_text(SWEEP.format(hidden=args.hidden, steps=args.steps))
        for repeat in range(args.repeats):
            seq_out, par_out = Path(tmp) / f"seq{repeat}", Path(tmp) / f"par{repeat}"
            t_seq = sequential(path, seq_out)
            t_par = parallel(path, par_out, args.workers)
            rows.append((t_seq, t_par, t_seq / t_par, t_seq / (args.workers * t_par), os.getloadavg()[0]))
            shutil.rmtree(seq_out)
            shutil.rmtree(par_out)
    print(f"load average after: {os.getloadavg()}")
    print(f"\n8 runs (gn, adam × 4 seeds), digits, hidden {args.hidden}, {args.steps} steps; {args.workers} workers\n")
    print("| repeat | sequential (s) | LocalCluster (s) | speed-up | parallel efficiency | load (1 min) |")
    print("|---|---|---|---|---|---|")
    for i, (t_seq, t_par, speedup, efficiency, load) in enumerate(rows):
        print(f"| {i} | {t_seq:.1f} | {t_par:.1f} | {speedup:.2f}x | {100 * efficiency:.0f} % | {load:.1f} |")


if __name__ == "__main__":
    main()
