"""What an analysis was computed from (the *source token* of a run store) and whether a stored
analysis still matches its store: re-exported from :mod:`dynamics.store.freshness`, where the store's
own reader (:func:`dynamics.open_run`) checks it too."""

from dynamics.store.freshness import (DATA_GROUPS, EDGE_BYTES, SOURCE_ATTR, WHOLE_FILE_BYTES, recorded_source,
                                      source_token)

__all__ = ["DATA_GROUPS", "EDGE_BYTES", "SOURCE_ATTR", "WHOLE_FILE_BYTES", "recorded_source", "source_token",
           "staleness"]

# Analysis options that change an analysis' values are part of the token it records (issue 15 s2):
# with centred kernel alignment, "kernel_alignment": "centred"; the default (uncentred) adds nothing,
# so analyses written before the option existed stay valid. A centred analysis is never served for an
# uncentred request, nor the reverse.
from typing import Any  # noqa: E402

from dynamics.store.freshness import staleness as _store_staleness  # noqa: E402

ALIGNMENT_KEY = "kernel_alignment"
DEFINITIONS_KEY = "definitions"
#: Version of what an analysis computes, recorded in its token: an analysis of an older version is
#: recomputed like a stale one. 2 (issue 21): target alignment and probes by the run's task
#: (dynamics.task), non-finite inputs give NaN instead of aborting, scale-free feature statistics;
#: analyses without the key are version 1.
DEFINITIONS = 2


def alignment_kind(centered: bool) -> str:
    """"centred" or "uncentred": the name of the kernel alignment an analysis holds."""
    if not isinstance(centered, bool):
        raise TypeError(f"centered_alignment must be a bool, got {centered!r}")
    return "centred" if centered else "uncentred"


def analysis_token(store_token: dict[str, Any], *, centered_alignment: bool = False) -> dict[str, Any]:
    """The token an analysis records and a request asks for: ``store_token`` plus the version of the
    analysis' definitions (:data:`DEFINITIONS`) and the analysis options that change values, where
    they differ from the default (``kernel_alignment: "centred"``)."""
    token = dict(store_token)
    token[DEFINITIONS_KEY] = DEFINITIONS
    if alignment_kind(centered_alignment) == "centred":
        token[ALIGNMENT_KEY] = "centred"
    return token


def staleness(recorded: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """:func:`dynamics.store.freshness.staleness`, first saying when the kernel alignments differ."""
    if recorded is not None and recorded != current:
        old, new = recorded.get(DEFINITIONS_KEY, 1), current.get(DEFINITIONS_KEY, 1)
        if old != new:
            return f"it was computed by an older version of the analysis (definitions {old}, now {new})"
        had, wanted = recorded.get(ALIGNMENT_KEY, "uncentred"), current.get(ALIGNMENT_KEY, "uncentred")
        if had != wanted:
            return f"it holds {had} kernel alignment and {wanted} was asked for"
    return _store_staleness(recorded, current)


__all__ += ["ALIGNMENT_KEY", "DEFINITIONS", "DEFINITIONS_KEY", "alignment_kind", "analysis_token"]
