"""Cost of the Lightning integration, against baselines measured in the same run.

    python benchmarks/lightning_overhead.py [--quick] [--case callback|gn|all] [--pairs N]

Cases:

- ``callback``: ``DynamicsCallback`` against the bare Lightning loop (the same Trainer without it):
  MLP 40→256×3→10, Adam, batch 128, 2000 steps (300 with ``--quick``), one checkpoint every 50 steps
  (NTK on 128 probes, 3 representations, parameters). Variants: ``default`` (``loss_after=True``: one
  extra forward per step), ``bare-metrics`` (``loss_after=False``: only what the step computes
  anyway) and ``metrics, no NTK`` (also ``ntk=False``: the callback's own cost without the kernels). Goal: ≤ 1.2× at a checkpoint every 50 steps.
- ``gn``: ``KernelGN`` as the optimiser of a LightningModule (``LightningGN``, manual optimisation,
  the documented recipe) against Adam in the same Lightning loop, and against KernelGN stepped by a
  plain loop (what Lightning adds to a GN step): MLP 40→64×2→10, batch 64 (a 640×640 NTK per step),
  200 steps (50 with ``--quick``); milliseconds per step.

Variants run in alternating rounds (each round runs every variant once, back to back), so a slow
spell of a shared machine inflates a whole round rather than one variant; printed are each variant's
median wall time, the median of the per-round ratios to the baseline, and the same for the process's
CPU time (all threads: the Recorder's writer and NTK threads count). ``os.getloadavg()`` is in the header.
On a machine loaded beyond its cores, torch's OpenMP threads can wait for each other and make small
ops ten times slower at random (measured: the bare loop 10x slower with 2 threads than with 1 under a
load of 11 on 2 cores); ``--threads 1`` gives steady ratios there.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dynamics.gauss_newton import KernelGN
from dynamics.integrations.lightning import DynamicsCallback, LightningGN
from dynamics.models import MLP
from dynamics.schedules import every
from environment import environment_line


class Classifier(L.LightningModule):
    def __init__(self, hidden: int, depth: int, optimizer: str) -> None:
        super().__init__()
        self.net = MLP(40, hidden, depth, 10, seed=0)
        self.optimizer_name = optimizer
        self.automatic_optimization = optimizer != "kgn"

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.optimizer_name == "kgn":
            return torch.tensor(self.optimizers().step(x=x, y=y).loss)
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        if self.optimizer_name == "kgn":
            return LightningGN(KernelGN(self.net, lr=0.5, loss="ce"))
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def data(batch: int, steps: int) -> tuple[DataLoader, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch * steps, 40, generator=gen)
    y = torch.randint(0, 10, (batch * steps,), generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False), (x[:128], y[:128])


def fit(module: L.LightningModule, loader: DataLoader, steps: int, callbacks=()) -> tuple[float, float]:
    """(wall, CPU) seconds of ``trainer.fit`` (the Trainer's construction excluded)."""
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, loader)
    return time.perf_counter() - start, time.process_time() - cpu


def plain_gn(loader: DataLoader, steps: int) -> tuple[float, float]:
    net = MLP(40, 64, 2, 10, seed=0)
    gn = KernelGN(net, lr=0.5, loss="ce")
    start, cpu = time.perf_counter(), time.process_time()
    for i, (x, y) in enumerate(loader):
        if i == steps:
            break
        gn.step(x, y)
    return time.perf_counter() - start, time.process_time() - cpu


def rounds(variants: dict, pairs: int, baseline: str) -> None:
    times = {name: [] for name in variants}
    for _ in range(pairs):
        for name, run in variants.items():
            times[name].append(run())
    base = times[baseline]
    for name, measured in times.items():
        wall = statistics.median(t[0] for t in measured)
        line = f"  {name:<16} wall {wall:8.2f} s"
        if name != baseline:
            ratio = statistics.median(t[0] / b[0] for t, b in zip(measured, base))
            cpu = statistics.median(t[1] / b[1] for t, b in zip(measured, base))
            line += f"   {ratio:.3f}x wall, {cpu:.3f}x CPU (median of {len(base)} rounds)"
        print(line, flush=True)


def case_callback(steps: int, pairs: int) -> None:
    loader, probe = data(128, steps)
    print(f"callback: MLP 40->256x3->10, Adam, batch 128, {steps} steps, a checkpoint every 50 steps")

    def run(**options):
        def go():
            with tempfile.TemporaryDirectory() as folder:
                callbacks = [] if options.get("bare") else [
                    DynamicsCallback(Path(folder) / "run.zarr", probe=probe, schedule=every(50), **options)]
                return fit(Classifier(256, 3, "adam"), loader, steps, callbacks)
        return go

    rounds({"bare Lightning": run(bare=True), "default": run(), "bare-metrics": run(loss_after=False),
            "metrics, no NTK": run(loss_after=False, ntk=False)}, pairs, "bare Lightning")


def case_gn(steps: int, pairs: int) -> None:
    loader, _ = data(64, steps)
    print(f"gn: MLP 40->64x2->10, batch 64 (NTK 640x640 per step), {steps} steps; time per step")
    variants = {"Adam (Lightning)": lambda: fit(Classifier(64, 2, "adam"), loader, steps),
                "KernelGN (Lightning)": lambda: fit(Classifier(64, 2, "kgn"), loader, steps),
                "KernelGN (plain)": lambda: plain_gn(loader, steps)}
    times = {name: [] for name in variants}
    for _ in range(pairs):
        for name, run in variants.items():
            times[name].append(run())
    adam = times["Adam (Lightning)"]
    for name, measured in times.items():
        ms = 1000 * statistics.median(t[0] for t in measured) / steps
        ratio = statistics.median(t[0] / a[0] for t, a in zip(measured, adam))
        print(f"  {name:<22} {ms:8.2f} ms/step   {ratio:6.2f}x Adam in Lightning (median of {pairs} rounds)",
              flush=True)
    lit, plain = times["KernelGN (Lightning)"], times["KernelGN (plain)"]
    print(f"  Lightning around a KernelGN step: {statistics.median(a[0] / b[0] for a, b in zip(lit, plain)):.3f}x "
          f"the plain loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--case", choices=("callback", "gn", "all"), default="all")
    parser.add_argument("--pairs", type=int, default=5, help="rounds of the variants (default 5)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own); on a loaded "
                                                    "machine 1 avoids OpenMP threads waiting for each other")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    print(environment_line())
    if args.case in ("callback", "all"):
        case_callback(300 if args.quick else 2000, args.pairs)
    if args.case in ("gn", "all"):
        case_gn(50 if args.quick else 200, args.pairs)


if __name__ == "__main__":
    main()
