"""The webhook sender: claims due outbox rows, POSTs them signed, retries with backoff, gives up."""

from __future__ import annotations

import http.client
import random
import signal
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, exc

from trackmilter.config import Settings, WebhookEndpoint, WebhooksSettings
from trackmilter.daemon import start_metrics
from trackmilter.logging import get_logger
from trackmilter.metrics import Metrics
from trackmilter.model import utcnow
from trackmilter.store.engine import describe, make_engine, translate
from trackmilter.store.migrate import check_schema
from trackmilter.webhooks import outbox
from trackmilter.webhooks.payload import headers

# (url, body, headers, timeout) -> HTTP status; raises OSError (timeouts included) when no
# status came back.
HttpPost = Callable[[str, bytes, Mapping[str, str], float], int]

BATCH = 20
JITTER = 0.2  # a retry comes up to this fraction early, so failures do not stay in lockstep
POLL_INTERVAL = 1.0  # how often an idle sender looks for rows other processes enqueued
DB_RETRY = 5.0  # how long to wait after the database failed
MAX_RESPONSE_BYTES = 64 * 1024


class WebhookConfigError(Exception):
    """An endpoint that cannot be used as configured (its secret file, most often)."""


@dataclass(frozen=True)
class Stats:
    """What one pass did."""

    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    gave_up: int = 0


def load_secret(path: Path) -> bytes:
    """The key in an endpoint's secret file: its first line that is neither blank nor a
    `#` comment. Errors name the file, never its content."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise WebhookConfigError(f"webhook secret file {path}: cannot read it: {e}") from e
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line.encode("utf-8")
    raise WebhookConfigError(f"webhook secret file {path} holds no secret")


def load_secrets(endpoints: Collection[WebhookEndpoint]) -> dict[str, bytes]:
    """Each endpoint's key, by URL."""
    return {e.url: load_secret(e.secret_file) for e in endpoints}


def redact(url: str) -> str:
    """An endpoint for logs and metric labels: no credentials, query or fragment, which
    often carry a token."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def backoff(attempts: int, initial: float, maximum: float, rand: float = 1.0) -> float:
    """Seconds before the next try after `attempts` failures (1 = first failure): doubling
    from `initial`, capped at `maximum`, then up to JITTER earlier (rand in [0, 1])."""
    exponent = min(max(attempts - 1, 0), 62)  # 2**62 * anything positive is past any cap
    base = min(maximum, initial * 2.0**exponent)
    return float(base * (1.0 - JITTER * (1.0 - rand)))


def http_post(url: str, body: bytes, request_headers: Mapping[str, str], timeout: float) -> int:
    """POST with http.client; redirects are not followed (a 3xx is a failed attempt)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", path, body=body, headers={
            **request_headers, "User-Agent": "trackmilter-webhooks"})
        response = conn.getresponse()
        response.read(MAX_RESPONSE_BYTES)  # let the server finish; the content is not used
        return response.status
    except http.client.HTTPException as e:
        raise OSError(f"bad HTTP response: {e!r}") from e
    finally:
        conn.close()


def run_once(engine: Engine, settings: WebhooksSettings, secrets: Mapping[str, bytes],
             http_post: HttpPost = http_post, *, now: datetime | None = None,
             clock: Callable[[], datetime] = utcnow, rand: Callable[[], float] = random.random,
             batch: int = BATCH, metrics: Any = None, log: Any = None,
             stop: threading.Event | None = None) -> Stats:
    """Claim up to `batch` due rows of the endpoints in `secrets` and try each once; rows
    not yet tried when `stop` is set are handed back, due at once.

    `engine` must come from trackmilter.store.engine.make_engine (its SQLite claims run
    under BEGIN IMMEDIATE). Database errors propagate as SQLAlchemy errors."""
    log = log if log is not None else get_logger(component="webhooks")
    writer = engine.execution_options(sqlite_begin="IMMEDIATE")
    # Long enough for the whole batch to time out one by one before anyone else may retry.
    lease = timedelta(seconds=settings.timeout * (batch + 1) + 30)
    with writer.begin() as conn:
        rows = outbox.claim(conn, secrets.keys(), now or clock(), lease, batch)
    delivered = retried = gave_up = 0
    for n, row in enumerate(rows):
        if stop is not None and stop.is_set():
            with writer.begin() as conn:
                outbox.release(conn, [r.id for r in rows[n:]], clock())
            rows = rows[:n]
            break
        body = row.payload.encode("utf-8")
        sent_at = clock()
        hdrs = headers(secrets[row.endpoint], row.event_id, int(sent_at.timestamp()), body)
        try:
            status = http_post(row.endpoint, body, hdrs, settings.timeout)
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except Exception as e:  # noqa: BLE001 - refused, reset, DNS, TLS, timeout, bad URL
            status, error = 0, f"{type(e).__name__}: {e}"
        attempts = row.attempts + 1
        done = clock()
        endpoint = redact(row.endpoint)
        with writer.begin() as conn:
            if not error:
                outbox.mark_delivered(conn, row.id, done)
                result = "delivered"
            elif attempts >= settings.max_attempts:
                outbox.mark_failed(conn, row.id, error, None)
                result = "gave_up"
            else:
                delay = backoff(attempts, settings.backoff_initial, settings.backoff_max, rand())
                outbox.mark_failed(conn, row.id, error, done + timedelta(seconds=delay))
                result = "retry"
        if result == "delivered":
            delivered += 1
            log.debug("webhook_delivered", endpoint=endpoint, event_id=row.event_id,
                      type=row.event_type, attempts=attempts, status=status)
        elif result == "gave_up":
            gave_up += 1
            log.warning("webhook_gave_up", endpoint=endpoint, event_id=row.event_id,
                        type=row.event_type, attempts=attempts, error=error)
        else:
            retried += 1
            log.info("webhook_retry", endpoint=endpoint, event_id=row.event_id,
                     type=row.event_type, attempts=attempts, error=error)
        _count(metrics, "webhook_deliveries", endpoint, result)
    return Stats(len(rows), delivered, retried, gave_up)


