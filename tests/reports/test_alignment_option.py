"""Centred kernel alignment as an option of analyze / report / the CLI: values against an explicit
centring matrix on the stores' raw NTKs, the attribute saying which, the freshness token, the page."""

import json
import shutil

import numpy as np
import pytest
import xarray as xr
from real_runs import real_experiment

import reports
from analysis import analyze, open_runs
from analysis.runs import experiment_analysis_is_fresh, fresh_analysis
from dynamics.cli import main
from dynamics.store import open_run
from reports.experiment import load_analysis


def brute_alignment(a, b, centered):
    """⟨HAH, HBH⟩_F / (‖HAH‖_F ‖HBH‖_F) with the explicit H = I − 11ᵀ/N (or H = I)."""
    n = a.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n if centered else np.eye(n)
    a, b = h @ a @ h, h @ b @ h
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def brute_metrics(store, centered):
    """A(Θ_t, Θ_0), 1 − A(Θ_t, Θ_{t−1}), A(Θ_t, YYᵀ) from the store's raw NTKs and probe labels."""
    tree = open_run(store)
    ntk = np.asarray(tree["checkpoints"]["ntk"].values, dtype=np.float64)
    y = np.asarray(tree["probe"]["y"].values).astype(int)
    onehot = np.eye(y.max() + 1)[y]
    target = onehot @ onehot.T
    init = [brute_alignment(k, ntk[0], centered) for k in ntk]
    velocity = [np.nan] + [1 - brute_alignment(ntk[c], ntk[c - 1], centered) for c in range(1, len(ntk))]
    return {"ntk_alignment_init": init, "ntk_velocity": velocity,
            "ntk_target_alignment": [brute_alignment(k, target, centered) for k in ntk]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return real_experiment(tmp_path_factory.mktemp("align") / "exp", optimizers=("sgd", "adam"))


def test_centred_values_attribute_and_token(folder):
    store = folder / "sgd.zarr"
    centred = analyze(store, centered_alignment=True)
    for centered, ds in ((True, centred), (False, analyze(store, write=False))):
        for name, expected in brute_metrics(store, centered).items():
            np.testing.assert_allclose(ds[name].values, expected, rtol=1e-10, atol=1e-12, err_msg=name)
            assert ds[name].attrs["kernel_alignment"] == ("centred" if centered else "uncentred")
        assert ds.attrs["kernel_alignment"] == ("centred" if centered else "uncentred")
        assert json.loads(ds.attrs["analysis"])["centered_alignment"] is centered
    assert not np.allclose(centred["ntk_alignment_init"].values, analyze(store, write=False)["ntk_alignment_init"])
    # the stored group is centred: served for a centred request only
    stored = xr.open_zarr(store, group="analysis")
    assert stored.attrs["kernel_alignment"] == "centred" and json.loads(stored.attrs["source"])["kernel_alignment"] == "centred"
    served, _ = fresh_analysis(store, centered_alignment=True)
    assert served is not None and served.attrs["kernel_alignment"] == "centred"
    missing, why = fresh_analysis(store)
    assert missing is None and why.endswith("it holds centred kernel alignment and uncentred was asked for")
    plain = open_runs([store])  # recomputed uncentred, and written back as such
    np.testing.assert_allclose(plain["ntk_alignment_init"].isel(run=0).values,
                               brute_metrics(store, False)["ntk_alignment_init"], rtol=1e-10)
    assert plain.attrs["kernel_alignment"] == "uncentred"
    assert fresh_analysis(store)[0] is not None and fresh_analysis(store, centered_alignment=True)[0] is None


@pytest.mark.slow
def test_experiment_analysis_and_report_say_which(folder, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(folder, exp)
    page = reports.write_report(exp, centered_alignment=True).read_text(encoding="utf-8")
    assert experiment_analysis_is_fresh(exp, centered_alignment=True) is True
    assert experiment_analysis_is_fresh(exp) is False
    assert "centred kernel alignment A(HK₁H, HK₂H), H = I − 11ᵀ/N (Cortes et al. 2012)" in page
    ntk_caption = page.split('id="ntk_dynamics"')[1].split("</figcaption>")[0]
    assert "NTK alignments here are the centred kernel alignment" in ntk_caption
    assert "final centred NTK alignment to initialisation" in page
    ds = load_analysis(exp, centered_alignment=True)
    expected = {o: brute_metrics(exp / f"{o}.zarr", True)["ntk_alignment_init"][-1] for o in ("sgd", "adam")}
    for o, value in expected.items():
        assert ds["ntk_alignment_init"].sel(run=o).values[-1] == pytest.approx(value, rel=1e-10)
    # an uncentred request is not served the centred analysis
    plain = load_analysis(exp)
    assert plain.attrs["kernel_alignment"] == "uncentred"
    assert plain["ntk_alignment_init"].sel(run="sgd").values[-1] == pytest.approx(
        brute_metrics(exp / "sgd.zarr", False)["ntk_alignment_init"][-1], rel=1e-10)
    page = reports.write_report(exp).read_text(encoding="utf-8")
    assert "NTK alignments here are the uncentred kernel alignment" in page and "final uncentred NTK" in page


@pytest.mark.slow
def test_cli_option(folder, tmp_path, capsys):
    exp = tmp_path / "cli"
    shutil.copytree(folder, exp)
    assert main(["analyze", str(exp), "--centered-alignment"]) == 0
    assert xr.open_zarr(exp / "analysis.zarr").attrs["kernel_alignment"] == "centred"
    assert main(["analyze", str(exp / "adam.zarr"), "--centered-alignment"]) == 0
    assert xr.open_zarr(exp / "adam.zarr", group="analysis").attrs["kernel_alignment"] == "centred"
    assert main(["report", str(exp), "--centered-alignment"]) == 0
    assert "NTK alignments here are the centred" in (exp / "report.html").read_text(encoding="utf-8")
    shutil.copytree(exp, tmp_path / "cli2")   # compare needs two experiments
    assert main(["compare", str(exp), str(tmp_path / "cli2"), "--out", str(tmp_path / "c.html"),
                 "--centered-alignment"]) == 0
    assert "NTK alignments here are the centred" in (tmp_path / "c.html").read_text(encoding="utf-8")
    capsys.readouterr()
