"""The decoded shape of a bounce (DSN), read receipt (MDN) or complaint (ARF)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ReportKind = Literal["dsn", "mdn", "arf"]


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """What one report says about one recipient.

    `status` is the RFC 3463 code as reported, or one inferred from the reply code or the
    wording (then only its class is evidence); `reason` uses sisimai's vocabulary so the
    figures can be compared with that project's; `diagnostic` is kept verbatim because it
    is the evidence a person reads.
    """

    recipient: str = ""
    original_recipient: str = ""
    action: str = ""
    status: str = ""
    replycode: str = ""
    diagnostic: str = ""
    remote_mta: str = ""
    reason: str = "undefined"
    hardbounce: bool = False
    feedback_type: str = ""
    disposition: str = ""
    # RFC 3464 §2.3.7, §2.3.9: when the reporting MTA last tried, and until when it will
    # (delay reports); verbatim RFC 5322 dates.
    last_attempt_date: str = ""
    will_retry_until: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    """A report and the keys that tie it back to the message it is about."""

    kind: ReportKind
    recipients: tuple[RecipientReport, ...] = ()
    reporting_mta: str = ""
    original_envelope_id: str = ""
    arrival_date: str = ""
    original_message_id: str = ""
    tracking_id: str = ""
    postfix_queue_id: str = ""
