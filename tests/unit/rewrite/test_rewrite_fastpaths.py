"""The fast paths taken for common link values decode exactly as the general rules do."""

from __future__ import annotations

import re

import pytest

from trackmilter.rewrite import links, scan

VALUES = [
    "https://a.example/?a=1&amp;b=2",
    "https://a.example/?a=1&amp;amp;b=2",  # decodes once: "&amp;b=2"
    "https://a.example/?a=1&amp;lt;b",  # "&lt;b", not "<b"
    "https://a.example/?a=1&AMP;b=2",
    "https://a.example/?a=1&amp",  # no semicolon: a legacy reference
    "https://a.example/?a=1&ampb=2",
    "https://a.example/?copy=1&amp;x=&copy=2",
    "https://a.example/?a=1&#38;b=2",
    "https://a.example/?q=&lt;x&gt;&amp;y",
    "&amp;&amp;&amp;",
    "no references",
]


def _general(value: str) -> str:
    """unescape_attr without its fast path."""
    return scan._CHARREF.sub(scan._charref, value)


@pytest.mark.parametrize("value", VALUES)
def test_unescape_attr_matches_general_rules(value: str) -> None:
    assert scan.unescape_attr(value) == _general(value)


def test_unescape_attr_fast_path_decodes_once() -> None:
    assert scan.unescape_attr("?a=1&amp;amp;b") == "?a=1&amp;b"


@pytest.mark.parametrize(
    "value",
    ["  http://a.example/x  ", "http://a.\texample/\nx\r", "\x00http://a/\x1f", "http://a/"],
)
def test_normalize_matches_whatwg_stripping(value: str) -> None:
    expected = re.sub(r"[\t\n\r]", "", value.strip("".join(chr(c) for c in range(0x21))))
    assert links.normalize(value) == expected
