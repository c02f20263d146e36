"""RFC 3464 delivery status notifications: the message/delivery-status part, field by field."""

from __future__ import annotations

from trackmilter.reports.fields import Fields, bare_address, parse_blocks, typed_value
from trackmilter.reports.model import RecipientReport
from trackmilter.reports.reason import (
    best_replycode,
    best_status,
    classify,
    find_replycode,
    find_status,
    is_hard,
)

_RECIPIENT_FIELDS = ("final-recipient", "original-recipient", "x-actual-recipient")


def split_dsn(text: str) -> tuple[Fields, list[Fields]]:
    """The per-message fields and the per-recipient groups of a delivery-status body.

    Groups are told apart by content, not position: some MTAs omit the per-message group
    or leave no blank line after it.
    """
    per_message: Fields = {}
    recipients: list[Fields] = []
    for block in parse_blocks(text):
        if any(k in block for k in _RECIPIENT_FIELDS):
            recipients.append(block)
        else:
            for key, value in block.items():
                per_message.setdefault(key, value)
    return per_message, recipients


def recipient_entry(fields: Fields, context: str) -> RecipientReport:
    """One per-recipient group; the human-readable part is the fallback wording.

    Many MTAs put a bare "5.0.0" in Status and the remote server's words only in the text
    part, so `context` (that text) informs the reason when Diagnostic-Code says nothing.
    """
    final = bare_address(fields.get("final-recipient") or fields.get("x-actual-recipient", ""))
    original = bare_address(fields.get("original-recipient", ""))
    diagnostic = typed_value(fields.get("diagnostic-code", ""))
    action = fields.get("action", "").strip().lower()
    status = best_status(fields.get("status", ""), diagnostic)
    replycode = best_replycode(diagnostic)
    reason = classify(status, replycode, diagnostic, action, context)
    if not status:
        status = find_status(context) or _class_only(replycode, action)
    return RecipientReport(
        recipient=final or original,
        original_recipient=original,
        action=action,
        status=status,
        replycode=replycode or (find_replycode(context) if not diagnostic else ""),
        diagnostic=diagnostic,
        remote_mta=typed_value(fields.get("remote-mta", "")),
        reason=reason,
        hardbounce=is_hard(reason, status, replycode),
    )


def _class_only(replycode: str, action: str) -> str:
    """A class-only code ("5.0.0") when the report gives no enhanced code."""
    if replycode[:1] in ("2", "4", "5"):
        return f"{replycode[0]}.0.0"
    return "4.0.0" if action == "delayed" else "5.0.0"


def decode_dsn(text: str, context: str) -> tuple[Fields, list[RecipientReport]]:
    """Per-message fields and per-recipient entries of a delivery-status body."""
    per_message, groups = split_dsn(text)
    return per_message, [
        recipient_entry(g, context) for g in groups if "action" in g or "status" in g
    ]
