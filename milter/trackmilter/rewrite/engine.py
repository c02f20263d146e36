"""Walk a message body's MIME tree over raw bytes and rewrite links in the parts that hold them."""

from __future__ import annotations

import binascii
from collections.abc import Callable
from dataclasses import dataclass, field

from trackmilter.rewrite import charset as charsets
from trackmilter.rewrite import native, scan, transfer
from trackmilter.rewrite.links import LinkPolicy, check_replacement, is_http, normalize
from trackmilter.rewrite.mime import (
    ContentType,
    PartHeaders,
    parameter,
    parse_content_type,
    parse_headers,
    split_multipart,
)
from trackmilter.rewrite.model import Link, RewriteOptions, RewriteResult, SkipReason

__all__ = ["ENGINES", "rewrite_message", "rewrite_message_with"]

# linker(index, url) -> the tracking URL for link `index` (printable ASCII without quotes,
# '<', '>' or spaces), or `url` itself to leave that link alone; `index` is then reused.
Linker = Callable[[int, str], str]

_MAX_DEPTH = 32  # deeper nesting is malformed or hostile; leave it alone
# A link no person can see or reach: not displayed, hidden from screen readers, out of the
# tab order, and with no text. Link scanners follow it like every other link.
_HONEYPOT = (
    '<a href="{}" aria-hidden="true" tabindex="-1" '
    'style="display:none!important;mso-hide:all;font-size:0;line-height:0"></a>'
)
_PIXEL = (
    '<img src="{}" width="1" height="1" alt="" '
    'style="display:block;width:1px;height:1px;border:0" />'
)
_CTE_FIELD = b"Content-Transfer-Encoding"
_QP = "quoted-printable"
_Edit = transfer.Edit
# (start, end, url) of a link candidate: its value's span in the scanned bytes and the URL
# it names (decoded, normalised, http(s), not under the tracker prefix).
_Candidate = tuple[int, int, str]


def _html_links_python(
    work: bytes, optout: bytes, codec: str, prefix: str, unescape: Callable[[str], str]
) -> list[_Candidate]:
    """The href values of `work` that decode in `codec` and name an http(s) URL not
    starting with `prefix` (the native engine's `html_links` returns the same)."""
    out: list[_Candidate] = []
    for s, e in scan.find_hrefs(work, optout):
        try:
            value = work[s:e].decode(codec)
        except UnicodeDecodeError:
            continue  # bytes that are not text in the part's charset: no sure target
        url = normalize(unescape(value))
        if is_http(url) and not (prefix and url.startswith(prefix)):
            out.append((s, e, url))
    return out


def _text_links(work: bytes, codec: str, prefix: str) -> list[_Candidate]:
    """Bare URLs of a text/plain part, as _html_links_python returns hrefs."""
    out: list[_Candidate] = []
    for s, e in scan.find_urls(work):
        try:
            value = work[s:e].decode(codec)
        except UnicodeDecodeError:
            continue
        url = normalize(value)
        if is_http(url) and not (prefix and url.startswith(prefix)):
            out.append((s, e, url))
    return out


def _link_edits_python(
    work: bytes,
    candidates: list[_Candidate],
    first: int,
    linker: Linker,
    html: bool,
    leaf: int,
    kind: str,
    tracks: Callable[[str], bool] | None,
    link: type[Link],
    check: Callable[[str, str], str],
) -> tuple[list[_Edit], list[Link]]:
    """The edits and Links for the candidates the linker tracks (index `first` up); `tracks`
    is the excluded-domain check when there is one (the native `link_edits` is the same)."""
    edits: list[_Edit] = []
    links: list[Link] = []
    for s, e, url in candidates:
        if tracks is not None and not tracks(url):
            continue
        index = first + len(links)
        tracking = linker(index, url)
        if tracking == url:
            continue  # the linker declines (e.g. a URL it cannot sign): left as written
        check(tracking, "linker result")
        if html:
            tracking = tracking.replace("&", "&amp;")
        edits.append((s, e, tracking.encode("ascii")))
        links.append(link(index, url, work[s:e], leaf, kind))
    return edits, links


@dataclass(frozen=True, slots=True)
class _Ops:
    """The inner pieces an engine provides; the MIME walk and every decision are shared."""

    name: str
    html_links: Callable[[bytes, bytes, str, str, Callable[[str], str]], list[_Candidate]]
    link_edits: Callable[
        [
            bytes,
            list[_Candidate],
            int,
            Linker,
            bool,
            int,
            str,
            Callable[[str], bool] | None,
            type[Link],
            Callable[[str, str], str],
        ],
        tuple[list[_Edit], list[Link]],
    ]
    qp_splice: Callable[[bytes, bytes, list[_Edit], bytes], bytes | None]
    qp_decode: Callable[[bytes], bytes]
    qp_encode: Callable[[bytes, bytes], bytes]


