"""RFC 3464 delivery status notifications: the message/delivery-status part, field by field."""

from __future__ import annotations

import re

from trackmilter.reports.codes import code_name
from trackmilter.reports.fields import Fields, bare_address, parse_blocks, typed_value
from trackmilter.reports.model import RecipientReport
from trackmilter.reports.reason import (
    best_replycode,
    best_status,
    classify,
    find_failure_status,
    find_replycode,
    find_status,
    is_hard,
)

_ADDRESS_REPLY = re.compile(r"\s*<?([^\s<>@]+@[^\s<>:]+)>?:\s+(.+)")
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


def recipient_entry(fields: Fields, context: str, alone: bool = False) -> RecipientReport:
    """One per-recipient group; the human-readable part is the fallback wording.

    Many MTAs put a bare "5.0.0" in Status and the remote server's words only in the text
    part, so `context` (that text) informs the reason when Diagnostic-Code says nothing.
    """
    final = bare_address(fields.get("final-recipient") or fields.get("x-actual-recipient", ""))
    original = bare_address(fields.get("original-recipient", ""))
    diagnostic = typed_value(fields.get("diagnostic-code", ""))
    supplement = fields.get("x400-supplementary-info", "")
    if supplement and not find_status(diagnostic):
        # X.400 gateways (RFC 2156 mapping) put the remote's own reply there: "MTA
        # '62.6.150.133' gives error message 5.7.1 Unable to relay for a@b".
        diagnostic = (diagnostic + " " + supplement.strip(' "')).strip()
    if not diagnostic and "(" in fields.get("status", ""):
        # "Status: 4.0.0 (example.net: host name lookup failure)": RFC 3464 allows a
        # comment, and some MTAs put the cause there instead of in Diagnostic-Code.
        diagnostic = fields["status"].partition("(")[2].rstrip().rstrip(")")
    wording = diagnostic
    if not diagnostic:
        replies = prose_replies(context)
        diagnostic = replies.get((final or original).lower(), "")
        # With one recipient the whole text is about it and may say more than the reply.
        wording = diagnostic if len(replies) > 1 else ""
    action = fields.get("action", "").strip().lower()
    status = best_status(fields.get("status", ""), diagnostic)
    if alone and not diagnostic and status.endswith(".0.0"):
        # A class-only Status and no Diagnostic-Code: the text part of a one-recipient
        # report quotes the remote's reply ("host 10.2.9.112 says: 550 5.1.1 User
        # unknown"); its specific code, of the same class, is the better status.
        quoted = find_failure_status(context)
        if quoted[:1] == status[:1] and not quoted.endswith(".0.0"):
            status = quoted
    replycode = best_replycode(diagnostic)
    unix = fields.get("diagnostic-code", "").lstrip().lower().startswith("x-unix")
    if unix and not any(c.isalpha() for c in diagnostic):
        # A local delivery program failed and left only its exit code: sisimai names the
        # code's reason if it has one, else calls it a mailer error.
        reason = code_name(status) or "mailererror"
    else:
        reason = classify(status, replycode, wording, action, context)
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
        last_attempt_date=fields.get("last-attempt-date", "").strip(),
        will_retry_until=fields.get("will-retry-until", "").strip(),
    )


def prose_replies(context: str) -> dict[str, str]:
    """Replies the text part quotes per address on its own line ("a@b: 550 5.1.1 ...").

    Some MTAs (OpenSMTPD) leave Diagnostic-Code out and give the remote's words only
    in the text part, one line per recipient.
    """
    found: dict[str, str] = {}
    if "@" not in context:
        return found
    for line in context.splitlines():
        m = _ADDRESS_REPLY.match(line)
        if m and (find_replycode(m.group(2)) or find_status(m.group(2))):
            found.setdefault(m.group(1).lower(), m.group(2).strip())
    return found


def _class_only(replycode: str, action: str) -> str:
    """A class-only code ("5.0.0") when the report gives no enhanced code."""
    if replycode[:1] in ("2", "4", "5"):
        return f"{replycode[0]}.0.0"
    return "4.0.0" if action == "delayed" else "5.0.0"


def decode_dsn(text: str, context: str) -> tuple[Fields, list[RecipientReport]]:
    """Per-message fields and per-recipient entries of a delivery-status body."""
    per_message, groups = split_dsn(text)
    groups = [g for g in groups if "action" in g or "status" in g]
    return per_message, [recipient_entry(g, context, len(groups) == 1) for g in groups]
