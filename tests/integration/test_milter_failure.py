"""Integration: a milter that dies half-way through replacing a body, and real Postfix.

The milter here is tests/support/rawmilter.py: it speaks the milter protocol itself, so it
can send part of a replacement body (a few SMFIR_REPLBODY packets) and then exit without a
final reply, at exactly the same point every time. What Postfix 3.7 does then depends only
on the milter's default action (docs/postfix-milter-failure.md has the source walk-through):

- accept: cleanup keeps the queue file as the cut-off replacement left it (the edit is
  never finished), answers 250, and the message is later found unreadable and moved to the
  `corrupt` queue, or is delivered with a body that is half new, half old;
- tempfail: the client gets 451 4.7.1, nothing is queued, the client's retry goes through;
- reject: the client gets 550 5.5.0; quarantine: 250 and the cut-off file waits in `hold`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support import poll
from tests.support.lab import PostfixFactory
from tests.support.milter_failure import (
    RAWMILTER,
    kick_pickup,
    queue_files,
    sendmail,
    submit,
)

from trackmilter_lab import FakeMX, MilterProcess, PostfixInstance, free_port

pytestmark = pytest.mark.integration

SENDER = "alice@example.com"
RCPT = "bob@example.net"
TEMPFAIL = (451, "4.7.1 Service unavailable - try again later")

# 2000 lines of 58 bytes: a 116 KB body, two SMFIR_REPLBODY packets' worth.
LINE = "line {:05d} original text padding padding padding padding\r\n"
BODY = "".join(LINE.format(i) for i in range(2000)).encode()
LINE_LEN = len(LINE.format(0))
# A replacement that outgrows the original body (640 KB, ten 64 KB packets): what link
# rewriting does. Cut after three packets, the replacement has left the original body's
# space in the queue file and continues at its end.
GROWN = b"".join(b"new line %06d " % i + b"x" * 46 + b"\r\n" for i in range(10000))


def message(tag: str, body: bytes = BODY) -> bytes:
    return (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@example.com>\r\n\r\n").encode() + body


def body_of(raw: bytes) -> bytes:
    return raw.partition(b"\r\n\r\n")[2]


class RawMilters:
    """Start rawmilter.py processes on sockets in one directory; all stopped at teardown."""

    def __init__(self, socket_dir: Path) -> None:
        self.socket_dir = socket_dir
        self.started: list[MilterProcess] = []

    def start(self, name: str = "raw", *args: str) -> MilterProcess:
        sock = self.socket_dir / f"{name}.sock"
        argv = [sys.executable, str(RAWMILTER), f"unix:{sock}",
                "--record", str(self.record_path(name)), *args]
        process = MilterProcess(argv, sock).start()
        self.started.append(process)
        return process

    def dying(self, name: str = "raw", *, after: int, grown: bool = True,
              chunk_size: int | None = None) -> MilterProcess:
        """A milter that exits after sending `after` SMFIR_REPLBODY packets."""
        args = ["--die-after", str(after)]
        if grown:
            replacement = self.socket_dir / f"{name}.replacement"
            replacement.write_bytes(GROWN)
            args += ["--replacement", str(replacement)]
        if chunk_size is not None:
            args += ["--chunk-size", str(chunk_size)]
        return self.start(name, *args)

    def record_path(self, name: str) -> Path:
        return self.socket_dir / f"{name}.jsonl"

    def records(self, name: str = "raw") -> list[dict[str, Any]]:
        try:
            text = self.record_path(name).read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def restart(self, process: MilterProcess, name: str = "raw", *args: str) -> MilterProcess:
        """Reap a milter that died (or stop it), then start a well-behaved one in its place."""
        process.stop(graceful=False)
        return self.start(name, *args)

    def stop_all(self) -> None:
        for process in self.started:
            process.stop(graceful=False)


@pytest.fixture
def raw_milters(socket_dir: Path) -> Iterator[RawMilters]:
    milters = RawMilters(socket_dir)
    try:
        yield milters
    finally:
        milters.stop_all()


def died_mid_replacement(milters: RawMilters, qid: str, name: str = "raw") -> dict[str, Any]:
    [rec] = [r for r in milters.records(name) if r["queue_id"] == qid]
    assert rec["sent_before_dying"] is not None and 0 < rec["sent_before_dying"] < rec["packets"]
    return rec


def all_queues_empty(pf: PostfixInstance) -> bool:
    return not any(queue_files(pf).values())


def queue_id_of(pf: PostfixInstance, tag: str, since: int = 0) -> str:
    m = pf.wait_log(rf"cleanup\[\d+\]: (\w+): message-id=<{re.escape(tag)}@example\.com>",
                    since=since)
    return m.group(1)


def lost_milter_line(pf: PostfixInstance, milter: MilterProcess, since: int = 0) -> None:
    pf.wait_log(rf"warning: milter {re.escape(milter.spec)}: can't read SMFIC_BODYEOB reply "
                r"packet header", since=since)


# -- default_action = accept: what went wrong --------------------------------------------


def test_accept_commits_a_cut_off_replacement_and_qmgr_moves_it_to_corrupt(
    postfix_lab: PostfixFactory, fake_mx: FakeMX, raw_milters: RawMilters
) -> None:
    milter = raw_milters.dying(after=3)
    pf = postfix_lab(milter=milter.spec, milter_default_action="accept")

    assert submit(pf.smtp_port, SENDER, [RCPT], message("cut"))[0] == 250
    qid = queue_id_of(pf, "cut")
    lost_milter_line(pf, milter)
    rec = died_mid_replacement(raw_milters, qid)
    assert (rec["sent_before_dying"], rec["packets"]) == (3, 10)

    # The reader runs off the end of the last, unterminated body region.
    pf.wait_log(rf"warning: {qid}: bad record type: -1 in message content")
    pf.wait_log(rf"{qid}: to=<{re.escape(RCPT)}>.*status=bounced \(unreadable mail queue entry\)")
    pf.wait_log(rf'warning: saving corrupt file "{qid}" from queue "active" to queue "corrupt"')
    assert poll(lambda: queue_files(pf, "corrupt")["corrupt"], 30) == [qid]
    # Nothing was delivered, and the bounce to the sender failed too (the bounce daemon
    # cannot open the queue file that was marked corrupt): the client's 250 was all it got.
    pf.wait_log(rf"{qid}: status=deferred \(bounce failed\)")
    assert fake_mx.messages == []


def test_accept_can_deliver_a_body_half_replaced_half_original(
    postfix_lab: PostfixFactory, fake_mx: FakeMX, raw_milters: RawMilters
) -> None:
    # A same-size replacement, cut after 100 whole lines: the new records overwrite the old
    # ones in place and the rest of the old body still follows them in the queue file.
    milter = raw_milters.dying(after=1, grown=False, chunk_size=100 * LINE_LEN)
    pf = postfix_lab(milter=milter.spec, milter_default_action="accept")

    assert submit(pf.smtp_port, SENDER, [RCPT], message("mixed"))[0] == 250
    died_mid_replacement(raw_milters, queue_id_of(pf, "mixed"))
    [got] = fake_mx.wait_for_count(1, timeout=30)
    replaced = BODY.replace(b"original", b"REPLACED")
    assert body_of(got.data) == replaced[:100 * LINE_LEN] + BODY[100 * LINE_LEN:]
    assert queue_files(pf, "corrupt")["corrupt"] == []


# -- the other default actions ---------------------------------------------------------


def test_tempfail_refuses_the_message_and_the_retry_delivers_it_whole(
    postfix_lab: PostfixFactory, fake_mx: FakeMX, raw_milters: RawMilters
) -> None:
    milter = raw_milters.dying(after=3)
    pf = postfix_lab(milter=milter.spec)  # the lab's default: the shipped per-milter tempfail
    assert pf.postconf("-h", "smtpd_milters").strip() == (
        f"{{ {milter.spec}, default_action=tempfail }}")

    assert submit(pf.smtp_port, SENDER, [RCPT], message("retry")) == TEMPFAIL
    qid = queue_id_of(pf, "retry")
    died_mid_replacement(raw_milters, qid)
    pf.wait_log(rf"{qid}: milter-reject: END-OF-MESSAGE from \S+: 4\.7\.1 Service unavailable")
    # cleanup removed its queue file before smtpd answered: nothing anywhere.
    assert pf.queue_ids() == []
    assert all_queues_empty(pf), queue_files(pf)

    # The client tries again later; by then the milter is back.
    milter = raw_milters.restart(milter, "raw", "--replacement",
                                 str(raw_milters.socket_dir / "raw.replacement"))
    assert submit(pf.smtp_port, SENDER, [RCPT], message("retry"))[0] == 250
    [got] = fake_mx.wait_for_count(1, timeout=30)
    assert body_of(got.data) == GROWN
    assert queue_files(pf, "corrupt")["corrupt"] == []


def test_reject_refuses_the_message_for_good(
    postfix_lab: PostfixFactory, fake_mx: FakeMX, raw_milters: RawMilters
) -> None:
    milter = raw_milters.dying(after=3)
    pf = postfix_lab(milter=milter.spec, milter_default_action="reject")
    assert submit(pf.smtp_port, SENDER, [RCPT], message("rejected")) == (
        550, "5.5.0 Service unavailable")
    died_mid_replacement(raw_milters, queue_id_of(pf, "rejected"))
    assert all_queues_empty(pf), queue_files(pf)
    assert fake_mx.messages == []


def test_quarantine_holds_the_cut_off_file_and_releasing_it_corrupts_it(
    postfix_lab: PostfixFactory, fake_mx: FakeMX, raw_milters: RawMilters
) -> None:
    milter = raw_milters.dying(after=3)
    pf = postfix_lab(milter=milter.spec, milter_default_action="quarantine")
    assert submit(pf.smtp_port, SENDER, [RCPT], message("held"))[0] == 250
    qid = queue_id_of(pf, "held")
    died_mid_replacement(raw_milters, qid)
    pf.wait_log(rf"{qid}: milter-hold: END-OF-MESSAGE")
    assert queue_files(pf, "hold")["hold"] == [qid]

    # The held file is the same cut-off replacement; the original body is overwritten.
    pf.postsuper("-H", qid)
    pf.wait_log(rf"warning: {qid}: bad record type: -1 in message content")
    assert poll(lambda: queue_files(pf, "corrupt")["corrupt"], 30) == [qid]
    assert fake_mx.messages == []


# -- the per-milter form ---------------------------------------------------------------


def test_per_milter_default_action_applies_to_that_milter_only(
    postfix_lab: PostfixFactory, fake_mx: FakeMX, raw_milters: RawMilters
) -> None:
    """`{ ours, default_action=tempfail }, other` with a global `accept`: losing the other
    milter lets mail through, losing ours mid-replacement tempfails it."""
    ours = raw_milters.start("ours", "--replacement", str(_write(raw_milters, "ours")))
    other = f"inet:127.0.0.1:{free_port()}"  # nothing listens: the other milter is down
    milters = f"{{ {ours.spec}, default_action=tempfail }}, {other}"
    pf = postfix_lab(milter=None, extra_main_cf={
        "smtpd_milters": milters, "non_smtpd_milters": milters,
        "milter_default_action": "accept", "milter_protocol": "6"})

    assert submit(pf.smtp_port, SENDER, [RCPT], message("other-down"))[0] == 250
    pf.wait_log(rf"warning: connect to Milter service {re.escape(other)}: Connection refused")
    [got] = fake_mx.wait_for_count(1, timeout=30)
    assert body_of(got.data) == GROWN  # ours replaced the body; the other was skipped

    ours = raw_milters.restart(ours, "ours", "--die-after", "3", "--replacement",
                               str(raw_milters.socket_dir / "ours.replacement"))
    assert submit(pf.smtp_port, SENDER, [RCPT], message("ours-died")) == TEMPFAIL
    died_mid_replacement(raw_milters, queue_id_of(pf, "ours-died"), "ours")
    poll(lambda: all_queues_empty(pf), 30, what="every queue empty")


def test_spaces_around_equals_in_the_per_milter_form_kill_smtpd(
    postfix_lab: PostfixFactory, raw_milters: RawMilters
) -> None:
    """MILTER_README: inside { } a setting with spaces around "=" must itself be braced.
    Written bare, smtpd exits on the first connection and every client is turned away."""
    milter = raw_milters.start()
    bad = f"{{ {milter.spec}, default_action = tempfail }}"
    pf = postfix_lab(milter=None, extra_main_cf={"smtpd_milters": bad})
    code, text = submit(pf.smtp_port, SENDER, [RCPT], message("spaced"))
    assert code in (0, 421), (code, text)  # dropped (or 421 from a throttled master)
    pf.wait_log(r"smtpd\[\d+\]: fatal: malformed option: missing '=' after attribute name")

    # The braced setting, and no spaces, both parse: see the other tests of this module.
    good = f"{{ {milter.spec}, {{ default_action = tempfail }} }}"
    pf2 = postfix_lab(milter=None, extra_main_cf={"smtpd_milters": good})
    assert submit(pf2.smtp_port, SENDER, [RCPT], message("braced"))[0] == 250


def test_non_smtpd_milters_tempfail_keeps_the_submission_in_maildrop(
    postfix_lab: PostfixFactory, fake_mx: FakeMX, raw_milters: RawMilters
) -> None:
    """Mail from sendmail(1): pickup keeps the file in maildrop and hands it over again."""
    milter = raw_milters.dying(after=3)
    pf = postfix_lab(milter=milter.spec)
    sendmail(pf, SENDER, [RCPT], message("local"))
    qid = queue_id_of(pf, "local")
    lost_milter_line(pf, milter)
    died_mid_replacement(raw_milters, qid)
    pf.wait_log(rf"{qid}: milter-reject: END-OF-MESSAGE .*4\.7\.1 Service unavailable")
    files = queue_files(pf)
    assert len(files.pop("maildrop")) == 1 and not any(files.values()), files

    offset = pf.log_size()
    milter = raw_milters.restart(milter, "raw", "--replacement",
                                 str(raw_milters.socket_dir / "raw.replacement"))
    kick_pickup(pf)
    [got] = fake_mx.wait_for_count(1, timeout=30)
    assert body_of(got.data).replace(b"\r\n", b"\n") == GROWN.replace(b"\r\n", b"\n")
    pf.wait_log(r"postfix/pickup\[\d+\]: \w+: uid=\d+ from=", since=offset)
    poll(lambda: all_queues_empty(pf), 30, what="every queue empty")


def _write(milters: RawMilters, name: str) -> Path:
    path = milters.socket_dir / f"{name}.replacement"
    path.write_bytes(GROWN)
    return path

