"""Overhead of recording, against the same loop without a Recorder (baseline measured in the same run),
and the time to load a store with many checkpoints.

    python benchmarks/recorder_overhead.py [--quick] [--case default|dense|cnn|load|all] [--pairs N] [--sync-ntk]

Cases:

- ``default``: MLP 40→256×3→10, SGD, batch 128, 3000 steps, metrics every step, 20 log-spaced
  checkpoints (NTK on 128 probes, 3 representations, parameters).
- ``dense`` (checkpoint-dense): ``RevMLP(40, 1024, 3, 10)``, Adam, batch 128, 400 steps, 11
  log-spaced checkpoints (NTK on 128 probes, every block's representation, parameters).
- ``cnn``: a small CNN on digit-sized 8×8 images (Conv2d 1→16→32, 3×3, padding 1, ReLU, Linear
  2048→10), Adam, batch 128, 1000 steps, 11 log-spaced checkpoints (NTK on 128 probes through the
  structured Conv2d path, every layer's representation, parameters).
- ``transformer``: the small transformer classifier of ``benchmarks/transformer.py`` on int64 token
  ids (vocabulary 64, 16 tokens, width 64, 2 blocks of nn.MultiheadAttention and a GELU MLP, 10
  classes; 106k parameters), Adam, batch 128, 1000 steps, a checkpoint every 50 steps (21: NTK on 64
  probe sequences through the generic path, the default representations — every GELU — parameters);
  target ≤ 1.3×.
- ``load``: a store with 1,772 checkpoints of a small model (``MLP(8, 16, 2, 3)``, 16 probes: NTK,
  representations, parameters, two scalars) is written; then ``open_run(path).load()`` is timed.

The overhead cases report wall time and the process's CPU time (all threads, so the writer thread's
work counts even where it overlaps training); on a loaded machine the CPU ratio is the steadier one.
They run the two variants in alternating pairs and print their median wall times and the
median of the per-pair ratios (target ≤ 1.15×): a pair runs back to back, so a slow spell of a shared
machine inflates both halves of it rather than one variant. ``os.getloadavg()`` is printed with each.
The Recorder computes the NTK of checkpoints after its first on a worker thread (``ntk_background``,
the default); ``--sync-ntk`` adds a third run to each pair, with ``ntk_background=False``, and prints
its ratio too (same run, same pairs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from dynamics import Recorder, open_run
from dynamics.models import MLP, RevMLP
from dynamics.schedules import every, log_spaced
from environment import environment_line
from transformer import TokenClassifier

CASES = {  # name: (model factory, optimizer factory, steps, checkpoints, quick steps, quick checkpoints)
    "default": (lambda: MLP(40, 256, 3, 10, seed=0),
                lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), 3000, 20, 300, 10),
    "dense": (lambda: RevMLP(40, 1024, 3, 10, seed=0),
              lambda p: torch.optim.Adam(p, lr=1e-3), 400, 11, 100, 6),
    "cnn": (lambda: small_cnn(), lambda p: torch.optim.Adam(p, lr=1e-3), 1000, 11, 200, 6),
    "transformer": (lambda: TokenClassifier(64, 16, 64, 2, 4, 10), lambda p: torch.optim.Adam(p, lr=1e-3),
                    1000, 21, 200, 5),
}
#: shape of one input sample per case (int64 token ids for the transformer)
INPUT_SHAPE = {"default": (40,), "dense": (40,), "cnn": (1, 8, 8), "transformer": (16,)}
#: probe samples, and checkpoints at every STEPS-th step instead of log-spaced ones, per case
PROBES = {"transformer": 64}
EVERY = {"transformer": 50}
#: target wall ratio per case (default 1.15×)
TARGET = {"transformer": 1.3}


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 64, 10))


def train(case: str, steps: int, store: Path | None, n_checkpoints: int,
          background: bool = True) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process, all threads) of the loop (creation excluded)."""
    make_model, make_opt = CASES[case][:2]
    gen = torch.Generator().manual_seed(0)
    if case == "transformer":
        x = torch.randint(0, 64, (4000, *INPUT_SHAPE[case]), generator=gen)
    else:
        x = torch.randn(4000, *INPUT_SHAPE[case], generator=gen)
    y = torch.randint(0, 10, (4000,), generator=gen)
    model = make_model()
    optimizer = make_opt(model.parameters())
    rec = None
    if store is not None:
        n_probe = PROBES.get(case, 128)
        schedule = every(EVERY[case]) if case in EVERY else log_spaced(steps, n_checkpoints)
        rec = Recorder(store, model, (x[:n_probe], y[:n_probe]), schedule=schedule, ntk_background=background)
    start, cpu = time.perf_counter(), time.process_time()
    for step in range(steps):
        idx = torch.randint(0, 4000, (128,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
        optimizer.step()
        values = {"loss": loss.item(), "grad_norm": grad_norm.item(), "lr": 0.05}
        if rec is not None:
            t0 = time.perf_counter()
            rec.log(step, epoch=step * 128 // 4000, **values)
            t1 = time.perf_counter()
            rec.checkpoint(step, train_loss=values["loss"])
            INSIDE["log"] += t1 - t0
            INSIDE["checkpoint"] += time.perf_counter() - t1
    if rec is not None:
        t0 = time.perf_counter()
        rec.close()
        INSIDE["close"] += time.perf_counter() - t0
    return time.perf_counter() - start, time.process_time() - cpu


#: wall seconds spent inside the Recorder's calls (main thread), summed over the recorded runs
INSIDE = {"log": 0.0, "checkpoint": 0.0, "close": 0.0}


def overhead(case: str, quick: bool, pairs: int | None = None, sync: bool = False) -> None:
    steps, n_ck = CASES[case][4:6] if quick else CASES[case][2:4]
    repeats = pairs if pairs else (2 if quick else 5)
    bare, recorded, synchronous = [], [], []
    for key in INSIDE:
        INSIDE[key] = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        train(case, 20, None, 3)                                  # warm-up: imports, allocator, first NTK
        train(case, 20, Path(tmp) / "warm.zarr", 3)
        for key in INSIDE:
            INSIDE[key] = 0.0
        for r in range(repeats):
            bare.append(train(case, steps, None, n_ck))
            recorded.append(train(case, steps, Path(tmp) / f"run{r}.zarr", n_ck))
            if sync:
                inside = dict(INSIDE)
                synchronous.append(train(case, steps, Path(tmp) / f"sync{r}.zarr", n_ck, background=False))
                INSIDE.update(inside)   # the Recorder's calls are reported for the default runs only
    b, w = statistics.median(t for t, _ in bare), statistics.median(t for t, _ in recorded)
    ratios = [r[0] / s[0] for r, s in zip(recorded, bare)]
    cpu_ratios = [r[1] / s[1] for r, s in zip(recorded, bare)]
    print(f"[{case}] steps={steps} checkpoints={n_ck} pairs={repeats} loadavg={os.getloadavg()}", flush=True)
    print(f"  bare loop      {b:8.3f} s  ({1e3 * b / steps:.3f} ms/step)")
    print(f"  with Recorder  {w:8.3f} s  ({1e3 * w / steps:.3f} ms/step)")
    print(f"  ratio (wall)   {statistics.median(ratios):8.3f}x  median of pairs {[round(r, 3) for r in ratios]} "
          f"(target <= {TARGET.get(case, 1.15)}x)")
    print(f"  ratio (CPU)    {statistics.median(cpu_ratios):8.3f}x  median of pairs {[round(r, 3) for r in cpu_ratios]} "
          f"(process CPU time, all threads: steadier on a loaded machine)")
    if synchronous:
        s_ratios = [r[0] / s[0] for r, s in zip(synchronous, bare)]
        print(f"  ntk_background=False: ratio (wall) {statistics.median(s_ratios):8.3f}x  median of pairs "
              f"{[round(r, 3) for r in s_ratios]}, CPU "
              f"{statistics.median(r[1] / s[1] for r, s in zip(synchronous, bare)):.3f}x")
    print("  inside the Recorder's calls per run (main thread): "
          + ", ".join(f"{k} {v / repeats:.3f} s" for k, v in INSIDE.items()), flush=True)


def load(quick: bool) -> None:
    n = 200 if quick else 1772
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 8, generator=gen), torch.randint(0, 3, (16,), generator=gen)
    model = MLP(8, 16, 2, 3, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "many.zarr"
        start = time.perf_counter()
        with Recorder(path, model, (x, y), schedule=every(1)) as rec:
            for step in range(n):
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(1e-3)
                rec.log(step, loss=float(step))
                rec.checkpoint(step, train_loss=float(step), test_loss=-float(step))
        write = time.perf_counter() - start
        files = sum(len(f) for _, _, f in os.walk(path))
        start = time.perf_counter()
        run = open_run(path).load()
        read = time.perf_counter() - start
        assert run["checkpoints"].sizes["checkpoint"] == n
    print(f"[load] {n} checkpoints (MLP 8→16×2→3, 16 probes), {files} files, loadavg={os.getloadavg()}")
    print(f"  write {write:7.3f} s ({1e3 * write / n:.2f} ms/checkpoint)   open_run().load() {read:7.3f} s",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Recorder overhead vs a bare training loop; load time")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    parser.add_argument("--case", choices=["default", "dense", "cnn", "transformer", "load", "all"], default="all")
    parser.add_argument("--pairs", type=int, default=None, help="bare/recorded pairs per overhead case")
    parser.add_argument("--sync-ntk", action="store_true",
                        help="also time each pair's recorded loop with ntk_background=False")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(environment_line())
    for case in ("default", "dense", "cnn", "transformer"):
        if args.case in (case, "all"):
            overhead(case, args.quick, args.pairs, args.sync_ntk)
    if args.case in ("load", "all"):
        load(args.quick)


if __name__ == "__main__":
    main()
