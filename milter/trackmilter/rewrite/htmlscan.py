"""Find the href values of <a>/<area> tags in HTML bytes, as a browser's tokenizer would."""

from __future__ import annotations

import re
from html import unescape
from html.entities import html5

__all__ = ["body_close", "find_hrefs", "unescape_attr"]

# The only places the scanner stops: tags whose content or attributes matter.
_TOKEN = re.compile(rb"<(?:(!--)|(a|area)(?=[\t\n\f\r />])|(script|style)(?=[\t\n\f\r />]))", re.I)
_TAG_NAME = re.compile(rb"[a-zA-Z][^\t\n\f\r />]*")
# A whole tag when quotes only ever open attribute values (the usual case); possessive
# quantifiers keep a failed match linear.
_SIMPLE_TAG = re.compile(rb"""[^>"']*+(?:(?:"[^"]*+"|'[^']*+')[^>"']*+)*+>""")
_END_SCRIPT = re.compile(rb"</script", re.I)
_END_STYLE = re.compile(rb"</style", re.I)
# One attribute, HTML5 §13.2.5.32–.39: names stop at whitespace, '/', '>' and '='; values
# are "double", 'single' or unquoted (up to whitespace or '>').
_ATTR = re.compile(
    rb"""[\t\n\f\r /]*
    (?:
      ([^\t\n\f\r />][^\t\n\f\r /=>]*)
      (?:[\t\n\f\r ]*(=)[\t\n\f\r ]*(?:"([^"]*)"|'([^']*)'|([^\t\n\f\r >]+))?)?
    )?""",
    re.X,
)
# Same as the html module's own pattern for character references.
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")

_Attr = tuple[bytes, int, int]


def _parse_tag(data: bytes, pos: int) -> tuple[int, list[_Attr]] | None:
    """Attributes (name, value start, value end; -1 without a value) of the tag whose name
    ends at `pos`, and the offset past its '>'. None when the tag never ends: HTML5 drops a
    tag cut off by the end of the document, and so does everything after it."""
    attrs: list[_Attr] = []
    n = len(data)
    match = _ATTR.match
    while True:
        m = match(data, pos)
        assert m is not None  # every part of the pattern is optional
        pos = m.end()
        last = m.lastindex
        if last is not None:
            if last > 2:
                vs, ve = m.span(last)  # the "double", 'single' or unquoted value
            elif last == 1:
                vs = ve = -1
            elif pos < n and data[pos] in b"\"'":
                return None  # an opening quote that is never closed
            else:
                vs = ve = pos  # `name=>`: an empty value
            attrs.append((m.group(1), vs, ve))
        if pos >= n:
            return None
        if data[pos] == 0x3E:  # '>'
            return pos + 1, attrs


def _inside_tag(data: bytes, floor: int, at: int) -> int:
    """If the '<' at `at` lies inside the attributes of an earlier tag (`alt="<a href=…>"`),
    the end of that tag; 0 when it does not; -1 when that tag never ends."""
    lt = data.rfind(b"<", floor, at)
    if lt < 0:
        return 0
    m = _TAG_NAME.match(data, lt + 1)
    if m is None:
        return 0
    simple = _SIMPLE_TAG.match(data, m.end())
    if simple is not None and simple.end() <= at:
        return 0
    parsed = _parse_tag(data, m.end())
    if parsed is None:
        return -1
    return parsed[0] if parsed[0] > at else 0


def find_hrefs(data: bytes, optout: bytes) -> list[tuple[int, int]]:
    """(start, end) of the first href value of each <a>/<area> tag, in document order.

    Skips ordinary comments and the content of <script>/<style>, but not Outlook's
    conditional comments (`<!--[if mso]> … <![endif]-->`): Outlook renders their markup.
    Tags carrying the attribute `optout` (lower-case) are left out.
    """
    out: list[tuple[int, int]] = []
    pos = 0
    search = _TOKEN.search
    while True:
        m = search(data, pos)
        if m is None:
            return out
        start = m.start()
        inside = _inside_tag(data, pos, start)
        if inside:
            if inside < 0:
                return out
            pos = inside
            continue
        p = m.end()
        if m.group(1) is not None:
            if data[p : p + 3].lower() == b"[if":
                gt = data.find(b">", p)
                if gt < 0:
                    return out
                pos = gt + 1
            elif data.startswith(b">", p):
                pos = p + 1  # `<!-->`: an empty comment (HTML5 abrupt closing)
            elif data.startswith(b"->", p):
                pos = p + 2
            else:
                close = data.find(b"-->", p)
                if close < 0:
                    return out
                pos = close + 3
            continue
        raw_text = m.group(3)
        if raw_text is not None:
            end_re = _END_SCRIPT if raw_text[1] in b"cC" else _END_STYLE
            em = end_re.search(data, p)
            if em is None:
                return out
            pos = em.end()
            continue
        parsed = _parse_tag(data, p)
        if parsed is None:
            return out
        pos, attrs = parsed
        href: tuple[int, int] | None = None
        opted_out = False
        for name, vs, ve in attrs:
            lname = name.lower()
            if lname == b"href":
                # HTML5 keeps the first of duplicate attributes.
                if href is None and vs >= 0:
                    href = (vs, ve)
            elif lname == optout:
                opted_out = True
        if href is not None and not opted_out:
            out.append(href)


def body_close(data: bytes) -> int:
    """Offset of the last `</body` (any case), or -1."""
    return data.lower().rfind(b"</body")


def _charref(m: re.Match[str]) -> str:
    s = m.group(1)
    if s[0] == "#":
        # Numeric references: html.unescape applies HTML5's replacements (NUL, C1, surrogates).
        return unescape(m.group(0))
    if s in html5:
        return html5[s]
    for x in range(len(s) - 1, 1, -1):
        if s[:x] in html5:
            # HTML5 §13.2.5.73: in an attribute, a legacy reference without ';' followed by
            # '=' or an alphanumeric stays as written (`?a=1&copy=2` is not `?a=1©=2`).
            nxt = s[x]
            if nxt == "=" or nxt.isascii() and nxt.isalnum():
                return m.group(0)
            return html5[s[:x]] + s[x:]
    return m.group(0)


def unescape_attr(value: str) -> str:
    """Decode character references in an attribute value, with HTML5's attribute rules."""
    if "&" not in value:
        return value
    return _CHARREF.sub(_charref, value)
