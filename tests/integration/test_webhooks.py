"""Webhooks end to end: the sender POSTs the outbox to a real HTTP receiver on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from tests.support.http_receiver import serving_posts
from tests.unit.store.store_helpers import T0, wait_for

from trackmilter.config import WebhookEndpoint, WebhooksSettings
from trackmilter.model import (
    DeliveryObserved,
    DeliveryStatus,
    Event,
    HitReason,
    HitRecorded,
    ReportReceived,
    ReportRecipient,
    utcnow,
)
from trackmilter.store import upgrade
from trackmilter.store.engine import make_engine
from trackmilter.webhooks import outbox
from trackmilter.webhooks.deliver import serve
from trackmilter.webhooks.payload import SignatureError, event_id, verify
from trackmilter.webhooks.schema import webhook_outbox
from trackmilter_lab import free_port

SECRET = b"integration-secret"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Receiver:
    """A webhook receiver as a customer would write one: verify, then answer; it can be
    told to fail its first requests (`fail_first`) or to hang on them (`hang_first`)."""

    secret: bytes = SECRET
    fail_first: int = 0
    hang_first: int = 0
    requests: int = 0
    ids: Counter[str] = field(default_factory=Counter)
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/trackmilter?token=not-logged"

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            self.requests += 1
            n = self.requests
        if n <= self.hang_first:
            self.release.wait(10)  # longer than the sender's timeout: it gives up on us
            return 200
        try:
            payload = verify(self.secret, headers, body, time.time())
        except SignatureError as e:
            with self.lock:
                self.rejected.append(str(e))
            return 401
        if n <= self.fail_first:
            return 503
        with self.lock:
            self.ids[payload["id"]] += 1
            self.payloads[payload["id"]] = payload
        return 204


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving(Receiver()) as rec:
        yield rec


@contextmanager
def serving(rec: Receiver) -> Iterator[Receiver]:
    with serving_posts(rec, on_stop=rec.release.set):
        yield rec


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path}/trackmilter.db"
    upgrade(url)
    e = make_engine(url)
    try:
        yield e
    finally:
        e.dispose()


def events() -> list[Event]:
    return [
        DeliveryObserved(queue_id="Q1", recipient="bob@example.net",
                         status=DeliveryStatus.SENT, at=T0, dsn="2.0.0", mta="mx1",
                         relay="mx.example.net[192.0.2.1]:25", text="250 2.0.0 Ok"),
        DeliveryObserved(queue_id="Q2", recipient="eve@example.net",
                         status=DeliveryStatus.BOUNCED, at=T0, dsn="5.1.1", mta="mx1"),
        ReportReceived(report="arf", at=T0, report_message_id="<fbl-1@isp.example>",
                       recipients=(ReportRecipient("carol@example.org", action="abuse"),)),
        HitRecorded(hit_id="hit-1", target="open", tracking_id="t" * 16, at=T0,
                    verdict="machine",
                    reasons=(HitReason("apple_mpp_prefetch", "Apple proxy", "machine"),)),
    ]


def store(engine: Engine, evs: list[Event], url: str) -> None:
    # What SQLStore.write does in its transaction once webhooks are configured.
    with engine.begin() as conn:
        outbox.enqueue(conn, evs, (WebhookEndpoint(url, Path("/unused")),), utcnow())


def rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(webhook_outbox))]


def all_delivered(engine: Engine) -> bool:
    return all(r["delivered_at"] is not None for r in rows(engine))


@pytest.fixture
def sender(engine: Engine) -> Iterator[Callable[[WebhooksSettings, str], None]]:
    """Start `serve` in a thread for one endpoint; stopped (and joined) after the test."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(settings: WebhooksSettings, url: str, secret: bytes = SECRET) -> None:
        thread = threading.Thread(target=serve, args=(engine, settings, {url: secret}, stop),
                                  kwargs={"poll_interval": 0.02})
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


FAST = WebhooksSettings(timeout=2.0, max_attempts=10, backoff_initial=0.02, backoff_max=0.2)


def test_events_arrive_signed_once_each(engine: Engine, receiver: Receiver,
                                        sender: Callable[[WebhooksSettings, str], None]) -> None:
    evs = events()
    store(engine, evs, receiver.url)
    store(engine, evs, receiver.url)  # a spool replay: nothing new
    sender(FAST, receiver.url)
    wait_for(lambda: all_delivered(engine) and len(receiver.ids) == len(evs), what="delivery")
    assert set(receiver.ids) == {event_id(ev) for ev in evs}
    assert receiver.rejected == []
    assert all(r["attempts"] == 1 for r in rows(engine))
    types = sorted(p["type"] for p in receiver.payloads.values())
    assert types == ["delivery.bounced", "delivery.sent", "hit.open", "report.arf"]
    hit = receiver.payloads[event_id(evs[3])]
    assert hit["data"]["verdict"] == "machine"
    assert hit["data"]["reasons"][0]["code"] == "apple_mpp_prefetch"


