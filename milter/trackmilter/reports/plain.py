"""Bounces that are not RFC 3464: qmail, Exim, Gmail and friends write prose.

The shape is shared even when the words differ: a preamble, one block per failed address
(the address on a line of its own or followed by a colon, then the remote server's reply),
then a copy of the original message after a separator line.
"""

from __future__ import annotations

import html
import re
from email.message import Message

from trackmilter.reports.conventions import groups_reason
from trackmilter.reports.mime import Parts, address_of, header, part_text
from trackmilter.reports.model import RecipientReport
from trackmilter.reports.reason import (
    best_replycode,
    best_status,
    classify,
    find_failure_status,
    find_replycode,
    find_status,
    is_hard,
)
from trackmilter.reports.rules import fold

ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")

_DAEMON = re.compile(
    r"mailer[-_ ]?daemon|post[-_ ]?master|mail ?delivery|delivery ?subsystem|mdaemon|bounce|daemon",
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status|failure|failed|notification|problem|report)|"
    r"returned mail|failure notice|mail delivery|could not be delivered|non-?delivery|"
    r"nondeliverable|delayed mail|delivery delay|bounce|rejected|failed|permanent error|"
    r"mail system error|returned to sender|not delivered|unzustellbar|warning",
)
_FAILURE_WORDS = re.compile(
    r"could not be delivered|couldn't be delivered|wasn't able to deliver|was not delivered|"
    r"delivery (?:to the following|has failed|failed|problem)|permanent(?:ly)? (?:error|fail)|"
    r"undeliverable|following (?:address|recipient)|failed (?:recipient|address)|"
    r"(?:not|unable to) (?:be )?deliver|rejected|returned|error|fail|unknown user|no such|"
    r"deferred|timed out|not found|invalid|transcript of session|unable to",
)
# The line after which the returned original starts (qmail, Exim, Gmail, Sendmail, ...).
_ORIGINAL_MARKER = re.compile(
    r"^[ \t]*(?:[-=_*#]{2,}[^\n]*?)?(?:below this line is a copy|this is a copy of|"
    r"copy of (?:the|your) (?:original )?message|original message|returned message|"
    r"original (?:message )?headers?|message headers? follow|headers of the original|"
    r"undelivered message (?:headers|follows)|your message (?:follows|reads)|"
    r"unsent message (?:follows|below)|message (?:text|content) follows)",
    re.M,
)
# Challenge-response systems (TMDA, Boxbe, SpamArrest and kin) hold a message until its
# sender proves to be a person; their notice says the message "will not be delivered"
# and often comes from the null return path, but it asks the sender to act and quotes no
# SMTP reply: it is not a bounce.
_CHALLENGE = re.compile(
    r"challenge[- ]response|confirm (?:that )?you are (?:a )?(?:human|person|real)|"
    r"verify (?:that )?you are (?:a )?(?:human|person|real)|approved senders|"
    r"(?:reply|respond) to this (?:message|e-?mail) to (?:confirm|verify)|guest list"
)
_TEMPORARY = re.compile(
    r"temporar|transient|delayed|deferred|will (?:be )?retr|still trying|continue trying|"
    r"not yet been delivered|try again later|attempts will continue|continue to (?:try|attempt)|"
    r"postponed",
)
_LEADING_REPLY = re.compile(r"^[245]\d\d[ -]")
_TAG = re.compile(r"<[^>]+>")
# A header of the returned original quoted in the prose names addresses but lists none.
_HEADER_LINE = re.compile(
    r"(?:message-id|in-reply-to|references|from|to|cc|sender|reply-to|return-path) ?:", re.I
)
# "a@b Invalid Address, ERROR_CODE :550": an address that starts a line carrying a code.
_CODE_IN_LINE = re.compile(r"(?<![\d.])(?:[45]\d\d|[45]\.\d{1,3}\.\d{1,3})(?![\d.])")
_LABEL_WORDS = re.compile(
    r"\b(?:to|for|the|following|failed|recipients?|addresses|address(?:es)?|rcpt|user|"
    r"mailbox|original|final|rfc822|unknown|delivery|failed permanently)\b|[<>\"'():;,\[\]]",
    re.I,
)


def report_text(parts: Parts) -> str:
    """The human-readable text of the report, not of the attached original."""
    texts = [part_text(p) for ctype, p in parts if ctype == "text/plain"]
    if not texts:
        texts = [
            html.unescape(_TAG.sub(" ", part_text(p))).replace("\xa0", " ")
            for ctype, p in parts
            if ctype == "text/html"
        ]
    return "\n".join(texts)


def from_mail_system(msg: Message) -> bool:
    """Sent by a mail system: MAILER-DAEMON, postmaster and kin, or the null return path
    (RFC 5321 §4.5.5: notifications are sent with an empty reverse path)."""
    sender = fold(" ".join(header(msg, h) for h in ("from", "return-path", "sender")))
    return bool(_DAEMON.search(sender)) or header(msg, "return-path").strip() == "<>"