def _engines() -> dict[str, _Ops]:
    engines = {
        "python": _Ops(
            "python",
            _html_links_python,
            _link_edits_python,
            transfer.qp_splice,
            binascii.a2b_qp,
            transfer.qp_encode,
        )
    }
    ext = native.try_extension()
    if ext is not None:
        engines["native"] = _Ops(
            "native", ext.html_links, ext.link_edits, ext.qp_splice, ext.a2b_qp, ext.qp_encode
        )
    return engines


ENGINES = _engines()
"""The engines this process can run, by name ("python" always; "native" when the
extension imports, whatever TRACKMILTER_ENGINE says)."""
_ACTIVE = ENGINES[native.ENGINE]


@dataclass(slots=True)
class _Run:
    """Mutable state of one rewrite_message call (never shared between calls)."""

    buf: bytes
    eol: bytes
    options: RewriteOptions
    policy: LinkPolicy
    optout: bytes
    linker: Linker
    pixel: bytes | None
    ops: _Ops
    links: list[Link] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    edits: list[_Edit] = field(default_factory=list)
    leaf: int = 0
    pixel_added: bool = False
    top_cte: str | None = None

    def skip(self, reason: str) -> None:
        self.skipped.append((self.leaf, reason))


def rewrite_message(
    content_type: str | None,
    transfer_encoding: str | None,
    body: bytes,
    linker: Linker,
    pixel_url: str | None,
    options: RewriteOptions,
    honeypot_url: str | None = None,
) -> RewriteResult:
    """Rewrite the links of a message body (the bytes after the header's blank line).

    `content_type` and `transfer_encoding` are the top-level header values (None: absent).
    Only the leaf parts that change are re-encoded; every other byte is kept as it was.
    Runs the engine trackmilter.rewrite.native chose (native.ENGINE).
    """
    return _rewrite(
        _ACTIVE, content_type, transfer_encoding, body, linker, pixel_url, options, honeypot_url
    )


def rewrite_message_with(
    engine: str,
    content_type: str | None,
    transfer_encoding: str | None,
    body: bytes,
    linker: Linker,
    pixel_url: str | None,
    options: RewriteOptions,
    honeypot_url: str | None = None,
) -> RewriteResult:
    """rewrite_message on a named engine ("python" or "native"; KeyError when this
    process cannot run it): for tests and benchmarks that compare the two."""
    return _rewrite(
        ENGINES[engine],
        content_type,
        transfer_encoding,
        body,
        linker,
        pixel_url,
        options,
        honeypot_url,
    )


def _rewrite(
    ops: _Ops,
    content_type: str | None,
    transfer_encoding: str | None,
    body: bytes,
    linker: Linker,
    pixel_url: str | None,
    options: RewriteOptions,
    honeypot_url: str | None,
) -> RewriteResult:
    pixel = None
    if pixel_url is not None:
        src = check_replacement(pixel_url, "pixel_url").replace("&", "&amp;")
        pixel = _PIXEL.format(src).encode("ascii")
    if honeypot_url is not None:
        # Inserted where the pixel goes: the first HTML part, before </body>.
        href = check_replacement(honeypot_url, "honeypot_url").replace("&", "&amp;")
        pixel = _HONEYPOT.format(href).encode("ascii") + (pixel or b"")
    nl = body.find(b"\n")
    # SMTP and the milter protocol use CRLF; files on disk usually LF. Never mix them.
    eol = b"\n" if nl >= 0 and (nl == 0 or body[nl - 1] != 0x0D) else b"\r\n"
    run = _Run(
        buf=body,
        eol=eol,
        options=options,
        policy=LinkPolicy.from_options(options),
        optout=options.optout_attribute.lower().encode("ascii", "replace"),
        linker=linker,
        pixel=pixel,
        ops=ops,
    )
    cte = (transfer_encoding or "7bit").strip().lower()
    _entity(run, parse_content_type(content_type), cte, None, 0, len(body), 0)
    skipped = tuple(run.skipped)
    if not run.edits:
        return RewriteResult(None, (), False, None, skipped)
    run.edits.sort()
    pieces: list[bytes] = []
    last = 0
    for start, end, new in run.edits:
        pieces.append(body[last:start])
        pieces.append(new)
        last = end
    pieces.append(body[last:])
    return RewriteResult(b"".join(pieces), tuple(run.links), run.pixel_added, run.top_cte, skipped)


