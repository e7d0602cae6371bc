"""The ``dynamics`` command line, the one composition root of the project.

Subcommands import the upper layers (trainers, analysis, reports) lazily, so ``dynamics --help`` is
fast and the core package never imports them at module level. Exit status (one rule,
:func:`dynamics.errors.exit_status`): 0 done; 1 some runs failed (``run``, ``sweep``) or the file
system failed — a full disk, a read-only file system, missing permission, an I/O error — with one
line naming the path and errno; 2 a user error (:class:`dynamics.errors.DynamicsError`: a bad config
key or file, a missing data file, a foreign or damaged store), one line; Ctrl-C, SIGTERM and SIGHUP
exit with 128 + the signal number (130, 143, 129) and leave a store that ``--resume`` continues.
Every line printed (messages, paths) shows control and bidirectional-formatting characters of user
text as escapes (:func:`dynamics.visible.visible`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

from dynamics.errors import NOT_WRITABLE, DynamicsError, StoreReadOnlyError, exit_status, io_error
from dynamics.visible import visible

SEED_MAX = 2**63 - 1  # as trainers.schema.SEED_MAX (not imported: --help must not import torch)

EXAMPLES = """examples:
  dynamics run                                   # default preset mnist1d: gn, sgd, adam → runs/mnist1d/report.html
  dynamics run --preset digits --seeds 0,1,2     # three seeds per optimiser
  dynamics run --config my.toml --out runs/mine  # a TOML file overriding a preset (preset = "..." inside)
  dynamics run --preset paper-mnist --data-dir ~/data/mnist
  dynamics run --resume                          # continue after Ctrl-C
  dynamics train --optimizer adam --out runs/one/adam.zarr
  dynamics train --optimizer kgn --set optimizers.kgn.lr=0.1 --out runs/one/kgn.zarr   # one key overridden
  dynamics run --preset digits --overwrite       # delete the existing stores and train again
  dynamics analyze runs/mnist1d runs/digits
  dynamics report runs/mnist1d
  dynamics compare runs/mnist1d runs/digits --out comparison.html
  dynamics report runs/mnist1d --watch 30        # regenerate the report every 30 s while runs train
  dynamics export tensorboard runs/mnist1d --out tb   # then: tensorboard --logdir tb
  dynamics config show --preset digits --set optimizers.gn.lr=0.3   # the resolved config as TOML
  dynamics sweep sweep.toml --out runs/sweep      # a [sweep] grid on all cores; again → only what is missing
  dynamics tables runs/mnist1d --write docs/results.md   # regenerate the published result tables
  dynamics unlock runs/mnist1d/gn.zarr           # after the host that wrote it died
"""


def seed_list(text: str) -> list[int]:
    """"0,1,2" → [0, 1, 2] (distinct integers ≥ 0)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or max(seeds) > SEED_MAX or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds must list distinct integers in [0, 2**63 - 1], got {text!r}")
    return seeds


def watch_seconds(text: str) -> float:
    """--watch SECONDS: a finite number > 0."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--watch must be a number of seconds, got {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"--watch must be a number of seconds > 0, got {text}")
    return seconds


def seed_value(text: str) -> int:
    """One seed in [0, 2**63 - 1] (what torch.Generator.manual_seed takes, with room for offsets)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be an integer, got {text!r}") from None
    if not 0 <= seed <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"--seed must be in [0, 2**63 - 1], got {text}")
    return seed


def preset_list() -> str:
    """The shipped presets, found without importing the trainers package (keeps --help fast)."""
    spec = importlib.util.find_spec("trainers")
    folders = spec.submodule_search_locations if spec is not None else None
    if not folders:
        return "(trainers package not found)"
    return ", ".join(sorted(p.stem for p in (Path(list(folders)[0]) / "presets").glob("*.toml")))


def describe(what: str, inputs: str, outputs: str) -> str:
    """A subcommand's --help text: what it does, its inputs and outputs."""
    indent = " " * 9
    return "\n".join([textwrap.fill(what, 100), "", textwrap.fill(f"inputs:  {inputs}", 100, subsequent_indent=indent),
                      textwrap.fill(f"outputs: {outputs}", 100, subsequent_indent=indent)])


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``dynamics CMD: error: ...`` on stderr, exit status 2 (no usage)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


