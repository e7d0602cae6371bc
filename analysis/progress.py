"""Progress of a long analysis on stderr: a tqdm bar on a terminal, log lines elsewhere, or nothing.

An analysis visits every checkpoint of every variable (the NTK, each layer's representation, each
parameter tensor); its work is counted in those *checkpoint-variables* (n checkpoints × variables).
Nothing is shown for an analysis that ends within ``delay`` seconds (default 2), so short analyses
stay silent; a longer one shows

- ``"bar"``: a tqdm bar (shown once ``delay`` seconds have passed);
- ``"lines"``: after ``delay`` seconds, one line per tenth of the work or per ``interval`` seconds
  (default 10), whichever comes first, and one at the end, such as
  ``gn.zarr: analysed 1200/40000 checkpoint-variables (3%), ETA 0:04:31`` — for logs of batch jobs;
- ``"off"``: nothing.

``"auto"`` is a bar when the stream is a terminal and nothing otherwise (the default of the library
functions: a notebook or a script's log is not filled); ``dynamics analyze`` shows lines when stderr is
redirected and is silenced with ``--quiet``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from tqdm import tqdm

from dynamics.visible import visible

MODES = ("auto", "bar", "lines", "off")


def check_mode(mode: object) -> str:
    """``mode`` if it is one of :data:`MODES`; ValueError naming it otherwise."""
    if mode not in MODES:
        raise ValueError(f"progress must be one of {MODES}, got {mode!r}")
    return str(mode)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class AnalysisProgress:
    """Progress of ``total`` units of work. The analysis announces each variable with :meth:`part`
    (its number of checkpoints) and reports checkpoints through the returned callable; a part that
    reports fewer (a variable read in probe chunks) is completed when the next one starts."""

    def __init__(self, total: int, *, desc: str, mode: str = "auto", stream: TextIO | None = None,
                 delay: float = 2.0, interval: float = 10.0) -> None:
        self.stream = sys.stderr if stream is None else stream
        mode = check_mode(mode)
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "off"
        self.mode, self.total, self.delay, self.interval = mode, max(0, int(total)), delay, interval
        self.desc = visible(desc)   # a store's name may hold control characters
        self.done, self.start = 0, time.monotonic()
        self._part_end = 0
        self._last_line, self._last_tenth, self._emitted = self.start, 0, -1
        self.bar = (tqdm(total=self.total, desc=self.desc, unit="ckpt", delay=delay, file=self.stream, leave=False)
                    if mode == "bar" else None)

    def part(self, n: int):
        """Start the next variable of ``n`` checkpoints; returns the callable its reader reports to."""
        self.update(self._part_end - self.done)
        self._part_end = self.done + n
        return self.update

    def update(self, k: int) -> None:
        if k <= 0:
            return
        self.done += k
        if self.bar is not None:
            self.bar.update(k)
        elif self.mode == "lines":
            now = time.monotonic()
            tenth = 10 * self.done // self.total if self.total else 10
            if now - self.start >= self.delay and (tenth > self._last_tenth or now - self._last_line >= self.interval):
                self._emit(now)

    def _emit(self, now: float) -> None:
        rate = self.done / (now - self.start) if now > self.start else math.nan
        eta = (self.total - self.done) / rate if rate > 0 else math.nan
        percent = 100 * self.done / self.total if self.total else 100.0
        print(f"{self.desc}: analysed {self.done}/{self.total} checkpoint-variables ({percent:.0f}%), "
              f"ETA {_clock(eta)}", file=self.stream, flush=True)
        self._last_line, self._emitted = now, self.done
        self._last_tenth = 10 * self.done // self.total if self.total else 10

    def close(self) -> None:
        self.update(self._part_end - self.done)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.mode == "lines" and self._emitted >= 0 and self._emitted != self.done:
            self._emit(time.monotonic())   # a final line only where earlier lines were shown

    def __enter__(self) -> AnalysisProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
