"""Non-finite values a Recorder stores: kept, counted, and warned about once.

Diverged runs are what researchers study, so nothing non-finite is refused: a scalar (``log``,
``checkpoint``) that is NaN or ±Inf is stored as NaN; an array (parameters, the NTK, representations)
is stored as it is. Each such value is an event (group, key, step), counted in the store's root
attribute ``nonfinite`` (:func:`dynamics.store.schema.count_nonfinite`: per variable, how many rows,
at which steps), committed with its row. :class:`NonfiniteValues` issues one ``RuntimeWarning`` per
Recorder — at the first event, naming the variable and the step — and none after it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

Event = tuple[str, str, int]   # (group, key, step)


class NonfiniteValues:
    """The events of one Recorder (module docstring); ``where`` names the store in the warning."""

    def __init__(self, where: object) -> None:
        self.where = where
        self.warned = False

    def note(self, events: list[Event], what: str) -> None:
        """Warn of the first of ``events`` unless this Recorder warned before; ``what``: how the message
        starts (``non-finite loss=inf``: a filter on "non-finite loss" selects it)."""
        if events and not self.warned:
            self.warned = True
            group, key, step = events[0]
            warnings.warn(f"{what} at step {step} ({group}/{key} of {self.where}); further non-finite values of "
                          f"this Recorder are counted in the store's root attribute 'nonfinite' without a warning",
                          RuntimeWarning, stacklevel=4)

    def scalars(self, group: str, step: int, values: dict[str, float]) -> tuple[dict[str, float], list[Event]]:
        """``values`` (key → float) with non-finite ones as NaN, and their events (warned of)."""
        events = [(group, key, step) for key, value in values.items() if not math.isfinite(value)]
        if events:
            key = events[0][1]
            self.note(events, f"non-finite {key}={values[key]} is stored as NaN")
        return {key: value if math.isfinite(value) else math.nan for key, value in values.items()}, events

    def arrays(self, group: str, step: int, arrays: dict[str, tuple[Any, np.ndarray]]) -> list[Event]:
        """Events of the arrays (key → (dims, values)) holding a non-finite value (warned of; kept as they are)."""
        events = [(group, key, step) for key, (_, values) in arrays.items()
                  if values.dtype.kind in "fc" and not np.isfinite(values).all()]
        if events:
            self.note(events, f"non-finite values in {events[0][1]} are stored as they are")
        return events
