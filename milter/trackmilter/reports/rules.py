"""The wording and code tables behind the reasons, and the fast matching of the wording.

Each reason is one regular expression over lower-cased, whitespace-collapsed text; the
rules are tried in order and the first that matches wins. The phrases are ones many MTAs
share, never one server's sentence.
"""

from __future__ import annotations

import re

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(text: str) -> str:
    """ASCII lower-casing that keeps every index: patterns then need no re.I (far slower)."""
    return text.translate(_ASCII_LOWER)


_LITERAL = re.compile(r"[a-z0-9 '@_-]+")


def _split_top(pattern: str) -> list[str]:
    """The alternatives of a pattern: `|` outside any group or class."""
    parts, depth, start, escaped, in_class = [], 0, 0, False, False
    for i, ch in enumerate(pattern):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
    parts.append(pattern[start:])
    return parts


def _literal(text: str) -> str:
    """The literal text a pattern fragment must start with (a quantified last char dropped)."""
    m = _LITERAL.match(text)
    if not m:
        return ""
    quantified = text[m.end() : m.end() + 1] in ("?", "*", "{")
    return m.group()[:-1] if quantified else m.group()


def _prefixes(alternative: str) -> list[str] | None:
    """Literal texts one of which must start any match of `alternative`, or None.

    Handles a plain word start and a leading group of plain words ("(?:a|b) c"); anything
    else (a class, an optional group, a nested group) gives None.
    """
    alternative = alternative.removeprefix("\\b")
    if not alternative.startswith("(?:"):
        literal = _literal(alternative)
        return [literal] if len(literal) >= 3 else None
    inner = alternative[3:]
    end = inner.find(")")
    if end < 0 or "(" in inner[:end] or "\\" in inner[:end] or "[" in inner[:end]:
        return None
    if inner[end + 1 : end + 2] in ("?", "*", "{"):
        return None
    literals = [_literal(option) for option in inner[:end].split("|")]
    return literals if all(len(x) >= 2 for x in literals) else None


def anchors(pattern: str) -> tuple[str, ...] | None:
    """Texts at least one of which occurs wherever the pattern matches, or None if unknown.

    A substring test is far cheaper than a regex search, so a rule whose anchors are all
    absent is skipped without running its pattern.
    """
    found: list[str] = []
    for alternative in _split_top(pattern):
        prefixes = _prefixes(alternative)
        if prefixes is None:
            return None
        found.extend(prefixes)
    return tuple(found)


def _rx(*alternatives: str) -> re.Pattern[str]:
    """One pattern per reason, matched against lower-cased text (cheaper than re.I).

    Alternatives are joined bare (alternation binds loosest, so no group is needed) and
    mostly start with a word, not with \\b: the engine can then skip ahead on their first
    letters instead of trying every position.
    """
    return re.compile("|".join(alternatives))


