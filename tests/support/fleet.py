"""Helpers for the fleet test (tests/integration/test_fleet.py): several trackmilter nodes
on one PostgreSQL database, a webhook receiver, a daemon run by its pid, Postfix log lines
and a milter transaction with a queue id of our choosing.

Nothing here starts a process that outlives its `with` block or `stop()`.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from tests.support.http_receiver import serving_posts

from trackmilter.webhooks.payload import SignatureError, verify
from trackmilter_lab import child
from trackmilter_lab.daemon import command, write_config

# ------------------------------------------------------------------ one PostgreSQL


def with_schema(url: str, schema: str) -> str:
    """The URL with its search_path set to `schema` (every daemon's tables go there)."""
    return make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}) \
        .render_as_string(hide_password=False)


@contextmanager
def pg_schema(url: str, prefix: str = "fleet") -> Iterator[str]:
    """A fresh schema in the database at `url` for one test; yields the URL that uses it.
    Dropped afterwards, whatever happened (CASCADE: every table the daemons made)."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            yield with_schema(url, schema)
        finally:
            with admin.begin() as conn:
                # Every daemon is stopped by now; WITH (FORCE) is for databases only.
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


# ------------------------------------------------------------------ configuration


def fleet_config(workdir: Path, *, db_url: str, key_file: Path, extra: Mapping[str, Mapping[str,
                 Any]] = {}) -> Path:
    """One node's TOML: the lab's (trackmilter_lab.daemon.write_config) on the shared
    database with the shared tracking key; `extra` adds or overrides sections."""
    sections: dict[str, dict[str, Any]] = {
        "database": {"url": db_url},
        "tracking": {"secret_file": str(key_file)},
    }
    for name, values in extra.items():
        sections.setdefault(name, {}).update(values)
    return write_config(workdir, workdir / "milter.sock", extra=sections)


def new_key_file(path: Path, key: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((key or secrets.token_hex(32)) + "\n")
    path.chmod(0o600)
    return path


# ------------------------------------------------------------------ a daemon by its pid


class Daemon:
    """A trackmilter command as a child process (its own session, output to a file), ended
    by its pid: SIGTERM, SIGKILL after the timeout."""

    def __init__(self, config: Path, *args: str, log_path: Path,
                 stdin: int | IO[bytes] | None = subprocess.DEVNULL) -> None:
        self.argv = command(config, *args, python=sys.executable)
        self.log_path = log_path
        self.stdin = stdin
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def output(self) -> str:
        return child.output(self.log_path)

    def start(self) -> Daemon:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdin=self.stdin, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 25.0) -> int | None:
        proc, self.proc = self.proc, None
        return child.end(proc, signal.SIGTERM, timeout)


def log_problems(path: Path, allowed: frozenset[str] = frozenset()) -> list[str]:
    """The lines of a daemon's JSON log at warning level or above whose event is not in
    `allowed`, and any line that is not JSON (a traceback)."""
    out = []
    for line in child.output(path).splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if entry.get("level") not in ("debug", "info") and entry.get("event") not in allowed:
            out.append(line)
    return out


# ------------------------------------------------------------------ a webhook receiver


@dataclass
class Receiver:
    """A customer's endpoint: verifies each signed POST, counts every event id it got."""

    secret: bytes
    ids: Counter[str] = field(default_factory=Counter)
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/trackmilter"

    def handle(self, headers: Mapping[str, str], body: bytes) -> int:
        try:
            payload = verify(self.secret, headers, body, time.time())
        except SignatureError as e:
            with self.lock:
                self.rejected.append(str(e))
            return 401
        with self.lock:
            self.ids[payload["id"]] += 1
            self.payloads[payload["id"]] = payload
        return 204

    def snapshot(self) -> tuple[Counter[str], dict[str, dict[str, Any]]]:
        with self.lock:
            return Counter(self.ids), dict(self.payloads)


@contextmanager
def receiving(secret: bytes) -> Iterator[Receiver]:
    rec = Receiver(secret)
    with serving_posts(rec):
        yield rec


# ------------------------------------------------------------------ Postfix's log lines


