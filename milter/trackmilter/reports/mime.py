"""A light MIME walk: headers parsed by the email package, bodies split on boundaries.

Full `email` parsing costs more than all the decoding (the returned original is often most
of the bytes and is never needed past its headers), so each part is parsed headers-only
and a multipart body is split on its boundary lines; only the parts a report needs are
ever decoded.
"""

from __future__ import annotations

import email
import email.header
import email.parser
import email.policy
import re
from collections.abc import Iterator
from email.message import Message

from trackmilter.reports.fields import bare_address

# The headers that tie a report back to the message it is about.
ORIGINAL_KEYS = ("message-id", "x-trackmilter-id", "x-postfix-queue-id")

_ORIGINAL_TYPES = (
    "message/rfc822",
    "message/rfc822-headers",
    "message/global",
    "text/rfc822-headers",
    "message/global-headers",
)
_ORIGINAL_FIELDS = frozenset((*ORIGINAL_KEYS, "from", "to", "return-path", "sender", "subject"))
_REPORT_FIELDS = _ORIGINAL_FIELDS | {
    "content-type",
    "content-transfer-encoding",
    "mime-version",
    "reply-to",
    "auto-submitted",
    "x-failed-recipients",
}
_HEADERS_START = re.compile(
    r"^(?:Return-Path|Received|Message-I[Dd]|From|To|Subject|Date|X-[\w-]+|DKIM-Signature|"
    r"Content-Type|MIME-Version|Reply-To|Delivered-To|Authentication-Results)\s*:",
    re.I | re.M,
)


# Nesting deeper than this is not a report; it bounds the work a hostile message can ask for.
_MAX_DEPTH = 8


_BLANK_LINE = re.compile(r"\r?\n\r?\n")


def parse(raw: bytes) -> Message | None:
    """Parse the header block; bytes outside ASCII survive as surrogates, as in BytesParser."""
    try:
        return parse_part(raw.decode("ascii", "surrogateescape"), _REPORT_FIELDS)
    except Exception:  # noqa: BLE001 - the email package can raise almost anything on junk
        return None


def parse_part(text: str, wanted: frozenset[str] | None = None) -> Message:
    """Headers through the email package (compat32 keeps junk as text); body kept as is.

    The body is split off first because the parser reads even an ignored body line by line;
    with `wanted`, only those fields reach the parser (Received lines are most of a head).
    """
    if text.startswith(("\n", "\r\n")):
        head, body = "", text.split("\n", 1)[1]
    else:
        m = _BLANK_LINE.search(text)
        head, body = (text[: m.start()], text[m.end() :]) if m else (text, "")
    msg = _header_block(_wanted_lines(head, wanted) if wanted else head)
    msg.set_payload(body)
    return msg


def _header_block(head: str) -> Message:
    """A Message holding the fields of a header block, unfolded as RFC 5322 §2.2.3 says.

    The feed parser costs more than the rest of a part's handling and buys nothing for a
    block that is only ever read field by field; lines that are not fields are skipped,
    as the parser would report them as defects.
    """
    msg = Message(policy=email.policy.compat32)
    name, value = "", ""
    for line in head.splitlines():
        if line[:1] in (" ", "\t") and name:
            value += "\n" + line
            continue
        if name:
            msg[name] = value.strip()
        field, colon, rest = line.partition(":")
        name, value = (
            (field.strip(), rest)
            if colon and field.strip() and " " not in field.strip()
            else ("", "")
        )
    if name:
        msg[name] = value.strip()
    return msg


def subparts(msg: Message) -> list[Message]:
    """The parts of a multipart body, each parsed headers-only (RFC 2046 §5.1.1)."""
    boundary = msg.get_boundary()
    body = msg.get_payload()
    if not boundary or not isinstance(body, str):
        return []
    delimiter = re.compile(r"^--" + re.escape(boundary) + r"(--)?[ \t]*\r?$", re.M)
    parts: list[Message] = []
    start = -1
    for m in delimiter.finditer(body):
        if start >= 0:
            chunk = body[start : m.start()]
            parts.append(parse_part(chunk[:-1] if chunk.endswith("\n") else chunk))
        if m.group(1):
            break
        start = m.end() + 1
    return parts


