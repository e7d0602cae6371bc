"""A griffe extension for the documentation site: docstrings written with reStructuredText habits
read as Markdown.

The project's docstrings use Google-style sections and Sphinx roles (``:func:`dynamics.open_run```,
``:class:`~dynamics.models.RevMLP```) and ``::`` before literal blocks. Markdown has no roles, so each
role becomes a code span of its target (``~`` keeps the last component, as in Sphinx), and a
paragraph ending in ``::`` ends in ``:`` (the indented block after it is a code block in Markdown
too). Loaded by mkdocstrings (``extensions`` in mkdocs.yml); the docstrings themselves are unchanged.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const|term|ref):`~?([^`]+)`")


def markdown(text: str) -> str:
    def target(match: re.Match) -> str:
        name = match.group(1)
        return f"`{name.rsplit('.', 1)[-1]}`" if match.group(0).split("`", 1)[1].startswith("~") else f"`{name}`"

    text = ROLE.sub(target, text)
    text = re.sub(r"[ \t]+::[ \t]*$", "", text, flags=re.M)      # "text. ::" → "text."
    return re.sub(r"(\S)::[ \t]*$", r"\1:", text, flags=re.M)   # "text::" → "text:"


class RstRoles(griffe.Extension):
    """Rewrite every loaded object's docstring with :func:`markdown`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
