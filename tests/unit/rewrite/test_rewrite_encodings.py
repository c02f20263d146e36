"""Transfer encodings, charsets and line endings: round trips, QP promotion, the QP helpers."""

from __future__ import annotations

import base64
import binascii
import email
import re

import pytest
from tests.unit.rewrite.rewrite_support import (
    assert_single_eol,
    map_back,
    message_parts,
    rewrite,
)

from trackmilter.rewrite import charset, transfer

WEST_URL = "http://a.example/caf\u00e9?x=1&y=2"
JA_URL = "http://a.example/\u65e5\u672c?x=1&y=2"
WEST = f'<p>Caf\u00e9 cr\u00e8me</p>\n<a href="{WEST_URL.replace("&", "&amp;")}">go</a>\n'
JA = f'<p>\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8</p>\n<a href="{JA_URL.replace("&", "&amp;")}">go</a>\n'
URL, DOC = WEST_URL, WEST
TRACKED_TEXT = re.compile(r"https://t\.example/c/(\d+)")
PIXEL_TEXT = re.compile(r'<img src="https://t\.example/o/PIXEL"[^>]*/>')


def _decoded(ctype: str, cte: str, body: bytes, eol: bytes = b"\n") -> bytes:
    raw = f"Content-Type: {ctype}\nContent-Transfer-Encoding: {cte}\n\n".encode()
    payload = email.message_from_bytes(raw.replace(b"\n", eol) + body).get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def _b64(data: bytes, eol: bytes) -> bytes:
    enc = base64.b64encode(data)
    return eol.join(enc[i : i + 76] for i in range(0, len(enc), 76)) + eol


ROUND_TRIPS = [
    # (charset, transfer encoding, line ending, document, codec of Link.raw and of the text)
    pytest.param("utf-8", "8bit", b"\n", WEST, "utf-8", id="utf8-8bit"),
    pytest.param("utf-8", "quoted-printable", b"\r\n", JA, "utf-8", id="utf8-qp-crlf"),
    pytest.param("utf-8", "base64", b"\r\n", WEST, "utf-8", id="utf8-base64-crlf"),
    pytest.param("iso-8859-15", "quoted-printable", b"\n", WEST, "iso-8859-15", id="latin9-qp"),
    pytest.param("windows-1252", "8bit", b"\r\n", WEST, "cp1252", id="cp1252-8bit"),
    pytest.param("utf-16", "base64", b"\r\n", JA, "utf-16-le", id="utf16-bom-le"),
    pytest.param("utf-16be", "base64", b"\n", WEST, "utf-16-be", id="utf16be"),
    pytest.param("iso-2022-jp", "7bit", b"\r\n", JA, "iso-2022-jp", id="iso2022jp-7bit"),
    pytest.param("iso-2022-jp", "base64", b"\n", JA, "iso-2022-jp", id="iso2022jp-base64"),
    pytest.param("shift_jis", "quoted-printable", b"\n", JA, "shift_jis", id="shift-jis-qp"),
    pytest.param("euc-jp", "8bit", b"\n", JA, "euc-jp", id="euc-jp-8bit"),
]


@pytest.mark.parametrize(("cs", "cte", "eol", "doc", "codec"), ROUND_TRIPS)
def test_charset_and_transfer_round_trip(
    cs: str, cte: str, eol: bytes, doc: str, codec: str
) -> None:
    doc = doc.replace("\n", eol.decode())
    bom = b"\xff\xfe" if cs == "utf-16" else b""
    text = bom + doc.encode(codec)
    body = {"8bit": text, "7bit": text, "base64": _b64(text, eol)}.get(cte)
    if body is None:
        body = binascii.b2a_qp(text, istext=True)
    ctype = f'text/html; charset="{cs}"'

    result = rewrite(body, ctype, cte, pixel=True)

    url = WEST_URL if doc.startswith(WEST[:10]) else JA_URL
    assert [link.url for link in result.links] == [url]
    assert result.links[0].raw.decode(codec) == url.replace("&", "&amp;")
    assert result.body is not None and result.top_cte is None and result.pixel_added
    assert_single_eol(result.body, eol)
    decoded = _decoded(ctype, cte, result.body, eol)
    assert decoded.startswith(bom)  # the part's own byte order mark is kept
    got = PIXEL_TEXT.sub("", decoded[len(bom) :].decode(codec))
    links = result.links
    assert TRACKED_TEXT.sub(lambda m: links[int(m[1]) - 1].raw.decode(codec), got) == doc


