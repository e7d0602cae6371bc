"""``dynamics run`` trains its runs side by side in processes (trainers.parallel) and the stores are
the same, bit for bit, as training them one after the other in one process — also while other
programs keep every core busy (issue #25 §1: same command, same numbers; nothing reads machine load
into a result). The thread count is part of the config and recorded in every store."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import xarray as xr

from dynamics.cli import main
from trainers.runtime import concurrent_runs

TINY = """preset = "digits"
name = "tiny-parallel"
[data]
n_train = 200
n_test = 60
probe_size = 32
[model]
hidden = 24
depth = 2
init_std = 1e-3      # zero-initialised biases: the analysis warns about them, once per experiment
[train]
optimizers = ["gn", "adam"]
steps = 10
batch_size = 16
checkpoints = 3
"""


def spin() -> None:   # a busy program: one core at 100 %
    while True:
        pass


def store_variables(path):
    """{(group, variable): bytes} of a run store: every value it holds except the wall-clock seconds of
    each step (``metrics/time``) and the analysis (derived, written afterwards)."""
    tree = xr.open_datatree(path, engine="zarr")
    out = {}
    for group in tree.groups:
        if group.startswith("/analysis"):
            continue
        ds = tree[group].to_dataset()
        for name, variable in ds.variables.items():
            if not (group == "/metrics" and name == "time"):
                values = np.asarray(variable.values)
                out[group, name] = (values.dtype.str, values.shape, values.tobytes())
    out["attrs", "config"] = tree.attrs["config"]
    return out


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("parallel") / "tiny.toml"
    path.write_text(TINY)
    return path


def zero_bias_warnings(caught) -> int:
    return sum("parameters all zeros at the first checkpoint" in str(w.message) for w in caught)


def test_parallel_runs_equal_sequential_runs_under_load_bit_for_bit(tmp_path, config):
    quiet = tmp_path / "quiet"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", "--config", str(config), "--out", str(quiet), "--seeds", "0", "--workers", "2",
                     "--quiet"]) == 0
    assert zero_bias_warnings(caught) == 1   # once for the experiment, not once per run
    busy = tmp_path / "busy"
    spinners = [multiprocessing.get_context("spawn").Process(target=spin, daemon=True)
                for _ in range(os.cpu_count() or 2)]
    for process in spinners:
        process.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["run", "--config", str(config), "--out", str(busy), "--seeds", "0", "--workers", "1",
                         "--quiet"]) == 0
        assert zero_bias_warnings(caught) == 1
    finally:
        for process in spinners:
            process.kill()
    stores = sorted(p.name for p in quiet.glob("*.zarr") if p.name != "analysis.zarr")
    assert stores == ["adam.zarr", "gn.zarr"] and stores == sorted(p.name for p in busy.glob("*.zarr")
                                                                  if p.name != "analysis.zarr")
    for name in stores:
        a, b = store_variables(quiet / name), store_variables(busy / name)
        assert a.keys() == b.keys() and len(a) > 20
        different = [key for key in a if a[key] != b[key]]
        assert not different, (name, different)
        assert json.loads(a["attrs", "config"])["train"]["threads"] == 1   # recorded in the store
    machines = json.loads((quiet / "machine.json").read_text())["machines"]
    assert machines[0]["workers"] == 2 and machines[0]["threads"] == 1


def test_threads_come_from_the_config_never_from_the_load(tmp_path, config):
    assert concurrent_runs(1, 9, cores=2) == 2 and concurrent_runs(2, 9, cores=2) == 1
    assert concurrent_runs(1, 1, cores=16) == 1 and concurrent_runs(3, 9, cores=16) == 5
    with pytest.raises(ValueError, match="threads"):
        concurrent_runs(0, 3, cores=2)
    out = tmp_path / "two"
    assert main(["train", "--config", str(config), "--optimizer", "adam", "--out", str(out), "--threads", "2",
                 "--quiet"]) == 0
    stored = json.loads(xr.open_datatree(out, engine="zarr").attrs["config"])
    assert stored["train"]["threads"] == 2
    source = open(os.path.join(os.path.dirname(__file__), "..", "..", "trainers", "runtime.py")).read()
    assert "getloadavg" not in source


@pytest.mark.slow
def test_ctrl_c_stops_every_parallel_run_resumably(tmp_path, config):
    """SIGINT to the whole process group (a terminal's Ctrl-C reaches the workers too): the workers
    ignore it, the driver stops the runs through its stop file, each saves its state; --resume ends
    the experiment with the stores of an uninterrupted run."""
    longer = tmp_path / "long.toml"
    longer.write_text(TINY.replace("steps = 10", "steps = 400").replace('optimizers = ["gn", "adam"]',
                                                                        'optimizers = ["sgd", "adam"]'))
    out = tmp_path / "stopped"
    command = [sys.executable, "-m", "dynamics.cli", "run", "--config", str(longer), "--out", str(out),
               "--workers", "2"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    for line in process.stderr:   # wait until both runs are training
        if "step" in line and "/400" in line and "10%" in line:
            break
        assert time.monotonic() < deadline
    os.killpg(process.pid, signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130, rest
    statuses = [json.loads((p / "zarr.json").read_text())["attributes"]["status"] for p in out.glob("*.zarr")
                if p.name != "analysis.zarr"]
    assert "interrupted" in statuses and set(statuses) <= {"interrupted", "complete"}
    assert main(["run", "--config", str(longer), "--out", str(out), "--workers", "2", "--resume", "--quiet"]) == 0
    reference = tmp_path / "reference"
    assert main(["run", "--config", str(longer), "--out", str(reference), "--workers", "2", "--quiet"]) == 0
    for store in sorted(reference.glob("*.zarr")):
        if store.name == "analysis.zarr":
            continue
        a, b = store_variables(store), store_variables(out / store.name)
        assert not [key for key in a if a[key] != b[key]], store.name
