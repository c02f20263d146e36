"""Integration: real Postfix, the fake MX, the milter and `trackmilter maillog` following
Postfix's own log: every outcome reaches `trackmilter status --json`, rotation loses nothing."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trackmilter_lab import FakeMX, MilterProcess, PostfixInstance, send
from trackmilter_lab.daemon import command, milter_process, wait_status, write_config

MTA = "lab.example"  # the milter's [milter] mta_name in the lab config


@dataclass
class Rig:
    postfix: PostfixInstance
    config: Path
    mx: FakeMX

    def send(self, rcpts: list[str], subject: str) -> None:
        msg = (f"From: alice@example.com\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject}@example.com>\r\n\r\nhello\r\n").encode()
        send("127.0.0.1", self.postfix.smtp_port, "alice@example.com", rcpts, msg)

    def status(self, ident: str, pred: Callable[[list[dict[str, Any]]], bool]
               ) -> list[dict[str, Any]]:
        return wait_status(self.config, ident, pred, timeout=60)


@pytest.fixture
def rig(fake_mx: FakeMX, postfix_lab: Any, socket_dir: Path, tmp_path: Path) -> Iterator[Rig]:
    sock = socket_dir / "trackmilter.sock"
    cfg = write_config(tmp_path / "tm", sock, extra={"maillog": {
        "state_file": str(tmp_path / "tm" / "maillog.state"), "metrics_listen": "",
        "mta_name": MTA, "poll_interval": 0.1}})
    milter: MilterProcess = milter_process(cfg, sock).start()
    follower: subprocess.Popen[bytes] | None = None
    try:
        # Deferred mail expires after a few seconds: all four outcomes in one test.
        postfix = postfix_lab(milter=milter.spec, maximal_queue_lifetime="4s",
                              bounce_queue_lifetime="4s")
        with open(tmp_path / "maillog-follower.log", "wb") as out:
            follower = subprocess.Popen(command(cfg, "maillog", str(postfix.log_path)),
                                        stdout=out, stderr=subprocess.STDOUT)
        yield Rig(postfix, cfg, fake_mx)
    finally:
        if follower is not None:
            follower.send_signal(signal.SIGTERM)
            follower.wait(30)
        milter.stop()


def outcomes(view: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in view:
        for e in m["events"]:
            if e["kind"] == "delivery":
                out.setdefault(e["recipient"], []).append(e["status"])
    return out


def test_four_outcomes_reach_status_and_rotation_loses_nothing(rig: Rig) -> None:
    rig.send(["ok@example.net", "reject-1@example.net", "defer-1@example.net"], "first")
    view = rig.status("first@example.com", lambda v: "expired" in outcomes(v).get(
        "defer-1@example.net", []))
    got = outcomes(view)
    assert got["ok@example.net"] == ["sent"] and got["reject-1@example.net"] == ["bounced"]
    # Retried (the lab backs off one second), then given up on.
    deferrals = got["defer-1@example.net"]
    assert deferrals[0] == "deferred" and deferrals[-1] == "expired"
    assert set(deferrals[:-1]) == {"deferred"}
    states = {r["address"]: r["state"] for r in view[0]["recipients"]}
    assert states == {"ok@example.net": "sent", "reject-1@example.net": "bounced",
                      "defer-1@example.net": "expired"}
    events = {e["recipient"]: e for e in view[0]["events"] if e["kind"] == "delivery"}
    assert events["reject-1@example.net"]["code"] == "5.1.1"
    assert "550 5.1.1 <reject-1@example.net>: Recipient address rejected: User unknown" in (
        events["reject-1@example.net"]["text"])
    assert events["defer-1@example.net"]["code"] == "4.2.0"  # the last deferral's reason
    assert "450 4.2.0" in events["defer-1@example.net"]["text"]
    assert events["ok@example.net"]["data"]["relay"].startswith("127.0.0.1[127.0.0.1]:")

    # Rotate as Postfix does for maillog_file (rename, reload, compress the old file), then
    # mail again: the follower drains the old file and picks up the new one.
    log_dir = rig.postfix.log_path.parent
    rig.postfix.postfix("logrotate")
    assert [p.name for p in log_dir.iterdir() if p.name != "maillog"], "nothing rotated"
    rig.send(["ok2@example.net"], "second")
    view = rig.status("second@example.com", lambda v: bool(outcomes(v)))
    assert outcomes(view) == {"ok2@example.net": ["sent"]}


def remote_dsn(original: bytes, rcpt: str) -> bytes:
    """A bounce as a remote server sends one after it said 250: RFC 3464, original headers."""
    headers = original.partition(b"\r\n\r\n")[0]
    return (
        b"From: MAILER-DAEMON@mx.example.net\r\nTo: alice@example.com\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <dsn-1@mx.example.net>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n'
        b"--R\r\nContent-Type: text/plain\r\n\r\nThe mailbox is full.\r\n"
        b"--R\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        + f"Final-Recipient: rfc822; {rcpt}\r\n".encode()
        + b"Action: failed\r\nStatus: 5.2.2\r\n"
        b"Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n\r\n"
        b"--R\r\nContent-Type: text/rfc822-headers\r\n\r\n" + headers + b"\r\n"
        b"--R--\r\n"
    )


def test_dsn_after_250_makes_the_recipient_bounced(rig: Rig) -> None:
    rig.send(["late@example.net"], "late")
    rig.status("late@example.com", lambda v: outcomes(v).get("late@example.net") == ["sent"])
    [delivered] = rig.mx.wait_for(
        lambda ms: [m for m in ms if "late@example.net" in m.recipients], 30)
    assert b"X-Trackmilter-ID:" in delivered.data
    # The remote server bounces it later: its DSN comes back in over SMTP.
    send("127.0.0.1", rig.postfix.smtp_port, "", ["alice@example.com"],
         remote_dsn(delivered.data.replace(b"\n", b"\r\n").replace(b"\r\r", b"\r"),
                    "late@example.net"))
    [view] = rig.status("late@example.com", lambda v: any(
        e["kind"] == "dsn" for m in v for e in m["events"]))
    [dsn] = [e for e in view["events"] if e["kind"] == "dsn"]
    assert (dsn["recipient"], dsn["status"], dsn["code"]) == ("late@example.net", "failed",
                                                              "5.2.2")
    assert dsn["data"]["reason"] == "mailboxfull" and dsn["source"] == "mx.example.net"
    [late] = view["recipients"]
    assert late["state"] == "bounced"
    assert late["now"].startswith("bounced after the remote server had accepted it")
    text = subprocess.run(command(rig.config, "status", "--explain", "late@example.com"), check=True,
                          capture_output=True, text=True).stdout
    assert "now: bounced after the remote server had accepted it: bounce report (DSN)" in text
