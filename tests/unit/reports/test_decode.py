"""Unit tests for the pure pieces: field blocks, DSN, MDN, ARF, prose bounces, junk."""

from __future__ import annotations

import pytest

from trackmilter.reports import decode
from trackmilter.reports.fields import bare_address, parse_blocks, split_groups, typed_value
from trackmilter.reports.reason import (
    best_replycode,
    best_status,
    classify,
    find_replycode,
    find_status,
    is_hard,
)
from trackmilter.reports.rules import TEXT_RULES, reason_from_text, wording

DSN = b"""\
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: sender@example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
X-Postfix-Queue-ID: 4AbCdEf
Original-Envelope-Id: env-1
Arrival-Date: Mon, 1 Jan 2024 10:00:00 +0000

Final-Recipient: rfc822; gone@example.net
Original-Recipient: rfc822;Gone@Example.net
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.1.1 <gone@example.net>: Recipient address
    rejected: User unknown in virtual mailbox table

Final-Recipient: rfc822; full@example.net
Action: delayed
Status: 4.2.2
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full

--B
Content-Type: message/rfc822

Message-ID: <orig-1@example.com>
X-Trackmilter-ID: tm-42
From: sender@example.com
To: gone@example.net

body
--B--
"""


def test_split_groups_unfolds_continuation_lines() -> None:
    groups = split_groups("A: 1\nB: two\n  halves\n\n\nC: 3\n")
    assert groups == [["A: 1", "B: two halves"], ["C: 3"]]


def test_parse_blocks_skips_junk_and_keeps_first_value() -> None:
    assert parse_blocks("Action: failed\nnot a field\nAction: delayed\n") == [{"action": "failed"}]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("rfc822; a@b.example", "a@b.example", id="typed"),
        pytest.param("rfc822;<A@B.example>", "A@B.example", id="brackets"),
        pytest.param('"Name" <x@y.example>', "x@y.example", id="display-name"),
    ],
)
def test_bare_address(value: str, expected: str) -> None:
    assert bare_address(value) == expected


def test_typed_value_keeps_later_semicolons() -> None:
    assert typed_value("smtp; 550 no; really") == "550 no; really"
    assert typed_value("550 5.7.1 blocked; see https://x") == "550 5.7.1 blocked; see https://x"


@pytest.mark.parametrize(
    ("text", "status", "reply"),
    [
        pytest.param("host 192.0.2.1 said: 550 5.1.1 unknown", "5.1.1", "550", id="both"),
        pytest.param("192.0.2.250 refused", "", "", id="ip-is-not-a-code"),
        pytest.param("421-4.7.0 try later", "4.7.0", "421", id="multiline-reply"),
    ],
)
def test_codes_in_text(text: str, status: str, reply: str) -> None:
    assert (find_status(text), find_replycode(text)) == (status, reply)


@pytest.mark.parametrize(
    ("status", "reply", "text", "reason"),
    [
        pytest.param("5.0.0", "550", "550 Mailbox is full", "mailboxfull", id="full-not-unknown"),
        pytest.param(
            "5.7.1",
            "554",
            "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org",
            "blocked",
            id="rbl",
        ),
        pytest.param(
            "5.7.1", "550", "550 5.7.1 Message rejected as spam", "spamdetected", id="spam"
        ),
        pytest.param(
            "5.0.0",
            "550",
            "550 unknown user (in reply to RCPT TO command)",
            "userunknown",
            id="rcpt-unknown",
        ),
        pytest.param(
            "5.0.0",
            "550",
            "550 unknown user (in reply to end of DATA command)",
            "filtered",
            id="data-unknown",
        ),
        pytest.param(
            "5.3.4", "552", "552 5.3.4 Error: message file too big", "mesgtoobig", id="size"
        ),
        pytest.param(
            "4.0.0", "421", "421 Too many concurrent SMTP connections", "toomanyconn", id="conns"
        ),
        pytest.param("5.0.0", "554", "554 Relay access denied", "norelaying", id="relay"),
        pytest.param("5.0.0", "", "weird words nobody uses", "onhold", id="no-cause"),
    ],
)
def test_classify(status: str, reply: str, text: str, reason: str) -> None:
    assert classify(status, reply, text) == reason


def test_only_address_problems_are_hard() -> None:
    assert is_hard("userunknown", "5.1.1", "550")
    assert not is_hard("mailboxfull", "5.2.2", "552")
    assert not is_hard("notaccept", "4.3.2", "")


