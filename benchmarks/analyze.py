"""Benchmark: ``analysis.analyze`` on a store of the default run's size, written here by a plain loop
through ``dynamics.Recorder`` (RevMLP d=40, 4 blocks, 10 classes; probe 256 (or --probe); 1000 SGD
steps; 10 log-spaced checkpoints with NTK, representations and parameters).

    python benchmarks/analyze.py [--quick] [--probe 512]

Baseline measured in the same run: the training loop that wrote the store (the analysis must be a
small fraction of it: `dynamics run` trains and analyses 3 optimisers in < 2 minutes). Prints times
and ratios: full analysis (probes at every checkpoint), analysis without probes, re-reading the
stored analysis group, and the textbook alternative for the representation metrics (n×n CKA with the
explicit centring matrix) to show what feature-space CKA saves.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from threadpoolctl import threadpool_limits

from analysis import analyze
from dynamics import Recorder
from dynamics.models import RevMLP
from dynamics.schedules import log_spaced
from environment import environment_line


def write_store(path: Path, steps: int, probe: int, checkpoints: int) -> float:
    """Train with SGD while recording; returns the wall time of the loop (store writes included).

    torch runs on one thread here (restored afterwards): with these small matrices a second OpenMP
    thread on a busy 2-core machine slows the loop down several-fold, which would flatter the ratios.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(path, steps, probe, checkpoints)
    finally:
        torch.set_num_threads(threads)


def _train(path: Path, steps: int, probe: int, checkpoints: int) -> float:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(4000) % 10
    x = torch.randn(10, 40, generator=gen, dtype=torch.float64)[y] + torch.randn(4000, 40, generator=gen, dtype=torch.float64)
    model = RevMLP(40, 256, 4, 10, seed=0, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    other = (x[-100:], y[-100:])
    start = time.perf_counter()
    with Recorder(path, model, probe=(x[:probe], y[:probe]), config={"optimizer": "sgd", "seed": 0},
                  schedule=log_spaced(steps, checkpoints)) as rec:
        for step in range(steps):
            rec.checkpoint(step)
            idx = torch.randint(0, 3900, (100,), generator=gen)
            with torch.no_grad():
                other_before = torch.nn.functional.cross_entropy(model(other[0]), other[1])
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                after = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                other_after = torch.nn.functional.cross_entropy(model(other[0]), other[1])
            rec.log(step, loss=loss.item(), loss_after=after.item(), other_loss=other_before.item(),
                    other_loss_after=other_after.item())
    return time.perf_counter() - start


def textbook_representation_metrics(path: Path) -> float:
    """n×n CKA to init with H explicit, for every layer and checkpoint; returns the wall time.

    Run with one BLAS thread, like ``analyze`` for matrices of this size, so the comparison is fair."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _textbook(path)


def _textbook(path: Path) -> float:
    start = time.perf_counter()
    ds = xr.open_zarr(path, group="checkpoints", consolidated=False)
    for name in [v for v in ds.data_vars if v.startswith("rep_")]:
        reps = ds[name].values
        n = reps.shape[1]
        h = np.eye(n) - 1.0 / n
        k0 = h @ (reps[0] @ reps[0].T) @ h
        for c in range(reps.shape[0]):
            kc = h @ (reps[c] @ reps[c].T) @ h
            float(np.sum(kc * k0) / (np.linalg.norm(kc) * np.linalg.norm(k0)))
    return time.perf_counter() - start


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 steps, probe 128, 6 checkpoints")
    parser.add_argument("--probe", type=int, default=None, help="probe set size (default 256; --quick 128)")
    args = parser.parse_args()
    print(environment_line())
    steps, checkpoints = (300, 6) if args.quick else (1000, 10)
    probe = args.probe or (128 if args.quick else 256)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "sgd.zarr"
        t_train = write_store(store, steps, probe, checkpoints)
        analyze(store, probe_checkpoints="none", write=False)  # warm-up: imports, first-call costs
        t_full = timed(lambda: analyze(store))
        t_noprobe = timed(lambda: analyze(store, probe_checkpoints="none", write=False))
        t_read = timed(lambda: xr.open_zarr(store, group="analysis").load())
        t_textbook = textbook_representation_metrics(store)
        ds = xr.open_zarr(store, group="analysis")
        sizes = f"{ds.sizes['checkpoint']} checkpoints, {ds.sizes['layer']} layers, {ds.sizes['step']} steps"
    print(f"analyze: RevMLP d=40 depth 4, probe {probe}, {sizes}")
    print(f"{'what':<46}{'time [s]':>10}{'ratio':>10}")
    print(f"{'training loop with Recorder (baseline)':<46}{t_train:>10.2f}{1.0:>9.2f}x")
    print(f"{'analyze (probes at every checkpoint, write)':<46}{t_full:>10.2f}{t_full / t_train:>9.2f}x")
    print(f"{'analyze (no probes, no write)':<46}{t_noprobe:>10.2f}{t_noprobe / t_train:>9.2f}x")
    print(f"{'read the stored analysis group back':<46}{t_read:>10.2f}{t_read / t_train:>9.2f}x")
    print(f"{'textbook n×n CKA to init alone (explicit H)':<46}{t_textbook:>10.2f}{t_textbook / t_train:>9.2f}x")


if __name__ == "__main__":
    main()
