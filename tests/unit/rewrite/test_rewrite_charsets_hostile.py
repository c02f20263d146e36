"""Charsets a part may declare that we cannot read: the part is left alone byte for byte,
its reason recorded, the other parts rewritten, and nothing raised (RFC 2046 §4.1.2: the
charset parameter names the text's character set; RFC 2045 §5.1 its syntax; RFC 2231 §3-4
its continued and percent-encoded forms)."""

from __future__ import annotations

import codecs
from collections.abc import Iterator

import pytest
from tests.unit.rewrite.rewrite_support import rewrite

from trackmilter.rewrite import SkipReason, charset
from trackmilter.rewrite.mime import parameter, parse_content_type

HTML = b'<html><body><a href="https://example.com/x">x</a></body></html>\n'
REWRITTEN = b'<html><body><a href="https://t.example/c/1">x</a></body></html>\n'

HOSTILE_LABELS = [
    pytest.param("\xff", id="latin1-ff"),  # a part header, read as Latin-1
    pytest.param("\udcff", id="surrogate-ff"),  # the top-level header, as pymilter hands it
    pytest.param("utf-8\udcc2\udca0", id="surrogates-after-utf8"),
    pytest.param("utf-8\u00a0", id="nbsp-after-utf8"),
    pytest.param("\u212aoi8-r", id="kelvin-sign-lowers-to-k"),
    pytest.param("utf-99", id="utf-99"),
    pytest.param("", id="empty"),
    pytest.param('""', id="empty-quoted"),
    pytest.param("   ", id="spaces"),
    pytest.param("x" * 65, id="65-chars"),
    pytest.param("utf-8" * 2000, id="10k-chars"),
    pytest.param("utf-8\x00", id="nul-after"),
    pytest.param("a\x00b", id="nul-inside"),
    pytest.param("x-unknown", id="x-unknown"),
    pytest.param("utf 8", id="inner-space"),
    pytest.param("base64", id="bytes-codec"),
    pytest.param("rot13", id="str-codec"),
    pytest.param("idna", id="idna"),
    pytest.param("undefined", id="undefined-codec"),
    pytest.param("cp037", id="ebcdic"),
]


@pytest.mark.parametrize("label", HOSTILE_LABELS)
def test_lookup_refuses_without_raising(label: str) -> None:
    assert charset.lookup(label) is None


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        pytest.param(' "UTF-8" ', "utf-8", id="quoted-spaced"),
        pytest.param("ISO_8859-1:1987", "iso8859-1", id="registered-alias-with-colon"),
        pytest.param("utf-8\t", "utf-8", id="trailing-tab"),
        pytest.param("x" * 40 + "", None, id="40-chars-unknown"),
    ],
)
def test_lookup_still_takes_real_labels(label: str, codec: str | None) -> None:
    found = charset.lookup(label)
    assert (found.codec if found else None) == codec


@pytest.fixture
def raising_codec() -> Iterator[str]:
    """A codec search function (codecs.register) that raises something odd for one name."""
    name = "trackmilter-test-raises"

    def search(label: str) -> codecs.CodecInfo | None:
        if label.replace("_", "-") == name:
            raise RuntimeError("a broken codec package")
        return None

    codecs.register(search)
    try:
        yield name
    finally:
        codecs.unregister(search)


def test_a_lookup_that_raises_anything_is_unknown(raising_codec: str) -> None:
    assert charset.lookup(raising_codec) is None
    result = rewrite(HTML, f"text/html; charset={raising_codec}")
    assert result.body is None and result.skipped == ((1, SkipReason.UNKNOWN_CHARSET),)


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param('text/html; charset="\udcff"', id="surrogate"),
        pytest.param("text/html; charset=\x00", id="nul"),
        pytest.param("text/html; charset=utf-99", id="utf-99"),
        pytest.param('text/html; charset=""', id="empty-quoted"),
        pytest.param("text/html; charset=", id="empty"),
        pytest.param("text/html; charset=" + "a" * 100_000, id="100k"),
        pytest.param('text/html; charset="utf-8\\"; x=\\""', id="escaped-quotes"),
        pytest.param("text/html; charset=utf-8 (comment)", id="comment"),
        pytest.param("text/html; charset*=utf-8''%FF", id="rfc2231-ff"),
        pytest.param("text/html; charset*=''%00", id="rfc2231-nul"),
        pytest.param("text/html; charset*0=x-; charset*1=unknown", id="rfc2231-continued"),
        pytest.param("text/html; charset*0*=''%75tf; charset*1*=-99", id="rfc2231-both"),
    ],
)
def test_top_level_part_left_alone(content_type: str) -> None:
    for cte in ("7bit", "quoted-printable", "base64"):
        result = rewrite(HTML, content_type, cte, pixel=True)
        assert result.body is None and result.links == ()
        assert result.skipped == ((1, SkipReason.UNKNOWN_CHARSET),)


