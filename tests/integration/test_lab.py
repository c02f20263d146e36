"""The lab works: a private Postfix relays to the fake MX, logs outcomes, and runs milters."""

from __future__ import annotations

import io
import re
import shutil
import smtplib
import socket
import sys
import tempfile
from email.utils import make_msgid
from pathlib import Path

import pytest
from tests.support import HTML_CORPUS, MIME_CORPUS, NULLMILTER, poll
from tests.support.lab import NullMilter, PostfixFactory

from trackmilter_lab import FakeMX, MilterProcess, PostfixInstance, Reply, demo
from trackmilter_lab.postfix import postfix_available, process_gone

pytestmark = pytest.mark.integration

SENDER = "sender@example.org"
# Corpus messages that Postfix itself repairs (so their body changes in transit): no
# header/body separator, or no headers at all; cleanup(8) inserts the missing blank line.
POSTFIX_REPAIRS = {"msg_19.txt", "msg_35.txt", "msg_47.txt"}


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def body_of(raw: bytes) -> bytes:
    _head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, "message has no header/body separator"
    return body


def html_message(to: str, html: bytes, subject: str = "Lab newsletter") -> bytes:
    head = (
        f"From: Newsletter <{SENDER}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Message-ID: {make_msgid(domain='example.org')}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode()
    return head + crlf(html)


def plain_message(to: str, text: str, subject: str = "Lab test") -> bytes:
    return (
        f"From: <{SENDER}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Message-ID: {make_msgid(domain='example.org')}\r\n\r\n{text}"
    ).encode()


def status_line(pf: PostfixInstance, rcpt: str, status: str) -> re.Match[str]:
    return pf.wait_log(rf"^.* to=<{re.escape(rcpt)}>, .*status={status}.*$", timeout=30)


# -- the fake MX on its own ------------------------------------------------------------


def _replies(sock: socket.socket, count: int) -> list[bytes]:
    """Read `count` complete SMTP replies (multi-line ones count once)."""
    buf = b""
    replies: list[bytes] = []
    while len(replies) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {replies!r}"
        buf += chunk
        while b"\r\n" in buf:
            line, buf = buf.split(b"\r\n", 1)
            if line[3:4] != b"-":
                replies.append(line)
    return replies


def test_fake_mx_answers_a_pipelined_transaction_in_order(fake_mx: FakeMX) -> None:
    with socket.create_connection(("127.0.0.1", fake_mx.port), timeout=10) as s:
        assert _replies(s, 1)[0].startswith(b"220 ")
        s.sendall(
            b"EHLO client.example\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\n"
            b"RCPT TO:<ok@example.net>\r\nRCPT TO:<reject-me@example.net>\r\n"
            b"RCPT TO:<defer-me@example.net>\r\nDATA\r\n"
        )
        ehlo, mail, ok, rejected, deferred, data = _replies(s, 6)
        assert ehlo.startswith(b"250 ")
        assert mail == b"250 2.1.0 Ok"
        assert ok == b"250 2.1.5 Ok"
        assert rejected == (
            b"550 5.1.1 <reject-me@example.net>: Recipient address rejected: User unknown"
        )
        assert deferred.startswith(b"450 4.2.0 <defer-me@example.net>")
        assert data.startswith(b"354 ")
        s.sendall(b"Subject: x\r\n\r\n..leading dot\r\n...\r\nend\r\n.\r\nQUIT\r\n")
        queued, bye = _replies(s, 2)
    assert queued.startswith(b"250 2.0.0 Ok: queued as ")
    assert bye.startswith(b"221 ")
    (msg,) = fake_mx.messages
    assert msg.sender == "a@example.org"
    assert msg.recipients == ("ok@example.net",)
    assert msg.mail_params == ("BODY=8BITMIME",)
    assert msg.data == b"Subject: x\r\n\r\n.leading dot\r\n..\r\nend\r\n"
    assert queued.endswith(msg.queue_id.encode())
    assert [a.reply.code for a in fake_mx.rcpt_attempts] == [250, 550, 450]


def test_fake_mx_sends_no_354_when_no_recipient_was_accepted(fake_mx: FakeMX) -> None:
    with socket.create_connection(("127.0.0.1", fake_mx.port), timeout=10) as s:
        _replies(s, 1)
        s.sendall(
            b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<reject@example.net>\r\nDATA\r\nRSET\r\nQUIT\r\n"
        )
        replies = _replies(s, 6)
    assert [r[:3] for r in replies] == [b"250", b"250", b"550", b"554", b"250", b"221"]
    assert fake_mx.messages == []


def test_fake_mx_rules_are_pluggable() -> None:
    def rule(address: str) -> Reply:
        return Reply(552, "5.2.2 mailbox full") if address.startswith("full") else Reply(250, "Ok")

    with (
        FakeMX(rule, data_rule=lambda m: Reply(554, "5.7.1 spam")) as mx,
        smtplib.SMTP("127.0.0.1", mx.port) as client,
        pytest.raises(smtplib.SMTPDataError) as exc,
    ):
        client.sendmail("a@example.org", ["x@example.net", "full@example.net"], b"\r\n")
    assert exc.value.smtp_code == 554
    assert mx.messages == []
    assert [(a.address, a.reply.code) for a in mx.rcpt_attempts] == [
        ("x@example.net", 250),
        ("full@example.net", 552),
    ]


def test_fake_mx_wait_for_times_out_with_what_it_saw(fake_mx: FakeMX) -> None:
    with pytest.raises(TimeoutError, match="messages: \\[\\]"):
        fake_mx.wait_for_count(1, timeout=0.2)


# -- Postfix relaying to the fake MX ---------------------------------------------------


def test_html_message_arrives_with_its_body_byte_for_byte(
    postfix_lab: PostfixFactory, fake_mx: FakeMX
) -> None:
    pf = postfix_lab()
    html = (HTML_CORPUS / "postmark" / "basic-receipt.html").read_bytes()
    # Lines that need SMTP dot-stuffing on the way in and out.
    html += b"\n.\n..\n.hidden\n"
    raw = html_message("alice@example.net", html)

    assert pf.send(SENDER, ["alice@example.net"], raw) == {}

    (msg,) = fake_mx.wait_for_count(1)
    assert msg.sender == SENDER
    assert msg.recipients == ("alice@example.net",)
    assert body_of(msg.data) == body_of(raw)
    # Postfix only prepends its Received header; the original header block follows as sent.
    assert msg.data.startswith(b"Received: from ")
    assert raw.partition(b"\r\n\r\n")[0] in msg.data
    status_line(pf, "alice@example.net", "sent")
    pf.wait_queue_empty()


def test_mime_corpus_bodies_arrive_unchanged(postfix_lab: PostfixFactory, fake_mx: FakeMX) -> None:
    pf = postfix_lab()
    sent: dict[str, tuple[str, bytes]] = {}
    paths = [p for p in sorted(MIME_CORPUS.glob("msg_*.txt")) if p.name not in POSTFIX_REPAIRS]
    assert paths, f"no corpus in {MIME_CORPUS}"
    with smtplib.SMTP("127.0.0.1", pf.smtp_port) as client:
        for n, path in enumerate(paths):
            rcpt = f"r{n}@example.net"
            raw = crlf(path.read_bytes())
            client.sendmail(SENDER, [rcpt], raw)
            sent[rcpt] = (path.name, raw)

    received = fake_mx.wait_for_count(len(paths), timeout=60)
    changed = [
        sent[m.recipients[0]][0]
        for m in received
        if body_of(m.data) != body_of(sent[m.recipients[0]][1])
    ]
    assert changed == []


def test_rejecting_mx_makes_a_bounce_with_its_code(
    postfix_lab: PostfixFactory, fake_mx: FakeMX
) -> None:
    pf = postfix_lab()
    assert pf.send(SENDER, ["reject-bob@example.net"], plain_message("b", "hi\r\n")) == {}

    line = status_line(pf, "reject-bob@example.net", "bounced").group(0)
    assert "dsn=5.1.1" in line
    assert "said: 550 5.1.1 <reject-bob@example.net>: Recipient address rejected" in line
    # The non-delivery notification goes back to the sender, with the null sender.
    (dsn,) = fake_mx.wait_for_count(1)
    assert dsn.sender == ""
    assert dsn.recipients == (SENDER,)
    assert b"report-type=delivery-status" in dsn.data
    pf.wait_queue_empty()


def test_deferring_mx_leaves_mail_queued_then_expired(
    postfix_lab: PostfixFactory, fake_mx: FakeMX
) -> None:
    pf = postfix_lab()
    assert pf.send(SENDER, ["defer-carol@example.net"], plain_message("c", "hi\r\n")) == {}

    line = status_line(pf, "defer-carol@example.net", "deferred").group(0)
    assert "dsn=4.2.0" in line
    (entry,) = poll(pf.queue, what="the deferred message in the queue")
    assert entry["queue_name"] == "deferred"
    assert entry["recipients"][0]["address"] == "defer-carol@example.net"
    assert "450 4.2.0" in entry["recipients"][0]["delay_reason"]
    assert fake_mx.messages == []


def test_deferred_mail_expires_when_the_queue_lifetime_is_zero(
    postfix_lab: PostfixFactory, fake_mx: FakeMX
) -> None:
    pf = postfix_lab(maximal_queue_lifetime="0", bounce_queue_lifetime="0")
    assert pf.send(SENDER, ["defer-dan@example.net"], plain_message("d", "hi\r\n")) == {}

    status_line(pf, "defer-dan@example.net", "deferred")
    pf.wait_log(r"qmgr\[\d+\]: \w+: from=<sender@example\.org>, status=expired, returned to sender")
    (dsn,) = fake_mx.wait_for_count(1)
    assert dsn.sender == ""
    pf.wait_queue_empty()


def test_recipient_in_access_table_is_refused_inline(
    postfix_lab: PostfixFactory, fake_mx: FakeMX
) -> None:
    pf = postfix_lab(
        recipient_access={"refused@example.net": "REJECT 5.7.1 Recipient refused by policy"}
    )
    refused = pf.send(SENDER, ["refused@example.net"], plain_message("r", "hi\r\n"))

    assert list(refused) == ["refused@example.net"]
    code, text = refused["refused@example.net"]
    assert code == 554
    assert text.startswith(b"5.7.1 <refused@example.net>: Recipient address rejected")
    pf.wait_log(
        r"NOQUEUE: reject: RCPT from \S+: 554 5\.7\.1 <refused@example\.net>: "
        r"Recipient address rejected: Recipient refused by policy"
    )

    # With another recipient accepted first, the message goes out to that one only.
    refused = pf.send(
        SENDER, ["ok@example.net", "refused@example.net"], plain_message("o", "hi\r\n")
    )
    assert list(refused) == ["refused@example.net"]
    (msg,) = fake_mx.wait_for_count(1)
    assert msg.recipients == ("ok@example.net",)


def test_null_milter_sees_mail_and_mail_flows_without_it(
    postfix_lab: PostfixFactory, fake_mx: FakeMX, null_milter: NullMilter
) -> None:
    pf = postfix_lab(milter=null_milter.spec, milter_default_action="accept")
    assert pf.postconf("-h", "smtpd_milters").strip() == (
        f"{{ {null_milter.spec}, default_action=accept }}")

    pf.send(SENDER, ["erin@example.net", "reject-frank@example.net"], plain_message("e", "x\r\n"))
    fake_mx.wait_for_count(2)  # the message, and the bounce for reject-frank

    records = poll(
        lambda: len(null_milter.records()) >= 2 and null_milter.records(), what="milter records"
    )
    original, bounce = records
    assert original["sender"] == f"<{SENDER}>"
    assert original["recipients"] == ["<erin@example.net>", "<reject-frank@example.net>"]
    assert original["queue_id"]
    assert original["body_bytes"] == len(b"x\r\n")
    # internal_mail_filter_classes = bounce: Postfix's own bounce passed through it too.
    assert bounce["sender"] == ""
    assert bounce["recipients"] == [SENDER]

    null_milter.process.stop(graceful=False)
    offset = pf.log_size()
    pf.send(SENDER, ["grace@example.net"], plain_message("g", "still flows\r\n"))
    third = fake_mx.wait_for_count(3)[2]
    assert third.recipients == ("grace@example.net",)
    assert body_of(third.data) == b"still flows\r\n"
    pf.wait_log(r"warning: connect to Milter service unix:\S+: No such file", since=offset)


def test_null_milter_replace_hands_the_body_back_changed(
    postfix_lab: PostfixFactory, fake_mx: FakeMX, socket_dir: Path
) -> None:
    # The benchmark's "null-replace" floor is only a floor if the body really is replaced.
    sock = socket_dir / "replace.sock"
    process = MilterProcess([sys.executable, str(NULLMILTER), f"unix:{sock}", "--replace"],
                            sock).start()
    try:
        pf = postfix_lab(milter=process.spec)
        offset = pf.log_size()
        pf.send(SENDER, ["ivan@example.net"], plain_message("r", "line one\r\nline two\r\n"))
        (msg,) = fake_mx.wait_for_count(1)
        assert body_of(msg.data) == (b"line one\r\nline two\r\n"
                                     b'<img src="https://t.example/o/AAAAAAAAAAAAAAAAAAAAAAAAAAAA"'
                                     b' width="1" height="1" alt="">\r\n')
        assert "warning" not in pf.log_text(offset)
    finally:
        process.stop(graceful=False)


def test_two_instances_run_side_by_side(postfix_lab: PostfixFactory, fake_mx: FakeMX) -> None:
    first, second = postfix_lab(), postfix_lab()
    assert first.smtp_port != second.smtp_port
    assert first.master_pid != second.master_pid
    first.send(SENDER, ["one@example.net"], plain_message("1", "one\r\n"))
    second.send(SENDER, ["two@example.net"], plain_message("2", "two\r\n"))
    got = fake_mx.wait_for_count(2)
    assert sorted(m.recipients[0] for m in got) == ["one@example.net", "two@example.net"]
    status_line(first, "one@example.net", "sent")
    status_line(second, "two@example.net", "sent")
    assert "two@example.net" not in first.log_text()


def test_stop_leaves_no_postfix_process_behind(postfix_lab: PostfixFactory) -> None:
    pf = postfix_lab()
    pid = pf.master_pid
    assert pid is not None
    pf.stop()
    assert pf.master_pid is None
    assert process_gone(pid)
    assert pf.instance_pids() == []


def test_demo_runs_the_scenario_and_leaves_nothing_running() -> None:
    # The whole quick start: real trackmilter, private Postfix, fake MX, maillog follower.
    if not postfix_available():
        pytest.skip("Postfix is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="tm-demo-", dir="/tmp"))
    try:
        out = io.StringIO()
        assert demo.run_demo(workdir, sys.executable, out) == 0, out.getvalue()
        text = out.getvalue()
        assert "sent to refused@example.net: refused in-line: 554 5.7.1" in text
        assert re.search(r"to=<alice@example\.net>, .*status=sent", text)
        assert re.search(r"to=<reject-carol@example\.net>, .*dsn=5\.1\.1, status=bounced", text)
        assert re.search(r"to=<defer-dave@example\.net>, .*status=deferred", text)
        assert "$ trackmilter status bob@example.net" in text
        # Each status shows the evidence the follower and the milter recorded, a line each,
        # within a terminal's 100 columns.
        status_lines = text[text.index("$ trackmilter status"):].splitlines()
        assert max(len(ln) for ln in status_lines) <= 100
        assert "accepted by the remote server (not proof of inbox)" in text
        assert "accepted by 127.0.0.1[127.0.0.1]" in text
        assert "bounced by 127.0.0.1[127.0.0.1]" in text
        assert "bounce report from lab.example.test: userunknown, hard" in text
        assert "deferred by 127.0.0.1[127.0.0.1]" in text
        assert "refused by our MTA, not sent  5.7.1" in text
        assert re.search(r"log: read up to \S+ \S+ on lab\.example", text)
        # The tracker: a person, Apple's prefetch and a scanner, each judged for what it is.
        assert re.search(r"open +machine +apple_mpp_prefetch", text)
        assert re.search(r"click 1 +human +browser_navigation +203\.0\.113\.50", text)
        assert re.search(r"click 4 +machine +\S*scanner_network", text)
        assert "not attributable to one recipient" in text
        assert "Everything stopped" in text
        pf = PostfixInstance(workdir / "postfix")
        assert pf.master_pid is None
        assert pf.instance_pids() == []
        assert not (workdir / "sock" / "milter.sock").exists()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
