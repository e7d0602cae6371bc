"""``dynamics sweep`` on a real dask LocalCluster (2 worker processes): dedup, idempotent re-runs,
a worker SIGKILLed mid-run, the whole sweep SIGKILLed / SIGTERMed and re-run, failures recorded."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dynamics
from dynamics.errors import ConfigError, DynamicsError
from dynamics.sweep_manifest import read_manifest, store_status
from trainers.sweep import SweepConflict, run_sweep
from trainers.sweep_plan import plan_sweep

ROOT = Path(__file__).resolve().parents[2]

SWEEP = """preset = "digits"
name = "tiny-sweep"
[data]
n_train = 160
n_test = 60
probe_size = 12
[model]
hidden = 24
depth = 2
[train]
optimizers = ["gn", "adam"]
steps = {steps}
batch_size = 16
checkpoints = 6
[sweep]
"optimizers.gn.lr" = [0.05, 0.1]
"train.seed" = [0, 1]
"optimizers.adam.lr" = [0.001, 1e300]
"""


DIVERGING = '"optimizers.adam.lr" = [0.001, 1e300]\n'
FAILING = {"adam_seed-0_lr-1e+300", "adam_seed-1_lr-1e+300"}   # Adam with lr 1e300 diverges at once


def sweep_file(folder: Path, steps: int = 30, extra: str | None = None) -> Path:
    path = folder / "sweep.toml"
    text = SWEEP.format(steps=steps)
    path.write_text(text.replace(DIVERGING, extra) if extra is not None else text)
    return path


def read_run(store: Path):
    tree = dynamics.open_run(store)
    metrics = tree["metrics"].to_dataset().drop_vars("time").load()
    return metrics, tree["checkpoints"].to_dataset().load(), tree["params"].to_dataset().load(), tree.attrs["status"]


def assert_same_runs(folder: Path, reference: Path) -> None:
    """Every run of sweep ``folder`` equals (bit for bit) the same run of sweep ``reference``; the
    diverging runs failed in both."""
    runs = read_manifest(folder)["runs"]
    assert set(runs) == set(read_manifest(reference)["runs"])
    for name, run in runs.items():
        if name in FAILING:
            assert run["status"] == "failed" and "diverged" in run["error"], run
            continue
        got, want = read_run(folder / run["store"]), read_run(reference / run["store"])
        assert got[3] == want[3] == "complete", name
        for a, b in zip(got[:3], want[:3]):
            assert a.identical(b), name


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dynamics.cli", "sweep", *args]


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted sweep of the default sweep file (2 workers, one retry)."""
    folder = tmp_path_factory.mktemp("reference")
    run_sweep(sweep_file(folder), folder / "out", workers=2, retries=1, quiet=True)
    return folder / "out"


def test_reference_sweep_dedups_and_records_failures(reference):
    manifest = read_manifest(reference)
    runs = manifest["runs"]
    assert len(manifest["points"]) == 8 and len(runs) == 8   # 4 GN runs; Adam once per (seed, adam lr)
    assert sorted(p.name for p in (reference / "runs").glob("*.zarr")) == sorted(f"{n}.zarr" for n in runs)
    for name, run in runs.items():
        if name in FAILING:   # recorded, never stopped the others; deterministic: started once, not retried
            assert run["status"] == "failed" and run["failures"] == run["attempts"] == 1, run
            assert "diverged" in run["error"] and run["retry"] is False
        else:
            assert run["status"] == "complete" and run["attempts"] == 1 and run["failures"] == 0, run
            assert store_status(reference / run["store"]) == "complete"
            assert json.loads(dynamics.open_run(reference / run["store"]).attrs["config"])["optimizer"] == \
                run["optimizer"]


def test_runs_start_longest_first(tmp_path):
    """One worker runs the tasks in the driver's order: by expected cost (training length, x2 for
    exact GN), not in plan order (which is gn, adam at steps 10, then at steps 40)."""
    path = tmp_path / "lpt.toml"
    path.write_text(SWEEP.format(steps=10).split("[sweep]")[0] + '[sweep]\n"train.steps" = [10, 40]\n')
    run_sweep(path, tmp_path / "out", workers=1, quiet=True)
    runs = read_manifest(tmp_path / "out")["runs"]
    assert all(run["status"] == "complete" for run in runs.values())
    # a store's probe is written once, when its run starts
    def start(name: str) -> float:
        return (tmp_path / "out" / runs[name]["store"] / "probe" / "x" / "zarr.json").stat().st_mtime

    started = sorted(runs, key=start)
    cost = {n: runs[n]["config"]["train"]["steps"] * (2 if runs[n]["optimizer"] == "gn" else 1) for n in runs}
    assert [cost[n] for n in started] == [80, 40, 20, 10], started


