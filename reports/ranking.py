"""The one rule for every sentence that ranks optimisers by a number (report, comparison, findings).

Spread. Each optimiser's value is summarised over its seeds as mean ± sample standard deviation
(ddof = 1; :func:`spread`). Two optimisers a and b are *separated* when both have at least two seeds
and their mean ± sd intervals do not overlap: |m_a − m_b| > sd_a + sd_b (:func:`separated`).

Sentences (:func:`ranking_sentence`). Of the optimisers with a finite value, the one with the
lowest and the one with the highest mean are named, with their mean ± sd, and the sentence says
whether their difference exceeds the seed-to-seed spread (separated) or lies within it (so the
order is not established). When any of the optimisers has a single seed the spread is unknown:
the sentence lists every optimiser's value in run order and says that they are not ranked.

Comparability (:func:`incomparable`). Runs trained on different data or different models are not
ranked at all: their ``data`` and ``model`` config tables (flattened to dotted keys) must agree;
otherwise :func:`refusal_sentence` says which settings differ, and the numbers stay side by side in
the tables only. A run without config counts as "(absent)".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from reports.html import flatten, number

COMPARED_TABLES = ("data", "model")


@dataclass(frozen=True)
class Spread:
    """One optimiser's value over its seeds: ``title`` (prose name), mean, sample sd (NaN for n < 2), n."""

    title: str
    mean: float
    sd: float
    n: int


def spread(title: str, values: Sequence[float]) -> Spread:
    """:class:`Spread` of the finite ``values`` (one per seed); mean NaN when none is finite."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    mean = float(v.mean()) if v.size else math.nan
    sd = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return Spread(title, mean, sd, int(v.size))


def separated(a: Spread, b: Spread) -> bool | None:
    """True when |m_a − m_b| > sd_a + sd_b (the mean ± sd intervals do not overlap), False when they
    overlap, None when either has fewer than two seeds (its spread is unknown)."""
    if a.n < 2 or b.n < 2:
        return None
    return bool(abs(a.mean - b.mean) > a.sd + b.sd)


def spread_clause(a: Spread, b: Spread) -> str:
    """The clause saying whether the difference between ``a`` and ``b`` exceeds the seed-to-seed spread."""
    seeds = f"over {a.n} and {b.n} seeds" if a.n != b.n else f"over {a.n} seeds each"
    if separated(a, b):
        return f"the difference exceeds the seed-to-seed spread (the mean ± sd intervals {seeds} do not overlap)"
    return (f"the difference is within the seed-to-seed spread (the mean ± sd intervals {seeds} overlap), so "
            "this order is not established")


def shown_digits(low: float, high: float, digits: int, most: int = 12) -> int:
    """Decimal places, at least ``digits``, at which ``low`` and ``high`` no longer print the same
    (1.0000 and 0.9999 rather than 1.00 and 1.00), so a stated order is visible in the numbers."""
    places = digits
    while places < most and number(low, digits=places) == number(high, digits=places):
        places += 1
    return places


def ranking_sentence(quantity: str, spreads: Sequence[Spread], *, digits: int = 2, unit: str = "",
                     low: str = "lowest", high: str = "highest") -> str | None:
    """One sentence ranking ``spreads`` by mean, or listing them unranked (see the module docstring).

    ``quantity`` starts the sentence ("Final test accuracy"); values are shown as mean ± sd with
    :func:`reports.html.number` at ``digits`` decimal places, or more where the lowest and highest
    would print alike (:func:`shown_digits`), followed by ``unit``. None when fewer than two
    optimisers have a finite value, or all means are equal.
    """
    finite = [s for s in spreads if np.isfinite(s.mean)]
    if len(finite) < 2:
        return None
    lo, hi = min(finite, key=lambda s: s.mean), max(finite, key=lambda s: s.mean)
    if lo.mean == hi.mean:
        return None
    places = shown_digits(lo.mean, hi.mean, digits)

    def show(s: Spread) -> str:
        return number(s.mean, s.sd, digits=places, unit=unit)

    single = [s.title for s in finite if s.n < 2]
    if single:
        values = ", ".join(f"{s.title} {show(s)}" for s in finite)
        who = "every optimiser" if len(single) == len(finite) else ", ".join(single)
        return (f"{quantity}: {values} ({who} with one seed: the seed-to-seed spread is unknown, so the "
                "optimisers are not ranked).")
    return f"{quantity} is {low} for {lo.title} ({show(lo)}) and {high} for {hi.title} ({show(hi)}); {spread_clause(lo, hi)}."


def incomparable(configs: Mapping[str, Mapping]) -> list[str]:
    """The dotted settings of the ``data``/``model`` tables whose values differ between the runs of
    ``configs`` (label → config dict), as "key (label: value · label: value)"; empty when comparable."""
    flat = {label: {k: v for k, v in flatten(dict(config or {})).items() if k.split(".")[0] in COMPARED_TABLES}
            for label, config in configs.items()}
    keys = sorted({k for f in flat.values() for k in f})
    out = []
    for key in keys:
        values = {label: f.get(key, "(absent)") for label, f in flat.items()}
        if len(set(values.values())) > 1:
            out.append(f"{key} ({' · '.join(f'{label}: {v}' for label, v in values.items())})")
    return out


def refusal_sentence(differences: Sequence[str], shown: int = 3) -> str:
    """The sentence that replaces every ranking when runs differ in data or model."""
    listed = "; ".join(differences[:shown]) + (f"; and {len(differences) - shown} more" if len(differences) > shown
                                                 else "")
    return ("The runs were trained on different data or models, so no sentence here compares them: their "
            f"numbers are shown side by side in the tables only. Differing settings: {listed}.")
