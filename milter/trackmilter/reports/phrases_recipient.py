"""Wording rules, second half: the receiving side (mailbox, address, host, routing, system).

Ordered: the first matching rule wins (see rules.TEXT_RULES). Phrases many MTAs share;
those ported from sisimai (BSD-2-Clause, Copyright (C) 2014 azumakuniyuki) say so.
"""

from __future__ import annotations

import re

from trackmilter.reports.matching import rx as _rx

RECIPIENT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "mailboxfull",
        _rx(
            r"(?:mailbox|mail box|inbox|mailfolder|maildir|account|user|recipient)\b.{0,30}\b(?:full|over ?quota|exceeded)",
            r"\bquota\b",
            r"over (?:the )?(?:disk |storage )?(?:quota|limit)",
            r"(?:insufficient|not enough) (?:storage )?space",
            # "552 Account(s) <a@b> does not have enough space", "mail box space not enough"
            r"(?:not have|without) enough (?:disk |storage |mailbox )?space",
            r"space (?:is )?not enough",
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
            r"line limit exceeded",
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
            r"not configured to relay",
            # The recipient's domain is not one the server receives for: qmail's "553
            # sorry, that domain isn't in my list of allowed rcpthosts", Exchange's and
            # Domino's "recipient is not local": a relay refused, whatever the code.
            r"(?:isn't|is not|not) in my list of allowed rcpthosts",
            r"(?:recipient|address|domain) (?:is )?not local",
        ),
    ),
    (
        "speeding",
        _rx(
            r"rate ?limit",
            r"(?:sending|receiving|message) rate",
            r"too many (?:messages|mails|e-?mails|requests)",
            r"too many recipients (?:this|per|in the|today|each)",
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
            # A field RFC 5322 requires is absent ("554 No Resent-From field given": §3.6.6
            # requires Resent-From and Resent-Date in every resent block).
            r"no (?:resent-)?(?:from|date|sender) (?:header |field )?(?:given|found|present)",
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
            # RFC 5321 §5.1: no MX and no address record: the domain cannot receive mail.
            r"no mx or a(?:aaa)? (?:records? )?for",
            r"(?:domain|host) lookup failed",
        ),
    ),
    (
        "userunknown",
        _rx(
            r"recipient address rejected: access denied",
            r"not listed in (?:the )?(?:[\w&]+ )*(?:directory|address book)",
            r"(?:user|recipient|mailbox|address|addressee|account|local ?part|destination) (?:is )?(?:unknown|not (?:found|known|listed|valid)|invalid|doesn't exist|does not exist|not exist|non-?existent)",
            r"unknown (?:or illegal )?(?:e-?mail )?(?:user|recipient|mailbox|address|addressee|account|local ?part|alias)",
            r"non-?existent (?:user|recipient|mailbox|address|account|local ?part)",
            # Exchange 5.5's NDR: "The recipient name is not recognized".
            r"(?:recipient|user|addressee)(?: name)? (?:is )?not recognized",
            # A directory lookup of the name found nobody ("No matches to nameserver query").
            r"no match(?:es)? (?:to|for|in) (?:the )?(?:nameserver|name server|directory)",
            # Yahoo's published reply for a recipient with no account: "554 delivery error:
            # dd This user doesn't have a yahoo.com account"; other hosts say it alike.
            r"(?:user|recipient|addressee) (?:doesn't|does not) have an? (?:[\w.-]+ )?(?:account|mailbox)",
            # Microsoft 365's NDR for 5.1.10 (RESOLVER.ADR.RecipientNotFound): "Recipient
            # a@b not found by SMTP address lookup" (Exchange Online NDR documentation).
            r"recipientnotfound",
            r"recipient (?:\S+ )?not found",
            r"no such (?:user|recipient|mailbox|address|person|account|local user)",
            r"invalid (?:recipient|mailbox|address|user|account|e-?mail address)",
            r"(?:not|isn't) a (?:valid|known) (?:user|recipient|mailbox|address)",
            r"(?:does not|doesn't|did not) (?:exist|match any)",
            r"did not (?:exactly )?match an? (?:[\w-]+ ){0,2}(?:e-?mail )?(?:address|user|account)",
            r"(?:bad|illegal) (?:recipient|destination|address|mailbox)",
            r"no (?:mailbox|account) (?:here|by that name|found|available)",
            r"mailbox (?:unavailable|not available)",
            r"unrouteable address",
            r"no longer (?:valid|in use|with|active)",
            r"undeliverable address",
            r"user rejected",
            r"invalid (?:final delivery )?userid",
        ),
    ),
    (
        "filtered",
        _rx(
            r"filter(?:ed|ing)?\b",
            r"(?:refuse|reject|decline)[sd]?\w* (?:to accept )?(?:your |this )?(?:mail|message|e-?mail)s? from",
            r"(?:not|no longer) accept(?:ing|s)? (?:mail|messages|e-?mail) from",
            # The recipient's own block ("recipient has blocked ..."); a bare "Recipient
            # rejected" only says that a RCPT was refused, and leaves the cause to the code.
            r"recipient has (?:blocked|refused|rejected)",
            # The recipient's own setting ("<a@b> has restricted SMS e-mail": a mobile
            # carrier's gateway, the address turned off mail from outside).
            r"has restricted (?:\w+ )?(?:e-?mail|mail|messages)",
            r"recipient (?:blocked|refused|rejected) (?:you|your|the sender|mail|messages)",
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
        _rx(
            r"\bpolic(?:y|ies)\b",
            r"prohibited",
            r"violat",
            r"not (?:permitted|allowed)",
            # after sisimai's Reason/PolicyViolation.pm (BSD-2-Clause)
            r"header error",
            r"header are not accepted",
            r"illegal attachment",
            r"content presents a potential",
            r"members-only list",
            r"closed mailing list",
            r"organizational settings",
            r"message given low priority",
            r"not subscribed to this group",
            r"without solving a captcha",
        ),
    ),
    (
        "expired",
        _rx(
            r"failing for a long time",
            r"connection timed out",
            r"envelope expired",
            r"in the queue too long",
            r"(?:delivery|retry|queue) (?:time|timeout|period|lifetime)?\s*(?:expired|exceeded)",
            r"(?:message|mail) (?:has )?expired",
            r"(?:could not|couldn't|unable to|cannot) be delivered (?:for|within|in) (?:the last )?\d+",
            r"(?:giving|gave) up",
            r"\btoo old\b",
            r"retry timeout",
            # after sisimai's Reason/Expired.pm and Lhost/Gmail.pm (BSD-2-Clause)
            r"did not accept our requests to connect",
            r"could not contact dns servers",
            r"delivery attempts will continue",
            r"message timed out",
            r"server did not respond",
            r"within the allowed queue period",
            r"could not find a gateway for",
            r"retry time not reached",
            r"it has not been collected after",
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
            # RFC 3463 X.4.6 "Routing loop detected" is a network and routing status.
            r"mail (?:forwarding )?loop|routing loop|loops? back|message looping|\blooping\b",
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
            # A site refusing what a header holds or lacks beyond what RFC 5322 requires
            # ("Messages without To: fields are not accepted here").
            r"(?:messages?|mail) without (?:a |an )?[\w-]+:? (?:header|field)s?",
        ),
    ),
    (
        "systemerror",
        _rx(
            r"(?:system|server|internal|local|configuration|software|mail system) (?:error|failure|problem)",
            r"misconfigur",
            # after sisimai's Reason/SystemError.pm (BSD-2-Clause)
            r"could not load drd",
            r"temporary local problem",
            r"local error in processing",
            r"queue file write error",
            r"internal error reading data",
            r"timeout waiting for input",
            r"interrupted system call",
            r"can't create user output file",
            r"encountered an error while being processed",
            r"forwarding loop broken",
            # The recipient's directory has several entries for the address (Domino: "not
            # unique. Several matches found in Domino Directory"): the receiving site's
            # configuration, not the sender's address (RFC 3463 X.1.4 "ambiguous").
            r"not unique\b.{0,20}\bseveral matches",
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
