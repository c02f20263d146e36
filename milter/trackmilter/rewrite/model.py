"""The rewrite engine's vocabulary: options in, links and the rewritten body out."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Link", "RewriteOptions", "RewriteResult", "SkipReason"]


class SkipReason:
    """Reasons recorded in `RewriteResult.skipped` (plain strings, so logs and metrics can use them)."""

    SIGNED_OR_ENCRYPTED = "signed_or_encrypted"
    ATTACHMENT = "attachment"
    ATTACHED_MESSAGE = "attached_message"
    UNDECODABLE = "undecodable"  # not valid in its Content-Transfer-Encoding
    UNKNOWN_CHARSET = "unknown_charset"  # a charset label we cannot vouch for
    UNDECODABLE_CHARSET = "undecodable_charset"  # bytes that are not text in the charset
    UNKNOWN_TRANSFER_ENCODING = "unknown_transfer_encoding"
    MALFORMED = "malformed"

    CHARSET = frozenset({UNKNOWN_CHARSET, UNDECODABLE_CHARSET})
    """The reasons that are about a part's charset."""


@dataclass(frozen=True)
class RewriteOptions:
    """What to rewrite; parsed once from configuration and shared by every message."""

    html_links: bool = True
    """Rewrite `<a href>` and `<area href>` in text/html parts."""
    text_links: bool = False
    """Rewrite bare http(s) URLs in text/plain parts."""
    tracker_prefix: str = ""
    """Links whose URL already starts with this are left alone (already tracked)."""
    excluded_domains: frozenset[str] = frozenset()
    """A link whose host equals one of these, or is a subdomain of one, is left alone."""
    optout_attribute: str = "data-notrack"
    """`<a data-notrack href=...>` is left alone, whatever the attribute's value."""
    max_line: int = 998
    """RFC 5322 line limit, without the CRLF: a 7bit/8bit part growing past it becomes QP."""


@dataclass(frozen=True)
class Link:
    """One rewritten link."""

    index: int
    """1-based, in document order across the whole message."""
    url: str
    """The real target (entities decoded, surrounding whitespace and tabs/newlines removed
    as browsers do): the string that gets signed."""
    raw: bytes
    """The original attribute-value (or text) bytes as they stood in the transfer-decoded
    part; for charsets that are not ASCII-compatible, re-encoded in the part's charset."""
    part: int
    """1-based ordinal of the MIME leaf the link was found in (document order; an opaque
    subtree such as multipart/signed or message/rfc822 counts as one leaf)."""
    kind: str
    """"html" or "text"."""


@dataclass(frozen=True)
class RewriteResult:
    """What the milter layer needs to replace the body (or to leave it alone)."""

    body: bytes | None
    """The new body, or None when nothing changed (the caller passes the original through)."""
    links: tuple[Link, ...]
    pixel_added: bool
    top_cte: str | None
    """New Content-Transfer-Encoding of a non-multipart message when it had to change
    (7bit/8bit line grown past max_line → quoted-printable); the caller owns that header."""
    skipped: tuple[tuple[int, str], ...]
    """(leaf ordinal, reason) for parts that could have held links but were left alone."""
