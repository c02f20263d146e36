"""RFC 5965 abuse reports (ARF) and RFC 8098 read receipts (MDN): one field block each."""

from __future__ import annotations

from email.message import Message

from trackmilter.reports.fields import Fields, all_values, bare_address, parse_blocks, typed_value
from trackmilter.reports.mime import part_text
from trackmilter.reports.model import RecipientReport


def merged_fields(part: Message) -> Fields:
    """All fields of a report part as one mapping (both formats have a single group)."""
    merged: Fields = {}
    for block in parse_blocks(part_text(part)):
        for key, value in block.items():
            merged.setdefault(key, value)
    return merged


def arf_entries(part: Message, fallback_recipient: str) -> list[RecipientReport]:
    """One complaint per Original-Rcpt-To (else the original's To), with its type.

    A complaint is not a delivery failure: reason "feedback", never a hard bounce.
    """
    text = part_text(part)
    fields = merged_fields(part)
    recipients = [bare_address(v) for v in all_values(text, "original-rcpt-to")]
    return [
        RecipientReport(
            recipient=recipient,
            reason="feedback",
            feedback_type=fields.get("feedback-type", "").strip().lower(),
            remote_mta=typed_value(fields.get("reporting-mta", "")),
        )
        for recipient in recipients or [fallback_recipient]
    ]


def mdn_entry(fields: Fields) -> RecipientReport:
    """The receipt: whose client sent it and the disposition it states (RFC 8098 §3.2.6).

    "displayed" means a client showed the message and chose to say so; "deleted" and the
    others are kept verbatim so the view can say exactly that.
    """
    recipient = bare_address(
        fields.get("final-recipient", "") or fields.get("original-recipient", "")
    )
    disposition = fields.get("disposition", "")
    kind = disposition.rpartition(";")[2].strip().lower().split("/")[0].strip()
    return RecipientReport(
        recipient=recipient,
        original_recipient=bare_address(fields.get("original-recipient", "")),
        action=kind,
        disposition=disposition.strip(),
        reason="delivered" if kind in ("displayed", "processed", "dispatched") else "undefined",
        remote_mta=typed_value(fields.get("reporting-ua", "")),
    )
