"""Progress of one training run on stderr: a tqdm bar on a terminal, log lines elsewhere, or nothing.

Off a terminal (stderr redirected to a file or a pipe: batch jobs, ``nohup``, CI) a bar would be
lost or garble the log, so one line is printed

- when another tenth of the steps is done, or ``interval`` seconds (default 10) after the last line,
  whichever comes first, and once at the end;
- in the form ``adam seed 0: step 250/1000 (25%), loss 0.4123, 41.7 steps/s, ETA 0:00:18``
  (steps/s over the steps of this process, ETA = remaining steps ÷ that rate).

``mode``: "auto" (bar when ``stream.isatty()``, else lines), "bar", "lines" or "off" (``--quiet``).
In lines mode a ``header`` (e.g. "1000 steps, cpu, 2 CPU threads") is printed first as ``desc: header``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from tqdm import tqdm

MODES = ("auto", "bar", "lines", "off")


def clock(seconds: float) -> str:
    """Seconds as H:MM:SS ("?" when not finite)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Report ``update(step, loss)`` calls of a run of ``total`` steps starting at ``initial``."""

    def __init__(self, total: int, *, initial: int = 0, desc: str = "training", mode: str = "auto",
                 interval: float = 10.0, stream: TextIO | None = None, header: str = "") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.stream = sys.stderr if stream is None else stream
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        self.mode, self.total, self.initial, self.desc, self.interval = mode, total, initial, desc, interval
        self.step, self.loss = initial, math.nan
        self.start = self.last_time = time.monotonic()
        self.last_tenth, self.emitted = self.tenth(initial), initial
        if mode == "lines" and header:
            print(f"{desc}: {header}", file=self.stream, flush=True)
        self.bar = (tqdm(total=total, initial=initial, desc=desc, unit="step", file=self.stream)
                    if mode == "bar" else None)

    def tenth(self, step: int) -> int:
        return (10 * step) // self.total if self.total > 0 else 10

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        done = self.step - self.initial
        rate = done / elapsed if elapsed > 0 and done > 0 else math.nan
        eta = (self.total - self.step) / rate if rate > 0 else math.nan
        percent = 100 * self.step / self.total if self.total > 0 else 100.0
        return (f"{self.desc}: step {self.step}/{self.total} ({percent:.0f}%), loss {self.loss:.4g}, "
                f"{rate:.3g} steps/s, ETA {clock(eta)}")

    def emit(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_time = time.monotonic()
        self.last_tenth, self.emitted = self.tenth(self.step), self.step

    def update(self, step: int, loss: float) -> None:
        """The run has done ``step`` steps; the last batch loss was ``loss``."""
        advanced, self.step, self.loss = step - self.step, step, loss
        if self.bar is not None:
            self.bar.update(advanced)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        elif self.mode == "lines" and (self.tenth(step) > self.last_tenth
                                       or time.monotonic() - self.last_time >= self.interval):
            self.emit()

    def close(self) -> None:
        """Close the bar, or print the final line if the last one was not at the current step."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.mode == "lines" and self.step != self.emitted:
            self.emit()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
