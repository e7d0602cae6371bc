"""The ``dynamics`` command line, the one composition root of the project.

Subcommands import the upper layers (trainers, analysis, reports) lazily, so ``dynamics --help`` is
fast and the core package never imports them at module level. User errors
(:class:`dynamics.errors.DynamicsError`: a bad config key, a missing data file, a foreign store)
print one line to stderr and exit with status 2; Ctrl-C exits with 130 and leaves a store that
``--resume`` continues.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dynamics.errors import DynamicsError

EXAMPLES = """examples:
  dynamics run                                   # default preset mnist1d: gn, sgd, adam → runs/mnist1d/report.html
  dynamics run --preset digits --seeds 0,1,2     # three seeds per optimiser
  dynamics run --config my.toml --out runs/mine  # a TOML file overriding a preset (preset = "..." inside)
  dynamics run --preset paper-mnist --data-dir ~/data/mnist
  dynamics run --resume                          # continue after Ctrl-C
  dynamics train --optimizer adam --out runs/one/adam.zarr
  dynamics analyze runs/mnist1d runs/digits
  dynamics report runs/mnist1d
  dynamics compare runs/mnist1d runs/digits --out comparison.html
  dynamics config show --preset digits --set optimizers.gn.lr=0.3   # the resolved config as TOML
"""


def seed_list(text: str) -> list[int]:
    """"0,1,2" → [0, 1, 2] (distinct integers ≥ 0)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds must list distinct integers >= 0, got {text!r}")
    return seeds


def setting(text: str) -> tuple[str, object]:
    """"optimizers.gn.lr=0.1" → ("optimizers.gn.lr", 0.1): the value parsed as a TOML value (a bare word
    that is not one is taken as a string, so ``model.kind=mlp`` works)."""
    import tomllib

    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set needs dotted.key=value, got {text!r}")
    try:
        return key, tomllib.loads(f"value = {value}")["value"]
    except tomllib.TOMLDecodeError:
        return key, value


def add_config_arguments(parser: argparse.ArgumentParser, *, run_flags: bool = True) -> None:
    parser.add_argument("--preset", help="preset name (default mnist1d, or the config file's preset key)")
    parser.add_argument("--config", type=Path, help="TOML file overriding the preset")
    parser.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE", dest="settings",
                        help="override one dotted config key with a TOML value, e.g. --set optimizers.gn.lr=0.3 "
                             "(repeatable; applied after the preset and --config)")
    parser.add_argument("--data-dir", help="directory (or .npz file) of local data; sets data.data_dir")
    if not run_flags:
        return
    parser.add_argument("--resume", action="store_true", help="continue interrupted stores instead of failing")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or messages")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynamics", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Training dynamics of exact Gauss-Newton vs first-order "
                                                 "optimisers: train, analyse, report.", epilog=EXAMPLES)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="train every optimiser of a preset, analyse, write the report",
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    add_config_arguments(run)
    run.add_argument("--out", type=Path, help="experiment folder (default runs/<name>)")
    run.add_argument("--seeds", type=seed_list, help="comma-separated seeds (default: train.seed)")
    train = commands.add_parser("train", help="train one optimiser into one store")
    add_config_arguments(train)
    train.add_argument("--optimizer", required=True, help="a name of [optimizers] or gn, kgn, sgd, adam, AdamW, ...")
    train.add_argument("--out", type=Path, required=True, help="store path, e.g. runs/one/gn.zarr")
    train.add_argument("--seed", type=int, help="seed (default: train.seed)")
    analyze = commands.add_parser(
        "analyze", help="analyse run stores: every store of an experiment folder, or one store",
        description="Analyse each DIR: an experiment folder (every *.zarr run store in it; the combined "
                    "analysis is written to DIR/analysis.zarr) or a single run store (its analysis is "
                    "written into the store as group 'analysis'). A run still being trained is analysed "
                    "from its committed data and its store is left untouched.")
    analyze.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    report = commands.add_parser(
        "report", help="write DIR/report.html (DIR: an experiment folder or one run store)",
        description="Write the HTML report of an experiment folder (DIR/report.html, figures in "
                    "DIR/figures/) or of a single run store (NAME-report.html beside NAME.zarr). Reuses "
                    "an analysis computed from the current data, else analyses; a run being trained is "
                    "reported from its committed data.")
    report.add_argument("dir", type=Path, metavar="DIR")
    compare = commands.add_parser("compare", help="compare experiment folders in one HTML page")
    compare.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    compare.add_argument("--out", type=Path, required=True, help="HTML file to write")
    config = commands.add_parser("config", help="show the resolved config")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print the resolved config (preset + --config + --set) as TOML")
    add_config_arguments(show, run_flags=False)
    return parser