# ---------------------------------------------------------------------------- planning (no cluster)
def test_plan_grid_dedup_and_names(tmp_path):
    plan = plan_sweep(sweep_file(tmp_path, extra=""))
    assert [p["values"] for p in plan.points] == [
        {"optimizers.gn.lr": 0.05, "train.seed": 0}, {"optimizers.gn.lr": 0.05, "train.seed": 1},
        {"optimizers.gn.lr": 0.1, "train.seed": 0}, {"optimizers.gn.lr": 0.1, "train.seed": 1}]
    # 4 GN runs, and Adam once per seed (not once per GN learning rate)
    assert sorted(plan.runs) == ["adam_seed-0", "adam_seed-1", "gn_lr-0.05_seed-0", "gn_lr-0.05_seed-1",
                                 "gn_lr-0.1_seed-0", "gn_lr-0.1_seed-1"]
    assert plan.points[0]["runs"]["adam"] == plan.points[2]["runs"]["adam"] == "adam_seed-0"
    adam = plan.runs["adam_seed-1"].config
    assert list(adam["optimizers"]) == ["adam"] and adam["train"]["optimizers"] == ["adam"]
    assert adam["train"]["seed"] == 1 and adam["train"]["steps"] == 30
    gn = plan.runs["gn_lr-0.1_seed-0"].config
    assert gn["optimizers"]["gn"]["lr"] == 0.1 and gn["train"]["seed"] == 0
    # plans are deterministic
    again = plan_sweep(sweep_file(tmp_path, extra=""))
    assert {n: s.digest for n, s in again.runs.items()} == {n: s.digest for n, s in plan.runs.items()}
    assert again.digest == plan.digest


def test_names_are_safe_and_distinct(tmp_path):
    path = tmp_path / "odd.toml"
    path.write_text('preset = "digits"\n[train]\noptimizers = ["sgd", "adam"]\n[sweep]\n'
                    '"model.activation" = ["relu", "tanh"]\n"optimizers.sgd.lr" = [1e-5, 0.5]\n'
                    '"data.split_seed" = [0, 3]\n"train.seed" = [2]\n')
    plan = plan_sweep(path)
    assert len(plan.runs) == 2 * 2 * 2 * 1 + 2 * 2  # sgd at every point; adam not per sgd lr
    for name in plan.runs:
        assert re.fullmatch(r"[A-Za-z0-9~][A-Za-z0-9.+~_\-]*", name), name
    assert "sgd_activation-tanh_lr-1e-05_split_seed-3_seed-2" in plan.runs
    assert "adam_activation-relu_split_seed-0_seed-2" in plan.runs
    odd = tmp_path / "odd2.toml"
    odd.write_text('preset = "digits"\n[train]\noptimizers = ["sgd"]\n[sweep]\n"name" = ["a"]\n')
    with pytest.raises(ConfigError, match="sweep.name cannot be swept"):
        plan_sweep(odd)
    assert len({n.lower() for n in plan.runs}) == len(plan.runs)


@pytest.mark.parametrize("table, piece", [
    ("", "no [sweep] table"),
    ("[sweep]\n", "non-empty table"),
    ('[sweep]\n"train.seed" = 3\n', "sweep.train.seed must be a non-empty list"),
    ('[sweep]\n"train.seed" = []\n', "sweep.train.seed must be a non-empty list"),
    ('[sweep]\n"optimizers.gn.lr" = [0.1, 0.1]\n', "lists a value twice"),
    ('[sweep]\n"train.optimizers" = [["gn"], ["adam"]]\n', "train.optimizers cannot be swept"),
    ('[sweep]\n"model.width" = [1, 2]\n', "model.width"),
    ('[sweep]\n"optimizers.gn.lr" = [0.1, -1.0]\n', "optimizers.gn.lr"),
    ('[sweep]\n"train.seed" = [{a = 1}]\n', "sweep.train.seed holds"),
])
def test_bad_sweep_files_name_the_key(tmp_path, table, piece):
    path = tmp_path / "bad.toml"
    path.write_text('preset = "digits"\n' + table)
    with pytest.raises(ConfigError, match=re.escape(piece)):
        plan_sweep(path)


