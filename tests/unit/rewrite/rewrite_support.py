"""Shared helpers for the rewrite tests: an independent link oracle, mapping back."""

from __future__ import annotations

import email
import email.message
import re
from html.parser import HTMLParser

from trackmilter.rewrite import Link, RewriteOptions, RewriteResult, rewrite_message

PIXEL_URL = "https://t.example/o/PIXEL"
TRACKED = re.compile(rb"https://t\.example/c/(\d+)")
PIXEL_TAG = re.compile(rb'<img src="https://t\.example/o/PIXEL"[^>]*/>')
_C0_AND_SPACE = "".join(chr(c) for c in range(0x21))


def linker(index: int, url: str) -> str:
    return f"https://t.example/c/{index}"


def rewrite(
    body: bytes,
    content_type: str | None = "text/html; charset=utf-8",
    cte: str | None = None,
    pixel: bool = False,
    **options: object,
) -> RewriteResult:
    """rewrite_message with the test linker; keyword arguments become RewriteOptions."""
    opts = RewriteOptions(**options)  # type: ignore[arg-type]
    return rewrite_message(content_type, cte, body, linker, PIXEL_URL if pixel else None, opts)


def map_back(data: bytes, links: tuple[Link, ...]) -> bytes:
    """Remove the pixel and put each link's original bytes back in place of its tracking URL."""
    data = PIXEL_TAG.sub(b"", data)
    return TRACKED.sub(lambda m: links[int(m.group(1)) - 1].raw, data)


class _Oracle(HTMLParser):
    """The links a browser would follow, found with the stdlib parser (a different method
    from the engine's): first href of <a>/<area>, http(s) only, opt-out honoured, markup
    inside Outlook conditional comments included."""

    def __init__(self, optout: str = "data-notrack") -> None:
        super().__init__(convert_charrefs=True)
        self.optout = optout
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("a", "area") or any(n == self.optout for n, _ in attrs):
            return
        hrefs = [v for n, v in attrs if n == "href"]
        if not hrefs or hrefs[0] is None:
            return
        url = hrefs[0].strip(_C0_AND_SPACE).replace("\t", "").replace("\n", "")
        url = url.replace("\r", "")
        if re.match(r"https?://", url, re.I):
            self.urls.append(url)

    def handle_comment(self, data: str) -> None:
        if data.lstrip().lower().startswith("[if"):
            inner = data[data.find(">") + 1 :]
            end = inner.lower().rfind("<![endif]")
            sub = _Oracle(self.optout)
            sub.feed(inner if end < 0 else inner[:end])
            sub.close()
            self.urls.extend(sub.urls)


def expected_urls(html: str, optout: str = "data-notrack") -> list[str]:
    oracle = _Oracle(optout)
    oracle.feed(html)
    oracle.close()
    return oracle.urls


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line break, body) of a message file."""
    m = re.search(rb"\r?\n\r?\n", raw)
    if m is None:
        return raw, b""
    first_break = b"\r\n" if raw[m.start()] == 0x0D else b"\n"
    return raw[: m.start()] + first_break, raw[m.end() :]


def header_values(header_block: bytes) -> tuple[str | None, str | None]:
    """Top-level Content-Type and Content-Transfer-Encoding values (None when absent)."""
    msg = email.message_from_bytes(header_block + b"\n")
    ctype, cte = msg.get("content-type"), msg.get("content-transfer-encoding")
    return (None if ctype is None else str(ctype)), (None if cte is None else str(cte))


def with_cte(header_block: bytes, cte: str | None) -> bytes:
    """The header block with its Content-Transfer-Encoding replaced (as the milter does)."""
    if cte is None:
        return header_block
    eol = b"\r\n" if header_block.endswith(b"\r\n") else b"\n"
    field = re.compile(rb"^content-transfer-encoding:.*\r?\n(?:[ \t].*\r?\n)*", re.I | re.M)
    line = b"Content-Transfer-Encoding: " + cte.encode() + eol
    if field.search(header_block):
        return field.sub(lambda _: line, header_block, count=1)
    return header_block + line


def leaves(raw: bytes) -> list[tuple[str, list[tuple[str, str]], bytes | None]]:
    """Every part of a message as the email package sees it: content type, headers other
    than Content-Transfer-Encoding, decoded payload of leaves."""
    msg = email.message_from_bytes(raw)
    out: list[tuple[str, list[tuple[str, str]], bytes | None]] = []
    for part in msg.walk():
        headers = [(k, str(v)) for k, v in part.items() if k.lower() != "content-transfer-encoding"]
        payload = None
        if not part.is_multipart():
            got = part.get_payload(decode=True)
            payload = got if isinstance(got, bytes) else None
        out.append((part.get_content_type(), headers, payload))
    return out


def assert_same_structure(before: bytes, after: bytes, links: tuple[Link, ...]) -> None:
    """Same parts, same headers (but CTE), same decoded content once links are mapped back."""
    old, new = leaves(before), leaves(after)
    assert [p[0] for p in new] == [p[0] for p in old]
    assert [p[1] for p in new] == [p[1] for p in old]
    for (_, _, a), (_, _, b) in zip(old, new, strict=True):
        assert (None if b is None else map_back(b, links)) == a


def eol_of(data: bytes) -> bytes:
    nl = data.find(b"\n")
    return b"\r\n" if nl > 0 and data[nl - 1] == 0x0D else b"\n"


def assert_single_eol(data: bytes, eol: bytes) -> None:
    if eol == b"\r\n":
        assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")
    else:
        assert b"\r" not in data


def message_parts(msg: email.message.Message) -> list[email.message.Message]:
    return [p for p in msg.walk() if not p.is_multipart()]
