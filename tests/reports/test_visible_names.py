"""A name holding bidirectional or terminal control characters (U+202E, U+2066, ESC) is shown escaped in
the report's <title> and <h1> and everywhere else on the page (issue 22 §4): the reader sees that
the name holds them, and they cannot reorder or hide the text around them."""

from experiment_dirs import make_experiment
from htmlcheck import parse
from synthetic import make_analysis

import reports
from reports.html import escape

HIDDEN = "\u202e", "\u2066", "\x1b", "\u2069"


def test_escape_makes_controls_visible_and_escapes_markup():
    assert escape("a\u202e<b>\x1b[31m'") == "a\\u202e&lt;b&gt;\\x1b[31m&#x27;"


def test_report_title_and_heading_show_the_escapes(tmp_path):
    name = "exp\u202elmth.exe\u2066x\u2069\x1b[31mred"
    root = make_experiment(tmp_path / name, make_analysis(optimizers=("gn",), n_steps=30))
    out = reports.write_report(root, out=tmp_path / "report.html")
    page = out.read_text(encoding="utf-8")
    assert not any(c in page for c in HIDDEN)
    doc = parse(page)
    shown = "exp\\u202elmth.exe\\u2066x\\u2069\\x1b[31mred"
    assert shown in doc.all_text("title") and shown in doc.all_text("h1")
