"""The paper's six claims (Buffelli et al. 2024; docs/DESIGN.md "Findings"), each measured from an
experiment's combined analysis Dataset the way the paper measured it, across seeds, with a stated
criterion and a verdict.

Per run (one optimiser, one seed) the claim's quantity is computed; ``values`` gives its mean, sample
standard deviation (ddof = 1; None for one seed) and number of seeds per optimiser. The criterion is
checked seed by seed on the seeds every optimiser it needs has: "holds" when it is true for every
such seed, "does not hold" when for none, "inconclusive" when the seeds disagree, "not measured"
when an optimiser or quantity it needs is missing. Claims compare GN (optimiser ``gn``) with Adam
(``adam``) and, where the claim names it, SGD (``sgd``); the SGD part is dropped when no SGD run exists.

| id | quantity per run | criterion per seed |
|---|---|---|
| ``train_saturation`` | L_train(T) / L_train,Adam(T); detail: the same at the checkpoint nearest 10 % of the steps | GN's ratio rises from 10 % to the end and ends > 1 |
| ``generalization`` | final test accuracy (%); detail: final test loss | GN's test accuracy < Adam's and test loss > Adam's |
| ``own_batch_decrease`` | mean over steps of 100·(L_after − L_before)/L_before on the own batch (Fig. 3) | GN's < SGD's and < Adam's |
| ``ntk_change`` | final NTK alignment to initialisation A(Θ_T, Θ_0) | 1 − A(GN) < ½ (1 − A(Adam)) (and SGD's likewise) |
| ``representation_change`` | final linear CKA to initialisation, mean over layers | 1 − CKA(GN) < ½ (1 − CKA(Adam)) (and SGD's likewise) |
| ``weight_change`` | 1 − cos(θ_T, θ_0), mean over parameter tensors (Fig. 9) | ½ ≤ GN / Adam ≤ 2, and SGD's < both |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from reports.plotting import accuracy_scale
from reports.runs import as_combined, checkpoint_series, dim_values, final_value, has_values, optimizer_title, \
    run_infos, step_series
from reports.training import training_state
from reports.verdicts import HAIR_RULE, Bound, SeedJudgement, indistinct, judge_seed, on_a_hair, overall

CLAIM_IDS = ("train_saturation", "generalization", "own_batch_decrease", "ntk_change", "representation_change",
             "weight_change")
VERDICTS = ("holds", "does not hold", "inconclusive", "not measured")
EARLY_FRACTION = 0.1

PerSeed = dict[str, dict[int, float]]   # optimiser -> seed -> value


@dataclass(frozen=True)
class Claim:
    """One claim: its text, the criterion in words, the per-run quantity and the per-seed bounds."""

    id: str
    statement: str
    criterion: str
    unit: str
    quantity: Callable[[xr.Dataset, int], float]
    bounds: Callable[[PerSeed, int], list[Bound]]   # (values, seed) -> the inequalities the seed must meet
    needs: tuple[str, ...] = ("gn", "adam")
    optional: tuple[str, ...] = ()       # used when present (SGD)
    details: tuple[tuple[str, Callable[[xr.Dataset, int], float]], ...] = ()
    saturated: Callable[[dict[str, float]], str | None] = lambda means: None   # rule (b) of reports.verdicts


def _nan_safe(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _early_checkpoint_value(ds: xr.Dataset, name: str, run: int) -> float:
    """``name`` at the checkpoint whose step is nearest EARLY_FRACTION of the run's last checkpoint step."""
    steps, values = checkpoint_series(ds, name, run)
    if not steps.size:
        return math.nan
    return float(values[np.argmin(np.abs(steps - EARLY_FRACTION * steps.max()))])


def _early_step(ds: xr.Dataset, run: int) -> float:
    steps, _ = checkpoint_series(ds, "train_loss", run)
    return float(steps[np.argmin(np.abs(steps - EARLY_FRACTION * steps.max()))]) if steps.size else math.nan


