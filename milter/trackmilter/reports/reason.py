"""Why a delivery failed: codes and wording → sisimai's reason vocabulary, hard or soft.

A 5.x.x status only says "permanent"; it does not say "the address is invalid". The reason
comes first from the diagnostic wording (the remote server's own words are the most
specific evidence), then from the status code's subject/detail, and only then from the
class. The rules are general phrases that many MTAs share, never one server's sentence.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TypeVar

from trackmilter.reports.codes import code_name
from trackmilter.reports.conventions import gmail_state_reason, server_reason
from trackmilter.reports.matching import first_match, prepared
from trackmilter.reports.rules import BARE_REJECTION, fold, reason_from_text

# RFC 3463 subject.detail → reason, for codes that name a cause (X.7.1 and X.0.0 do not).
_CODE_REASONS: dict[str, str] = {
    "1.0": "userunknown",
    "1.1": "userunknown",
    "1.2": "hostunknown",
    "1.3": "userunknown",
    "1.4": "filtered",
    "1.6": "hasmoved",
    "1.7": "rejected",
    "1.8": "rejected",
    "1.9": "systemerror",
    "1.10": "notaccept",
    "2.0": "filtered",
    "2.1": "suspend",
    "2.2": "mailboxfull",
    "2.3": "exceedlimit",
    "2.4": "filtered",
    "3.0": "systemerror",
    "3.1": "systemfull",
    "3.2": "notaccept",
    "3.3": "systemerror",
    "3.4": "mesgtoobig",
    "3.5": "systemerror",
    "4.0": "networkerror",
    "4.1": "expired",
    "4.2": "networkerror",
    "4.3": "systemerror",
    "4.4": "hostunknown",
    "4.5": "systemfull",
    "4.6": "networkerror",
    "4.7": "expired",
    "5.3": "toomanyconn",
    "5.4": "systemerror",
    "5.5": "systemerror",
    "5.6": "securityerror",
    "6.0": "contenterror",
    "6.1": "contenterror",
    "6.2": "contenterror",
    "6.3": "contenterror",
    "6.5": "contenterror",
    "6.6": "contenterror",
    "6.7": "contenterror",
    "6.8": "contenterror",
    "6.9": "contenterror",
    "7.13": "suspend",
    "7.16": "mesgtoobig",
    "7.17": "hasmoved",
    "7.18": "hasmoved",
    "7.20": "authfailure",
    "7.21": "authfailure",
    "7.22": "authfailure",
    "7.23": "authfailure",
    "7.24": "authfailure",
    "7.25": "requireptr",
    "7.26": "authfailure",
    "7.27": "notaccept",
    "7.7": "securityerror",
    "7.8": "securityerror",
    "7.9": "securityerror",
    "7.10": "securityerror",
    "7.11": "securityerror",
    "7.14": "securityerror",
    "7.15": "securityerror",
    "7.2": "securityerror",
    "7.3": "securityerror",
    "7.5": "securityerror",
    "7.6": "securityerror",
}

# Codes whose subject/detail names the cause more precisely than any wording could; the
# generic ones (X.0.0, X.7.1, X.5.0, ...) leave the reason to the text.
_DECISIVE_CODES = frozenset(
    {
        "1.0",
        "1.1",
        "1.2",
        "1.3",
        "1.6",
        "1.7",
        "1.8",
        "1.10",
        "2.2",
        "2.3",
        "3.2",
        "3.4",
        "4.7",
        "5.3",
    }
    | {
        "7.13",
        "7.16",
        "7.17",
        "7.18",
        "7.20",
        "7.21",
        "7.22",
        "7.23",
        "7.24",
        "7.25",
        "7.26",
        "7.27",
    }
    | {f"6.{n}" for n in range(10)}
)


# Not part of a longer dotted number, nor of a name ("mxl_mta-5.5.0-3"); a version
# ("X-Mailman-Version: 2.0.1", "Eudora Version 5.0.2") is no status either (_VERSION).
_STATUS = re.compile(
    r"(?<![\w.])(?<![A-Za-z_]-)([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]|-\d)"
)
_VERSION = re.compile(r"version:? ?$|\bv ?$", re.I)
# A reply code stands at the start of a reply or after a colon/space; never part of an IP
# address, a date or a longer number.
# A telephone number is no reply: "(480) 624-2500", "480-624-2500".
_REPLY = re.compile(
    r"(?:^|[\s:(\[<\"'])([245][0-9][0-9])(?=[\s\-:,;.\])]|$)(?![.\d]\d)(?![)\-]? ?\d{3}-\d{4})"
)

_SUMMARIZED = re.compile(r"\s*[245]\.\d{1,3}\.\d{1,3} - [^'\n]{0,80}?([245]\d\d)[ -]'(.+)'")
_SENDMAIL_INNER = re.compile(r"^[245]\d\d [^.]{0,80}?\.\.\. ([245]\d\d)(?= )")
_QUOTED_STATUS = re.compile(
    r"(?<![\d.])([245]\d\d)[ -]+['\"<(#]?([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])"
)


# The SMTP command a reply answered, as MTAs quote it ("after RCPT TO", "in reply to end
# of DATA command", "did not like our MAIL FROM").
_COMMANDS = prepared(
    (
        # Sendmail's session transcript names the command it sent: ">>> DATA", "<<< 550".
        ("DATA", re.compile(r">>> data\b")),
        ("RCPT", re.compile(r"\brcpt\b|like recipient\b")),
        (
            "DATA",
            re.compile(r"(?:end of data|data command|after data|message body|end of message)\b"),
        ),
        ("MAIL", re.compile(r"mail from\b")),
        (
            "HELO",
            re.compile(
                r"(?:ehlo|helo|initial connection|connection attempt|connect greeting"
                r"|connection greeting|greeting)\b"
            ),
        ),
    )
)

# A code that narrows the wording's cause: "too large" with X.2.3 is the recipient's own
# size limit, "unknown" with X.1.2 is about the domain (sisimai's Reason/MesgTooBig.pm
# and UserUnknown.pm defer to those codes the same way).
_REFINED = {("mesgtoobig", "2.3"): "exceedlimit", ("userunknown", "1.2"): "hostunknown"}

_T = TypeVar("_T", str, tuple[str, ...])
_HARD = frozenset({"hasmoved", "hostunknown", "userunknown"})
_NOT_FAILURES = frozenset({"delivered", "feedback", "vacation"})


def _statuses(text: str) -> list[str]:
    """Every RFC 3463 code in a text, versions of software left out."""
    found = []
    for m in _STATUS.finditer(text):
        if not _VERSION.search(text[max(0, m.start() - 9) : m.start()]):
            found.append(".".join(m.groups()))
    return found


def find_status(text: str) -> str:
    """The first RFC 3463 enhanced status code in a text, or ""."""
    if "." not in text:
        return ""
    found = _statuses(text)
    return found[0] if found else ""


def find_failure_status(text: str) -> str:
    """The first 4.X.Y or 5.X.Y code: a failure's own code, never a 2.X.Y of a transcript."""
    return next((s for s in _statuses(text) if s[0] in "45"), "") if "." in text else ""


