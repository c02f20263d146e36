"""Find bare http(s) URLs in plain text the way common linkifiers do."""

from __future__ import annotations

import re

__all__ = ["find_urls"]

# `<URL>` / `<URL:URL>` (RFC 3986 appendix C) first: the brackets delimit the URL, so its
# last character is kept even when it is punctuation. Otherwise a URL starts at a word
# boundary and stops at whitespace, quotes or angle brackets.
_URL = re.compile(
    rb"<(?:URL:)?(https?://[^\s<>\"]+)>"
    rb"|(?<![A-Za-z0-9+.\-])(https?://[^\s<>\"']+)",
    re.I,
)
_TRAILING = b".,;:!?"


def find_urls(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each URL in `data`, in order."""
    out: list[tuple[int, int]] = []
    for m in _URL.finditer(data):
        if m.group(1) is not None:
            s, e = m.span(1)
        else:
            s, e = m.span(2)
            e = _trim(data, s, e)
        scheme = 8 if data[s + 4 : s + 5] in (b"s", b"S") else 7
        if e - s > scheme:
            out.append((s, e))
    return out


def _trim(data: bytes, s: int, e: int) -> int:
    """Drop sentence punctuation after a URL, and a ')' that closes a parenthesis opened
    before the URL (but keep `…/Foo_(bar)`)."""
    while e > s:
        c = data[e - 1]
        if c in _TRAILING:
            e -= 1
        elif c == 0x29 and data.count(b"(", s, e) < data.count(b")", s, e):
            e -= 1
        else:
            break
    return e
