"""The wording behind the reasons: the ordered rule table and how text is read against it.

The rules are tried in order and the first that matches wins, so narrower causes come
before broader ones (a block-list name contains "spam", a quota message may say
"rejected"). The phrases are ones many MTAs share, never one server's sentence.
"""

from __future__ import annotations

import re

from trackmilter.reports.matching import first_match, fold, prepared, rx
from trackmilter.reports.phrases_recipient import RECIPIENT_RULES
from trackmilter.reports.phrases_sender import SENDER_RULES

__all__ = ["BARE_REJECTION", "TEXT_RULES", "fold", "reason_from_text", "wording"]

# Said of the whole delivery, not of the reply it quotes, so they come before any reply
# wording: a local delivery program's own output ("Command output: avpcheck: unable to
# connect ...", Sendmail's and Postfix's report of a pipe) is a mailer's failure whatever
# the program printed; a permanent failure that says it was a temporary one retried until
# the reporting MTA gave up ("TEMP_FAILURE" in Gmail's permanent-failure notice, "Delivery
# failed 20 attempts", "Exceeded Maximum Delivery Attempts") is sisimai's "expired" (its
# Reason/Expired.pm: "delivery time has expired due to a connection failure or a delay").
EARLY_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "expired",
        rx(
            r"temp_failure",
            r"(?:delivery )?failed (?:after )?\d+ (?:delivery )?attempts",
            r"(?:exceeded|reached) (?:the )?maximum (?:number of )?delivery attempts",
        ),
    ),
)
# The recipient's mailbox being full is said in the same words whoever says it (a local
# program's "Command output: Mail quota exceeded", a relay's "failed due to a full
# mailbox. We have already made numerous attempts"): it comes before the sender-side
# rules, whose broader words ("numerous", "try again later") would otherwise take it;
# then a local program's own failure, before the words it printed ("unable to connect").
_MAILBOX_FULL = RECIPIENT_RULES[0]
assert _MAILBOX_FULL[0] == "mailboxfull"
_PROGRAM = ("mailererror", rx(r"command output:", r"command died with status"))
TEXT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    EARLY_RULES + (_MAILBOX_FULL, _PROGRAM) + SENDER_RULES + RECIPIENT_RULES[1:]
)
# A bare "rejected" says only that something was refused: weaker than a specific code.
BARE_REJECTION = re.compile(r"\b(?:rejected|refused|denied)\b")

_RULES = prepared(TEXT_RULES)

# Multi-line replies repeat "550-5.7.1 " on every line, splitting phrases in two.
_REPLY_PREFIX = re.compile(r"(?<![\w.])[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3} )?")

# An address is no wording: "ultravirus2001@yahoo.com" says nothing of a virus.
_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")

# A server's reply is a few lines; past this the text is boilerplate or the returned message.
_MAX_WORDING = 2048


def wording(text: str) -> str:
    """The text as the rules read it: lower-cased, reply-code prefixes out, spaces collapsed."""
    low = fold(text[:_MAX_WORDING])
    if "@" in low:
        low = _ADDRESS.sub(" ", low)
    return " ".join(_REPLY_PREFIX.sub(" ", low).split())


def reason_from_text(text: str) -> str:
    """The first reason whose wording appears in the text, or ""."""
    return first_match(_RULES, wording(text))
