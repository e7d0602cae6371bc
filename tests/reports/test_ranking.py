"""Sentences that rank optimisers (reports.ranking): the seed-to-seed spread, one seed, different data or
models. Experiments come from short real runs; every number in a sentence is recomputed here from the
run stores' raw metrics."""

import html
import json
import re

import numpy as np
import pytest
from experiment_dirs import make_experiment
from real_runs import real_experiment, recorded_run, tiny_config
from synthetic import make_analysis

import reports
from dynamics.store import open_run
from reports.ranking import Spread, incomparable, ranking_sentence, separated, spread

NUMBER = r"(−?[0-9.]+)"


def findings_items(page: str) -> list[str]:
    """The finding sentences of a report page, unescaped."""
    block = page.split('<ul class="findings">')[1].split("</ul>")[0]
    return [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", block)]


def raw_values(folder, optimizer, seeds):
    """Per seed, from the raw store: final test accuracy (%) and the transfer Σ log(other ratio) / Σ log(own ratio)."""
    out = {"test_acc": [], "transfer": []}
    for seed in seeds:
        tree = open_run(folder / (f"{optimizer}-seed{seed}.zarr" if len(seeds) > 1 else f"{optimizer}.zarr"))
        checkpoints, metrics = tree["checkpoints"].to_dataset(), tree["metrics"].to_dataset()
        out["test_acc"].append(100 * float(checkpoints["test_acc"].values[-1]))
        own = sum(np.log(a / b) for a, b in zip(metrics["loss_after"].values, metrics["loss"].values))
        other = sum(np.log(a / b) for a, b in zip(metrics["other_loss_after"].values, metrics["other_loss"].values))
        out["transfer"].append(other / own)
    return out


def mean_sd(values):
    n = len(values)
    mean = sum(values) / n
    return mean, (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    folder = real_experiment(tmp_path_factory.mktemp("ranked") / "three", seeds=(0, 1, 2))
    return folder, reports.write_report(folder)


def test_rule_against_interval_overlap():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = rng.normal(0, 1, rng.integers(2, 6)), rng.normal(rng.normal(0, 2), 1, rng.integers(2, 6))
        sa, sb = spread("A", a), spread("B", b)
        lo_a, hi_a = a.mean() - a.std(ddof=1), a.mean() + a.std(ddof=1)
        lo_b, hi_b = b.mean() - b.std(ddof=1), b.mean() + b.std(ddof=1)
        assert separated(sa, sb) == (hi_a < lo_b or hi_b < lo_a)
    assert separated(spread("A", [1.0]), spread("B", [5.0, 5.1])) is None
    assert spread("A", [1.0, np.nan, 3.0]) == Spread("A", 2.0, 2 ** 0.5, 2)


def test_digits_grow_until_the_order_is_visible():
    sentence = ranking_sentence("Alignment", [spread("A", [0.99991, 0.99992]), spread("B", [0.99981, 0.99983])])
    assert "lowest for B (0.9998 ± " in sentence and "highest for A (0.9999 ± " in sentence


def test_three_seeds_rank_with_the_spread(three_seeds):
    folder, report = three_seeds
    items = findings_items(report.read_text(encoding="utf-8"))
    raw = {o: raw_values(folder, o, (0, 1, 2)) for o in ("sgd", "adam")}
    checked = 0
    for field, start, unit in (("test_acc", "Final test accuracy", "%"),
                               ("transfer", "Transfer to other batches", "")):
        (sentence,) = [s for s in items if s.startswith(start)]
        m = re.search(rf"is lowest for (\w+) \({NUMBER} ± {NUMBER}{unit}\) and highest for (\w+) "
                      rf"\({NUMBER} ± {NUMBER}{unit}\); the difference (exceeds|is within) the seed-to-seed spread "
                      r"\(the mean ± sd intervals over 3 seeds each (do not overlap|overlap)\)", sentence)
        assert m, sentence
        stats = {o: mean_sd(raw[o][field]) for o in raw}
        low, high = sorted(stats, key=lambda o: stats[o][0])
        assert (m[1], m[4]) == ({"sgd": "SGD", "adam": "Adam"}[low], {"sgd": "SGD", "adam": "Adam"}[high])
        for (mean, sd), shown_mean, shown_sd in ((stats[low], m[2], m[3]), (stats[high], m[5], m[6])):
            places = len(shown_mean.split(".")[1])
            assert float(shown_mean) == pytest.approx(mean, abs=0.51 * 10 ** -places)
            assert float(shown_sd) == pytest.approx(sd, abs=0.51 * 10 ** -len(shown_sd.split(".")[1]))
        apart = abs(stats[high][0] - stats[low][0]) > stats[high][1] + stats[low][1]
        assert (m[7] == "exceeds") == apart and (m[8] == "do not overlap") == apart
        assert apart or sentence.endswith("so this order is not established.")
        checked += 1
    assert checked == 2


def test_one_seed_lists_without_ranking(tmp_path):
    folder = real_experiment(tmp_path / "one", seeds=(3,))
    page = reports.write_report(folder).read_text(encoding="utf-8")
    items = findings_items(page)
    text = " ".join(items)
    assert "lowest for" not in text and "highest for" not in text and "largest for" not in text
    (sentence,) = [s for s in items if s.startswith("Final test accuracy")]
    raw = {o: raw_values(folder, o, (3,))["test_acc"][0] for o in ("sgd", "adam")}
    m = re.fullmatch(rf"Final test accuracy: Adam {NUMBER}%, SGD {NUMBER}% \(every optimiser with one seed: the "
                     r"seed-to-seed spread is unknown, so the optimisers are not ranked\)\.", sentence)
    assert m, sentence
    assert float(m[1]) == pytest.approx(raw["adam"], abs=0.051) and float(m[2]) == pytest.approx(raw["sgd"], abs=0.051)


def test_different_data_is_never_compared(tmp_path):
    folder = tmp_path / "mixed"
    real_experiment(folder, optimizers=("sgd",), seeds=(0,))
    real_experiment(folder, optimizers=("adam",), seeds=(0,), config=tiny_config(data={"n_train": 120}))
    page = reports.write_report(folder).read_text(encoding="utf-8")
    text = " ".join(findings_items(page))
    assert "lowest for" not in text and "not ranked" not in text and "Final test accuracy" not in text
    assert ("The runs were trained on different data or models, so no sentence here compares them: their numbers "
            "are shown side by side in the tables only. Differing settings: data.n_train (adam: 120 · sgd: 160).") in text
    assert "SGD&#x27;s updates reduce" in page  # statements about one optimiser stay


def test_different_models_refused_with_user_text_escaped(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    recorded_run(folder / "a.zarr", {"optimizer": "sgd", "model": {"name": "<mlp> & 'wide'"}})
    recorded_run(folder / "b.zarr", {"optimizer": "adam", "model": {"name": "revmlp"}})
    page = reports.write_report(folder).read_text(encoding="utf-8")
    assert "<mlp>" not in page
    # configurations are named by the runs' labels, as everywhere on the page (analysis.labels)
    assert "model.name (sgd: &lt;mlp&gt; &amp; &#x27;wide&#x27; · adam: revmlp)" in page.split(
        '<ul class="findings">')[1]
    assert "lowest for" not in " ".join(findings_items(page))


def test_incomparable_lists_only_data_and_model():
    configs = {"a": {"data": {"name": "digits"}, "model": {"hidden": 8}, "train": {"lr": 1}},
               "b": {"data": {"name": "digits"}, "model": {"hidden": 8}, "train": {"lr": 2}},
               "c": {"data": {"name": "digits"}, "model": {"hidden": 16}}}
    assert incomparable({k: configs[k] for k in "ab"}) == []
    assert incomparable(configs) == ["model.hidden (a: 8 · b: 8 · c: 16)"]
    assert incomparable({"a": configs["a"], "d": {}}) == ["data.name (a: digits · d: (absent))",
                                                          "model.hidden (a: 8 · d: (absent))"]


@pytest.mark.slow
def test_claim_verdicts_say_one_seed_and_refuse_mixed_data(tmp_path):
    ds = make_analysis(optimizers=("gn", "adam"), n_steps=60)
    page = reports.write_report(make_experiment(tmp_path / "one", ds)).read_text(encoding="utf-8")
    claims = page.split("<h2>Claims of the paper</h2>")[1].split("<h2>")[0]
    assert "on one seed (the seed-to-seed spread is unknown)" in claims
    configs = {label: {**json.loads(ds.attrs["config"]), "data": {"name": name}}
               for label, name in (("gn", "mnist1d"), ("adam", "digits"))}
    page = reports.write_report(make_experiment(tmp_path / "mixed", ds, configs)).read_text(encoding="utf-8")
    claims = page.split("<h2>Claims of the paper</h2>")[1].split("<h2>")[0]
    assert "not compared (the runs differ in data or model)" in claims and ">holds<" not in claims
