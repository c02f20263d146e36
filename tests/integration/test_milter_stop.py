"""Integration: how the milter stops. Real Postfix, the daemon, a fake MX.

SIGTERM (what `systemctl stop` sends) must never kill the process by the signal's default
action: the milter lets the transaction in flight finish, stores its record, logs
`milter_stopped` with counts and exits 0. `kill -9` cannot be handled at all: what it must
not cost is a record, which the journal keeps for the next start.
"""

from __future__ import annotations

import json
import signal
import smtplib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trackmilter_lab import FakeMX, MilterProcess, PostfixInstance, wait_until
from trackmilter_lab.daemon import milter_process, write_config


def stored_message_ids(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT message_id FROM messages")}


def log_events(milter: MilterProcess) -> list[dict[str, Any]]:
    out = []
    for line in milter.output().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def message(n: int) -> bytes:
    return (f"From: alice@example.com\r\nTo: bob@example.net\r\nSubject: stop {n}\r\n"
            f"Message-ID: <stop-{n}@example.com>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n"
            f'<p><a href="https://example.com/{n}">link</a></p>\r\n').encode()


@pytest.fixture
def stack(fake_mx: FakeMX, postfix_lab: Any, socket_dir: Path, tmp_path: Path
          ) -> Iterator[tuple[MilterProcess, PostfixInstance, Path]]:
    sock = socket_dir / "trackmilter.sock"
    cfg = write_config(tmp_path / "tm", sock, extra={"store": {"stop_timeout": 15}})
    milter = milter_process(cfg, sock).start()
    try:
        postfix = postfix_lab(milter=milter.spec)
        yield milter, postfix, cfg.parent / "trackmilter.db"
    finally:
        milter.stop()


def test_sigterm_exits_0_and_tempfails_the_open_transaction(
    stack: tuple[MilterProcess, PostfixInstance, Path], fake_mx: FakeMX
) -> None:
    """libmilter ends a connection at its next command once stopped: the open transaction
    is cut short and Postfix applies the shipped default_action (tempfail), so the client
    sends it again later; nothing is accepted unrecorded."""
    milter, postfix, db = stack
    assert milter.proc is not None
    smtp = smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60)
    try:
        smtp.ehlo("client.example")
        smtp.mail("alice@example.com")
        smtp.rcpt("bob@example.net")
        milter.proc.send_signal(signal.SIGTERM)
        # Not killed by the signal: it stops, stores what it holds and exits 0.
        assert milter.proc.wait(timeout=30) == 0
        code, _ = smtp.data(message(1))
        assert 400 <= code < 500
    finally:
        smtp.close()
    [stopped] = [e for e in log_events(milter) if e.get("event") == "milter_stopped"]
    assert stopped["cut_short"] == 0 and stopped["dropped"] == 0
    assert postfix.queue_ids() == []  # refused for now, so not queued unrecorded


def test_sigterm_under_load_loses_no_record(
    stack: tuple[MilterProcess, PostfixInstance, Path], fake_mx: FakeMX
) -> None:
    """Clients send without pause; SIGTERM; the milter is started again (as systemd's
    restart does). Every message Postfix accepted is delivered and has its record."""
    milter, postfix, db = stack
    assert milter.proc is not None
    accepted: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(k: int) -> None:
        n = k * 100_000
        while not stop.is_set():
            n += 1
            try:
                with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as smtp:
                    smtp.sendmail("alice@example.com", ["bob@example.net"], message(n))
            except (smtplib.SMTPException, OSError):
                continue  # tempfailed while the milter is away: not accepted, sent anew
            with lock:
                accepted.append(n)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(accepted) >= 30, 60, what="30 messages accepted")
        milter.proc.send_signal(signal.SIGTERM)
        assert milter.proc.wait(timeout=40) == 0  # not killed by the signal
        stopped = [e for e in log_events(milter) if e.get("event") == "milter_stopped"]
        milter.stop()
        milter.start()  # the same config, socket and journal directory
        before = len(accepted)
        wait_until(lambda: len(accepted) >= before + 20, 60, what="20 more after restart")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert stopped and stopped[0]["dropped"] == 0
    with lock:
        sent = {f"stop-{n}@example.com" for n in accepted}
    postfix.wait_queue_empty(60)
    wait_until(lambda: not (sent - stored_message_ids(db)), 30,
               what="a record for every accepted message")
