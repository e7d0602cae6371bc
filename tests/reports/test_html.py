"""Structure of the report page, checked without a browser: self-contained, balanced, escaped."""

import json
import re

import numpy as np
import pytest
from htmlcheck import decode_data_png, parse
from synthetic import CONFIG, make_analysis

from reports import html as h
from reports.catalog import FIGURES
from reports.report import report_html


@pytest.fixture(scope="module")
def page(analysis_ds):
    return report_html(analysis_ds, title="Training dynamics: demo", source="runs/demo")


def test_page_is_self_contained_and_balanced(page):
    assert page.startswith("<!DOCTYPE html>")
    doc = parse(page)
    assert doc.errors == []
    assert "script" not in {tag for tag, _ in doc.tags}
    csp = [a["content"] for t, a in doc.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0].startswith("default-src 'none'; img-src data:")
    # no resource is fetched from anywhere: every src/href is an embedded data URI or an in-page anchor
    for tag, attrs in doc.tags:
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith(("data:", "#")), (tag, attrs[key][:80])
    assert not re.search(r"url\(|@import|https?://", page.split("<main>")[0])


def test_every_figure_is_embedded_with_its_real_size_and_caption(page):
    doc = parse(page)
    assert len(doc.images) == len(FIGURES)
    for img, spec in zip(doc.images, FIGURES):
        png = decode_data_png(img["src"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert (int(img["width"]), int(img["height"])) == h.png_size(png)
        assert int(img["width"]) > 300 and img["alt"] == spec.title
    captions = doc.all_text("figcaption")
    for i, spec in enumerate(FIGURES, 1):
        assert f"Figure {i}. {spec.title}." in captions


def test_title_config_versions_and_findings_are_present(page):
    doc = parse(page)
    assert doc.all_text("title") == "Training dynamics: demo"
    assert "Training dynamics: demo" in doc.all_text("h1")
    tables = doc.all_text("table")
    assert "model.hidden" in tables and str(CONFIG["model"]["hidden"]) in tables
    for name in ("GN", "SGD", "Adam"):
        assert name in tables
    findings = doc.all_text("ul")
    assert "GN's updates reduce the loss of the batch they were computed on" in findings
    order = [page.index(s) for s in ("<h1>", "<h2>Runs and configuration", "<h2>Findings", "<h2>Figures")]
    assert order == sorted(order)


def test_user_text_is_escaped():
    ds = make_analysis(optimizers=("gn", "sgd"), n_steps=60)
    evil = '<script>alert("x")</script>&$x_1$'
    ds = ds.assign_coords(label=("run", [evil, "sgd"]), run=[evil, "sgd"], run_=[evil, "sgd"])
    ds.attrs["config"] = json.dumps({"name": '"><img src=x onerror=alert(1)>', "<key>": 1})
    page = report_html(ds, title="t <i>itle</i>", source="<dir>")
    doc = parse(page)
    assert doc.errors == []
    assert "script" not in {tag for tag, _ in doc.tags}
    assert all(img["src"].startswith("data:image/png") for img in doc.images)
    assert len(doc.images) == len(FIGURES)  # a "$" in a run name does not break matplotlib's mathtext
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;$x_1$" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<i>itle" not in page and "&lt;dir&gt;" in page
    assert evil in doc.all_text("table")  # the text reads as typed


def test_missing_quantities_are_listed_not_drawn():
    ds = make_analysis(optimizers=("sgd",), n_steps=60)
    ds = ds.drop_vars([v for v in ds.data_vars if v.startswith("ntk_")] + ["cka_between"])
    ds["gn_residual"] = ds["gn_residual"] * np.nan
    page = report_html(ds, title="first-order only")
    doc = parse(page)
    assert doc.errors == []
    assert len(doc.images) == len(FIGURES) - 4  # no NTK (dynamics, spectrum), no GN residual, no between-runs CKA
    not_shown = page.split("<h2>Not shown</h2>")[1]
    for needed in ("ntk_alignment_init", "ntk_eigenvalues", "gn_residual", "cka_between"):
        assert needed in not_shown
    findings = page.split("<h2>Findings</h2>")[1].split("<h2>Figures</h2>")[0].split("<h2>Lazy regime</h2>")[0]
    sentences = findings.split('<ul class="findings">')[1]
    assert "NTK" not in sentences and "residual" not in sentences and "SGD&#x27;s updates" in sentences
    sgd_row = findings.split("SGD</td>")[1].split("</tr>")[0]
    assert sgd_row.count("—") == 3  # NTK alignment; next-batch change and transfer (not in the synthetic data)


def test_number_formatting_and_flatten():
    assert h.number(-46.41, digits=1, unit="%", signed=True) == "−46.4%"
    assert h.number(0.5, 0.25) == "0.50 ± 0.25"
    assert h.number(float("nan")) == "—"
    assert h.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]", "d": "null"}
    rows = h.merged_rows({"gn": {"lr": 1.0, "x": 2}, "sgd": {"lr": 0.1, "x": 2}})
    assert rows == [["lr", "gn: 1.0 · sgd: 0.1"], ["x", "2"]]
    with pytest.raises(ValueError, match="not a PNG"):
        h.png_size(b"GIF89a" + bytes(30))


@pytest.mark.parametrize("value, kwargs, text", [
    (-0.0042, {"digits": 1, "unit": "%", "signed": True}, "−0.0042%"),
    (-0.04, {"digits": 1, "unit": "%", "signed": True}, "−0.040%"),
    (0.00049, {}, "0.00049"),
    (-4.5, {"digits": 1, "unit": "%", "signed": True}, "−4.5%"),
    (0.0, {"digits": 1, "signed": True}, "+0.0"),
    (12.345, {}, "12.35"),
])
def test_numbers_never_round_a_nonzero_value_to_zero(value, kwargs, text):
    assert h.number(value, **kwargs) == text


def test_spread_gets_the_places_it_needs():
    assert h.number(-0.0042, 0.0011, digits=1, unit="%") == "−0.0042 ± 0.0011%"
    assert h.number(2.5, 0.0003, digits=1) == "2.5 ± 0.00030"
