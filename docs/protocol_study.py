"""Protocol study behind the default preset (issue 12): a small grid over what the paper fixes and a
miniature must choose — the initial scale of the trained weights and the batch size — with learning
rates picked by the paper's own rule, on the default data (MNIST-1D, 4000 train / 1000 test, 40
features) and model.

Fixed before the grid, by the published protocol (paper-protocol.md) scaled to MNIST-1D:
RevMLP depth 2 with a linear first block, ReLU, fixed projections N(0, 1/hidden) ("hidden", the
released code), float32, mean cross-entropy, GN with the identity target and the paper's averaged
update (``combine = "exact"``), no momentum or weight decay, Adam's default betas. The width keeps
the paper's two ratios: hidden / (d/2) = 8000 / 392 = 20.4 and batch / hidden = 1024 / 8000 = 0.128;
MNIST-1D has d/2 = 20, so hidden 512 gives 25.6 and, with the batch 64 below, 0.125.

The grid: initial weight scale (torch's default U(±1/√fan_in), the paper's ablation value 1e-2, the
paper's 1e-3) × batch size (32, 64, 128; 64 gives 61 steps per epoch, the paper has 58 = 60000/1024).

The paper's tuning rule (Buffelli et al. 2024): GN gets the largest α that is stable through the
first epoch; SGD and Adam get the learning rate with the most progress after one epoch. Here, for
each of the seeds 0, 1, 2: "stable" = every step's batch loss finite and at most 1000 × the initial
loss (the project's divergence rule, trainers/failures.py) and the full-training-set loss after
epoch 1 below its initial value; "progress" = the full-training-set loss after epoch 1 (lower is
better). A learning rate qualifies when it is stable for every seed; SGD and Adam take the lowest
mean loss over the seeds. A pick at the edge of its learning-rate grid is marked, since the rule
might then choose beyond it.

The default preset is the grid point fixed in advance as the closest to the published protocol —
init std 1e-3 and the batch whose steps per epoch are nearest the paper's 58 — with the learning
rates the rule picks there. Neither the point nor the rule looks at which of the paper's findings
come out. Part 2 then trains that point for the paper's 100 epochs (seed 0, plain updates) and
tabulates the full-training-set loss at a few epochs, to document what a shorter default run keeps.
Part 2 showed that the rule's GN and SGD picks, stable through epoch 1, diverge later; the paper's
mini-batch rule asks for progress "without instability", so part 3 walks down the rule's ranking
(GN: stable α from the largest down; SGD, Adam: from the lowest epoch-1 loss up) at the chosen point
and takes the first learning rate that stays stable over the default run's RUN_EPOCHS epochs for
every seed (full-training-set loss below its initial value at the end of every epoch, no batch loss
meeting the divergence rule). Those are the default preset's learning rates.

Every run here uses plain updates (no recording), the project's own optimisers, models, data order
(a ``torch.Generator`` seeded with the run's seed draws each epoch's permutation of the pool, as
``trainers.loop`` does) and one thread. Run (a few minutes of CPU):

    OMP_NUM_THREADS=1 PYTHONPATH=. python docs/protocol_study.py     # writes docs/protocol-study.md
    OMP_NUM_THREADS=1 PYTHONPATH=. python docs/protocol_study.py --stability   # part 3 only, appended
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import time
from pathlib import Path

import torch

from trainers.config import ExperimentConfig, load_config
from trainers.loop import evaluate
from trainers.optimizers import make_optimizer
from trainers.setup import build_model, load_data, prepare

FIXED = {"data.name": "mnist1d", "model.kind": "revmlp", "model.hidden": 512, "model.depth": 2,
         "model.first_linear": True, "model.activation": "relu", "model.dtype": "float32",
         "model.projection": "hidden", "train.loss": "ce", "optimizers.gn.combine": "exact",
         "optimizers.gn.ce_target": "identity"}
INIT_STDS = (0.0, 1e-2, 1e-3)     # 0.0 = torch's default U(±1/√fan_in)
BATCH_SIZES = (32, 64, 128)
LRS = {"gn": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
       "sgd": (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
       "adam": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)}
SEEDS = (0, 1, 2)
PAPER_INIT_STD = 1e-3
PAPER_STEPS_PER_EPOCH = 60000 // 1024
DIVERGED = 1000.0                 # trainers.failures: loss above 1000 × the initial loss
LONG_EPOCHS = 100                 # the paper's run length
LONG_REPORT = (1, 5, 10, 15, 20, 25, 30, 50, 100)
RUN_EPOCHS = 20                   # the default preset's run length (the 2-minute budget of `dynamics run`)


def study_config(init_std: float, batch: int, lrs: dict[str, float] | None = None) -> ExperimentConfig:
    """The default preset with the study's fixed keys, one grid point and (optionally) learning rates."""
    overrides = {**FIXED, "model.init_std": init_std, "train.batch_size": batch}
    overrides.update({f"optimizers.{name}.lr": lr for name, lr in (lrs or {}).items()})
    return load_config("mnist1d", overrides=overrides)