def config_from(args: argparse.Namespace):
    """The validated :class:`trainers.config.ExperimentConfig` of the config arguments."""
    from trainers.config import load_config

    overrides = dict(args.settings)
    if args.data_dir is not None:
        overrides["data.data_dir"] = args.data_dir
    return load_config(args.preset, args.config, overrides)


def say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


def command_train(args: argparse.Namespace) -> None:
    from trainers import train

    config = config_from(args)
    if args.seed is not None and args.seed < 0:
        raise DynamicsError(f"--seed must be >= 0, got {args.seed}")
    path = train(config, args.optimizer, args.out, seed=args.seed, resume=args.resume, progress=not args.quiet)
    print(path)


def command_run(args: argparse.Namespace) -> None:
    from analysis import analyze_experiment
    from reports import write_report
    from trainers import store_name, train

    config = config_from(args)
    out = args.out or Path("runs") / config.name
    seeds = args.seeds or [config.train.seed]
    for seed in seeds:
        for optimizer in config.train.optimizers:
            path = out / store_name(optimizer, seed, len(seeds))
            train(config, optimizer, path, seed=seed, resume=args.resume, progress=not args.quiet)
            say(args, f"trained {path}")
    analyze_experiment(out)
    say(args, f"analysed {out}")
    print(write_report(out))


def existing_dirs(dirs: list[Path]) -> list[Path]:
    """``dirs`` if each is a directory; else a DynamicsError naming the first that is not."""
    for directory in dirs:
        if not directory.is_dir():
            raise DynamicsError(f"experiment folder '{directory}' does not exist or is not a directory")
    return dirs


def is_run_store(path: Path) -> bool:
    """True when ``path`` is a run store (a zarr group of schema "dynamics.run/…"), not a folder of them."""
    from dynamics.store import check_store

    if not (path / "zarr.json").is_file():
        return False
    try:
        check_store(path)
    except DynamicsError:
        return False
    return True


def command_analyze(args: argparse.Namespace) -> None:
    from analysis import analyze, analyze_experiment

    for path in existing_dirs(args.dirs):
        if is_run_store(path):
            analyze(path)  # written into the store unless a live writer holds it
            print(path)
        else:
            analyze_experiment(path)
            print(path / "analysis.zarr")


def command_report(args: argparse.Namespace) -> None:
    from reports import write_report

    print(write_report(existing_dirs([args.dir])[0]))


def command_compare(args: argparse.Namespace) -> None:
    from reports import compare

    print(compare(existing_dirs(args.dirs), args.out))


def command_config(args: argparse.Namespace) -> None:
    from trainers.config_toml import config_to_toml

    sys.stdout.write(config_to_toml(config_from(args)))


COMMANDS = {"run": command_run, "train": command_train, "analyze": command_analyze,
            "report": command_report, "compare": command_compare, "config": command_config}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dynamics``; returns the exit status (0 ok, 2 user error, 130 Ctrl-C)."""
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except DynamicsError as error:
        print(f"dynamics {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dynamics {args.command}: interrupted; run it again with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
