"""An SMTP load generator that behaves like a real client under faults.

`Sender` submits a fixed list of messages (each with its own Message-ID) through N
concurrent client threads, unpaced. A message that gets a 4xx reply or a connection error
(refused, reset, timeout) is tried again, as an MTA or an ESP would; a 5xx is final. For
each message it records whether the server accepted it (250 after DATA) and how long its
slowest transaction took; every attempt is kept with its start and end time, so the worst
transaction time inside a fault's window can be computed afterwards.
"""

from __future__ import annotations

import random
import re
import smtplib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from tests.support import HTML_CORPUS

SENDER = "news@shop.example.org"
DEFAULT_TEMPLATE = HTML_CORPUS / "postmark" / "basic-receipt.html"
MSGID_PLACEHOLDER = b"@@MESSAGE-ID@@"
RCPT_PLACEHOLDER = b"@@RCPT@@"
_MSGID_RE = re.compile(rb"^Message-ID:[ \t]*<([^>\r\n]+)>", re.IGNORECASE | re.MULTILINE)

CONN_ERROR = -1  # the code recorded for a connection error (no SMTP reply)


# -- the message ---------------------------------------------------------------------


def _html(template: Path | None, links: int) -> str:
    if template is not None and template.is_file():
        html = template.read_text(encoding="utf-8")
        n = 0

        def url(m: re.Match[str]) -> str:
            nonlocal n
            n += 1
            path = m.group(1).replace(".", "/")
            return f'href="https://shop.example.org/{path}?u=8f3a2c&amp;n={n}"'

        # Handlebars placeholders become concrete values, as after an ESP's merge.
        html = re.sub(r'href="\{\{\{?\s*([\w.]+)\s*\}?\}\}"', url, html)
        html = re.sub(r"\{\{\{?[^}]*\}?\}\}", "Sample", html)
    else:  # no shared corpus: a plain page of about the same size
        para = ("<p style=\"font-family: Arial, sans-serif; font-size: 14px; color: #333\">"
                "Thank you for your order. This week's offers are below; every item ships "
                "free over 50 EUR and may be returned within 30 days.</p>\n")
        html = "<html><body>\n" + para * 110 + "</body></html>\n"
    have = len(re.findall(r"<a\s[^>]*href=", html, flags=re.IGNORECASE))
    extra = [
        f'<a href="https://shop.example.org/catalog/item-{i}?utm_source=newsletter'
        f'&amp;utm_medium=email&amp;utm_campaign=spring">Item {i}</a><br>'
        for i in range(max(0, links - have))
    ]
    footer = "<p>\n" + "\n".join(extra) + "\n</p>\n"
    return html.replace("</body>", footer + "</body>") if "</body>" in html else html + footer


def newsletter_template(links: int = 25, template: Path | None = DEFAULT_TEMPLATE) -> bytes:
    """A multipart/alternative HTML newsletter (~30 KB, `links` links), CRLF lines, with
    placeholders for the Message-ID and the recipient."""
    html = _html(template, links)
    hrefs = re.findall(r'href="(https?://[^"]+)"', html)
    text = "Your receipt and this week's offers\n\n" + "\n".join(
        f"* {h.replace('&amp;', '&')}" for h in hrefs)
    msg = EmailMessage()
    msg["From"] = f"Example Shop <{SENDER}>"
    msg["Subject"] = "Your receipt and this week's offers"
    msg["List-Unsubscribe"] = "<https://shop.example.org/unsubscribe?u=8f3a2c>"
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte="quoted-printable")
    head = b"To: <" + RCPT_PLACEHOLDER + b">\r\nMessage-ID: <" + MSGID_PLACEHOLDER + b">\r\n"
    return head + msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class Message:
    message_id: str  # bare, without angle brackets
    recipient: str
    raw: bytes


def make_messages(count: int, run: str, *, links: int = 25,
                  template: Path | None = DEFAULT_TEMPLATE) -> list[Message]:
    """`count` copies of the newsletter, Message-ID ``<run-NNNNN@load.example>``."""
    base = newsletter_template(links, template)
    out = []
    for n in range(count):
        mid = f"{run}-{n:05d}@load.example"
        rcpt = f"reader{n}@example.net"
        raw = base.replace(MSGID_PLACEHOLDER, mid.encode()).replace(RCPT_PLACEHOLDER,
                                                                    rcpt.encode())
        out.append(Message(mid, rcpt, raw))
    return out


