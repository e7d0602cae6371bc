"""write_report and compare on experiment folders (run stores + analysis.zarr) on disk."""

import json
import os
import time

import pytest
from experiment_dirs import make_experiment
from htmlcheck import parse
from synthetic import CONFIG, make_analysis

import reports
from reports.catalog import FIGURES
from reports.compare import experiment_names
from reports.experiment import analysis_is_fresh, load_analysis


@pytest.fixture(scope="module")
def experiment(written_report):
    return written_report.parent


def test_write_report_writes_page_and_pngs(experiment, written_report):
    out = written_report
    assert out == experiment / "report.html" and out.is_file()
    pngs = sorted(p.name for p in (experiment / "figures").glob("*.png"))
    assert pngs == sorted(f"{spec.name}.png" for spec in FIGURES)
    page = out.read_text(encoding="utf-8")
    doc = parse(page)
    assert doc.errors == [] and len(doc.images) == len(FIGURES)
    assert "Training dynamics: demo" in doc.all_text("title")
    text = doc.all_text("main")
    assert "torch 2.13.0" in text and "complete" in text and "model.depth" in text
    assert CONFIG["note"] in text and "&lt;b&gt;unescaped?&lt;/b&gt; &amp; &#x27;quotes&#x27;" in page
    assert "optimizer.name" in text and "adam: adam · gn: gn · sgd: sgd" in text


def test_write_report_custom_out(tmp_path):
    root = make_experiment(tmp_path / "one", make_analysis(optimizers=("gn",), n_steps=30))
    out = reports.write_report(str(root), out=tmp_path / "sub" / "mine.html")
    assert out == tmp_path / "sub" / "mine.html" and out.is_file()
    assert len(list((tmp_path / "sub" / "mine-figures").glob("*.png"))) == len(FIGURES) - 1  # no between-runs CKA


def test_stale_analysis_is_recomputed(tmp_path, monkeypatch):
    import analysis

    ds = make_analysis(optimizers=("gn", "sgd"), n_steps=50)
    root = make_experiment(tmp_path / "exp", ds)
    calls = []
    monkeypatch.setattr(analysis, "analyze_experiment", lambda d, **options: calls.append(d) or ds, raising=False)
    assert analysis_is_fresh(root)
    load_analysis(root)
    assert calls == []
    later = time.time() + 5
    os.utime(root / "gn.zarr" / "zarr.json", (later, later))  # a store written after the analysis
    assert not analysis_is_fresh(root)
    assert load_analysis(root).sizes["run"] == 2 and calls == [root]
    os.utime(root / "gn.zarr" / "zarr.json", (later - 120, later - 120))
    os.makedirs(root / "gn.zarr" / "analysis", exist_ok=True)
    (root / "gn.zarr" / "analysis" / "zarr.json").write_text("{}")  # its own analysis group does not count
    os.utime(root / "gn.zarr" / "analysis" / "zarr.json", (later, later))
    assert analysis_is_fresh(root)


def test_bad_arguments_name_the_value(tmp_path, experiment):
    with pytest.raises(ValueError, match="nowhere"):
        reports.write_report(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="42"):
        reports.write_report(42)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no run stores"):
        reports.write_report(tmp_path / "empty")
    with pytest.raises(ValueError, match="is a folder"):
        reports.write_report(experiment, out=tmp_path)
    (tmp_path / "bad.zarr").mkdir()
    (tmp_path / "bad.zarr" / "zarr.json").write_text("not json")
    with pytest.raises(ValueError, match="bad.zarr"):
        from reports.experiment import store_info
        store_info(tmp_path / "bad.zarr")


def test_compare_side_by_side(tmp_path, experiment):
    other_ds = make_analysis(optimizers=("gn", "adam"), n_steps=80, rng_seed=1)
    config = {**json.loads(other_ds.attrs["config"]), "data": {"name": "digits"}}
    other = make_experiment(tmp_path / "digits", other_ds, {k: config for k in ("gn", "adam")})
    out = reports.compare([experiment, other], tmp_path / "cmp.html")
    page = out.read_text(encoding="utf-8")
    doc = parse(page)
    assert doc.errors == [] and "script" not in {t for t, _ in doc.tags}
    assert doc.all_text("title") == "Comparison: demo vs digits"
    # the axes agree: one overlay per figure, except the between-runs CKA (one per experiment)
    assert len(doc.images) == len(FIGURES) + 1
    text = doc.all_text("main")
    assert "data.name" in text and "mnist1d" in text and "digits" in text
    assert ("The experiments were trained on different data or models, so they are shown side by side and no "
            "sentence compares them across experiments. Differing settings: data.name (demo: mnist1d · digits: "
            "digits).") in text
    findings = page.split("<h2>Findings</h2>")[1].split("<h2>Settings that differ</h2>")[0]
    assert findings.count("<tr>") == 1 + 3 + 2  # header + demo's 3 optimisers + digits' 2


