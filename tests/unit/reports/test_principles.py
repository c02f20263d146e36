"""The rules behind reasons, statuses and recipients, each on a message made to show it.

The corpora (test_conformance.py) measure the decoder on real mail; these pin down one rule
each, so that a change that breaks a rule says which. Messages here are written for the
test (example.* domains); the non-bounces are the kinds the corpora lack: a
challenge-response notice and a phishing mail dressed as a bounce.
"""

from __future__ import annotations

import pytest

from trackmilter.reports import decode
from trackmilter.reports.reason import best_replycode, best_status, classify, find_replycode


@pytest.mark.parametrize(
    ("status", "reply", "text", "reason"),
    [
        # The reply's specific words win over a generic X.7.1 (RFC 3463: "delivery not
        # authorized, message refused" says only that it was refused).
        ("5.7.1", "553", "553 5.7.1 <a@b.example>... Relaying denied. Proper authentication required.", "norelaying"),
        ("5.7.1", "550", "550 5.7.1 Unable to deliver to a@b.example: recipient is not local", "norelaying"),
        ("5.7.1", "552", "552 5.7.1 Message too large", "mesgtoobig"),
        ("5.7.1", "552", "552 5.7.1 Mailbox full", "mailboxfull"),
        # X.2.3 is "message length exceeds administrative limit"; the words say quota.
        ("5.2.3", "", "maildir delivery failed: the user's maildir has overdrawn his diskspace quota", "mailboxfull"),
        # Microsoft 365's NDR for 5.1.10: the recipient does not exist (not a null MX).
        ("5.1.10", "550", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient a@b.example not found by SMTP address lookup", "userunknown"),
        # Yahoo's published reply, given after DATA: still no such account.
        ("5.0.0", "554", "554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]", "userunknown"),
        ("5.0.0", "552", "552 Account(s) <a@b.example> does not have enough space", "mailboxfull"),
        ("5.0.0", "554", "554 Message looping (received 6 times)", "networkerror"),
        ("5.0.0", "554", "554 No Resent-From field given", "notcompliantrfc"),
        ("5.0.0", "", "Messages without To: fields are not accepted here", "contenterror"),
        # Retries given up on a temporary failure: expired, whatever the last error was.
        ("5.0.0", "", "Delivery failed 20 attempts", "expired"),
        ("5.0.0", "", "Technical details of permanent failure: TEMP_FAILURE: Could not initiate SMTP conversation", "expired"),
        # A local program's failure is the mailer's, whatever the program printed ...
        ("4.0.0", "", "temporary failure. Command output: avpcheck: unable to connect to avp daemon: Connection refused", "mailererror"),
        # ... unless it reports the mailbox's own state.
        ("5.0.0", "", "permission denied. Command output: Mail quota exceeded", "mailboxfull"),
        # An address is no wording.
        ("5.0.0", "", "Sorry your message to ultravirus2001@yahoo.com cannot be delivered. This account has been disabled or discontinued.", "suspend"),
        # A scanner's footer is no virus.
        ("5.0.0", "", "This message has been scanned for viruses and dangerous content by MailScanner, and is believed to be clean.", "onhold"),
        ("5.3.0", "553", "553 5.3.0 <a@b.example>... Unknown E-Mail Address (in reply to RCPT TO command)", "userunknown"),
        # Nothing said, nothing known: onhold is the last resort.
        ("5.0.0", "", "Delivery to the following recipients failed.", "onhold"),
    ],
)
def test_reason(status: str, reply: str, text: str, reason: str) -> None:
    assert classify(status, reply, text, "failed") == reason


def test_a_delay_with_no_stated_cause_is_expired_whatever_command_it_stopped_at() -> None:
    text = "Connection was dropped by remote host (SENT_HELO)"
    assert classify("4.0.0", "", text, "delayed") == "expired"


def test_status_and_reply_of_the_cause_not_of_its_consequence() -> None:
    transcript = "<<< 550 5.1.1 User unknown\n550 5.1.1 <a@b.example>... User unknown\n<<< 503 5.5.2 Need Rcpt command."
    assert best_status("5.0.0", transcript) == "5.1.1"
    assert best_replycode(transcript) == "550"


def test_a_telephone_number_is_no_reply_code() -> None:
    assert find_replycode("please contact Customer Support at (480) 624-2500.") == ""
    assert find_replycode("call 480-624-2500 for help") == ""
    assert find_replycode("550-5.1.1 The email account does not exist") == "550"


def test_a_software_version_is_no_status() -> None:
    assert best_status("", "X-Mailman-Version: 2.0.1") != "2.0.1"
    assert best_status("", "by p02c11m063.mxlogic.net (mxl_mta-5.5.0-3)") == ""


PROSE = """\
From: Mail Delivery Subsystem <MAILER-DAEMON@{host}>
To: sender@example.com
Subject: {subject}
Content-Type: text/plain

{body}
"""


def prose(body: str, subject: str = "Mail Delivery Problem", host: str = "example.net") -> bytes:
    return PROSE.format(body=body, subject=subject, host=host).encode()


def test_local_part_only_recipient_completed_from_the_returned_original() -> None:
    raw = prose(
        "Your mail to the following recipients could not be delivered:\n"
        "\tpat\n\n"
        "--- Below this line is a copy of the message.\n\n"
        "Received: from mx.example.com by mx.example.org\n\tfor <pat@example.org>; Mon, 1 Jan 2024\n"
        "From: sender@example.com\nTo: pat@example.org\nSubject: hi\n\nhi\n"
    )
    report = decode(raw)
    assert report is not None
    assert [r.recipient for r in report.recipients] == ["pat@example.org"]


def test_local_part_only_recipient_without_original_takes_the_reporting_domain() -> None:
    raw = prose(
        "Your mail to the following recipients could not be delivered because they are "
        "not accepting mail from list@lists.example.com:\n\tscreenname\n",
        host="example.net",
    )
    report = decode(raw)
    assert report is not None
    assert [r.recipient for r in report.recipients] == ["screenname@example.net"]


def test_recipient_named_in_a_sentence_not_the_quoted_header() -> None:
    raw = prose(
        "Your message\n  To:      list@example.org\n  Subject: hello\n\n"
        "did not reach the following recipient(s):\n\n"
        "pat@example.net on Fri, 20 Jul 2001 11:08:59 -0700\n"
        "    The recipient name is not recognized\n",
        subject="Undeliverable: hello",
    )
    report = decode(raw)
    assert report is not None
    assert [(r.recipient, r.reason) for r in report.recipients] == [("pat@example.net", "userunknown")]


def test_exchange_x400_recipient_form() -> None:
    raw = prose(
        "did not reach the following recipient(s):\n\n"
        "c=US;a= ;p=EX;o=Site;dda:SMTP=PAT@EXAMPLE.NET; on Fri, 4 Oct 2002\n"
        "    The recipient name is not recognized\n",
        subject="Undeliverable: hello",
    )
    report = decode(raw)
    assert report is not None
    assert [r.recipient for r in report.recipients] == ["pat@example.net"]


def test_a_bounce_in_another_language_is_known_by_its_sender_and_returned_original() -> None:
    raw = prose(
        "\u90ae\u4ef6\u65e0\u6cd5\u53d1\u9001\u3002\n\n<pat@example.net>:\n\n"
        "--- Below this line is a copy of the message.\n\n"
        "From: sender@example.com\nTo: pat@example.net\nSubject: hi\n\nhi\n",
        subject="=?utf-8?b?6YCA5L+h?=",
    )
    report = decode(raw)
    assert report is not None
    assert [(r.recipient, r.reason) for r in report.recipients] == [("pat@example.net", "onhold")]


CHALLENGE = b"""\
Return-Path: <>
From: "Pat Example" <pat-confirm-1697040000.abc123@example.net>
To: sender@example.com
Subject: Please confirm your message
Content-Type: text/plain; charset=us-ascii

I use a challenge-response system to keep my inbox free of spam. Your
message to pat@example.net has been held and will not be delivered until
you confirm that you are a person and not a program.

To confirm, simply reply to this message, or visit:
https://example.net/confirm?id=abc123

--- Your original message follows ---
From: sender@example.com
To: pat@example.net
Subject: Hello

Hi Pat!
"""

PHISHING = b"""\
Return-Path: <bounce-9931@mailer.example.biz>
From: "Mail Delivery System" <no-reply@mailer.example.biz>
To: victim@example.com
Subject: Undelivered Mail: 4 messages held for victim@example.com
Content-Type: text/plain; charset=us-ascii

Delivery Status Notification (Failure)

4 incoming messages for victim@example.com could not be delivered to
your inbox because your mailbox quota is exceeded.

Reporting-MTA: dns; mail.example.com
Final-Recipient: rfc822; victim@example.com
Action: failed
Status: 5.2.2

Click here to release your pending messages:
https://release.example.biz/victim@example.com
"""

VACATION = b"""\
From: "Sam Sample" <sam@example.org>
To: sender@example.com
Subject: Out of office: Delivery failure report for March
Auto-Submitted: auto-replied
Content-Type: text/plain; charset=us-ascii

I am out of the office until Monday with limited access to email.
Your message about the failed deliveries has been received.
"""


@pytest.mark.parametrize(
    "raw",
    [CHALLENGE, CHALLENGE.replace(b"Return-Path: <>\n", b""), PHISHING, VACATION],
    ids=["challenge", "challenge-with-sender", "phishing-dressed-as-bounce", "vacation"],
)
def test_not_a_bounce(raw: bytes) -> None:
    report = decode(raw)
    assert report is None or not [r for r in report.recipients if r.action in ("failed", "delayed", "")]


def test_a_bounce_to_oneself_from_ones_own_mail_system_is_still_a_bounce() -> None:
    raw = (
        b"From: MAILER-DAEMON@example.org\nTo: pat@example.org\nSubject: Returned mail\n"
        b"Content-Type: text/plain\n\n"
        b"Reporting-MTA: dns; mx.example.org\n\n"
        b"Final-Recipient: RFC822; pat@example.org\nAction: failed\nStatus: 4.4.7\n"
    )
    report = decode(raw)
    assert report is not None
    assert [(r.recipient, r.reason) for r in report.recipients] == [("pat@example.org", "expired")]