def train_epochs(config: ExperimentConfig, experiment, optimizer: str, seed: int, epochs: int,
                 report: tuple[int, ...] = ()) -> tuple[float, dict[int, float], bool]:
    """(initial full-train loss, {epoch: full-train loss after it} for ``report`` and the last epoch,
    stable) for ``epochs`` epochs of plain updates; stops early (stable = False) once a batch loss is
    not finite or exceeds DIVERGED × the initial loss."""
    model = build_model(config.model, experiment.x.shape[1], experiment.n_classes, seed)
    stepper = make_optimizer(optimizer, config.optimizer(optimizer), model, config.train.loss)
    start, _ = evaluate(model, *experiment.eval_train, config.train.loss)
    generator = torch.Generator().manual_seed(seed)
    b, losses = experiment.batch_size, {}
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(experiment.pool), generator=generator)
        for k in range(experiment.steps_per_epoch):
            batch = experiment.pool[order[k * b:(k + 1) * b]]
            loss = float(stepper.step(experiment.x[batch], experiment.y[batch]).loss)
            if not (math.isfinite(loss) and loss <= DIVERGED * start):
                return start, losses, False
        if epoch in report or epoch == epochs:
            losses[epoch], _ = evaluate(model, *experiment.eval_train, config.train.loss)
    return start, losses, all(math.isfinite(v) and v <= DIVERGED * start for v in losses.values())


def first_epoch(config: ExperimentConfig, experiment, optimizer: str, lr: float) -> dict:
    """One epoch per seed at learning rate ``lr``: initial and final losses, and whether every seed was stable."""
    config = config.with_overrides({f"optimizers.{optimizer}.lr": lr})
    starts, ends, stable = [], [], True
    for seed in SEEDS:
        start, losses, ok = train_epochs(config, experiment, optimizer, seed, 1)
        end = losses.get(1, math.nan)
        starts.append(start)
        ends.append(end)
        stable = stable and ok and end < start
    return {"start": sum(starts) / len(starts), "end": sum(ends) / len(ends) if stable else math.nan,
            "stable": stable}


def pick(optimizer: str, results: dict[float, dict]) -> float | None:
    """The paper's rule: GN the largest α stable for every seed; SGD/Adam the stable lr with the lowest
    mean full-train loss after epoch 1. None when no learning rate is stable."""
    stable = {lr: r["end"] for lr, r in results.items() if r["stable"]}
    if not stable:
        return None
    return max(stable) if optimizer == "gn" else min(stable, key=stable.get)


def grid(data, init_stds: tuple[float, ...] = INIT_STDS, batch_sizes: tuple[int, ...] = BATCH_SIZES) -> list[dict]:
    rows = []
    for init_std in init_stds:
        for batch in batch_sizes:
            config = study_config(init_std, batch)
            experiment = prepare(config, data)
            row = {"init_std": init_std, "batch": batch, "steps_per_epoch": experiment.steps_per_epoch,
                   "results": {}, "chosen": {}}
            t0 = time.perf_counter()
            for optimizer, lrs in LRS.items():
                results = {lr: first_epoch(config, experiment, optimizer, lr) for lr in lrs}
                row["results"][optimizer] = results
                row["chosen"][optimizer] = pick(optimizer, results)
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            print(f"init_std {init_std:g} batch {batch}: {row['chosen']} ({row['seconds']:.0f} s)", flush=True)
    return rows


def default_batch(data) -> int:
    """The batch of BATCH_SIZES whose steps per epoch are nearest the paper's 58."""
    return min(BATCH_SIZES, key=lambda b: abs(prepare(study_config(PAPER_INIT_STD, b), data).steps_per_epoch
                                              - PAPER_STEPS_PER_EPOCH))


