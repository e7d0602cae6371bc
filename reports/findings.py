"""Headline numbers per optimiser and the sentences a report states from them.

Per run (then averaged over the seeds of one optimiser), for each batch b of a step — ``own`` (the
batch the step was computed on), ``next`` (the next training batch) and ``other`` (the fixed held-out
batch), from the per-step relative changes r = 100·(L_after − L_before)/L_before in %:
- ``b_log``: the mean log-ratio 100·mean(log(L_after/L_before)) = 100·mean(log(1 + r/100)), the
  headline average (unbiased under heavy tails, see :mod:`analysis.overfitting`);
- ``b_change``: the arithmetic mean of r (the paper's Fig. 3 quantity); ``b_median``: its median;
- ``transfer`` / ``next_transfer``: Σ log-change(other) / Σ log-change(own), and the same with the
  next batch; ≈1 when a step helps every batch alike, ≈0 when it only fits its own batch;
- final NTK alignment to initialisation A(Θ_T, Θ_0) and final linear CKA to initialisation (mean
  over layers), both at the last checkpoint where they are finite;
- final test / train accuracy in % (fractions are multiplied by 100);
- median and maximum GN residual ρ over steps (NaN for first-order runs).
Every value is NaN when its variable is missing, and sentences needing it are left out. Sentences
that compare optimisers (transfer, NTK alignment, CKA, test accuracy, train–test gap) go through the
one rule of :mod:`reports.ranking`: a rank is stated with the seed-to-seed spread, not at all with
one seed, and never across runs of different data or models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from analysis.overfitting import log_transfer
from reports.html import number
from reports.plotting import accuracy_scale
from reports.ranking import Spread, ranking_sentence, refusal_sentence, spread
from reports.runs import (as_combined, dim_values, final_value, has_values,
                          optimizer_title, run_infos, step_series)

BATCHES = ("own", "next", "other")
HEADLINE_FIELDS = tuple(f"{b}_{k}" for b in BATCHES for k in ("log", "change", "median")) + (
    "transfer", "next_transfer", "ntk_alignment", "cka_init", "test_acc", "train_acc",
    "gn_residual_median", "gn_residual_max")


@dataclass
class Headline:
    """Headline numbers of one optimiser: per field, the values of its runs (one per seed)."""

    optimizer: str
    runs: list[str] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def mean(self, name: str) -> float:
        v = np.asarray(self.values.get(name, []), dtype=float)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else math.nan

    def std(self, name: str) -> float:
        v = np.asarray(self.values.get(name, []), dtype=float)
        v = v[np.isfinite(v)]
        return float(v.std(ddof=1)) if v.size > 1 else math.nan

    @property
    def title(self) -> str:
        return optimizer_title(self.optimizer)


def _run_numbers(ds: xr.Dataset, i: int) -> dict[str, float]:
    nan = math.nan
    out = dict.fromkeys(HEADLINE_FIELDS, nan)
    logs = {}
    for b in BATCHES:
        if has_values(ds, f"{b}_change"):
            relative = _select_steps(ds, f"{b}_change", i)
            logs[b] = log_change_from_relative(relative)
            summary = _summary(relative, logs[b])
            out[f"{b}_log"], out[f"{b}_change"], out[f"{b}_median"] = summary
    if "own" in logs:
        for b, name in (("other", "transfer"), ("next", "next_transfer")):
            if b in logs:
                out[name] = log_transfer(logs["own"], logs[b])
    if has_values(ds, "ntk_alignment_init"):
        out["ntk_alignment"] = final_value(ds, "ntk_alignment_init", i)
    if has_values(ds, "cka_init"):
        finals = [final_value(ds, "cka_init", i, layer=layer) for layer in dim_values(ds, "layer")]
        finals = [v for v in finals if np.isfinite(v)]
        out["cka_init"] = float(np.mean(finals)) if finals else nan
    for name in ("test_acc", "train_acc"):
        if has_values(ds, name):
            out[name] = final_value(ds, name, i) * accuracy_scale(ds[name].values)
    if has_values(ds, "gn_residual"):
        _, rho = step_series(ds, "gn_residual", i)
        if rho.size:
            out["gn_residual_median"], out["gn_residual_max"] = float(np.median(rho)), float(rho.max())
    return out


def _select_steps(ds: xr.Dataset, name: str, i: int) -> np.ndarray:
    """All per-step values of run ``i`` (NaN kept, so the batches of one step stay aligned)."""
    da = ds[name].isel(run=i) if "run" in ds[name].dims else ds[name]
    return np.asarray(da.values, dtype=float)


def log_change_from_relative(relative: np.ndarray) -> np.ndarray:
    """100·log(L_after/L_before) from r = 100·(L_after − L_before)/L_before: 100·log1p(r/100) (NaN where r ≤ −100)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 100.0 * np.log1p(relative / 100.0)
    return np.where(np.isfinite(out), out, np.nan)


def _summary(relative: np.ndarray, logs: np.ndarray) -> tuple[float, float, float]:
    """(mean log-ratio, arithmetic mean, median) over the steps where both are finite, in %."""
    keep = np.isfinite(relative) & np.isfinite(logs)
    if not keep.any():
        return math.nan, math.nan, math.nan
    return float(logs[keep].mean()), float(relative[keep].mean()), float(np.median(relative[keep]))