def _entity(
    run: _Run,
    ctype: ContentType,
    cte: str,
    headers: PartHeaders | None,
    start: int,
    end: int,
    depth: int,
) -> None:
    if ctype.maintype != "multipart":
        run.leaf += 1
        _leaf(run, ctype, cte, headers, start, end)
        return
    if ctype.subtype in ("signed", "encrypted"):
        # RFC 1847: any change breaks the signature or the encrypted envelope.
        run.leaf += 1
        run.skip(SkipReason.SIGNED_OR_ENCRYPTED)
        return
    boundary = ctype.params.get("boundary", "").rstrip()
    spans = None
    # RFC 2045 §6.4: a multipart may only be 7bit, 8bit or binary.
    if boundary and cte in transfer.IDENTITY and depth < _MAX_DEPTH:
        spans = split_multipart(run.buf, start, end, boundary.encode("latin-1", "replace"))
    if not spans:
        run.leaf += 1
        run.skip(SkipReason.MALFORMED)
        return
    # RFC 2046 §5.1.5: parts of a digest are messages unless they say otherwise.
    default = "message/rfc822" if ctype.subtype == "digest" else "text/plain"
    buf = run.buf
    for part_start, part_end in spans:
        hdrs = parse_headers(buf, part_start, part_end)
        if hdrs is None:
            run.leaf += 1
            run.skip(SkipReason.MALFORMED)
            continue
        child = parse_content_type(hdrs.value(buf, b"content-type"), default)
        child_cte = (hdrs.value(buf, b"content-transfer-encoding") or "7bit").lower()
        _entity(run, child, child_cte, hdrs, hdrs.body_start, part_end, depth + 1)


def _leaf(
    run: _Run,
    ctype: ContentType,
    cte: str,
    headers: PartHeaders | None,
    start: int,
    end: int,
) -> None:
    kind = _kind(run, ctype, headers)
    if kind is None:
        return
    if cte not in transfer.KNOWN:
        run.skip(SkipReason.UNKNOWN_TRANSFER_ENCODING)
        return
    # RFC 2046 §4.1.2: the charset parameter names the part's character set, US-ASCII
    # when absent; one we cannot vouch for leaves the part alone, as it stands.
    cs = charsets.lookup(parameter(ctype.params, "charset"))
    if cs is None:
        run.skip(SkipReason.UNKNOWN_CHARSET)
        return
    raw = run.buf[start:end]
    try:
        # transfer.decode, with the engine's own quoted-printable decoder
        data = run.ops.qp_decode(raw) if cte == _QP else transfer.decode(cte, raw)
    except transfer.DecodeError:
        run.skip(SkipReason.UNDECODABLE)
        return
    if cs.decode_part:
        try:
            # Scanned as UTF-8, whose ASCII bytes are always ASCII characters.
            cs = charsets.for_part(cs, data)
            work = data[len(cs.bom) :].decode(cs.codec).encode("utf-8")
        except UnicodeError:
            run.skip(SkipReason.UNDECODABLE_CHARSET)
            return
    else:
        work = data

    edits: list[_Edit] = []
    links: list[Link] = []
    if kind == "text" or run.options.html_links:
        _find_links(run, kind, work, cs, edits, links)
    pixel_here = kind == "html" and run.pixel is not None and not run.pixel_added
    if pixel_here and run.pixel is not None:
        pos = _pixel_position(work, edits)
        edits.append((pos, pos, run.pixel))
    if not edits:
        return
    edits.sort(key=lambda ed: (ed[0], ed[1]))
    encoded = None
    if cte == _QP and not cs.decode_part:
        encoded = run.ops.qp_splice(raw, data, edits, run.eol)
    new_cte = cte
    if encoded is None:
        new = _encode(run, cte, cs, raw, work, edits)
        if new is None:
            run.skip(SkipReason.UNDECODABLE_CHARSET)
            return
        encoded, new_cte = new
    if new_cte != cte:
        _change_cte(run, headers, new_cte)
    run.edits.append((start, end, encoded))
    run.links.extend(links)
    if pixel_here:
        run.pixel_added = True