def best_status(field: str, diagnostic: str) -> str:
    """The code of the last reply quoted in the diagnostic, else a specific Status field.

    A reply quoted by the remote server is more precise than the reporting MTA's summary
    in Status, and when relays wrap replies in replies the last one is the original's.
    """
    quoted = _quoted_failures(diagnostic)
    if quoted:
        return ".".join(quoted[-1][1:])
    status = find_status(field)
    if status and not status.endswith(".0.0"):
        return status
    found = _statuses(diagnostic)
    return (_failures(found) or found or [status])[0]


@lru_cache(maxsize=32)
def _quoted_failures(diagnostic: str) -> list[tuple[str, ...]]:
    """Quoted replies with their codes; best_status and best_replycode both ask."""
    return _failures(_QUOTED_STATUS.findall(diagnostic))


def _failures(found: list[_T]) -> list[_T]:
    """Failure replies (4xx/5xx) when a transcript also quotes the successful ones.

    A 503 "bad sequence of commands" (RFC 5321 §4.2.3) after a refused RCPT only says the
    client went on to DATA with no recipient left: a consequence, never the cause, so it
    counts only when no other failure is quoted (Sendmail: "550 5.1.1 User unknown" then
    "503 5.5.2 Need Rcpt command").
    """
    failed = [f for f in found if str(f[0])[0] in "45"]
    causes = [f for f in failed if not _is_503(f)]
    if causes:
        return causes
    return failed or found


def _is_503(found: str | tuple[str, ...]) -> bool:
    return found[0] == "503" if isinstance(found, tuple) else found == "503"


def best_replycode(diagnostic: str) -> str:
    """The reply code that goes with `best_status`: the last quoted reply, else the first."""
    quoted = _quoted_failures(diagnostic)
    if quoted:
        return str(quoted[-1][0])
    if "... " in diagnostic:
        # Sendmail: "554 <a@b>... 550 Host unknown" quotes the remote's reply after "...".
        inner = _SENDMAIL_INNER.search(diagnostic)
        if inner:
            return inner.group(1)
    codes = _failures(_REPLY.findall(diagnostic)) if " 2" in diagnostic else []
    return codes[0] if codes else find_replycode(diagnostic)


def find_replycode(text: str) -> str:
    """The first SMTP reply code (2xx/4xx/5xx) in a text, or ""."""
    m = _REPLY.search(text)
    return m.group(1) if m else ""


def reason_from_status(status: str) -> str:
    """The reason an RFC 3463 code names by its subject and detail, or ""."""
    if status.startswith("2."):
        return "delivered"
    return _CODE_REASONS.get(status.partition(".")[2], "")


