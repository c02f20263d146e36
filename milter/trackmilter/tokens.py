"""Sign and verify self-contained tracking tokens (truncated HMAC-SHA256, key ids, rotation).

A token carries everything the tracker needs to answer without a database: the kind
(click or open), the message's tracking id, the link index and, for clicks, the URL.
Layout before base64url (no padding)::

    byte 0      version << 4 | kind << 1 | https
    byte 1      key id (first byte of SHA-256 over the key: stable across rotation)
    10 bytes    tracking id
    varint      link index (0 for the open pixel)
    n bytes     click only: the URL without its "http://" / "https://" prefix (ASCII)
    10 bytes    HMAC-SHA256(key, all of the above) truncated to 80 bits

80 bits of MAC make forging a token a 2^80 guess per try; the tracker also answers any
failure with the same plain 404, so there is no oracle to guide a search.

A token is at most MAX_TOKEN_CHARS long: both verifiers refuse longer ones, so the
signer refuses to write them (URLTooLong) and the link stays as the sender wrote it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from trackmilter.model import TRACKING_ID_BYTES, tracking_id_from_bytes, tracking_id_to_bytes
from trackmilter.rewrite import native as _native_engine

# The native rewriting engine's extension also signs (HMAC-SHA256 from the same precomputed
# states, and base64url, in one call: the same tokens); None when the Python engine runs.
_NATIVE = _native_engine.extension()

VERSION = 1
MAC_BYTES = 10
_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
MIN_KEY_LENGTH = 16
_HEADER = 2 + TRACKING_ID_BYTES

# The longest token the signer writes and the trackers accept: web/app.py uses this one,
# conf/nginx/trackmilter.lua has the same number as its MAX_TOKEN (a unit test keeps them
# equal; Lua cannot import it). A link is requested as "GET <base path>/c/<token>
# HTTP/1.1", and nginx refuses a request line longer than one of its
# large_client_header_buffers with 414 (default "4 8k": 8,192 bytes; HTTP/2's :path has
# the same limit since 1.19.7), https://nginx.org/en/docs/http/ngx_http_core_module.html
# #large_client_header_buffers. 4,096 leaves 4 KB for the method, base_url's path and the
# protocol, and keeps every link signed before the limit was enforced valid. It allows
# http(s) URLs of up to about 3,050 characters (after percent-encoding).
MAX_TOKEN_CHARS = 4096
# The most bytes that encode (base64url, unpadded) to MAX_TOKEN_CHARS characters or fewer.
_MAX_TOKEN_BYTES = 3 * MAX_TOKEN_CHARS // 4
# The longest canonical URL that can fit (link index < 128, a one-byte varint).
_MAX_URL_CHARS = _MAX_TOKEN_BYTES - _HEADER - 1 - MAC_BYTES + len("https://")


class TokenError(Exception):
    """Base class for token problems."""


class InvalidToken(TokenError):
    """Not a token we signed: malformed, truncated, tampered with, or signed by an unknown key."""


class KeyFileError(TokenError):
    """The HMAC key file is missing, empty or holds a key that is too short."""


class Kind(IntEnum):
    CLICK = 0
    OPEN = 1


@dataclass(frozen=True)
class TokenData:
    kind: Kind
    tracking_id: str
    index: int
    url: str  # "" for opens
    key_id: int


@dataclass(frozen=True)
class _Key:
    kid: int
    secret: bytes

    @functools.cached_property
    def _pads(self) -> tuple[hashlib._Hash, hashlib._Hash]:
        # HMAC (RFC 2104) from SHA-256 states keyed once: copying two hash states costs a
        # third of copying an hmac.HMAC (1.1 µs a link instead of 3.4), same bytes.
        key = self.secret if len(self.secret) <= _BLOCK else hashlib.sha256(self.secret).digest()
        key = key.ljust(_BLOCK, b"\0")
        return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))

    @functools.cached_property
    def _native_states(self) -> bytes | None:
        """The extension's form of the two pad states (None without the extension)."""
        return None if _NATIVE is None else _NATIVE.hmac_states(self.secret)

    def mac(self, body: bytes) -> bytes:
        inner, outer = self._pads
        i = inner.copy()
        i.update(body)
        o = outer.copy()
        o.update(i.digest())
        return o.digest()[:MAC_BYTES]


_CLICK_HEAD = (VERSION << 4) | (Kind.CLICK << 1)  # byte 0 of a click token, https bit clear


def _key_id(secret: bytes) -> int:
    return hashlib.sha256(b"trackmilter key id\0" + secret).digest()[0]


