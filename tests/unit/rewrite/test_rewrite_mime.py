"""MIME structure: what is walked, what is left alone and why, and malformed input."""

from __future__ import annotations

import pytest
from tests.unit.rewrite.rewrite_support import assert_same_structure, rewrite

HTML = b'<html><body><a href="http://a.example/">x</a></body></html>\n'
TRACKED = b'<html><body><a href="https://t.example/c/1">x</a></body></html>\n'
MIXED = "multipart/mixed; boundary=b"


def mixed(*parts: bytes, boundary: bytes = b"b", close: bool = True) -> bytes:
    out = b"".join(b"--" + boundary + b"\n" + p for p in parts)
    return out + (b"--" + boundary + b"--\n" if close else b"")


def html_part(headers: bytes = b"Content-Type: text/html\n") -> bytes:
    return headers + b"\n" + HTML


LEFT_ALONE = [
    # (content type, body, expected skipped)
    pytest.param(
        'multipart/signed; protocol="application/pgp-signature"; boundary=b',
        mixed(html_part(), b"Content-Type: application/pgp-signature\n\nsig\n"),
        [(1, "signed_or_encrypted")],
        id="signed",
    ),
    pytest.param(
        'multipart/encrypted; protocol="application/pgp-encrypted"; boundary=b',
        mixed(b"Content-Type: application/pgp-encrypted\n\nVersion: 1\n", html_part()),
        [(1, "signed_or_encrypted")],
        id="encrypted",
    ),
    pytest.param(
        MIXED,
        mixed(
            b"Content-Type: multipart/signed; boundary=s\n\n"
            + mixed(html_part(), b"Content-Type: application/pkcs7-signature\n\nx\n", boundary=b"s")
        ),
        [(1, "signed_or_encrypted")],
        id="signed-nested",
    ),
    pytest.param(
        MIXED,
        mixed(
            html_part(
                b'Content-Type: text/html\nContent-Disposition: ATTACHMENT ; filename="a.html"\n'
            )
        ),
        [(1, "attachment")],
        id="attachment",
    ),
    pytest.param(
        MIXED,
        mixed(b"Content-Type: message/rfc822\n\nSubject: fwd\nContent-Type: text/html\n\n" + HTML),
        [(1, "attached_message")],
        id="attached-message",
    ),
    pytest.param(
        "multipart/digest; boundary=b",
        mixed(b"\nContent-Type: text/html\n\n" + HTML),
        [(1, "attached_message")],
        id="digest-parts-are-messages",
    ),
    pytest.param(
        MIXED,
        mixed(
            b"Content-Type: image/svg+xml\n\n" + HTML,
            b"Content-Type: application/xhtml+xml\n\n" + HTML,
        ),
        [],
        id="non-text-parts",
    ),
    pytest.param(
        MIXED,
        mixed(html_part(b"Content-Type: text/html\nContent-Transfer-Encoding: x-uuencode\n")),
        [(1, "unknown_transfer_encoding")],
        id="unknown-cte",
    ),
    pytest.param(
        MIXED,
        mixed(html_part(b"Content-Type: text/html; charset=x-no-such-charset\n")),
        [(1, "unknown_charset")],
        id="unknown-charset",
    ),
    pytest.param(
        MIXED,
        mixed(html_part(b"Content-Type: text/html; charset=cp037\n")),
        [(1, "unknown_charset")],
        id="ebcdic-charset",
    ),
    pytest.param(
        MIXED,
        mixed(b"Content-Type: text/html\nContent-Transfer-Encoding: base64\n\nPGEgaH\n"),
        [(1, "undecodable")],
        id="broken-base64",
    ),
    pytest.param(
        MIXED,
        mixed(
            b"Content-Type: text/html; charset=utf-16\nContent-Transfer-Encoding: base64\n\nAAAA\n"
        ),
        [(1, "undecodable_charset")],
        id="broken-utf16",
    ),
    pytest.param("multipart/mixed", mixed(html_part()), [(1, "malformed")], id="no-boundary-param"),
    pytest.param(
        "multipart/mixed; boundary=zz",
        mixed(html_part()),
        [(1, "malformed")],
        id="boundary-never-found",
    ),
    pytest.param(
        MIXED,
        mixed(b"Content-Type: text/html\nthis is no header\n\n" + HTML),
        [(1, "malformed")],
        id="broken-part-header",
    ),
    pytest.param(
        MIXED,
        mixed(b" folded: continuation first\n\n" + HTML),
        [(1, "malformed")],
        id="continuation-first",
    ),
    pytest.param(
        MIXED,
        mixed(b"Content-Type: html\n\n" + HTML),
        [(1, "malformed")],
        id="invalid-content-type",
    ),
    pytest.param(
        MIXED,
        mixed(b"Content-Type: text/html\nContent-Transfer-Encoding: base64\n\n" + HTML),
        [(1, "undecodable")],
        id="html-declared-base64",
    ),
]