def _final_mean_over(ds: xr.Dataset, name: str, dim: str, run: int, transform=lambda v: v) -> float:
    if not has_values(ds, name):
        return math.nan
    finals = [transform(final_value(ds, name, run, **{dim: label})) for label in dim_values(ds, dim)]
    finals = [v for v in finals if np.isfinite(v)]
    return float(np.mean(finals)) if finals else math.nan


def _own_change(ds: xr.Dataset, run: int, part: str = "all") -> float:
    if not has_values(ds, "own_change"):
        return math.nan
    steps, values = step_series(ds, "own_change", run)
    if not steps.size:
        return math.nan
    if part == "early":
        values = values[steps <= EARLY_FRACTION * steps.max()]
    elif part == "late":
        values = values[steps > 0.5 * steps.max()]
    return float(values.mean()) if values.size else math.nan


def _ratio_to_adam(ds: xr.Dataset, run: int, adam_runs: dict[int, int], early: bool) -> float:
    seed = run_infos(ds)[run].seed
    if seed not in adam_runs or not has_values(ds, "train_loss"):
        return math.nan
    pick = _early_checkpoint_value if early else (lambda d, n, r: final_value(d, n, r))
    return pick(ds, "train_loss", run) / pick(ds, "train_loss", adam_runs[seed])


def _get(v: PerSeed, optimizer: str, seed: int) -> float:
    return v.get(optimizer, {}).get(seed, math.nan)


def _lazier(v: PerSeed, seed: int) -> list[Bound]:
    """1 − x(GN) < ½ (1 − x(Adam)), and the same for SGD when it was run."""
    half = 0.5 * (1 - _get(v, "adam", seed))
    out = [Bound("1 − x(GN) < ½ (1 − x(Adam))", 1 - _get(v, "gn", seed), half)]
    if "sgd" in v:
        out.append(Bound("1 − x(SGD) < ½ (1 − x(Adam))", 1 - _get(v, "sgd", seed), half))
    return out


def _saturates(v: PerSeed, seed: int) -> list[Bound]:
    end, early = _get(v, "gn", seed), _get(v, "gn:early", seed)
    return [Bound("GN's ratio at 10 % < its ratio at the end", early, end),
            Bound("GN's ratio at the end > 1", 1.0, end)]


def _generalises_worse(v: PerSeed, seed: int) -> list[Bound]:
    return [Bound("GN's test accuracy < Adam's", _get(v, "gn", seed), _get(v, "adam", seed)),
            Bound("GN's test loss > Adam's", _get(v, "adam:loss", seed), _get(v, "gn:loss", seed))]


def _own_decrease(v: PerSeed, seed: int) -> list[Bound]:
    gn = _get(v, "gn", seed)
    out = [Bound("GN's own-batch change < Adam's", gn, _get(v, "adam", seed))]
    if "sgd" in v:
        out.append(Bound("GN's own-batch change < SGD's", gn, _get(v, "sgd", seed)))
    return out


def _weights_comparable(v: PerSeed, seed: int) -> list[Bound]:
    gn, adam = _get(v, "gn", seed), _get(v, "adam", seed)
    ratio = gn / adam if adam > 0 else math.nan
    out = [Bound("GN / Adam ≥ ½", 0.5, ratio, strict=False), Bound("GN / Adam ≤ 2", ratio, 2.0, strict=False)]
    if "sgd" in v:
        sgd = _get(v, "sgd", seed)
        out += [Bound("SGD's < GN's", sgd, gn), Bound("SGD's < Adam's", sgd, adam)]
    return out


def _orthogonal(means: dict[str, float]) -> str | None:
    """1 − cos(θ_T, θ_0) ≥ 0.9 for every optimiser: all end nearly orthogonal to their initialisation."""
    if means and all(m >= 0.9 for m in means.values()):
        return (f"1 − cos(θ_T, θ_0) is at least 0.9 for every optimiser ({_listing(means)}): the weights of all of "
                "them end nearly orthogonal to their initialisation, as any run from a small initialisation does, "
                "so the ratio cannot tell them apart")
    return None