def test_cli_bad_file_exits_2_with_one_line(tmp_path, capsys):
    from dynamics.cli import main
    path = tmp_path / "bad.toml"
    path.write_text('preset = "digits"\n[sweep]\n"model.width" = [1, 2]\n')
    assert main(["sweep", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "model.width" in err
    assert main(["sweep", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "out")]) == 2
    assert "missing.toml" in capsys.readouterr().err


# ---------------------------------------------------------------------------- on the cluster
def test_finished_sweep_reruns_without_a_cluster(reference, tmp_path):
    """Nothing to do → no cluster is contacted (an unreachable scheduler would fail) and no store changes."""
    before = {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file() and p.name != "sweep.json"}
    manifest = run_sweep(sweep_file(tmp_path), reference, scheduler="tcp://127.0.0.1:9", retries=1, quiet=True)
    assert manifest == read_manifest(reference)
    assert sum(run["status"] == "complete" for run in manifest["runs"].values()) == 6
    after = {p: p.stat().st_mtime_ns for p in reference.rglob("*") if p.is_file() and p.name != "sweep.json"}
    assert after == before


def test_other_config_is_refused_unless_forced(reference, tmp_path, capsys):
    from dynamics.cli import main
    changed = sweep_file(tmp_path, steps=61)
    assert main(["sweep", str(changed), "--out", str(reference), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "train.steps" in err and "--force" in err
    assert read_manifest(reference)["config"]["train"]["steps"] == 30   # untouched


@pytest.mark.slow
def test_worker_killed_mid_run_is_resumed_bit_exactly(reference, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(cli(str(sweep_file(tmp_path)), "--out", str(out), "--workers", "2", "--quiet"),
                               env=cli_env(), stderr=subprocess.PIPE, text=True)
    killed, name = kill_a_writer(out, process)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err   # the diverging runs failed
    assert not alive(killed)
    assert_same_runs(out, reference)
    run = read_manifest(out)["runs"][name]   # lost with its worker, started again: two starts
    assert run["status"] == "complete" and run["attempts"] == 2 and run["failures"] == 1, run


@pytest.mark.slow
def test_sweep_killed_and_rerun_retrains_nothing_complete(reference, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(cli(str(sweep_file(tmp_path)), "--out", str(out), "--workers", "2", "--quiet"),
                               env=cli_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        stores = list((out / "runs").glob("*.zarr")) if (out / "runs").is_dir() else []
        states = [store_status(s) for s in stores if (s / "zarr.json").is_file()]
        if "complete" in states and "running" in states:
            break
        time.sleep(0.02)
    if process.poll() is not None:
        pytest.skip("the sweep finished before it could be killed")
    process.kill()
    process.communicate(timeout=60)
    complete = {s: (s / "zarr.json").stat().st_mtime_ns for s in (out / "runs").glob("*.zarr")
                if store_status(s) == "complete"}
    assert complete
    result = subprocess.run(cli(str(sweep_file(tmp_path)), "--out", str(out), "--workers", "2", "--quiet"),
                            env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "runs failed" in result.stderr, result.stderr   # the diverging runs
    assert {s: (s / "zarr.json").stat().st_mtime_ns for s in complete} == complete   # not retrained
    assert_same_runs(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_sigterm_sigint_or_sighup_leaves_every_run_resumable(reference, tmp_path, sig):
    out = tmp_path / "out"
    process = subprocess.Popen(cli(str(sweep_file(tmp_path)), "--out", str(out), "--workers", "2", "--quiet"),
                               env=cli_env(), stderr=subprocess.PIPE, text=True)
    wait_for_running_store(out, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the sweep finished before the signal arrived")
    assert process.returncode == 128 + sig, err
    # its last line is the driver's; no traceback of ours (a loaded machine may make distributed log a
    # heartbeat's failed read while the cluster closes)
    assert err.strip().splitlines()[-1] == (f"dynamics sweep: interrupted by {signal.Signals(sig).name}; run the "
                                            f"same command again to continue"), err
    assert "/trainers/" not in err and "/dynamics/" not in err, err
    manifest = read_manifest(out)
    statuses = {run["status"] for run in manifest["runs"].values()}
    assert statuses <= {"complete", "interrupted", "pending"} and "interrupted" in statuses, manifest["runs"]
    assert not (out / ".lock").exists() and not (out / ".sweep-stop").exists()
    run_sweep(sweep_file(tmp_path), out, workers=2, retries=1, quiet=True)
    assert_same_runs(out, reference)


def test_force_with_a_smaller_grid_keeps_the_runs_that_remain(reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    smaller = sweep_file(tmp_path, extra='"optimizers.adam.lr" = [0.001]\n')
    with pytest.raises(SweepConflict):
        run_sweep(smaller, out, scheduler="tcp://127.0.0.1:9", quiet=True)
    manifest = run_sweep(smaller, out, scheduler="tcp://127.0.0.1:9", force=True, quiet=True)  # nothing to train
    assert len(manifest["runs"]) == 6 and all(run["status"] == "complete" for run in manifest["runs"].values())
    assert manifest["sweep"]["optimizers.adam.lr"] == [0.001]


# ---------------------------------------------------------------------------- helpers
def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").is_file() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def wait_for_running_store(out: Path, process, min_step: int = 1) -> Path:
    """A store of ``out`` being written (committed step >= ``min_step``); skips if the sweep ended."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        for store in sorted((out / "runs").glob("*.zarr")) if (out / "runs").is_dir() else []:
            try:
                attrs = json.loads((store / "zarr.json").read_text())["attributes"]
                step = json.loads(attrs["committed"])["step"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if attrs.get("status") == "running" and step is not None and step >= min_step \
                    and (store / ".lock").is_file():
                return store
        time.sleep(0.01)
    pytest.skip("no run was caught while running")


def kill_a_writer(out: Path, process) -> tuple[int, str]:
    """SIGKILL the worker process that writes a store of ``out`` mid-run; its pid and the run's name."""
    store = wait_for_running_store(out, process, min_step=10)
    pid = json.loads((store / ".lock").read_text())["pid"]
    assert pid != process.pid
    os.kill(pid, signal.SIGKILL)
    return pid, store.name.removesuffix(".zarr")


@pytest.mark.slow
def test_existing_scheduler_runs_the_sweep(tmp_path):
    """--scheduler: the runs go to a cluster started elsewhere (here: a LocalCluster of this test)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        manifest = run_sweep(sweep_file(tmp_path, steps=4, extra=""), tmp_path / "out",
                             scheduler=cluster.scheduler_address, quiet=True)
    assert len(manifest["runs"]) == 6
    assert all(run["status"] == "complete" for run in manifest["runs"].values())
    with pytest.raises(DynamicsError, match="--workers applies to the local cluster only"):
        run_sweep(sweep_file(tmp_path, steps=5, extra=""), tmp_path / "other", scheduler="tcp://127.0.0.1:9",
                  workers=2, quiet=True)


def test_sweep_prints_progress_from_the_start(tmp_path):
    """Issue #25 §2: `dynamics sweep` printed nothing for 77 s. Now a line at once (before its imports
    and the cluster), each run's progress lines named by the run, and a line as each run ends."""
    path = tmp_path / "small.toml"
    path.write_text(SWEEP.format(steps=12).replace('optimizers = ["gn", "adam"]', 'optimizers = ["adam"]')
                    .replace('"optimizers.gn.lr" = [0.05, 0.1]\n', "").replace(DIVERGING, ""))
    start = time.monotonic()
    process = subprocess.Popen(cli(str(path), "--out", str(tmp_path / "out"), "--workers", "2"), env=cli_env(),
                               stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    seconds = time.monotonic() - start
    rest = process.stderr.read()
    assert process.wait(timeout=300) == 0, rest
    assert first.startswith("dynamics sweep: planning") and seconds < 60, (first, seconds)
    assert "dynamics sweep: 2 of 2 runs to train (0 already complete) on 2 local worker process(es)" in rest
    for name in ("adam_seed-0", "adam_seed-1"):
        assert f"{name}: step 12/12 (100%)" in rest and f"dynamics sweep: {name} complete" in rest
    assert "(2 of 2 runs done)" in rest


# ---------------------------------------------------------------------------- bookkeeping (issue 22 §3)
def test_failed_runs_make_the_exit_status_1_and_are_named(reference, tmp_path, capsys):
    from dynamics.cli import main
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    assert main(["sweep", str(sweep_file(tmp_path)), "--out", str(out), "--retries", "1", "--quiet",
                 "--scheduler", "tcp://127.0.0.1:9"]) == 1   # nothing is retried: no cluster is needed
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dynamics sweep: 2 of 8 runs failed: ")
    assert all(name in err[0] for name in FAILING) and str(out / "sweep.json") in err[0]
    assert main(["sweep", str(sweep_file(tmp_path)), "--out", str(out), "--retries", "1",
                 "--scheduler", "tcp://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "failed adam_seed-0_lr-1e+300 after 1 attempt(s) (deterministic: not retried): Diverged:" in err


def test_only_failures_that_can_go_away_are_retried():
    from distributed import KilledWorker

    from dynamics.errors import StoreIOError, StoreLockedError
    from trainers.failures import Diverged
    from trainers.sweep_driver import record, wanted
    from trainers.sweep_worker import retryable
    assert all(retryable(e) for e in (OSError(28, "full"), MemoryError(), StoreLockedError("x"), StoreIOError("y")))
    assert not any(retryable(e) for e in (ConfigError("x"), Diverged("y"), RuntimeError("z"), ValueError("w"),
                                          DynamicsError("v")))
    run = {"status": "running", "attempts": 0, "failures": 0}
    record(run, {"status": "failed", "trained": True, "retry": True, "error": "OSError: full", "seconds": 1.0})
    assert run["attempts"] == 1 and run["retry"] is True and wanted(run, 1) and not wanted(run, 0)
    record(run, {"status": "failed", "trained": False, "retry": True, "error": "StoreLockedError: x", "seconds": 1})
    assert run["attempts"] == 1 and run["failures"] == 2 and not wanted(run, 1)   # it never started
    run = {"status": "running", "attempts": 0, "failures": 0}
    record(run, {"status": "failed", "trained": True, "retry": False, "error": "Diverged: y", "seconds": 1.0})
    assert not wanted(run, 10)
    record(run, {"status": "complete", "trained": True, "error": None, "seconds": 1.0})
    assert run == {**run, "status": "complete", "attempts": 2, "error": None} and "retry" not in run
    from trainers.sweep_driver import outcome

    class Lost:
        def result(self):
            raise KilledWorker("task", "worker")
    assert outcome(Lost())["retry"] is True and outcome(Lost())["trained"] is True


def test_a_deterministic_failure_before_any_store_stays_failed(tmp_path):
    from trainers.sweep import build_manifest
    from trainers.sweep_driver import wanted
    plan = plan_sweep(sweep_file(tmp_path))
    name = next(iter(plan.runs))
    old = build_manifest(plan, tmp_path, None)
    old["runs"][name].update(status="failed", attempts=1, failures=1, retry=False, error="ConfigError: too big")
    again = build_manifest(plan, tmp_path, old)
    assert again["runs"][name]["status"] == "failed" and again["runs"][name]["retry"] is False
    assert not wanted(again["runs"][name], 5)
    retried = build_manifest(plan, tmp_path, old, retry_failed=True)["runs"][name]   # --retry-failed
    assert retried["status"] == "failed" and retried["retry"] is True and retried["failures"] == 0
    assert wanted(retried, 0)


def test_sighup_sigterm_and_sigint_raise_stopped_in_the_driver():
    from trainers.signals import Stopped
    from trainers.sweep import stop_signals_as_interrupt
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    for sig in before:
        with pytest.raises(Stopped) as info, stop_signals_as_interrupt():
            os.kill(os.getpid(), sig)
            time.sleep(5)
        assert info.value.signum == sig and info.value.exit_status == 128 + sig
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.mark.slow
def test_a_failure_of_the_file_system_is_retried(tmp_path, read_only_view):
    """Every store of the sweep sits on a read-only file system (a real read-only bind mount over
    runs/): each run fails with EROFS, which can go away, so it is started 1 + retries times."""
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    view = read_only_view(out / "runs", "ro-runs")
    subprocess.run(["mount", "--bind", str(view), str(out / "runs")], check=True)
    try:
        manifest = run_sweep(sweep_file(tmp_path, steps=4, extra=""), out, workers=2, retries=1, quiet=True)
    finally:
        subprocess.run(["umount", "-l", str(out / "runs")], capture_output=True)
    for run in manifest["runs"].values():
        assert run["status"] == "failed" and run["retry"] is True, run
        assert run["attempts"] == run["failures"] == 2 and "Read-only file system" in run["error"], run