def test_utf16_without_bom_is_big_endian() -> None:
    body = _b64(DOC.encode("utf-16-be"), b"\n")
    result = rewrite(body, "text/html; charset=utf-16", "base64")
    assert [link.url for link in result.links] == [URL]
    assert result.links[0].raw == URL.replace("&", "&amp;").encode("utf-16-be")


def test_latin1_url_bytes_are_decoded_with_the_part_charset() -> None:
    body = b'<a href="http://a.example/\xe9t\xe9">x</a>'
    result = rewrite(body, "text/html; charset=iso-8859-1", "8bit")
    assert [link.url for link in result.links] == ["http://a.example/\u00e9t\u00e9"]
    assert result.links[0].raw == b"http://a.example/\xe9t\xe9"
    # Bytes that are not text in the declared charset give no trustworthy target.
    assert rewrite(body, "text/html; charset=us-ascii", "8bit").body is None
    assert rewrite(body, "text/html; charset=utf-8", "8bit").body is None


def test_qp_soft_breaks_and_escapes_inside_url() -> None:
    body = (
        b"<p>first line stays as it was=\n, even soft broken</p>\n"
        b'<a href=3D"http://a.example/very/long/path/that/the/encoder/had/to/br=\n'
        b'eak?a=3D1&amp;b=3D2">x</a> tail=20\n'
        b"last line =C3=A9\n"
    )
    result = rewrite(body, "text/html; charset=utf-8", "quoted-printable")
    assert [link.url for link in result.links] == [
        "http://a.example/very/long/path/that/the/encoder/had/to/break?a=1&b=2"
    ]
    assert result.body is not None
    # Lines without a link keep their exact original encoding.
    assert result.body.startswith(b"<p>first line stays as it was=\n, even soft broken</p>\n")
    assert result.body.endswith(b"last line =C3=A9\n")
    assert binascii.a2b_qp(result.body) == binascii.a2b_qp(body).replace(
        b"http://a.example/very/long/path/that/the/encoder/had/to/break?a=1&amp;b=2",
        b"https://t.example/c/1",
    )


@pytest.mark.parametrize("eol", [pytest.param(b"\n", id="lf"), pytest.param(b"\r\n", id="crlf")])
def test_qp_with_encoded_line_breaks_falls_back_to_full_encoding(eol: bytes) -> None:
    body = b'a=0Ab=0D=0A<a href=3D"http://a.example/">x</a>' + eol + b"end" + eol
    result = rewrite(body, "text/html", "quoted-printable")
    assert result.body is not None
    assert_single_eol(result.body, eol)
    assert binascii.a2b_qp(result.body) == binascii.a2b_qp(body).replace(
        b"http://a.example/", b"https://t.example/c/1"
    )


LONG = [
    # (transfer encoding in, expected transfer encoding out)
    pytest.param("7bit", "quoted-printable", id="7bit"),
    pytest.param("8bit", "quoted-printable", id="8bit"),
    pytest.param(None, "quoted-printable", id="absent-means-7bit"),
    pytest.param("binary", None, id="binary-has-no-line-limit"),
]


@pytest.mark.parametrize(("cte", "expected_cte"), LONG)
def test_long_line_promotes_top_level_part_to_qp(cte: str | None, expected_cte: str | None) -> None:
    line = b'<a href="http://a.example/">x</a>' + b"y" * 962
    body = b"<html>\r\n" + line + b"\r\n</html>\r\n"
    assert len(line) <= 998 < len(line) + len("https://t.example/c/1") - len("http://a.example/")
    result = rewrite(body, "text/html; charset=utf-8", cte)
    assert result.top_cte == expected_cte
    assert result.body is not None
    assert_single_eol(result.body, b"\r\n")
    expected = body.replace(b"http://a.example/", b"https://t.example/c/1")
    if expected_cte is None:
        assert result.body == expected
    else:
        assert max(len(x) for x in result.body.split(b"\r\n")) <= 76
        assert binascii.a2b_qp(result.body) == expected