def test_rfc3464_report() -> None:
    report = decode(DSN)
    assert report is not None
    assert report.kind == "dsn"
    assert (report.reporting_mta, report.original_envelope_id) == ("mx.example.org", "env-1")
    assert report.arrival_date == "Mon, 1 Jan 2024 10:00:00 +0000"
    assert report.postfix_queue_id == "4AbCdEf"
    assert (report.original_message_id, report.tracking_id) == ("<orig-1@example.com>", "tm-42")
    gone, full = report.recipients
    assert (gone.recipient, gone.original_recipient) == ("gone@example.net", "Gone@Example.net")
    assert (gone.action, gone.status, gone.replycode, gone.reason, gone.hardbounce) == (
        "failed",
        "5.1.1",
        "550",
        "userunknown",
        True,
    )
    assert gone.diagnostic.endswith(
        "Recipient address rejected: User unknown in virtual mailbox table"
    )
    assert gone.remote_mta == "mx.example.net"
    assert (full.action, full.status, full.reason, full.hardbounce) == (
        "delayed",
        "4.2.2",
        "mailboxfull",
        False,
    )


def test_mdn() -> None:
    raw = b"""\
From: reader@example.net
To: sender@example.com
Subject: Read: hello
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="M"

--M
Content-Type: text/plain

Your message was displayed.
--M
Content-Type: message/disposition-notification

Reporting-UA: reader.example.net; Thunderbird
Final-Recipient: rfc822; reader@example.net
Original-Message-ID: <orig-2@example.com>
Disposition: manual-action/MDN-sent-manually; displayed
--M--
"""
    report = decode(raw)
    assert report is not None
    assert report.kind == "mdn"
    assert report.original_message_id == "<orig-2@example.com>"
    (entry,) = report.recipients
    assert (entry.recipient, entry.action) == ("reader@example.net", "displayed")
    assert entry.disposition == "manual-action/MDN-sent-manually; displayed"
    assert not entry.hardbounce


def test_arf() -> None:
    raw = b"""\
From: fbl@isp.example
To: abuse@example.com
Subject: complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an abuse report.
--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Rcpt-To: <victim@isp.example>

--F
Content-Type: text/rfc822-headers

Message-ID: <orig-3@example.com>
X-Trackmilter-ID: tm-7
From: sender@example.com
To: victim@isp.example
--F--
"""
    report = decode(raw)
    assert report is not None
    assert report.kind == "arf"
    assert (report.original_message_id, report.tracking_id) == ("<orig-3@example.com>", "tm-7")
    (entry,) = report.recipients
    assert (entry.recipient, entry.feedback_type, entry.reason) == (
        "victim@isp.example",
        "abuse",
        "feedback",
    )
    assert not entry.hardbounce


def test_prose_bounce() -> None:
    raw = b"""\
From: MAILER-DAEMON@mx.example.org
To: sender@example.com
Subject: failure notice

Hi. This is the qmail-send program at mx.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<nobody@example.net>:
192.0.2.9 does not like recipient.
Remote host said: 550 5.1.1 <nobody@example.net>: No such user here
Giving up on 192.0.2.9.

--- Below this line is a copy of the message.

Message-ID: <orig-4@example.com>
From: sender@example.com
To: nobody@example.net

hi
"""
    report = decode(raw)
    assert report is not None
    assert report.original_message_id == "<orig-4@example.com>"
    (entry,) = report.recipients
    assert (entry.recipient, entry.status, entry.replycode, entry.reason) == (
        "nobody@example.net",
        "5.1.1",
        "550",
        "userunknown",
    )


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\xff\xfe garbage \r\n\r\n\x80", id="binary"),
        pytest.param(
            b'Content-Type: multipart/report; boundary="X"\n\n--X\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n!!!notbase64\n',
            id="broken-dsn",
        ),
        pytest.param(
            b"Subject: =?utf-8?q?=ZZ?=\nContent-Type: text/plain; charset=no-such-charset\n\n\xff\xfe",
            id="bad-charset",
        ),
        pytest.param(b"From: a@b.example\nSubject: hello\n\nJust a note.\n", id="ordinary-mail"),
    ],
)
def test_junk_never_raises(raw: bytes) -> None:
    report = decode(raw)
    assert report is None or all(r.action not in ("failed", "delayed") for r in report.recipients)


def test_arf_with_several_complainants() -> None:
    raw = b"""\
From: fbl@isp.example
Subject: complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: message/feedback-report

Feedback-Type: abuse
Original-Rcpt-To: a@isp.example
Original-Rcpt-To: b@isp.example
--F--
"""
    report = decode(raw)
    assert report is not None
    assert [r.recipient for r in report.recipients] == ["a@isp.example", "b@isp.example"]