@lru_cache(maxsize=32)
def smtp_command(text: str) -> str:
    """The SMTP command the quoted reply answered (RCPT, DATA, MAIL, HELO), or ""."""
    return first_match(_COMMANDS, fold(text))


def classify(
    status: str, replycode: str, diagnostic: str, action: str = "", context: str = ""
) -> str:
    """Combine wording, status, command and action into one reason.

    Evidence is taken from the most specific source first: a server's documented error
    code (conventions.py), the server's own reply (a relay's summary of it set aside),
    then a status code that names a cause, then the report's prose (`context`), then the
    code's class and what the failed SMTP command implies (after sisimai's Reason.pm). An unknown-user reply only proves a wrong address when
    it answered RCPT TO (or the reporting MTA says so itself, quoting no remote reply);
    the same words after DATA come from a per-recipient filter, and after MAIL FROM they
    are about the sender.
    Without any cause: "expired" for a delay, "onhold" when codes exist, else "undefined".
    """
    action = action.lower()
    if action in ("delivered", "relayed", "expanded") or status.startswith("2."):
        return "delivered"
    detail = status.partition(".")[2]
    if " - " in diagnostic and "'" in diagnostic:
        diagnostic = _relayed_reply(diagnostic)
    command = smtp_command(diagnostic) or smtp_command(context)
    reason = server_reason(diagnostic)
    if reason:
        return reason
    text_reason = reason_from_text(diagnostic)
    if text_reason != "failedstarttls":
        reason = gmail_state_reason(diagnostic, status, text_reason)
        if reason:
            return reason
    reason = _address_reason(text_reason, command, detail, replycode, diagnostic)
    if reason:
        return _temporary(_REFINED.get((reason, detail), reason), status)
    if detail in _DECISIVE_CODES:
        return _CODE_REASONS[detail]
    if _bare_rejection(diagnostic):
        # Refused at the greeting or EHLO: the connecting host itself is unwelcome; an
        # X.7.Y code says more than a bare "rejected" (sisimai: a security matter).
        if command == "HELO":
            return "blocked"
        return "securityerror" if detail.startswith("7.") else "rejected"
    reason = reason_from_text(context) if context else ""
    reason = _address_reason(reason, command, detail, replycode, context)
    if reason:
        return _temporary(reason, status)
    if _bare_rejection(context):
        return "rejected"
    reason = code_name(status)
    if reason:
        return reason
    if detail.startswith("7."):
        # sisimai: an X.7.Y code with no other evidence is a security matter.
        return "securityerror"
    if action == "delayed":
        # A delay whose cause no words or code name is late delivery (sisimai's
        # "expired"), whatever command the last attempt stopped at.
        return "expired"
    if command == "MAIL":
        return "rejected"
    if command == "HELO":
        return "blocked"
    return "onhold" if status or replycode else "undefined"


def _address_reason(reason: str, command: str, detail: str, replycode: str, text: str) -> str:
    """Address problems read in the light of the SMTP command they answered.

    After MAIL FROM they concern the sender. An unknown user quoted from a remote reply
    to anything but RCPT TO (and without a 5.1.x code) is a per-recipient filter.
    """
    if reason not in ("userunknown", "hostunknown"):
        return reason
    if command == "MAIL":
        return "rejected"
    quoted = bool(replycode) and replycode in text
    # X.1.Y codes are about the address; X.5.Y ones answer a command, not the content.
    if (
        reason == "userunknown"
        and command != "RCPT"
        and not detail.startswith(("1.", "5."))
        and quoted
    ):
        return "filtered"
    return reason


def _relayed_reply(diagnostic: str) -> str:
    """The remote's own reply when a relay prefixed its summary of it (Amazon SES:
    "5.1.0 - Unknown address error 550-'5.7.1 ... Access denied' (delivery attempts: 0)");
    the summary is the relay's guess, the quoted reply is the evidence."""
    m = _SUMMARIZED.match(diagnostic)
    return f"{m.group(1)} {m.group(2)}" if m else diagnostic


def _bare_rejection(text: str) -> bool:
    """A bare "rejected"; Postfix's "Recipient address rejected:" only prefixes a cause."""
    low = fold(text)
    if "recipient address rejected" in low:
        low = low.replace("recipient address rejected", "")
    return bool(BARE_REJECTION.search(low))


def _temporary(reason: str, status: str) -> str:
    """Temporary failures change meaning: a system error reported by mail means the retries
    are running out, and a host "not found" only for now is a DNS failure, not a bad domain."""
    if status.startswith("4"):
        return {"hostunknown": "networkerror"}.get(reason, reason)
    return reason


def is_hard(reason: str, status: str, replycode: str) -> bool:
    """Sisimai's rule: only a wrong address is a hard bounce; everything else may pass later."""
    if reason in _NOT_FAILURES:
        return False
    if reason == "notaccept":
        return not (status or replycode).startswith("4")
    return reason in _HARD
