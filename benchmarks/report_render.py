"""Time the HTML report (nine figures + page) against drawing one simple figure, in one process.

Baseline: one 6.5×3.4-inch Figure with a single 400-point line, rendered to PNG at the report's dpi —
the cheapest figure a report could hold. The report is timed per stage (figures, page assembly) on
realistic synthetic analysis Datasets (the §6 schema; builder in tests/reports/synthetic.py) of
growing size; ratios are against the baseline measured in this run. Target (issue 7): a whole
report in under ~10 s.

    python benchmarks/report_render.py           # three sizes, 3 repeats
    python benchmarks/report_render.py --quick   # smallest size, 1 repeat
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reports"))

from synthetic import make_analysis  # noqa: E402

from reports.plotting import figure_png, new_figure  # noqa: E402
from reports.report import render_figures, report_html  # noqa: E402
from environment import environment_line

CASES = {
    "3 runs × 400 steps": dict(optimizers=("gn", "sgd", "adam"), seeds=(0,), n_steps=400),
    "3 runs × 20k steps": dict(optimizers=("gn", "sgd", "adam"), seeds=(0,), n_steps=20_000),
    "8 runs × 20k steps": dict(optimizers=("gn", "kgn", "sgd", "adam"), seeds=(0, 1), n_steps=20_000),
}


def baseline_png() -> bytes:
    fig, axes = new_figure(1, width=6.5)
    axes[0, 0].plot(np.arange(400), np.sin(np.arange(400) / 30))
    return figure_png(fig)


def best_and_median(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest case, one repeat")
    args = parser.parse_args()
    print(environment_line())
    repeats = 1 if args.quick else 3
    cases = dict(list(CASES.items())[:1]) if args.quick else CASES
    baseline_png()  # warm-up: font cache, Agg
    base, _ = best_and_median(baseline_png, max(3, repeats))
    print(f"baseline (one simple figure to PNG): {base * 1000:.0f} ms")
    print(f"{'case':<22} {'figures s':>10} {'page s':>8} {'total s':>8} {'× baseline':>11} {'HTML MB':>8}")
    for name, kwargs in cases.items():
        ds = make_analysis(**kwargs)
        render_figures(ds)  # warm-up
        fig_best, _ = best_and_median(lambda: render_figures(ds), repeats)
        drawn = render_figures(ds)
        page_best, _ = best_and_median(lambda: report_html(ds, title="bench", figures=drawn), repeats)
        size = len(report_html(ds, title="bench", figures=drawn).encode()) / 1e6
        total = fig_best + page_best
        print(f"{name:<22} {fig_best:>10.2f} {page_best:>8.3f} {total:>8.2f} {total / base:>11.0f} {size:>8.2f}")


if __name__ == "__main__":
    main()
