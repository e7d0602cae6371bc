"""Colour-blind-safe colours per optimiser, assigned by run order, shared by every figure and table.

Okabe & Ito (2008), "Color Universal Design": eight colours distinguishable under the common
forms of colour-vision deficiency. The known optimisers (gn, kgn, sgd, adam) always get the same
colour, so a reader can follow e.g. GN across reports. Every other name gets the next unused colour
in order of first appearance (:func:`assign_colors`), so the optimisers of one report never share a
colour, however many there are: after the spare Okabe–Ito colours, evenly spaced hues at fixed
saturation 0.8 and value 0.7 (visible on white) give each further name its own colour.
"""

from __future__ import annotations

from collections.abc import Iterable

from matplotlib.colors import hsv_to_rgb, to_hex

OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

KNOWN_OPTIMIZER_COLORS: dict[str, str] = {
    "gn": OKABE_ITO["vermillion"],
    "kgn": OKABE_ITO["reddish_purple"],
    "sgd": OKABE_ITO["blue"],
    "adam": OKABE_ITO["bluish_green"],
}

# Colours left for other names; yellow is last because it is faint on white.
_SPARE_COLORS = (
    OKABE_ITO["orange"],
    OKABE_ITO["sky_blue"],
    OKABE_ITO["black"],
    OKABE_ITO["yellow"],
)

LINESTYLES = ("-", "--", ":", "-.")


def _key(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"optimizer name must be a str, got {name!r} ({type(name).__name__})")
    return name.strip().lower()


def assign_colors(names: Iterable[str]) -> dict[str, str]:
    """Hex colour per distinct name of ``names`` (case- and space-insensitive), all distinct.

    gn/kgn/sgd/adam get their fixed colour; the other names, in order of first appearance, get the
    spare Okabe–Ito colours, then ``n`` evenly spaced hues (saturation 0.8, value 0.7) for the ``n``
    names beyond those. The result maps each name as given to its colour.
    """
    names = list(names)
    keys = [_key(n) for n in names]
    others = [k for k in dict.fromkeys(keys) if k not in KNOWN_OPTIMIZER_COLORS]
    spare = list(_SPARE_COLORS[:len(others)])
    extra = len(others) - len(spare)
    if extra > 0:
        spare += [to_hex(hsv_to_rgb(((i + 0.5) / extra, 0.8, 0.7))).upper() for i in range(extra)]
    by_key = {**dict(zip(others, spare)), **KNOWN_OPTIMIZER_COLORS}
    return {name: by_key[key] for name, key in zip(names, keys)}


def optimizer_color(name: str) -> str:
    """Hex colour of one optimiser shown alone: its fixed colour, else the first spare colour.

    Reports showing several optimisers use :func:`assign_colors` so their colours stay distinct."""
    return assign_colors([name])[name]


def seed_linestyle(rank: int) -> str:
    """Line style for the ``rank``-th seed (0-based) of one optimiser: solid, dashed, dotted, dash-dot, ..."""
    if not isinstance(rank, int) or rank < 0:
        raise ValueError(f"seed rank must be a non-negative int, got {rank!r}")
    return LINESTYLES[rank % len(LINESTYLES)]
