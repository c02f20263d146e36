"""Differential fuzzing: hypothesis drives both engines with mutated MIME, HTML, charsets,
transfer encodings, long lines and hostile nesting; any difference fails.

A bounded run is part of the suite (TRACKMILTER_FUZZ_EXAMPLES scales it; the longer
campaign is `tests/unit/rewrite/fuzz_campaign.py`).
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.rewrite.native_support import NATIVE, both, declining_linker
from tests.unit.rewrite.rewrite_support import linker

from trackmilter.rewrite import RewriteOptions, scan, transfer

pytestmark = pytest.mark.skipif(NATIVE is None, reason="native engine not built")

EXAMPLES = int(os.environ.get("TRACKMILTER_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("TRACKMILTER_FUZZ_RANDOM") != "1",
    suppress_health_check=list(HealthCheck),
)

# Pieces that matter to the href scanner, the URL checks and the QP splice.
HTML_TOKENS = [
    '<a href="http://a.example/x?b=1&amp;c=2">', "<a href=http://b.example/>", "</a>",
    "<A HREF='HTTPS://c.example/'>", '<area href="https://d.example/map">', "<a\thref =\n'",
    '<a href="', "<a href=", "<a href>", "<a data-notrack href=http://e.example/>",
    '<a DATA-NOTRACK="1" href="http://f.example/">', "<a href=http://g.example/ data-notrack>",
    '<a title="<a href=http://in.example/>" href="http://out.example/">', "<a/href=http://s/>",
    "<!--", "-->", "<!-->", "<!--->", "<!--[if mso]>", "<![endif]-->", "<!--[IF", "<script>",
    "</script>", "<SCRIPT src=x>", "</ScRiPt", "<style>", "</style>", "</STYLE >", "<body>",
    "</body>", "</BODY>", "<img alt='<a href=\"http://x/\">'>", "<b<a href=http://h/>",
    "<", ">", '"', "'", "=", "/", " ", "\t", "\n", "\r\n", "\r", "\f", "&amp;", "&lt;",
    "&copy", "&copy=", "&#x41;", "&#0;", "&notit;", "&AMP;", "http://", "https://",
    "hTTpſ://long-s.example/", " http://ws.example/ ", "\x00", "\x1f", "é", "€", "中文",
    "=3D", "=20", "=\r\n", "=\n", "=", "==", "=ZZ", "x" * 70, "y" * 300,
    "https://i.example/" + "p" * 90, "<a href='http://j.example/\n path'>",
    "<a href=http://k.example/?q=&quot;x&quot;>", "<area href=\"http://app.example.com/x\">",
    "<a href=\"http://sub.example.com/\">", "<a href='http://github.com.evil/'>",
    # Whole constructs, so that a few draws reach the rarer paths.
    '<a href="hTTpſ://long-s.example/">', "<a href=HTTPſ://x/>", "<a href='httpſ:/x'>",
    '<!--[if mso]><a href="http://mso.example/">x</a><![endif]-->', "<!--[iF gte mso 9]>",
    "<!--[i", "<!--[if", '<a\fhref="http://ff.example/">', "<a\x0chref\x0c=\x0chttp://f2/>",
    '<a href\f=\f"http://f3.example/">', "<area\nhref=http://nl.example/>", "<a\rhref=x>",
    "<script>var a='<a href=\"http://js.example/\">';</script>", "<style>a{}</style x>",
    '<a href="http://q.example/" data-notrack>', "<a data-notrack=x href=http://r.example/>",
    '<a title=">" href="http://t.example/">', "<a title='x' href='http://u.example/'>",
    '<a href="&#104;ttp://ent.example/">', '<a href=" \x01http://ctl.example/\t ">',
    '<a href="https://app.example.com/already">', "<a href=https://sub.b.example/>",
    "<a href='http://[::1]:80/'>", "<a href=http://user@b.example:8/>", "<a href>",
    "<a href=>", "<a href= >", "<a href='>", "<a =x href=http://eq.example/>",
]
TEXT_TOKENS = [
    "see http://t1.example/a.", "(http://t2.example/b)", "<http://t3.example/c>",
    "<URL:https://t4.example/d>", "https://t5.example/e_(x)", "xhttp://no/", " https://",
    "HTTPS://T6.EXAMPLE/?A=1&B=2,", "\n", "\r\n", " ", "'https://t7.example/'",
]
CHARSETS = [None, "utf-8", "us-ascii", "iso-8859-1", "windows-1252", "utf-16", "utf-16le",
            "shift_jis", "euc-jp", "koi8-r", "x-unknown", "utf-7", '"UTF-8"', "hz-gb-2312"]
CTES = [None, "7bit", "8bit", "binary", "quoted-printable", "base64", "x-uuencode", "BASE64 "]

html_text = st.lists(
    st.one_of(st.sampled_from(HTML_TOKENS), st.text(max_size=12)), max_size=40
).map("".join)
text_text = st.lists(
    st.one_of(st.sampled_from(TEXT_TOKENS), st.text(max_size=12)), max_size=25
).map("".join)


@st.composite
def leaf(draw: Any, eol: bytes) -> tuple[bytes, bytes]:
    """(header lines, encoded body) of one leaf part."""
    kind = draw(st.sampled_from(["html", "html", "plain", "other"]))
    content = draw(html_text if kind != "plain" else text_text)
    charset = draw(st.sampled_from(CHARSETS))
    try:
        data = content.encode((charset or "ascii").strip('"'), "replace")
    except LookupError:
        data = content.encode("utf-8")
    if draw(st.booleans()):
        data = data.replace(b"\r\n", b"\n").replace(b"\n", eol)
    cte = draw(st.sampled_from(CTES))
    name = (cte or "").strip().lower()
    if name == "quoted-printable":
        body = binascii.b2a_qp(data, istext=draw(st.booleans()))
        if eol == b"\r\n":
            body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    elif name == "base64":
        body = base64.encodebytes(data).replace(b"\n", eol)
    else:
        body = data
    ctype = {"html": "text/html", "plain": "text/plain", "other": "application/octet-stream"}[kind]
    lines = [b"Content-Type: " + ctype.encode()]
    if charset is not None:
        lines[0] += b"; charset=" + charset.encode()
    if cte is not None:
        lines.append(b"Content-Transfer-Encoding: " + cte.encode())
    if draw(st.integers(0, 9)) == 0:
        lines.append(b"Content-Disposition: attachment")
    return eol.join(lines) + eol, body


@st.composite
def message(draw: Any) -> tuple[str | None, str | None, bytes]:
    """(top Content-Type, top CTE, body): a leaf, a multipart tree or a deep nest."""
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    shape = draw(st.sampled_from(["leaf", "tree", "tree", "nest"]))
    if shape == "leaf":
        head, body = draw(leaf(eol))
        fields = dict(
            line.split(b": ", 1) for line in head.split(eol) if b": " in line
        )
        ctype = fields.get(b"Content-Type")
        cte = fields.get(b"Content-Transfer-Encoding")
        return (
            None if ctype is None else ctype.decode(),
            None if cte is None else cte.decode(),
            body,
        )
    depth = draw(st.integers(1, 3)) if shape == "tree" else draw(st.integers(28, 40))
    subtype = draw(st.sampled_from(["mixed", "alternative", "related", "signed", "digest"]))
    # Built from the inside out (no recursion on depth here either).
    inner_head, inner = draw(leaf(eol))
    for level in range(depth):
        boundary = f"b{level}=_x".encode()
        parts = [inner_head + eol + inner]
        for _ in range(draw(st.integers(0, 2))):
            h, b = draw(leaf(eol))
            parts.append(h + eol + b)
        if draw(st.booleans()):
            parts.reverse()
        body = b"preamble" + eol
        for part in parts:
            body += b"--" + boundary + eol + part + eol
        if draw(st.integers(0, 4)):
            body += b"--" + boundary + b"--" + eol + b"epilogue" + eol
        sub = subtype if level == depth - 1 else draw(st.sampled_from(["mixed", "alternative"]))
        inner_head = b'Content-Type: multipart/' + sub.encode() + b'; boundary="' + boundary + b'"' + eol
        inner = body
    ctype = inner_head.split(b": ", 1)[1].strip().decode()
    return ctype, None, inner


mutations = st.lists(
    st.tuples(st.integers(0, 1 << 16), st.integers(0, 4), st.binary(max_size=4)), max_size=4
)


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for pos, cut, new in edits:
        at = pos % (len(data) + 1)
        data = data[:at] + new + data[at + cut :]
    return data


OPTIONS = st.builds(
    RewriteOptions,
    html_links=st.booleans(),
    text_links=st.booleans(),
    tracker_prefix=st.sampled_from(["", "https://app.example.com/", "http://"]),
    excluded_domains=st.sampled_from([frozenset(), frozenset({"example.com", "b.example"})]),
    optout_attribute=st.sampled_from(["data-notrack", "href", "", "TITLE", "a b"]),
    max_line=st.sampled_from([998, 76, 20]),
)


@FUZZ
@given(message(), mutations, OPTIONS, st.booleans(), st.booleans(), st.booleans())
def test_messages_identical(
    msg: tuple[str | None, str | None, bytes],
    edits: list[tuple[int, int, bytes]],
    options: RewriteOptions,
    pixel: bool,
    honey: bool,
    declining: bool,
) -> None:
    ctype, cte, body = msg
    both(
        ctype,
        cte,
        _mutate(body, edits),
        declining_linker if declining else linker,
        "https://t.example/o/P" if pixel else None,
        options,
        "https://t.example/c/H" if honey else None,
    )


@FUZZ
@given(html_text, mutations, st.sampled_from([b"data-notrack", b"", b"href", b"title"]))
def test_find_hrefs_identical(html: str, edits: list[tuple[int, int, bytes]], optout: bytes) -> None:
    assert NATIVE is not None
    data = _mutate(html.encode("utf-8", "surrogatepass"), edits)
    assert NATIVE.find_hrefs(data, optout) == scan.find_hrefs(data, optout)


@FUZZ
@given(
    st.lists(st.one_of(st.sampled_from(HTML_TOKENS), st.text(max_size=20)), max_size=60).map(
        "".join
    ),
    st.sampled_from([b"\n", b"\r\n"]),
    st.booleans(),
    mutations,
    st.lists(
        st.tuples(
            st.one_of(st.integers(0, 1 << 16), st.sampled_from([0, 1, 478, 479, 480, 481, 482])),
            st.integers(0, 30),
            st.binary(max_size=120),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_qp_splice_identical(
    text: str,
    eol: bytes,
    istext: bool,
    raw_edits: list[tuple[int, int, bytes]],
    splice: list[tuple[int, int, bytes]],
) -> None:
    """Hostile quoted-printable (mutated after encoding: odd escapes, stray '=', mixed
    breaks) with edits anywhere, through both splices."""
    assert NATIVE is not None
    data = text.encode("utf-8", "surrogatepass").replace(b"\r\n", b"\n").replace(b"\n", eol)
    raw = binascii.b2a_qp(data, istext=istext)
    if eol == b"\r\n":
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    raw = _mutate(raw, raw_edits)
    decoded = binascii.a2b_qp(raw)
    n = len(decoded)
    edits: list[tuple[int, int, bytes]] = []
    pos = 0
    for at, length, new in splice:
        # Small values of `at` put an edit exactly that far after the previous one (the
        # splice clusters edits closer than 480 decoded bytes).
        s = pos + (at if at < 1000 else at % (n - pos + 1)) if n >= pos else pos
        e = min(n, s + length)
        if s > n:
            break
        edits.append((s, e, new))
        pos = e
    if not edits:
        return  # the engine never splices without an edit
    edits.sort(key=lambda ed: (ed[0], ed[1]))
    assert NATIVE.qp_splice(raw, decoded, edits, eol) == transfer.qp_splice(
        raw, decoded, edits, eol
    )


QP_PIECES = [b"=", b"\r", b"\n", b"\r\n", b" ", b"\t", b".", b"\x00", b"a", b"F", b"3", b"f",
             b"=\n", b"=\r\n", b"=3D", b"=4", b"==", b"\x7f", b"\xff", b"_", b"x" * 70, b"=20",
             b"=\r", b"g", b"\xc3\xa9"]
qp_bytes = st.one_of(
    st.lists(st.sampled_from(QP_PIECES), max_size=60).map(b"".join), st.binary(max_size=300)
)


@FUZZ
@given(qp_bytes, st.booleans())
def test_quoted_printable_codecs_identical(data: bytes, istext: bool) -> None:
    """The native engine's own quoted-printable decoder and encoder against binascii's."""
    assert NATIVE is not None
    assert NATIVE.a2b_qp(data) == binascii.a2b_qp(data)
    assert NATIVE.b2a_qp(data, istext) == binascii.b2a_qp(data, istext=istext)
    for eol in (b"\n", b"\r\n"):
        assert NATIVE.qp_encode(data, eol) == transfer.qp_encode(data, eol)
