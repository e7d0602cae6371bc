"""How a claim's criterion is judged over seeds, and how firm the judgement is.

A criterion is, per seed, a list of inequalities (:class:`Bound`, ``lhs < rhs`` or ``lhs ≤ rhs``); a
seed meets it when every bound holds. The verdict over the seeds every needed optimiser has:
"holds" (every seed meets it), "does not hold" (no seed does), "inconclusive" (the seeds disagree),
"not measured" (an optimiser or quantity it needs is missing).

Margin. A bound's margin is its relative slack, (rhs − lhs) / max(|lhs|, |rhs|): positive when it
holds, negative when it fails, in units of the larger side (0.05 = 5 % of the compared value). A
seed's margin is the smallest margin of its bounds (the binding one: the bound nearest to failing
when all hold, the most-failed one otherwise, since every failed bound must flip for the seed to
meet the criterion).

On a hair (:data:`HAIR`). A "holds" or "does not hold" verdict rests on a hair when some seed's
margin is within ±5 % of its criterion (|margin| < 0.05). Five per cent is the size of the changes
that other CPU kernels made to the default run (docs/results.md: the same command under AVX2 kernels
moved Adam's test accuracy by 3.4 % and GN's training loss ratio by 5 %), so such a verdict may flip
on another machine.

Cannot discriminate. A criterion says nothing about GN when the optimisers it compares are not told
apart by its quantity: (a) their mean values all lie within each other's seed-to-seed spread
(:func:`reports.ranking.separated` is False for every pair; needs ≥ 2 seeds each), or (b) the
quantity is at a bound of its range for every optimiser (``Claim.saturated``, e.g. 1 − cos(θ_T, θ_0)
≈ 1 for all: weights from a tiny initialisation end orthogonal to it whatever the optimiser).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reports.ranking import separated, spread

HAIR = 0.05
HAIR_RULE = (f"a verdict rests on a hair when a seed's margin (the relative slack of its closest bound) is "
             f"within ±{HAIR:.0%} of its criterion, the size of the changes other CPU kernels made to the "
             f"default run's numbers")


@dataclass(frozen=True)
class Bound:
    """One inequality of a criterion for one seed: ``lhs < rhs`` (``strict``) or ``lhs ≤ rhs``."""

    text: str
    lhs: float
    rhs: float
    strict: bool = True

    @property
    def met(self) -> bool:
        return bool(self.lhs < self.rhs) if self.strict else bool(self.lhs <= self.rhs)

    @property
    def margin(self) -> float:
        """(rhs − lhs) / max(|lhs|, |rhs|); 0 when both are 0, NaN when either is not finite."""
        if not (math.isfinite(self.lhs) and math.isfinite(self.rhs)):
            return math.nan
        scale = max(abs(self.lhs), abs(self.rhs))
        return 0.0 if scale == 0 else (self.rhs - self.lhs) / scale


@dataclass(frozen=True)
class SeedJudgement:
    """Whether one seed meets the criterion, its margin and the binding bound."""

    met: bool
    margin: float
    binding: str

    def as_dict(self) -> dict:
        return {"met": self.met, "margin": _finite(self.margin), "binding": self.binding}


def judge_seed(bounds: list[Bound]) -> SeedJudgement:
    """All bounds met → met; margin = the smallest bound margin (see the module docstring)."""
    binding = min(bounds, key=lambda b: b.margin)
    return SeedJudgement(all(b.met for b in bounds), binding.margin, binding.text)


def overall(judgements: dict[str, SeedJudgement]) -> str:
    """"holds" / "does not hold" / "inconclusive" over the seeds' judgements ("not measured" if none)."""
    if not judgements:
        return "not measured"
    met = [j.met for j in judgements.values()]
    return "holds" if all(met) else "does not hold" if not any(met) else "inconclusive"


def on_a_hair(verdict: str, judgements: dict[str, SeedJudgement]) -> list[str]:
    """The seeds whose margin is within ±HAIR of the criterion, for a "holds"/"does not hold" verdict."""
    if verdict not in ("holds", "does not hold"):
        return []
    return [seed for seed, j in judgements.items() if abs(j.margin) < HAIR]


def indistinct(values: dict[str, dict[int, float]], compared: list[str]) -> str | None:
    """Rule (a): why the optimisers ``compared`` are not told apart by their values (optimiser → seed →
    value), or None. Needs two seeds of each; every pair within each other's seed-to-seed spread."""
    spreads = {o: spread(o, list(values.get(o, {}).values())) for o in compared}
    if len(spreads) < 2 or any(s.n < 2 for s in spreads.values()):
        return None
    names = list(spreads)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    if any(separated(spreads[a], spreads[b]) for a, b in pairs):
        return None
    return ("the optimisers' values lie within each other's seed-to-seed spread (mean ± sd intervals overlap), "
            "so the criterion decides on seed noise")


def _finite(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None
