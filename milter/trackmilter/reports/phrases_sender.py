"""Wording rules, first half: the sending side (connection, sender, authentication, content
screening), and the narrow phrases that must be tried before any broader rule.

Ordered: the first matching rule wins (see rules.TEXT_RULES). Phrases many MTAs share;
those ported from sisimai (BSD-2-Clause, Copyright (C) 2014 azumakuniyuki) say so.
"""

from __future__ import annotations

import re

from trackmilter.reports.matching import rx as _rx

SENDER_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # Phrases that name their cause outright although they contain words of a broader
    # rule below ("blacklisted", "host not found", "blocked"); after sisimai's
    # Reason/Rejected.pm, SpamDetected.pm, NetworkError.pm, Filtered.pm (BSD-2-Clause).
    (
        "rejected",
        _rx(
            r"sending to/from an address that has been blacklisted",
            r"sender (?:address has been blacklisted|is in my black ?list|is spammer)",
            r"access denied \(sender blacklisted\)",
            r"is not a registered gateway user",
            r"from: domain is invalid",
        ),
    ),
    ("spamdetected", _rx(r"blacklisted (?:url|link|uri)", r"uribl")),
    (
        "notaccept",
        _rx(
            # after sisimai's Reason/NotAccept.pm (BSD-2-Clause)
            r"not accepting network messages",
            r"(?:host|domain) does not accept mail",
            r"does not accept mail \(nullmx\)",
            r"no route for current request",
        ),
    ),
    (
        "networkerror",
        _rx(
            r"host not found, try again",
            r"host name lookup failure",
            r"name server reply",
            r"\bnetwork error\b",
        ),
    ),
    (
        "filtered",
        _rx(
            r"recipient preferences",
            r"due to extended inactivity",
            r"only accepting mail from specific",
            r"message rejected due to user rules",
            r"you have been blocked by the recipient",
            r"this account is protected by",
            r"restricted sms e-?mail",
        ),
    ),
    (
        "failedstarttls",
        _rx(
            r"starttls\b.{0,40}(?:fail|error)",
            r"tls (?:handshake|negotiation) fail",
            r"(?:not|n't) (?:support|offer) (?:start)?tls",
        ),
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
            r"mismatches client ip",
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
        # A virus found, not a scanner's footer: "This message has been scanned for
        # viruses and dangerous content by MailScanner, and is believed to be clean",
        # "certified Virus Free" say the opposite.
        _rx(
            r"(?<!scanned for )virus(?!es and dangerous| free|-free| database)",
            r"malware",
            r"\binfected\b",
            r"trojan",
            r"\bworm\b",
        ),
    ),
    (
        "toomanyconn",
        _rx(
            r"frequency limit",
            r"too many (?:connections|concurrent|simultaneous|sessions|smtp sessions|open connections)",
            r"connection (?:count |rate )?limit",
            r"too many (?:hosts|clients)",
            # after sisimai's Reason/TooManyConn.pm (BSD-2-Clause)
            r"too many recipients(?! (?:this|per|in the|today|each))",
            r"too many errors from your ip",
            r"per-domain connection limit",
            r"maximum connection limit",
            r"trop de connexions",
            r"already made numerous attempts to deliver",
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
            r"messages from \d{1,3}(?:\.\d{1,3}){3} (?:weren't|were not) (?:sent|accepted)",
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
)
