"""Token length: one limit for the signer and both trackers; a URL too long is refused early."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from trackmilter.model import new_tracking_id
from trackmilter.tokens import (
    MAX_TOKEN_CHARS,
    Signer,
    UnsignableURL,
    URLTooLong,
    _shortest_canonical,
    canonical_url,
)

LUA = Path(__file__).resolve().parents[2] / "conf" / "nginx" / "trackmilter.lua"
SIGNER = Signer([b"k" * 32])
# nginx's default `large_client_header_buffers 4 8k`: a request line must fit in one
# buffer (https://nginx.org/en/docs/http/ngx_http_core_module.html#large_client_header_buffers).
NGINX_REQUEST_LINE = 8 * 1024


def test_nginx_lua_has_the_same_limit() -> None:
    found = re.findall(r"^local MAX_TOKEN = (\d+)\b", LUA.read_text(), re.M)
    assert found == [str(MAX_TOKEN_CHARS)]


def test_web_app_uses_the_signers_limit() -> None:
    import trackmilter.web.app as app

    assert app.MAX_TOKEN_CHARS is MAX_TOKEN_CHARS
    assert not hasattr(app, "MAX_TOKEN")  # no second definition to drift


def test_longest_link_fits_nginx_default_request_line() -> None:
    # The longest token under a base_url with a long path (the host is not in the line).
    path = "/" + "p" * 200 + "/c/" + "A" * MAX_TOKEN_CHARS
    line = f"GET {path} HTTP/1.1\r\n"
    assert len(line) <= NGINX_REQUEST_LINE - 3000  # and room to spare


@pytest.mark.parametrize("index", [0, 1, 127, 128, 16383, 16384, 2**21, 2**28])
def test_the_longest_url_that_fits_is_signed_and_one_more_is_refused(index: int) -> None:
    m = SIGNER.for_message(new_tracking_id())
    lo, hi = 20, 4000
    while lo < hi:  # the longest path that still signs
        mid = (lo + hi + 1) // 2
        try:
            m.click(index, "https://example.com/" + "x" * mid)
            lo = mid
        except URLTooLong:
            hi = mid - 1
    url = "https://example.com/" + "x" * lo
    token = m.click(index, url)
    assert len(token) in (MAX_TOKEN_CHARS - 1, MAX_TOKEN_CHARS)  # base64: 4 chars a 3 bytes
    assert SIGNER.verify(token).url == url
    with pytest.raises(URLTooLong):
        m.click(index, url + "x")
    assert 3000 < len(url) < 3100


def test_too_long_is_an_unsignable_url() -> None:
    # Callers that decline unsignable URLs decline these too.
    assert issubclass(URLTooLong, UnsignableURL)


def test_percent_encoding_counts() -> None:
    m = SIGNER.for_message(new_tracking_id())
    # 1,000 characters that each become 9 (%E2%82%AC): short as written, too long signed.
    with pytest.raises(URLTooLong):
        m.click(1, "https://example.com/" + "\u20ac" * 1000)
    # Tabs and newlines vanish (as in browsers): a long URL made of them still signs.
    url = "https://example.com/" + "\t\n" * 5000 + "a"
    assert SIGNER.verify(m.click(1, url)).url == "https://example.com/a"


@pytest.mark.parametrize("fill", ["a", "\u00e9", "%", "\\"])
def test_five_megabytes_refused_before_any_work(fill: str, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    import trackmilter.tokens as tokens

    def no_work(*args: object) -> str:
        raise AssertionError("a URL too long was canonicalised or encoded")

    monkeypatch.setattr(tokens, "canonical_url", no_work)
    monkeypatch.setattr(tokens.base64, "urlsafe_b64encode", no_work)
    m = SIGNER.for_message(new_tracking_id())
    url = "https://example.com/" + fill * (5 * 1024 * 1024)
    start = time.perf_counter()
    with pytest.raises(URLTooLong):
        m.click(1, url)
    assert time.perf_counter() - start < 1  # a few ms: counts, not per character work


def test_early_bound_never_exceeds_the_canonical_length() -> None:
    """The early refusal must only refuse what the exact check would: its bound is a
    lower bound of the canonical URL's length, for URLs full of what canonicalising
    removes or changes."""
    rnd = random.Random(7)
    alphabet = ["a", "/", "?", "#", "\t", "\n", "\r", " ", "\x00", "\x1f", "\\", "%", "é",
                "\u20ac", "\"", "<", "@", ":", "[", "]", "&", "="]
    checked = 0
    for _ in range(5000):
        body = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 30)))
        lead = "".join(rnd.choice(" \t\x00\n") for _ in range(rnd.randrange(0, 3)))
        url = lead + rnd.choice(["https://h.example", "HTTP://h.example", "http://h.example:8"]) \
            + body + rnd.choice(["", "?", "#", "?#", " \t"])
        try:
            canon = canonical_url(url)
        except UnsignableURL:
            continue
        checked += 1
        assert _shortest_canonical(url) <= len(canon), (url, canon)
    assert checked > 2000
