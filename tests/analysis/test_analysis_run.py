"""analyze() on stores written by a plain loop through the Recorder, checked against recomputation
from the raw store with plain xarray and textbook formulas."""

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from analysis import analyze
from analysis_runs_fixture import write_run
from analysis_textbook import linear_cka_textbook
from dynamics import open_run
from dynamics.linearize import LINEAR_SCALARS
from dynamics.sharpness import SHARPNESS_SCALARS
from dynamics.errors import StoreError

SCHEMA_VARIABLES = {
    "train_loss": ("checkpoint",), "train_acc": ("checkpoint",), "test_loss": ("checkpoint",),
    "test_acc": ("checkpoint",), "ntk_alignment_init": ("checkpoint",), "ntk_velocity": ("checkpoint",),
    "ntk_target_alignment": ("checkpoint",), "ntk_effective_rank": ("checkpoint",),
    "cka_init": ("checkpoint", "layer"), "rep_effective_rank": ("checkpoint", "layer"),
    "probe_accuracy": ("checkpoint", "layer"), "probe_r2": ("checkpoint", "layer"),
    "first_nonfinite_step": (), "weight_rel_change": ("checkpoint", "param"),
    "weight_cosine_init": ("checkpoint", "param"), "weight_delta_norm": ("checkpoint", "param"),
    "weight_init_norm": ("param",), "param_ndim": ("param",), "loss": ("step",), "gn_residual": ("step",),
    "own_change": ("step",), "other_change": ("step",), "transfer": ("step",), "own_change_smooth": ("step",),
    "other_change_smooth": ("step",), "transfer_smooth": ("step",), "next_change": ("step",),
    "next_change_smooth": ("step",), "own_log_change": ("step",), "next_log_change": ("step",),
    "other_log_change": ("step",), "phase": ("step",),
    "ntk_eigenvalues": ("checkpoint", "ntk_mode"), "ntk_label_alignment": ("checkpoint", "ntk_mode"),
    "ntk_condition_number": ("checkpoint",),
    **{name: ("checkpoint",) for name in (*LINEAR_SCALARS, *SHARPNESS_SCALARS)},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("run") / "sgd.zarr", steps=30, checkpoint_every=10)


@pytest.fixture(scope="module")
def result(store):
    return analyze(store)


def raw(store, group):
    return xr.open_zarr(store, group=group, consolidated=False).load()


def test_schema_of_the_analysis_dataset(result):
    assert {name: result[name].dims for name in result.data_vars} == SCHEMA_VARIABLES
    assert result.sizes == {"checkpoint": 4, "layer": 2, "param": 8, "step": 30, "ntk_mode": 24}
    assert list(result["layer"].values) == ["blocks__0", "blocks__1"]
    assert "blocks__0__F__linear__weight" in list(result["param"].values)
    np.testing.assert_array_equal(result["checkpoint_step"].values, [0, 10, 20, 30])
    np.testing.assert_allclose(result["checkpoint_epoch"].values, [0.0, 1.0, 2.0, 3.0])
    assert result["step"].dtype == np.int64 and result["epoch"].dims == ("step",)
    assert result.attrs["optimizer"] == "sgd" and result.attrs["seed"] == 0
    assert json.loads(result.attrs["config"])["optimizer"] == "sgd"
    assert all(np.isnan(result["gn_residual"].values))  # a first-order run logs no residual


def textbook_alignment(a, b):
    return np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b))


def test_ntk_metrics_match_recomputation(store, result):
    ntk = raw(store, "checkpoints")["ntk"].values
    y = raw(store, "probe")["y"].values
    onehot = np.eye(int(y.max()) + 1)[y]
    for c in range(4):
        assert result["ntk_alignment_init"][c] == pytest.approx(textbook_alignment(ntk[c], ntk[0]), rel=1e-10)
        assert result["ntk_target_alignment"][c] == pytest.approx(
            textbook_alignment(ntk[c], onehot @ onehot.T), rel=1e-10)
        lam = np.clip(np.linalg.eigvalsh(ntk[c]), 0, None)
        p = lam[lam > 0] / lam.sum()
        assert result["ntk_effective_rank"][c] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-8)
        if c:
            assert result["ntk_velocity"][c] == pytest.approx(1 - textbook_alignment(ntk[c], ntk[c - 1]), rel=1e-9)
    assert np.isnan(result["ntk_velocity"][0])
    assert result["ntk_alignment_init"][0] == pytest.approx(1.0)


