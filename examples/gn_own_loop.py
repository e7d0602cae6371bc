"""Exact Gauss–Newton inside your own training loop, recorded with the Recorder (docs/guide/own-loop.md).

    python examples/gn_own_loop.py [--out runs/gn_own_loop.zarr]

Trains a reversible MLP on scikit-learn's bundled digits with ``ReversibleGN`` and prints, per step,
the batch loss and the GN residual ρ = ‖J δθ + α ε‖ / ‖α ε‖ (round-off for the exact combination).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from sklearn.datasets import load_digits

from dynamics import Recorder
from dynamics.gauss_newton import ReversibleGN
from dynamics.models import RevMLP
from dynamics.schedules import log_spaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gn_own_loop.zarr"))
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0 - 0.5, dtype=torch.float64)
    y = torch.tensor(digits.target)
    model = RevMLP(64, 512, 2, 10, dtype=torch.float64, seed=0)
    gn = ReversibleGN(model, lr=0.1, loss="ce")          # identity CE target, exact combination
    batches = torch.Generator().manual_seed(0)

    with Recorder(args.out, model, probe=(x[:128], y[:128]), schedule=log_spaced(args.steps + 1, 6)) as rec:
        rec.checkpoint(0)                                 # the initialisation, before any update
        for step in range(1, args.steps + 1):             # step t = the state after the t-th update
            batch = torch.randint(0, len(x), (128,), generator=batches)
            report = gn.step(x[batch], y[batch])
            rec.log(step, loss=report.loss, gn_residual=report.residual, update_norm=report.update_norm)
            rec.checkpoint(step)
            if step % 10 == 1 or step == args.steps:
                print(f"step {step:3d}  loss {report.loss:.4f}  residual {report.residual:.1e}  "
                      f"full-rank blocks {report.full_rank}")
    print(f"recorded to {args.out}")


if __name__ == "__main__":
    main()
