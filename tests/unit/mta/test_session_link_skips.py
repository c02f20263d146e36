"""Links and parts left alone while the message is still tracked: URLs whose token would be
too long for the trackers, parts in a charset we cannot read. The session must record why,
keep its tracking header and rewrite everything else."""

from __future__ import annotations

import binascii
import re
import time

import pytest
import structlog.testing
from tests.unit.mta.test_session_flow import (  # noqa: F401 - _no_noreply: autouse fixture
    BASE,
    SIGNER,
    ListSink,
    _no_noreply,
    make_deps,
    run,
)

from trackmilter.tokens import MAX_TOKEN_CHARS, Kind

HEAD = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: links\r\n"
    b"Message-ID: <long@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
)
TOKEN = re.compile(rb"https://t\.example/c/([A-Za-z0-9_-]+)")
SHORT_1 = "https://example.com/first?a=1"
SHORT_2 = "https://example.org/second"
LONG = "https://example.com/long?" + "q" * (3500 - len("https://example.com/long?"))
HUGE = "https://example.com/huge?" + "h" * (5 * 1024 * 1024)


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


def html_message(cte: str, *urls: str, charset: str = "us-ascii") -> tuple[bytes, bytes]:
    """(message, encoded body): one link a line, so each line stays the sender's own."""
    lines = [f'<p><a href="{u}">link {n}</a></p>' for n, u in enumerate(urls, 1)]
    text = ("<html><body>\r\n" + "\r\n".join(lines) + "\r\n</body></html>\r\n").encode()
    body = binascii.b2a_qp(text, istext=True) if cte == "quoted-printable" else text
    head = HEAD + f"Content-Type: text/html; charset={charset}\r\n".encode()
    head += f"Content-Transfer-Encoding: {cte}\r\n".encode()
    return head + b"\r\n" + body, body


def tokens_in(body: bytes) -> list[str]:
    return [m.group(1).decode() for m in TOKEN.finditer(body)]


@pytest.mark.parametrize("cte", ["8bit", "quoted-printable"])
def test_links_too_long_are_left_exactly_as_written(sink: ListSink, cte: str) -> None:
    raw, body = html_message(cte, SHORT_1, LONG, HUGE, SHORT_2)
    deps = make_deps(sink)
    start = time.perf_counter()
    with structlog.testing.capture_logs() as logs:
        out = run(deps, raw)
    assert time.perf_counter() - start < 30  # 5 MB through the real callbacks: seconds
    assert out.replaced and "X-Trackmilter-ID" in out.headers
    # Both long links: every byte as the sender wrote it (in QP: the same encoded lines).
    if cte == "quoted-printable":
        for url in (LONG, HUGE):
            start = body.index(f'<p><a href=3D"{url[:30]}'.encode())
            encoded = body[start:body.index(b"</a></p>", start)]  # its soft breaks included
            assert out.body.count(encoded) == 1
            assert binascii.a2b_qp(encoded).startswith(f'<p><a href="{url}">'.encode())
    else:
        assert out.body.count(f'<a href="{LONG}">'.encode()) == 1
        assert out.body.count(f'<a href="{HUGE}">'.encode()) == 1
    # The others are rewritten and verify, numbered 1 and 2 (a declined index is reused).
    decoded = binascii.a2b_qp(out.body) if cte == "quoted-printable" else out.body
    found = [SIGNER.verify(t) for t in tokens_in(decoded)]
    assert [(d.kind, d.index, d.url) for d in found] == [
        (Kind.CLICK, 1, SHORT_1), (Kind.CLICK, 2, SHORT_2)]
    assert all(len(t) <= MAX_TOKEN_CHARS for t in tokens_in(decoded))
    [ev] = sink.events
    assert ev.rewritten and ev.skip_reason == "" and ev.tracking_header
    assert [(lk.index, lk.url) for lk in ev.links] == [(1, SHORT_1), (2, SHORT_2)]
    get = deps.metrics.registry.get_sample_value
    assert get("trackmilter_milter_links_skipped_total", {"reason": "url_too_long"}) == 2
    assert get("trackmilter_milter_links_skipped_total", {"reason": "unsignable"}) == 0
    assert get("trackmilter_milter_links_rewritten_total") == 2
    assert get("trackmilter_errors_total", {"stage": "rewrite"}) == 0
    [line] = [e for e in logs if e["event"] == "message"]
    assert line["links_skipped"] == {"url_too_long": 2} and line["skip_reason"] == ""


