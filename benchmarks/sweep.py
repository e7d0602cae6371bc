"""Benchmark: a sweep of 8 short digits runs on a dask LocalCluster against the same runs one after
another in one process — the parallel efficiency of ``dynamics sweep``.

    python benchmarks/sweep.py [--workers 2] [--steps 200 800] [--hidden 128] [--repeats 3] [--quick]

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
- plain processes (the machine's ceiling for the same split of the work, without dask): N fresh
  processes started at once, each training its share of the runs one after another exactly as the
  sequential side does (shares balanced by the sweep's own expected cost,
  ``trainers.sweep_driver.expected_cost``, longest first), timed from launching them to the last exit.
  It shows what two processes on this machine can do at all: cores that run slower when both are
  busy, and one-time work (imports) that every process pays, cost it as much as the cluster.
Parallel efficiency = T_sequential / (workers × T_parallel); 1 is perfect. The machine is noisy (the
sequential side alone varies by ±7 % from one run to the next here), so each row is measured
``--repeats`` times, the three sides in turn, and the table shows the median of each column.

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
import statistics
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


def train_one_after_another(path: Path, out: Path, share: tuple[int, int] | None = None) -> dict:
    """In a fresh process, single-threaded: train the runs of sweep file ``path`` one after another
    (all of them, or share ``part`` of ``parts`` when ``share`` is given; see :func:`shares`); the
    import time and each run's seconds."""
    start = time.perf_counter()
    import torch

    torch.set_num_threads(1)   # one core's work
    from trainers.sweep_plan import plan_sweep
    from trainers.sweep_worker import train_run

    imports = time.perf_counter() - start
    plan = plan_sweep(path)
    names = list(plan.runs) if share is None else shares(plan, share[1])[share[0]]
    runs = {}
    for name in names:
        spec = plan.runs[name]
        result = train_run(spec.config, spec.optimizer, str(out / f"{name}.zarr"), str(out / "stop"))
        if result["status"] != "complete":
            raise RuntimeError(f"run {name} ended {result['status']}: {result['error']}")
        runs[name] = result["seconds"]
    return {"imports": imports, "runs": runs}


def shares(plan, parts: int) -> list[list[str]]:
    """The runs of ``plan`` split into ``parts`` lists of about equal expected cost: longest first, each
    to the share with the least expected cost so far (the static twin of the cluster's scheduling)."""
    from trainers.sweep_driver import expected_cost, longest_first

    out: list[list[str]] = [[] for _ in range(parts)]
    load = [0.0] * parts
    for name in longest_first(list(plan.runs), plan):
        i = load.index(min(load))
        out[i].append(name)
        load[i] += expected_cost(plan.runs[name].config)
    return out


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


def child_command(side: str, path: Path, out: Path, workers: int, part: int = 0) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", side, "--sweep-file", str(path),
            "--out", str(out), "--workers", str(workers), "--part", str(part)]


