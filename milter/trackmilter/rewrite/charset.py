"""Charset classification: scan the bytes directly, or decode/re-encode, or leave alone.

A label this module cannot vouch for (unknown to Python's codecs, not a text codec, not
printable ASCII, absurdly long, or one whose lookup raises anything) gives None: the
engine then leaves the part alone, byte for byte, and records why (RFC 2046 §4.1.2: a
charset a reader does not know leaves the text unreadable to it, so we cannot find its
links either).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Charset", "lookup"]

# Multi-byte codecs whose multi-byte sequences only use bytes >= 0x80, so '<', '"', 'h'...
# in the bytes are always those ASCII characters.
_ASCII_SAFE_MULTIBYTE = frozenset(
    {"utf-8", "utf-8-sig", "euc_jp", "euc_jis_2004", "euc_jisx0213", "euc_kr", "gb2312"}
)
# Codecs that must be decoded first: ASCII characters are encoded differently (UTF-16/32,
# UTF-7), escape sequences switch state (ISO-2022, HZ), or trail bytes fall in the ASCII
# range (Shift_JIS, Big5, GBK, UHC, Johab).
_DECODE_PREFIXES = (
    "utf-16",
    "utf-32",
    "utf-7",
    "iso2022_",
    "hz",
    "shift_jis",
    "cp932",
    "big5",
    "cp950",
    "gbk",
    "gb18030",
    "cp949",
    "johab",
)
# Text codecs Python knows that are not charsets a mail part can be in.
_NOT_CHARSETS = frozenset(
    {"idna", "punycode", "raw-unicode-escape", "unicode-escape", "charmap", "undefined"}
)
_ASCII = bytes(range(128))
# RFC 2978 §2.3 restricts new charset names to a few ASCII symbols besides letters and
# digits, but older registered aliases use more (ISO_8859-1:1987, ISO_646.irv:1991); so any
# printable ASCII without spaces is handed to Python's codecs, which decide. IANA's
# registry allows 40 characters a name, though two of its own are longer (45:
# Extended_UNIX_Code_Packed_Format_for_Japanese): 64 leaves room and keeps a hostile
# multi-kilobyte label out of the lookup cache.
_LABEL = re.compile(r"[!-~]{1,64}")
_SPACE = " \t\r\n\f\v"


@dataclass(frozen=True)
class Charset:
    """How to handle a part's text: `codec` decodes URL bytes (or the whole part).

    When `decode_part` is true the part must be decoded with `codec`; `fragment_codec` then
    encodes pieces of text without a byte-order mark, and `bom` is the part's own BOM.
    """

    codec: str
    decode_part: bool
    fragment_codec: str = ""
    bom: bytes = b""


def lookup(label: str | None) -> Charset | None:
    """The handling for a charset label (None: us-ascii); None when unknown or unusable.

    Never raises: whatever a message declares, the answer is a Charset or None.
    """
    if label is None:
        return _BYTES_ASCII
    # ASCII white space only: str.strip() would also take U+00A0 and friends, making
    # "utf-8<NBSP>" (as pymilter decodes a top-level header, UTF-8) pass for UTF-8.
    name = label.strip(_SPACE).strip('"')
    # Checked before lower(), which maps some non-ASCII to ASCII (KELVIN SIGN to "k").
    if _LABEL.fullmatch(name) is None:
        return None
    return _lookup(name.lower())


_BYTES_ASCII = Charset("ascii", False)


@lru_cache(maxsize=128)
def _lookup(label: str) -> Charset | None:
    # A pure function of the label; cached because classifying an unfamiliar single-byte
    # codec decodes a few hundred byte pairs.
    try:
        return _classify(label)
    except Exception:  # noqa: BLE001 - codecs.register() lets any code answer a lookup
        return None


def _classify(label: str) -> Charset | None:
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    name = info.name
    if not getattr(info, "_is_text_encoding", True) or name in _NOT_CHARSETS:
        return None
    if name.startswith(_DECODE_PREFIXES):
        return Charset(name, True, name)
    if name in _ASCII_SAFE_MULTIBYTE or name in ("ascii", "iso8859-1"):
        return Charset(name, False)
    if _is_ascii_single_byte(name):
        return Charset(name, False)
    # Some other multi-byte codec: decoding is always correct, only slower.
    return Charset(name, True, name) if _ascii_identity(name) else None


def for_part(charset: Charset, data: bytes) -> Charset:
    """Resolve UTF-16/32 byte order for one part (RFC 2781 §4.3: no BOM means big-endian)."""
    name = charset.codec
    if name not in ("utf-16", "utf-32"):
        return charset
    width = 2 if name == "utf-16" else 4
    le_bom = codecs.BOM_UTF16_LE if width == 2 else codecs.BOM_UTF32_LE
    be_bom = codecs.BOM_UTF16_BE if width == 2 else codecs.BOM_UTF32_BE
    if data.startswith(be_bom):
        return Charset(name + "-be", True, name + "-be", be_bom)
    if data.startswith(le_bom):
        return Charset(name + "-le", True, name + "-le", le_bom)
    return Charset(name + "-be", True, name + "-be")


def _ascii_identity(name: str) -> bool:
    try:
        return _ASCII.decode(name) == _ASCII.decode("ascii")
    except (UnicodeDecodeError, ValueError):
        return False


def _is_ascii_single_byte(name: str) -> bool:
    """ASCII bytes mean ASCII and no byte >= 0x80 combines with a following ASCII byte."""
    if not _ascii_identity(name):
        return False
    for lead in range(0x80, 0x100):
        for trail in (0x22, 0x3C, 0x41, 0x5C, 0x61):
            try:
                if len(bytes((lead, trail)).decode(name)) != 2:
                    return False
            except UnicodeDecodeError:
                continue
    return True