def mixed(*parts: bytes) -> bytes:
    return b"".join(b"--b\n" + p for p in parts) + b"--b--\n"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        pytest.param(b'charset="\xff"', SkipReason.UNKNOWN_CHARSET, id="byte-ff"),
        pytest.param(b"charset=utf-99", SkipReason.UNKNOWN_CHARSET, id="utf-99"),
        pytest.param(b'charset=""', SkipReason.UNKNOWN_CHARSET, id="empty"),
        pytest.param(b"charset=" + b"x" * 5000, SkipReason.UNKNOWN_CHARSET, id="long"),
        pytest.param(b"charset=a\x00b", SkipReason.UNKNOWN_CHARSET, id="nul"),
        pytest.param(b"charset=x-unknown", SkipReason.UNKNOWN_CHARSET, id="x-unknown"),
        pytest.param(b"charset*=''%FF", SkipReason.UNKNOWN_CHARSET, id="rfc2231-ff"),
    ],
)
def test_one_part_left_alone_the_next_rewritten(header: bytes, reason: str) -> None:
    bad = b"Content-Type: text/html; " + header + b"\n\n" + HTML
    good = b"Content-Type: text/html; charset=utf-8\n\n" + HTML
    body = mixed(bad, good)
    result = rewrite(body, "multipart/mixed; boundary=b", pixel=True)
    assert result.body is not None
    assert result.body.startswith(b"--b\n" + bad)  # byte for byte
    assert [link.part for link in result.links] == [2]
    assert result.skipped == ((1, reason),) and result.pixel_added
    assert b'<a href="https://t.example/c/1">x</a>' in result.body


@pytest.mark.parametrize(
    ("header", "data"),
    [
        pytest.param(b"charset=utf-16be", b"\x00<\x00", id="utf-16-odd-length"),
        pytest.param(b"charset=utf-16", b"\xff\xfe\x00\xd8<\x00", id="utf-16-lone-surrogate"),
        pytest.param(b"charset=utf-32", b"\x00\x11\x00\x00", id="utf-32-out-of-range"),
        pytest.param(b"charset=shift_jis", b'<a href="https://e.example/">\x81\x7f</a>',
                     id="shift-jis-bad-trail"),
        pytest.param(b"charset=iso-2022-jp", b'\x1b$B\x7f\x7f\x1b(B<a href="https://e.x/">',
                     id="iso-2022-jp-bad"),
        pytest.param(b"charset=utf-7", b'+2AA-<a href="https://e.example/">', id="utf-7-surrogate"),
    ],
)
def test_undecodable_part_left_alone(header: bytes, data: bytes) -> None:
    bad = b"Content-Type: text/html; " + header + b"\n\n" + data + b"\n"
    good = b"Content-Type: text/html; charset=utf-8\n\n" + HTML
    result = rewrite(mixed(bad, good), "multipart/mixed; boundary=b")
    assert result.body is not None and result.body.startswith(b"--b\n" + bad)
    assert result.skipped == ((1, SkipReason.UNDECODABLE_CHARSET),)
    assert SkipReason.UNDECODABLE_CHARSET in SkipReason.CHARSET
    assert [link.part for link in result.links] == [2]


def test_broken_transfer_encoding_is_not_a_charset_reason() -> None:
    result = rewrite(b"PGEgaH\n", "text/html; charset=utf-8", "base64")
    assert result.skipped == ((1, SkipReason.UNDECODABLE),)
    assert SkipReason.UNDECODABLE not in SkipReason.CHARSET


@pytest.mark.parametrize(
    ("content_type", "label"),
    [
        pytest.param('text/html; charset="utf-16"', "utf-16", id="quoted"),
        pytest.param("text/html; charset*=''utf-16", "utf-16", id="rfc2231-extended"),
        pytest.param("text/html; charset*=us-ascii'en'utf%2D16", "utf-16", id="rfc2231-escaped"),
        pytest.param("text/html; charset*0=utf-; charset*1=16", "utf-16", id="rfc2231-continued"),
        pytest.param("text/html; charset*0*=''utf; charset*1=-16", "utf-16", id="rfc2231-mixed"),
        pytest.param("text/html; charset*=utf-16", "utf-16", id="rfc2231-without-quotes"),
        pytest.param("text/html; charset=utf-8; charset*=''utf-16", "utf-8", id="plain-wins"),
        pytest.param("text/html; charset*1=16", None, id="continuation-without-first"),
    ],
)
def test_charset_parameter_forms(content_type: str, label: str | None) -> None:
    assert parameter(parse_content_type(content_type).params, "charset") == label


def test_rfc2231_charset_is_used_to_decode_the_part() -> None:
    # Read as US-ASCII (the parameter missed), UTF-16 would show no link at all.
    data = HTML.decode().encode("utf-16-be")
    result = rewrite(data, "text/html; charset*=''UTF-16BE")
    assert result.body is not None and len(result.links) == 1
    assert result.body.decode("utf-16-be") == REWRITTEN.decode()
