"""``dynamics export tensorboard``: every scalar of the store (read with plain xarray) and of the analysis,
read back with TensorBoard's own EventAccumulator; the stores are never written."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import xarray as xr
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from analysis import analyze
from dynamics.cli import main


def snapshot(folder):
    """Every file under ``folder`` → (size, mtime_ns, sha256): proof that nothing was written."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[path] = (os.path.getsize(path), os.stat(path).st_mtime_ns,
                         hashlib.sha256(open(path, "rb").read()).hexdigest())
    return out


def events_of(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {name: {e.step: e.value for e in acc.Scalars(name)} for name in acc.Tags()["scalars"]}


@pytest.fixture
def experiment(tiny_experiment):
    return tiny_experiment


def test_export_holds_the_store_and_analysis_value_for_value(experiment, tmp_path, capsys):
    before = snapshot(experiment)
    assert main(["export", "tensorboard", str(experiment), "--out", str(tmp_path / "tb")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "tb")
    assert snapshot(experiment) == before   # the stores are read, never written (no analysis group either)
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["adam", "sgd"]
    for run in ("sgd", "adam"):
        store = experiment / f"{run}.zarr"
        events = events_of(tmp_path / "tb" / run)
        metrics = xr.open_zarr(store, group="metrics")
        checkpoints = xr.open_zarr(store, group="checkpoints")
        expected = {}
        for name in metrics.data_vars:
            expected[f"metrics/{name}"] = dict(zip(metrics["step"].values.tolist(), metrics[name].values))
        for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
            expected[f"checkpoints/{name}"] = dict(zip(checkpoints["checkpoint_step"].values.tolist(),
                                                       checkpoints[name].values))
        for name, values in expected.items():
            assert events[name] == {s: np.float32(v) for s, v in values.items()}, (run, name)
        assert not any(t.startswith("checkpoints/ntk") or t.startswith("checkpoints/rep_") for t in events)
        # analysis: per checkpoint, per layer and per step, as analysis.analyze computes them
        result = analyze(store, write=False)
        steps = result["checkpoint_step"].values.tolist()
        for name in ("ntk_alignment_init", "ntk_velocity", "ntk_effective_rank"):
            values = result[name].values
            assert events[f"analysis/{name}"] == {s: np.float32(v) for s, v in zip(steps, values) if np.isfinite(v)}
        layers = result["layer"].values.tolist()
        assert layers
        for layer in layers:
            for name in ("cka_init", "rep_effective_rank"):
                values = result[name].sel(layer=layer).values
                assert events[f"analysis/{name}/{layer}"] == {s: np.float32(v) for s, v in zip(steps, values)}
        own = result["own_log_change"]
        assert events["analysis/own_log_change"] == {int(s): np.float32(v) for s, v in zip(own["step"].values, own.values)}
        assert "analysis/train_loss" not in events and "analysis/loss" not in events   # copies are not repeated
        # one analysis value from the raw stored NTKs, by the textbook formula <K0, Kt> / (|K0| |Kt|)
        kernels = checkpoints["ntk"].values
        cosine = [float(np.sum(kernels[0] * k) / np.linalg.norm(kernels[0]) / np.linalg.norm(k)) for k in kernels]
        np.testing.assert_allclose(sorted(events["analysis/ntk_alignment_init"].items()),
                                   list(zip(steps, cosine)), rtol=1e-6)


def test_export_again_replaces_and_refuses_a_foreign_folder(experiment, tmp_path, capsys):
    store = experiment / "sgd.zarr"
    out = tmp_path / "tb"
    for _ in range(2):
        assert main(["export", "tensorboard", str(store), "--out", str(out), "--no-analysis"]) == 0
    files = list((out / "sgd").iterdir())
    assert len(files) == 1 and files[0].name.startswith("events.out.tfevents.")   # replaced, not appended
    assert not any(t.startswith("analysis/") for t in events_of(out / "sgd"))
    assert sorted(p.name for p in out.iterdir()) == ["sgd"]   # no temporary folders left
    (out / "sgd" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["export", "tensorboard", str(store), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.txt" in err and "not TensorBoard event files" in err
    assert (out / "sgd" / "notes.txt").read_text() == "mine"
    assert main(["export", "tensorboard", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["export", "tensorboard", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "neither a run store" in capsys.readouterr().err