def serve(engine: Engine, settings: WebhooksSettings, secrets: Mapping[str, bytes],
          stop: threading.Event, http_post: HttpPost = http_post, *,
          poll_interval: float = POLL_INTERVAL, db_retry: float = DB_RETRY,
          batch: int = BATCH, metrics: Any = None, log: Any = None) -> dict[str, int]:
    """Deliver until `stop` is set: a full batch is followed at once by the next, otherwise
    wait for the earliest retry or `poll_interval`, whichever comes first. Returns the
    totals (for the stop log)."""
    log = log if log is not None else get_logger(component="webhooks")
    totals = {"delivered": 0, "retried": 0, "gave_up": 0}
    while not stop.is_set():
        try:
            stats = run_once(engine, settings, secrets, http_post, batch=batch,
                             metrics=metrics, log=log, stop=stop)
            totals["delivered"] += stats.delivered
            totals["retried"] += stats.retried
            totals["gave_up"] += stats.gave_up
            if stats.claimed >= batch:
                continue
            with engine.connect() as conn:
                due = outbox.next_due(conn, secrets.keys())
                _gauge(metrics, conn, secrets.keys())
        except exc.SQLAlchemyError as e:
            log.warning("webhook_database_error", error=str(translate(e, engine.url)))
            stop.wait(db_retry)
            continue
        wait = poll_interval
        if due is not None:
            wait = min(wait, max(0.0, (due - utcnow()).total_seconds()))
        stop.wait(wait)
    return totals


def run(settings: Settings) -> int:
    """`trackmilter webhooks`: deliver until SIGTERM/SIGINT. Raises WebhookConfigError for
    an unusable configuration and StoreError when the schema is missing or too old."""
    w = settings.webhooks
    log = get_logger(component="webhooks")
    if not w.endpoints:
        raise WebhookConfigError("no [[webhooks.endpoints]] configured: nothing to deliver")
    secrets = load_secrets(w.endpoints)
    engine = make_engine(settings.database.url,
                         statement_timeout=settings.database.statement_timeout)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    totals: dict[str, int] = {}
    try:
        try:
            with engine.connect() as conn:
                check_schema(conn, describe(engine.url))
        except exc.SQLAlchemyError as e:
            raise translate(e, engine.url) from e
        metrics = Metrics.for_daemon("webhooks")
        start_metrics(w.metrics_listen, metrics)
        log.info("webhooks_starting", endpoints=[redact(e.url) for e in w.endpoints],
                 metrics=w.metrics_listen or None)
        totals = serve(engine, w, secrets, stop, log=log, metrics=metrics)
    finally:
        engine.dispose()
        # The outbox is in the database: an attempt cut short is made again at the next start.
        log.info("webhooks_stopped", **totals)
    return 0


def _count(metrics: Any, name: str, *labels: str) -> None:
    metric = getattr(metrics, name, None)
    if metric is not None:
        metrics.child(metric, *labels).inc()


def _gauge(metrics: Any, conn: Connection, endpoints: Collection[str]) -> None:
    gauge = getattr(metrics, "webhook_queue", None)
    if gauge is None:
        return
    pending = outbox.depth(conn)
    for endpoint in endpoints:
        metrics.child(gauge, redact(endpoint)).set(pending.get(endpoint, 0))
