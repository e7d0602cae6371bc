"""``dynamics run`` and ``dynamics tables``: part of the command line's composition root
(:mod:`dynamics.cli`), so they import the upper layers (trainers, analysis, reports) lazily, inside
the commands, like the rest of it."""

from __future__ import annotations

import argparse
import builtins
import functools
import sys
import warnings
from pathlib import Path

from dynamics.errors import DynamicsError
from dynamics.visible import visible


def _failed_run(path: Path) -> str | None:
    """The recorded error of the store at ``path`` if it exists and is marked "failed", else None."""
    from dynamics.store import check_store

    try:
        attrs = check_store(path)
    except DynamicsError:
        return None
    return str(attrs.get("error", "failed")) if attrs.get("status") == "failed" else None


def command_run(args: argparse.Namespace) -> int:
    """Train every (seed, optimiser), analyse, report. The runs train side by side in
    ``cores // train.threads`` processes (:mod:`trainers.parallel`), each bit-identical to training it
    alone. A run that fails on its own (its store is marked "failed", e.g. by the divergence rule)
    does not stop the others: it is named on stderr, marked in the report, and the exit status is 1.
    Errors before a store exists (config, data) stop at once."""
    from analysis import analyze_experiment
    from dynamics import machine
    from dynamics.cli import check_target, config_from, say, say_path
    from reports import write_report
    from trainers import store_name
    from trainers.parallel import RunSpec, train_runs
    from trainers.phases import phases_name
    from trainers.runtime import apply_threads, concurrent_runs
    from trainers.setup import load_data

    config = config_from(args)
    out = args.out or Path("runs") / config.name
    if out.exists() and not out.is_dir():
        raise DynamicsError(f"--out '{out}' is an existing file, not an experiment folder; choose another path")
    seeds = args.seeds or config.train.seeds or [config.train.seed]
    names = list(config.train.optimizers)
    if config.train.phases:  # one more run that switches optimiser (trainers.phases)
        names.append(phases_name([p.model_dump() for p in config.train.phases]))
    runs = [RunSpec(optimizer, seed, out / store_name(optimizer, seed, len(seeds))) for seed in seeds
            for optimizer in names]
    for run in runs:
        check_target(run.path, args)
    apply_threads(config.train.threads)
    if args.workers is not None and (isinstance(args.workers, bool) or args.workers < 1):
        raise DynamicsError(f"--workers must be an integer >= 1, got {args.workers!r}")
    workers = min(args.workers, len(runs)) if args.workers else concurrent_runs(config.train.threads, len(runs))
    if workers > 1:   # the workers' forkserver imports torch and the trainer while this process loads the data
        from dynamics.cluster import SWEEP_MODULES, start_forkserver
        start_forkserver(SWEEP_MODULES)
    data = load_data(config.data)  # once for every run (generating MNIST-1D takes seconds)
    say(args, f"dynamics run: {len(runs)} runs into {out}, {workers} at a time, "
              f"{config.train.threads} CPU thread(s) each")
    out.mkdir(parents=True, exist_ok=True)
    machine.record(out, machine.describe(config.train.threads, workers))   # named beside published tables

    def done(outcome) -> None:
        if outcome.status == "failed":
            reason = _failed_run(outcome.run.path) or outcome.error
            print(visible(f"dynamics run: {outcome.run.path} failed: {reason}; training the others"), file=sys.stderr)
        else:
            say(args, f"trained {outcome.run.path}")

    outcomes = train_runs(config, runs, data=data, overwrite=args.overwrite, progress=not args.quiet,
                          workers=workers, on_done=done,
                          after=functools.partial(analyze_stale, centered_alignment=args.centered_alignment))
    for category, message in dict.fromkeys(w for o in outcomes for w in o.warnings):  # once, not once per run
        warnings.warn_explicit(message, warning_category(category), "dynamics run", 0)
    failed = [o.run.path for o in outcomes if o.status == "failed"]
    analyze_experiment(out, reuse=True, centered_alignment=args.centered_alignment)
    say(args, f"analysed {out}")
    say_path(write_report(out, centered_alignment=args.centered_alignment))
    if failed:
        print(visible(f"dynamics run: {len(failed)} of {len(runs)} runs failed "
                      f"(marked in the report): {', '.join(p.name for p in failed)}"), file=sys.stderr)
        return 1
    return 0


def analyze_stale(path: Path, *, centered_alignment: bool = False) -> None:
    """Analyse the run store ``path`` (into its ``analysis`` group) unless its stored analysis is fresh:
    what ``dynamics run`` does in each run's worker right after training it."""
    from analysis import analyze
    from analysis.store_io import fresh_analysis

    if fresh_analysis(path, centered_alignment=centered_alignment)[0] is None:
        analyze(path, centered_alignment=centered_alignment)


def warning_category(name: str) -> type[Warning]:
    """The built-in warning class called ``name`` (a worker's warnings come back as names), else UserWarning."""
    category = getattr(builtins, name, None)
    return category if isinstance(category, type) and issubclass(category, Warning) else UserWarning


def command_tables(args: argparse.Namespace) -> None:
    from dynamics.cli import existing_dirs, say_path
    from reports.tables import results_blocks, write_blocks

    name = args.name or args.dirs[0].resolve().name
    blocks = results_blocks(existing_dirs(args.dirs), name)
    if args.write:
        for path in write_blocks(args.write, blocks):
            say_path(path)
    else:
        print("\n\n".join(blocks.values()))