def test_compare_names_and_errors(tmp_path):
    assert experiment_names([tmp_path / "a" / "x", tmp_path / "b" / "x"]) == ["a/x", "b/x"]
    with pytest.raises(ValueError, match="not distinct"):
        experiment_names([tmp_path / "a", tmp_path / "a"])
    with pytest.raises(TypeError, match="single path"):
        reports.compare(str(tmp_path), tmp_path / "o.html")
    with pytest.raises(ValueError, match="at least one"):
        reports.compare([], tmp_path / "o.html")
    with pytest.raises(ValueError, match="missing"):
        reports.compare([tmp_path / "missing"], tmp_path / "o.html")


def test_compare_refuses_an_out_that_is_not_an_html_page(tmp_path, experiment):
    """`--out notes.txt` once overwrote the user's file with the page: any out not ending in .html/.htm
    (or a folder) is refused before anything is written, and the existing file is left as it was."""
    from reports.experiment import ReportError

    for name in ("notes.txt", "results", "page.html.bak"):
        target = tmp_path / name
        target.write_text("keep me")
        with pytest.raises(ReportError, match=name.replace(".", r"\.")):
            reports.compare([experiment], target)
        assert target.read_text() == "keep me"
    with pytest.raises(ReportError, match="is a folder"):
        reports.compare([experiment], tmp_path)


def test_user_errors_are_dynamics_errors_and_the_cli_prints_one_line(tmp_path):
    import subprocess
    import sys

    from dynamics.errors import DynamicsError

    with pytest.raises(DynamicsError):
        reports.write_report(tmp_path / "missing")
    result = subprocess.run([sys.executable, "-m", "dynamics.cli", "report", str(tmp_path / "missing")],
                            capture_output=True, text=True)
    if "No module named dynamics.cli" in result.stderr:
        pytest.skip("dynamics.cli not present")
    assert result.returncode == 2, result.stderr
    assert "missing" in result.stderr and "Traceback" not in result.stderr


def test_a_single_run_report_shows_its_stores_status(tmp_path):
    """Issue #25 §2: the report of one complete store named as the user likes showed status "—"."""
    from real_runs import recorded_run

    store = recorded_run(tmp_path / "mine.zarr", {"note": "a user's loop"})
    page = reports.write_report(store).read_text(encoding="utf-8")
    runs = page.split("<h2>Runs and configuration</h2>")[1].split("<h2>")[0]
    assert "<td>complete</td>" in runs and "<td>—</td>" not in runs.split("</tr>")[1]


def test_compare_lists_only_the_settings_that_differ(tmp_path):
    """Issue #25 §2: one changed setting read "21 settings differ" (per-optimiser options and run names
    counted as differences). Two experiments that differ in GN's learning rate and in their seeds."""
    from reports.compare import _differing_settings

    def run(optimizer, seed, lr):
        options = {"lr": lr, "combine": "exact", "truncation": "exact"} if optimizer == "gn" else \
            {"lr": lr, "betas": [0.9, 0.999]}
        return {"optimizer": optimizer, "seed": seed, "optimizer_options": options,
                "train": {"seed": seed, "epochs": 20, "optimizers": ["gn", "adam"]},
                "model": {"hidden": 512}, "data": {"name": "mnist1d"}}

    first = {f"{o}-seed{s}": run(o, s, 0.1 if o == "gn" else 0.01) for o in ("gn", "adam") for s in (0, 1, 2)}
    second = {o: run(o, 0, 0.3 if o == "gn" else 0.01) for o in ("gn", "adam")}
    rows = _differing_settings({"a": first, "b": second})
    assert rows == [["optimizer_options.lr", "gn: 0.1; adam: 0.01", "gn: 0.3; adam: 0.01"],
                    ["seeds", "0, 1, 2", "0"]]
    assert _differing_settings({"a": first, "b": dict(first)}) == []
    third = {**second, "kgn": run("kgn", 0, 0.5)}   # an optimiser only one experiment ran: not a "setting"
    third["kgn"]["train"]["optimizers"] = ["gn", "adam"]
    assert [r[0] for r in _differing_settings({"b": second, "c": third})] == []
