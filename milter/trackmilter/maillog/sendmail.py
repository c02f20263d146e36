"""Sendmail log lines (`sm-mta[pid]: ...`, `sendmail[pid]: ...`) → records.

PATTERN only picks the candidate lines; the message is then taken apart with str
methods: Sendmail writes `key=value` pairs separated by ", " with `stat=` (free text)
last, and joins a recipient list in `to=` with "," alone, so splitting on ", " is safe
for the fields before `stat=`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from trackmilter.maillog.records import (
    BounceNotice,
    Delivery,
    DeliveryStatus,
    LogRecord,
    MessageQueued,
    RecordType,
    Rejection,
)
from trackmilter.maillog.stamps import FRAME

__all__ = ["PATTERN", "TRIGGERS", "build_sendmail_record", "parse_sendmail_message"]

# Candidate lines only; the fields are checked by parse_sendmail_message.
PATTERN = re.compile(
    FRAME + r"(?P<program>sm-mta|sendmail|sm-msp-queue)\[\d+\]: (?P<msg>(?:[0-9A-Za-z]+: )?"
    r"(?:to=|from=|ruleset=|[0-9A-Za-z]+: (?:DSN|return to sender|postmaster notify): )"
    r"[^\r\n]*)",
    re.MULTILINE | re.ASCII,
)

_NOTICES = ("DSN: ", "return to sender: ", "postmaster notify: ")

# See postfix.TRIGGERS.
TRIGGERS: dict[RecordType, tuple[str, ...]] = {
    Delivery: (": to=",),
    MessageQueued: (": from=",),
    Rejection: ("ruleset=",),
    BounceNotice: tuple(": " + notice for notice in _NOTICES),
}

_BY_DSN_CLASS = {
    "2": DeliveryStatus.SENT,
    "4": DeliveryStatus.DEFERRED,
    "5": DeliveryStatus.BOUNCED,
}
_BY_STAT_WORD = {"Sent": DeliveryStatus.SENT, "Deferred": DeliveryStatus.DEFERRED}


def build_sendmail_record(
    m: re.Match[str], time_of: Callable[[str], datetime | None]
) -> LogRecord | None:
    """The record for one line matched by PATTERN; None when its fields do not add up."""
    stamp, host, program, msg = m.groups()
    when = time_of(stamp)
    return None if when is None else parse_sendmail_message(when, host, program, msg)


def parse_sendmail_message(when: datetime, host: str, program: str, msg: str) -> LogRecord | None:
    """One Sendmail message → a record, or None for lines that carry no mail outcome."""
    if msg.startswith("ruleset="):  # a refusal before any queue id was assigned
        return _rejection(when, host, program, None, msg)
    queue_id, sep, body = msg.partition(": ")
    if not sep or not queue_id.isalnum():
        return None
    if body.startswith("to="):
        return _delivery(when, host, program, queue_id, body)
    if body.startswith("from="):
        return _from(when, host, program, queue_id, body)
    if body.startswith("ruleset="):
        return _rejection(when, host, program, queue_id, body)
    return _notice(when, host, program, queue_id, body)


def _fields(text: str) -> dict[str, str]:
    return {k: v for k, _, v in (item.partition("=") for item in text.split(", "))}


def _delivery(when: datetime, host: str, program: str, queue_id: str, body: str) -> Delivery | None:
    head, sep, stat = body.partition(", stat=")
    if not sep:
        return None
    fields = _fields(head)
    dsn = fields.get("dsn", "")
    status = _BY_DSN_CLASS.get(dsn[:1]) or _BY_STAT_WORD.get(stat.partition(" ")[0].rstrip(":"))
    if status is None:  # stat=queued: accepted for a later run, not an attempt
        return None
    recipients = tuple(r.strip("<>") for r in fields["to"].split(","))
    return Delivery(
        when, host, program, queue_id, recipients, None, fields.get("relay", ""),
        _seconds(fields.get("delay", "")), None, dsn, status, stat,
    )  # fmt: skip


def _seconds(delay: str) -> float | None:
    """Sendmail's `[D+]HH:MM:SS` as seconds; None when absent or malformed."""
    days, _, clock = delay.rpartition("+")
    parts = clock.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or not (days or "0").isdigit():
        return None
    hours, minutes, seconds = (int(p) for p in parts)
    return float(((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds)


def _from(
    when: datetime, host: str, program: str, queue_id: str, body: str
) -> MessageQueued | None:
    fields = _fields(body)
    size, nrcpts = fields.get("size", ""), fields.get("nrcpts", "")
    if not (size.isdigit() and nrcpts.isdigit()):
        return None
    sender = fields["from"].strip("<>")
    msgid = fields.get("msgid")
    return MessageQueued(
        when, host, program, queue_id, sender, int(size), int(nrcpts),
        msgid.strip("<>") if msgid is not None else None,
    )  # fmt: skip


def _rejection(
    when: datetime, host: str, program: str, queue_id: str | None, body: str
) -> Rejection | None:
    head, sep, reject = body.partition(", reject=")
    if not sep:
        return None
    fields = _fields(head)
    code, dsn, text = _reply_parts(reject)
    ruleset = fields.get("ruleset", "")
    arg1 = fields.get("arg1", "").strip("<>") or None
    return Rejection(
        when, host, program, queue_id, ruleset, fields.get("relay", ""), code, dsn, text,
        arg1 if ruleset == "check_mail" else None,
        arg1 if ruleset == "check_rcpt" else None,
    )  # fmt: skip


def _reply_parts(reply: str) -> tuple[str | None, str | None, str]:
    """`550 5.7.1 text` → code, enhanced code, text; either code may be missing."""
    code, _, rest = reply.partition(" ")
    if not (len(code) == 3 and code.isdigit()):
        return None, None, reply
    dsn, _, text = rest.partition(" ")
    if dsn[:1].isdigit() and dsn.count(".") == 2:
        return code, dsn, text
    return code, None, rest


def _notice(
    when: datetime, host: str, program: str, queue_id: str, body: str
) -> BounceNotice | None:
    notice_id, sep, kind = body.partition(": ")
    if not sep or not notice_id.isalnum() or not kind.startswith(_NOTICES):
        return None
    return BounceNotice(when, host, program, queue_id, notice_id, kind)