def default_point(rows: list[dict]) -> dict:
    """The grid point fixed in advance: the paper's init std, steps per epoch nearest the paper's 58."""
    candidates = [r for r in rows if r["init_std"] == PAPER_INIT_STD]
    return min(candidates, key=lambda r: abs(r["steps_per_epoch"] - PAPER_STEPS_PER_EPOCH))


def long_runs(data, point: dict) -> dict[str, tuple[float, dict[int, float], bool]]:
    """Part 2: the chosen point and learning rates for LONG_EPOCHS epochs, seed 0."""
    config = study_config(point["init_std"], point["batch"], point["chosen"])
    experiment = prepare(config, data)
    out = {}
    for optimizer in LRS:
        t0 = time.perf_counter()
        out[optimizer] = train_epochs(config, experiment, optimizer, SEEDS[0], LONG_EPOCHS, LONG_REPORT)
        print(f"{optimizer} {LONG_EPOCHS} epochs: {out[optimizer][1]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def run_stability(data, point: dict) -> dict[str, dict]:
    """Part 3: the rule's candidates at the chosen point, in the rule's order (GN: stable α from the
    largest down; SGD, Adam: stable lrs from the lowest epoch-1 loss up), each trained RUN_EPOCHS epochs
    for every seed; the first whose full-training-set loss stays below its initial value at the end
    of every epoch (and never meets the divergence rule) for every seed is the default's."""
    experiment = prepare(study_config(point["init_std"], point["batch"]), data)
    out = {}
    for optimizer in LRS:
        stable = {lr: r for lr, r in point["results"][optimizer].items() if r["stable"]}
        order = sorted(stable, reverse=True) if optimizer == "gn" else sorted(stable, key=lambda lr: stable[lr]["end"])
        tried = []
        for lr in order:
            config = study_config(point["init_std"], point["batch"], {optimizer: lr})
            ok, finals = True, []
            for seed in SEEDS:
                start, losses, fine = train_epochs(config, experiment, optimizer, seed, RUN_EPOCHS,
                                                   tuple(range(1, RUN_EPOCHS + 1)))
                fine = fine and len(losses) == RUN_EPOCHS and all(v < start for v in losses.values())
                finals.append(losses.get(RUN_EPOCHS, math.nan) if fine else math.nan)
                ok = ok and fine
                if not ok:
                    break
            tried.append((lr, ok, finals))
            print(f"{optimizer} lr {lr:g} over {RUN_EPOCHS} epochs: {'stable' if ok else 'unstable'} {finals}", flush=True)
            if ok:
                break
        out[optimizer] = {"tried": tried, "chosen": tried[-1][0] if tried and tried[-1][1] else None}
    return out


def stability_table(stability: dict) -> str:
    lines = ["| optimiser | learning rates tried, in the rule's order | default |", "|---|---|---|"]
    for optimizer, entry in stability.items():
        parts = [f"{lr:g}: " + (f"stable (final loss {sum(f) / len(f):.3f})" if ok else "unstable")
                 for lr, ok, f in entry["tried"]]
        chosen = "—" if entry["chosen"] is None else f"**{entry['chosen']:g}**"
        lines.append(f"| {optimizer} | {'; '.join(parts)} | {chosen} |")
    return "\n".join(lines)


def stability_section(stability: dict) -> str:
    return ("## 3. Stable over the default run\n\n"
            f"A learning rate stable through epoch 1 can diverge later (part 2: the rule's picks over 100 "
            f"epochs). The paper's "
            f"mini-batch rule asks for the most progress \"without instability\", so the default takes, at "
            f"the chosen point, the first of the rule's candidates (GN: stable α from the largest down; SGD, "
            f"Adam: from the lowest epoch-1 loss up) that stays stable over the default run's "
            f"{RUN_EPOCHS} epochs for every seed {', '.join(map(str, SEEDS))}: the full-training-set "
            f"loss below its initial value at the end of every epoch, and no batch loss non-finite or "
            f"above 1000 × the initial loss. Final loss: mean over the seeds after epoch {RUN_EPOCHS}.\n\n"
            f"{stability_table(stability)}\n")


def grid_table(rows: list[dict]) -> str:
    def cell(optimizer: str, row: dict) -> str:
        results, chosen, parts = row["results"][optimizer], row["chosen"][optimizer], []
        for lr, r in results.items():
            text = f"{lr:g}: {r['end']:.3f}" if r["stable"] else f"{lr:g}: unstable"
            if lr == chosen:
                edge = " (edge)" if lr in (min(results), max(results)) else ""
                text = f"**{text}**{edge}"
            parts.append(text)
        return "<br>".join(parts)

    lines = ["| init std | batch | steps/epoch | initial loss | GN α: loss after epoch 1 | "
             "SGD lr: loss after epoch 1 | Adam lr: loss after epoch 1 |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        start = next(iter(row["results"]["gn"].values()))["start"]
        init = "torch default" if row["init_std"] == 0 else f"{row['init_std']:g}"
        lines.append(f"| {init} | {row['batch']} | {row['steps_per_epoch']} | {start:.3f} | "
                     f"{cell('gn', row)} | {cell('sgd', row)} | {cell('adam', row)} |")
    return "\n".join(lines)


def long_table(point: dict, runs: dict) -> str:
    epochs = [e for e in LONG_REPORT if e <= LONG_EPOCHS]
    lines = ["| optimiser | lr | initial | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
             "|---|---|---|" + "---|" * len(epochs)]
    for optimizer, (start, losses, stable) in runs.items():
        cells = [f"{losses[e]:.3f}" if e in losses else "—" for e in epochs]
        note = "" if stable else " (diverged)"
        lines.append(f"| {optimizer}{note} | {point['chosen'][optimizer]:g} | {start:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("protocol-study.md"))
    parser.add_argument("--stability", action="store_true",
                        help="only part 3 (recomputing part 1 at the chosen point), appended to --out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    data = load_data(study_config(PAPER_INIT_STD, BATCH_SIZES[0]).data)   # generated once, shared by every run
    if args.stability:
        point = default_point(grid(data, (PAPER_INIT_STD,), (default_batch(data),)))
        stability = run_stability(data, point)
        load = os.getloadavg()
        with args.out.open("a", encoding="utf-8") as out:
            out.write(f"\n{stability_section(stability)}\n"
                      f"Part 3 ran on its own (`OMP_NUM_THREADS=1 PYTHONPATH=. python docs/protocol_study.py "
                      f"--stability`, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}): wall "
                      f"{time.perf_counter() - t0:.0f} s, CPU {time.process_time() - c0:.0f} s, load average "
                      f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.\n")
        print(args.out)
        return
    rows = grid(data)
    point = default_point(rows)
    runs = long_runs(data, point)
    stability = run_stability(data, point)
    load = os.getloadavg()
    fixed = ", ".join(f"{k} = {v}" for k, v in FIXED.items())
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    args.out.write_text(
        "# Protocol study for the default preset\n\n"
        f"Generated by `OMP_NUM_THREADS=1 PYTHONPATH=. python docs/protocol_study.py` on {date} "
        f"(torch {torch.__version__}, Python {platform.python_version()}); the rule, the grid and the "
        f"fixed settings are in the script's docstring. Fixed: {fixed}. Seeds {', '.join(map(str, SEEDS))} "
        f"for every learning rate.\n\n"
        "## 1. Learning rates by the paper's rule\n\n"
        "Loss: mean cross-entropy on the full training set (4000 examples) after one epoch, averaged over "
        "the seeds; *unstable*: some seed had a non-finite batch loss, a batch loss above 1000 × the initial "
        "loss, or ended the epoch above its initial loss. Bold: the learning rate the rule picks (GN: the "
        "largest stable α; SGD, Adam: the lowest loss); *(edge)*: the pick is at the edge of its grid. The "
        f"paper has {PAPER_STEPS_PER_EPOCH} steps per epoch (MNIST, batch 1024).\n\n"
        f"{grid_table(rows)}\n\n"
        "## 2. The chosen point over the paper's 100 epochs\n\n"
        f"Fixed in advance (not by the results): init std {point['init_std']:g} (the paper's), batch "
        f"{point['batch']} ({point['steps_per_epoch']} steps per epoch, nearest the paper's "
        f"{PAPER_STEPS_PER_EPOCH}), learning rates as picked above: GN α {point['chosen']['gn']}, SGD "
        f"{point['chosen']['sgd']}, Adam {point['chosen']['adam']}. Full-training-set loss after "
        f"the given epoch, seed {SEEDS[0]}, plain updates; a run stops (—) when a batch loss meets the "
        f"divergence rule:\n\n{long_table(point, runs)}\n\n{stability_section(stability)}\n"
        f"Wall time {time.perf_counter() - t0:.0f} s, CPU time {time.process_time() - c0:.0f} s, one thread; "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (a shared 2-core machine).\n",
        encoding="utf-8")
    print(args.out)


if __name__ == "__main__":
    main()
