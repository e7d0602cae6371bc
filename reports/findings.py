"""Headline numbers per optimiser and the sentences a report states from them.

Per run (then averaged over the seeds of one optimiser):
- own / other change: mean over steps of 100·(L_after − L_before)/L_before on the batch the step was
  computed on / on a fixed other batch (``own_change``, ``other_change``), in %;
- transfer: mean other change / mean own change (a ratio of means, robust to single steps with
  own change near 0); ≈1 when a step helps every batch alike, ≈0 when it only fits its own batch;
- final NTK alignment to initialisation A(Θ_T, Θ_0) and final linear CKA to initialisation (mean
  over layers), both at the last checkpoint where they are finite;
- final test / train accuracy in % (fractions are multiplied by 100);
- median and maximum GN residual ρ over steps (NaN for first-order runs).
Every value is NaN when its variable is missing, and sentences needing it are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from reports.plotting import accuracy_scale
from reports.runs import (as_combined, dim_values, final_value, has_values,
                          optimizer_title, run_infos, step_mean, step_series)

HEADLINE_FIELDS = ("own_change", "other_change", "transfer", "ntk_alignment", "cka_init",
                   "test_acc", "train_acc", "gn_residual_median", "gn_residual_max")


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
    if has_values(ds, "own_change") and has_values(ds, "other_change"):
        out["own_change"] = step_mean(ds, "own_change", i)
        out["other_change"] = step_mean(ds, "other_change", i)
        if np.isfinite(out["own_change"]) and out["own_change"] != 0:
            out["transfer"] = out["other_change"] / out["own_change"]
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


def _finite(hs: list[Headline], name: str) -> list[tuple[Headline, float]]:
    means = [(h, h.mean(name)) for h in hs]
    return [(h, v) for h, v in means if np.isfinite(v)]


def _verb(change: float) -> str:
    return "reduce" if change < 0 else "increase"


def _significant(value: float) -> str:
    """``value`` with two significant digits, never in scientific notation (0.0059, 4.5, 19)."""
    return np.format_float_positional(value, precision=2, fractional=False, trim="-")


def _batch_sentence(h: Headline) -> str | None:
    own, other, transfer = h.mean("own_change"), h.mean("other_change"), h.mean("transfer")
    if not (np.isfinite(own) and np.isfinite(other)):
        return None
    small = _verb(own) == _verb(other) and abs(other) < 0.5 * abs(own)
    link = "but" if small or _verb(own) != _verb(other) else "and"
    only = "only " if small else ""
    text = (f"{h.title}'s updates {_verb(own)} the loss of the batch they were computed on by "
            f"{_significant(abs(own))}% on average, {link} {_verb(other)} the loss of another batch by {only}"
            f"{_significant(abs(other))}%")
    return text + (f" (transfer {_significant(transfer)})." if np.isfinite(transfer) else ".")


def _extremes_sentence(hs, name, low_text, high_text, single_text) -> str | None:
    vals = _finite(hs, name)
    if not vals:
        return None
    if len(vals) == 1:
        h, v = vals[0]
        return single_text.format(a=h.title, x=v)
    (lo, lo_v), (hi, hi_v) = min(vals, key=lambda t: t[1]), max(vals, key=lambda t: t[1])
    if lo_v == hi_v:
        return None
    return f"{low_text.format(a=lo.title, x=lo_v)} and {high_text.format(a=hi.title, x=hi_v)}."


def finding_sentences(hs: list[Headline]) -> list[str]:
    """Plain-text sentences, each computed from the headline numbers (escape before putting in HTML)."""
    out = [s for s in (_batch_sentence(h) for h in hs) if s]
    optional = [
        _extremes_sentence(hs, "transfer", "Transfer to other batches (1 = a step helps every batch alike, "
                           "0 = only its own) is lowest for {a} ({x:.2f})", "highest for {a} ({x:.2f})",
                           "{a}'s transfer to other batches is {x:.2f} (1 = a step helps every batch alike, "
                           "0 = only its own)."),
        _extremes_sentence(hs, "ntk_alignment", "The NTK moves most under {a} (final alignment to "
                           "initialisation {x:.2f}; 1 = unchanged)", "least under {a} ({x:.2f})",
                           "Under {a} the NTK's final alignment to its initial value is {x:.2f} (1 = unchanged)."),
        _extremes_sentence(hs, "cka_init", "Hidden representations move furthest from initialisation under "
                           "{a} (final CKA to initialisation, mean over layers, {x:.2f})",
                           "stay closest under {a} ({x:.2f})",
                           "Under {a} the hidden representations end with CKA {x:.2f} to initialisation "
                           "(mean over layers; 1 = unchanged)."),
        _extremes_sentence(hs, "test_acc", "Final test accuracy is lowest for {a} ({x:.1f}%)",
                           "highest for {a} ({x:.1f}%)", "{a} ends at {x:.1f}% test accuracy."),
    ]
    out += [s for s in optional if s]
    gaps = [(h, h.mean("train_acc") - h.mean("test_acc")) for h in hs]
    gaps = [(h, g) for h, g in gaps if np.isfinite(g)]
    if gaps:
        h, g = max(gaps, key=lambda t: t[1])
        out.append(f"{'The largest train–test gap is' if len(gaps) > 1 else 'The train–test gap is'} "
                   f"{h.title}'s: {h.mean('train_acc'):.1f}% train vs {h.mean('test_acc'):.1f}% test "
                   f"accuracy ({g:.1f} points).")
    for h, median in _finite(hs, "gn_residual_median"):
        out.append(f"{h.title}'s steps move the linearised outputs onto their target up to a relative "
                   f"residual ρ of {median:.1e} (median over steps; worst {h.mean('gn_residual_max'):.1e}).")
    return out

