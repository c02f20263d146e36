"""Integration: a real Sendmail (Debian's 8.17 binary, unpacked beside Postfix) with the
shipped conf/sendmail/trackmilter.mc lines, trackmilter on a unix socket and a fake MX.

The same promises as with Postfix: links rewritten and the tracking header added in what the
MX received, the message and every recipient's in-line outcome stored under Sendmail's
queue id, and mail flowing on when the milter is gone (no F= flag in the snippet).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from trackmilter_lab import FakeMX, MilterProcess
from trackmilter_lab.daemon import BASE_URL, milter_process, wait_status, write_config
from trackmilter_lab.sendmail import HOSTNAME, SendmailInstance, sendmail_available

from .test_milter_postfix import html_message, html_of

pytestmark = pytest.mark.skipif(
    not sendmail_available(),
    reason="Sendmail is not unpacked under /var/cache/trackmilter/lab-sendmail "
           "(scripts/setup does it), or not root",
)


ACCESS_REFUSED = "refused@example.net"


@dataclass
class SendmailRig:
    mx: FakeMX
    sendmail: SendmailInstance
    milter: MilterProcess
    config: Path


@pytest.fixture
def rig(fake_mx: FakeMX, socket_dir: Path, tmp_path: Path) -> Iterator[SendmailRig]:
    sock = socket_dir / "trackmilter.sock"
    cfg = write_config(tmp_path / "tm", sock, extra={"milter": {"mta_name": "sendmail.lab"}})
    milter = milter_process(cfg, sock).start()
    sm = SendmailInstance(fake_mx.port, sock, access={f"To:{ACCESS_REFUSED}": "REJECT"})
    try:
        sm.start()
        yield SendmailRig(fake_mx, sm, milter, cfg)
    finally:
        sm.stop()
        milter.stop()
        sm.cleanup()


def test_sendmail_rewrites_records_and_refuses(rig: SendmailRig) -> None:
    html = ('<p><a href="https://example.com/a?x=1&amp;y=2">A</a> '
            '<a href="mailto:a@b.c">m</a></p>')
    raw = html_message(html, extra={"Message-ID": "<sendmail-lab-1@example.com>"})
    # A local user that does not exist: Sendmail refuses it at RCPT and, asked for
    # rejected recipients, tells the milter.
    refused = rig.sendmail.send("alice@example.com",
                                ["bob@example.net", f"nosuchuser@{HOSTNAME}"], raw)
    assert list(refused) == [f"nosuchuser@{HOSTNAME}"] and refused[f"nosuchuser@{HOSTNAME}"][0] == 550

    (got,) = rig.mx.wait_for_count(1, timeout=30)
    assert got.recipients == ("bob@example.net",)
    msg, body = html_of(got)
    assert "https://example.com/a" not in body and "mailto:a@b.c" in body
    assert f"{BASE_URL}/c/" in body and f"{BASE_URL}/o/" in body
    tid = msg["X-Trackmilter-ID"]
    assert tid

    sent = rig.sendmail.wait_log(r"(\w+): to=<bob@example\.net>.*stat=Sent")
    queue_id = sent.group(1)
    [stored] = wait_status(rig.config, tid)
    assert stored["queue_id"] == queue_id
    assert stored["message_id"] == "sendmail-lab-1@example.com"
    assert stored["direction"] == "outgoing" and stored["rewritten"] is True
    outcomes = {r["address"]: (r["outcome"], r["status"]) for r in stored["recipients"]}
    assert outcomes == {"bob@example.net": ("accepted", ""),
                        f"nosuchuser@{HOSTNAME}": ("refused", "5.1.1")}
    # Sendmail's own account of what the milter did, under the same queue id.
    log = rig.sendmail.log_text()
    assert f"{queue_id}: Milter (trackmilter) message: body replaced" in log
    assert f"{queue_id}: Milter (trackmilter) add: header: X-Trackmilter-ID: {tid}" in log
    assert "to error state" not in log


def test_access_db_refusals_never_reach_the_milter(rig: SendmailRig) -> None:
    # The README's caveat, pinned: Debian's Sendmail refuses an access-database recipient
    # before any milter hears of it, so trackmilter cannot record it.
    raw = html_message("<p>x</p>", extra={"Message-ID": "<sendmail-lab-3@example.com>"})
    refused = rig.sendmail.send("alice@example.com", ["dave@example.net", ACCESS_REFUSED], raw)
    assert list(refused) == [ACCESS_REFUSED] and refused[ACCESS_REFUSED][0] == 550
    (got,) = rig.mx.wait_for_count(1, timeout=30)
    [stored] = wait_status(rig.config, html_of(got)[0]["X-Trackmilter-ID"])
    assert [r["address"] for r in stored["recipients"]] == ["dave@example.net"]


def test_mail_flows_on_without_the_milter(rig: SendmailRig) -> None:
    rig.milter.stop()
    raw = html_message('<p><a href="https://example.com/b">B</a></p>',
                       extra={"Message-ID": "<sendmail-lab-2@example.com>"})
    assert rig.sendmail.send("alice@example.com", ["carol@example.net"], raw) == {}
    (got,) = rig.mx.wait_for_count(1, timeout=30)
    _, body = html_of(got)
    assert "https://example.com/b" in body  # passed through unmodified
    rig.sendmail.wait_log(r"Milter \(trackmilter\): to error state")
