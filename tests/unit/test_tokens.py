"""Tracking tokens: sign, verify, rotate, and refuse anything tampered with."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random

import pytest

from trackmilter.model import new_tracking_id
from trackmilter.tokens import (
    MAC_BYTES,
    InvalidToken,
    KeyFileError,
    Kind,
    Signer,
    UnsignableURL,
    canonical_url,
)

KEY_A = b"a" * 32
KEY_B = b"b-second-key-0123456789"


@pytest.fixture
def tid() -> str:
    return new_tracking_id()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://example.com/", id="https-root"),
        pytest.param("http://example.com/a?b=1&c=2#frag", id="query-fragment"),
        pytest.param("https://example.com/%41%20x", id="existing-escapes-kept"),
        pytest.param("https://user@example.com:8443/p;x", id="userinfo-port"),
        pytest.param("https://example.com/" + "x" * 2000, id="long"),
    ],
)
def test_click_round_trip(tid: str, url: str) -> None:
    s = Signer([KEY_A])
    data = s.verify(s.sign_click(tid, 7, url))
    assert (data.kind, data.tracking_id, data.index, data.url) == (Kind.CLICK, tid, 7, url)


def test_open_round_trip(tid: str) -> None:
    s = Signer([KEY_A])
    data = s.verify(s.sign_open(tid))
    assert (data.kind, data.tracking_id, data.index, data.url) == (Kind.OPEN, tid, 0, "")


def test_token_is_base64url_and_compact(tid: str) -> None:
    url = "https://example.com/some/path?campaign=autumn&id=12345"
    tok = Signer([KEY_A]).sign_click(tid, 3, url)
    assert set(tok) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    # 12 header bytes + 1 varint + 10 MAC around the URL less its scheme, times 4/3.
    assert len(tok) <= (len(url) - 8 + 23) * 4 // 3 + 1


def test_rotation_old_key_still_verifies(tid: str) -> None:
    old = Signer([KEY_A])
    rotated = Signer([KEY_B, KEY_A])
    tok_old = old.sign_click(tid, 1, "https://example.com/")
    assert rotated.verify(tok_old).url == "https://example.com/"
    tok_new = rotated.sign_click(tid, 1, "https://example.com/")
    assert rotated.verify(tok_new).key_id == rotated.key_ids[0]
    with pytest.raises(InvalidToken):
        old.verify(tok_new)  # a retired key set does not know the new key


def _flip(tok: str, pos: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)))
    raw[pos] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_every_single_bit_flip_is_refused(tid: str) -> None:
    s = Signer([KEY_A])
    tok = s.sign_click(tid, 2, "https://example.com/x")
    n = len(base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)))
    for pos in range(n):
        with pytest.raises(InvalidToken):
            s.verify(_flip(tok, pos))


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("", id="empty"),
        pytest.param("!!!!", id="not-base64"),
        pytest.param("AAAA", id="too-short"),
        pytest.param("A" * 60, id="zeros"),
    ],
)
def test_garbage_refused(bad: str) -> None:
    with pytest.raises(InvalidToken):
        Signer([KEY_A]).verify(bad)


def test_truncated_and_extended_refused(tid: str) -> None:
    s = Signer([KEY_A])
    tok = s.sign_click(tid, 2, "https://example.com/x")
    for t in (tok[:-1], tok[:-4], tok + "A", tok[4:]):
        with pytest.raises(InvalidToken):
            s.verify(t)


def test_unknown_key_refused(tid: str) -> None:
    tok = Signer([KEY_B]).sign_click(tid, 1, "https://example.com/")
    with pytest.raises(InvalidToken):
        Signer([KEY_A]).verify(tok)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(" https://example.com/a b ", "https://example.com/a%20b", id="spaces"),
        pytest.param("https://exa\nmple.com/\tx", "https://example.com/x", id="tab-newline-removed"),
        pytest.param("https://example.com/\u00e4", "https://example.com/%C3%A4", id="non-ascii-path"),
        pytest.param("http://good.example\\@evil.example/", "http://good.example/@evil.example/",
                     id="backslash-is-a-slash-before-the-query"),
        pytest.param("https://x.example/p?q=a\\b", "https://x.example/p?q=a\\b",
                     id="backslash-in-query-kept"),
        pytest.param("https://user@x.example:8443/p", "https://user@x.example:8443/p",
                     id="userinfo-and-port-kept"),
        pytest.param('https://example.com/"<>', "https://example.com/%22%3C%3E", id="quotes"),
        pytest.param("HTTPS://Example.com/", "https://Example.com/", id="scheme-lowercased"),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("javascript:alert(1)", id="javascript"),
        pytest.param("//evil.example/", id="scheme-relative"),
        pytest.param("mailto:a@b", id="mailto"),
        pytest.param("https:///nohost", id="no-host"),
        pytest.param("ftp://example.com/", id="ftp"),
        # Python's IDNA 2003 codec and browsers' UTS 46 disagree (faß.de): never guess.
        pytest.param("https://b\u00fccher.de/", id="idna-host"),
        pytest.param("https://fa\u00df.de/x", id="idna-2003-vs-uts46"),
        pytest.param("http://\u00e9vil.example\\@good.example/", id="non-ascii-before-backslash"),
    ],
)
def test_unsignable(url: str) -> None:
    with pytest.raises(UnsignableURL):
        canonical_url(url)


def test_signed_url_never_carries_crlf(tid: str) -> None:
    s = Signer([KEY_A])
    data = s.verify(s.sign_click(tid, 1, "https://example.com/%0d%0aSet-Cookie:x\r\nLocation: y"))
    assert "\r" not in data.url and "\n" not in data.url and " " not in data.url


def test_key_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "secret"
    f.write_text("# comment\n\n" + KEY_B.decode() + "\n" + KEY_A.decode() + "\n")
    s = Signer.from_file(f)
    assert len(s.key_ids) == 2
    f.write_text("short\n")
    with pytest.raises(KeyFileError, match="at least 16"):
        Signer.from_file(f)
    f.write_text("# nothing\n")
    with pytest.raises(KeyFileError, match="holds no key"):
        Signer.from_file(f)
    with pytest.raises(KeyFileError, match="cannot read"):
        Signer.from_file(tmp_path / "missing")


def test_only_the_exact_encoding_verifies(tid: str) -> None:
    """A lenient base64 decoder skips foreign characters and ignores spare bits: every
    such variant of a valid token must be refused, not just decoded-byte mutations."""
    s = Signer([KEY_A])
    tok = s.sign_click(tid, 3, "https://example.com/a")
    assert s.verify(tok).url == "https://example.com/a"
    variants = {tok + c for c in ".%!~ =\t\x00"} | {tok[:5] + c + tok[5:] for c in ".%=+/"}
    variants |= {tok.replace("-", "+").replace("_", "/")} - {tok}
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    variants |= {tok[:-1] + c for c in alphabet} - {tok}
    variants |= {tok + "A", tok + "AA", tok + "==", tok[:-1]}
    accepted = []
    for v in variants:
        try:
            s.verify(v)
            accepted.append(v)
        except InvalidToken:
            pass
    assert accepted == []


@pytest.mark.parametrize("key_len", [16, 32, 63, 64, 65, 200])
def test_mac_is_hmac_sha256_for_keys_of_every_length(key_len: int) -> None:
    # tokens.py builds HMAC from two SHA-256 states (keys over a block are hashed first);
    # it must be the RFC 2104 value, which nginx's Lua verifier computes too.
    rng = random.Random(key_len)
    key = bytes(rng.randrange(33, 127) for _ in range(key_len))
    signer = Signer([key])
    for n in range(50):
        body = bytes(rng.randrange(256) for _ in range(n * 7))
        expected = hmac.new(key, body, hashlib.sha256).digest()[:MAC_BYTES]
        assert signer._keys[0].mac(body) == expected