@pytest.mark.parametrize(("ctype", "body", "skipped"), LEFT_ALONE)
def test_left_alone(ctype: str, body: bytes, skipped: list[tuple[int, str]]) -> None:
    result = rewrite(body, ctype, text_links=True)
    assert result.body is None
    assert list(result.skipped) == skipped


def test_multipart_with_base64_cte_left_alone() -> None:
    result = rewrite(mixed(html_part()), MIXED, "base64")
    assert result.body is None and result.skipped == ((1, "malformed"),)


WALKED = [
    # (content type, body): the one link must be found and rewritten in place.
    pytest.param(MIXED, mixed(html_part()), id="simple"),
    pytest.param('multipart/mixed; boundary="b"', mixed(html_part()), id="quoted-boundary"),
    pytest.param(
        'Multipart/Mixed; BOUNDARY="=_a\'()+_,-./:=? z"',
        mixed(html_part(), boundary=b"=_a'()+_,-./:=? z"),
        id="odd-boundary-chars",
    ),
    pytest.param(
        MIXED,
        b'preamble <a href="http://p.example/">\n'
        + mixed(html_part())
        + b"epilogue http://e.example/\n",
        id="preamble-epilogue",
    ),
    pytest.param(MIXED, mixed(html_part(), close=False), id="missing-close-boundary"),
    pytest.param(
        MIXED, mixed(html_part()).replace(b"--b\n", b"--b \t\n", 1), id="transport-padding"
    ),
    pytest.param(MIXED, b"--bx\n--b-\n" + mixed(html_part()), id="boundary-prefix-lines"),
    pytest.param(
        MIXED,
        mixed(
            html_part(
                b'CONTENT-TYPE:\n text/html;\n\tcharset="us-ascii"\ncontent-transfer-encoding: 7BIT\n'
            )
        ),
        id="case-and-folding",
    ),
    pytest.param(
        MIXED,
        mixed(html_part(b"X-First: 1\nContent-Type: text/html\nContent-Type: text/plain\n")),
        id="first-header-wins",
    ),
    pytest.param(
        MIXED,
        mixed(
            b'Content-Type: multipart/alternative;\n boundary="inner"\n\n'
            + mixed(b"Content-Type: text/plain\n\nplain\n", html_part(), boundary=b"inner")
        ),
        id="nested",
    ),
    pytest.param(
        MIXED,
        mixed(
            b"Content-Type: multipart/related; boundary=r\n\nrel-preamble\n"
            + mixed(html_part(), b"Content-Type: image/png\n\nPNG\n", boundary=b"r"),
            b"Content-Type: application/pdf\n\n%PDF\n",
        ),
        id="related-in-mixed",
    ),
    pytest.param(
        MIXED,
        mixed(
            html_part(b"Content-Type: text/html\nContent-Disposition: inline; filename=x.html\n")
        ),
        id="inline-disposition",
    ),
]


@pytest.mark.parametrize(("ctype", "body"), WALKED)
@pytest.mark.parametrize("crlf", [pytest.param(False, id="lf"), pytest.param(True, id="crlf")])
def test_walked(ctype: str, body: bytes, crlf: bool) -> None:
    if crlf:
        body = body.replace(b"\n", b"\r\n")
    result = rewrite(body, ctype)
    assert [link.url for link in result.links] == ["http://a.example/"]
    assert result.skipped == ()
    old, new = (
        (HTML, TRACKED)
        if not crlf
        else (HTML.replace(b"\n", b"\r\n"), TRACKED.replace(b"\n", b"\r\n"))
    )
    assert result.body == body.replace(old, new)
    headers = f"Content-Type: {ctype}\n".encode()
    assert_same_structure(
        headers + b"\n" + body, headers + b"\n" + (result.body or b""), result.links
    )