def test_a_message_whose_only_link_is_too_long_says_so(sink: ListSink) -> None:
    raw, body = html_message("8bit", LONG)
    out = run(make_deps(sink, open_pixel=False), raw)
    assert not out.replaced and out.body == body
    assert "X-Trackmilter-ID" in out.headers
    [ev] = sink.events
    assert ev.skip_reason == "url_too_long" and not ev.links and ev.tracking_header


def test_with_the_pixel_the_message_is_still_rewritten(sink: ListSink) -> None:
    raw, _ = html_message("8bit", LONG)
    out = run(make_deps(sink), raw)
    assert out.replaced and f'<a href="{LONG}">'.encode() in out.body
    [ev] = sink.events
    assert ev.rewritten and ev.pixel and ev.skip_reason == "" and not ev.links


def test_an_unsignable_link_is_counted_but_keeps_no_links(sink: ListSink) -> None:
    raw, _ = html_message("8bit", "https://bücher.example/", charset="utf-8")
    deps = make_deps(sink, open_pixel=False)
    run(deps, raw)
    assert sink.events[0].skip_reason == "no_links"
    assert deps.metrics.registry.get_sample_value(
        "trackmilter_milter_links_skipped_total", {"reason": "unsignable"}) == 1


# --- charsets -------------------------------------------------------------------------

HTML = b'<html><body><a href="https://example.com/x">x</a></body></html>\r\n'


@pytest.mark.parametrize(
    "charset",
    [
        pytest.param(b'"\xff"', id="byte-ff"),
        pytest.param(b"utf-99", id="utf-99"),
        pytest.param(b'""', id="empty"),
        pytest.param(b"x-unknown", id="x-unknown"),
        pytest.param(b"a" * 3000, id="very-long"),
        pytest.param(b'"utf-8\xc2\xa0"', id="non-ascii-space"),
        pytest.param(b"base64", id="not-a-text-codec"),
    ],
)
def test_unknown_charset_keeps_header_and_record(sink: ListSink, charset: bytes) -> None:
    raw = HEAD + b"Content-Type: text/html; charset=" + charset + b"\r\n\r\n" + HTML
    deps = make_deps(sink)
    with structlog.testing.capture_logs() as logs:
        out = run(deps, raw)
    assert not out.replaced and out.body == HTML
    [ev] = sink.events
    assert out.headers["X-Trackmilter-ID"] == ev.tracking_id and ev.tracking_header
    assert ev.skip_reason == "charset" and not ev.rewritten
    get = deps.metrics.registry.get_sample_value
    assert get("trackmilter_errors_total", {"stage": "rewrite"}) == 0
    assert get("trackmilter_milter_skipped_total", {"reason": "charset"}) == 1
    assert not [e for e in logs if e["event"] == "rewrite_failed"]


def test_undecodable_part_left_alone_other_part_rewritten(sink: ListSink) -> None:
    bad = b'\x00<\x00a\x00 href="https://example.com/bad">'  # odd length: not UTF-16
    raw = (HEAD + b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/html; charset=utf-16be\r\n\r\n" + bad + b"\r\n"
           b"--b\r\nContent-Type: text/html; charset=\"\xff\"\r\n\r\n" + HTML
           + b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + HTML
           + b"--b--\r\n")
    out = run(make_deps(sink), raw)
    assert out.replaced
    assert bad + b"\r\n--b" in out.body
    assert b"charset=\"\xff\"\r\n\r\n" + HTML + b"--b" in out.body
    [token] = tokens_in(out.body)
    assert SIGNER.verify(token).url == "https://example.com/x"
    [ev] = sink.events
    assert ev.rewritten and ev.skip_reason == "" and len(ev.links) == 1


def test_charset_reason_wins_over_no_links(sink: ListSink) -> None:
    raw = (HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nno links\r\n"
           b"--b\r\nContent-Type: text/html; charset=utf-99\r\n\r\n" + HTML
           + b"--b--\r\n")
    out = run(make_deps(sink), raw)
    assert not out.replaced and "X-Trackmilter-ID" in out.headers
    assert sink.events[0].skip_reason == "charset"


def test_base_is_the_tracker() -> None:
    assert BASE == "https://t.example"  # TOKEN above matches it