def postfix_lines(qid: str, *, host: str, sender: str, rcpt: str, message_id: str,
                  status: str, dsn: str, reply: str, relay: str, size: int = 900,
                  at: float | None = None) -> list[str]:
    """The lines Postfix 3.7 logs (maillog_file, traditional stamp) for a message that
    came in over SMTP and got one delivery attempt: cleanup, qmgr, smtp, removed; shaped
    as tests/unit/maillog/data/postfix-3.7-lab.log's. (A bounce's non-delivery notice, a
    message of its own, is left out: nothing here would deliver it.)"""
    t = time.localtime(at if at is not None else time.time())
    stamp = time.strftime("%b %e %H:%M:%S", t)
    pid = 41000
    lines = [
        f"{stamp} {host} postfix/cleanup[{pid}]: {qid}: message-id=<{message_id}>",
        f"{stamp} {host} postfix/qmgr[{pid + 1}]: {qid}: from=<{sender}>, size={size}, "
        "nrcpt=1 (queue active)",
        f"{stamp} {host} postfix/smtp[{pid + 2}]: {qid}: to=<{rcpt}>, relay={relay}, "
        f"delay=0.12, delays=0.05/0.01/0.03/0.03, dsn={dsn}, status={status} ({reply})",
    ]
    if status in ("sent", "bounced"):
        lines.append(f"{stamp} {host} postfix/qmgr[{pid + 1}]: {qid}: removed")
    return [line + "\n" for line in lines]


# ------------------------------------------------------------------ a milter transaction

# miltertest (the MTA side of the milter protocol) sends one transaction whose queue id
# {i} is ours to choose: what Postfix does, with a queue id Postfix would have made.
MILTERTEST_SCRIPT = """\
conn = mt.connect(socket)
if conn == nil then error("mt.connect() failed") end
if mt.conninfo(conn, "localhost", "127.0.0.1") ~= nil then error("mt.conninfo() failed") end
mt.set_timeout(30)
if mt.mailfrom(conn, "<" .. sender .. ">") ~= nil then error("mt.mailfrom() failed") end
mt.macro(conn, SMFIC_RCPT, "i", qid, "{rcpt_mailer}", "smtp", "{rcpt_host}", "mx.example",
         "{rcpt_addr}", rcpt)
if mt.rcptto(conn, "<" .. rcpt .. ">") ~= nil then error("mt.rcptto() failed") end
if mt.header(conn, "From", sender) ~= nil then error("mt.header() failed") end
if mt.header(conn, "To", rcpt) ~= nil then error("mt.header() failed") end
if mt.header(conn, "Subject", "Your receipt") ~= nil then error("mt.header() failed") end
if mt.header(conn, "Message-ID", "<" .. msgid .. ">") ~= nil then error("mt.header() failed") end
if mt.header(conn, "MIME-Version", "1.0") ~= nil then error("mt.header() failed") end
if mt.header(conn, "Content-Type", "text/plain; charset=us-ascii") ~= nil then
  error("mt.header() failed")
end
if mt.bodystring(conn, "Thank you for your order.\\r\\n") ~= nil then
  error("mt.bodystring() failed")
end
if mt.eom(conn) ~= nil then error("mt.eom() failed") end
local reply = mt.getreply(conn)
if reply ~= SMFIR_CONTINUE and reply ~= SMFIR_ACCEPT then error("unexpected reply at eom") end
mt.echo("tracking-id=" .. mt.getheader(conn, "X-Trackmilter-ID", 0))
mt.disconnect(conn)
"""


def milter_transaction(socket: str, workdir: Path, *, qid: str, sender: str, rcpt: str,
                       message_id: str) -> str:
    """Speak one transaction to the milter at `socket` (unix:/path) with queue id `qid`;
    return the tracking id the milter added."""
    script = workdir / "transaction.lua"
    script.write_text(MILTERTEST_SCRIPT)
    defs: Sequence[str] = [f"socket={socket}", f"qid={qid}", f"sender={sender}",
                           f"rcpt={rcpt}", f"msgid={message_id}"]
    argv = ["miltertest", *(a for d in defs for a in ("-D", d)), "-s", str(script)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"miltertest exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    for line in proc.stdout.splitlines():
        if line.startswith("tracking-id="):
            return line.partition("=")[2].strip()
    raise RuntimeError(f"miltertest printed no tracking id:\n{proc.stdout}")
