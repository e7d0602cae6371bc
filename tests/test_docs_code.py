"""Every code block of the documentation stays true: ``python`` blocks run, ``py`` blocks compile,
``dynamics`` command lines in ``bash`` blocks parse with the real parser, ``toml`` blocks parse.

The README's blocks run in tests/test_readme.py, which also checks what its example stored.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import tomllib

import pytest

from docs_blocks import ROOT, blocks, page_id, pages, run_python_blocks

RUNNABLE = [p for p in pages() if p != ROOT / "README.md" and any(b.lang == "python" for b in blocks(p))]
SHELL = ("bash", "sh", "shell", "console")
SHOWN = {"py", "python", *SHELL, "toml", "text", "", "json", "yaml", "ini", "html", "diff", "csv", "pycon"}


def test_the_guide_has_runnable_pages():
    names = {page_id(p) for p in RUNNABLE}
    assert {"docs/guide/own-loop.md", "docs/guide/read-store.md", "docs/guide/analyse-and-report.md"} <= names


@pytest.mark.parametrize("page", RUNNABLE, ids=page_id)
def test_python_blocks_run(page, tmp_path):
    with contextlib.redirect_stdout(io.StringIO()):
        run_python_blocks(page, tmp_path)


@pytest.mark.parametrize("page", pages(), ids=page_id)
def test_shown_blocks_are_valid(page):
    """``py`` blocks compile, ``toml`` blocks parse, and every fence names a language the rules cover."""
    for block in blocks(page):
        where = f"{page_id(page)}:{block.line}"
        assert block.lang in SHOWN, f"{where}: fence language {block.lang!r} (use python, py, bash, toml or text)"
        if block.lang == "py":
            compile(block.code, where, "exec")
        elif block.lang == "toml":
            tomllib.loads(block.code)


def command_lines(code: str) -> list[list[str]]:
    """The ``dynamics ...`` calls of a shell block, as argv lists (comments dropped, ``&&`` split)."""
    calls = []
    for line in code.splitlines():
        words = shlex.split(line.removeprefix("$ "), comments=True)   # console blocks show a prompt
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            if words[0] == "dynamics":
                calls.append(words[1:end])
            words = words[end + 1:]
    return calls


@pytest.mark.parametrize("page", pages(), ids=page_id)
def test_command_lines_parse(page):
    """Every ``dynamics`` line of a bash block names a real subcommand and real flags."""
    from dynamics.cli import build_parser

    parser = build_parser()
    for block in blocks(page):
        if block.lang not in SHELL:
            continue
        for argv in command_lines(block.code):
            where = f"{page_id(page)}:{block.line}: dynamics {' '.join(argv)}"
            stderr = io.StringIO()
            try:
                with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                    parser.parse_args(argv)
            except SystemExit as exit_:
                assert exit_.code == 0, f"{where}: {stderr.getvalue().strip()}"


def test_command_line_check_catches_a_wrong_flag():
    """The check above fails on a flag the parser does not have (so it can fail)."""
    from dynamics.cli import build_parser

    shell = "dynamics run --seeds 0,1  # comment\ncd x && dynamics report runs/x\n$ dynamics unlock s"
    assert command_lines(shell) == [["run", "--seeds", "0,1"], ["report", "runs/x"], ["unlock", "s"]]
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["run", "--no-such-flag"])
    assert exit_.value.code == 2