CONFIG_INPUTS = ("a preset (--preset; default mnist1d), a TOML file overriding it (--config; it may name "
                 "its preset), --set overrides, local data (--data-dir) for mnist, cifar10 and npz")


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
    parser.add_argument("--overwrite", action="store_true",
                        help="delete existing run stores at the output paths and train them again")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (terminal), no progress lines (redirected stderr), no messages")
    parser.add_argument("--device", metavar="DEVICE",
                        help="cpu, cuda, cuda:N or auto (CUDA when available); sets train.device (default cpu)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads of each training process; sets train.threads (default 1: `dynamics "
                             "run` then trains one run per core at once, in separate processes); recorded "
                             "in the store, since the count can change float rounding")


def build_parser() -> argparse.ArgumentParser:
    presets = f"presets: {preset_list()}"
    parser = Parser(prog="dynamics", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Training dynamics of exact Gauss-Newton vs first-order "
                                                 "optimisers: train, analyse, report.", epilog=f"{presets}\n\n{EXAMPLES}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, inputs: str, outputs: str, epilog: str = presets) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=describe(summary, inputs, outputs), epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    run = command("run", "train every optimiser of train.optimizers (for each seed), analyse the stores and "
                  "write the report", CONFIG_INPUTS, "DIR/<optimizer>.zarr (or <optimizer>-seed<N>.zarr) run "
                  "stores, DIR/analysis.zarr and DIR/report.html, whose path is printed",
                  epilog=f"{presets}\n\n{EXAMPLES}")
    add_config_arguments(run)
    run.add_argument("--out", type=Path, help="experiment folder DIR (default runs/<name>)")
    run.add_argument("--seeds", type=seed_list, help="comma-separated seeds (default: train.seeds, else train.seed)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="runs trained at once, each in its own process (default: cores // train.threads); "
                          "1 trains them one after the other in this process; the stores are the same")
    add_alignment_argument(run)
    train = command("train", "train one optimiser with one seed into one run store", CONFIG_INPUTS,
                    "the run store at --out (zarr; metrics, checkpoints, parameters, NTK), whose path is printed")
    add_config_arguments(train)
    train.add_argument("--optimizer", required=True, help="a name of [optimizers] or gn, kgn, sgd, adam, AdamW, ... "
                                                          "(any case)")
    train.add_argument("--out", type=Path, required=True, help="store path, e.g. runs/one/gn.zarr")
    train.add_argument("--seed", type=seed_value, help="seed (default: train.seed)")
    analyze = command("analyze", "analyse run stores: every store of an experiment folder, or one store",
                      "DIR...: experiment folders (every *.zarr run store in them) or single run stores; a run "
                      "still being trained is analysed from its committed data and its store is left untouched",
                      "DIR/analysis.zarr for a folder (the combined analysis), group 'analysis' inside a single "
                      "run store; the paths are printed")
    analyze.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    analyze.add_argument("--out", type=Path, metavar="PATH",
                         help="write the analysis to the zarr store PATH instead (one DIR only): the combined "
                              "analysis of a folder, or the analysis group of one run store (which is then not "
                              "written into); for stores on a read-only file system")
    analyze.add_argument("--quiet", action="store_true", help="no progress bar or progress lines")
    add_alignment_argument(analyze)
    report = command("report", "write the HTML report of an experiment folder or of one run store",
                     "DIR: an experiment folder or one run store (reuses an analysis computed from the current "
                     "data, else analyses; a run being trained is reported from its committed data)",
                     "DIR/report.html with figures in DIR/figures/, or NAME-report.html beside NAME.zarr; "
                     "the path is printed")
    report.add_argument("dir", type=Path, metavar="DIR")
    report.add_argument("--watch", nargs="?", const=30.0, type=watch_seconds, metavar="SECONDS",
                        help="keep the report up to date while runs train: look every SECONDS (default 30) and "
                             "write it again when a store committed new data; Ctrl-C stops (exit status 0)")
    report.add_argument("--out", type=Path, metavar="FILE.html",
                        help="write the report to FILE.html (figures in FILE-figures/) instead of the default "
                             "place, e.g. for a folder on a read-only file system")
    add_alignment_argument(report)
    compare = command("compare", "compare experiment folders in one HTML page", "experiment folders DIR",
                      "the HTML file --out")
    compare.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    compare.add_argument("--out", type=Path, required=True, help="HTML file to write")
    add_alignment_argument(compare)
    config = command("config", "inspect configs", "see `dynamics config show --help`", "see the action")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print the resolved config as TOML", epilog=presets,
                              description=describe("print the resolved config (preset, then --config, then --set) "
                                                   "as TOML", CONFIG_INPUTS, "TOML on stdout (a file --config "
                                                   "reads back to the same config)"),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(show, run_flags=False)
    sweep = command("sweep", "train a grid of configs (the [sweep] table of CONFIG.toml) as dask.distributed "
                    "tasks; running it again does only what is missing",
                    "CONFIG.toml: a config file (preset = ..., tables) plus [sweep] with dotted keys -> lists of "
                    "values, e.g. \"optimizers.gn.lr\" = [0.03, 0.1]; --set overrides for every point; a local cluster of --workers single-threaded "
                    "processes, or an existing cluster (--scheduler)",
                    "DIR/sweep.json (grid, run names, status of each run) and DIR/runs/<run>.zarr; the manifest's "
                    "path is printed. Then `dynamics analyze DIR` and `dynamics report DIR`")
    add_sweep_arguments(sweep)
    tables = command("tables", "print (or write into README/docs) the result tables of run folders: the machine, "
                     "how trained the models are, the paper's claims with margins, and the spread over further "
                     "folders of the same command run elsewhere",
                     "DIR...: experiment folders written by `dynamics run` (findings.json, machine.json); the first "
                     "is the published run, the others the same command on other machines or kernels",
                     "Markdown on stdout; with --write, the blocks between <!-- results:NAME:begin --> and "
                     "<!-- results:NAME:end --> (the claims) and <!-- results:NAME-spread:begin/end --> (the "
                     "spread over the folders) of each FILE are replaced")
    tables.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    tables.add_argument("--name", help="the block's name in the markers (default: the first folder's name)")
    tables.add_argument("--write", type=Path, action="append", default=[], metavar="FILE",
                        help="replace the block in FILE (repeatable), e.g. --write docs/results.md")
    export = command("export", "write run stores in another tool's format (TensorBoard event files)",
                     "see `dynamics export tensorboard --help`", "see the format")
    formats = export.add_subparsers(dest="format", required=True, metavar="FORMAT")
    tensorboard = formats.add_parser(
        "tensorboard", help="metrics, checkpoint scalars and per-checkpoint analysis as TensorBoard event files",
        description=describe("write a run store's metrics, checkpoint scalars and analysis (NTK alignment, CKA, "
                             "effective ranks, per-step loss changes) as TensorBoard scalars; the stores are "
                             "only read (a run being trained is exported as far as it is committed)",
                             "STORE (one run store) or DIR (every run store of an experiment or sweep folder); "
                             "a stored analysis computed from the current data, else one computed here "
                             "(not written into the store)",
                             "LOGDIR/<run>/events.out.tfevents.* per run (an earlier export there is "
                             "replaced); the path LOGDIR is printed. Then: tensorboard --logdir LOGDIR"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    tensorboard.add_argument("source", type=Path, metavar="STORE|DIR")
    tensorboard.add_argument("--out", type=Path, required=True, metavar="LOGDIR", help="TensorBoard log folder")
    tensorboard.add_argument("--no-analysis", action="store_true",
                             help="only the store's own metrics and checkpoint scalars (no analysis is computed)")
    add_alignment_argument(tensorboard)
    unlock = command("unlock", "remove the lock of a run store whose writer is gone (e.g. its host died)",
                     "STORE: a run store whose lock file names a process that no longer runs; refused while "
                     "a process on this machine holds the lock", "the lock file is removed; the holder it "
                     "named is printed")
    unlock.add_argument("store", type=Path, metavar="STORE")
    return parser


def add_alignment_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--centered-alignment", action="store_true",
                        help="NTK alignments (to init, velocity, to the labels) as centred kernel alignment "
                             "A(HK1H, HK2H), H = I - 11^T/N (Cortes et al. 2012), instead of the uncentred "
                             "A(K1, K2); an analysis of the other kind is recomputed, and the report says "
                             "which one it shows")


def add_sweep_arguments(sweep: argparse.ArgumentParser) -> None:
    sweep.add_argument("config", type=Path, metavar="CONFIG.toml", help="config file with a [sweep] table")
    sweep.add_argument("--out", type=Path, required=True, help="sweep folder (manifest sweep.json, runs/)")
    sweep.add_argument("--workers", type=int, help="worker processes of the local cluster (default: one per core)")
    sweep.add_argument("--scheduler", metavar="ADDRESS", help="use an existing dask cluster, e.g. tcp://host:8786")
    sweep.add_argument("--retries", type=int, default=2,
                       help="extra attempts of a run whose failure may go away on a retry: a lost worker, a "
                            "locked store, a file-system error (default 2); a deterministic failure (a config "
                            "error of its grid point, a divergence) is not retried")
    sweep.add_argument("--retry-failed", action="store_true",
                       help="start the failed runs again, deterministic failures included (after fixing their "
                            "cause), with a new budget of attempts")
    sweep.add_argument("--force", action="store_true", help="accept a config that differs from DIR/sweep.json; "
                                                            "runs whose config changed are trained again")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    sweep.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE", dest="settings",
                       help="override one dotted config key at every point of the grid, e.g. --set "
                            "train.epochs=5 (repeatable; after the file's keys; a swept key is refused)")


def command_sweep(args: argparse.Namespace) -> int:
    """Train the sweep; exit status 0 when every run is complete, 1 when runs failed (named on
    stderr, also with --quiet), 128 + the signal number after SIGINT, SIGTERM or SIGHUP."""
    if not args.quiet and args.config.is_file():   # at once (the imports below take seconds); a path
        # that is no file gets its one-line error instead
        print(visible(f"dynamics sweep: planning {args.config} into {args.out}"), file=sys.stderr, flush=True)
    if args.scheduler is None and not sweep_looks_finished(args.out):
        # the local cluster's forkserver imports torch and the trainers while this process does the same
        from dynamics.cluster import SWEEP_MODULES, start_forkserver
        start_forkserver(SWEEP_MODULES)
    from trainers.signals import exit_status as signal_status
    from trainers.sweep import failed_runs, print_summary, run_sweep

    try:
        manifest = run_sweep(args.config, args.out, workers=args.workers, scheduler=args.scheduler,
                             retries=args.retries, force=args.force, quiet=args.quiet,
                             overrides=dict(args.settings), retry_failed=args.retry_failed)
    except KeyboardInterrupt as stop:
        name = getattr(stop, "signal_name", "SIGINT")
        print(f"dynamics sweep: interrupted by {name}; run the same command again to continue", file=sys.stderr)
        return signal_status(stop)
    print_summary(manifest, args.quiet)
    say_path(args.out / "sweep.json")
    failed = failed_runs(manifest)
    if failed:
        print(visible(f"dynamics sweep: {len(failed)} of {len(manifest['runs'])} runs failed: {', '.join(failed)} "
                      f"(errors in {args.out / 'sweep.json'})"), file=sys.stderr)
        return 1
    return 0


def sweep_looks_finished(folder: Path) -> bool:
    """Whether ``folder``'s manifest records every run as complete or failed (then no cluster is likely
    to start, and no forkserver is started ahead of it); False without a readable manifest."""
    from dynamics.errors import StoreError
    from dynamics.sweep_manifest import read_manifest

    try:
        manifest = read_manifest(folder) if folder.is_dir() else None
    except StoreError:
        return False
    runs = manifest["runs"].values() if manifest is not None and isinstance(manifest["runs"], dict) else None
    return bool(runs) and all(isinstance(r, dict) and r.get("status") in ("complete", "failed") for r in runs)


def config_from(args: argparse.Namespace):
    """The validated :class:`trainers.config.ExperimentConfig` of the config arguments."""
    from trainers.config import load_config

    overrides = dict(args.settings)
    if args.data_dir is not None:
        overrides["data.data_dir"] = args.data_dir
    if getattr(args, "device", None) is not None:
        overrides["train.device"] = args.device
    if getattr(args, "threads", None) is not None:
        from trainers.runtime import check_threads

        overrides["train.threads"] = check_threads(args.threads)
    return load_config(args.preset, args.config, overrides)


def check_target(path: Path, args: argparse.Namespace) -> None:
    """DynamicsError unless ``path`` can receive a run store under --resume / --overwrite."""
    if args.resume and args.overwrite:
        raise DynamicsError("--resume and --overwrite exclude each other (--resume continues a store, "
                            "--overwrite deletes it and trains again)")
    if path.exists() and not path.is_dir():
        raise DynamicsError(f"--out '{path}' is an existing file, not a run store; choose another path")
    if path.is_dir() and any(path.iterdir()) and not (args.resume or args.overwrite):
        raise DynamicsError(f"'{path}' already exists; pass --resume to continue it or --overwrite to delete it "
                            f"and train again")


def say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(visible(message), file=sys.stderr)


def command_train(args: argparse.Namespace) -> None:
    from trainers import train

    from trainers.runtime import apply_threads

    config = config_from(args)
    check_target(args.out, args)
    apply_threads(config.train.threads)   # here and in child processes (BLAS pools start with it)
    path = train(config, args.optimizer, args.out, seed=args.seed, resume=args.resume, overwrite=args.overwrite,
                 progress=not args.quiet)
    say_path(path)


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


def refuse_centred_sweep(args: argparse.Namespace, path: Path) -> None:
    """Sweep analyses and reports have no centred alignment yet: say so rather than ignore the flag."""
    if args.centered_alignment:
        raise DynamicsError(f"--centered-alignment is not available for sweep folders ('{path}'); analyse its "
                            "runs one by one (dynamics analyze RUN.zarr --centered-alignment)")


def command_analyze(args: argparse.Namespace) -> None:
    from analysis import analyze, analyze_experiment
    from dynamics.sweep_manifest import is_sweep

    if args.out is not None and len(args.dirs) != 1:
        raise DynamicsError(f"--out names one output, so it takes one DIR, got {len(args.dirs)}")
    progress = "off" if args.quiet else ("auto" if sys.stderr.isatty() else "lines")
    for path in existing_dirs(args.dirs):
        if is_sweep(path):  # every run of a sweep, as tasks on a local dask cluster
            refuse_centred_sweep(args, path)
            if args.out is not None:
                raise DynamicsError(f"--out is not available for sweep folders ('{path}'); analyse its runs one "
                                    f"by one (dynamics analyze RUN.zarr --out PATH)")
            from analysis.sweep import analyze_sweep
            analyze_sweep(path)
            say_path(path / "sweep.json")
        elif is_run_store(path):
            with notes("analyze") as not_written:
                result = analyze(path, centered_alignment=args.centered_alignment, progress=progress,
                                 write=args.out is None)   # into the store unless a live writer holds it
            if args.out is not None:
                from analysis.store_io import write_dataset
                write_dataset(args.out, result)
                say_path(args.out)
            elif not not_written:
                say_path(path)
        else:
            with notes("analyze") as not_written:
                analyze_experiment(path, out=args.out, centered_alignment=args.centered_alignment,
                                   progress=progress)
            if args.out is not None or not not_written:
                say_path(args.out if args.out is not None else path / "analysis.zarr")


def say_path(path: Path) -> None:
    """Print an output's path on stdout (one line; control characters shown as escapes)."""
    print(visible(path))


@contextlib.contextmanager
def notes(command: str) -> Iterator[list[str]]:
    """Inside this block, a NotWrittenWarning or StaleAnalysisWarning is printed as one line
    ``dynamics COMMAND: note: ...`` on stderr instead of a Python warning; the block's list receives
    the NotWrittenWarning messages (the results that stayed in memory)."""
    not_written: list[str] = []
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            yield not_written
    finally:   # outside the recording block: the other warnings are shown as usual, not recorded again
        _print_notes(command, caught, not_written)


def _print_notes(command: str, caught: list, not_written: list[str]) -> None:
    from dynamics.errors import NotWrittenWarning, StaleAnalysisWarning

    for warning in caught:
        if issubclass(warning.category, (NotWrittenWarning, StaleAnalysisWarning)):
            if issubclass(warning.category, NotWrittenWarning):
                not_written.append(str(warning.message))
            print(f"dynamics {command}: note: {visible(warning.message)}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


def command_report(args: argparse.Namespace) -> None:
    from dynamics.sweep_manifest import is_sweep
    from reports import write_report

    directory = existing_dirs([args.dir])[0]
    if is_sweep(directory):
        refuse_centred_sweep(args, directory)
        from reports.sweep import write_sweep_report

        def generate() -> Path:
            return write_sweep_report(directory, args.out)
    else:
        def generate() -> Path:
            with notes("report"):
                try:
                    return write_report(directory, args.out, centered_alignment=args.centered_alignment)
                except OSError as err:
                    if err.errno not in NOT_WRITABLE or args.out is not None:
                        raise
                    where = f"{err.filename}: " if err.filename else ""
                    raise StoreReadOnlyError(f"cannot write the report: {where}{io_error('', err).reason}; write "
                                             f"it elsewhere with --out FILE.html", err.errno) from None
    if args.watch is None:
        say_path(generate())
        return
    from reports.watch import watch_report

    print(visible(f"dynamics report: watching {directory} every {args.watch:g} s (Ctrl-C stops)"), file=sys.stderr)
    try:
        watch_report(generate, lambda: run_stores_in(directory), interval=args.watch, stream=sys.stdout)
    except KeyboardInterrupt:
        print(visible(f"dynamics report: stopped watching {directory}"), file=sys.stderr)


def command_compare(args: argparse.Namespace) -> None:
    from reports import compare

    say_path(compare(existing_dirs(args.dirs), args.out, centered_alignment=args.centered_alignment))


def run_stores_in(source: Path) -> list[Path]:
    """The run stores ``source`` names: itself, the stores of a sweep (``runs/``) or of an experiment folder."""
    from dynamics.sweep_manifest import RUNS_FOLDER, is_sweep

    if is_run_store(source):
        return [source]
    folder = source / RUNS_FOLDER if is_sweep(source) else source
    return [p for p in sorted(folder.glob("*.zarr")) if p.is_dir() and is_run_store(p)]


def source_stores(source: Path) -> list[Path]:
    """:func:`run_stores_in`, or DynamicsError when there is none."""
    stores = run_stores_in(source)
    if not stores:
        raise DynamicsError(f"'{source}' is neither a run store nor a folder holding run stores (*.zarr)")
    return stores


def command_export(args: argparse.Namespace) -> None:
    try:
        from dynamics.integrations.tensorboard import export_store
    except ImportError as error:
        raise DynamicsError(str(error)) from None
    for store in source_stores(existing_dirs([args.source])[0]):
        analysis = None if args.no_analysis else store_analysis(store, args.centered_alignment)
        folder, count = export_store(store, args.out, analysis)
        say(args, f"exported {store} -> {folder} ({count} scalars)")
    say_path(args.out)


def store_analysis(store: Path, centered_alignment: bool):
    """The run's analysis: the stored one when it is fresh, else computed without writing into the store."""
    from analysis import analyze
    from analysis.store_io import fresh_analysis

    stored, _ = fresh_analysis(store, centered_alignment=centered_alignment)
    return stored if stored is not None else analyze(store, write=False, centered_alignment=centered_alignment)


def command_unlock(args: argparse.Namespace) -> None:
    from dynamics.store.lock import unlock

    print(visible(f"removed the lock of {args.store} held by {unlock(args.store)}"))


def command_config(args: argparse.Namespace) -> None:
    from trainers.config_toml import config_to_toml

    sys.stdout.write(config_to_toml(config_from(args)))


def command_run(args: argparse.Namespace) -> int:
    from dynamics.cli_run import command_run as run

    return run(args)


def command_tables(args: argparse.Namespace) -> None:
    from dynamics.cli_run import command_tables as tables

    tables(args)


COMMANDS = {"run": command_run, "train": command_train, "analyze": command_analyze,
            "report": command_report, "compare": command_compare, "config": command_config,
            "sweep": command_sweep, "tables": command_tables, "unlock": command_unlock,
            "export": command_export}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dynamics``; returns the exit status (module docstring: 0 ok; 1 some runs failed
    or the file system failed, e.g. a full disk or a read-only file system; 2 user error; 128 + signal
    number when stopped by SIGINT (130), SIGTERM (143) or SIGHUP (129))."""
    args = build_parser().parse_args(argv)
    try:
        status = COMMANDS[args.command](args) or 0
    except DynamicsError as error:
        print(f"dynamics {args.command}: error: {visible(error)}", file=sys.stderr)
        return exit_status(error)
    except OSError as error:   # a full disk, a read-only file system: one line with path and errno
        where = f"{error.filename}: " if error.filename else ""
        code = errno.errorcode.get(error.errno, error.errno) if error.errno else type(error).__name__
        print(f"dynamics {args.command}: error: {visible(where)}{visible(error.strerror or error)} ({code})",
              file=sys.stderr)
        return exit_status(error)
    except KeyboardInterrupt as stop:   # Ctrl-C, or SIGTERM/SIGHUP as trainers.signals.Stopped
        name = getattr(stop, "signal_name", "SIGINT")
        print(f"dynamics {args.command}: interrupted by {name}; run it again with --resume to continue",
              file=sys.stderr)
        return getattr(stop, "exit_status", 130)
    return status


if __name__ == "__main__":
    sys.exit(main())