def test_max_line_option_and_untouched_long_lines() -> None:
    body = b"z" * 2000 + b'\n<a href="http://a.example/">x</a>\n'
    # The over-long line was there before and is not ours: no promotion.
    assert rewrite(body, "text/html", "8bit").top_cte is None
    assert rewrite(body, "text/html", "8bit", max_line=35).top_cte == "quoted-printable"


@pytest.mark.parametrize(
    ("cte_header", "new_headers"),
    [
        pytest.param(
            b"Content-Transfer-Encoding: 7bit\n",
            b"Content-Transfer-Encoding: quoted-printable\nX-After: 1\n",
            id="replaced",
        ),
        pytest.param(
            b"content-transfer-encoding:\n 8bit\n",
            b"content-transfer-encoding: quoted-printable\nX-After: 1\n",
            id="folded-replaced",
        ),
        pytest.param(
            b"", b"X-After: 1\nContent-Transfer-Encoding: quoted-printable\n", id="inserted"
        ),
    ],
)
def test_long_line_promotes_nested_part_header(cte_header: bytes, new_headers: bytes) -> None:
    html = b'<a href="http://a.example/">x</a>' + b"y" * 962 + b"\n"
    head = b"--b\nContent-Type: text/plain\n\nplain\n--b\nContent-Type: text/html\n"
    body = head + cte_header + b"X-After: 1\n\n" + html + b"--b--\n"
    result = rewrite(body, "multipart/alternative; boundary=b")
    assert result.body is not None and result.top_cte is None
    assert result.body.startswith(head + new_headers + b"\n")
    assert result.body.endswith(b"\n--b--\n")
    part = message_parts(
        email.message_from_bytes(
            b"Content-Type: multipart/alternative; boundary=b\n\n" + result.body
        )
    )[1]
    assert part["Content-Transfer-Encoding"] == "quoted-printable" and part["X-After"] == "1"
    # The line break before the next delimiter belongs to the delimiter (RFC 2046 §5.1.1).
    expected = html[:-1].replace(b"http://a.example/", b"https://t.example/c/1")
    assert part.get_payload(decode=True) == expected


QP_DATA = [
    pytest.param(b"", id="empty"),
    pytest.param(b"x" * 200, id="no-newline"),
    pytest.param(b"a \t\nb\t\n \n", id="trailing-whitespace"),
    pytest.param(b".\n.x\nFrom here\n", id="dots-and-from"),
    pytest.param(b"bare\ncr\rlf\r\n\r\rmixed\n", id="stray-cr-lf"),
    pytest.param(bytes(range(256)) * 3, id="every-byte"),
    pytest.param(("\u00e9" * 100 + "=" * 50 + "\n").encode() * 3, id="escapes-near-wrap"),
]


@pytest.mark.parametrize("data", QP_DATA)
@pytest.mark.parametrize("eol", [pytest.param(b"\n", id="lf"), pytest.param(b"\r\n", id="crlf")])
def test_qp_encode_round_trips_with_one_line_ending(data: bytes, eol: bytes) -> None:
    if eol == b"\r\n":
        data = data.replace(b"\n", b"\r\n")
    out = transfer.qp_encode(data, eol)
    assert binascii.a2b_qp(out) == data
    assert_single_eol(out, eol)
    assert all(len(line) <= 76 for line in out.split(eol))