def _unchanged(means: dict[str, float]) -> str | None:
    """The quantity (an alignment or CKA to initialisation) ≥ 0.99 for every optimiser: nothing moved."""
    if means and all(m >= 0.99 for m in means.values()):
        return (f"the quantity stays above 0.99 for every optimiser ({_listing(means)}): none of them moved it, so "
                "the criterion compares round-off-sized changes")
    return None


def _listing(means: dict[str, float]) -> str:
    return ", ".join(f"{optimizer_title(o)} {m:.3g}" for o, m in means.items())


CLAIMS: tuple[Claim, ...] = (
    Claim("train_saturation",
          "Training saturates: with mini-batches GN makes good early progress on the training loss, then "
          "stalls; Adam reaches a lower training loss.",
          "Per seed, GN's full-training-set loss relative to Adam's (same seed) is lower at the checkpoint "
          "nearest 10 % of the steps than at the end, and above 1 at the end.",
          "× Adam's training loss at the end", lambda ds, i: math.nan, _saturates),
    Claim("generalization", "Poor generalisation: GN's test loss and accuracy are worse than Adam's.",
          "Per seed, GN's final test accuracy is lower than Adam's and its final test loss higher.",
          "% final test accuracy", lambda ds, i: final_value(ds, "test_acc", i) * accuracy_scale(ds["test_acc"].values)
          if has_values(ds, "test_acc") else math.nan, _generalises_worse,
          details=(("loss", lambda ds, i: final_value(ds, "test_loss", i) if has_values(ds, "test_loss")
                    else math.nan),)),
    Claim("own_batch_decrease",
          "Per-mini-batch overfitting: a GN update lowers the loss of its own mini-batch much more than an SGD "
          "or Adam update does.",
          "Per seed, GN's mean over steps of 100·(L_after − L_before)/L_before on the batch the step was "
          "computed from is lower (a larger decrease) than SGD's and Adam's.",
          "% own-batch loss change per step (arithmetic mean, as in the paper's Fig. 3)",
          _own_change, _own_decrease, optional=("sgd",),
          details=(("early", lambda ds, i: _own_change(ds, i, "early")),
                   ("late", lambda ds, i: _own_change(ds, i, "late")))),
    Claim("ntk_change", "Lazy NTK: the NTK barely changes under GN (and SGD); it changes significantly under Adam.",
          "Per seed, GN's (and SGD's) distance 1 − A(Θ_T, Θ_0) of the final probe-set NTK from the initial "
          "one is less than half of Adam's.",
          "final NTK alignment to initialisation (1 = unchanged)",
          lambda ds, i: final_value(ds, "ntk_alignment_init", i) if has_values(ds, "ntk_alignment_init")
          else math.nan, _lazier, optional=("sgd",), saturated=_unchanged),
    Claim("representation_change",
          "Representations barely change: CKA to initialisation stays high for GN (and SGD), falls for Adam.",
          "Per seed, GN's (and SGD's) 1 − CKA between the final and initial representations (mean over layers) "
          "is less than half of Adam's.",
          "final linear CKA to initialisation, mean over layers (1 = unchanged)",
          lambda ds, i: _final_mean_over(ds, "cka_init", "layer", i), _lazier, optional=("sgd",),
          saturated=_unchanged),
    Claim("weight_change",
          "Not explained by small weights: GN and Adam move the weights by comparable amounts, SGD less.",
          "Per seed, GN's 1 − cos(θ_T, θ_0) (mean over parameter tensors) is within a factor 2 of Adam's, and "
          "SGD's is smaller than both.",
          "1 − cos(θ_T, θ_0), mean over parameter tensors",
          lambda ds, i: _final_mean_over(ds, "weight_cosine_init", "param", i, lambda c: 1 - c), _weights_comparable,
          optional=("sgd",), saturated=_orthogonal),
)


