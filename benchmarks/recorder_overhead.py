"""Overhead of recording: a small training loop with metrics every step and NTK + representations on a
log-spaced schedule, against the same loop without a Recorder (baseline measured in the same run).

    python benchmarks/recorder_overhead.py [--quick]

Runs the two variants in alternating pairs and prints their median wall times and the median of the
per-pair ratios (target ≤ 1.15×): a pair runs back to back, so a slow spell of a shared machine
inflates both halves of it rather than one variant.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dynamics import Recorder
from dynamics.models import MLP
from dynamics.schedules import log_spaced


def train(steps: int, store: Path | None, n_checkpoints: int) -> float:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 40, generator=gen)
    y = torch.randint(0, 10, (4000,), generator=gen)
    model = MLP(40, 256, 3, 10, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rec = None
    if store is not None:
        rec = Recorder(store, model, (x[:128], y[:128]), schedule=log_spaced(steps, n_checkpoints))
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, 4000, (128,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
        optimizer.step()
        values = {"loss": loss.item(), "grad_norm": grad_norm.item(), "lr": 0.05}
        if rec is not None:
            rec.log(step, epoch=step * 128 // 4000, **values)
            rec.checkpoint(step, train_loss=values["loss"])
    if rec is not None:
        rec.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description="Recorder overhead vs a bare training loop")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    args = parser.parse_args()
    steps, repeats, n_ck = (300, 2, 10) if args.quick else (3000, 5, 20)
    torch.set_num_threads(1)
    bare, recorded = [], []
    with tempfile.TemporaryDirectory() as tmp:
        train(50, None, n_ck)                                  # warm-up: imports, allocator, first NTK
        train(50, Path(tmp) / "warm.zarr", n_ck)
        for r in range(repeats):
            bare.append(train(steps, None, n_ck))
            recorded.append(train(steps, Path(tmp) / f"run{r}.zarr", n_ck))
    b, w = statistics.median(bare), statistics.median(recorded)
    ratios = [r / s for r, s in zip(recorded, bare)]
    print(f"steps={steps} checkpoints={n_ck} (NTK on 128 probe inputs + 3 representations) pairs={repeats}")
    print(f"bare loop      {b:8.3f} s  ({1e3 * b / steps:.3f} ms/step)")
    print(f"with Recorder  {w:8.3f} s  ({1e3 * w / steps:.3f} ms/step)")
    print(f"ratio          {statistics.median(ratios):8.3f}x  median of pairs {[round(r, 3) for r in ratios]} "
          f"(target <= 1.15x)")


if __name__ == "__main__":
    main()
