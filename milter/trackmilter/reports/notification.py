"""JSON delivery notifications (Amazon SES, also wrapped in an SNS envelope) sent as mail.

SES reports bounces, complaints and deliveries as a JSON document in the body of a plain
mail instead of an RFC 3464 report; the fields map one to one onto a DSN's.
"""

from __future__ import annotations

import json
from typing import Any

from trackmilter.reports.fields import typed_value
from trackmilter.reports.model import RecipientReport, ReportKind
from trackmilter.reports.reason import classify, find_replycode, find_status, is_hard

Notification = tuple[ReportKind, list[RecipientReport], dict[str, str]]


def load(text: str) -> dict[str, Any] | None:
    """The notification object, unwrapping an SNS envelope; None when the body is not one.

    Sendmail breaks lines longer than its limit with "!" + newline + space; that is undone
    first, or the JSON would not parse.
    """
    start = text.find("{")
    end = text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        doc = json.loads(text[start : end + 1].replace("!\n ", ""))
        if isinstance(doc, dict) and isinstance(doc.get("Message"), str):
            doc = json.loads(doc["Message"])
    except ValueError:
        return None
    if isinstance(doc, dict) and doc.get("notificationType") in ("Bounce", "Complaint", "Delivery"):
        return doc
    return None


def _bounce(item: dict[str, Any], temporary: bool) -> RecipientReport:
    diagnostic = typed_value(str(item.get("diagnosticCode", "")))
    status = find_status(str(item.get("status", ""))) or find_status(diagnostic)
    status = status or ("4.0.0" if temporary else "5.0.0")
    replycode = find_replycode(diagnostic)
    action = str(item.get("action", "failed")).lower()
    reason = classify(status, replycode, diagnostic, action)
    return RecipientReport(
        recipient=str(item.get("emailAddress", "")).lower(),
        action=action,
        status=status,
        replycode=replycode,
        diagnostic=diagnostic,
        reason=reason,
        hardbounce=is_hard(reason, status, replycode),
    )


def decode_notification(text: str) -> Notification | None:
    """Kind, recipients and per-message fields of a JSON notification, or None."""
    doc = load(text)
    if doc is None:
        return None
    kind = doc["notificationType"]
    mail = doc.get("mail") or {}
    fields = {"message-id": str(mail.get("messageId", ""))}
    if kind == "Bounce":
        body = doc.get("bounce") or {}
        temporary = body.get("bounceType") == "Transient"
        fields["reporting-mta"] = str(body.get("reportingMTA", ""))
        items = body.get("bouncedRecipients") or []
        return "dsn", [_bounce(i, temporary) for i in items if isinstance(i, dict)], fields
    if kind == "Complaint":
        body = doc.get("complaint") or {}
        feedback = str(body.get("complaintFeedbackType") or "abuse").lower()
        items = body.get("complainedRecipients") or []
        entries = [
            RecipientReport(
                recipient=str(i.get("emailAddress", "")).lower(),
                reason="feedback",
                feedback_type=feedback,
            )
            for i in items
            if isinstance(i, dict)
        ]
        return "arf", entries, fields
    body = doc.get("delivery") or {}
    response = str(body.get("smtpResponse", ""))
    entries = [
        RecipientReport(
            recipient=str(r).lower(),
            action="delivered",
            status=find_status(response) or "2.0.0",
            replycode=find_replycode(response),
            diagnostic=response,
            remote_mta=str(body.get("reportingMTA", "")),
            reason="delivered",
        )
        for r in body.get("recipients") or []
    ]
    return "dsn", entries, fields
