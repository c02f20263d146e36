"""Every real HTML template, as 8bit / QP / base64 / multipart mail: all links and only links change."""

from __future__ import annotations

import base64
import binascii
import email
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.support import CORPUS
from tests.unit.rewrite.rewrite_support import (
    PIXEL_TAG,
    assert_single_eol,
    expected_urls,
    map_back,
    message_parts,
    rewrite,
)

HTML_FILES = sorted((CORPUS / "html").glob("*/*.html"))
BOUNDARY = b"----=_Part_0_1234.5678"
PLAIN = b"Hello,\nsee https://example.com/welcome?a=1&b=2 or <https://example.org/x>.\n"


def _b64(data: bytes, eol: bytes) -> bytes:
    enc = base64.b64encode(data)
    return eol.join(enc[i : i + 76] for i in range(0, len(enc), 76)) + eol


def _encode(cte: str, doc: bytes, eol: bytes) -> bytes:
    if cte == "quoted-printable":
        return binascii.b2a_qp(doc, istext=True)
    if cte == "base64":
        return _b64(doc, eol)
    return doc


# (content type, header block, body, html part index among leaves, body slice of the html part)
Built = tuple[str, bytes, bytes, int, tuple[int, int]]


def single(doc: bytes, cte: str, eol: bytes) -> Built:
    ctype = "text/html; charset=utf-8"
    headers = f"Content-Type: {ctype}{eol.decode()}Content-Transfer-Encoding: {cte}"
    body = _encode(cte, doc, eol)
    return ctype, (headers + eol.decode()).encode(), body, 0, (0, len(body))


def alternative(doc: bytes, cte: str, eol: bytes) -> Built:
    ctype = f'multipart/alternative; boundary="{BOUNDARY.decode()}"'
    plain = PLAIN.replace(b"\n", eol)
    head = b"".join(
        [
            b"This is a multi-part message in MIME format." + eol + eol,
            b"--" + BOUNDARY + eol,
            b"Content-Type: text/plain; charset=utf-8" + eol,
            b"Content-Transfer-Encoding: quoted-printable" + eol + eol,
            binascii.b2a_qp(plain, istext=True),
            eol + b"--" + BOUNDARY + eol,
            b"content-type: TEXT/HTML;" + eol + b'\tcharset="UTF-8"' + eol,
            b"Content-Transfer-Encoding: " + cte.encode() + eol + eol,
        ]
    )
    html = _encode(cte, doc, eol)
    tail = eol + b"--" + BOUNDARY + b"--" + eol + b"epilogue" + eol
    headers = b"MIME-Version: 1.0" + eol + b"Content-Type: " + ctype.encode() + eol
    return ctype, headers, head + html + tail, 1, (len(head), len(head) + len(html))


VARIANTS = [
    pytest.param(single, "8bit", b"\n", id="8bit-lf"),
    pytest.param(single, "8bit", b"\r\n", id="8bit-crlf"),
    pytest.param(single, "quoted-printable", b"\n", id="qp-lf"),
    pytest.param(single, "quoted-printable", b"\r\n", id="qp-crlf"),
    pytest.param(single, "base64", b"\r\n", id="base64-crlf"),
    pytest.param(alternative, "quoted-printable", b"\r\n", id="alternative-qp-crlf"),
    pytest.param(alternative, "8bit", b"\n", id="alternative-8bit-lf"),
]


def test_corpus_is_there() -> None:
    assert len(HTML_FILES) >= 50, f"HTML corpus not found under {CORPUS}"
    total = sum(len(expected_urls(p.read_text("utf-8"))) for p in HTML_FILES)
    assert total >= 90  # the oracle does find links: the comparisons below mean something


@pytest.mark.parametrize(("build", "cte", "eol"), VARIANTS)
@pytest.mark.parametrize("path", HTML_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_template_links_rewritten_and_nothing_else(
    path: Path, build: Callable[[bytes, str, bytes], Built], cte: str, eol: bytes
) -> None:
    source = path.read_bytes()
    doc = source.replace(b"\n", eol)
    ctype, headers, body, html_index, (start, end) = build(doc, cte, eol)

    result = rewrite(body, ctype, None if "multipart" in ctype else cte, pixel=True)

    expected = expected_urls(source.decode("utf-8"))
    assert [link.url for link in result.links] == expected
    assert [link.index for link in result.links] == list(range(1, len(expected) + 1))
    assert {link.part for link in result.links} <= {html_index + 1}
    assert {link.kind for link in result.links} <= {"html"}
    assert result.pixel_added and result.top_cte is None and result.skipped == ()
    assert result.body is not None
    # Outside the HTML part's body not a byte moves.
    grown = len(result.body) - len(body)
    assert result.body[:start] == body[:start]
    assert result.body[end + grown :] == body[end:]
    new_part = result.body[start : end + grown]
    assert_single_eol(new_part, eol)
    if cte != "8bit":
        assert max(len(line) for line in new_part.split(eol)) <= 76

    msg = email.message_from_bytes(headers + eol + result.body)
    decoded = message_parts(msg)[html_index].get_payload(decode=True)
    assert isinstance(decoded, bytes)
    assert len(PIXEL_TAG.findall(decoded)) == 1
    pixel_end = PIXEL_TAG.search(decoded)
    assert pixel_end is not None
    if b"</body" in source.lower():
        assert decoded.lower().rfind(b"</body") == pixel_end.end()
    assert map_back(decoded, result.links) == doc
