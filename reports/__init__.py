"""reports layer: figures, the self-contained HTML report of an experiment, and run comparison.

- ``reports.figures``: one function per figure, ``f(analysis Dataset) -> matplotlib Figure``;
- ``reports.write_report(run_dir, out=None) -> Path``: ``run_dir/report.html`` + ``figures/*.png``;
- ``reports.compare(dirs, out) -> Path``: several experiment folders side by side in one page.
"""

from reports.compare import compare
from reports.experiment import ReportError
from reports.report import write_report

__all__ = ["write_report", "compare", "ReportError"]
