"""The lazy-regime diagnostics in the report and in ``findings.json`` (docs/guide/lazy-regime.md).

Measured per run at its last checkpoint where the quantity is finite (details: at the first), then
mean ± sample sd over the seeds of each optimiser (:func:`reports.claims.summary`):

| id | quantity per run |
|---|---|
| ``linearized_distance`` | ‖f_T − f_lin,T‖ / ‖f_T − f_0‖ on the test set (detail ``probe``: probe set) |
| ``linearized_test_acc`` | test accuracy of the linearised twin (%); detail ``gap``: network − twin (points) |
| ``ntk_top_eigenvalue`` | λ₁ of the probe-set NTK (detail ``init``) |
| ``ntk_condition_number`` | λ₁/λ_N of the probe-set NTK (finite values only; detail ``init``) |
| ``ntk_label_alignment`` | Σ_{i≤k} Σ_c (u_iᵀy_c)²/‖Y‖²_F, k = min(10, N) (detail ``init``) |
| ``sharpness`` / ``ggn_sharpness`` | λ_max of the probe-set loss Hessian / GGN (detail ``init``) |
| ``sharpness_ratio`` | sharpness / stability threshold (SGD: λ_max(H)/(2(1+μ)/η); Adam: preconditioned/(38/η)) |

The explanation the paper gives for GN's poor generalisation is tested as ``prediction``: "GN trains
in the lazy regime", criterion per seed: GN's final test-set distance to its linearised twin is less
than half of Adam's (the factor ½ of the ``ntk_change`` and ``representation_change`` claims), with the
verdict rule of :mod:`reports.claims` (all seeds → "holds", none → "does not hold", mixed →
"inconclusive", missing → "not measured").
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from reports import html as h
from reports.claims import Claim, per_seed_values, summary, verdict
from reports.figures.lazy import TOP_K, label_mode, sharpness_ratio
from reports.plotting import accuracy_scale
from reports.ranking import ranking_sentence, refusal_sentence, spread
from reports.runs import as_combined, checkpoint_series, has_values, optimizer_title, run_infos


def _at(ds: xr.Dataset, name: str, run: int, first: bool = False, **sel) -> float:
    if not has_values(ds, name):
        return math.nan
    _, y = checkpoint_series(ds, name, run, **sel)
    return float(y[0] if first else y[-1]) if y.size else math.nan


def _accuracy(ds: xr.Dataset, name: str, run: int) -> float:
    return _at(ds, name, run) * accuracy_scale(ds[name].values) if has_values(ds, name) else math.nan


def _mode(ds: xr.Dataset) -> int | None:
    try:
        return label_mode(ds)
    except ValueError:
        return None


def _label_alignment(ds: xr.Dataset, run: int, first: bool = False) -> float:
    k = _mode(ds)
    return math.nan if k is None else _at(ds, "ntk_label_alignment", run, first, ntk_mode=k)


def _ratio(ds: xr.Dataset, run: int) -> float:
    _, ratio = sharpness_ratio(ds, run)
    return float(ratio[-1]) if ratio.size else math.nan


def _measured(id_: str, statement: str, unit: str, quantity, details=()) -> Claim:
    return Claim(id_, statement, "", unit, quantity, lambda v, s: None, needs=(), details=details)


MEASURED: tuple[Claim, ...] = (
    _measured("linearized_distance", "Distance of the network from its linearised twin f_lin(x; θ) = f(x; θ_0) + "
              "J(x; θ_0)(θ − θ_0), trained on the same batches by the same optimiser, at the end: "
              "‖f_T − f_lin,T‖ / ‖f_T − f_0‖ on the test set (0 = the lazy regime).", "1",
              lambda ds, i: _at(ds, "linearized_distance_test", i),
              (("probe", lambda ds, i: _at(ds, "linearized_distance_probe", i)),)),
    _measured("linearized_test_acc", "Test accuracy of the linearised twin at the end.", "%",
              lambda ds, i: _accuracy(ds, "linearized_test_acc", i),
              (("gap", lambda ds, i: _accuracy(ds, "test_acc", i) - _accuracy(ds, "linearized_test_acc", i)),)),
    _measured("ntk_top_eigenvalue", "Largest eigenvalue λ₁ of the probe-set NTK at the end (detail: at "
              "initialisation).", "1", lambda ds, i: _at(ds, "ntk_eigenvalues", i, ntk_mode=1),
              (("init", lambda ds, i: _at(ds, "ntk_eigenvalues", i, True, ntk_mode=1)),)),
    _measured("ntk_condition_number", "Condition number λ₁/λ_N of the probe-set NTK at the end (numerically "
              "singular kernels left out).", "1", lambda ds, i: _at(ds, "ntk_condition_number", i),
              (("init", lambda ds, i: _at(ds, "ntk_condition_number", i, True)),)),
    _measured("ntk_label_alignment", f"Share of the one-hot probe labels' energy in the top {TOP_K} "
              "eigen-directions of the probe-set NTK at the end, Σ_{i≤k} Σ_c (u_iᵀy_c)² / ‖Y‖²_F (detail: at "
              "initialisation).", "1", _label_alignment, (("init", lambda ds, i: _label_alignment(ds, i, True)),)),
    _measured("sharpness", "Largest eigenvalue of the probe-set loss Hessian at the end (detail: at "
              "initialisation).", "1", lambda ds, i: _at(ds, "sharpness", i),
              (("init", lambda ds, i: _at(ds, "sharpness", i, True)),)),
    _measured("ggn_sharpness", "Largest eigenvalue of the probe-set generalised Gauss–Newton matrix at the end.",
              "1", lambda ds, i: _at(ds, "ggn_sharpness", i),
              (("init", lambda ds, i: _at(ds, "ggn_sharpness", i, True)),)),
    _measured("sharpness_ratio", "Sharpness over the optimiser's stability threshold at the end (1 = the edge of "
              "stability): λ_max(H) / (2(1 + μ)/η) for SGD, Adam's preconditioned sharpness / "
              "((2 + 2β₁)/((1 − β₁)η)).", "1", _ratio),
)

PREDICTION = Claim(
    "lazy_gn", "The paper's explanation: GN trains in the lazy regime — the network stays close to its linearised "
               "twin under GN, and leaves it under Adam.",
    "Per seed, GN's final distance ‖f_T − f_lin,T‖ / ‖f_T − f_0‖ on the test set is less than half of Adam's.",
    "distance to the linearised twin on the test set (0 = lazy)",
    lambda ds, i: _at(ds, "linearized_distance_test", i),
    lambda v, seed: v["gn"][seed] < 0.5 * v["adam"][seed])


def lazy_findings(ds: xr.Dataset) -> dict:
    """``findings.json``'s ``lazy_regime`` entry: ``prediction`` (statement, criterion, verdict, unit,
    values, per_seed) and ``measured`` (id → statement, unit, values, details, per_seed values)."""
    ds = as_combined(ds)
    values = per_seed_values(ds, PREDICTION)
    result, met = verdict(PREDICTION, values)
    prediction = {"statement": PREDICTION.statement, "criterion": PREDICTION.criterion, "verdict": result,
                  "unit": PREDICTION.unit, "values": {k: summary(v) for k, v in values.items()}, "per_seed": met}
    measured = {}
    for quantity in MEASURED:
        values = per_seed_values(ds, quantity)
        if not any(np.isfinite(x) for v in values.values() for x in v.values()):
            continue
        measured[quantity.id] = {
            "statement": quantity.statement, "unit": quantity.unit,
            "values": {k: summary(v) for k, v in values.items() if ":" not in k},
            "details": {k: summary(v) for k, v in values.items() if ":" in k},
            "per_seed": {k: {str(s): (float(x) if np.isfinite(x) else None) for s, x in v.items()}
                         for k, v in values.items() if ":" not in k}}
    return {"prediction": prediction, "measured": measured}


def _spreads(document: dict, id_: str) -> list:
    """One :class:`reports.ranking.Spread` per optimiser of a measured quantity (its per-seed values)."""
    entry = document["measured"].get(id_)
    if entry is None:
        return []
    out = [spread(optimizer_title(optimizer), [v for v in values.values() if v is not None])
           for optimizer, values in entry["per_seed"].items()]
    return [s for s in out if np.isfinite(s.mean)]


def lazy_sentences(document: dict, differences=(), alignment: str = "uncentred") -> list[str]:
    """One sentence per diagnostic (twin, NTK spectrum, sharpness) from ``lazy_findings``, ranking the
    optimisers by :func:`reports.ranking.ranking_sentence` (seed-to-seed spread stated), or the refusal
    sentence when the runs differ in data or model."""
    measured = document["measured"]
    if not measured:
        return []
    if differences:
        return [refusal_sentence(list(differences))]
    out = []
    specs = (("linearized_distance", "The distance of the network from its linearised twin at the end (test set; "
                                     "0 = lazy)", 2, ""),
             ("ntk_label_alignment", f"The share of the label energy in the top {TOP_K} eigen-directions of the final "
                                     f"{alignment} NTK", 2, ""),
             ("sharpness_ratio", "The final sharpness over the optimiser's stability threshold (1 = the edge of "
                                 "stability)", 2, ""),
             ("sharpness", "The final sharpness (largest eigenvalue of the probe-set loss Hessian)", 3, ""))
    for id_, quantity, digits, unit in specs:
        if id_ == "sharpness" and "sharpness_ratio" in measured:
            continue
        spreads = _spreads(document, id_)
        if len(spreads) == 1:
            s = spreads[0]
            out.append(f"{quantity}: {s.title} {h.number(s.mean, s.sd, digits=digits, unit=unit)}.")
        elif sentence := ranking_sentence(quantity, spreads, digits=digits, unit=unit):
            out.append(sentence)
    prediction = document["prediction"]
    if prediction["verdict"] != "not measured":
        seeds = len(prediction["per_seed"])
        out.append(f"The lazy-regime prediction (GN's distance to its twin below half of Adam's, seed by seed) "
                   f"{prediction['verdict']} on {seeds} seed{'s' if seeds != 1 else ''}.")
    return out


HEADER = ["optimiser", "distance to twin (test)", "twin test accuracy", "network − twin accuracy",
          f"NTK label share, top {TOP_K}", "NTK λ₁ / λ_N", "sharpness", "sharpness / threshold"]


def lazy_html(ds: xr.Dataset, document: dict, differences=(), alignment: str = "uncentred") -> str:
    """The report's "Lazy regime" section: a table (mean ± sd over seeds per optimiser) and the sentences;
    empty when no lazy-regime quantity was recorded."""
    measured = document["measured"]
    if not measured:
        return ""
    optimizers = list(dict.fromkeys(r.optimizer for r in run_infos(as_combined(ds))))
    cells = (("linearized_distance", None, 3, ""), ("linearized_test_acc", None, 1, "%"),
             ("linearized_test_acc", "gap", 1, ""), ("ntk_label_alignment", None, 2, ""),
             ("ntk_condition_number", None, 0, ""), ("sharpness", None, 3, ""), ("sharpness_ratio", None, 2, ""))
    rows = []
    for optimizer in optimizers:
        row = [optimizer_title(optimizer)]
        for id_, detail, digits, unit in cells:
            entry = measured.get(id_, {})
            value = (entry.get("values", {}) if detail is None else
                     {k.split(":")[0]: v for k, v in entry.get("details", {}).items() if k.endswith(f":{detail}")}
                     ).get(optimizer)
            mean = math.nan if value is None or value["mean"] is None else value["mean"]
            sd = math.nan if value is None or value["sd"] is None else value["sd"]
            if abs(sd) <= 1e-9 * abs(mean):   # equal over seeds up to round-off
                sd = 0.0
            if id_ == "ntk_condition_number" and math.isfinite(mean):   # spans decades: scientific notation
                row.append(f"{mean:.2g}" + (f" ± {sd:.1g}" if math.isfinite(sd) else ""))
            else:
                row.append(h.number(mean, sd, digits=digits, unit=unit))
        rows.append(row)
    sentences = "".join(f"<li>{h.escape(s)}</li>" for s in lazy_sentences(document, differences, alignment))
    note = ("Values at the last checkpoint, mean ± sd over seeds. The linearised twin is the first-order Taylor model "
            "of the network at initialisation, trained beside it on the same batches by the same optimiser "
            "(train.linearized); the NTK spectrum comes from the stored probe-set NTK; sharpness is the largest "
            "eigenvalue of the probe-set loss Hessian (train.sharpness), its threshold 2/η for SGD and 38/η for "
            "Adam's preconditioned sharpness. Definitions: docs/guide/lazy-regime.md; the numbers are in "
            "findings.json under lazy_regime.")
    return (h.table(HEADER, rows, numeric=set(range(1, len(HEADER))), swatch=0, colors=h.optimizer_colors(optimizers))
            + f'<p class="note">{h.escape(note)}</p>' + (f'<ul class="findings">{sentences}</ul>' if sentences else ""))