def split_original(text: str) -> tuple[str, str]:
    """The report prose and the returned original (after the separator), if any."""
    m = _ORIGINAL_MARKER.search(fold(text))
    if not m:
        return text, ""
    return text[: m.start()], text[m.end() :]


def looks_like_bounce(msg: Message, text: str, returned: bool = False) -> bool:
    """A prose bounce comes from a daemon, says so in its subject, or names failed rcpts.

    Two of three signs make one: a mail system's sender (MAILER-DAEMON, postmaster, the
    null return path of RFC 5321 §4.5.5), a subject that says delivery failed, failure
    words in the text. From a mail system, a returned copy of the original (`returned`)
    stands for the words, which may be in any language ("<a@b>:" and the original, in
    Chinese). A person's auto-reply (RFC 3834 "auto-replied", vacation, challenge-response
    "please confirm") comes from a person's address and quotes no SMTP reply.
    """
    if msg.get("x-failed-recipients"):
        return True
    daemon = from_mail_system(msg)
    subject = bool(_BOUNCE_SUBJECT.search(fold(header(msg, "subject"))))
    failure = bool(_FAILURE_WORDS.search(fold(text)))
    from_ = fold(header(msg, "from"))
    from_daemon = bool(_DAEMON.search(from_))
    # RFC 3834 auto-responders (vacation notices, "we got your mail") say auto-replied
    # and carry no SMTP code; a prose bounce from an MTA quotes one, or comes from the
    # MTA's own MAILER-DAEMON (Mail.Ru marks its bounces auto-replied too). A role
    # address such as postmaster may run a responder: it gets no such benefit.
    responder = "auto-replied" in header(msg, "auto-submitted").lower()
    mta = "mailer-daemon" in from_ or "mailer_daemon" in from_
    if responder and not mta and not (find_replycode(text) or find_status(text)):
        return False
    if _CHALLENGE.search(fold(text)) and not (find_replycode(text) or find_status(text)):
        return False
    if daemon and (subject or (returned and from_daemon)):
        return True
    return failure and (daemon or subject)


# Exchange 5.5 lists each recipient as "<address> on <date>", the address sometimes in
# X.400 form "c=US;a= ;p=IKON;o=Nexus2;dda:SMTP=a@b; on Fri, 4 Oct 2002".
_ON_DATE = re.compile(r"^;?\s*on (?:mon|tue|wed|thu|fri|sat|sun)", re.I)
_X400_DDA = re.compile(r"^\s*c=[^;]*;.*?\bdda:smtp=", re.I)
_SMTP_PREFIX = re.compile(r"^(?:smtp|rfc-?822)=", re.I)
# A recipient named by its local part alone, on the line after a list heading (AOL:
# "... could not be delivered ...:" then "\tscreenname"; Yale's "thomas.x    No matches").
_LIST_HEADING = re.compile(
    r"(?:recipients?|addresses|following|not delivered to)\b[^\n]*:\s*$", re.I
)
_LOCAL_ONLY = re.compile(r"^[ \t]*<?([A-Za-z0-9][A-Za-z0-9._%+=-]{0,63})>?[ \t]*(?:$|[ \t]{2,}(\S.*))")
# An address quoted in a sentence ("... to 'a@b' ..."): the quote is not part of it.
_QUOTES = "'`"


def _is_address_line(line: str, address: str) -> bool:
    """Is the address the point of this line (a list entry) rather than part of a sentence?

    List entries are an address alone or with a label ("Recipient address: a@b"), or an
    address that starts the line, after an optional reply code, followed by ":" or by
    Sendmail's "..." ("554 <a@b>... Host unknown").
    """
    head = _LEADING_REPLY.sub("", line.strip())
    if _HEADER_LINE.match(head):
        return False
    if head.lstrip("<").startswith(address):
        after = head.lstrip("<")[len(address) :].lstrip(">").lstrip()
        if after.startswith((":", "...")) or _CODE_IN_LINE.search(after):
            return True
        if _ON_DATE.match(after):
            return True
    rest = _LABEL_WORDS.sub(" ", head.replace(address, " "))
    return len(rest.split()) <= 1


def recipient_blocks(text: str, exclude: set[str]) -> list[tuple[str, str]]:
    """(address, the text that follows it) for every failed address listed in the prose."""
    lines = text.splitlines()
    starts: list[tuple[int, str]] = []
    # A listed address ends the block before it even when it is a repeat (bounces often
    # list the failures twice, in two languages): the repeat starts no new block. The
    # block's own address repeated in its reply does not end it.
    bounds: list[int] = []
    for i, line in enumerate(lines):
        if "dda:" in line.lower():
            line = _X400_DDA.sub("", line)
        for found in ADDRESS.findall(line):
            if "/" in found:  # part of a URL, not an address
                continue
            address = _SMTP_PREFIX.sub("", found.strip(_QUOTES))
            low = address.lower()
            if low in exclude or _DAEMON.match(low) or not _is_address_line(line, address):
                continue
            if all(low != a for _, a in starts):
                starts.append((i, low))
                bounds.append(i)
            elif low != starts[-1][1]:
                bounds.append(i)
            break
    bounds.append(len(lines))
    blocks = []
    for i, address in starts:
        end = next(b for b in bounds if b > i)
        blocks.append((address, "\n".join(lines[i:end])))
    return blocks


