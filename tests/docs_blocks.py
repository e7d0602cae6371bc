"""The fenced code blocks of the documentation's Markdown pages, and running a page's ``python`` blocks.

Fences (docs/guide/contributing.md, "Code blocks in the documentation"): ``python`` blocks run,
``py`` blocks are shown only (compiled, never run), ``bash`` blocks' ``dynamics`` lines are parsed by
the real argparse parser, ``toml`` blocks are parsed as TOML.
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^\n]*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language tag, its text (dedented) and the 1-based line of its fence."""

    lang: str
    code: str
    line: int


def pages() -> list[Path]:
    """The README and every Markdown page of the site, in a stable order."""
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file (fences may be indented, e.g. inside a list or an admonition)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        start = FENCE.match(lines[i])
        if not start:
            i += 1
            continue
        indent, fence = start["indent"], start["fence"]
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^{re.escape(indent)}{re.escape(fence)}\s*$", lines[j]):
            body.append(lines[j])
            j += 1
        if j == len(lines):
            raise ValueError(f"{page_id(path)}:{i + 1}: code fence {fence} is never closed")
        found.append(Block(start["lang"].lower(), textwrap.dedent("\n".join(body)) + "\n", i + 1))
        i = j + 1
    return found


def run_python_blocks(path: Path, folder: Path) -> dict:
    """Execute the page's ``python`` blocks in order, in one namespace, with ``folder`` as the working
    directory; returns the namespace. An exception names the page and the block's line."""
    namespace = {"__name__": f"docs_page_{path.stem.replace('-', '_')}"}
    here = os.getcwd()
    os.chdir(folder)
    try:
        for block in blocks(path):
            if block.lang == "python":
                exec(compile(block.code, f"{page_id(path)}:{block.line}", "exec"), namespace)
    finally:
        os.chdir(here)
    return namespace
