"""Benchmark: the trainers' loop on the default preset (mnist1d: RevMLP d=40, hidden 512, depth 2, float32,
batch 64) — cost per step of each optimiser and the loop's own overhead.

    python benchmarks/train_loop.py [--quick] [--steps 60]

Baseline measured in the same run: a bare Adam step (forward, backward, ``optimizer.step()``) on the
same batches. Printed, per optimiser: the bare update; the loop step (update + loss after on the
same batch + other batch + parameter-difference norm + gradient norm for GN + metrics row), from
the difference of runs with S and 2S steps; one checkpoint (train/test evaluation, probe NTK,
representations, parameters, resume state), from 12 vs 2 checkpoints; all in ms and as ratios to
the bare Adam step; and the fixed cost of a run (data, model, store creation, closing).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from trainers import load_config, train
from trainers.config import ExperimentConfig
from trainers.optimizers import make_optimizer
from trainers.setup import build_model, prepare
from environment import environment_line


def bare_update_ms(config: ExperimentConfig, name: str, steps: int) -> float:
    """Median wall ms of ``steps`` bare updates (the optimiser's step only) on the preset's batches."""
    experiment = prepare(config)
    model = build_model(config.model, experiment.x.shape[1], experiment.n_classes, 0)
    stepper = make_optimizer(name, config.optimizer(name), model, config.train.loss)
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        pick = experiment.pool[torch.randint(len(experiment.pool), (experiment.batch_size,), generator=generator)]
        times.append(stepper.step(experiment.x[pick], experiment.y[pick]).seconds)
    return 1e3 * sorted(times)[len(times) // 2]


def loop_ms(config: ExperimentConfig, name: str, steps: int, checkpoints: int) -> float:
    """Wall ms of ``trainers.train`` for ``steps`` steps with ``checkpoints`` checkpoints."""
    config = config.with_overrides({"train.steps": steps, "train.checkpoints": checkpoints})
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        train(config, name, Path(folder) / "run.zarr", progress=False)
        return 1e3 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    print(environment_line())
    steps = 20 if args.quick else args.steps
    config = load_config("mnist1d")
    bare_update_ms(config, "adam", 5)  # warm-up: first calls allocate and load kernels
    baseline = bare_update_ms(config, "adam", steps)
    print(f"baseline: bare Adam update {baseline:.2f} ms (median of {steps})")
    print(f"{'optimiser':>9} {'update ms':>10} {'x Adam':>7} {'loop ms/step':>13} {'x Adam':>7} "
          f"{'checkpoint ms':>14} {'x Adam':>7} {'fixed ms':>9}")
    for name in config.train.optimizers:
        update = bare_update_ms(config, name, steps)
        short = loop_ms(config, name, steps, 2)           # checkpoints at step 0 and the end only
        long = loop_ms(config, name, 2 * steps, 2)
        dense = loop_ms(config, name, steps, 12)          # the preset's 12 checkpoints
        per_step = (long - short) / steps
        per_checkpoint = (dense - short) / 10
        fixed = short - steps * per_step - 2 * per_checkpoint
        print(f"{name:>9} {update:10.2f} {update / baseline:7.2f} {per_step:13.2f} {per_step / baseline:7.2f} "
              f"{per_checkpoint:14.1f} {per_checkpoint / baseline:7.1f} {fixed:9.0f}")


if __name__ == "__main__":
    main()