def sentence_recipient(text: str, exclude: set[str], returned: str = "") -> str:
    """The address the prose names in a sentence, when no line lists one.

    A header line the prose quotes ("To: list@example.org") names the original's
    recipients, not the failed one. Of several addresses, one the returned original also
    names is the recipient ("The standard form is name@x ... The address to which your
    message was addressed, a@x, did not match").
    """
    found: list[str] = []
    for line in text.splitlines():
        if _HEADER_LINE.match(line.strip()):
            continue
        for address in ADDRESS.findall(line):
            low = address.strip(_QUOTES).lower()
            if "/" not in low and low not in exclude and not _DAEMON.match(low) and low not in found:
                found.append(low)
    if len(found) > 1 and returned:
        returned_low = returned.lower()
        named = [a for a in found if a in returned_low]
        if named:
            return named[0]
    return found[0] if found else ""


def local_part_blocks(text: str) -> list[tuple[str, str]]:
    """(local part, the rest of its line) for recipients a list names without a domain."""
    lines = text.splitlines()
    found: list[tuple[str, str]] = []
    for i, line in enumerate(lines):
        if not _LIST_HEADING.search(line):
            continue
        for following in lines[i + 1 : i + 4]:
            if not following.strip():
                continue
            m = _LOCAL_ONLY.match(following)
            if m and "@" not in following:
                found.append((m.group(1), m.group(2) or ""))
            break
    return found


def complete(local: str, original: Message | None, returned: str, msg: Message) -> str:
    """A local part made an address: the original's recipient with that local part (its
    To, Cc, or a Received "for <a@b>"), else the reporting mail system's own domain."""
    candidates = []
    if original is not None:
        candidates += [address_of(original, h) for h in ("to", "cc", "delivered-to")]
    candidates += [a.lower() for a in ADDRESS.findall(returned)]
    for address in candidates:
        if address.partition("@")[0].lower() == local.lower():
            return address.lower()
    domain = address_of(msg, "from").partition("@")[2]
    return f"{local}@{domain}".lower() if domain else ""


def entry(address: str, block: str, prose: str) -> RecipientReport:
    """One failed recipient from its block; the whole prose fills in what the block lacks."""
    diagnostic = " ".join(block.replace(address, " ", 1).split()).strip(" :<>")
    # A failed recipient's code is a failure's: a 2.X.Y in the prose belongs to a quoted
    # transcript or to the returned message's headers.
    status = best_status("", diagnostic)
    if status.startswith("2"):
        status = find_failure_status(diagnostic)
    status = status or find_failure_status(prose)
    replycode = best_replycode(diagnostic) or find_replycode(prose)
    if not status:
        temporary = replycode.startswith("4") or (
            not replycode and bool(_TEMPORARY.search(fold(prose)))
        )
        status = "4.0.0" if temporary else "5.0.0"
    action = "delayed" if status.startswith("4") else "failed"
    reason = groups_reason(address, prose) or classify(status, replycode, diagnostic, action, prose)
    return RecipientReport(
        recipient=address,
        action=action,
        status=status,
        replycode=replycode,
        diagnostic=diagnostic or " ".join(prose.split()),
        reason=reason,
        hardbounce=is_hard(reason, status, replycode),
    )


def decode_plain(
    msg: Message, prose: str, original: Message | None, returned: str = ""
) -> list[RecipientReport]:
    """Failed recipients of a prose bounce; [] when the message is not one.

    `returned` is the text after the prose (the returned original, when it is inline).
    """
    if not looks_like_bounce(msg, prose, original is not None):
        return []
    exclude = {address_of(msg, h) for h in ("from", "to", "return-path", "reply-to")}
    if original is not None:
        exclude |= {address_of(original, h) for h in ("from", "return-path", "sender")}
    exclude.discard("")
    failed = [a.lower() for a in ADDRESS.findall(header(msg, "x-failed-recipients"))]
    blocks = recipient_blocks(prose, exclude)
    if failed:
        found = dict(blocks)
        blocks = [(a, found.get(a, prose)) for a in failed]
    if not blocks:
        locals_ = [(complete(local, original, returned, msg), rest)
                   for local, rest in local_part_blocks(prose)]
        blocks = [(a, f"{a} {rest}") for a, rest in locals_ if a]
    if not blocks:
        address = sentence_recipient(prose, exclude, returned)
        if not address and original is not None:
            address = address_of(original, "to")
        addressee = address_of(msg, "to")
        if not address and addressee and addressee in prose.lower():
            # The only address the text is about is its own addressee's: a notice to
            # that person ("4 messages for you@x could not be delivered, click here"),
            # phishing that imitates a bounce, not a report on mail the addressee sent.
            return []
        blocks = [(address, prose)]
    return [entry(a, b, prose) for a, b in blocks]
