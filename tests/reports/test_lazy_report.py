"""The lazy-regime figures, findings.json entries and report section, on a synthetic analysis with
known values (statistics recomputed here with numpy)."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from reports.figures.lazy import linearized_twin, ntk_spectrum, sharpness, sharpness_ratio
from reports.lazy_regime import lazy_findings, lazy_html, lazy_sentences
from reports.report import report_html
from synthetic import DISTANCE, final_distance, make_analysis, with_lazy

@pytest.fixture(scope="module")
def lazy():
    return make_analysis(seeds=(0, 1, 2), n_steps=120)   # with_lazy: the lazy-regime variables


def test_measured_values_are_final_values_over_seeds(lazy):
    document = lazy_findings(lazy)
    measured = document["measured"]
    for opt in ("gn", "sgd", "adam"):
        finals = [final_distance(DISTANCE, opt, s) for s in (0, 1, 2)]
        entry = measured["linearized_distance"]["values"][opt]
        assert entry["mean"] == pytest.approx(np.mean(finals))
        assert entry["sd"] == pytest.approx(np.std(finals, ddof=1))
        assert entry["n_seeds"] == 3
        assert measured["linearized_distance"]["per_seed"][opt] == pytest.approx(dict(zip("012", finals)))
        assert measured["linearized_distance"]["details"][f"{opt}:probe"]["mean"] == pytest.approx(0.9 * np.mean(finals))
    assert measured["sharpness_ratio"]["values"]["sgd"]["mean"] == pytest.approx(np.mean([11, 21, 31]) / (2 / 0.3))
    assert measured["sharpness_ratio"]["values"]["adam"]["mean"] == pytest.approx(np.mean([1000, 2000, 3000]) / 3800)
    assert measured["sharpness_ratio"]["values"]["gn"]["mean"] is None   # GN has no threshold
    assert measured["ntk_label_alignment"]["values"]["gn"]["mean"] == pytest.approx(10 / 16)   # k = 10 of 16
    assert measured["ntk_condition_number"]["details"]["gn:init"]["mean"] == pytest.approx(100)
    assert measured["linearized_test_acc"]["details"]["sgd:gap"]["mean"] == pytest.approx(2.0)
    prediction = document["prediction"]
    assert prediction["verdict"] == "holds" and prediction["per_seed"] == {"0": True, "1": True, "2": True}


@pytest.mark.parametrize("gn, verdict", [(0.5, "does not hold"), (0.29, "inconclusive"), (0.2, "holds")])
def test_prediction_verdict_seed_by_seed(gn, verdict):
    ds = with_lazy(make_analysis(seeds=(0, 1, 2), n_steps=60, diagnostics=False), distance={**DISTANCE, "gn": gn})
    # GN < ½ Adam on seed 0 for gn < 0.3, on seed 2 for gn < 0.275: 0.29 holds on seed 0 only
    assert lazy_findings(ds)["prediction"]["verdict"] == verdict


def test_figures_draw_and_refuse_what_was_not_recorded(lazy):
    for draw, panels in ((linearized_twin, 2), (ntk_spectrum, 4), (sharpness, 2)):
        fig = draw(lazy)
        assert isinstance(fig, Figure) and len(fig.axes) == panels
    plain = make_analysis(seeds=(0,), n_steps=60, diagnostics=False)
    for draw, name in ((linearized_twin, "linearized_distance_test"), (ntk_spectrum, "ntk_eigenvalues"),
                       (sharpness, "sharpness")):
        with pytest.raises(ValueError, match=name):
            draw(plain)
    adam = int(np.flatnonzero(lazy["optimizer"].values == "adam")[0])
    steps, ratio = sharpness_ratio(lazy, adam)
    assert steps[0] > 0   # no preconditioner before Adam's first step: no point at step 0
    np.testing.assert_allclose(ratio, lazy["preconditioned_sharpness"].values[adam, 1:] / 3800)
    assert sharpness_ratio(lazy, 0)[1].size == 0   # GN


def test_ntk_spectrum_figure_with_runs_of_different_probe_sizes(lazy):
    padded = lazy.copy(deep=True)
    padded["ntk_eigenvalues"][0, :, 8:] = np.nan   # one run with a smaller probe set (outer join in open_runs)
    padded["ntk_label_alignment"][0, :, 8:] = np.nan
    assert isinstance(ntk_spectrum(padded), Figure)


def test_report_section_sentences_and_refusal(lazy):
    document = lazy_findings(lazy)
    sentences = lazy_sentences(document)
    assert any("lowest for GN" in s and "highest for Adam" in s and "seed-to-seed spread" in s for s in sentences)
    assert sentences[-1].startswith("The lazy-regime prediction") and "holds on 3 seeds" in sentences[-1]
    refused = lazy_sentences(document, ["model.hidden (a: 1 · b: 2)"])
    assert len(refused) == 1 and "different data or models" in refused[0]
    html = lazy_html(lazy, document)
    assert "distance to twin (test)" in html and "<li>" in html
    page = report_html(lazy, title="t", claims={"claims": {}, "lazy_regime": document}, figures=([], []))
    assert "<h2>Lazy regime</h2>" in page and page.index("Lazy regime") < page.index("<h2>Figures</h2>")
    plain = make_analysis(seeds=(0,), n_steps=60, diagnostics=False)
    assert lazy_findings(plain)["measured"] == {} and lazy_html(plain, lazy_findings(plain)) == ""
    assert lazy_findings(plain)["prediction"]["verdict"] == "not measured"
