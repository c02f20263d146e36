"""The wording behind the reasons: the ordered rule table and how text is read against it.

The rules are tried in order and the first that matches wins, so narrower causes come
before broader ones (a block-list name contains "spam", a quota message may say
"rejected"). The phrases are ones many MTAs share, never one server's sentence.
"""

from __future__ import annotations

import re
from functools import lru_cache

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
            r"failed (?:after )?\d+ (?:delivery )?attempts",
            r"exceeded (?:the )?maximum (?:number of )?delivery attempts",
            r"reached (?:the )?maximum (?:number of )?delivery attempts",
        ),
    ),
)
# Causes said in the same words whoever says them come before the sender-side rules,
# whose broader words would otherwise take them: the recipient's mailbox being full (a
# local program's "Command output: Mail quota exceeded", a relay's "failed due to a full
# mailbox. We have already made numerous attempts"), then a local program's own failure
# before the words it printed ("unable to connect"), then a refusal to relay before the
# remedy it names (Sendmail's "553 5.7.1 Relaying denied. Proper authentication
# required": the refusal is the cause, whatever the code's generic X.7.1 says).
_FIRST = ("mailboxfull", "norelaying")
_PROGRAM = ("mailererror", rx(r"command output:", r"command died with status"))
_EARLY_RECIPIENT = tuple(r for r in RECIPIENT_RULES if r[0] in _FIRST)
assert [r[0] for r in _EARLY_RECIPIENT] == list(_FIRST)
TEXT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    EARLY_RULES
    + _EARLY_RECIPIENT[:1]
    + (_PROGRAM,)
    + _EARLY_RECIPIENT[1:]
    + SENDER_RULES
    + tuple(r for r in RECIPIENT_RULES if r[0] not in _FIRST)
)

# A bare "rejected" says only that something was refused: weaker than a specific code.
BARE_REJECTION = re.compile(r"\b(?:rejected|refused|denied)\b")

_RULES = prepared(TEXT_RULES)

# Multi-line replies repeat "550-5.7.1 " on every line, splitting phrases in two.
_REPLY_PREFIX = re.compile(r"(?<![\w.])[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3} )?")

# A server's reply is a few lines; past this the text is boilerplate or the returned message.
_MAX_WORDING = 2048


def wording(text: str) -> str:
    """The text as the rules read it: lower-cased, reply-code prefixes out, spaces collapsed."""
    words = _REPLY_PREFIX.sub(" ", fold(text[:_MAX_WORDING])).split()
    # An address is no wording: "ultravirus2001@yahoo.com" says nothing of a virus.
    return " ".join(w for w in words if "@" not in w)


@lru_cache(maxsize=32)
def reason_from_text(text: str) -> str:
    """The first reason whose wording appears in the text, or ""."""
    return first_match(_RULES, wording(text))
