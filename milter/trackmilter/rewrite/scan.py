"""Find link targets in part bytes: <a>/<area> hrefs as a browser tokenizes HTML, bare URLs in text."""

from __future__ import annotations

import re
from html import unescape
from html.entities import html5

__all__ = ["body_close", "find_hrefs", "find_urls", "unescape_attr"]

# The only places the scanner stops: tags whose content or attributes matter.
_TOKEN = re.compile(rb"<(?:(!--)|(a|area)(?=[\t\n\f\r />])|(script|style)(?=[\t\n\f\r />]))", re.I)
_TAG_NAME = re.compile(rb"[a-zA-Z][^\t\n\f\r />]*")
_END_SCRIPT = re.compile(rb"</script", re.I)
_END_STYLE = re.compile(rb"</style", re.I)

# The attribute grammar of HTML5 §13.2.5.32–.39: separators are whitespace and '/'; a name
# runs up to whitespace, '/', '>' or '='; a value is "double", 'single' or unquoted (up to
# whitespace or '>', not starting with a quote). An opening quote that is never closed runs
# to the end of the document (the tag, and all after it, is then dropped), so a quoted value
# here may lack its closing quote: the match then fails for want of '>'. Every quantifier
# is possessive, which both mirrors the tokenizer (no second reading) and keeps failing
# matches linear.
_SEP = rb"[\t\n\f\r /]*+"
_NAME = rb"[^\t\n\f\r />][^\t\n\f\r /=>]*+"
_VALUE = rb"""(?:"[^"]*+"?|'[^']*+'?|[^\t\n\f\r >"'][^\t\n\f\r >]*+|(?=>))"""
_EQ_VALUE = rb"(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+" + _VALUE + rb")?+"
_ATTRIBUTES = rb"(?:" + _SEP + _NAME + _EQ_VALUE + rb")*+"
# From the end of a tag name to past its '>'.
_TAG_REST = re.compile(_ATTRIBUTES + _SEP + rb">")
# From the end of an <a>/<area> tag name to past its '>', capturing the first href value
# ('=' alone in group 1 for `href=>`, the value in group 2, 3 or 4).
_HREF_TAG = re.compile(
    rb"(?:"
    + _SEP
    + rb"(?!href[\t\n\f\r /=>])"
    + _NAME
    + _EQ_VALUE
    + rb")*+"
    + _SEP
    + rb"href(?=[\t\n\f\r /=>])"
    + rb"""(?:[\t\n\f\r ]*+(=)[\t\n\f\r ]*+(?:"([^"]*+)"|'([^']*+)'|([^\t\n\f\r >"'][^\t\n\f\r >]*+)|(?=>)))?+"""
    + _ATTRIBUTES
    + _SEP
    + rb">",
    re.I,
)
# A whole tag from its '<'.
_TAG = re.compile(rb"<[a-zA-Z][^\t\n\f\r />]*+" + _ATTRIBUTES + _SEP + rb">")
_SEP_RE = re.compile(_SEP)
# One attribute at a time, for the rare tag that names the opt-out attribute.
_ATTR = re.compile(rb"(" + _NAME + rb")(?:[\t\n\f\r ]*+=[\t\n\f\r ]*+" + _VALUE + rb")?+")
# Same as the html module's own pattern for character references.
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")


def _has_attribute(data: bytes, start: int, end: int, name: bytes) -> bool:
    """Whether the tag attributes in data[start:end] include `name` (lower-case)."""
    pos = start
    while True:
        sep = _SEP_RE.match(data, pos, end)
        assert sep is not None  # matches the empty string too
        m = _ATTR.match(data, sep.end(), end)
        if m is None:
            return False
        if m.group(1).lower() == name:
            return True
        pos = m.end()


def _inside_tag(data: bytes, floor: int, at: int) -> int:
    """If the '<' at `at` lies inside the attributes of an earlier tag (`alt="<a href=…>"`),
    the end of that tag; 0 when it does not; -1 when that tag never ends."""
    lt = data.rfind(b"<", floor, at)
    if lt < 0:
        return 0
    tag = _TAG.match(data, lt)
    if tag is not None:
        return tag.end() if tag.end() > at else 0
    # No tag there (a stray '<'), or one that never ends.
    return -1 if _TAG_NAME.match(data, lt + 1) else 0


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
        tag = _HREF_TAG.match(data, p)
        if tag is None:
            rest = _TAG_REST.match(data, p)
            if rest is None:
                return out  # the tag never ends: neither does the document's markup
            pos = rest.end()
            continue  # no href
        pos = tag.end()
        last = tag.lastindex
        if last is None:
            continue  # an href without a value
        if optout and optout in data[p:pos].lower() and _has_attribute(data, p, pos, optout):
            continue
        out.append(tag.span(last) if last > 1 else (tag.start(1) + 1, tag.start(1) + 1))


def body_close(data: bytes) -> int:
    """Offset of the last `</body` (any case), or -1."""
    # Searching backwards for the two usual spellings stops near the end of the document;
    # lower-casing all of it is only needed for odd spellings like </Body.
    found = max(data.rfind(b"</body"), data.rfind(b"</BODY"))
    if found < 0:
        return data.lower().rfind(b"</body")
    later = data[found + 6 :].lower().rfind(b"</body")
    return found if later < 0 else found + 6 + later


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
    if value.count("&") == value.count("&amp;"):
        # The usual case (query strings): every reference is &amp;, and one pass of
        # replace decodes exactly those (its output is not looked at again).
        return value.replace("&amp;", "&")
    return _CHARREF.sub(_charref, value)


# `<URL>` / `<URL:URL>` (RFC 3986 appendix C) first: the brackets delimit the URL, so its
# last character is kept even when it is punctuation. Otherwise a URL starts at a word
# boundary and stops at whitespace, quotes or angle brackets.
_URL = re.compile(
    rb"<(?:URL:)?(https?://[^\s<>\"]+)>"
    rb"|(?<![A-Za-z0-9+.\-])(https?://[^\s<>\"']+)",
    re.I,
)
_URL_TRAILING = b".,;:!?"


def find_urls(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each URL in `data`, in order."""
    out: list[tuple[int, int]] = []
    for m in _URL.finditer(data):
        if m.group(1) is not None:
            s, e = m.span(1)
        else:
            s, e = m.span(2)
            e = _trim(data, s, e)
        scheme = 8 if data[s + 4 : s + 5] in (b"s", b"S") else 7
        if e - s > scheme:
            out.append((s, e))
    return out


def _trim(data: bytes, s: int, e: int) -> int:
    """Drop sentence punctuation after a URL, and a ')' that closes a parenthesis opened
    before the URL (but keep `…/Foo_(bar)`)."""
    while e > s:
        c = data[e - 1]
        if c in _URL_TRAILING:
            e -= 1
        elif c == 0x29 and data.count(b"(", s, e) < data.count(b")", s, e):
            e -= 1
        else:
            break
    return e
