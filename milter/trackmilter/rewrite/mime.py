"""Minimal MIME structure over raw bytes: part headers, Content-Type, multipart boundaries."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

__all__ = [
    "ContentType",
    "PartHeaders",
    "parameter",
    "parse_content_type",
    "parse_headers",
    "split_multipart",
]

# RFC 2045 §5.1 parameters; a quoted-string may hold ';' and escaped quotes.
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)', re.S)
_TYPE = re.compile(r"\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*/\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)")
_UNESCAPE = re.compile(r"\\(.)", re.S)
# RFC 5322 §2.2: a field name is printable ASCII except ':' (no spaces).
_FIELD_NAME = re.compile(rb"[!-9;-~]+[ \t]*")


@dataclass(frozen=True)
class ContentType:
    """A parsed Content-Type; `maintype` is "" when the header value is unusable."""

    maintype: str
    subtype: str
    params: dict[str, str]

    @property
    def valid(self) -> bool:
        return self.maintype != ""


def parse_content_type(value: str | None, default: str = "text/plain") -> ContentType:
    """Parse a Content-Type value; None (header absent) gives the RFC 2045 default."""
    if value is None:
        main, _, sub = default.partition("/")
        return ContentType(main, sub, {})
    m = _TYPE.match(value)
    if m is None:
        return ContentType("", "", {})
    params: dict[str, str] = {}
    for pm in _PARAM.finditer(value, m.end()):
        name = pm.group(1).lower()
        raw = pm.group(2).strip()
        if raw.startswith('"'):
            raw = _UNESCAPE.sub(r"\1", raw[1:-1] if raw.endswith('"') and len(raw) > 1 else raw[1:])
        # The first occurrence wins, as with the email package.
        params.setdefault(name, raw)
    return ContentType(m.group(1).lower(), m.group(2).lower(), params)


_MAX_SECTIONS = 64  # RFC 2231 continuations of one parameter read at most


def parameter(params: Mapping[str, str], name: str) -> str | None:
    """The value of parameter `name` (lower case), RFC 2231 forms included; None: absent.

    A plain `name=` wins. Otherwise `name*=` (RFC 2231 §4) or the continuations `name*0`,
    `name*1*`, ... (§3, §4.1) are joined in order and their `*` sections percent-decoded,
    dropping the leading charset'language' prefix; the octets are read as Latin-1, so a
    value that was not ASCII stays visibly so (a charset label then matches nothing).
    """
    if name in params:
        return params[name]
    if name + "*" in params:
        return _extended(params[name + "*"], first=True)
    pieces: list[str] = []
    for n in range(_MAX_SECTIONS):
        key = f"{name}*{n}"
        if key + "*" in params:
            pieces.append(_extended(params[key + "*"], first=n == 0))
        elif key in params:
            pieces.append(params[key])
        else:
            break
    return "".join(pieces) if pieces else None


def _extended(value: str, *, first: bool) -> str:
    """An RFC 2231 §4 extended value: charset'language'%XX-encoded (the prefix only in the
    first section). Without both quotes the whole value is taken, as the email package does."""
    if first:
        prefix = value.split("'", 2)
        if len(prefix) == 3:
            value = prefix[2]
    return unquote_to_bytes(value).decode("latin-1")


@dataclass(frozen=True)
class PartHeaders:
    """Header fields of one part, by lower-cased name (first occurrence), with positions.

    `fields[name] = (field_start, value_start, field_end)`: offsets into the message body,
    `field_end` past the field's last line ending. `end` is where the blank line that ends
    the header starts (a new field is inserted there); `body_start` is past that blank line.
    """

    fields: dict[bytes, tuple[int, int, int]]
    end: int
    body_start: int

    def value(self, buf: bytes, name: bytes) -> str | None:
        """The unfolded value of a field, or None when absent."""
        pos = self.fields.get(name)
        if pos is None:
            return None
        raw = buf[pos[1] : pos[2]]
        # RFC 5322 §2.2.3: unfolding removes the line breaks, keeping the whitespace.
        return raw.replace(b"\r", b"").replace(b"\n", b"").decode("latin-1").strip()


def parse_headers(buf: bytes, start: int, end: int) -> PartHeaders | None:
    """Parse the header block of a part found at buf[start:end].

    Returns None for a header block that is not one (a line that is neither a field nor a
    continuation before the blank line): mail clients disagree on such parts, so the caller
    leaves them alone rather than guess.
    """
    fields: dict[bytes, tuple[int, int, int]] = {}
    last: bytes | None = None
    pos = start
    find = buf.find
    while pos < end:
        nl = find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        first = buf[pos]
        if first == 0x0A or (first == 0x0D and line_end - pos == 2 and nl >= 0):
            return PartHeaders(fields, pos, line_end)
        if first in (0x20, 0x09):
            if last is None:
                return None
            if last in fields and fields[last][2] == pos:
                fs, vs, _ = fields[last]
                fields[last] = (fs, vs, line_end)
        else:
            colon = find(b":", pos, line_end)
            if colon < 0 or _FIELD_NAME.fullmatch(buf, pos, colon) is None:
                return None
            name = buf[pos:colon].rstrip(b" \t").lower()
            if name not in fields:
                fields[name] = (pos, colon + 1, line_end)
            last = name
        pos = line_end
    # Only header fields up to the end: an empty body.
    return PartHeaders(fields, end, end)


def _line_break_before(buf: bytes, pos: int, floor: int) -> int:
    """Where the line break ending just before `pos` starts (RFC 2046 §5.1.1: the CRLF
    preceding a boundary delimiter belongs to the delimiter, not to the part)."""
    if pos > floor and buf[pos - 1] == 0x0A:
        pos -= 1
        if pos > floor and buf[pos - 1] == 0x0D:
            pos -= 1
    return pos


def split_multipart(
    buf: bytes, start: int, end: int, boundary: bytes
) -> list[tuple[int, int]] | None:
    """Spans (start, end) of the body parts of the multipart entity at buf[start:end].

    Preamble, epilogue, delimiter lines and the line breaks before them are not part of
    any span, so they stay untouched. A missing close delimiter ends the last part at the
    end of the entity. Returns None when no delimiter line is found.
    """
    delims = list(_delimiters(buf, start, end, boundary))
    if not delims:
        return None
    spans: list[tuple[int, int]] = []
    for (_, line_end, close), nxt in zip(delims, delims[1:] + [None], strict=True):
        if close:
            break
        if nxt is None:
            spans.append((line_end, end))
        else:
            spans.append((line_end, max(line_end, _line_break_before(buf, nxt[0], line_end))))
    return spans


def _delimiters(
    buf: bytes, start: int, end: int, boundary: bytes
) -> Iterator[tuple[int, int, bool]]:
    """(line start, line end, is close delimiter) of each delimiter line, up to the close."""
    marker = b"--" + boundary
    mlen = len(marker)
    find = buf.find
    pos = start
    while True:
        i = find(marker, pos, end)
        if i < 0:
            return
        pos = i + 1
        if i != start and buf[i - 1] != 0x0A:
            continue
        j = i + mlen
        close = buf.startswith(b"--", j, end)
        if close:
            j += 2
        # RFC 2046 §5.1.1: transport padding (whitespace) may follow the boundary.
        while j < end and buf[j] in (0x20, 0x09):
            j += 1
        if j < end and buf[j] == 0x0D and j + 1 < end and buf[j + 1] == 0x0A:
            j += 2
        elif j < end and buf[j] == 0x0A:
            j += 1
        elif j != end:
            continue
        yield i, j, close
        if close:
            return
        pos = j
