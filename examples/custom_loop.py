"""A plain PyTorch training loop (no project trainer) that records into a run store, then reads the
store back with plain xarray and prints how far the NTK drifted from initialisation.

    python examples/custom_loop.py [--out runs/custom_loop.zarr] [--steps 300]

NTK drift at a checkpoint is the kernel distance 1 − ⟨Θ_t, Θ_0⟩_F / (‖Θ_t‖_F ‖Θ_0‖_F) (DESIGN §3).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from dynamics import Recorder
from dynamics.models import MLP
from dynamics.schedules import every, log_spaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/custom_loop.zarr"))
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 20, generator=gen)
    y = (x[:, :3].sum(dim=1) > 0).long() + (x[:, 3] > 1).long()          # 3 classes
    x_probe, y_probe = x[:64], y[:64]
    model = MLP(20, 64, 2, 3, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = log_spaced(args.steps + 1, 12) | every(100)

    def train_accuracy() -> float:
        with torch.no_grad():
            return (model(x).argmax(dim=1) == y).float().mean().item()

    with Recorder(args.out, model, (x_probe, y_probe), config={"optimizer": "adam", "lr": 3e-3},
                  schedule=schedule) as rec:
        rec.checkpoint(0, train_acc=train_accuracy())       # the initialisation, before any update
        for step in range(1, args.steps + 1):               # step t = the state after the t-th update
            batch = torch.randint(0, 512, (32,), generator=gen)
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            rec.log(step, epoch=step * 32 / 512, loss=loss.item(), lr=3e-3)
            if schedule(step):
                rec.checkpoint(step, train_acc=train_accuracy())

    # Read back with plain xarray: no project code needed.
    tree = xr.open_datatree(args.out, engine="zarr")
    ntk = tree["checkpoints"]["ntk"]
    k0 = ntk.isel(checkpoint=0)
    alignment = (ntk * k0).sum(("probe", "probe_")) / np.sqrt(
        (ntk ** 2).sum(("probe", "probe_")) * (k0 ** 2).sum())
    print(f"{'step':>6} {'train_acc':>9} {'NTK drift':>10}")
    for step, acc, drift in zip(tree["checkpoints"]["checkpoint_step"].values, tree["checkpoints"]["train_acc"].values,
                                (1 - alignment).values):
        print(f"{step:6d} {acc:9.3f} {drift:10.5f}")
    print(f"metrics: {tree['metrics'].sizes['step']} steps, final loss {float(tree['metrics']['loss'][-1]):.4f}")


if __name__ == "__main__":
    main()