def timed_children(commands: list[list[str]]) -> tuple[float, list[dict]]:
    """Wall seconds from launching the fresh processes ``commands`` (all at once) to the last exit,
    and the timings each printed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    children = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for c in commands]
    outputs = [child.communicate() for child in children]
    seconds = time.perf_counter() - start
    for command, child, (_, stderr) in zip(commands, children, outputs):
        if child.returncode != 0:
            raise RuntimeError(f"the {command[3]} child failed:\n{stderr[-3000:]}")
    return seconds, [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]


def measure(steps: int, hidden: int, workers: int, tmp: Path, repeat: int) -> dict:
    """One sequential, one parallel and one plain-processes cold run of the sweep; a row of the table."""
    path = tmp / f"sweep-{steps}.toml"
    path.write_text(SWEEP.format(hidden=hidden, steps=steps))
    seq_out, par_out, plain_out = (tmp / f"{side}{steps}-{repeat}" for side in ("seq", "par", "plain"))
    t_seq, (seq,) = timed_children([child_command("sequential", path, seq_out, workers)])
    t_par, (par,) = timed_children([child_command("parallel", path, par_out, workers)])
    t_plain, _ = timed_children([child_command("share", path, plain_out, workers, part)
                                 for part in range(workers)])
    for out in (seq_out, par_out, plain_out):
        shutil.rmtree(out, ignore_errors=True)
    first = next(iter(seq["runs"]))
    same_kind = [s for n, s in seq["runs"].items() if n != first and n.split("_")[0] == first.split("_")[0]]
    tasks = sum(par["runs"].values())
    return {"steps": steps, "t_seq": t_seq, "t_par": t_par, "efficiency": t_seq / (workers * t_par),
            "t_plain": t_plain, "plain_efficiency": t_seq / (workers * t_plain),
            "seq_imports": seq["imports"], "seq_runs": sum(seq["runs"].values()),
            "first_extra": seq["runs"][first] - sum(same_kind) / max(len(same_kind), 1),
            "seq_fixed": t_seq - sum(seq["runs"].values()) + seq["runs"][first]
            - sum(same_kind) / max(len(same_kind), 1),
            "tasks": tasks, "par_fixed": t_par - tasks / workers,
            "load": os.getloadavg()[0]}


def median_row(rows: list[dict]) -> dict:
    """The column-wise median of the repeats of one row (and the efficiencies of every repeat)."""
    row = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    row["each"] = [(r["efficiency"], r["plain_efficiency"]) for r in rows]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 800])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="40 steps, hidden 64, one repeat (a smoke run)")
    parser.add_argument("--child", choices=["sequential", "parallel", "share"], help=argparse.SUPPRESS)
    parser.add_argument("--sweep-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    children = {"sequential": lambda: train_one_after_another(args.sweep_file, args.out),
                "parallel": lambda: parallel_child(args.sweep_file, args.out, args.workers),
                "share": lambda: train_one_after_another(args.sweep_file, args.out, (args.part, args.workers))}
    if args.child:
        print(json.dumps(children[args.child]()))
        return
    if args.quick:
        args.steps, args.hidden, args.repeats = [40], 64, 1
    print(f"load average before: {os.getloadavg()} on {os.cpu_count()} cores")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for steps in args.steps:
            rows.append(median_row([measure(steps, args.hidden, args.workers, Path(tmp), repeat)
                                    for repeat in range(args.repeats)]))
    print(f"load average after: {os.getloadavg()}")
    print(f"\n8 runs (gn, adam × 4 seeds), digits, hidden {args.hidden}; {args.workers} workers; every side "
          f"timed from launching fresh processes to their exit; median of {args.repeats} repeat(s)\n")
    print("| steps | sequential (s) | LocalCluster (s) | speed-up | parallel efficiency | "
          "plain processes (s) | their efficiency (ceiling) | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['steps']:.0f} | {r['t_seq']:.1f} | {r['t_par']:.1f} | {r['t_seq'] / r['t_par']:.2f}x | "
              f"{100 * r['efficiency']:.0f} % | {r['t_plain']:.1f} | {100 * r['plain_efficiency']:.0f} % | "
              f"{r['load']:.1f} |")
    for r in rows:
        each = ", ".join(f"{100 * a:.0f}/{100 * b:.0f}" for a, b in r["each"])
        print(f"  {r['steps']:.0f} steps, each repeat (LocalCluster/plain, %): {each}")
    print("\nbreakdown (s): sequential = imports + Σ runs (+ interpreter start); the first run's extra over "
          "later runs of its optimiser is one-time work; parallel fixed cost = T_parallel − Σ tasks / workers")
    print("| steps | seq: imports | seq: Σ runs | seq: first run's extra | seq: one-time total | "
          "par: Σ task time on workers | par: fixed cost |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['steps']:.0f} | {r['seq_imports']:.1f} | {r['seq_runs']:.1f} | {r['first_extra']:.1f} | "
              f"{r['seq_fixed']:.1f} | {r['tasks']:.1f} | {r['par_fixed']:.1f} |")


if __name__ == "__main__":
    main()