class Signer:
    """Signs with the first key, verifies with any. Immutable and thread-safe."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise KeyFileError("no HMAC key given")
        for n, s in enumerate(secrets, 1):
            if len(s) < MIN_KEY_LENGTH:
                raise KeyFileError(f"key {n} is {len(s)} bytes; at least {MIN_KEY_LENGTH} needed")
        self._keys = tuple(_Key(_key_id(s), s) for s in secrets)

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """One key per line; blank lines and ``#`` comments ignored; the first key signs.

        Read byte for byte as nginx's edge reads it (conf/nginx/trackmilter.lua): lines end
        at LF, ASCII spaces, tabs and CRs around a key are ignored, and a key is printable
        ASCII, so that both sides always hold the same keys.
        """
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from exc
        keys: list[bytes] = []
        for line in data.split(b"\n"):
            key = line.strip(_KEY_SPACE)
            if not key or key.startswith(b"#"):
                continue
            if not _KEY_CHARS.fullmatch(key):
                raise KeyFileError(f"{path}: key {len(keys) + 1} holds characters that are "
                                   "not printable ASCII (generate keys with `openssl rand "
                                   "-hex 32`)")
            keys.append(key)
        if not keys:
            raise KeyFileError(f"key file {path} holds no key")
        try:
            return cls(keys)
        except KeyFileError as exc:
            raise KeyFileError(f"{path}: {exc}") from exc

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(k.kid for k in self._keys)

    def sign_click(self, tracking_id: str, index: int, url: str) -> str:
        """Token for a link. ``url`` must be an absolute http(s) URL (see :func:`canonical_url`)."""
        return self.for_message(tracking_id).click(index, url)

    def sign_open(self, tracking_id: str) -> str:
        return self.for_message(tracking_id).open()

    def for_message(self, tracking_id: str) -> MessageSigner:
        """A signer bound to one message: the per-message work is done once, not per link."""
        return MessageSigner(self._keys[0], tracking_id_to_bytes(tracking_id))

    def verify(self, token: str) -> TokenData:
        """Return the token's data, or raise :class:`InvalidToken` (never anything else)."""
        # Exactly what _sign produces, nothing that merely decodes to the same bytes: no
        # padding, no characters outside the alphabet (which a lenient decoder skips), no
        # spare bits set in the last character.
        if not _TOKEN.fullmatch(token) or len(token) % 4 == 1:
            raise InvalidToken("not base64url")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise InvalidToken("not base64url") from exc
        if base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode("ascii"):
            raise InvalidToken("not canonical base64url")
        if len(raw) < _HEADER + 1 + MAC_BYTES:
            raise InvalidToken("too short")
        body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        head, kid = body[0], body[1]
        if head >> 4 != VERSION:
            raise InvalidToken("unknown version")
        ok = False
        for key in self._keys:
            if key.kid == kid:
                ok = hmac.compare_digest(key.mac(body), mac) or ok
        if not ok:
            raise InvalidToken("bad signature or unknown key")
        # Only signed bytes are parsed below: they are ours, but stay defensive anyway.
        try:
            kind = Kind((head >> 1) & 0x7)
            index, pos = _read_varint(body, _HEADER)
            tail = body[pos:].decode("ascii")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidToken("malformed payload") from exc
        tid = tracking_id_from_bytes(body[2:_HEADER])
        url = ""
        if kind is Kind.CLICK:
            url = ("https://" if head & 1 else "http://") + tail
            if not _SAFE_URL.fullmatch(url):
                raise InvalidToken("unsafe URL in token")
        elif tail:
            raise InvalidToken("open token with a URL")
        return TokenData(kind, tid, index, url, kid)


