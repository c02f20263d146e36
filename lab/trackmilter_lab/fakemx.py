"""A fake remote MX: a small ESMTP server on loopback that records what it receives."""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, TypeVar

__all__ = ["FakeMX", "RcptAttempt", "RcptRule", "ReceivedMessage", "Reply", "default_rcpt_rule"]

T = TypeVar("T")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: code and text (the text may carry an enhanced status code)."""

    code: int
    text: str

    def line(self) -> bytes:
        return f"{self.code} {self.text}\r\n".encode("utf-8", "replace")


# A rule decides the reply to one RCPT TO address (as written between the brackets).
RcptRule = Callable[[str], Reply]


def default_rcpt_rule(address: str) -> Reply:
    """`reject*@` → 550 5.1.1, `defer*@` → 450 4.2.0, anything else → 250 2.1.5."""
    local = address.rpartition("@")[0].lower() if "@" in address else address.lower()
    if local.startswith("reject"):
        return Reply(550, f"5.1.1 <{address}>: Recipient address rejected: User unknown")
    if local.startswith("defer"):
        return Reply(450, f"4.2.0 <{address}>: Recipient address rejected: Try again later")
    return Reply(250, "2.1.5 Ok")


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted transaction: envelope, raw data after dot-unstuffing, our queue id."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    queue_id: str
    helo: str
    mail_params: tuple[str, ...] = ()
    received_at: float = field(default_factory=time.time)

    @property
    def body(self) -> bytes:
        """The data after the header/body separator (empty when there is none)."""
        _head, sep, rest = self.data.partition(b"\r\n\r\n")
        if sep:
            return rest
        _head, sep, rest = self.data.partition(b"\n\n")
        return rest if sep else b""


@dataclass(frozen=True)
class RcptAttempt:
    """One RCPT TO command and the reply the fake MX gave to it."""

    address: str
    reply: Reply


_ADDR = re.compile(rb"^(?:MAIL\s+FROM|RCPT\s+TO)\s*:\s*<([^>]*)>\s*(.*)$", re.IGNORECASE)
_MAX_LINE = 1 << 20  # long lines are legal-ish in DATA; Postfix wraps at 998 anyway


class _Session:
    """State of one SMTP connection (one coroutine per connection)."""

    def __init__(self) -> None:
        self.helo = ""
        self.reset()

    def reset(self) -> None:
        self.sender: str | None = None
        self.params: tuple[str, ...] = ()
        self.recipients: list[str] = []


class FakeMX:
    """An ESMTP server on 127.0.0.1 in a background thread (asyncio), for Postfix's smtp client.

    Speaks EHLO (PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES), MAIL, RCPT, DATA, RSET,
    NOOP, QUIT. Commands are read and answered strictly in order, which is all PIPELINING
    needs from a server: a pipelining client reads the replies in the same order.
    """

    def __init__(
        self,
        rcpt_rule: RcptRule = default_rcpt_rule,
        *,
        data_rule: Callable[[ReceivedMessage], Reply | None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "mx.example.net",
        max_size: int = 50 * 1024 * 1024,
    ) -> None:
        self.rcpt_rule = rcpt_rule
        self.data_rule = data_rule
        self.host = host
        self.hostname = hostname
        self.max_size = max_size
        self._requested_port = port
        self.port = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._messages: list[ReceivedMessage] = []
        self._rcpts: list[RcptAttempt] = []
        self._connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- observation -----------------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of the messages accepted so far, in order of acceptance."""
        with self._lock:
            return list(self._messages)

    @property
    def rcpt_attempts(self) -> list[RcptAttempt]:
        """A snapshot of every RCPT TO seen, accepted or not, with our reply."""
        with self._lock:
            return list(self._rcpts)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self._rcpts.clear()

    def wait_for(self, predicate: Callable[[list[ReceivedMessage]], T], timeout: float = 10.0) -> T:
        """Wait until `predicate(messages)` is truthy and return its value.

        Woken on every received message and re-checked at least every 0.1 s, until the
        deadline; then TimeoutError names the last value and the messages seen.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(list(self._messages))
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(m.sender, m.recipients) for m in self._messages]
                    raise TimeoutError(
                        f"FakeMX on port {self.port}: condition not met after {timeout}s "
                        f"(last value {value!r}; messages: {seen!r})"
                    )
                self._cond.wait(min(remaining, 0.1))

    def wait_for_count(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Wait until at least `count` messages have been accepted; return them all."""
        return self.wait_for(lambda ms: ms if len(ms) >= count else [], timeout)

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("FakeMX already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(
                        self._handle, self.host, self._requested_port, limit=_MAX_LINE
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except OSError as exc:  # reported to start() in the caller's thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"fakemx-{id(self):x}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"FakeMX could not listen on {self.host}") from failure[0]
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- protocol --------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self._connections += 1
        session = _Session()
        try:
            writer.write(f"220 {self.hostname} ESMTP FakeMX\r\n".encode())
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    break
                reply, close = await self._command(session, line, reader, writer)
                # asyncio sends at once on write(); drain() only applies back-pressure.
                writer.write(reply)
                await writer.drain()
                if close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, asyncio.CancelledError):
                pass

    async def _command(
        self,
        s: _Session,
        raw: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> tuple[bytes, bool]:
        line = raw.rstrip(b"\r\n")
        verb = line.split(b" ", 1)[0].upper()
        if verb in (b"EHLO", b"HELO"):
            s.helo = line[5:].strip().decode("utf-8", "replace")
            s.reset()
            if verb == b"HELO":
                return f"250 {self.hostname}\r\n".encode(), False
            caps = ["PIPELINING", f"SIZE {self.max_size}", "8BITMIME", "ENHANCEDSTATUSCODES"]
            lines = [self.hostname, *caps]
            text = "".join(
                f"250{'-' if i < len(lines) - 1 else ' '}{c}\r\n" for i, c in enumerate(lines)
            )
            return text.encode(), False
        if verb == b"MAIL":
            if not s.helo:
                return b"503 5.5.1 Error: send HELO/EHLO first\r\n", False
            if s.sender is not None:
                return b"503 5.5.1 Error: nested MAIL command\r\n", False
            m = _ADDR.match(line)
            if m is None or not line.upper().startswith(b"MAIL"):
                return b"501 5.5.4 Syntax: MAIL FROM:<address>\r\n", False
            s.sender = m.group(1).decode("utf-8", "replace")
            s.params = tuple(p.decode("utf-8", "replace") for p in m.group(2).split())
            return b"250 2.1.0 Ok\r\n", False
        if verb == b"RCPT":
            if s.sender is None:
                return b"503 5.5.1 Error: need MAIL command\r\n", False
            m = _ADDR.match(line)
            if m is None or not line.upper().startswith(b"RCPT"):
                return b"501 5.5.4 Syntax: RCPT TO:<address>\r\n", False
            address = m.group(1).decode("utf-8", "replace")
            reply = self.rcpt_rule(address)
            with self._lock:
                self._rcpts.append(RcptAttempt(address, reply))
            if 200 <= reply.code < 300:
                s.recipients.append(address)
            return reply.line(), False
        if verb == b"DATA":
            if s.sender is None:
                return b"503 5.5.1 Error: need MAIL command\r\n", False
            if not s.recipients:
                # A pipelining client sends DATA after RCPTs that all failed: it must not
                # then send the content (RFC 2920 section 3.1), so nothing more is read.
                return b"554 5.5.1 Error: no valid recipients\r\n", False
            writer.write(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            await writer.drain()
            return await self._data(s, reader), False
        if verb == b"RSET":
            s.reset()
            return b"250 2.0.0 Ok\r\n", False
        if verb == b"NOOP":
            return b"250 2.0.0 Ok\r\n", False
        if verb == b"QUIT":
            return b"221 2.0.0 Bye\r\n", True
        return b"502 5.5.2 Error: command not recognized\r\n", False

    async def _data(self, s: _Session, reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            line = await reader.readline()
            if not line:
                raise asyncio.IncompleteReadError(b"".join(chunks), None)
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b"."):
                line = line[1:]  # RFC 5321 section 4.5.2 transparency
            size += len(line)
            chunks.append(line)
        sender = s.sender or ""
        message = ReceivedMessage(
            sender=sender,
            recipients=tuple(s.recipients),
            data=b"".join(chunks),
            queue_id=secrets.token_hex(5).upper(),
            helo=s.helo,
            mail_params=s.params,
        )
        s.reset()
        if size > self.max_size:
            return b"552 5.3.4 Error: message file too big\r\n"
        reply = self.data_rule(message) if self.data_rule is not None else None
        if reply is None or 200 <= reply.code < 300:
            with self._cond:
                self._messages.append(message)
                self._cond.notify_all()
        if reply is not None:
            return reply.line()
        return f"250 2.0.0 Ok: queued as {message.queue_id}\r\n".encode()