def headlines(ds: xr.Dataset) -> list[Headline]:
    """One Headline per optimiser, in order of first appearance in the Dataset."""
    ds = as_combined(ds)
    by_optimizer: dict[str, Headline] = {}
    for run in run_infos(ds):
        h = by_optimizer.setdefault(run.optimizer, Headline(run.optimizer))
        h.runs.append(run.label)
        for name, value in _run_numbers(ds, run.index).items():
            h.values.setdefault(name, []).append(value)
    return list(by_optimizer.values())


def _verb(change: float) -> str:
    return "reduce" if change < 0 else "increase"


def _significant(value: float) -> str:
    """``value`` with two significant digits, never in scientific notation (0.0059, 4.5, 19)."""
    return np.format_float_positional(value, precision=2, fractional=False, trim="-")


def _batch_sentence(h: Headline) -> str | None:
    own, other, transfer = h.mean("own_log"), h.mean("other_log"), h.mean("transfer")
    if not (np.isfinite(own) and np.isfinite(other)):
        return None
    small = _verb(own) == _verb(other) and abs(other) < 0.5 * abs(own)
    link = "but" if small or _verb(own) != _verb(other) else "and"
    only = "only " if small else ""
    text = (f"{h.title}'s updates {_verb(own)} the loss of the batch they were computed on by "
            f"{_significant(abs(own))}% per step (mean log-ratio), {link} {_verb(other)} the loss of a held-out "
            f"batch by {only}{_significant(abs(other))}%")
    text += f" (transfer {_significant(transfer)})" if np.isfinite(transfer) else ""
    upcoming, next_transfer = h.mean("next_log"), h.mean("next_transfer")
    if np.isfinite(upcoming):
        text += (f"; the next training batch's loss {'falls' if upcoming < 0 else 'rises'} by {_significant(abs(upcoming))}%"
                 + (f" (transfer {_significant(next_transfer)})" if np.isfinite(next_transfer) else ""))
    return text + "."


def _spreads(hs: list[Headline], name: str) -> list[Spread]:
    return [spread(h.title, h.values.get(name, [])) for h in hs]


def _gap_spreads(hs: list[Headline]) -> list[Spread]:
    """Train − test accuracy in points, per run (then over the seeds of each optimiser)."""
    return [spread(h.title, [a - b for a, b in zip(h.values.get("train_acc", []), h.values.get("test_acc", []))])
            for h in hs]


RANKED = (  # (headline field, sentence start, decimal places, unit, sentence for a single optimiser)
    ("transfer", "Transfer to other batches (1 = a step helps every batch alike, 0 = only its own)", 2, "",
     "{a}'s transfer to other batches is {x} (1 = a step helps every batch alike, 0 = only its own)."),
    ("ntk_alignment", "The final {kind} NTK alignment to initialisation (1 = unchanged; lower = the kernel moved "
                      "more)", 2, "", "Under {a} the NTK's final {kind} alignment to its initial value is {x} "
                                      "(1 = unchanged)."),
    ("cka_init", "The final CKA of the hidden representations to initialisation (mean over layers; 1 = unchanged)",
     2, "", "Under {a} the hidden representations end with CKA {x} to initialisation (mean over layers; "
            "1 = unchanged)."),
    ("test_acc", "Final test accuracy", 1, "%", "{a} ends at {x} test accuracy."),
)


def ranked_sentences(hs: list[Headline], alignment: str = "uncentred") -> list[str]:
    """Every sentence that compares optimisers, through the one rule of :mod:`reports.ranking`
    (a single optimiser gets a plain statement of its value instead); ``alignment`` names the kernel
    alignment ("centred"/"uncentred", :func:`reports.runs.kernel_alignment`)."""
    out = []
    for name, quantity, digits, unit, single_text in RANKED:
        quantity, single_text = quantity.replace("{kind}", alignment), single_text.replace("{kind}", alignment)
        spreads = [s for s in _spreads(hs, name) if np.isfinite(s.mean)]
        if len(spreads) == 1:
            out.append(single_text.format(a=spreads[0].title,
                                          x=number(spreads[0].mean, spreads[0].sd, digits=digits, unit=unit)))
        elif sentence := ranking_sentence(quantity, spreads, digits=digits, unit=unit):
            out.append(sentence)
    gaps = [s for s in _gap_spreads(hs) if np.isfinite(s.mean)]
    if len(gaps) == 1:
        out.append(f"The train–test accuracy gap of {gaps[0].title} is "
                   f"{number(gaps[0].mean, gaps[0].sd, digits=1, unit=' points')}.")
    elif sentence := ranking_sentence("The train–test accuracy gap (train minus test, in points)", gaps, digits=1,
                                      unit=" points", low="smallest", high="largest"):
        out.append(sentence)
    return out


def finding_sentences(hs: list[Headline], differences: list[str] = (), alignment: str = "uncentred") -> list[str]:
    """Plain-text sentences, each computed from the headline numbers (escape before putting in HTML).

    Sentences about one optimiser come first; sentences that compare optimisers follow the rule of
    :mod:`reports.ranking` (seed-to-seed spread). ``differences`` (from
    :func:`reports.ranking.incomparable`) non-empty: the runs differ in data or model, and one
    sentence saying so replaces every comparison.
    """
    out = [s for s in (_batch_sentence(h) for h in hs) if s]
    if differences:
        out.append(refusal_sentence(list(differences)))
    else:
        out += ranked_sentences(hs, alignment)
    for h in hs:
        median, worst = h.mean("gn_residual_median"), h.mean("gn_residual_max")
        if np.isfinite(median):
            out.append(f"{h.title}'s steps move the linearised outputs onto their target up to a relative "
                       f"residual ρ of {median:.1e} (median over steps; worst {worst:.1e}).")
    return out
