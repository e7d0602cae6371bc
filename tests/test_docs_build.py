"""The documentation site builds with ``mkdocs build --strict`` (what ``make docs`` runs): a broken
link or anchor, a page missing from the nav, an unresolved API reference or a docstring that
mkdocstrings' Google-style parser warns about fails the build, and so this test."""

import os
import subprocess
import sys

import pytest

from docs_blocks import ROOT

pytest.importorskip("material", reason="mkdocs-material is not installed (the docs extra; make install has it)")
pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed (the docs extra)")


def build(site, config=ROOT / "mkdocs.yml"):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def test_site_builds_strictly(tmp_path):
    result = build(tmp_path / "site")
    problems = [line for line in result.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert result.returncode == 0 and not problems, "\n".join(problems) or result.stderr[-3000:]
    for page in ("index.html", "guide/own-loop/index.html", "reference/cli/index.html", "DESIGN/index.html",
                 "reference/api/dynamics/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site" / "reference" / "api" / "dynamics" / "index.html").read_text(encoding="utf-8")
    assert 'id="dynamics.recorder.Recorder"' in api and "Records a training run" in api   # rendered from the docstring


def test_strict_build_fails_on_a_broken_link(tmp_path):
    """The same configuration with one page linking to a missing page and a missing anchor fails."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[gone](nowhere.md) and [no anchor](other.md#missing)\n")
    (docs / "other.md").write_text("# Other\n")
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:")[0]
    config = (config.replace("docs_dir: docs", f"docs_dir: {docs}").replace("paths: [.]", f"paths: [{ROOT}]")
              .replace("scripts/", f"{ROOT}/scripts/"))
    (tmp_path / "mkdocs.yml").write_text(config + "\nnav:\n  - index.md\n  - other.md\n")
    result = build(tmp_path / "site", tmp_path / "mkdocs.yml")
    assert result.returncode != 0
    assert "nowhere.md" in result.stderr and "#missing" in result.stderr


def test_docstrings_read_as_markdown():
    """The site's griffe extension turns Sphinx roles and ``::`` into Markdown (docstrings stay as written)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("griffe_rst_roles", ROOT / "scripts" / "griffe_rst_roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "See :func:`~dynamics.store.open_run` and :class:`dynamics.models.RevMLP`. For example::\n\nOr. ::\n"
    assert module.markdown(text) == "See `open_run` and `dynamics.models.RevMLP`. For example:\n\nOr.\n"


def test_lists_after_a_paragraph_line_become_lists():
    """The site's hook adds the blank line Python-Markdown needs before a list (GitHub needs none),
    outside code fences, and leaves lists, tables and code alone."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fix = module.blank_line_before_lists
    assert fix("Two parts:\n- one\n- two\n") == "Two parts:\n\n- one\n- two\n"
    assert fix("Steps:\n1. first\n2. second") == "Steps:\n\n1. first\n2. second"
    unchanged = ["- one\n- two\n", "Text\n\n- one\n", "```\ncode:\n- not a list\n```\n", "| a |\n- b\n",
                 "- item\n  continued\n- next\n"]
    for text in unchanged:
        assert fix(text) == text, text
