"""Integration: a real Postfix's log, as the systemd journal holds it, read by
`journalctl -o json -u 'postfix@*' | trackmilter maillog -`: every outcome reaches
`trackmilter status --json`, and a restart after the saved cursor misses nothing.

No journald runs here: the private Postfix logs to its `maillog_file`; its lines become
the entries journald would store for Debian 12's `postfix@-.service`, written into a
real journal file by systemd-journal-remote and read back with the real journalctl
(without systemd-journal-remote: the same entries in journalctl's JSON shape).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tests.support import poll
from tests.unit.maillog import journal_export as je

from trackmilter_lab import FakeMX, MilterProcess, PostfixInstance, send
from trackmilter_lab.daemon import command, milter_process, wait_status, write_config

MTA = "lab.example"  # the milter's [milter] mta_name in the lab config


@dataclass
class Rig:
    postfix: PostfixInstance
    config: Path
    state: Path
    journal: Path
    journaled: int = 0  # Postfix log lines written to the journal file so far

    def send(self, rcpts: list[str], subject: str) -> None:
        msg = (f"From: alice@example.com\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject}@example.com>\r\n\r\nhello\r\n").encode()
        send("127.0.0.1", self.postfix.smtp_port, "alice@example.com", rcpts, msg)

    def status(self, ident: str, pred: Callable[[list[dict[str, Any]]], bool]
               ) -> list[dict[str, Any]]:
        return wait_status(self.config, ident, pred, timeout=60)

    def journal_json(self, *args: str) -> str:
        """`journalctl -o json -u 'postfix@*' ARGS` over the Postfix log so far: the lines
        not in the journal yet are appended to it, as journald would have."""
        items = je.entries(self.postfix.log_text().splitlines(), year=datetime.now().year)
        if not je.JOURNAL_REMOTE.exists():
            assert not args, "a cursor needs the real journalctl"
            return je.json_lines(items)
        je.write_journal(items[self.journaled:], self.journal)
        self.journaled = len(items)
        return je.journalctl(self.journal, "--all", "-u", "postfix@*", "-o", "json", *args)

    def maillog(self, text: str) -> subprocess.CompletedProcess[bytes]:
        """`... | trackmilter maillog -` until the end of its input."""
        proc = subprocess.run(command(self.config, "maillog", "-"), input=text.encode(),
                              capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        return proc


@pytest.fixture
def rig(fake_mx: FakeMX, postfix_lab: Any, socket_dir: Path, tmp_path: Path) -> Iterator[Rig]:
    sock = socket_dir / "trackmilter.sock"
    state = tmp_path / "tm" / "maillog.state"
    cfg = write_config(tmp_path / "tm", sock, extra={"maillog": {
        "state_file": str(state), "metrics_listen": "", "mta_name": MTA}})
    milter: MilterProcess = milter_process(cfg, sock).start()
    try:
        postfix = postfix_lab(milter=milter.spec, maximal_queue_lifetime="4s",
                              bounce_queue_lifetime="4s")
        yield Rig(postfix, cfg, state, tmp_path / "postfix.journal")
    finally:
        milter.stop()


def outcomes(view: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in view:
        for e in m["events"]:
            if e["kind"] == "delivery":
                out.setdefault(e["recipient"], []).append(e["status"])
    return out


def saved_cursor(state: Path) -> str:
    """The cursor as the README's unit takes it out of the state file."""
    return subprocess.run(["sed", "-n", r's/^{"cursor": "\([^"]*\)".*/\1/p', str(state)],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_journal_json_outcomes_reach_status_and_the_cursor_resumes(rig: Rig) -> None:
    rig.send(["ok@example.net", "reject-1@example.net", "defer-1@example.net"], "first")
    rig.postfix.wait_log(r"status=expired, returned to sender", timeout=60)
    first = rig.journal_json()
    entries = [json.loads(line) for line in first.splitlines()]
    assert entries and all(e["_SYSTEMD_UNIT"] == "postfix@-.service" for e in entries)
    assert any(e["SYSLOG_IDENTIFIER"] == "postfix/smtp" for e in entries)

    proc = rig.maillog(first)
    # Nothing malformed: no line failed, and the stop says where to go on from.
    assert b"maillog_line_failed" not in proc.stdout + proc.stderr
    assert saved_cursor(rig.state) == entries[-1]["__CURSOR"]

    view = rig.status("first@example.com", lambda v: "expired" in outcomes(v).get(
        "defer-1@example.net", []))
    got = outcomes(view)
    assert got["ok@example.net"] == ["sent"] and got["reject-1@example.net"] == ["bounced"]
    assert got["defer-1@example.net"][0] == "deferred"
    assert got["defer-1@example.net"][-1] == "expired"
    events = {e["recipient"]: e for e in view[0]["events"] if e["kind"] == "delivery"}
    assert events["reject-1@example.net"]["code"] == "5.1.1"
    assert "550 5.1.1 <reject-1@example.net>" in events["reject-1@example.net"]["text"]
    assert events["ok@example.net"]["data"]["relay"].startswith("127.0.0.1[127.0.0.1]:")
    # The time is journald's (the line's second in UTC): the same second as the log's.
    [line] = [ln for ln in rig.postfix.log_text().splitlines() if "to=<ok@example.net>" in ln]
    assert events["ok@example.net"]["at"][11:19] == re.split(r"\s+", line)[2]

    if not je.JOURNAL_REMOTE.exists():
        return  # --after-cursor needs a real journal file
    # More mail, then the restart as the README's unit does it: after the saved cursor.
    rig.send(["ok2@example.net"], "second")
    rig.postfix.wait_log(r"to=<ok2@example\.net>.*status=sent", timeout=60)
    rest = rig.journal_json(f"--after-cursor={saved_cursor(rig.state)}")
    later = [json.loads(line) for line in rest.splitlines()]
    assert later and not any("ok@example.net" in e["MESSAGE"] for e in later)
    proc = rig.maillog(rest)
    assert b"maillog_journal_resume" in proc.stdout + proc.stderr
    view = rig.status("second@example.com", lambda v: bool(outcomes(v)))
    assert outcomes(view) == {"ok2@example.net": ["sent"]}
    assert saved_cursor(rig.state) == later[-1]["__CURSOR"]


README = Path(__file__).parents[2] / "README.md"


def readme_script(journal_dir: Path, state: Path, config: Path) -> str:
    """The README's service script, as written there, with this test's journal
    directory, state file and configuration in place of the system's."""
    text = README.read_text()
    start = text.index("#!/bin/sh\n# /usr/local/bin/trackmilter-maillog-journal")
    script = text[start:text.index("```", start)]
    for old, new in (
        ("journalctl --follow", f"journalctl --directory={journal_dir} --follow"),
        ("state=/var/lib/trackmilter/maillog.state", f"state={state}"),
        ("/opt/trackmilter/bin/trackmilter --config /etc/trackmilter/trackmilter.toml",
         " ".join(command(config))),
    ):
        assert script.count(old) == 1, f"the README's script no longer says {old!r}"
        script = script.replace(old, new)
    return script


def maillog_child(shell: subprocess.Popen[bytes]) -> int:
    """The pid of `trackmilter maillog -` in the script's pipeline."""
    def find() -> int | None:
        children = Path(f"/proc/{shell.pid}/task/{shell.pid}/children").read_text().split()
        for pid in children:
            try:
                if b"maillog" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
            except FileNotFoundError:
                continue
        return None
    return poll(find, timeout=30, what="trackmilter maillog in the pipeline")


@pytest.mark.skipif(not je.JOURNAL_REMOTE.exists(),
                    reason="no systemd-journal-remote (apt-get install systemd-journal-remote)")
def test_the_readme_service_script_follows_and_resumes(rig: Rig) -> None:
    """The README's script, live: journalctl --follow feeds the follower as entries are
    written; stopped and started again, it goes on after the saved cursor."""
    journal_dir = rig.journal.parent / "journal"
    journal_dir.mkdir()
    rig.journal = journal_dir / "system.journal"
    script = readme_script(journal_dir, rig.state, rig.config)

    def run_script(out: Path) -> subprocess.Popen[bytes]:
        with out.open("wb") as f:
            # Its own process group: a failed test kills the whole pipeline.
            return subprocess.Popen(["/bin/sh", "-c", script], stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def stop(shell: subprocess.Popen[bytes]) -> None:
        # As `systemctl stop` would for the follower: it stores what it holds and
        # exits 0; journalctl, its reader gone, ends; so does the script.
        try:
            os.kill(maillog_child(shell), signal.SIGTERM)
            assert shell.wait(timeout=60) == 0
        finally:
            if shell.poll() is None:
                os.killpg(shell.pid, signal.SIGKILL)
                shell.wait(timeout=30)

    def journal_after(rcpts: list[str], subject: str) -> str:
        rig.send(rcpts, subject)
        for rcpt in rcpts:
            rig.postfix.wait_log(rf"to=<{re.escape(rcpt)}>.*status=(sent|bounced)",
                                 timeout=60)
        last = json.loads(rig.journal_json().splitlines()[-1])  # appends to the journal
        return str(last["__CURSOR"])

    cursor = journal_after(["ok@example.net", "reject-1@example.net"], "first")
    tmp = rig.journal.parent.parent
    shell = run_script(tmp / "script-1.log")
    try:
        view = rig.status("first@example.com", lambda v: len(outcomes(v)) == 2)
        assert outcomes(view) == {"ok@example.net": ["sent"],
                                  "reject-1@example.net": ["bounced"]}
        poll(lambda: saved_cursor(rig.state) == cursor, timeout=30, what="cursor saved")
        # Entries written while it runs are read as they come (journalctl --follow).
        cursor = journal_after(["ok2@example.net"], "live")
        view = rig.status("live@example.com", lambda v: bool(outcomes(v)))
        assert outcomes(view) == {"ok2@example.net": ["sent"]}
        poll(lambda: saved_cursor(rig.state) == cursor, timeout=30, what="cursor saved")
    finally:
        if shell.poll() is None:
            stop(shell)
    # Mail while the follower is stopped; started again, it reads only what is new.
    journal_after(["ok3@example.net"], "stopped")
    shell = run_script(tmp / "script-2.log")
    try:
        view = rig.status("stopped@example.com", lambda v: bool(outcomes(v)))
        assert outcomes(view) == {"ok3@example.net": ["sent"]}
    finally:
        if shell.poll() is None:
            stop(shell)
    lines = [json.loads(line) for line in (tmp / "script-2.log").read_text().splitlines()
             if line.startswith("{")]
    [resumed] = [ln for ln in lines if ln["event"] == "maillog_journal_resume"]
    [stopped] = [ln for ln in lines if ln["event"] == "maillog_stopped"]
    assert resumed["cursor"] == cursor
    assert stopped["events"] == 1  # ok3 only: nothing before the cursor read again