def test_representation_and_weight_metrics_match_recomputation(store, result):
    checkpoints, params = raw(store, "checkpoints"), raw(store, "params")
    for layer in ("blocks__0", "blocks__1"):
        reps = checkpoints[f"rep_{layer}"].values
        for c in range(4):
            got = result["cka_init"].sel(layer=layer)[c]
            assert got == pytest.approx(linear_cka_textbook(reps[c], reps[0]), rel=1e-9)
            s = np.linalg.svd(reps[c] - reps[c].mean(axis=0), compute_uv=False)
            p = s / s.sum()
            assert result["rep_effective_rank"].sel(layer=layer)[c] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-9)
    probe = result["probe_accuracy"].values
    assert np.all((probe >= 0) & (probe <= 1))
    name = "blocks__1__G__linear__weight"
    theta = params[name].values.reshape(4, -1)
    for c in range(4):
        rel = np.linalg.norm(theta[c] - theta[0]) / np.linalg.norm(theta[0])
        cos = theta[c] @ theta[0] / (np.linalg.norm(theta[c]) * np.linalg.norm(theta[0]))
        assert result["weight_rel_change"].sel(param=name)[c] == pytest.approx(rel, rel=1e-10, abs=1e-14)
        assert result["weight_cosine_init"].sel(param=name)[c] == pytest.approx(cos, rel=1e-10)
        assert result["weight_delta_norm"].sel(param=name)[c] == pytest.approx(np.linalg.norm(theta[c] - theta[0]),
                                                                               rel=1e-10, abs=1e-14)
    assert result["weight_init_norm"].sel(param=name) == pytest.approx(np.linalg.norm(theta[0]), rel=1e-12)
    for other in result["param"].values:
        assert result["param_ndim"].sel(param=other) == params[str(other)].ndim - 1
    assert np.all(result["weight_rel_change"].values[1:] > 0)  # training moved every parameter


def test_step_metrics_match_recomputation(store, result):
    metrics = raw(store, "metrics")
    own = 100 * (metrics["loss_after"].values - metrics["loss"].values) / metrics["loss"].values
    other = 100 * (metrics["other_loss_after"].values - metrics["other_loss"].values) / metrics["other_loss"].values
    np.testing.assert_allclose(result["own_change"].values, own, rtol=1e-12)
    np.testing.assert_allclose(result["other_change"].values, other, rtol=1e-12)
    np.testing.assert_allclose(result["transfer"].values, other / own, rtol=1e-12)
    own_log = [100 * math.log(a / b) for a, b in zip(metrics["loss_after"].values, metrics["loss"].values)]
    np.testing.assert_allclose(result["own_log_change"].values, own_log, rtol=1e-12)
    assert np.all(np.isnan(result["next_change"].values))  # this store logged no next-batch losses
    np.testing.assert_allclose(result["loss"].values, metrics["loss"].values)
    assert json.loads(result.attrs["analysis"])["smoothing_window"] == 1  # max(1, 30 // 50)
    np.testing.assert_allclose(result["own_change_smooth"].values, own, rtol=1e-12)


def test_smoothing_window_is_a_trailing_mean(store):
    ds = analyze(store, smoothing_window=4, probe_checkpoints="none", write=False)
    own = ds["own_change"].values
    expected = [own[max(0, i - 3): i + 1].mean() for i in range(own.size)]
    np.testing.assert_allclose(ds["own_change_smooth"].values, expected, rtol=1e-12)
    np.testing.assert_allclose(ds["transfer_smooth"].values,
                               ds["other_change_smooth"].values / ds["own_change_smooth"].values, rtol=1e-12)


def digest(path: Path, skip=("analysis",)):
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if rel.parts[0] in skip or rel.name == "zarr.json" and len(rel.parts) == 1:
            continue
        h.update(str(rel).encode() + file.read_bytes())
    return h.hexdigest()


def test_written_group_reads_back_and_rewrite_touches_nothing_else(store, result):
    before = digest(store)
    root_attrs_before = dict(xr.open_zarr(store, group="probe", consolidated=False).attrs)
    again = analyze(store, probe_checkpoints="last")  # re-running replaces the group
    assert digest(store) == before  # training groups byte-identical
    assert dict(xr.open_zarr(store, group="probe", consolidated=False).attrs) == root_attrs_before
    stored = xr.open_zarr(store, group="analysis").load()
    xr.testing.assert_allclose(stored, again)
    assert np.isnan(stored["probe_accuracy"].values[:-1]).all() and np.isfinite(stored["probe_accuracy"].values[-1]).all()
    # the root's consolidated metadata is rebuilt: datatree readers see the new group and its settings
    tree = xr.open_datatree(store, engine="zarr")
    assert json.loads(tree["analysis"].attrs["analysis"])["probe_checkpoints"] == [3]
    assert set(tree.children) == {"metrics", "checkpoints", "params", "probe", "analysis"}
    committed = open_run(store)  # the store's own reader still opens it, analysis included
    assert committed["checkpoints"].sizes["checkpoint"] == 4 and "analysis" in committed.children
    analyze(store)  # restore the default analysis for other tests
    xr.testing.assert_allclose(xr.open_zarr(store, group="analysis").load(), result)


