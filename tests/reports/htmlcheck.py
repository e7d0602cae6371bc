"""Parse a page with the standard library's HTMLParser and collect what the structure tests check."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}


class PageStructure(HTMLParser):
    """Tags in order, balance errors, images (src/width/height/alt), text of selected elements."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.images: list[dict] = []
        self.text: dict[str, list[str]] = {}
        self._capture: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "img":
            self.images.append(attrs)
        if tag not in VOID:
            self.stack.append(tag)
            self._capture.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()
        self._capture.pop()

    def handle_data(self, data):
        for tag in set(self._capture):
            self.text.setdefault(tag, []).append(data)

    def all_text(self, tag: str) -> str:
        return " ".join(self.text.get(tag, []))


def parse(page: str) -> PageStructure:
    parser = PageStructure()
    parser.feed(page)
    parser.close()
    if parser.stack:
        parser.errors.append(f"unclosed tags {parser.stack}")
    return parser


def decode_data_png(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    if not src.startswith(prefix):
        raise AssertionError(f"image source is not an embedded PNG: {src[:60]!r}")
    return base64.b64decode(src[len(prefix):], validate=True)
