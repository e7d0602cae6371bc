"""Benchmark: what the lazy-regime diagnostics (train.linearized, train.sharpness) add to a run of
``dynamics run``'s default preset (mnist1d, float32, 20 epochs, 12 log-spaced checkpoints).

    python benchmarks/lazy_cost.py [--preset mnist1d] [--epochs 20] [--repeats 1] [--set KEY=VALUE ...]
                                   [--optimizers gn,adam] [--variants off,linearized,sharpness,both]

For every optimiser of the preset (one seed), the same run is trained with the diagnostics off
(the baseline), with ``train.linearized``, with ``train.sharpness`` and with both, interleaved
(optimiser by optimiser, variant by variant, ``--repeats`` rounds), so that a change of machine load
hits all variants alike. Printed: wall seconds per run, and per variant the ratio of its summed wall
time to the baseline's — the factor by which the default ``dynamics run`` (3 optimisers × 3 seeds)
grows with it on. Threads and load average are printed before and after (environment_line).
The paper-size smoke of issue 23 §4: ``--preset paper-mnist5k --epochs 1 --optimizers gn,adam
--set optimizers.gn.truncation=exact`` (one epoch = 2 steps and 3 checkpoints there).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dynamics.cli import setting
from environment import environment_line
from trainers import load_config, train
from trainers.setup import load_data

VARIANTS = {"off": {}, "linearized": {"train.linearized": True}, "sharpness": {"train.sharpness": True},
            "both": {"train.linearized": True, "train.sharpness": True}}


def run_seconds(config, optimizer: str, data) -> float:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        train(config, optimizer, Path(folder) / "run.zarr", progress=False, data=data)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mnist1d")
    parser.add_argument("--epochs", type=int, default=0, help="epochs (0: the preset's)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], type=setting, metavar="KEY=VALUE",
                        help="extra config override (as dynamics run --set)")
    parser.add_argument("--optimizers", default="", help="comma-separated subset of train.optimizers (default all)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of " + ", ".join(VARIANTS))
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
    if "off" not in variants:
        parser.error("--variants must include off (the baseline)")
    overrides = dict(args.set)
    if args.epochs:
        overrides["train.epochs"] = args.epochs
    base = load_config(args.preset, overrides=overrides)
    data = load_data(base.data)
    print(f"lazy_cost: preset {args.preset}, {base.train.epochs} epochs, {base.train.checkpoints} checkpoints, "
          f"seed {base.train.seed}")
    print(f"before: {environment_line()}")
    optimizers = args.optimizers.split(",") if args.optimizers else base.train.optimizers
    seconds = {variant: {} for variant in variants}
    for _ in range(args.repeats):
        for optimizer in optimizers:
            for variant, extra in variants.items():
                took = run_seconds(base.with_overrides(extra), optimizer, data)
                seconds[variant].setdefault(optimizer, []).append(took)
                print(f"  {optimizer:6s} {variant:10s} {took:8.1f} s", flush=True)
    print(f"after:  {environment_line()}")
    total_off = sum(sum(v) for v in seconds["off"].values())
    for variant in variants:
        per = ", ".join(f"{o} {sum(t) / sum(seconds['off'][o]):.2f}x" for o, t in seconds[variant].items())
        total = sum(sum(v) for v in seconds[variant].values())
        print(f"{variant:10s} total {total:8.1f} s = {total / total_off:.2f}x the baseline ({per})")


if __name__ == "__main__":
    main()
