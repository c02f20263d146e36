"""Kill a milter (SIGKILL, by the pid of the process we started) at chosen moments of an
SMTP transaction, and keep the books on what the client was told.

The moment that matters is the milter replacing the body: libmilter sends the new body in
SMFIR_REPLBODY packets of 64 KB, and the process's write counter (/proc/PID/io, `wchar`)
grows by one packet at a time. A kill aimed "while replacing" waits until the replacement
has started and `target` bytes of it are out (ReplacementWatch); the watching thread runs
at real-time priority, so that it sees every packet even on a busy machine with two CPUs.
"""

from __future__ import annotations

import os
import random
import re
import signal
import smtplib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from trackmilter_lab import MilterProcess, wait_until

# How a round kills the milter.
REPLACING = "replacing"  # once `target` bytes of the new body are out
DELAY = "delay"          # a random time after the client sent the end of DATA
IDLE = "idle"            # between messages: the client finds the milter gone
NONE = "none"            # no kill (the retries)


PACKET = 65535 + 5  # one SMFIR_REPLBODY packet as libmilter writes it


def _io(path: Path) -> tuple[int, int] | None:
    """(wchar, syscw) from a /proc/.../io file: bytes written, write calls."""
    try:
        text = path.read_text()
    except OSError:  # the thread (or the process) is gone
        return None
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    return int(fields["wchar"]), int(fields["syscw"])


class ReplacementWatch:
    """Follows the milter's SMFIR_REPLBODY packets as they are written, by the process's
    write counters (/proc/PID/io: one small read per look, so looks are frequent).

    The replacement starts with the first look at which the writes since the previous one
    are big ones (half a packet or more, an eighth of a packet or more per write call): the
    milter's other writes (five-byte replies, logs, database pages) come in small pieces.
    From then on every byte the process writes is counted as replacement: the others add
    a little noise, which only makes a kill land a little earlier than aimed.
    """

    def __init__(self, pid: int) -> None:
        self.path = Path(f"/proc/{pid}/io")
        self.last = _io(self.path) or (0, 0)
        self.start: int | None = None

    def written(self) -> int:
        """Bytes written since the replacement started (0 before)."""
        now = _io(self.path)
        if now is None:
            return 0
        if self.start is not None:
            return now[0] - self.start
        nbytes, calls = now[0] - self.last[0], now[1] - self.last[1]
        if nbytes >= PACKET // 2 and calls and nbytes // calls >= PACKET // 8:
            self.start = self.last[0]
            return nbytes
        self.last = now
        return 0


