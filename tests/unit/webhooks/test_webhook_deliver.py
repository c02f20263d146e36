"""The sender's pure parts (backoff, secrets, redaction) and one pass over the outbox."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select
from tests.unit.store.store_helpers import T0

from trackmilter.config import WebhookEndpoint, WebhooksSettings
from trackmilter.metrics import Metrics
from trackmilter.model import DeliveryObserved, DeliveryStatus, utcnow
from trackmilter.webhooks import outbox
from trackmilter.webhooks.deliver import (
    Stats,
    WebhookConfigError,
    backoff,
    load_secret,
    redact,
    run_once,
    serve,
)
from trackmilter.webhooks.payload import verify
from trackmilter.webhooks.schema import webhook_outbox

URL = "http://hooks.example/in"
SECRET = b"s3cret"


@pytest.mark.parametrize(("attempts", "rand", "expected"), [
    pytest.param(1, 1.0, 5.0, id="first-failure"),
    pytest.param(2, 1.0, 10.0, id="doubles"),
    pytest.param(4, 1.0, 40.0, id="fourth"),
    pytest.param(12, 1.0, 3600.0, id="capped"),
    pytest.param(10_000, 1.0, 3600.0, id="huge-attempts"),
    pytest.param(1, 0.0, 4.0, id="jitter-earliest"),
    pytest.param(12, 0.5, 3240.0, id="jitter-under-cap"),
    pytest.param(0, 1.0, 5.0, id="zero-is-first"),
])
def test_backoff(attempts: int, rand: float, expected: float) -> None:
    assert backoff(attempts, 5.0, 3600.0, rand) == pytest.approx(expected)


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("abc\n", b"abc", id="plain"),
    pytest.param("# comment\n\n  key-1  \nkey-2\n", b"key-1", id="first-non-comment"),
    pytest.param("# only a comment\n\n", None, id="empty"),
])
def test_load_secret(tmp_path: Path, text: str, expected: bytes | None) -> None:
    path = tmp_path / "secret"
    path.write_text(text)
    if expected is not None:
        assert load_secret(path) == expected
        return
    with pytest.raises(WebhookConfigError, match=str(path)):
        load_secret(path)


def test_missing_secret_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WebhookConfigError, match="nope"):
        load_secret(tmp_path / "nope")


@pytest.mark.parametrize(("url", "expected"), [
    pytest.param("https://u:pw@h.example:8443/p?token=x#f", "https://h.example:8443/p",
                 id="credentials-and-query"),
    pytest.param("http://[::1]/x", "http://[::1]/x", id="ipv6"),
])
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected


class WebhookMetrics(Metrics):
    """The project's metrics on a registry of the test's own."""

    def __init__(self) -> None:
        super().__init__(CollectorRegistry())

    def deliveries(self, result: str) -> float:
        return self.registry.get_sample_value(
            "trackmilter_webhook_deliveries_total", {"endpoint": URL, "outcome": result}) or 0.0


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Answers:
    """An http_post that answers from a list (an int status, or an exception to raise)."""

    answers: list[int | Exception]
    clock: Callable[[], datetime]
    seen: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
                 ) -> int:
        self.seen.append(verify(SECRET, headers, body, self.clock().timestamp()))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer



def enqueue(engine: Engine, n: int) -> None:
    events = [DeliveryObserved(queue_id=f"Q{i}", recipient="bob@example.net",
                               status=DeliveryStatus.SENT, at=T0, mta="mx1")
              for i in range(n)]
    with engine.begin() as conn:
        outbox.enqueue(conn, events, (WebhookEndpoint(URL, Path("/x")),), T0)


def state(engine: Engine) -> list[tuple[Any, ...]]:
    t = webhook_outbox.c
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(t.attempts, t.next_attempt_at, t.delivered_at, t.last_error).order_by(t.id))]


SETTINGS = WebhooksSettings(timeout=1.0, max_attempts=3, backoff_initial=5.0, backoff_max=60.0)


def test_outcomes_over_passes(engine: Engine) -> None:
    enqueue(engine, 1)
    clock, metrics = Clock(), WebhookMetrics()
    post = Answers([503, ConnectionRefusedError("refused"), 200], clock)

    def once() -> Stats:
        return run_once(engine, SETTINGS, {URL: SECRET}, post, clock=clock, rand=lambda: 1.0,
                        metrics=metrics)

    assert once() == Stats(claimed=1, retried=1)
    assert state(engine) == [(1, T0 + timedelta(seconds=5), None, "HTTP 503")]
    assert once() == Stats()  # not due yet
    clock.now = T0 + timedelta(seconds=5)
    assert once() == Stats(claimed=1, retried=1)
    assert state(engine) == [(2, clock.now + timedelta(seconds=10), None,
                              "ConnectionRefusedError: refused")]
    clock.now += timedelta(seconds=10)
    assert once() == Stats(claimed=1, delivered=1)
    assert state(engine) == [(3, None, clock.now, "")]
    assert len({p["id"] for p in post.seen}) == 1 and len(post.seen) == 3
    assert (metrics.deliveries("retry"), metrics.deliveries("delivered")) == (2.0, 1.0)


def test_gives_up_after_max_attempts(engine: Engine) -> None:
    enqueue(engine, 1)
    clock, metrics = Clock(), WebhookMetrics()
    post = Answers([500], clock)
    for _ in range(SETTINGS.max_attempts):
        run_once(engine, SETTINGS, {URL: SECRET}, post, clock=clock, metrics=metrics)
        clock.now += timedelta(minutes=5)
    assert state(engine) == [(3, None, None, "HTTP 500")]
    assert run_once(engine, SETTINGS, {URL: SECRET}, post, clock=clock) == Stats()
    assert len(post.seen) == 3
    assert metrics.deliveries("gave_up") == 1.0


def test_stop_hands_back_untried_rows(engine: Engine) -> None:
    enqueue(engine, 3)
    stop = threading.Event()

    def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        stop.set()  # SIGTERM arrives during the first request
        return 204

    stats = run_once(engine, SETTINGS, {URL: SECRET}, post, clock=Clock(), stop=stop)
    assert stats == Stats(claimed=1, delivered=1)
    assert [s[1] for s in state(engine)] == [None, T0, T0]


def test_serve_delivers_until_stopped(engine: Engine) -> None:
    enqueue(engine, 3)
    stop, metrics = threading.Event(), WebhookMetrics()
    post = Answers([200], clock=utcnow)

    def post_and_stop_after_three(url: str, body: bytes, headers: Mapping[str, str],
                                  timeout: float) -> int:
        status = post(url, body, headers, timeout)
        if len(post.seen) == 3:
            stop.set()
        return status

    # batch=2: a full batch is followed at once by the next one.
    serve(engine, SETTINGS, {URL: SECRET}, stop, post_and_stop_after_three,
          poll_interval=0.01, batch=2, metrics=metrics)
    assert [s[2] is not None for s in state(engine)] == [True, True, True]
    assert metrics.deliveries("delivered") == 3.0
