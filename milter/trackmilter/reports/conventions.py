"""Per-server conventions: servers whose reports encode the cause in their own way.

These follow sisimai's Lhost modules (BSD-2-Clause, Copyright (C) 2014 azumakuniyuki):
the server's documented wording or numbering, not any one message's sentence.
"""

from __future__ import annotations

import re

from trackmilter.reports.codes import code_name
from trackmilter.reports.rules import fold

# Gmail quotes the remote reply with the SMTP state it failed in: "... (state 14)."
# After sisimai's Lhost/Gmail.pm: the state names the command, and so the reason; a
# specific enhanced code in the reply overrides it.
_GMAIL_STATE = re.compile(r"\(state (\d{1,2})\)")
_GMAIL_STATES = {
    "6": "systemerror",
    "8": "systemerror",
    "9": "systemerror",
    "12": "norelaying",
    "13": "blocked",
    "14": "userunknown",
    "15": "filtered",
    "17": "filtered",
    "18": "filtered",
}
_SPECIFIC = re.compile(r"[45]\.[1-7]\.[1-9]$")

# Google Groups refuses a post with a notice listing four possible causes as bullets,
# in the poster's language; sisimai's Lhost/GoogleGroups.pm calls that "rejected".
_BULLET = re.compile(r"^ ?\* ?", re.M)
GROUPS_DOMAIN = "@googlegroups.com"


def gmail_state_reason(diagnostic: str, status: str, text_reason: str) -> str:
    """The reason Gmail's "(state N)" implies, or "".

    With a specific enhanced code the state only says which command failed: the
    reply's own words (`text_reason`), else the code, name the cause.
    """
    if "(state " not in diagnostic:
        return ""
    m = _GMAIL_STATE.search(diagnostic)
    reason = _GMAIL_STATES.get(m.group(1), "") if m else ""
    if reason and _SPECIFIC.match(status):
        return text_reason or code_name(status) or reason
    return reason


def groups_reason(address: str, prose: str) -> str:
    """ "rejected" for a Google Groups refusal notice (four bullet causes), else ""."""
    if address.endswith(GROUPS_DOMAIN) and len(_BULLET.findall(prose)) == 4:
        return "rejected"
    return ""


# Orange (France Télécom) tags every reply with a documented code, "OFR_506" or
# "LPN007_416"; its last three digits name the cause. After sisimai's Rhost/FrancePTT.pm.
_ORANGE_TAG = re.compile(r"\b(?:lpn|lpnaaa|ofr|ouk)(?:_(\d{3})|\d{3}[-_](\d{3}))\b")
_ORANGE_CODES = {
    "101": "blocked",
    "102": "blocked",
    "103": "blocked",
    "104": "toomanyconn",
    "305": "securityerror",
    "401": "blocked",
    "402": "securityerror",
    "403": "rejected",
    "405": "rejected",
    "415": "rejected",
    "416": "userunknown",
    "417": "mailboxfull",
    "418": "userunknown",
    "420": "suspend",
    "421": "rejected",
    "426": "suspend",
    "505": "systemerror",
    "506": "spamdetected",
    "510": "blocked",
    "514": "mesgtoobig",
    "517": "policyviolation",
    "630": "policyviolation",
    "999": "blocked",
}


def orange_reason(low: str) -> str:
    """The reason an Orange reply's own error tag names, or "" (`low`: lower-cased text)."""
    if "ofr" not in low and "lpn" not in low and "ouk" not in low:
        return ""
    m = _ORANGE_TAG.search(low)
    return _ORANGE_CODES.get(m.group(1) or m.group(2), "") if m else ""


# Spectrum (Charter) cites its acceptable-use policy code, "AUP#In-1310"; codes and ranges
# after sisimai's Rhost/Spectrum.pm.
_SPECTRUM_TAG = re.compile(r"aup#[a-z-]*(\d{4})")
_SPECTRUM_CODES = {
    1000: "blocked",
    1010: "rejected",
    1090: "systemerror",
    1260: "networkerror",
    1500: "rejected",
    1520: "rejected",
    1530: "mesgtoobig",
    1540: "toomanyconn",
    1550: "toomanyconn",
    1560: "policyviolation",
}
_SPECTRUM_RANGES = (
    (1020, 1080, "rejected"),
    (1100, 1150, "blocked"),
    (1160, 1190, "policyviolation"),
    (1200, 1250, "blocked"),
    (1300, 1490, "toomanyconn"),
)


def spectrum_reason(low: str) -> str:
    """The reason a Spectrum policy code names, or "" (`low`: lower-cased text)."""
    m = _SPECTRUM_TAG.search(low) if "aup#" in low else None
    if not m:
        return ""
    code = int(m.group(1))
    found = _SPECTRUM_CODES.get(code, "")
    return found or next((r for lo, hi, r in _SPECTRUM_RANGES if lo <= code <= hi), "")


# Yahoo's published SMTP error for a recipient without an account: "554 delivery error: dd
# This user doesn't have a yahoo.com account" (Yahoo Sender Hub, "SMTP error codes"). Yahoo
# gives it after DATA for every recipient of the message, so the command does not make it
# a content filter's answer (sisimai's Rhost/YahooInc.pm reads it the same way).
_YAHOO_NO_ACCOUNT = re.compile(r"\bdd (?:this )?user doesn't have an? \S+ account")


def server_reason(diagnostic: str) -> str:
    """The reason a server's own documented error code names, or ""."""
    low = fold(diagnostic)
    if "dd " in low and _YAHOO_NO_ACCOUNT.search(low):
        return "userunknown"
    return orange_reason(low) or spectrum_reason(low)
