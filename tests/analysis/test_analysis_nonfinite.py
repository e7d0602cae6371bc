"""One bad record never aborts an analysis (issue 21 item 4): every per-checkpoint and per-step
quantity is NaN where one of its inputs is non-finite and the rest is analysed; where is recorded.

Non-finite values are written into real Recorder stores with zarr (one entry of one variable at one
checkpoint or step); each corrupted store's analysis must equal the clean store's analysis wherever the
corrupted input is not used, and be NaN exactly where it is."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from analysis import analyze, open_runs
from analysis_runs_fixture import write_run
from analysis_textbook import linear_cka_textbook
from dynamics import Recorder
from dynamics.models import RevMLP

PROBES = [0, 3]
WEIGHT = "blocks__0__F__linear__weight"


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    store = write_run(tmp_path_factory.mktemp("clean") / "sgd.zarr", steps=30, checkpoint_every=10)  # 4 checkpoints
    return store, analyze(store, write=False, probe_checkpoints=PROBES)


def corrupt(clean_store, tmp_path, group, name, index, value):
    """A copy of the clean store with ``value`` written at ``index`` of one variable."""
    store = tmp_path / "sgd.zarr"
    shutil.copytree(clean_store, store)
    array = zarr.open_array(str(store / group / name), mode="r+")
    array[index] = value
    return store


def differs_only_at(ds, clean_ds, nan_at):
    """``ds`` equals ``clean_ds`` except where ``nan_at`` (name → boolean mask, or index) says NaN."""
    for name in clean_ds.data_vars:
        expected = np.array(clean_ds[name].values, dtype=float)
        if name in nan_at:
            mask = np.zeros(expected.shape, dtype=bool)
            mask[nan_at[name]] = True
            assert np.isnan(ds[name].values[mask]).all(), name
            expected[mask] = np.nan
        if name == "first_nonfinite_step":
            continue
        np.testing.assert_allclose(ds[name].values, expected, rtol=1e-12, atol=1e-14, equal_nan=True, err_msg=name)


LAYER1 = (slice(None), 1)   # (checkpoint, layer) selections
NTK_SPECTRUM = ("ntk_eigenvalues", "ntk_label_alignment", "ntk_condition_number")   # of that checkpoint's kernel
CASES = {
    # the issue's example: a NaN representation at the last of 4 checkpoints
    "rep at the last checkpoint": (("checkpoints", "rep_blocks__1", (3, 5, 2), np.nan), 30,
                                   {"cka_init": (3, 1), "rep_effective_rank": (3, 1), "probe_accuracy": (3, 1)}),
    "rep at the first checkpoint": (("checkpoints", "rep_blocks__0", (0, 0, 0), np.inf), 0,
                                    {"cka_init": (slice(None), 0), "rep_effective_rank": (0, 0),
                                     "probe_accuracy": (0, 0)}),
    "ntk in the middle": (("checkpoints", "ntk", (1, 0, 1), np.nan), 10,
                          {"ntk_alignment_init": 1, "ntk_velocity": [1, 2], "ntk_target_alignment": 1,
                           "ntk_effective_rank": 1, **dict.fromkeys(NTK_SPECTRUM, 1)}),
    "ntk at the first checkpoint": (("checkpoints", "ntk", (0, 2, 2), -np.inf), 0,
                                    {"ntk_alignment_init": slice(None), "ntk_velocity": [0, 1],
                                     "ntk_target_alignment": 0, "ntk_effective_rank": 0,
                                     **dict.fromkeys(NTK_SPECTRUM, 0)}),
    "parameter at one checkpoint": (("params", WEIGHT, (2, 0, 0), np.inf), 20,
                                    {name: (2, 0) for name in ("weight_rel_change", "weight_cosine_init",
                                                               "weight_delta_norm")}),
    "parameter at init": (("params", WEIGHT, (0, 1, 1), np.nan), 0,
                          {**{name: (slice(None), 0) for name in ("weight_rel_change", "weight_cosine_init",
                                                                  "weight_delta_norm")}, "weight_init_norm": 0}),
    "metric at one step": (("metrics", "loss_after", 5, np.inf), 5,
                           {"own_change": 5, "own_log_change": 5, "transfer": 5, "own_change_smooth": [],
                            "transfer_smooth": []}),
    "checkpoint scalar": (("checkpoints", "test_loss", 2, np.inf), 20, {"test_loss": 2}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_non_finite_input_gives_nan_where_used_and_the_rest_is_analysed(clean, tmp_path, case):
    (group, name, index, value), first_step, nan_at = CASES[case]
    clean_store, clean_ds = clean
    store = corrupt(clean_store, tmp_path, group, name, index, value)
    with pytest.warns(RuntimeWarning, match="non-finite inputs"):
        ds = analyze(store, write=False, probe_checkpoints=PROBES)
    if group == "metrics":   # the smoothed series average over the NaN: compare the raw ones only
        clean_ds = clean_ds.drop_vars(["own_change_smooth", "transfer_smooth"])
    differs_only_at(ds, clean_ds, nan_at)
    assert float(ds["first_nonfinite_step"]) == first_step
    summary = json.loads(ds.attrs["nonfinite"])
    assert summary["first_step"] == first_step
    recorded = {**summary["checkpoints"], **summary["steps"]}
    assert list(recorded) == [f"{group}/{name}"]


def test_the_issue_example_keeps_checkpoints_0_to_2_against_textbook(clean, tmp_path):
    store = corrupt(clean[0], tmp_path, "checkpoints", "rep_blocks__1", (3, 0, 0), np.nan)
    with pytest.warns(RuntimeWarning, match=r"checkpoints/rep_blocks__1 at checkpoint\(s\) 3"):
        ds = analyze(store, probe_checkpoints="none")      # and written: nothing aborts
    with xr.open_zarr(store, group="checkpoints") as ck:
        reps = ck["rep_blocks__1"].values
    for c in range(3):
        assert ds["cka_init"].sel(layer="blocks__1")[c] == pytest.approx(linear_cka_textbook(reps[c], reps[0]), rel=1e-9)
    assert np.isnan(ds["cka_init"].sel(layer="blocks__1")[3])
    with xr.open_zarr(store, group="analysis") as back:
        assert float(back["first_nonfinite_step"]) == 30


def test_cka_between_is_nan_only_where_a_representation_is_not_finite(clean, tmp_path):
    store = corrupt(clean[0], tmp_path, "checkpoints", "rep_blocks__0", (2, 1, 1), np.nan)
    other = tmp_path / "other" / "adam.zarr"
    shutil.copytree(clean[0], other)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        between = open_runs([store, other])["cka_between"]
    bad = between.sel(checkpoint=2, layer="blocks__0")
    assert np.isnan(bad.values).sum() == 3     # (bad, bad), (bad, good), (good, bad); (good, good) = 1
    assert np.isfinite(between.drop_sel(checkpoint=2).values).all()
    assert np.isfinite(between.sel(checkpoint=2, layer="blocks__1").values).all()


def test_a_diverged_run_from_a_training_loop(tmp_path):
    """Weights blown up to inf at step 2 of 4: NTK, representations, parameters and losses are non-finite
    from there on; checkpoints 0-1 are analysed, the rest is NaN, the first non-finite step is 2."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 6, generator=g, dtype=torch.float64), torch.arange(16) % 2
    model = RevMLP(6, 8, 2, 2, seed=0, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # the Recorder's own warning about non-finite values
        with Recorder(tmp_path / "div.zarr", model, probe=(x, y), config={"optimizer": "sgd", "seed": 0}) as rec:
            for step in range(4):
                if step == 2:
                    with torch.no_grad():
                        model.blocks[0].F.linear.weight.fill_(float("inf"))
                loss = torch.nn.functional.cross_entropy(model(x), y)
                rec.log(step, loss=float(loss.detach()), loss_after=float(loss.detach()))
                rec.checkpoint(step, train_loss=float(loss.detach()))
    with pytest.warns(RuntimeWarning, match="non-finite inputs"):
        ds = analyze(tmp_path / "div.zarr", probe_checkpoints="all")
    assert float(ds["first_nonfinite_step"]) == 2
    assert np.isfinite(ds["ntk_alignment_init"].values[:2]).all() and np.isnan(ds["ntk_alignment_init"].values[2:]).all()
    assert np.isfinite(ds["cka_init"].values[:2]).all() and np.isfinite(ds["probe_accuracy"].values[:2]).all()
    assert np.isfinite(ds["weight_rel_change"].values[:2]).all()


def test_nan_by_design_is_not_divergence(tmp_path):
    """Parameter rows a first_last store clears, and the gn_residual = NaN a first-order loop logs."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 6, generator=g, dtype=torch.float64), torch.arange(12) % 3
    model = RevMLP(6, 6, 2, 3, seed=0, dtype=torch.float64)
    with warnings.catch_warnings(), \
            Recorder(tmp_path / "fl.zarr", model, probe=(x, y), params="first_last", ntk=False, layers=[]) as rec:
        warnings.simplefilter("ignore", RuntimeWarning)     # the Recorder's note that it stored a NaN
        for step in range(4):
            with torch.no_grad():
                model.blocks[0].F.linear.weight.mul_(1.1)
            rec.log(step, loss=1.0 / (step + 1), gn_residual=float("nan"))
            rec.checkpoint(step)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)      # no warning about non-finite inputs
        ds = analyze(tmp_path / "fl.zarr", write=False)
    assert np.isnan(float(ds["first_nonfinite_step"])) and json.loads(ds.attrs["nonfinite"])["checkpoints"] == {}
    rel = ds["weight_rel_change"].sel(param=WEIGHT).values
    assert np.isfinite(rel[[0, -1]]).all() and np.isnan(rel[1:-1]).all()
