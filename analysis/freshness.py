"""What an analysis was computed from (the *source token* of a run store) and whether a stored
analysis still matches its store: re-exported from :mod:`dynamics.store.freshness`, where the store's
own reader (:func:`dynamics.open_run`) checks it too."""

from dynamics.store.freshness import (DATA_GROUPS, EDGE_BYTES, SOURCE_ATTR, WHOLE_FILE_BYTES, recorded_source,
                                      source_token, staleness)

__all__ = ["DATA_GROUPS", "EDGE_BYTES", "SOURCE_ATTR", "WHOLE_FILE_BYTES", "recorded_source", "source_token",
           "staleness"]
