"""The task of the probe targets is stated or inferred safely, never from a dtype alone (issue 21 item 3).

References are written without the package: A(K, yyᵀ) and A(K, YYᵀ) as explicit N×N Frobenius
products, centring with an explicit H, probes with scikit-learn's own cross-validation loop.
"""

import json

import numpy as np
import pytest
import torch
import xarray as xr
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from analysis import analyze, target_alignment
from analysis.probes import linear_probe_r2
from analysis_textbook import centering_matrix
from dynamics import Recorder
from dynamics.errors import StoreError
from dynamics.task import infer_task, resolve_task


def alignment_textbook(k, t):
    """⟨K, T⟩_F / (‖K‖_F ‖T‖_F) with the N×N target kernel T formed explicitly."""
    return float(np.sum(k * t) / (np.linalg.norm(k) * np.linalg.norm(t)))


def regression_data(n=24, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.3 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y   # real targets, about half negative


def record(path, x, y, *, outputs=1, steps=3, **options):
    """A small MLP trained by SGD on MSE for ``steps`` steps, a checkpoint at each one."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 12), torch.nn.Tanh(),
                                torch.nn.Linear(12, outputs)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    target = y.double().reshape(len(y), -1) if outputs == 1 else torch.nn.functional.one_hot(y, outputs).double()
    with Recorder(path, model, probe=(x, y), layers=["1"], **options) as rec:
        for step in range(steps):
            rec.checkpoint(step)
            loss = ((model(x) - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.log(step, loss=float(loss.detach()))
    return path


def root_attrs(store):
    return json.loads((store / "zarr.json").read_text())["attributes"]


def stored(store, group, name):
    with xr.open_zarr(store, group=group) as ds:
        return np.asarray(ds[name].values)


def test_the_rule():
    assert infer_task(np.array([0.5, -1.0, 2.0]))[0] == "regression"              # floats
    assert infer_task(np.array([0.0, 1.0, 2.0]))[0] == "regression"               # float dtype: real targets
    assert infer_task(np.array([0, -1, 2]))[0] == "regression"                    # negative integers
    assert infer_task(np.array([0, 1, 2]))[0] == "classification"                 # labels
    assert infer_task(np.array([True, False]))[0] == "classification"
    assert infer_task(np.array([0, 1, 2]), n_outputs=1)[0] == "regression"        # MSE, one output, integers
    assert infer_task(np.array([0, 1, 2]), n_outputs=3)[0] == "classification"
    assert infer_task(np.array([0.0, 1.0, 2.0]), loss="ce")[0] == "classification"  # the loss says so
    assert infer_task(np.eye(3)[[0, 2, 1]])[0] == "classification"               # one-hot rows
    assert infer_task(np.array([[0.2, 1.0], [3.0, -1.0]]))[0] == "regression"
    with pytest.raises(ValueError, match="classification loss"):
        infer_task(np.array([0.5, 1.5]), loss="ce")
    with pytest.raises(ValueError, match="state task"):
        infer_task(np.array([0, 7]), n_outputs=3)
    assert resolve_task(np.array([0, 1]), task="regression") == ("regression", "stated")
    assert resolve_task(np.array([0, 1]), config={"task": "regression"}) == ("regression", "config")
    assert resolve_task(np.array([0.0, 1.0]), config={"train": {"loss": "ce"}})[0] == "classification"
    with pytest.raises(ValueError, match="non-integer"):
        resolve_task(np.array([0.5, 1.0]), task="classification")
    with pytest.raises(ValueError, match="task must be one of"):
        resolve_task(np.array([0, 1]), task="ranking")


def test_target_alignment_of_real_targets_is_a_with_yyT():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 6))
    k = a @ a.T
    y = a @ rng.normal(size=6) + rng.normal(size=30)
    assert target_alignment(k, y) == pytest.approx(alignment_textbook(k, np.outer(y, y)), rel=1e-12)
    big_y = rng.normal(size=(30, 3))
    assert target_alignment(k, big_y) == pytest.approx(alignment_textbook(k, big_y @ big_y.T), rel=1e-12)
    h = centering_matrix(30)
    assert target_alignment(k, y, centered=True) == pytest.approx(
        alignment_textbook(h @ k @ h, h @ np.outer(y, y) @ h), rel=1e-10)
    # integer-valued real targets are regression when stated so, classes when stated so
    counts = rng.integers(0, 4, size=30)
    assert target_alignment(k, counts, task="regression") == pytest.approx(
        alignment_textbook(k, np.outer(counts, counts)), rel=1e-12)
    onehot = np.eye(4)[counts]
    assert target_alignment(k, counts.astype(float), task="classification") == pytest.approx(
        alignment_textbook(k, onehot @ onehot.T), rel=1e-12)


def test_ridge_probe_matches_an_explicit_cross_validation_loop():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 6))
    for y in (x @ rng.normal(size=6) + rng.normal(size=40), x[:, :2] @ rng.normal(size=(2, 3)) + rng.normal(size=(40, 3))):
        predicted = np.zeros((40, 1 if y.ndim == 1 else 3))
        for train, test in KFold(3, shuffle=True, random_state=0).split(x):
            model = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x[train], y[train])
            predicted[test] = model.predict(x[test]).reshape(len(test), -1)
        expected = r2_score(y.reshape(40, -1), predicted)
        assert 0.3 < expected < 1.0
        assert linear_probe_r2(x, y) == pytest.approx(expected, abs=1e-10)
    with pytest.warns(RuntimeWarning, match="constant"):
        assert np.isnan(linear_probe_r2(x, np.ones(40)))


def test_regression_run_uses_yyT_and_r2(tmp_path):
    """The issue's example: 1-D float targets (half negative) from a plain loop's Recorder."""
    x, y = regression_data()
    store = record(tmp_path / "reg.zarr", x, y)
    assert root_attrs(store)["task"] == "regression" and root_attrs(store)["task_source"].startswith("inferred")
    ds = analyze(store)
    assert ds.attrs["task"] == "regression" and ds["ntk_target_alignment"].attrs["task"] == "regression"
    assert "regression" in ds["ntk_target_alignment"].attrs["description"]
    ntk, targets = stored(store, "checkpoints", "ntk"), stored(store, "probe", "y")
    for c in range(3):
        assert ds["ntk_target_alignment"][c] == pytest.approx(
            alignment_textbook(ntk[c], np.outer(targets, targets)), rel=1e-10)
    rep = stored(store, "checkpoints", "rep_1")
    assert ds["probe_r2"].sel(layer="1")[2] == pytest.approx(linear_probe_r2(rep[2], targets), abs=1e-12)
    assert np.isfinite(ds["probe_r2"].values).all() and np.isnan(ds["probe_accuracy"].values).all()
    # the analysis read back from the store says which task it used
    with xr.open_zarr(store, group="analysis") as back:
        assert back.attrs["task"] == "regression" and back["probe_r2"].attrs["task"] == "regression"


def test_mse_with_one_output_and_integer_targets_is_regression(tmp_path):
    x, _ = regression_data(seed=3)
    counts = torch.arange(24) % 4     # integer-valued targets fitted by one output
    store = record(tmp_path / "counts.zarr", x, counts, steps=2, config={"train": {"loss": "mse"}})
    assert root_attrs(store)["task"] == "regression"
    ds = analyze(store, probe_checkpoints="none")
    ntk, c = stored(store, "checkpoints", "ntk"), counts.numpy().astype(float)
    assert ds["ntk_target_alignment"][1] == pytest.approx(alignment_textbook(ntk[1], np.outer(c, c)), rel=1e-10)


def test_mse_on_class_labels_with_several_outputs_is_classification(tmp_path):
    x, _ = regression_data(seed=4)
    labels = torch.arange(24) % 3
    store = record(tmp_path / "cls.zarr", x, labels, outputs=3, steps=2, config={"train": {"loss": "mse"}})
    assert root_attrs(store)["task"] == "classification"
    ds = analyze(store, probe_checkpoints="last")
    ntk, onehot = stored(store, "checkpoints", "ntk"), np.eye(3)[labels.numpy()]
    assert ds["ntk_target_alignment"][1] == pytest.approx(alignment_textbook(ntk[1], onehot @ onehot.T), rel=1e-10)
    assert np.isfinite(ds["probe_accuracy"].values[-1]).all() and np.isnan(ds["probe_r2"].values).all()


def test_stated_task_is_checked_recorded_and_kept_on_resume(tmp_path):
    x, y = regression_data(seed=5)
    with pytest.raises(ValueError, match="task='classification'"):
        record(tmp_path / "bad.zarr", x, y, task="classification")
    assert not (tmp_path / "bad.zarr").exists()      # refused before anything was written
    labels = torch.arange(24) % 2
    store = record(tmp_path / "stated.zarr", x, labels, steps=1, task="regression")
    assert (root_attrs(store)["task"], root_attrs(store)["task_source"]) == ("regression", "stated")
    model = torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.Tanh(), torch.nn.Linear(12, 1)).double()
    with pytest.raises(StoreError, match="differs from the store's task"):
        Recorder(store, model, probe=(x, labels), layers=["1"], resume=True, task="classification")
    with Recorder(store, model, probe=(x, labels), layers=["1"], resume=True) as rec:   # inferred: the stored one
        assert rec.task == "regression"


def test_store_written_before_tasks_were_recorded(tmp_path):
    """Without the root attribute the analysis applies the rule to the stored targets and says so."""
    x, y = regression_data(seed=6)
    store = record(tmp_path / "old.zarr", x, y, steps=2)
    meta = json.loads((store / "zarr.json").read_text())
    for key in ("task", "task_source"):
        meta["attributes"].pop(key)
    (store / "zarr.json").write_text(json.dumps(meta))
    ds = analyze(store, write=False, probe_checkpoints="none")
    assert ds.attrs["task"] == "regression" and "written before" in ds.attrs["task_source"]


# ------------------------------------------------------------ targets the rule finds ambiguous (break-1)
def test_ambiguous_targets_are_refused_and_columns_read_as_vectors():
    """Class labels stored as floats for a 3-output model were inferred "regression" (A(K, yyᵀ) of the
    labels as numbers, an R² probe) without a word; 0/1 targets of one logit likewise. Both are now
    refused asking for the task; a (N, 1) column of labels is read as (N,)."""
    floats = np.array([0.0, 2.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"floating-point \(float64\) but integer-valued in \[0, 3\).*State task"):
        infer_task(floats, n_outputs=3)
    with pytest.raises(ValueError, match="0 and 1 and the model has one output.*State task"):
        infer_task(np.array([0.0, 1.0, 1.0]), n_outputs=1)
    with pytest.raises(ValueError, match="0 and 1 and the model has one output"):
        infer_task(np.array([True, False]), n_outputs=1)
    # placeholder targets, all equal, tell no task apart: the dtype rule, no refusal
    assert infer_task(np.zeros(3), n_outputs=1)[0] == "regression"
    assert infer_task(np.zeros(3), n_outputs=4)[0] == "regression"
    assert infer_task(np.zeros(3, dtype=np.int64), n_outputs=4)[0] == "classification"
    assert infer_task(floats, n_outputs=2)[0] == "regression"              # 2.0 is beyond a 2-output model
    assert infer_task(np.array([0, 1, 2]), n_outputs=1)[0] == "regression"  # counts fitted by MSE
    assert infer_task(floats)[0] == "regression"                            # outputs unknown: the old rule
    assert infer_task(np.array([[0], [2], [1]]), n_outputs=3)[0] == "classification"
    assert infer_task(np.array([[0.5], [2.0]]), n_outputs=1)[0] == "regression"
    assert infer_task(np.array([[0], [2], [1]]))[0] == "classification"    # a column: as (N,), outputs unknown
    k = np.cov(np.random.default_rng(0).normal(size=(3, 5)))               # any PSD 3×3 kernel
    onehot = np.eye(3)[[0, 2, 1]]
    assert target_alignment(k, np.array([[0], [2], [1]])) == pytest.approx(
        alignment_textbook(k, onehot @ onehot.T), rel=1e-12)
    assert resolve_task(floats, task="classification", n_outputs=3) == ("classification", "stated")
    assert resolve_task(np.array([0.0, 1.0]), config={"task": "regression"}, n_outputs=1)[0] == "regression"


def test_float_typed_class_labels_are_refused_then_analysed_as_stated(tmp_path):
    """A plain loop training 3 logits by cross-entropy on float-typed labels: the Recorder refuses to
    guess (nothing written); stated, the analysis' target alignment is A(Θ, YYᵀ) with one-hot Y,
    checked against the explicit N×N product of the stored NTK, and labels given as a column (N, 1)
    are the same run."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64)
    labels = torch.arange(12) % 3
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    with pytest.raises(ValueError, match="class labels stored as floats"):
        Recorder(tmp_path / "f.zarr", model, probe=(x, labels.double()), layers=[])
    assert not (tmp_path / "f.zarr").exists()
    for name, y in (("stated.zarr", labels.double()), ("column.zarr", labels[:, None])):
        task = "classification" if name == "stated.zarr" else None
        with Recorder(tmp_path / name, model, probe=(x, y), layers=[], task=task) as rec:
            rec.checkpoint(0)
        assert root_attrs(tmp_path / name)["task"] == "classification"
        ds = analyze(tmp_path / name, write=False, probe_checkpoints="none")
        onehot = np.eye(3)[labels.numpy()]
        expected = alignment_textbook(stored(tmp_path / name, "checkpoints", "ntk")[0], onehot @ onehot.T)
        assert ds["ntk_target_alignment"].values[0] == pytest.approx(expected, rel=1e-12)
