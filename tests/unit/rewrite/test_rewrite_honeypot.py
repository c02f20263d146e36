"""The optional honeypot link: hidden from people, placed with the pixel, never counted as a
rewritten link, and absent unless asked for."""

from __future__ import annotations

import binascii
from html.parser import HTMLParser

from tests.unit.rewrite.rewrite_support import PIXEL_URL, linker

from trackmilter.rewrite import RewriteOptions, rewrite_message

HONEY = "https://t.example/c/HONEY"
HTML = b'<html><body><p><a href="https://shop.example/a">Shop</a></p></body></html>\r\n'


class Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))


def anchors(html: bytes) -> list[dict[str, str | None]]:
    p = Anchors()
    p.feed(html.decode())
    return p.anchors


def test_hidden_link_goes_before_the_pixel_inside_body() -> None:
    r = rewrite_message("text/html", None, HTML, linker, PIXEL_URL, RewriteOptions(), HONEY)
    assert r.body is not None
    honey = [a for a in anchors(r.body) if a["href"] == HONEY]
    assert len(honey) == 1
    (a,) = honey
    assert a["aria-hidden"] == "true" and a["tabindex"] == "-1"
    assert "display:none" in (a["style"] or "")
    assert r.body.index(HONEY.encode()) < r.body.index(PIXEL_URL.encode()) < r.body.index(
        b"</body>")
    # It is not one of the message's links: indexes of real links are unchanged.
    assert [(link.index, link.url) for link in r.links] == [(1, "https://shop.example/a")]


def test_without_pixel_and_in_quoted_printable() -> None:
    body = binascii.b2a_qp(HTML.replace(b"</p>", b"</p>" + b"x" * 120), istext=True)
    r = rewrite_message("text/html", "quoted-printable", body, linker, None, RewriteOptions(),
                        HONEY)
    assert r.body is not None
    decoded = binascii.a2b_qp(r.body)
    assert HONEY.encode() in decoded and PIXEL_URL.encode() not in decoded
    assert all(len(line) <= 76 for line in r.body.split(b"\r\n"))


def test_off_by_default() -> None:
    r = rewrite_message("text/html", None, HTML, linker, PIXEL_URL, RewriteOptions())
    assert r.body is not None and b"aria-hidden" not in r.body