def per_seed_values(ds: xr.Dataset, claim: Claim) -> PerSeed:
    """optimiser → seed → the claim's quantity (and "optimiser:detail" → seed → detail value)."""
    ds = as_combined(ds)
    runs = run_infos(ds)
    out: PerSeed = {}
    if claim.id == "train_saturation":
        adam = {r.seed: r.index for r in runs if r.optimizer == "adam"}
        for r in runs:
            out.setdefault(r.optimizer, {})[r.seed] = _ratio_to_adam(ds, r.index, adam, early=False)
            out.setdefault(f"{r.optimizer}:early", {})[r.seed] = _ratio_to_adam(ds, r.index, adam, early=True)
            out.setdefault(f"{r.optimizer}:early_step", {})[r.seed] = _early_step(ds, r.index)
        return out
    for r in runs:
        out.setdefault(r.optimizer, {})[r.seed] = claim.quantity(ds, r.index)
        for name, fn in claim.details:
            out.setdefault(f"{r.optimizer}:{name}", {})[r.seed] = fn(ds, r.index)
    return out


def summary(values: dict[int, float]) -> dict:
    """{"mean", "sd", "n_seeds"} over the finite values (None for what is undefined)."""
    v = np.asarray([x for x in values.values() if np.isfinite(x)], dtype=float)
    return {"mean": _nan_safe(v.mean()) if v.size else None,
            "sd": _nan_safe(v.std(ddof=1)) if v.size > 1 else None, "n_seeds": int(v.size)}


def judgements(claim: Claim, values: PerSeed) -> dict[str, SeedJudgement] | None:
    """seed → :class:`~reports.verdicts.SeedJudgement` over the seeds where every needed quantity is
    finite; None when an optimiser the claim needs was not run."""
    if any(o not in values for o in claim.needs):
        return None
    used = (*claim.needs, *(o for o in claim.optional if o in values))
    keys = [k for k in values if k.split(":")[0] in used and not k.endswith("early_step")]
    seeds = set.intersection(*(set(values[k]) for k in keys)) if keys else set()
    seeds = sorted(s for s in seeds if all(np.isfinite(values[k][s]) for k in keys))
    return {str(s): judge_seed(claim.bounds(values, s)) for s in seeds}


def verdict(claim: Claim, values: PerSeed) -> tuple[str, dict[str, bool]]:
    """(verdict, {seed: criterion met}) over the seeds where every needed quantity is finite."""
    judged = judgements(claim, values) or {}
    result = overall(judged)
    return result, ({} if result == "not measured" else {s: j.met for s, j in judged.items()})


def _compared(claim: Claim, values: PerSeed) -> list[str]:
    return [o for o in (*claim.needs, *claim.optional) if o in values]


def footing(claim: Claim, values: PerSeed, result: str, judged: dict[str, SeedJudgement]) -> dict:
    """How firm the verdict is: per-seed margins, the seeds on a hair and why the criterion cannot
    discriminate (None when it can); see :mod:`reports.verdicts`."""
    compared = _compared(claim, values)
    means = {o: m for o in compared if (m := summary(values[o])["mean"]) is not None}
    why = claim.saturated(means) if len(means) == len(compared) else None
    why = why or indistinct(values, compared)
    return {"margins": {s: j.as_dict() for s, j in judged.items()}, "on_a_hair": on_a_hair(result, judged),
            "discriminates": why is None, "why_not": why}


def findings(ds: xr.Dataset) -> dict:
    """The six claims as the JSON-ready dict written to ``findings.json`` (see the module docstring),
    with how trained the models were (:func:`reports.training.training_state`) and the rules."""
    out = {}
    for claim in CLAIMS:
        values = per_seed_values(ds, claim)
        judged = judgements(claim, values) or {}
        result = overall(judged)
        out[claim.id] = {
            "statement": claim.statement, "criterion": claim.criterion, "verdict": result, "unit": claim.unit,
            "values": {k: summary(v) for k, v in values.items() if ":" not in k},
            "details": {k: summary(v) for k, v in values.items() if ":" in k},
            "per_seed": {s: j.met for s, j in judged.items()},
            **footing(claim, values, result, judged),
        }
    return {"claims": out, "training": training_state(ds),
            "rules": {"margin": "relative slack (rhs − lhs) / max(|lhs|, |rhs|) of the seed's closest bound; "
                                "positive when the criterion is met", "on_a_hair": HAIR_RULE,
                      "discriminates": "false when the compared optimisers' values lie within each other's "
                                       "seed-to-seed spread, or the quantity is at a bound of its range for all"}}
