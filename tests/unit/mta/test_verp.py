"""VERP bounce addresses name the original envelope sender and recipient."""

from __future__ import annotations

import pytest

from trackmilter.mta.report_queue import decode_verp


@pytest.mark.parametrize(
    ("address", "delimiters", "expected"),
    [
        pytest.param("owner+bob=example.net@lists.example.org", "+=",
                     ("owner@lists.example.org", "bob@example.net"), id="xverp"),
        pytest.param("<Owner+Bob=Example.NET@Lists.Example.org>", "+=",
                     ("Owner@lists.example.org", "Bob@example.net"), id="case-brackets"),
        pytest.param("owner+a+b=c=example.net@x.example", "+=",
                     ("owner@x.example", "a+b=c@example.net"), id="first-plus-last-equals"),
        pytest.param("bounce-bob#example.net@x.example", "-#",
                     ("bounce@x.example", "bob@example.net"), id="other-delimiters"),
        pytest.param("owner+bob=example.net@lists.example.org", "", None, id="off"),
        pytest.param("alice@example.com", "+=", None, id="plain"),
        pytest.param("alice+tag@example.com", "+=", None, id="subaddress"),
        pytest.param("+bob=example.net@x.example", "+=", None, id="no-prefix"),
        pytest.param("owner+bob=@x.example", "+=", None, id="no-domain"),
    ],
)
def test_decode_verp(address: str, delimiters: str, expected: tuple[str, str] | None) -> None:
    assert decode_verp(address, delimiters) == expected


def test_a_configured_tracking_header_ties_the_report() -> None:
    from trackmilter.mta.report_queue import decode_report

    bounce = (
        b"From: MAILER-DAEMON@mx.example.com\r\nTo: alice@example.com\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nsorry\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
        b"Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"Message-ID: <m1@example.com>\r\nX-Campaign-Track: abcdefghijklmnop\r\n"
        b"--B--\r\n"
    )
    assert decode_report(bounce) is not None
    assert decode_report(bounce).tracking_id == ""  # type: ignore[union-attr]
    report = decode_report(bounce, header="X-Campaign-Track")
    assert report is not None and report.tracking_id == "abcdefghijklmnop"
    assert report.original_message_id.strip("<>") == "m1@example.com"
