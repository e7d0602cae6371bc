"""The six claims of findings.json: numbers recomputed from the raw run stores (metrics, checkpoints,
params) with plain numpy and textbook formulas; verdict rules on hand-made per-seed values."""

import json
import math

import numpy as np
import pytest
import xarray as xr

from reports.claims import CLAIM_IDS, CLAIMS, verdict

TINY = """preset = "digits"
name = "tiny-claims"
[data]
n_train = 160
n_test = 60
probe_size = 32
[model]
hidden = 24
depth = 2
[train]
optimizers = ["gn", "sgd", "adam"]
steps = 20
batch_size = 16
checkpoints = 5
"""
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """Three optimisers × two seeds of a tiny config trained by the CLI; analysed without linear probes
    (the costly part, not needed by any claim); then the report (which writes findings.json)."""
    from analysis import analyze
    from dynamics.cli import main
    from reports import write_report

    root = tmp_path_factory.mktemp("claims")
    (root / "tiny.toml").write_text(TINY)
    out = root / "run"
    for seed in SEEDS:
        for optimizer in ("gn", "sgd", "adam"):
            store = out / f"{optimizer}-seed{seed}.zarr"
            assert main(["train", "--config", str(root / "tiny.toml"), "--optimizer", optimizer, "--seed", str(seed),
                         "--out", str(store), "--quiet"]) == 0
            analyze(store, probe_checkpoints="none")
    write_report(out)
    return out


def raw(store, group):
    return xr.open_zarr(store, group=group, consolidated=False).load()


def centred_gram(x):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n   # explicit centring matrix
    return h @ x @ x.T @ h


def textbook_cka(x, y):
    kx, ky = centred_gram(x), centred_gram(y)
    return np.sum(kx * ky) / math.sqrt(np.sum(kx * kx) * np.sum(ky * ky))


def expected_per_run(store):
    """Each claim's quantity for one store, from its raw groups."""
    metrics, checkpoints, params = raw(store, "metrics"), raw(store, "checkpoints"), raw(store, "params")
    before, after = metrics["loss"].values, metrics["loss_after"].values
    steps = metrics["step"].values
    own = [100 * (a - b) / b for a, b in zip(after, before)]
    k0, kt = checkpoints["ntk"].values[0], checkpoints["ntk"].values[-1]
    reps = [name for name in checkpoints.data_vars if name.startswith("rep_")]
    cos = []
    for name in params.data_vars:
        v0, vt = params[name].values[0].ravel(), params[name].values[-1].ravel()
        if np.linalg.norm(v0) > 0:  # a zero-initialised tensor (a bias) has no angle to its start
            cos.append(1 - v0 @ vt / (np.linalg.norm(v0) * np.linalg.norm(vt)))
    ck_steps = checkpoints["checkpoint_step"].values
    early = int(np.argmin(np.abs(ck_steps - 0.1 * ck_steps.max())))
    return {
        "own": np.mean(own),
        "own_early": np.mean([o for o, s in zip(own, steps) if s <= 0.1 * steps.max()]),
        "ntk": np.sum(k0 * kt) / (np.linalg.norm(k0) * np.linalg.norm(kt)),
        "cka": np.mean([textbook_cka(checkpoints[r].values[0], checkpoints[r].values[-1]) for r in reps]),
        "weights": np.mean(cos),
        "test_acc": 100 * checkpoints["test_acc"].values[-1], "test_loss": checkpoints["test_loss"].values[-1],
        "train_end": checkpoints["train_loss"].values[-1], "train_early": checkpoints["train_loss"].values[early],
    }


def test_findings_json_recomputed_from_raw_stores(experiment):
    document = json.loads((experiment / "findings.json").read_text())
    claims = document["claims"]
    assert list(claims) == list(CLAIM_IDS)
    runs = {(o, s): expected_per_run(experiment / f"{o}-seed{s}.zarr") for o in ("gn", "sgd", "adam") for s in SEEDS}

    def check(claim, key, per_seed, detail=None):
        for optimizer in ("gn", "sgd", "adam"):
            values = [per_seed(optimizer, s) for s in SEEDS]
            entry = claims[claim]["details" if detail else "values"][f"{optimizer}:{detail}" if detail else optimizer]
            assert entry["n_seeds"] == len(SEEDS)
            assert entry["mean"] == pytest.approx(np.mean(values), rel=1e-9, abs=1e-12), (claim, optimizer)
            assert entry["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-6, abs=1e-12), (claim, optimizer)

    check("own_batch_decrease", "own", lambda o, s: runs[o, s]["own"])
    check("own_batch_decrease", "own", lambda o, s: runs[o, s]["own_early"], detail="early")
    check("ntk_change", "ntk", lambda o, s: runs[o, s]["ntk"])
    check("representation_change", "cka", lambda o, s: runs[o, s]["cka"])
    check("weight_change", "weights", lambda o, s: runs[o, s]["weights"])
    check("generalization", "test_acc", lambda o, s: runs[o, s]["test_acc"])
    check("generalization", "test_loss", lambda o, s: runs[o, s]["test_loss"], detail="loss")
    check("train_saturation", "end", lambda o, s: runs[o, s]["train_end"] / runs["adam", s]["train_end"])
    check("train_saturation", "early", lambda o, s: runs[o, s]["train_early"] / runs["adam", s]["train_early"],
          detail="early")
    # verdicts follow the stated criteria seed by seed
    own_met = [runs["gn", s]["own"] < min(runs["sgd", s]["own"], runs["adam", s]["own"]) for s in SEEDS]
    expected = "holds" if all(own_met) else "does not hold" if not any(own_met) else "inconclusive"
    assert claims["own_batch_decrease"]["verdict"] == expected
    assert claims["own_batch_decrease"]["per_seed"] == {str(s): m for s, m in zip(SEEDS, own_met)}
    gen_met = [runs["gn", s]["test_acc"] < runs["adam", s]["test_acc"]
               and runs["gn", s]["test_loss"] > runs["adam", s]["test_loss"] for s in SEEDS]
    assert claims["generalization"]["per_seed"] == {str(s): m for s, m in zip(SEEDS, gen_met)}
    for claim in claims.values():
        assert claim["verdict"] in ("holds", "does not hold", "inconclusive", "not measured")
        assert claim["statement"] and claim["criterion"]
    page = (experiment / "report.html").read_text()
    assert page.index("Claims of the paper") < page.index("<h2>Figures</h2>")
    for claim in claims.values():
        assert claim["verdict"] in page


@pytest.mark.parametrize("gn,adam,expected", [
    ({0: 0.9, 1: 0.8, 2: 0.7}, {0: 0.95, 1: 0.9, 2: 0.85}, "holds"),
    ({0: 0.99, 1: 0.99}, {0: 0.95, 1: 0.9}, "does not hold"),
    ({0: 0.9, 1: 0.99}, {0: 0.95, 1: 0.9}, "inconclusive"),
    ({0: 0.9, 1: math.nan}, {0: 0.95, 1: 0.9}, "holds"),   # a seed with a missing value is left out
])
def test_verdict_over_seeds(gn, adam, expected):
    claim = next(c for c in CLAIMS if c.id == "generalization")
    loss = {s: 1.0 for s in gn}
    values = {"gn": gn, "adam": adam, "gn:loss": {s: 2.0 for s in gn}, "adam:loss": loss}
    assert verdict(claim, values)[0] == expected


def test_verdict_not_measured_without_adam():
    claim = next(c for c in CLAIMS if c.id == "ntk_change")
    assert verdict(claim, {"gn": {0: 0.99}, "sgd": {0: 0.98}}) == ("not measured", {})
