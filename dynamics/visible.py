"""User text shown safely: control and bidirectional-formatting characters made visible as escapes.

A path, a run name or a config value can hold characters that change how the text *around* them is
displayed: terminal control sequences (ESC ``\\x1b`` starts one: colours, cursor moves, a cleared
screen, a rewritten title), line breaks that forge a second line, and the Unicode bidirectional
controls (U+202E RIGHT-TO-LEFT OVERRIDE, U+2066 LEFT-TO-RIGHT ISOLATE, …) that reorder what follows,
so that ``report‮lmth.exe`` reads as ``reportexe.html``. HTML escaping (``&``, ``<``, quotes) does not
touch them. :func:`visible` replaces each with its Python escape (``\\x1b``, ``\\n``, ``\\u202e``), so
the reader sees that the name holds it. One rule for every place user text is shown: the HTML
reports (:func:`reports.html.escape`), the command line's messages and printed paths
(:mod:`dynamics.cli`) and progress lines (:mod:`analysis.progress`).

Replaced: the C0 and C1 control characters and DEL (Unicode category Cc: ESC, CR, LF, TAB, BEL, …),
the line and paragraph separators U+2028/U+2029, and the bidirectional formatting characters
U+061C, U+200E, U+200F, U+202A–U+202E and U+2066–U+2069. Other characters, including every printable
character of any script and the zero-width joiner of emoji sequences, are kept.
"""

from __future__ import annotations

import re

BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_HIDDEN = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\u2028\u2029{BIDI_CONTROLS}]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return {0x09: "\\t", 0x0a: "\\n", 0x0d: "\\r"}.get(code) or (
        f"\\x{code:02x}" if code <= 0xff else f"\\u{code:04x}")


def visible(text: object) -> str:
    """``str(text)`` with every control, line-separator and bidirectional-formatting character replaced
    by its escape (``\\x1b``, ``\\n``, ``\\u202e``); other text unchanged."""
    return _HIDDEN.sub(_escape, str(text))