def test_dsn_that_lost_its_mime_boundaries() -> None:
    raw = b"""\
From: MAILER-DAEMON@mx.example.org
Subject: Delivery Notification: Delivery has failed
Content-Type: multipart/report; boundary="gone"

Reporting-MTA: dns; mx.example.org

Action: failed
Status: 5.0.0
Final-Recipient: rfc822;x@example.net
Diagnostic-Code: smtp; 550 5.1.1 User unknown (in reply to RCPT TO command)
"""
    report = decode(raw)
    assert report is not None
    (entry,) = report.recipients
    assert (entry.recipient, entry.status, entry.reason) == (
        "x@example.net",
        "5.1.1",
        "userunknown",
    )


def test_sendmail_transcript_lines_name_each_recipient() -> None:
    raw = b"""\
From: Mail Delivery Subsystem <MAILER-DAEMON@example.com>
Subject: Returned mail: User unknown

   ----- Transcript of session follows -----
554 <a@example.org>... 550 Host unknown (Authoritative answer from name server)
While talking to mx.example.net:
>>> RCPT To:<b@example.net>
<<< 550 No such user here
550 <b@example.net>... User unknown

   ----- Unsent message follows -----
From: me@example.com
To: a@example.org
"""
    report = decode(raw)
    assert report is not None
    assert [(r.recipient, r.reason) for r in report.recipients] == [
        ("a@example.org", "hostunknown"),
        ("b@example.net", "userunknown"),
    ]


def test_ses_json_notification() -> None:
    raw = b"""\
From: no-reply@sns.amazonaws.com
Subject: AWS Notification Message

{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":[{"emailAddress":"x@example.net","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"}]},"mail":{"messageId":"ses-1"}}
"""
    report = decode(raw)
    assert report is not None
    assert report.original_message_id == "ses-1"
    (entry,) = report.recipients
    assert (entry.recipient, entry.status, entry.replycode, entry.reason, entry.hardbounce) == (
        "x@example.net",
        "5.1.1",
        "550",
        "userunknown",
        True,
    )


def test_quoted_remote_reply_beats_the_status_summary() -> None:
    assert best_status("5.1.1", "550 5.7.1 IP address blacklisted") == "5.7.1"
    assert best_status("4.4.7", "554 4.4.7 expired <421 4.4.2 Connection timed out>") == "4.4.2"
    assert best_replycode("554 4.4.7 expired <421 4.4.2 Connection timed out>") == "421"
    assert best_status("5.2.2", "mailbox full") == "5.2.2"


def test_anchor_prefilter_never_changes_a_reason() -> None:
    """The substring pre-check must only skip rules that could not have matched."""
    samples = [
        "550 5.1.1 <a@b>: Recipient address rejected: User unknown in virtual mailbox table",
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
        "452 4.2.2 Mailbox full",
        "552 5.3.4 Message size exceeds fixed limit",
        "421 Too many concurrent SMTP connections from this IP address",
        "550 5.7.26 Unauthenticated email from example.com is not accepted due to DMARC policy",
        "550 Rejected: sender address rejected: domain not found",
        "554 delivery error: This user doesn't have an account",
        "User not listed in Domino Directory",
        "Host or domain name not found. Name service error",
        "connect to mx.example.net[192.0.2.9]:25: Connection timed out",
        "Message expired: retry timeout exceeded",
        "550 Requested action not taken: mailbox unavailable",
        "500 Line limit exceeded",
    ]
    for text in samples:
        flat = wording(text)
        brute = next((reason for reason, pattern in TEXT_RULES if pattern.search(flat)), "")
        assert reason_from_text(text) == brute, text


@pytest.mark.parametrize(
    ("status", "reply", "text", "reason"),
    [
        pytest.param(
            "5.2.3",
            "552",
            "552 5.2.3 message too large for this recipient",
            "exceedlimit",
            id="code-narrows-size",
        ),
        pytest.param(
            "5.1.2", "550", "550 5.1.2 <a@b>: user unknown", "hostunknown", id="code-narrows-host"
        ),
        pytest.param(
            "5.0.0",
            "550",
            "SMTP error from remote mail server after EHLO mx: 550 Rejected",
            "blocked",
            id="rejected-at-ehlo",
        ),
        pytest.param(
            "5.7.1",
            "551",
            "551 5.7.1 <a@b>: Recipient address rejected: Delivery not authorized",
            "securityerror",
            id="x7-bare-rejection",
        ),
        pytest.param(
            "5.0.0", "552", "552 Too many recipients", "toomanyconn", id="too-many-recipients"
        ),
        pytest.param(
            "5.0.0",
            "550",
            ">>> DATA <<< 550 5.0.0 <a@b>... User unknown",
            "filtered",
            id="sendmail-transcript-data",
        ),
        pytest.param(
            "5.7.1",
            "550",
            "5.1.0 - Unknown address error 550-'5.7.1 <x@y>... Access denied' (delivery attempts: 0)",
            "securityerror",
            id="relay-summary-is-not-evidence",
        ),
        pytest.param(
            "5.0.0",
            "",
            "The recipient server did not accept our requests to connect.",
            "expired",
            id="gmail-could-not-connect",
        ),
        pytest.param(
            "5.7.0", "554", "554 5.7.0 Header error (state 18).", "filtered", id="gmail-state"
        ),
        pytest.param(
            "5.2.0",
            "550",
            "550 5.2.0 Mail rejete. Mail rejected. ofr_506 [506]",
            "spamdetected",
            id="orange-code",
        ),
        pytest.param(
            "5.1.0",
            "550",
            "550 5.1.0 sender rejected. AUP#In-1310",
            "toomanyconn",
            id="spectrum-code",
        ),
        pytest.param("4.3.0", "451", "451 4.3.0 Please try again later", "onhold", id="no-cause"),
    ],
)
def test_classify_general_rules(status: str, reply: str, text: str, reason: str) -> None:
    assert classify(status, reply, text) == reason


