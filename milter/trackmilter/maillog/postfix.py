"""Postfix log lines → records: one compiled pattern for every line shape we keep.

Each kind also names a trigger literal its lines contain, so `LineParser.scan` finds
candidate lines with a substring search in C: most lines of a busy log (connect,
disconnect, TLS, warnings) never reach Python, which is how a Python parser outruns
pflogsumm. Dispatch is on the shape of the message, not on the service name: custom
master.cf services (`relay`, `amavis`, a syslog_name such as `postfix-out/smtp`) log
deliveries in the same shape as smtp(8).
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
    MessageExpired,
    MessageId,
    MessageQueued,
    MessageRemoved,
    RecordType,
    Rejection,
    make,
)
from trackmilter.maillog.stamps import FRAME

__all__ = ["PATTERN", "TRIGGERS", "build_postfix_record"]

# A literal that every line of a kind contains: `LineParser.scan` finds these with a
# plain substring search and runs PATTERN only on the lines that hold one.
TRIGGERS: dict[RecordType, tuple[str, ...]] = {
    Delivery: (": to=<",),
    MessageQueued: (": from=<",),
    MessageExpired: (", status=expired, returned",),
    MessageRemoved: (": removed",),
    MessageId: (": message-id=",),
    Rejection: ("reject: ",),
    BounceNotice: (" notification: ",),
}

PATTERN = re.compile(
    FRAME
    # NAME/service[pid]: QID: — NAME is the syslog_name (`postfix`, `postfix-out`, ...).
    + r"(?P<program>[^ \[/\r\n]+/[^ \[\r\n]+)\[\d+\]: (?P<qid>[0-9A-Za-z]+): (?:"
    # Delivery agents (smtp, lmtp, local, virtual, pipe, error, retry, discard):
    # the text in parentheses is free-form and may hold parentheses and commas itself.
    r"to=<(?P<to>[^>\r\n]*)>, (?:orig_to=<(?P<orig_to>[^>\r\n]*)>, )?"
    r"relay=(?P<relay>[^,\r\n]*), (?:\w+=[^,\r\n]*, )*?"
    # A number, not any run of digits and dots: `float("1..2")` would raise on a line
    # that some relay or log rewriter mangled, and the follower would stop on it.
    r"delay=(?P<delay>\d+(?:\.\d+)?), "
    r"(?:delays=(?P<delays>\d+(?:\.\d+)?(?:/\d+(?:\.\d+)?){3}), )?"
    r"dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}), status=(?P<status>sent|deferred|bounced|expired)\b"
    r"(?: \(?(?P<reply>[^\r\n]*))?"
    # qmgr
    r"|from=<(?P<sender>[^>\r\n]*)>, (?:size=(?P<size>\d+), nrcpt=(?P<nrcpt>\d+)"
    r"|(?P<expired>status=expired, returned to sender))"
    r"|(?P<removed>removed)(?=\r?$)"
    # cleanup
    r"|message-id=(?P<message_id>[^\r\n]*)"
    # smtpd / cleanup: [milter-]reject: STAGE from CLIENT: [CODE ][X.Y.Z ]TEXT; trailer.
    # TEXT may contain "; " itself: the greedy group leaves only the last trailer out.
    r"|(?:milter-)?reject: (?P<stage>[\w-]+) from (?P<client>[^ \r\n]+?): "
    r"(?:(?P<code>[245]\d\d) )?(?:(?P<reject_dsn>[245]\.\d{1,3}\.\d{1,3}) )?"
    r"(?P<text>[^\r\n]*); (?:from=<(?P<reject_from>[^>\r\n]*)> )?"
    r"(?:to=<(?P<reject_to>[^>\r\n]*)> )?proto="
    # bounce
    r"|(?P<notice>(?:sender|postmaster) [\w -]+ notification): (?P<notice_qid>[0-9A-Za-z]+)(?=\r?$)"
    r")[^\r\n]*",
    re.MULTILINE | re.ASCII,
)

_STATUS = {s.value: s for s in DeliveryStatus}


def build_postfix_record(
    m: re.Match[str], time_of: Callable[[str], datetime | None]
) -> LogRecord | None:
    """The record for one line matched by PATTERN; None when its stamp is not a real time."""
    # One groups() call: a lookup by group name costs about as much as the match itself.
    (
        stamp, host, program, qid,
        to, orig_to, relay, delay, delays, dsn, status, reply,
        sender, size, nrcpt, expired, removed, message_id,
        stage, client, code, reject_dsn, text, reject_from, reject_to,
        notice, notice_qid,
    ) = m.groups()  # fmt: skip
    when = time_of(stamp)
    if when is None:
        return None
    common = {"time": when, "host": host, "program": program, "queue_id": qid}
    if to is not None:
        # The reply is the text inside the outer parentheses; a line that syslog cut
        # short has no closing one and keeps all it has.
        reply = reply[:-1] if reply and reply[-1] == ")" else reply or ""
        return make(
            Delivery, **common, recipients=(to,), orig_to=orig_to, relay=relay,
            delay=float(delay), delays=delays, dsn=dsn, status=_STATUS[status], reply=reply,
        )  # fmt: skip
    if size is not None:
        return make(
            MessageQueued, **common, sender=sender, size=int(size), nrcpt=int(nrcpt),
            message_id=None,
        )  # fmt: skip
    if removed is not None:
        return make(MessageRemoved, **common)
    if message_id is not None:
        return make(MessageId, **common, message_id=message_id.strip("<>"))
    if stage is not None:
        common["queue_id"] = None if qid == "NOQUEUE" else qid
        return make(
            Rejection, **common, stage=stage, client=client, code=code, dsn=reject_dsn,
            text=text, sender=reject_from, recipient=reject_to,
        )  # fmt: skip
    if expired is not None:
        return make(MessageExpired, **common, sender=sender)
    return make(BounceNotice, **common, notice_queue_id=notice_qid, kind=notice)