def header(msg: Message, name: str) -> str:
    """One header as plain text: RFC 2047 words decoded, folding removed."""
    value = msg.get(name)
    if value is None:
        return ""
    if "=?" not in str(value):
        return " ".join(str(value).split())
    try:
        text = str(email.header.make_header(email.header.decode_header(str(value))))
    except Exception:  # noqa: BLE001 - undecodable encoded-words: keep the raw value
        text = str(value)
    return " ".join(text.split())


def part_text(part: Message) -> str:
    """A leaf part's content as text, transfer encoding and charset undone."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, "replace")
        except LookupError:
            return payload.decode("utf-8", "replace")
    raw = part.get_payload()
    if isinstance(raw, list):
        return "".join(m.as_string() if isinstance(m, Message) else str(m) for m in raw)
    return str(raw or "")


# Each report part with its content type, which is looked up once (compat32 re-parses it
# on every get_content_type call).
Parts = tuple[tuple[str, Message], ...]


def report_parts(msg: Message) -> Parts:
    """Every part of the report itself, typed, without descending into an attached message."""
    return tuple((part.get_content_type(), part) for part in walk_report(msg))


def walk_report(msg: Message, depth: int = 0) -> Iterator[Message]:
    """Every part of the report itself, without descending into an attached message."""
    yield msg
    if msg.get_content_maintype() == "multipart" and depth < _MAX_DEPTH:
        parts = subparts(msg)
        body = msg.get_payload()
        if not parts and isinstance(body, str):
            # Boundary lines lost on the way (it happens): read the body as plain text.
            parts = [parse_part("\n" + body)]
        for sub in parts:
            yield from walk_report(sub, depth + 1)


def find_part(parts: Parts, *types: str) -> Message | None:
    """The first report part of one of the given content types."""
    return next((part for ctype, part in parts if ctype in types), None)


def attached_headers(parts: Parts) -> Message | None:
    """The returned original's headers: a message/rfc822 or text/rfc822-headers part."""
    part = find_part(parts, *_ORIGINAL_TYPES)
    return None if part is None else headers_from_text(part_text(part))


def headers_from_text(text: str) -> Message | None:
    """The tie-back headers of the block that starts at the first header-looking line.

    Only the few fields used are handed to the parser: the returned original often carries
    dozens of Received lines that would cost more to parse than the whole report.
    """
    m = _HEADERS_START.search(text)
    if not m:
        return None
    head = _BLANK_LINE.split(text[m.start() :], 1)[0]
    try:
        return parse_part(_wanted_lines(head, _ORIGINAL_FIELDS))
    except Exception:  # noqa: BLE001 - junk after the marker: no original headers
        return None


def _wanted_lines(head: str, wanted: frozenset[str]) -> str:
    """The lines of a header block that belong to the fields this package reads."""
    kept: list[str] = []
    keep = False
    for line in head.splitlines():
        if line[:1] in (" ", "\t"):
            if keep:
                kept.append(line)
            continue
        keep = line.split(":", 1)[0].strip().lower() in wanted
        if keep:
            kept.append(line)
    return "\n".join(kept) + "\n"


def original_keys(original: Message | None) -> dict[str, str]:
    """Message-ID, tracking id and queue id of the returned original, where present."""
    if original is None:
        return {}
    return {k: header(original, k).strip() for k in ORIGINAL_KEYS if original.get(k)}


def address_of(msg: Message, name: str) -> str:
    """The bare address of an address header, lower-cased, or ""."""
    value = header(msg, name)
    return bare_address(value).lower() if "@" in value else ""