def test_failure_reply_beats_the_successful_ones_in_a_transcript() -> None:
    transcript = (
        "Out: 250 2.1.0 Ok In: RCPT TO:<a@b> Out: 451 4.3.0 Error In: QUIT Out: 221 2.0.0 Bye"
    )
    assert best_status("", transcript) == "4.3.0"
    assert best_replycode(transcript) == "451"
    assert best_replycode("554 <a@b>... 550 Host unknown") == "550"


OPENSMTPD = b"""\
From: MAILER-DAEMON@mx.example.org
To: sender@example.com
Subject: Delivery status notification: error
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

An error has occurred while attempting to deliver a message for
the following list of recipients:

gone@example.net: 550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown
full@example.net: 552 5.2.2 <full@example.net>: Recipient address rejected: Mailbox full

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; gone@example.net
Action: failed
Status: 5.0.0

Final-Recipient: rfc822; full@example.net
Action: failed
Status: 5.0.0

Final-Recipient: rfc822; slow@example.com
Action: delayed
Status: 4.0.0 (example.com: host name lookup failure)

--B--
"""


def test_dsn_without_diagnostic_codes_reads_the_text_part_and_status_comments() -> None:
    report = decode(OPENSMTPD)
    assert report is not None
    got = [(r.recipient, r.status, r.replycode, r.reason) for r in report.recipients]
    assert got == [
        ("gone@example.net", "5.1.1", "550", "userunknown"),
        ("full@example.net", "5.2.2", "552", "mailboxfull"),
        ("slow@example.com", "4.0.0", "", "networkerror"),
    ]


def test_google_groups_refusal_in_any_language() -> None:
    raw = b"""\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: poster@example.jp
Subject: Delivery Status Notification (Failure)
X-Failed-Recipients: list@googlegroups.com
Content-Type: text/plain; charset=utf-8

Hallo poster@example.jp, die Gruppe (list) ist nicht vorhanden oder Sie haben keine
Berechtigung. Fehler beim Zustellen:
* Name falsch geschrieben.
* Gruppe geloescht.
* Mitgliedschaft erforderlich.
* Nur fuer Mitglieder.
"""
    report = decode(raw)
    assert report is not None
    assert [(r.recipient, r.reason) for r in report.recipients] == [
        ("list@googlegroups.com", "rejected")
    ]


def test_delay_report_keeps_last_attempt_and_retry_until() -> None:
    from trackmilter.reports import decode

    raw = (
        b"From: MAILER-DAEMON@mx.example.com\r\nTo: a@example.com\r\nSubject: Delayed Mail\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="D"\r\n\r\n'
        b"--D\r\nContent-Type: text/plain\r\n\r\nStill trying.\r\n"
        b"--D\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
        b"Final-Recipient: rfc822; b@example.net\r\nAction: delayed\r\nStatus: 4.4.1\r\n"
        b"Diagnostic-Code: smtp; 421 4.4.1 try later\r\n"
        b"Last-Attempt-Date: Thu, 26 Nov 2026 23:00:00 +0000\r\n"
        b"Will-Retry-Until: Tue, 1 Dec 2026 23:00:00 +0000\r\n\r\n"
        b"--D--\r\n"
    )
    report = decode(raw)
    assert report is not None and report.kind == "dsn"
    [r] = report.recipients
    assert (r.action, r.status) == ("delayed", "4.4.1")
    assert r.last_attempt_date == "Thu, 26 Nov 2026 23:00:00 +0000"
    assert r.will_retry_until == "Tue, 1 Dec 2026 23:00:00 +0000"
