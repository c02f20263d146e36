"""Helpers for the store tests: event factory, polling, row counts, a cuttable PostgreSQL relay."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from trackmilter.metrics import Metrics
from trackmilter.model import (
    Direction,
    EndReason,
    Event,
    LinkRecord,
    MessageRecorded,
    RcptOutcome,
    RecipientRecord,
)
from trackmilter.store import EventRejected, MessageView, StoreUnavailable
from trackmilter.store.engine import make_engine
from trackmilter.store.schema import events, messages, recipients

PG_URL = os.environ.get("TRACKMILTER_TEST_PG_URL", "")
PG_SKIP = pytest.mark.skipif(
    not PG_URL,
    reason="TRACKMILTER_TEST_PG_URL is not set (CI points it at a throwaway PostgreSQL database)",
)
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=PG_SKIP),
]

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll until ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.005)


def make_message(
    n: int,
    *,
    tracking_id: str | None = None,
    queue_id: str | None = None,
    message_id: str | None = None,
    rcpts: tuple[str, ...] = ("Bob@Example.com",),
    refused: tuple[str, ...] = (),
    links_: tuple[str, ...] = (),
    started: datetime | None = None,
    sender: str = "alice@example.org",
) -> MessageRecorded:
    start = started or T0 + timedelta(minutes=n)
    recs = tuple(
        RecipientRecord(a, RcptOutcome.ACCEPTED, at=start + timedelta(seconds=i + 1))
        for i, a in enumerate(rcpts)
    ) + tuple(
        RecipientRecord(a, RcptOutcome.REFUSED, "5.7.1", "Relay access denied",
                        at=start + timedelta(seconds=10 + i))
        for i, a in enumerate(refused)
    )
    return MessageRecorded(
        tracking_id=tracking_id or f"t{n:015d}",
        direction=Direction.OUTGOING,
        end=EndReason.QUEUED,
        sender=sender,
        started_at=start,
        finished_at=start + timedelta(seconds=30),
        recipients=recs,
        queue_id=queue_id if queue_id is not None else f"Q{n:08X}",
        message_id=message_id if message_id is not None else f"<m{n}@example.org>",
        client_addr="192.0.2.1",
        size=1234,
        links=tuple(LinkRecord(i, u) for i, u in enumerate(links_)),
        mta="mx1",
    )


def row_counts(url: str) -> dict[str, int]:
    """Rows per table; "links" counts the links stored with their messages."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            counts = {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (messages, recipients, events)
            }
            counts["links"] = sum(len(v or ()) for v in conn.execute(
                select(messages.c.links)).scalars())
            return counts
    finally:
        engine.dispose()


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


def with_schema(url: str, schema: str) -> str:
    parsed = make_url(url)
    return parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


class SocketProxy:
    """A unix-socket TCP-level relay to PostgreSQL that a test can cut and restore.

    Cutting it closes the listening socket and every relayed connection: from the client's
    side that is exactly a server that went away (broken pooled connections, refused
    new ones), without touching the shared PostgreSQL server.
    """

    def __init__(self, target: str | tuple[str, int]) -> None:
        self.directory = tempfile.mkdtemp(prefix="tmpg", dir="/tmp")  # sun_path is short
        self.path = os.path.join(self.directory, ".s.PGSQL.5432")
        self._target = target
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._acceptor: threading.Thread | None = None
        self._thawed = threading.Event()
        self._thawed.set()

    def freeze(self) -> None:
        """Hold every byte from now on without closing anything: a server whose processes
        were stopped (SIGSTOP), seen from the client."""
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    def _upstream(self) -> socket.socket:
        if isinstance(self._target, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect(self._target)
        except OSError:
            s.close()
            raise
        return s

    def up(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(16)
        listener.settimeout(0.05)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def down(self) -> None:
        self._thawed.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            os.unlink(self.path)
        # The acceptor first, so that no connection is added after we close them all.
        if self._acceptor is not None:
            self._acceptor.join(5)
            self._acceptor = None
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(5)
        self._threads = []

    def close(self) -> None:
        self.down()
        os.rmdir(self.directory)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed by down()
            try:
                server = self._upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, server]
            for a, b in ((client, server), (server, client)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._thawed.wait()
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def pg_target(url: str) -> str | tuple[str, int]:
    parsed = make_url(url)
    host = parsed.query.get("host") or parsed.host or "/var/run/postgresql"
    if isinstance(host, tuple):
        host = host[0]
    port = parsed.port or int(str(parsed.query.get("port", "5432")))
    if host.startswith("/"):
        return f"{host}/.s.PGSQL.{port}"
    return (host, port)


def via_proxy(url: str, proxy: SocketProxy) -> str:
    parsed = make_url(url).set(host=None, port=None)
    query = {k: v for k, v in parsed.query.items() if k not in ("host", "port")}
    query |= {"host": proxy.directory, "port": "5432"}
    return parsed.set(query=query).render_as_string(hide_password=False)


class ListLog:
    """A structlog stand-in that keeps what was logged."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, event: str, **kw: Any) -> None:
        self.records.append((level, event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, **kw)

    def events(self) -> list[str]:
        return [e for _, e, _ in self.records]


class FakeStore:
    """Implements the Store protocol in memory; can be down, hang, or refuse chosen events."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.attempts = 0
        self.down = False
        self.gate: threading.Event | None = None  # while set to an unset Event, write hangs
        self.entered = threading.Event()
        self.refuse: set[str] = set()
        self._lock = threading.Lock()

    def write(self, events: Sequence[Event]) -> None:
        with self._lock:
            self.attempts += 1
        if self.gate is not None:
            self.entered.set()
            self.gate.wait()
        if self.down:
            raise StoreUnavailable("fake database is down")
        if any(e.tracking_id in self.refuse for e in events):
            raise EventRejected("fake database refuses it")
        with self._lock:
            self.batches.append([e.tracking_id for e in events])

    def lookup(self, ident: str, *, limit: int = 100) -> list[MessageView]:
        return []

    def ping(self) -> None:
        if self.down:
            raise StoreUnavailable("fake database is down")

    def close(self) -> None:
        pass

    def written(self) -> list[str]:
        with self._lock:
            return [tid for batch in self.batches for tid in batch]


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now
