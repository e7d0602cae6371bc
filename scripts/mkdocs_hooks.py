"""MkDocs hooks of the documentation site (``hooks:`` in mkdocs.yml).

Lists that start right after a paragraph line. GitHub renders

    The toolkit has two parts:
    - one
    - two

as a paragraph and a list; Python-Markdown (MkDocs) needs a blank line before the list and otherwise
runs the items into the paragraph. The pages (the Design contract, the README-style pages) are
written for both, so the hook inserts that blank line before a top-level list item that follows a
paragraph line, outside fenced code blocks. Nothing else changes.
"""

from __future__ import annotations

import re

ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")


def blank_line_before_lists(markdown: str) -> str:
    out: list[str] = []
    fence: str | None = None
    previous = ""
    for line in markdown.split("\n"):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None and line.strip().startswith(fence) and line.strip().strip(fence[0]) == "":
            fence = None
        elif (fence is None and ITEM.match(line) and previous.strip() and not previous[0].isspace()
              and not ITEM.match(previous) and not previous.lstrip().startswith(("|", "#", ">", "<"))):
            out.append("")
        out.append(line)
        previous = line
    return "\n".join(out)


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    return blank_line_before_lists(markdown)
