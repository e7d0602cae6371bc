"""Recorder(mirror=[...]): what reaches TensorBoard and W&B, read back with each tool's own reader
(TensorBoard's EventAccumulator; W&B's ``wandb leet inspect --json`` on the offline ``.wandb`` file),
against the store read with plain xarray."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dynamics import Recorder
from dynamics.integrations.mirrors import TensorBoardMirror, WandbMirror
from dynamics.models import MLP
from dynamics.schedules import at

STEPS = 6


def record(path, mirrors):
    """A tiny run: metrics at steps 1..6 (one non-finite value), checkpoints scheduled at 0, 3, 6."""
    model = MLP(4, 6, 1, 3, seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 4, generator=gen, dtype=torch.float64), torch.arange(8) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # the non-finite value is stored as NaN, with a warning
        with Recorder(path, model, probe=(x, y), schedule=at([0, 3, 6]), layers=[], mirror=mirrors) as rec:
            for step in range(STEPS + 1):
                if step:
                    rec.log(step, loss=1.0 / step + 1e-9 * step, lr=0.1, grad_norm=math.inf if step == 2 else 0.5 * step)
                rec.checkpoint(step, test_acc=0.1 * step)
    return xr.open_zarr(path, group="metrics"), xr.open_zarr(path, group="checkpoints")


def expected_scalars(metrics: xr.Dataset, checkpoints: xr.Dataset) -> dict[str, dict[int, float]]:
    """tag → {step: value} of every finite scalar in the store (what a mirror must have received)."""
    out = {}
    for group, ds, coord in (("metrics", metrics, "step"), ("checkpoints", checkpoints, "checkpoint_step")):
        steps = ds[coord].values
        for name in ds.data_vars:
            if ds[name].dims == (ds[coord].dims[0],):
                out[f"{group}/{name}"] = {int(s): float(v) for s, v in zip(steps, ds[name].values) if np.isfinite(v)}
    return out


def test_tensorboard_mirror_holds_every_finite_scalar_of_the_store(tmp_path):
    metrics, checkpoints = record(tmp_path / "run.zarr", [TensorBoardMirror(tmp_path / "tb")])
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    expected = expected_scalars(metrics, checkpoints)
    assert sorted(events.Tags()["scalars"]) == sorted(expected)
    assert expected["checkpoints/test_acc"].keys() == {0, 3, 6}   # only stored checkpoints are mirrored
    assert 2 not in expected["metrics/grad_norm"]                  # nor NaN
    for name, values in expected.items():
        got = {e.step: e.value for e in events.Scalars(name)}
        assert got.keys() == values.keys(), name
        for step, value in values.items():   # TensorBoard keeps float32
            assert got[step] == np.float32(value), (name, step)


def wandb_history(run_dir) -> list[dict]:
    """The history records of the offline run's .wandb file, as W&B's own reader prints them."""
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(files[0])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [r["history"] for r in records if r.get("type") == "history"]


def test_wandb_offline_mirror_holds_every_finite_scalar_of_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    mirror = WandbMirror(project="dynamics-test", dir=str(tmp_path), mode="offline")
    metrics, checkpoints = record(tmp_path / "run.zarr", [mirror])
    got: dict[str, dict[int, float]] = {}
    for entry in wandb_history(tmp_path):
        step = int(entry["step"]["num"]) if entry.get("step") else 0
        for key, value in entry["item"].items():
            if not key.startswith("_"):
                got.setdefault(key, {})[step] = float(value)
    expected = expected_scalars(metrics, checkpoints)
    assert got.keys() == expected.keys()
    for name, values in expected.items():
        assert got[name] == pytest.approx(values, rel=1e-15), name   # W&B keeps float64


class Failing:
    def __init__(self, fail_log=False):
        self.fail_log, self.closed, self.seen = fail_log, False, []

    def log_scalars(self, step, scalars):
        self.seen.append((step, dict(scalars)))
        if self.fail_log:
            raise ConnectionError("viewer down")

    def close(self):
        self.closed = True
        raise OSError("cannot close")


def test_mirror_errors_reach_the_caller_and_never_cost_the_store_its_data(tmp_path):
    model = MLP(4, 6, 1, 3, seed=0, dtype=torch.float64)
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.arange(8) % 3
    for bad, match in ((object(), "has no log_scalars"), (TensorBoardMirror(tmp_path / "tb"), "list of mirrors"),
                       ("tb", "list of mirrors")):
        with pytest.raises(TypeError, match=match):
            Recorder(tmp_path / "bad.zarr", model, probe=(x, y), mirror=bad if isinstance(bad, str) or hasattr(
                bad, "log_scalars") else [bad])
    assert not (tmp_path / "bad.zarr").exists()
    failing = Failing(fail_log=True)
    rec = Recorder(tmp_path / "run.zarr", model, probe=(x, y), layers=[], mirror=[failing])
    with pytest.raises(ConnectionError, match="viewer down"):
        rec.log(1, loss=0.5)
    failing.fail_log = False
    rec.log(2, loss=0.25)   # the row of the failed call was kept; the next call goes on
    with pytest.warns(RuntimeWarning, match="cannot close"):
        rec.close()
    assert failing.closed and [s for s, _ in failing.seen] == [1, 2]
    stored = xr.open_zarr(tmp_path / "run.zarr", group="metrics")
    assert stored["step"].values.tolist() == [1, 2] and stored["loss"].values.tolist() == [0.5, 0.25]
    assert xr.open_zarr(tmp_path / "run.zarr").attrs["status"] == "complete"
