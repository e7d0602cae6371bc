"""The report in headless Chromium: loads without console messages, every image decodes, screenshot.

Needs Debian's ``chromium`` (CI's .ci/run installs it); skipped only when it is absent.
"""

import pytest
from chromium import chromium_path, load_page, screenshot

from reports import html as h
from reports.catalog import FIGURES

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed")]


@pytest.fixture(scope="module")
def report(written_report):
    return written_report


def test_report_loads_cleanly_and_every_image_decodes(report, tmp_path):
    widths, console = load_page(report, tmp_path)
    assert console == []
    assert len(widths) == len(FIGURES)
    html_widths = [int(part.split('"')[0]) for part in report.read_text().split('width="')[1:]]
    assert widths == html_widths and min(widths) > 300


@pytest.mark.slow
def test_comparison_page_loads_cleanly(report, tmp_path):
    import reports
    from experiment_dirs import make_experiment
    from synthetic import make_analysis

    small = make_experiment(tmp_path / "small", make_analysis(optimizers=("gn",), n_steps=30))
    page = reports.compare([report.parent, small], tmp_path / "compare.html")
    widths, console = load_page(page, tmp_path)
    # the axes agree, so every figure is one overlay of both experiments, except the between-runs CKA
    # (always per experiment), which only the three-run experiment has
    assert console == [] and len(widths) == len(FIGURES) and min(widths) > 300


def test_screenshot(report, tmp_path):
    png = screenshot(report, tmp_path / "shot.png", width=1280, height=1600)
    assert h.png_size(png.read_bytes()) == (1280, 1600)
    assert png.stat().st_size > 20_000  # a blank page compresses to a few kB


def test_probe_catches_broken_images_and_blocked_resources(report, tmp_path):
    """Negative control: the same checks fail on a page with a corrupt image and an external one."""
    broken = tmp_path / "broken.html"
    broken.write_text(report.read_text().replace(
        "</main>", '<img src="data:image/png;base64,iVBORw0KGgoAAAA"><img src="https://example.invalid/a.png"></main>'))
    widths, console = load_page(broken, tmp_path)
    assert widths[-2:] == [0, 0] and len(widths) == len(FIGURES) + 2
    assert any("Content Security Policy" in line and "example.invalid" in line for line in console)