def test_leaf_ordinals() -> None:
    body = mixed(
        b"Content-Type: text/plain\n\nhttp://a.example/1\n",
        b'Content-Type: multipart/signed; boundary=s\n\n--s\nContent-Type: text/html\n\n<a href="http://x/">\n--s--\n',
        b"Content-Type: multipart/alternative; boundary=c\n\n"
        + mixed(b"Content-Type: image/gif\n\nGIF\n", html_part(), boundary=b"c"),
        b"Content-Type: message/rfc822\n\nSubject: x\n\nhttp://y.example/\n",
        b"Content-Type: text/plain\n\nhttps://a.example/5\n",
    )
    result = rewrite(body, MIXED, text_links=True)
    assert [(link.index, link.part, link.kind) for link in result.links] == [
        (1, 1, "text"),
        (2, 4, "html"),
        (3, 6, "text"),
    ]
    assert result.skipped == ((2, "signed_or_encrypted"), (5, "attached_message"))


def test_outside_signed_still_rewritten() -> None:
    body = mixed(
        b"Content-Type: multipart/signed; boundary=s\n\n" + mixed(html_part(), boundary=b"s"),
        html_part(),
    )
    result = rewrite(body, MIXED)
    assert result.body is not None and len(result.links) == 1
    assert result.body.count(HTML) == 1 and result.body.count(TRACKED) == 1
    assert result.body.index(HTML) < result.body.index(TRACKED)


MALFORMED = [
    pytest.param(None, b"", id="empty"),
    pytest.param(MIXED, b"", id="empty-multipart"),
    pytest.param(MIXED, b"--b", id="delimiter-only"),
    pytest.param(MIXED, b"--b\n", id="delimiter-line-only"),
    pytest.param(MIXED, b"--b\nContent-Type: text/html", id="header-cut"),
    pytest.param(MIXED, b"--b\nContent-Type: text/html\n", id="headers-no-body"),
    pytest.param(
        MIXED,
        b'--b\nContent-Type: text/html\n\n<a href="http://a.example/',
        id="body-cut-in-attribute",
    ),
    pytest.param(MIXED, b"--b--\n--b\nContent-Type: text/html\n\n" + HTML, id="close-first"),
    pytest.param(MIXED, b"--b\r--b\r\n\r\n", id="bare-cr"),
    pytest.param('multipart/mixed; boundary="', b"--\n\n", id="empty-quoted-boundary"),
    pytest.param('text/html; charset="', HTML, id="unterminated-quoted-param"),
    pytest.param(
        MIXED,
        b"".join(b"--b\nContent-Type: multipart/mixed; boundary=b\n\n" for _ in range(200)),
        id="same-boundary-nested-200",
    ),
    pytest.param(
        MIXED,
        b"--b\n"
        + b"".join(
            f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n".encode() for i in range(100)
        )
        + b"Content-Type: text/html\n\n"
        + HTML,
        id="nesting-100-deep",
    ),
    pytest.param("text/html", b'<a href="http://a.example/" ' * 2000, id="many-unterminated-tags"),
    pytest.param("text/html", b"<!--[if mso]>" * 1000 + b"<a href=", id="conditional-without-end"),
    pytest.param("text/html", b"\x00\xff<a\x00href=\xff>" * 50, id="binary-junk"),
]


@pytest.mark.parametrize(("ctype", "body"), MALFORMED)
def test_malformed_never_raises(ctype: str | None, body: bytes) -> None:
    for options in ({}, {"text_links": True, "pixel": True}):
        result = rewrite(body, ctype, **options)
        assert result.body is None or isinstance(result.body, bytes)


def test_deep_nesting_is_left_alone() -> None:
    body = (
        b"--b\n"
        + b"".join(
            f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n".encode() for i in range(100)
        )
        + b"Content-Type: text/html\n\n"
        + HTML
    )
    result = rewrite(body, MIXED)
    assert result.body is None and result.skipped[-1][1] == "malformed"
    shallow = (
        b"--b\n"
        + b"".join(
            f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n".encode() for i in range(10)
        )
        + b"Content-Type: text/html\n\n"
        + HTML
    )
    assert rewrite(shallow, MIXED).body is not None
