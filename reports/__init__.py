"""reports layer: figures, the self-contained HTML report of an experiment, and run comparison.

- ``reports.figures``: one function per figure, ``f(analysis Dataset) -> matplotlib Figure``;
- ``reports.write_report(run_dir, out=None) -> Path``: ``run_dir/report.html`` + ``figures/*.png``;
- ``reports.compare(dirs, out) -> Path``: several experiment folders side by side in one page.

``write_report`` and ``compare`` are imported on first use, so ``import reports`` stays cheap
(matplotlib and xarray load only when a report is made).
"""

__all__ = ["write_report", "compare"]


def __getattr__(name: str):
    if name == "write_report":
        from reports.report import write_report

        return write_report
    if name == "compare":
        from reports.compare import compare

        return compare
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
