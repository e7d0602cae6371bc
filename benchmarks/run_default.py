"""Benchmark: the whole default ``dynamics run`` (``make run``: 9 runs, analysis, report), its runs side
by side in processes against the same command one run at a time, in the same invocation.

    python benchmarks/run_default.py [--quick] [--repeats 1] [--out DIR]

Each side is a fresh ``dynamics run --quiet`` process (its interpreter start and imports included):
``--workers 1`` (every run in the driver, one after another) and the default (``cores //
train.threads`` worker processes). Printed per side: wall seconds, the CPU seconds of the whole
process tree (driver, forkserver, workers: sampled with psutil every 0.1 s, the last reading of
each process kept, so it undercounts a process by at most its last 0.1 s), the CPU utilisation
(CPU / wall, in cores), and the wall ratio of the default to ``--workers 1`` with the load average
before and after. ``--quick`` trains 2 epochs instead of 20. The stores of both sides are compared
bit for bit (every variable but the per-step wall-clock ``time``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import xarray as xr

from environment import environment_line


def timed(command: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the process tree) of ``command``."""
    start = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: dict[int, float] = {}
    while process.poll() is None:
        try:
            tree = [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in tree:
            try:
                times = p.cpu_times()
                seen[p.pid] = times.user + times.system   # own time only: reaped children are sampled themselves
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.1)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
    return wall, sum(seen.values())


def same_stores(a: Path, b: Path) -> bool:
    for store in sorted(a.glob("*-seed*.zarr")):
        ta, tb = xr.open_datatree(store, engine="zarr"), xr.open_datatree(b / store.name, engine="zarr")
        for group in ta.groups:
            if group.startswith("/analysis"):
                continue
            da, db = ta[group].to_dataset(), tb[group].to_dataset()
            for name in da.variables:
                if group == "/metrics" and name == "time":
                    continue
                if np.asarray(da[name].values).tobytes() != np.asarray(db[name].values).tobytes():
                    return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of 20")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, help="folder for the run folders (default: a temporary one)")
    args = parser.parse_args()
    print(environment_line())
    base = [sys.executable, "-m", "dynamics.cli", "run", "--quiet"] + (["--set", "train.epochs=2"] if args.quick else [])
    root = args.out or Path(tempfile.mkdtemp(prefix="run-default-"))
    for repeat in range(args.repeats):
        results = {}
        for side, extra in (("one run at a time (--workers 1)", ["--workers", "1"]), ("side by side (default)", [])):
            out = root / f"r{repeat}-{'seq' if extra else 'par'}"
            load = os.getloadavg()[0]
            wall, cpu = timed(base + ["--out", str(out)] + extra)
            results[side] = (wall, cpu, out)
            print(f"[{repeat}] {side}: {wall:.1f} s wall, {cpu:.1f} s CPU ({cpu / wall:.2f} cores), "
                  f"load before {load:.1f}, after {os.getloadavg()[0]:.1f}", flush=True)
        (seq_wall, seq_cpu, seq), (par_wall, par_cpu, par) = results.values()
        print(f"[{repeat}] side by side / one at a time: wall {par_wall / seq_wall:.2f}x, CPU {par_cpu / seq_cpu:.2f}x; "
              f"stores bit-identical: {same_stores(seq, par)}", flush=True)


if __name__ == "__main__":
    main()