def test_retries_until_the_receiver_recovers(engine: Engine,
                                             sender: Callable[[WebhooksSettings, str], None]
                                             ) -> None:
    evs = events()[:2]
    with serving(Receiver(fail_first=5)) as rec:
        store(engine, evs, rec.url)
        sender(FAST, rec.url)
        wait_for(lambda: all_delivered(engine), what="delivery after retries")
        assert set(rec.ids) == {event_id(ev) for ev in evs}
        assert all(n >= 1 for n in rec.ids.values())
        got = rows(engine)
        assert sum(r["attempts"] for r in got) == rec.requests == 5 + len(evs)
        assert all(r["last_error"] == "" and r["next_attempt_at"] is None for r in got)


def test_a_hanging_receiver_times_out_and_is_retried(
        engine: Engine, sender: Callable[[WebhooksSettings, str], None]) -> None:
    with serving(Receiver(hang_first=1)) as rec:
        store(engine, events()[:1], rec.url)
        settings = WebhooksSettings(timeout=0.3, max_attempts=5, backoff_initial=0.02,
                                    backoff_max=0.1)
        sender(settings, rec.url)
        wait_for(lambda: all_delivered(engine), what="delivery after a timeout")
        (row,) = rows(engine)
        assert row["attempts"] == 2
        assert list(rec.ids.values()) == [1]


def test_wrong_secret_is_refused_then_given_up(
        engine: Engine, sender: Callable[..., None]) -> None:
    with serving(Receiver()) as rec:
        store(engine, events()[:1], rec.url)
        settings = WebhooksSettings(timeout=2.0, max_attempts=3, backoff_initial=0.02,
                                    backoff_max=0.05)
        sender(settings, rec.url, b"not-the-receivers-secret")
        wait_for(lambda: rows(engine)[0]["next_attempt_at"] is None, what="giving up")
        (row,) = rows(engine)
        assert (row["attempts"], row["delivered_at"], row["last_error"]) == (3, None, "HTTP 401")
        assert rec.rejected == ["signature does not match"] * 3
        assert not rec.ids


def test_daemon_delivers_and_stops_on_sigterm(tmp_path: Path, engine: Engine,
                                              receiver: Receiver) -> None:
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text("# the key shared with the receiver\n" + SECRET.decode() + "\n")
    config = tmp_path / "trackmilter.toml"
    metrics_port = free_port()
    config.write_text(f"""
[database]
url = "{engine.url}"

[log]
format = "json"

[webhooks]
timeout = 2.0
backoff_initial = 0.05
metrics_listen = "127.0.0.1:{metrics_port}"

[[webhooks.endpoints]]
url = "{receiver.url}"
secret_file = "{secret_file}"
events = ["hit", "report"]
""")
    # Enqueued for this endpoint only: the daemon delivers what its endpoints are owed.
    with engine.begin() as conn:
        endpoint = WebhookEndpoint(receiver.url, secret_file, ("hit", "report"))
        assert outbox.enqueue(conn, events(), (endpoint,), utcnow() - timedelta(seconds=1)) == 2
    code = ("import sys; from pathlib import Path; from trackmilter import config, logging; "
            "s = config.load(Path(sys.argv[1])); logging.configure(s.log.format, s.log.level); "
            "from trackmilter.webhooks.deliver import run; sys.exit(run(s))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(config)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": f"{ROOT / 'milter'}:{ROOT}"})
    try:
        wait_for(lambda: len(receiver.ids) == 2 or proc.poll() is not None, what="delivery")
        assert proc.poll() is None, proc.communicate()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",  # noqa: S310
                                    timeout=5) as resp:
            exposition = resp.read()
        assert b'trackmilter_webhook_deliveries_total{endpoint="' in exposition
        if shutil.which("promtool"):
            lint = subprocess.run(["promtool", "check", "metrics"], input=exposition,
                                  capture_output=True, timeout=30)
            assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [ln["event"] for ln in lines] == ["webhooks_starting", "webhooks_stopped"]
    assert "not-logged" not in out and SECRET.decode() not in out + err