def _kind(run: _Run, ctype: ContentType, headers: PartHeaders | None) -> str | None:
    """ "html" or "text" for a leaf to look into; None (recording why, when it matters)."""
    if ctype.maintype == "message":
        if ctype.subtype in ("rfc822", "global"):
            run.skip(SkipReason.ATTACHED_MESSAGE)
        return None
    if not ctype.valid:
        run.skip(SkipReason.MALFORMED)
        return None
    if ctype.maintype != "text":
        return None
    if ctype.subtype == "html":
        if not run.options.html_links and (run.pixel is None or run.pixel_added):
            return None
        kind = "html"
    elif ctype.subtype == "plain" and run.options.text_links:
        kind = "text"
    else:
        return None
    if headers is not None:
        disposition = headers.value(run.buf, b"content-disposition")
        if disposition and disposition.partition(";")[0].strip().lower() == "attachment":
            run.skip(SkipReason.ATTACHMENT)
            return None
    return kind


def _encode(
    run: _Run, cte: str, cs: charsets.Charset, raw: bytes, work: bytes, edits: list[_Edit]
) -> tuple[bytes, str] | None:
    """The whole part re-encoded with its edits, and its (possibly new) transfer encoding;
    None when the text no longer fits its charset."""
    new_data, touched = _apply(work, edits)
    if cs.decode_part:
        try:
            new_data = cs.bom + new_data.decode("utf-8").encode(cs.fragment_codec)
        except UnicodeError:
            return None
    if cte in ("7bit", "8bit"):
        # RFC 5322 §2.1.1: 998 characters a line at most; quoted-printable has no such limit
        # to break. Only lines we lengthened count: others were the sender's choice.
        limit = run.options.max_line
        if cs.decode_part:
            too_long = transfer.max_line_exceeded(new_data, limit)
        else:
            too_long = any(transfer.line_length_at(new_data, p) > limit for p in touched)
        if too_long:
            return run.ops.qp_encode(new_data, run.eol), _QP
    if cte == _QP:
        return run.ops.qp_encode(new_data, run.eol), cte  # as transfer.encode does
    return transfer.encode(cte, new_data, run.eol, raw), cte


def _find_links(
    run: _Run,
    kind: str,
    work: bytes,
    cs: charsets.Charset,
    edits: list[_Edit],
    links: list[Link],
) -> None:
    html = kind == "html"
    url_codec = "utf-8" if cs.decode_part else cs.codec
    prefix = run.policy.tracker_prefix
    if html:
        candidates = run.ops.html_links(work, run.optout, url_codec, prefix, scan.unescape_attr)
    else:
        candidates = _text_links(work, url_codec, prefix)
    policy = run.policy
    new_edits, new_links = run.ops.link_edits(
        work,
        candidates,
        len(run.links) + 1,
        run.linker,
        html,
        run.leaf,
        kind,
        policy.tracks if policy.excluded else None,
        Link,
        check_replacement,
    )
    if cs.decode_part:
        # The original bytes of a link, in the part's own charset.
        new_links = [
            Link(k.index, k.url, k.raw.decode(url_codec).encode(cs.fragment_codec), k.part, k.kind)
            for k in new_links
        ]
    edits.extend(new_edits)
    links.extend(new_links)


def _pixel_position(work: bytes, edits: list[_Edit]) -> int:
    """Before the last </body>, else at the end (before the final line breaks)."""
    pos = scan.body_close(work)
    if pos >= 0 and not any(s < pos < e for s, e, _ in edits):
        return pos
    return len(work.rstrip(b"\r\n"))


def _apply(data: bytes, edits: list[_Edit]) -> tuple[bytes, list[int]]:
    """Apply sorted (start, end, new) edits; also return where each new piece starts in
    the result, to measure the lines that changed."""
    pieces: list[bytes] = []
    touched: list[int] = []
    last = 0
    delta = 0
    for s, e, new in edits:
        pieces.append(data[last:s])
        pieces.append(new)
        touched.append(s + delta)
        delta += len(new) - (e - s)
        last = e
    pieces.append(data[last:])
    return b"".join(pieces), touched


def _change_cte(run: _Run, headers: PartHeaders | None, cte: str) -> None:
    """Record the new Content-Transfer-Encoding: in the part's header, or for the caller."""
    if headers is None:
        run.top_cte = cte
        return
    value = cte.encode("ascii")
    pos = headers.fields.get(b"content-transfer-encoding")
    if pos is not None:
        name = run.buf[pos[0] : pos[1]]  # the field name as written, with its colon
        run.edits.append((pos[0], pos[2], name + b" " + value + run.eol))
    else:
        run.edits.append((headers.end, headers.end, _CTE_FIELD + b": " + value + run.eol))