SPLICES = [
    # (raw, text to replace, replacement, expected raw or None: no splice)
    pytest.param(
        b"one=\r\n two\r\nthree =3D four\r\nfive\r\n",
        b"four",
        b"4",
        b"one=\r\n two\r\nthree =3D 4\r\nfive\r\n",
        id="hard-line",
    ),
    pytest.param(
        b"aaaa=\r\nbb=3Dcc=\r\ndd\r\n",
        b"cc",
        b"C C",
        b"aaaa=\r\nbb=3DC C=\r\ndd\r\n",
        id="only-the-physical-line",
    ),
    pytest.param(b"aa=\r\nbb=\r\ncc\r\n", b"abbc", b"X", b"aXc\r\n", id="across-soft-breaks"),
    pytest.param(
        b"x" * 74 + b"=\r\nyy\r\n",
        b"x" * 74,
        b"z" * 76,
        b"z" * 75 + b"=\r\nz=\r\nyy\r\n",
        id="room-for-old-soft-break",
    ),
    pytest.param(b"x=0Ay=\r\nz\r\n", b"yz", b"Y", b"x=0AY\r\n", id="encoded-line-break-before"),
    pytest.param(b"a=ZZb\r\n", b"b", b"B", None, id="not-an-escape"),
]


@pytest.mark.parametrize(("raw", "old", "new", "expected"), SPLICES)
def test_qp_splice(raw: bytes, old: bytes, new: bytes, expected: bytes | None) -> None:
    decoded = binascii.a2b_qp(raw)
    at = decoded.index(old)
    out = transfer.qp_splice(raw, decoded, [(at, at + len(old), new)], b"\r\n")
    assert out == expected
    if out is not None:
        assert binascii.a2b_qp(out) == decoded.replace(old, new)
        assert max(len(line) for line in out.split(b"\r\n")) <= 76


def test_base64_output_lines_and_tail() -> None:
    doc = DOC.encode() * 20
    body = _b64(doc, b"\r\n") + b"\r\n"  # an extra blank line before the boundary: kept
    result = rewrite(body, "text/html; charset=utf-8", "base64")
    assert len(result.links) == 20 and result.body is not None
    assert result.body.endswith(b"\r\n\r\n") and not result.body.endswith(b"\r\n\r\n\r\n")
    lines = result.body.rstrip(b"\r\n").split(b"\r\n")
    assert {len(line) for line in lines[:-1]} == {76} and 0 < len(lines[-1]) <= 76
    assert_single_eol(result.body, b"\r\n")
    assert map_back(base64.b64decode(result.body), result.links) == doc


CHARSETS = [
    # (label, codec or None when unusable, whether the whole part must be decoded)
    pytest.param(None, "ascii", False, id="absent"),
    pytest.param("US-ASCII", "ascii", False, id="us-ascii"),
    pytest.param('"utf-8"', "utf-8", False, id="utf-8-quoted"),
    pytest.param("ISO-8859-1", "iso8859-1", False, id="latin1"),
    pytest.param("windows-1251", "cp1251", False, id="cp1251"),
    pytest.param("koi8-r", "koi8-r", False, id="koi8-r"),
    pytest.param("euc-kr", "euc_kr", False, id="euc-kr"),
    pytest.param("utf-16", "utf-16", True, id="utf-16"),
    pytest.param("UTF-32LE", "utf-32-le", True, id="utf-32le"),
    pytest.param("utf-7", "utf-7", True, id="utf-7"),
    pytest.param("iso-2022-jp", "iso2022_jp", True, id="iso-2022-jp"),
    pytest.param("shift_jis", "shift_jis", True, id="shift_jis"),
    pytest.param("gb18030", "gb18030", True, id="gb18030"),
    pytest.param("x-unknown", None, False, id="unknown"),
    pytest.param("base64", None, False, id="not-a-text-codec"),
    pytest.param("cp037", None, False, id="ebcdic"),
]


@pytest.mark.parametrize(("label", "codec", "decode_part"), CHARSETS)
def test_charset_lookup(label: str | None, codec: str | None, decode_part: bool) -> None:
    found = charset.lookup(label)
    if codec is None:
        assert found is None
    else:
        assert found is not None
        assert (found.codec, found.decode_part) == (codec, decode_part)
