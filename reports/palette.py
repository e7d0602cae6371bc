"""Colour-blind-safe colours, fixed per optimiser name, shared by every figure.

Okabe & Ito (2008), "Color Universal Design": eight colours distinguishable under the common
forms of colour-vision deficiency. The known optimisers always get the same colour, so a reader
can follow e.g. GN across figures; any other name gets a colour chosen by a stable hash of the
name (not Python's salted ``hash``), so it is the same in every process.
"""

from __future__ import annotations

import zlib

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


def optimizer_color(name: str) -> str:
    """Hex colour of an optimiser: fixed for gn/kgn/sgd/adam (case-insensitive), else by CRC32 of the name."""
    if not isinstance(name, str):
        raise TypeError(f"optimizer name must be a str, got {name!r} ({type(name).__name__})")
    key = name.strip().lower()
    if key in KNOWN_OPTIMIZER_COLORS:
        return KNOWN_OPTIMIZER_COLORS[key]
    return _SPARE_COLORS[zlib.crc32(key.encode("utf-8")) % len(_SPARE_COLORS)]


def seed_linestyle(rank: int) -> str:
    """Line style for the ``rank``-th seed (0-based) of one optimiser: solid, dashed, dotted, dash-dot, ..."""
    if not isinstance(rank, int) or rank < 0:
        raise ValueError(f"seed rank must be a non-negative int, got {rank!r}")
    return LINESTYLES[rank % len(LINESTYLES)]
