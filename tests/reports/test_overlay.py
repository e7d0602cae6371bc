"""``dynamics compare`` overlays experiments in one panel where the axes agree, and says why not
elsewhere (reports.overlay). Experiments come from short real runs."""

import html
import re

import numpy as np
import pytest
from real_runs import real_experiment, tiny_config
from synthetic import make_analysis

import reports
from dynamics.store import open_run
from reports.catalog import FIGURES
from reports.experiment import load_analysis
from reports.overlay import axes_disagreement, overlay_dataset


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    root = tmp_path_factory.mktemp("overlay")
    same = real_experiment(root / "short & <a>", optimizers=("sgd", "adam"))
    longer = real_experiment(root / "long", optimizers=("sgd",), config=tiny_config(train={"steps": 12}))
    mse = real_experiment(root / "mse", optimizers=("sgd",), config=tiny_config(train={"loss": "mse"}))
    deep = real_experiment(root / "deep", optimizers=("sgd",), config=tiny_config(model={"depth": 3}))
    return {"same": same, "long": longer, "mse": mse, "deep": deep}


def figure_titles(page: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<figcaption><strong>Figure \d+\. (.*?)\.</strong>", page)]


def notes(page: str) -> str:
    return " ".join(html.unescape(n) for n in re.findall(r'<p class="note">(.*?)</p>', page))


def test_agreeing_axes_are_overlaid_with_the_raw_values(experiments, tmp_path):
    dirs = [experiments["same"], experiments["long"]]
    page = reports.compare(dirs, tmp_path / "c.html").read_text(encoding="utf-8")
    titles = figure_titles(page)
    overlaid = [s.title for s in FIGURES if f"{s.title} — all experiments" in titles]
    assert "Loss and accuracy" in overlaid and "Neural tangent kernel" in overlaid and "Weight change" in overlaid
    assert "Representation change per layer" in overlaid
    assert "Side by side, not overlaid: it compares the runs within one experiment." in notes(page)
    assert "short & <a>" not in page and "short &amp; &lt;a&gt;" in page
    # the overlaid Dataset holds each experiment's own runs, values as in the raw stores
    names = ["short & <a>", "long"]
    ds = overlay_dataset([load_analysis(d) for d in dirs], names)
    assert list(ds["run"].values) == ["short & <a>: adam", "short & <a>: sgd", "long: sgd"]
    for run, folder, store in (("short & <a>: sgd", dirs[0], "sgd.zarr"), ("long: sgd", dirs[1], "sgd.zarr")):
        raw = open_run(folder / store)["checkpoints"].to_dataset()
        steps = ds["checkpoint_step"].sel(run=run).values
        keep = np.isfinite(steps)
        raw_steps = raw["checkpoint_step"] if "checkpoint_step" in raw.variables else raw["step"]
        np.testing.assert_array_equal(steps[keep], raw_steps.values)
        np.testing.assert_array_equal(ds["test_acc"].sel(run=run).values[keep], raw["test_acc"].values)
    assert np.isnan(ds["loss"].sel(run="short & <a>: sgd").sel(step=12).item())  # 8 steps, padded


@pytest.mark.slow
def test_different_loss_functions_stay_side_by_side(experiments, tmp_path):
    page = reports.compare([experiments["long"], experiments["mse"]], tmp_path / "c.html").read_text(encoding="utf-8")
    titles, said = figure_titles(page), notes(page)
    assert "Loss and accuracy — long" in titles and "Loss and accuracy — mse" in titles
    assert "Side by side, not overlaid: their loss functions differ (long: ce, mse: mse)." in said
    assert "Neural tangent kernel — all experiments" in titles   # alignments do not depend on the loss


@pytest.mark.slow
def test_different_layers_stay_side_by_side(experiments, tmp_path):
    page = reports.compare([experiments["long"], experiments["deep"]], tmp_path / "c.html").read_text(encoding="utf-8")
    titles, said = figure_titles(page), notes(page)
    assert "Representation change per layer — deep" in titles
    assert "Side by side, not overlaid: their models have different layers." in said
    assert "Side by side, not overlaid: their models have different parameter tensors." in said
    assert "Loss and accuracy — all experiments" in titles
    assert "The experiments were trained on different data or models" in said


def test_axes_rule_members():
    a, b = make_analysis(optimizers=("gn",), n_steps=40), make_analysis(optimizers=("adam",), n_steps=60)
    assert axes_disagreement("loss_accuracy", [a, b], ["a", "b"]) == ""
    no_steps = b.drop_vars("checkpoint_step")
    assert axes_disagreement("gn_residual", [a, no_steps], ["a", "b"]) == (
        "their x axes differ (a: training step, b: checkpoint index)")
    centred = b.assign_attrs(kernel_alignment="centred")
    assert axes_disagreement("ntk_dynamics", [a, centred], ["a", "b"]) == (
        "their kernel alignments differ (a: uncentred, b: centred)")
    assert axes_disagreement("loss_accuracy", [a, centred], ["a", "b"]) == ""