# Ordered: the first matching rule wins, so narrower causes come before broader ones
# (a block-list name contains "spam", a quota message may say "rejected").
TEXT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "failedstarttls",
        _rx(r"starttls\b.{0,40}(?:fail|error)", r"tls (?:handshake|negotiation) fail"),
    ),
    (
        "authfailure",
        _rx(
            r"(?:bad|invalid|missing|no) (?:spf|dkim|dmarc)",
            r"authentication information",
            r"fails? to pass auth",
            r"(?:spf|dkim|dmarc)\b.{0,80}\b(?:fail\w*|not pass|reject\w*|invalid|check\w*|policy|alignment)",
            r"(?:fail|not pass|did not pass)\w*\b.{0,40}\b(?:spf|dkim|dmarc)\b",
            r"sender policy framework",
            r"(?:authentication|authenticated) (?:check|checks|results?) fail",
            r"not authenticated .{0,40}(?:spf|dkim|dmarc)",
            r"unauthenticated (?:email|mail|message)",
        ),
    ),
    (
        "securityerror",
        _rx(
            r"smtp auth",
            r"unauthenticated (?:sender|relay|user|client)s?",
            r"(?:tls|encryption|starttls) (?:is )?required",
            r"must (?:issue a )?starttls",
            r"authentication (?:is )?required",
            r"(?:insecure|untrusted|invalid) certificate",
        ),
    ),
    (
        "requireptr",
        _rx(
            r"\bptr\b",
            r"reverse (?:dns|lookup|hostname|name)",
            r"\brdns\b",
            r"(?:cannot|can't|could not|unable to) (?:find|resolve|verify) your (?:host ?name|ip|address)",
            r"(?:host ?name|ip address) lookup fail",
            r"no (?:valid )?(?:reverse|dns) (?:record|entry) for",
        ),
    ),
    (
        "badreputation",
        _rx(
            r"ip reputation|sender reputation|due to (?:\w+ )?reputation|user complaints",
            r"(?:poor|low|bad) (?:\w+ )?reputation",
            r"reputation (?:is|too) (?:low|poor)",
        ),
    ),
    (
        "virusdetected",
        _rx(r"virus", r"malware", r"\binfected\b", r"trojan", r"\bworm\b"),
    ),
    (
        "toomanyconn",
        _rx(
            r"frequency limit",
            r"too many (?:connections|concurrent|simultaneous|sessions|smtp sessions|open connections)",
            r"connection (?:count |rate )?limit",
            r"too many (?:hosts|clients)",
        ),
    ),
    (
        "blocked",
        _rx(
            r"refused to talk to me",
            r"invalid ip for sending|service refuse|not accepting connections|my name was rejected",
            r"(?:black|block|deny|ban)[- ]?list",
            r"blocklisted|\bblacklisted",
            r"rbl\b|dnsrbl\b|dnsbl",
            r"spamhaus|spamcop|barracuda|sorbs|abuseat|spamrats|uceprotect|senderscore",
            r"listed (?:on|in|at|by)\b(?<!not listed in)(?<!not listed on)",
            r"(?:ip|client host|your host|sending host|network|connection)\b.{0,40}\b(?:blocked|banned|refused|denied|not allowed|rejected)",
            r"(?:blocked|banned|refused|denied|rejected)\b.{0,30}\b(?:ip|client host|network)\b",
            r"dynamic (?:ip|address)|dial-?up|residential",
            r"use (?:the|your) (?:isp|provider)'?s? (?:smtp|mail|relay)",
            r"smtp server of your isp",
            r"helo\b.{0,40}(?:reject|invalid|denied)",
        ),
    ),
    (
        "spamdetected",
        _rx(
            r"message content rejected",
            r"\bube\b",
            r"spam\b",
            r"junk ?mail",
            r"unsolicited",
            r"\bbulk (?:mail|e-?mail)",
            r"spam ?score|spamassassin|looks like spam|classified as spam",
        ),
    ),
    (
        "mailboxfull",
        _rx(
            r"(?:mailbox|mail box|inbox|mailfolder|maildir|account|user|recipient)\b.{0,30}\b(?:full|over ?quota|exceeded)",
            r"\bquota\b",
            r"over (?:the )?(?:disk |storage )?(?:quota|limit)",
            r"(?:insufficient|not enough) (?:storage )?space",
            r"storage (?:allocation|space|limit)",
            r"mailbox size",
            r"full mailbox",
            r"too much mail data",
            r"too many messages (?:on|in) (?:the )?(?:server|mailbox)",
        ),
    ),
    (
        "mesgtoobig",
        _rx(
            r"message (?:size|length|is too (?:big|large|long)|too (?:big|large|long))",
            r"(?:size|length) (?:of .{0,20})?exceeds?",
            r"exceeds? .{0,40}(?:size|length) (?:limit|allowed)",
            r"too (?:big|large) for",
            r"message (?:exceeds|is larger)",
            r"maximum (?:message )?size",
        ),
    ),
    (
        "norelaying",
        _rx(
            r"relay(?:ing)? (?:access |is |not |prohibited|denied)",
            r"(?:not|never) (?:permitted|allowed|authorized) to relay",
            r"(?:unable|not able|refuses|refused|refuse) to relay",
            r"not a (?:gateway|relay)",
            r"we do not relay",
        ),
    ),
    (
        "speeding",
        _rx(
            r"rate ?limit",
            r"(?:sending|receiving|message) rate",
            r"too many (?:messages|mails|e-?mails|recipients|requests)",
            r"(?:sending|receiving) (?:mail )?(?:too fast|at a rate)",
            r"try again (?:later|in \d)[^.]{0,40}(?:rate|volume)",
        ),
    ),
    (
        "notcompliantrfc",
        _rx(
            r"multiple (?:\w+ )?addresses in (?:the )?from",
            r"rfc ?(?:5322|2822|5321|2821)\b",
            r"not (?:rfc[ -]?)?compliant",
            r"(?:duplicate|multiple) (?:\w+ )?headers?",
            r"(?:missing|invalid) (?:required )?(?:header|message-id|date|from)",
        ),
    ),
    (
        "rejected",
        _rx(
            r"sender\b.{0,40}\b(?:rejected|denied|refused|invalid|unknown|not allowed)",
            r"(?:not have|no) permission to (?:post|send)",
            r"sender (?:address |domain )?(?:rejected|denied|refused|invalid|unknown|not allowed|verify failed)",
            r"(?:domain of sender|sender) address\b.{0,60}\b(?:does not exist|doesn't exist|rejected|invalid|unknown)",
            r"unroutable sender",
        ),
    ),
    (
        "hasmoved",
        _rx(r"has (?:been )?moved", r"address (?:has )?changed", r"has been replaced by"),
    ),
    (
        "suspend",
        _rx(
            r"(?:account|mailbox|user|address|recipient)\b.{0,40}\b(?:suspended|disabled|deactivated|inactive|locked|frozen|closed|blocked by admin)",
            r"(?:disabled|inactive|deactivated) (?:account|mailbox|user)",
        ),
    ),
    (
        "hostunknown",
        _rx(
            r"host \S+ not found",
            r"domain is not reachable",
            r"invalid domain",
            r"(?:host|domain)(?: name)? (?:or domain name )?(?:not found|unknown|does not exist|doesn't exist|not exist)",
            r"unknown (?:host|domain)",
            r"host unknown|domain unknown",
            r"name or service not known",
            r"\bnxdomain\b",
            r"no (?:a|such) (?:record|host|domain)",
            r"unrouteable (?:mail )?domain",
            r"(?:domain|host) lookup failed",
        ),
    ),
    (
        "userunknown",
        _rx(
            r"recipient address rejected: access denied",
            r"not listed in (?:the )?(?:[\w&]+ )*(?:directory|address book)",
            r"(?:user|recipient|mailbox|address|addressee|account|local ?part|destination) (?:is )?(?:unknown|not (?:found|known|listed|valid)|invalid|doesn't exist|does not exist|not exist|non-?existent)",
            r"unknown (?:or illegal )?(?:user|recipient|mailbox|address|addressee|account|local ?part|alias)",
            r"no such (?:user|recipient|mailbox|address|person|account|local user)",
            r"invalid (?:recipient|mailbox|address|user|account|e-?mail address)",
            r"(?:not|isn't) a (?:valid|known) (?:user|recipient|mailbox|address)",
            r"(?:does not|doesn't|did not) (?:exist|match any)",
            r"(?:bad|illegal) (?:recipient|destination|address|mailbox)",
            r"no (?:mailbox|account) (?:here|by that name|found|available)",
            r"mailbox (?:unavailable|not available)",
            r"unrouteable address",
            r"no longer (?:valid|in use|with|active)",
            r"undeliverable address",
            r"user rejected",
        ),
    ),
    (
        "filtered",
        _rx(
            r"filter(?:ed|ing)?\b",
            r"(?:refuse|reject|decline)[sd]?\w* (?:to accept )?(?:your |this )?(?:mail|message|e-?mail)s? from",
            r"(?:not|no longer) accept(?:ing|s)? (?:mail|messages|e-?mail) from",
            r"recipient (?:has )?(?:blocked|refused|rejected)",
        ),
    ),
    (
        "notaccept",
        _rx(
            r"(?:does not|doesn't|do not|will not) accept (?:any )?(?:mail|e-?mail|messages)",
            r"not accepting (?:any )?(?:mail|e-?mail|messages)",
            r"null mx",
            r"no (?:valid )?mx (?:record|found|for)",
            r"(?:find|no) (?:a )?mail exchanger",
            r"record indicated no smtp service",
            r"accepts? no mail",
        ),
    ),
    (
        "policyviolation",
        _rx(r"\bpolic(?:y|ies)\b", r"prohibited", r"violat", r"not (?:permitted|allowed)"),
    ),
    (
        "expired",
        _rx(
            r"failing for a long time",
            r"envelope expired",
            r"in the queue too long",
            r"(?:delivery|retry|queue) (?:time|timeout|period|lifetime)?\s*(?:expired|exceeded)",
            r"(?:message|mail) (?:has )?expired",
            r"(?:could not|couldn't|unable to|cannot) be delivered (?:for|within|in) (?:the last )?\d+",
            r"(?:giving|gave) up",
            r"\btoo old\b",
            r"retry timeout",
        ),
    ),
    (
        "networkerror",
        _rx(
            r"lost connection",
            r"(?:connection|connect)\b.{0,20}\b(?:timed out|timeout|refused|reset|lost|failed)",
            r"(?:could not|couldn't|cannot|unable to) connect",
            r"(?:network|host) (?:is )?unreachable",
            r"no route to host",
            r"(?:dns|lookup) (?:failure|error|timeout|timed out)",
            r"mail (?:forwarding )?loop|routing loop|loops? back",
            r"too many hops|hop count",
        ),
    ),
    (
        "systemfull",
        _rx(
            r"insufficient disk space",
            r"(?:disk|file ?system|spool|server|system) (?:is )?full",
            r"insufficient system storage",
            r"out of (?:disk )?space",
        ),
    ),
    (
        "mailererror",
        _rx(
            r"mailer error",
            r"procmail",
            r"\bpipe to\b",
            r"command (?:failed|died)",
            r"exit (?:code|status)",
        ),
    ),
    (
        "contenterror",
        _rx(
            r"(?:invalid|illegal|malformed|broken) (?:mime|content|character|encoding|header)",
            r"content (?:rejected|error|not accepted)",
            r"\b8bit\b|8-bit",
        ),
    ),
    (
        "systemerror",
        _rx(
            r"(?:system|server|internal|local|configuration|software|mail system) (?:error|failure|problem)",
            r"misconfigur",
            r"temporar(?:y|ily) (?:local |system )?(?:failure|problem|error|unavailable)",
            r"service (?:is )?(?:currently |temporarily )?(?:not available|unavailable)",
        ),
    ),
    (
        "syntaxerror",
        _rx(
            r"improper sequence",
            r"syntax error",
            r"command (?:not recognized|unrecognized)",
            r"bad sequence of commands",
        ),
    ),
)
# A bare "rejected" says only that something was refused: weaker than a specific code.
BARE_REJECTION = re.compile(r"\b(?:rejected|refused|denied)\b")

_RULES = tuple((reason, pattern, anchors(pattern.pattern)) for reason, pattern in TEXT_RULES)

# Multi-line replies repeat "550-5.7.1 " on every line, splitting phrases in two.
_REPLY_PREFIX = re.compile(r"(?<![\w.])[245]\d\d[ -](?:[245]\.\d{1,3}\.\d{1,3} )?")

# A server's reply is a few lines; past this the text is boilerplate or the returned message.
_MAX_WORDING = 2048


def wording(text: str) -> str:
    """The text as the rules read it: lower-cased, reply-code prefixes out, spaces collapsed."""
    return " ".join(_REPLY_PREFIX.sub(" ", fold(text[:_MAX_WORDING])).split())


def reason_from_text(text: str) -> str:
    """The first reason whose wording appears in the text, or ""."""
    flat = wording(text)
    for reason, pattern, needed in _RULES:
        if needed is not None and not any(word in flat for word in needed):
            continue
        if pattern.search(flat):
            return reason
    return ""