@contextmanager
def high_priority() -> Iterator[None]:
    """Run the calling thread under SCHED_FIFO (root; else at nice -20; else as it is), so
    that a busy poll keeps up with the milter and Postfix even on a busy machine with few
    CPUs. The kernel's real-time throttling (sched_rt_runtime_us) still leaves every CPU
    some time for others, and callers poll for a bounded time."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        old = os.getpriority(os.PRIO_PROCESS, tid)
        try:
            os.setpriority(os.PRIO_PROCESS, tid, -20)
        except OSError:
            yield
            return
        try:
            yield
        finally:
            os.setpriority(os.PRIO_PROCESS, tid, old)
        return
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


@dataclass
class Reply:
    code: int
    text: str


class Transaction(threading.Thread):
    """One SMTP transaction on a new connection, in a thread; `data_sent` is set once the
    final "." went out, `reply` holds the outcome (code 0: the connection was lost)."""

    def __init__(self, port: int, sender: str, recipients: Iterable[str], raw: bytes,
                 timeout: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.sender = sender
        self.recipients = list(recipients)
        self.raw = raw
        self.timeout = timeout
        self.data_sent = threading.Event()
        self.reply: Reply | None = None

    def _done(self, code: int, text: bytes | str) -> None:
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        self.reply = Reply(code, text)

    def run(self) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=self.timeout) as client:
                client.ehlo("client.example")
                code, text = client.mail(self.sender)
                if code != 250:
                    return self._done(code, text)
                for rcpt in self.recipients:
                    code, text = client.rcpt(rcpt)
                    if code not in (250, 251):
                        return self._done(code, text)
                code, text = client.docmd("DATA")
                if code != 354:
                    return self._done(code, text)
                data = re.sub(rb"(?m)^\.", b"..", self.raw)  # dot-stuffing; raw is CRLF
                if not data.endswith(b"\r\n"):
                    data += b"\r\n"
                client.send(data + b".\r\n")
                self.data_sent.set()
                code, text = client.getreply()
                self._done(code, text)
        except smtplib.SMTPResponseException as exc:
            self._done(exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._done(0, f"connection lost: {exc}")
        finally:
            self.data_sent.set()


@dataclass
class Attempt:
    tag: str
    how: str
    code: int
    text: str
    killed: bool = False
    # Bytes of the new body the milter had written at the last look before the kill
    # (REPLACING only).
    written_at_kill: int = 0


@dataclass
class Ledger:
    """Every attempt, in order; the messages the client was told were accepted."""

    attempts: list[Attempt] = field(default_factory=list)
    accepted: dict[str, int] = field(default_factory=dict)  # tag -> attempts it took
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)
            if attempt.code == 250:
                assert attempt.tag not in self.accepted, f"{attempt.tag} accepted twice"
                self.accepted[attempt.tag] = sum(a.tag == attempt.tag for a in self.attempts)


class Killer:
    """Owns the milter process: kills it by pid, reaps it and starts it again."""

    def __init__(self, milter: MilterProcess) -> None:
        self.milter = milter
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        pid = self.milter.pid
        assert pid is not None, "milter not running"
        return pid

    def kill(self) -> None:
        with self._lock:
            os.kill(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        with self._lock:
            self.milter.stop(graceful=False)  # reaps the killed process, removes its socket

    def restart(self) -> None:
        with self._lock:
            self.milter.stop(graceful=False)
            self.milter.start()

    @property
    def up(self) -> bool:
        # Under the lock: a poll() from another thread may reap the process between
        # stop()'s own poll() and its kill.
        with self._lock:
            proc = self.milter.proc
            return proc is not None and proc.poll() is None


def attempt(port: int, sender: str, rcpts: list[str], raw: bytes, tag: str, how: str,
            killer: Killer, rng: random.Random, *, target: int = 0, max_delay: float = 0.05,
            deadline: float = 60.0) -> Attempt:
    """Send once, killing the milter as `how` says; the milter is running again after."""
    if how == IDLE:
        killer.kill()
        killer.stop()  # reaped, socket gone: the milter is down
    watch = ReplacementWatch(killer.pid) if how == REPLACING else None
    tx = Transaction(port, sender, rcpts, raw)
    tx.start()
    killed = how == IDLE
    written = 0
    end = time.monotonic() + deadline
    if watch is not None:
        # Busy polling at high priority: for as long as a transaction takes, and no more.
        end = min(end, time.monotonic() + 5.0)
        with high_priority():
            while tx.reply is None and time.monotonic() < end:
                written = watch.written()
                if written >= target:
                    killer.kill()
                    killed = True
                    break
    elif how == DELAY:
        tx.data_sent.wait(deadline)
        kill_at = time.monotonic() + rng.uniform(0, max_delay)
        while tx.reply is None and time.monotonic() < kill_at:
            pass  # the chosen moment: a busy wait, so the kill lands on time
        if tx.reply is None:
            killer.kill()
            killed = True
    tx.join(deadline)
    assert tx.reply is not None, f"{tag}: no SMTP reply within {deadline}s"
    if killed:
        killer.restart()
    return Attempt(tag, how, tx.reply.code, tx.reply.text, killed, written)


def send_until_accepted(port: int, sender: str, rcpts: list[str], raw: bytes, tag: str,
                        ledger: Ledger, first: Callable[[], Attempt] | None = None,
                        ready: Callable[[], bool] = lambda: True, tries: int = 10) -> None:
    """What a real client does: send; on a temporary failure, send again later (once
    `ready()`: the milter is back)."""
    for n in range(tries):
        if n == 0 and first is not None:
            result = first()
        else:
            if n > 0:
                wait_until(ready, 30, interval=0.01, what="the milter to be back")
            tx = Transaction(port, sender, rcpts, raw)
            tx.start()
            tx.join(60)
            assert tx.reply is not None, f"{tag}: no SMTP reply"
            result = Attempt(tag, NONE, tx.reply.code, tx.reply.text)
        ledger.add(result)
        if result.code == 250:
            return
        assert result.code == 0 or 400 <= result.code < 500, (
            f"{tag}: permanent failure {result.code} {result.text}")
    raise AssertionError(f"{tag}: not accepted after {tries} tries: "
                         f"{[a for a in ledger.attempts if a.tag == tag]}")
