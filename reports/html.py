"""HTML building blocks for self-contained pages: escaping, tables, embedded PNG figures, the page.

Everything that may come from a user (run names, config keys and values, paths, versions) goes
through :func:`escape`: ``html.escape`` after :func:`dynamics.visible.visible`, which shows control
and bidirectional-formatting characters (ESC, U+202E, U+2066, …) as escapes, so that a name cannot
reorder or hide the text around it in a title, a heading or a table; our own markup is assembled around escaped text only. Figures are embedded
as ``data:image/png;base64`` URIs and the CSS is inline, so a page needs no network; its
Content-Security-Policy (``default-src 'none'; img-src data:; style-src 'unsafe-inline'``) makes a
browser refuse anything else, scripts included.
"""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata, resources
from pathlib import Path
from string import Template

from dynamics.visible import visible
from reports.palette import assign_colors


def escape(value) -> str:
    """HTML-escape ``str(value)`` (``&``, ``<``, ``>``, both quotes), its control and bidirectional
    formatting characters first made visible as escapes (``\\x1b``, ``\\u202e``; :mod:`dynamics.visible`)."""
    return html.escape(visible(value), quote=True)


def decimals_for(value: float, digits: int, significant: int = 2) -> int:
    """Decimal places that show ``value``: ``digits``, or more when ``value`` ≠ 0 would round to zero,
    enough for ``significant`` significant digits (−0.0042 rather than −0.0)."""
    if value == 0 or not math.isfinite(value) or round(abs(value), digits) != 0:
        return digits
    return max(digits, significant - 1 - math.floor(math.log10(abs(value))))


def number(mean: float, std: float = math.nan, *, digits: int = 2, unit: str = "", signed=False) -> str:
    """``mean`` (± ``std`` when finite) as text with a true minus sign; "—" when ``mean`` is not finite.

    ``digits`` decimal places, more where a non-zero value would otherwise read as 0 (see
    :func:`decimals_for`); the spread is shown with the mean's decimal places. Never "−0.0"."""
    if not math.isfinite(mean):
        return "—"
    places = decimals_for(mean, digits)
    text = f"{mean:+.{places}f}" if signed else f"{mean:.{places}f}"
    if math.isfinite(std):
        text += f" ± {std:.{max(places, decimals_for(std, digits))}f}"
    return text.replace("-", "−") + unit


def table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), swatch: int | None = None,
          colors: list[str] | None = None) -> str:
    """An HTML table of escaped cells; columns in ``numeric`` are right-aligned; ``swatch`` column gets a colour box."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, cell in enumerate(row):
            box = ""
            if swatch == c and colors is not None:
                box = f'<span class="swatch" style="background:{escape(colors[r])}"></span>'
            cls = ' class="num"' if c in numeric else ""
            cells.append(f"<td{cls}>{box}{escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def optimizer_colors(names: list[str]) -> list[str]:
    """Palette colour per optimiser name (for table swatches): distinct names get distinct colours,
    the same as the figures give them (:func:`reports.palette.assign_colors`)."""
    colors = assign_colors(names)
    return [colors[n] for n in names]


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG image (bad signature)")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def figure_html(png: bytes, *, number_: int, title: str, caption: str, anchor: str) -> str:
    """A <figure> with the PNG embedded as a data URI, its pixel size, alt text and a numbered caption."""
    width, height = png_size(png)
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="{escape(anchor)}"><img src="data:image/png;base64,{data}" width="{width}" '
            f'height="{height}" alt="{escape(title)}"><figcaption><strong>Figure {number_}. '
            f"{escape(title)}.</strong> {escape(caption)}</figcaption></figure>")


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b.c": "value"} with values as compact text (lists/None included)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = "null" if value is None else str(value)
    return out


def merged_rows(per_run: dict[str, dict]) -> list[list[str]]:
    """Rows [key, value] over several runs' nested dicts; a value that differs reads "run: v · run2: v2"."""
    flat = {label: flatten(d) for label, d in per_run.items()}
    keys = sorted({k for f in flat.values() for k in f})
    rows = []
    for key in keys:
        values = {label: f.get(key, "(absent)") for label, f in flat.items()}
        distinct = set(values.values())
        rows.append([key, distinct.pop() if len(distinct) == 1 else
                     " · ".join(f"{label}: {v}" for label, v in values.items())])
    return rows


def generator() -> str:
    """Name and version of the package that wrote the page."""
    try:
        return f"gn-dynamics {metadata.version('gn-dynamics')}"
    except metadata.PackageNotFoundError:
        return "gn-dynamics"


def timestamp() -> str:
    """Current UTC time, to the minute."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def page(title: str, body: str) -> str:
    """The complete page: escaped ``title``, inline CSS, ``body`` (already-built markup)."""
    templates = resources.files("reports") / "templates"
    template = Template(templates.joinpath("page.html").read_text(encoding="utf-8"))
    style = templates.joinpath("style.css").read_text(encoding="utf-8")
    return template.substitute(title=escape(title), generator=escape(generator()), style=style, body=body)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` in one step: see :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, text.encode("utf-8"))


def current_umask() -> int:
    """The process's file-creation mask, read without changing it (``/proc/self/status`` on Linux;
    elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    The file gets the permissions of a plain ``open(path, "w")``, 0o666 less the user's umask (the
    temporary file of ``mkstemp`` is 0o600). Temporary files of this name that killed writers left
    (``.NAME.*.tmp`` older than a minute) are removed first; a failed write removes its own.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for debris in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if now - debris.stat().st_mtime > 60:
                debris.unlink()
        except OSError:
            pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
