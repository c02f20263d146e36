"""The native engine's signing (HMAC-SHA256 from precomputed states, base64url, the whole
click token for canonical URLs) gives exactly the Python signer's tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.rewrite.native_support import NATIVE

from trackmilter import tokens
from trackmilter.model import new_tracking_id
from trackmilter.tokens import MAX_TOKEN_CHARS, Signer

pytestmark = pytest.mark.skipif(
    NATIVE is None or tokens._NATIVE is None, reason="native engine not built or not in use"
)
EXAMPLES = int(os.environ.get("TRACKMILTER_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("TRACKMILTER_FUZZ_RANDOM") != "1")
KEYS = [b"0123456789abcdef", b"k" * 32, b"x" * 64, b"long key " * 20]


def _pair(key: bytes) -> tuple[tokens.MessageSigner, tokens.MessageSigner, Signer]:
    """(native, Python) signers for the same message and key, and the verifier."""
    signer = Signer([key])
    tid = new_tracking_id()
    fast = signer.for_message(tid)
    slow = Signer([key]).for_message(tid)
    slow._key.__dict__["_native_states"] = None  # the cached property, forced to "none"
    assert fast._key._native_states is not None
    return fast, slow, signer


def _outcome(fn: object, *args: object) -> object:
    try:
        return fn(*args)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - compared
        return (type(exc), str(exc))


@pytest.mark.parametrize("key", KEYS, ids=lambda k: str(len(k)))
def test_hmac_and_base64url(key: bytes) -> None:
    assert NATIVE is not None
    states = NATIVE.hmac_states(key)
    for n in list(range(0, 140)) + [1000, 4096]:
        body = bytes(range(256))[: n % 256] * (n // 256 + 1)
        body = body[:n]
        mac = hmac.new(key, body, hashlib.sha256).digest()[:10]
        want = base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode()
        assert NATIVE.sign(states, body, 10) == want


PIECES = ["http://", "https://", "HTTP://", "a.example", "x-y.example", "1.2.3.4", ":80",
          ":123456", ":", "/", "/p", "?q=1&r=2", "#f", " ", "\t", "é", "\\", "[::1]", "@",
          "%41", "'", '"', "<", "~", "=", "a" * 50, "/" + "b" * 3000]
urls = st.one_of(st.lists(st.sampled_from(PIECES), max_size=8).map("".join), st.text(max_size=40))


@FUZZ
@given(st.sampled_from(KEYS), urls, st.sampled_from([-1, 0, 1, 5, 127, 128, 300, 1 << 20]))
def test_click_tokens_identical(key: bytes, url: str, index: int) -> None:
    fast, slow, signer = _pair(key)
    got, want = _outcome(fast.click, index, url), _outcome(slow.click, index, url)
    assert got == want, (url, index)
    if isinstance(want, str):
        data = signer.verify(want)
        assert data.index == index


@pytest.mark.parametrize("https", [False, True])
def test_click_tokens_at_the_length_limit(https: bool) -> None:
    """Tails around the longest one a token can hold: the same token or the same refusal."""
    fast, slow, signer = _pair(KEYS[1])
    base = "https://a.example/" if https else "http://a.example/"
    for extra in range(3000, 3100):
        url = base + "p" * extra
        got, want = _outcome(fast.click, 7, url), _outcome(slow.click, 7, url)
        assert got == want, extra
        if isinstance(want, str):
            assert len(want) <= MAX_TOKEN_CHARS
            assert signer.verify(want).url == url


def test_open_tokens_identical() -> None:
    fast, slow, _ = _pair(KEYS[0])
    assert fast.open() == slow.open()