def test_dask_backed_tree_gives_the_same_result(store, result):
    tree = xr.open_datatree(store, engine="zarr", chunks={})
    assert hasattr(tree["checkpoints"]["rep_blocks__0"].data, "dask")
    lazy = analyze(tree, write=False)
    xr.testing.assert_allclose(lazy, result)


def test_chunked_representations_equal_in_memory(store, result):
    with pytest.warns(RuntimeWarning, match="linear probe is not fitted"):
        chunked = analyze(store, max_memory=512, write=False)  # 24 × 8 floats > 512 bytes: probe chunks
    for name in ("cka_init", "rep_effective_rank"):
        np.testing.assert_allclose(chunked[name].values, result[name].values, rtol=1e-9, atol=1e-12)
    assert np.isnan(chunked["probe_accuracy"].values).all()
    np.testing.assert_allclose(chunked["ntk_alignment_init"].values, result["ntk_alignment_init"].values, rtol=1e-12)


def test_store_without_ntk_or_other_batch_gives_nan_variables(tmp_path):
    store = write_run(tmp_path / "bare.zarr", steps=10, checkpoint_every=5, ntk=False, other_batch=False)
    ds = analyze(store, probe_checkpoints="none")
    for name in ("ntk_alignment_init", "ntk_velocity", "ntk_target_alignment", "ntk_effective_rank",
                 "other_change", "transfer", "probe_accuracy"):
        assert np.isnan(ds[name].values).all(), name
    assert np.isfinite(ds["own_change"].values).all() and np.isfinite(ds["cka_init"].values).all()


def test_bad_inputs(store, tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        analyze(tmp_path / "missing.zarr")
    with pytest.raises(TypeError, match="run must be"):
        analyze(42)
    with pytest.raises(ValueError, match="probe_checkpoints"):
        analyze(store, probe_checkpoints="some", write=False)
    with pytest.raises(ValueError, match="out of range"):
        analyze(store, probe_checkpoints=[7], write=False)
    with pytest.raises(ValueError, match="max_memory"):
        analyze(store, max_memory=0, write=False)
    with pytest.raises(ValueError, match="store=PATH"):
        analyze(open_run(store))


def test_zero_initialised_tensors_are_named_in_one_warning(tmp_path):
    """Zero-initialised biases (the paper's init) have no relative change or cosine to init: NaN, named
    in one warning per run (not one per tensor), while ‖θ_t − θ_0‖ is still the textbook norm."""
    import torch
    from dynamics import Recorder
    from dynamics.schedules import every

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    with torch.no_grad():
        model[0].bias.zero_()
        model[2].bias.zero_()
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.arange(40) % 3
    snapshots = []
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with Recorder(tmp_path / "zero.zarr", model, probe=(x[:12], y[:12]), schedule=every(3)) as rec:
        for step in range(7):
            if step % 3 == 0:
                rec.checkpoint(step)
                snapshots.append([p.detach().clone().numpy() for p in model.parameters()])
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.log(step, loss=float(loss.detach()))
    with pytest.warns(RuntimeWarning, match="all zeros at the first checkpoint") as caught:
        ds = analyze(tmp_path / "zero.zarr")
    messages = [str(w.message) for w in caught if "all zeros at the first" in str(w.message)]
    assert len(messages) == 1 and "0__bias" in messages[0] and "2__bias" in messages[0], messages
    assert "weight" not in messages[0].split(":")[1].split(";")[0]
    for j, name in enumerate(["0__weight", "0__bias", "2__weight", "2__bias"]):
        theta = [snap[j].ravel() for snap in snapshots]
        delta = [np.linalg.norm(t - theta[0]) for t in theta]
        np.testing.assert_allclose(ds["weight_delta_norm"].sel(param=name).values, delta, rtol=1e-12, atol=1e-15)
        rel = ds["weight_rel_change"].sel(param=name).values
        if name.endswith("bias"):
            assert np.isnan(rel).all() and np.isnan(ds["weight_cosine_init"].sel(param=name).values).all()
        else:
            np.testing.assert_allclose(rel, np.array(delta) / np.linalg.norm(theta[0]), rtol=1e-12)