class MessageSigner:
    """Signs the links of one message with the current key."""

    __slots__ = ("_key", "_kid", "_tid")

    def __init__(self, key: _Key, tid: bytes) -> None:
        self._key, self._kid, self._tid = key, key.kid, tid

    def click(self, index: int, url: str) -> str:
        """The token for link `index`; raises :class:`UnsignableURL` (or its subclass
        :class:`URLTooLong` when the token would be longer than MAX_TOKEN_CHARS)."""
        states = self._key._native_states
        if states is not None and _NATIVE is not None:
            # Already canonical (_PLAIN_URL), index < 128, not too long: the whole token in
            # one call; None sends everything else down the general path below.
            token: str | None = _NATIVE.click(states, _CLICK_HEAD, self._kid, self._tid,
                                              index, url, _MAX_TOKEN_BYTES - _HEADER - 1 - MAC_BYTES)
            if token is not None:
                return token
        # A long URL is refused before any work in proportion to it (percent-encoding,
        # base64, the MAC): canonicalising never makes a URL shorter than this bound.
        if len(url) > _MAX_URL_CHARS and _shortest_canonical(url) > _MAX_URL_CHARS:
            raise URLTooLong(f"URL of {len(url)} characters: its token would exceed "
                             f"{MAX_TOKEN_CHARS}")
        canon = canonical_url(url)
        https = canon.startswith("https://")
        tail = canon[8:] if https else canon[7:]
        varint = 1 if 0 <= index < 0x80 else len(_varint(index))
        if len(tail) > _MAX_TOKEN_BYTES - _HEADER - varint - MAC_BYTES:
            raise URLTooLong(f"URL of {len(canon)} characters once canonical: its token "
                             f"would exceed {MAX_TOKEN_CHARS}")
        return self._sign(Kind.CLICK, https, index, tail.encode("ascii"))

    def open(self) -> str:
        return self._sign(Kind.OPEN, False, 0, b"")

    def _sign(self, kind: Kind, https: bool, index: int, tail: bytes) -> str:
        head = bytes(((VERSION << 4) | (kind << 1) | int(https), self._kid))
        body = head + self._tid + (bytes((index,)) if index < 0x80 else _varint(index)) + tail
        states = self._key._native_states
        if states is not None and _NATIVE is not None:
            signed: str = _NATIVE.sign(states, body, MAC_BYTES)
            return signed
        mac = self._key.mac(body)
        return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode("ascii")


# Printable ASCII without space, quotes or angle brackets: nothing that can break out of a
# Location header or an HTML attribute.
_SAFE_URL = re.compile(r"https?://[!#-;=?-~]+")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_KEY_SPACE = b" \t\r\v\f"
_KEY_CHARS = re.compile(rb"[!-~]+")
_STRIP = "".join(chr(c) for c in range(0x21))
_TABNL = str.maketrans("", "", "\t\r\n")


class UnsignableURL(ValueError):
    """Not an absolute http(s) URL with a host."""


class URLTooLong(UnsignableURL):
    """A URL whose token would be longer than MAX_TOKEN_CHARS: the trackers would refuse it."""


def _shortest_canonical(url: str) -> int:
    """A lower bound on len(canonical_url(url)) from C-speed counts (nothing per character
    in Python): canonical_url only removes surrounding C0 controls and spaces, tabs and
    newlines anywhere, and the '?' and '#' of an empty query or fragment; everything else
    it keeps or lengthens (percent-encoding)."""
    around = len(url) - len(url.strip(_STRIP))
    return len(url) - around - url.count("\t") - url.count("\n") - url.count("\r") - 2


# The common case, already canonical: lower-case scheme, an ASCII host, printable ASCII rest.
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:[/?#][!#-;=?-~]*)?")


def canonical_url(url: str) -> str:
    """The URL a browser would request for an href, as printable ASCII.

    Follows the WHATWG URL parser where it matters for safety: leading/trailing C0 controls
    and spaces are stripped, tabs and newlines removed, backslashes before the query read as
    slashes; a non-ASCII host is refused (left untracked); other non-ASCII, spaces, quotes
    and angle brackets are percent-encoded (UTF-8).
    """
    if _PLAIN_URL.fullmatch(url):
        return url
    cleaned = url.strip(_STRIP).translate(_TABNL)
    # Browsers read a backslash as a slash in http(s) URLs before the query: without this,
    # `http://good.example\@evil.example/` would be signed for evil.example while the
    # sender's link (in a browser) goes to good.example.
    cut = min((i for i in (cleaned.find("?"), cleaned.find("#")) if i >= 0), default=len(cleaned))
    cleaned = cleaned[:cut].replace("\\", "/") + cleaned[cut:]
    try:
        parts = urlsplit(cleaned)
    except ValueError as exc:
        raise UnsignableURL(f"unparseable URL: {url!r}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise UnsignableURL(f"not an absolute http(s) URL: {url!r}")
    netloc = parts.netloc
    if not parts.hostname.isascii():
        # Python's idna codec follows IDNA 2003 (faß.de -> fass.de) where browsers follow
        # UTS 46 (xn--fa-hia.de): signing our guess could send the reader to another host.
        # Such a link is left as the sender wrote it.
        raise UnsignableURL(f"internationalised host, left untracked: {parts.hostname!r}")
    safe = "!#$%&'()*+,-./:;=?@[]_~"  # keep existing %XX escapes as they are
    rebuilt = urlunsplit(
        (
            scheme,
            quote(netloc, safe=safe),
            quote(parts.path, safe=safe),
            quote(parts.query, safe=safe),
            quote(parts.fragment, safe=safe),
        )
    )
    if not _SAFE_URL.fullmatch(rebuilt):
        raise UnsignableURL(f"URL not representable safely: {url!r}")
    return rebuilt


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative index")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise ValueError("bad varint")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