def message_id_of(data: bytes) -> str | None:
    """The bare Message-ID in a message's header (None when it has none)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    m = _MSGID_RE.search(head)
    return m.group(1).decode("utf-8", "replace") if m else None


# -- the sender ----------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    index: int  # the message's position in the list
    start: float  # time.monotonic()
    end: float
    code: int  # 250 accepted; the SMTP code that ended it; CONN_ERROR for no reply
    stage: str  # connect | mail | rcpt | data | done
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Result:
    message: Message
    accepted: bool = False
    refused: bool = False  # a 5xx: final, never retried
    attempts: int = 0
    worst: float = 0.0  # the slowest transaction of this message, seconds
    accepted_at: float | None = None
    last_error: str = ""


@dataclass
class Sender:
    """`clients` threads submitting `messages` to host:port; retries 4xx and connection errors.

    `retry_delay` is the pause before another attempt at a message (jittered, doubling to
    at most `max_retry_delay`); a real MTA waits minutes, a test cannot. `deadline` bounds
    the whole run: a message not accepted by then is left unaccepted. With `gate_at`, the
    messages from that index on wait until `release()` (e.g. load after a recovery).
    """

    host: str
    port: int
    messages: Sequence[Message]
    clients: int = 10
    timeout: float = 120.0  # per SMTP command (socket timeout)
    retry_delay: float = 0.1
    max_retry_delay: float = 1.0
    deadline: float = 300.0
    helo: str = "loadgen.example"
    seed: int | None = None
    gate_at: int | None = None
    results: list[Result] = field(init=False)
    attempts: list[Attempt] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.results = [Result(m) for m in self.messages]
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._next = 0
        self._accepted = 0
        self._done = 0
        self._stop = threading.Event()
        self._gate = threading.Event()
        if self.gate_at is None:
            self._gate.set()
        self._threads: list[threading.Thread] = []
        self._random = random.Random(self.seed)
        self.started_at = 0.0
        self.finished_at = 0.0
        self._errors: list[BaseException] = []

    # -- observation -----------------------------------------------------------------

    @property
    def accepted(self) -> int:
        with self._lock:
            return self._accepted

    @property
    def done(self) -> bool:
        with self._lock:
            return self._done == len(self.results)

    def wait_accepted(self, count: int, timeout: float) -> int:
        """Wait until `count` messages were accepted (or all are finished); the count."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._accepted < count and self._done < len(self.results):
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._accepted} of {count} messages accepted after "
                                       f"{timeout}s; last errors: {self._last_errors()}")
                self._cond.wait(min(remaining, 0.5))
            return self._accepted

    def _last_errors(self) -> list[str]:
        return [f"{a.stage} {a.code} {a.error}" for a in self.attempts[-5:] if a.code != 250]

    def attempts_between(self, start: float, end: float) -> list[Attempt]:
        """Attempts that were running at some moment of [start, end]."""
        with self._lock:
            return [a for a in self.attempts if a.start <= end and a.end >= start]

    # -- running ---------------------------------------------------------------------

    def start(self) -> Sender:
        self.started_at = time.monotonic()
        for n in range(self.clients):
            t = threading.Thread(target=self._client, name=f"smtp-client-{n}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every message to be finished (accepted, refused or out of time)."""
        end = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if end is None else max(0.0, end - time.monotonic()))
        alive = any(t.is_alive() for t in self._threads)
        if self._errors:
            raise RuntimeError(f"sender thread failed: {self._errors[0]!r}") from self._errors[0]
        return not alive

    def release(self) -> None:
        """Let the messages behind the gate go."""
        self._gate.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Give up on what is not sent yet; wait for the threads (each is in one SMTP
        transaction at most, bounded by the socket timeout)."""
        self._stop.set()
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))

    def __enter__(self) -> Sender:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= len(self.results) or self._stop.is_set():
                return None
            n = self._next
            self._next += 1
        if self.gate_at is not None and n >= self.gate_at:
            while not self._gate.wait(0.5):
                if self._stop.is_set():
                    return None
        return n

    def _client(self) -> None:
        try:
            while (n := self._take()) is not None:
                self._deliver(n)
        except BaseException as exc:  # noqa: BLE001 - reported by join(), never lost
            with self._lock:
                self._errors.append(exc)
        finally:
            self.finished_at = max(self.finished_at, time.monotonic())

    def _deliver(self, n: int) -> None:
        res = self.results[n]
        delay = self.retry_delay
        end = self.started_at + self.deadline
        while True:
            attempt = self._attempt(n, res.message)
            with self._cond:
                self.attempts.append(attempt)
                res.attempts += 1
                res.worst = max(res.worst, attempt.seconds)
                if attempt.code == 250:
                    res.accepted, res.accepted_at = True, attempt.end
                    self._accepted += 1
                elif 500 <= attempt.code < 600:
                    res.refused = True
                if attempt.code != 250:
                    res.last_error = f"{attempt.stage}: {attempt.code} {attempt.error}"
                final = res.accepted or res.refused
                if final:
                    self._done += 1
                    self._cond.notify_all()
            if final:
                return
            if self._stop.is_set() or time.monotonic() >= end:
                with self._cond:
                    self._done += 1
                    self._cond.notify_all()
                return
            # Jittered, so that the clients do not come back in lockstep.
            self._stop.wait(delay * (0.5 + self._random.random()))
            delay = min(delay * 2, self.max_retry_delay)

    def _attempt(self, n: int, msg: Message) -> Attempt:
        """One SMTP transaction: connect, EHLO, MAIL, RCPT, DATA; never raises."""
        start = time.monotonic()
        stage = "connect"
        client: smtplib.SMTP | None = None
        try:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            stage = "ehlo"
            code, text = client.ehlo(self.helo)
            if code != 250:
                return Attempt(n, start, time.monotonic(), code, stage, _text(text))
            stage = "mail"
            code, text = client.mail(SENDER)
            if code != 250:
                return Attempt(n, start, time.monotonic(), code, stage, _text(text))
            stage = "rcpt"
            code, text = client.rcpt(msg.recipient)
            if code not in (250, 251):
                return Attempt(n, start, time.monotonic(), code, stage, _text(text))
            stage = "data"
            code, text = client.data(msg.raw)
            end = time.monotonic()
            return Attempt(n, start, end, code, "done" if code == 250 else stage, _text(text))
        except smtplib.SMTPResponseException as exc:  # 421 and the like, connect included
            return Attempt(n, start, time.monotonic(), exc.smtp_code, stage, _text(exc.smtp_error))
        except (OSError, smtplib.SMTPException) as exc:
            return Attempt(n, start, time.monotonic(), CONN_ERROR, stage, repr(exc))
        finally:
            if client is not None:
                _close(client)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _close(client: smtplib.SMTP) -> None:
    """QUIT when the server still listens; close the socket either way."""
    try:
        if client.sock is not None:
            client.quit()
    except (OSError, smtplib.SMTPException):
        pass
    finally:
        client.close()


def worst(attempts: Iterable[Attempt]) -> float:
    return max((a.seconds for a in attempts), default=0.0)
