"""Entry point: raw message bytes → Report (DSN, MDN or ARF) or None when it is not one."""

from __future__ import annotations

from email.message import Message

from trackmilter.reports.arf import arf_entries, mdn_entry, merged_fields
from trackmilter.reports.dsn import decode_dsn
from trackmilter.reports.fields import Fields, typed_value
from trackmilter.reports.mime import (
    Parts,
    address_of,
    attached_headers,
    find_part,
    headers_from_text,
    original_keys,
    parse,
    part_text,
    report_parts,
)
from trackmilter.reports.model import RecipientReport, Report, ReportKind
from trackmilter.reports.notification import decode_notification
from trackmilter.reports.plain import (
    decode_plain,
    from_mail_system,
    report_text,
    split_original,
)

_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_MDN_TYPES = ("message/disposition-notification", "message/global-disposition-notification")
_REPORT_TYPES = frozenset((*_DSN_TYPES, *_MDN_TYPES, "message/feedback-report"))


def _relayed_report(msg: Message, parts: Parts) -> Message | None:
    """A DSN a mail system passed on wrapped in a message of its own (a scanning gateway
    that attaches the report it relays, adding a disclaimer): the attached multipart/report,
    when the wrapper comes from a mail system (MAILER-DAEMON, postmaster, null return path)."""
    attached = [part for ctype, part in parts if ctype == "message/rfc822"]
    if not attached or not from_mail_system(msg):
        return None
    for part in attached:
        body = part.get_payload()
        if not isinstance(body, str) or "multipart/report" not in body[:8192].lower():
            continue
        inner = parse(body.encode("ascii", "surrogateescape"))
        if inner is not None and inner.get_content_type() == "multipart/report":
            return inner
    return None


def decode(raw: bytes) -> Report | None:
    """Decode a report; never raises, because a broken bounce must not break the milter."""
    try:
        msg = parse(raw)
        return None if msg is None else decode_message(msg)
    except Exception:  # noqa: BLE001 - pure decoder at a trust boundary: junk in, None out
        return None


def decode_message(msg: Message, depth: int = 0) -> Report | None:
    """Pick the format from the report part present, falling back to prose bounces."""
    parts = report_parts(msg)
    if depth == 0 and not any(ct in _REPORT_TYPES for ct, _ in parts):
        inner = _relayed_report(msg, parts)
        if inner is not None:
            return decode_message(inner, 1)
    prose, rest = split_original(report_text(parts))
    original = attached_headers(parts) or headers_from_text(rest)
    part = find_part(parts, "message/feedback-report")
    if part is not None:
        fields = merged_fields(part)
        fallback = address_of(original, "to") if original is not None else ""
        return _report("arf", msg, original, fields, arf_entries(part, fallback))
    part = find_part(parts, *_MDN_TYPES)
    if part is not None:
        fields = merged_fields(part)
        return _report("mdn", msg, original, fields, [mdn_entry(fields)])
    part = find_part(parts, *_DSN_TYPES)
    if part is not None:
        # Some MTAs send two parts typed delivery-status, the first holding their prose
        # ("<a@b> has restricted SMS e-mail"): the first with per-recipient groups is the
        # report, and the prose before it is read as the report's text.
        context = prose
        for ctype, each in parts:
            if ctype in _DSN_TYPES:
                text = part_text(each)
                per_message, entries = decode_dsn(text, context)
                if entries:
                    return _report("dsn", msg, original, per_message, entries)
                context = f"{context}\n{text}"
    elif "final-recipient:" in prose.lower():
        # A delivery-status body that lost its MIME part (flattened by a relay). A report
        # is about other addresses than its own addressee, unless its own mail system
        # sends it (a message to oneself that bounced): one from elsewhere that names its
        # To as the failed recipient is a notice imitating a bounce ("messages held").
        per_message, entries = decode_dsn(prose, prose)
        addressee = address_of(msg, "to")
        if addressee.partition("@")[2] != address_of(msg, "from").partition("@")[2]:
            entries = [e for e in entries if e.recipient.lower() != addressee]
        if entries:
            return _report("dsn", msg, original, per_message, entries)
    notification = decode_notification(prose) if "notificationType" in prose else None
    if notification is not None:
        kind, entries, fields = notification
        return _report(kind, msg, original, fields, entries) if entries else None
    entries = decode_plain(msg, prose, original, rest)
    return _report("dsn", msg, original, {}, entries) if entries else None


def _report(
    kind: ReportKind,
    msg: Message,
    original: Message | None,
    fields: Fields,
    entries: list[RecipientReport],
) -> Report:
    """Assemble the report; the tie-back keys come from the original, then the report.

    Postfix writes the original's queue id as `X-Postfix-Queue-ID` in the per-message
    group and in the bounce's own header, so all three places are looked at.
    """
    keys = original_keys(original)
    queue_id = (
        fields.get("x-postfix-queue-id", "")
        or keys.get("x-postfix-queue-id", "")
        or (msg.get("x-postfix-queue-id") or "").strip()
    )
    return Report(
        kind=kind,
        recipients=tuple(entries),
        reporting_mta=typed_value(fields.get("reporting-mta", "")),
        original_envelope_id=fields.get("original-envelope-id", ""),
        arrival_date=fields.get("arrival-date", ""),
        original_message_id=(
            keys.get("message-id", "")
            or fields.get("original-message-id", "")
            or fields.get("message-id", "")
        ),
        tracking_id=keys.get("x-trackmilter-id", ""),
        postfix_queue_id=queue_id,
    )
