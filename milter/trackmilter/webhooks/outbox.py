"""The durable webhook outbox in SQL: enqueue with the events, claim due rows, mark the outcome."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Insert, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from trackmilter.addresses import Network
from trackmilter.config import WebhookEndpoint
from trackmilter.model import Event
from trackmilter.store.schema import webhook_outbox
from trackmilter.store.sql import purge_webhook_outbox
from trackmilter.webhooks.payload import WEBHOOK_KINDS, items, webhook_kind

MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Claimed:
    """One outbox row taken for delivery."""

    id: int
    event_id: str
    endpoint: str
    event_type: str
    payload: str
    attempts: int  # before this attempt


class OutboxHook:
    """The store's write hook (trackmilter.store.base.WriteHook) that puts the events the
    endpoints want into the outbox, in the transaction that stores them."""

    def __init__(self, endpoints: Sequence[WebhookEndpoint],
                 outgoing_networks: Sequence[Network] = ()) -> None:
        self.endpoints = tuple(endpoints)
        # Whose in-line refusals are delivery news (webhooks.payload.items).
        self.outgoing_networks = tuple(outgoing_networks)

    def __repr__(self) -> str:
        return f"OutboxHook({[e.url for e in self.endpoints]!r})"

    def written(self, conn: Connection, events: Sequence[Event], now: datetime) -> None:
        enqueue(conn, events, self.endpoints, now, self.outgoing_networks)


def hooks_for(endpoints: Sequence[WebhookEndpoint],
              outgoing_networks: Sequence[Network] = ()) -> tuple[OutboxHook, ...]:
    """The store hooks for these [webhooks] endpoints: none when there are none."""
    return (OutboxHook(endpoints, outgoing_networks),) if endpoints else ()


def enqueue(conn: Connection, events: Sequence[Event],
            endpoints: Sequence[WebhookEndpoint], now: datetime,
            outgoing_networks: Sequence[Network] = ()) -> int:
    """Add one row per (event, endpoint that wants its kind), due at once, in the caller's
    transaction. An event already enqueued for an endpoint (same event id) is skipped, so a
    replayed batch adds nothing. Returns how many rows were added."""
    if not endpoints:
        return 0
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for ev in events:
        kind = webhook_kind(ev)
        if kind not in WEBHOOK_KINDS:
            continue
        wanted = [e.url for e in endpoints if kind in e.events]
        if not wanted:
            continue
        for eid, etype, body in items(ev, outgoing_networks):
            for url in wanted:
                rows[(url, eid)] = {
                    "event_id": eid, "endpoint": url, "event_type": etype, "payload": body,
                    "created_at": now, "attempts": 0, "next_attempt_at": now,
                    "delivered_at": None, "last_error": "",
                }
    if not rows:
        return 0
    # RETURNING, not rowcount: psycopg's executemany rowcount counts statements, not rows.
    stmt = _insert_ignoring_duplicates(conn).returning(webhook_outbox.c.id)
    return len(conn.execute(stmt, list(rows.values())).all())


def _insert_ignoring_duplicates(conn: Connection) -> Insert:
    keys = ["endpoint", "event_id"]
    if conn.dialect.name == "postgresql":
        return postgresql.insert(webhook_outbox).on_conflict_do_nothing(index_elements=keys)
    return sqlite.insert(webhook_outbox).on_conflict_do_nothing(index_elements=keys)


def claim(conn: Connection, endpoints: Collection[str], now: datetime, lease: timedelta,
          limit: int) -> list[Claimed]:
    """Take up to `limit` due rows for these endpoints, oldest due first, and push their
    next attempt `lease` ahead so no other worker takes them while they are sent; a worker
    that dies mid-delivery thus only delays them (and the receiver may see an id twice).

    Call in a write transaction: on SQLite BEGIN IMMEDIATE serialises claimers, on
    PostgreSQL FOR UPDATE SKIP LOCKED lets them take different rows."""
    if not endpoints or limit <= 0:
        return []
    t = webhook_outbox.c
    query = (
        select(t.id, t.event_id, t.endpoint, t.event_type, t.payload, t.attempts)
        .where(t.next_attempt_at <= now, t.endpoint.in_(sorted(endpoints)))
        .order_by(t.next_attempt_at, t.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claimed = [Claimed(*row) for row in conn.execute(query).all()]
    if claimed:
        conn.execute(update(webhook_outbox)
                     .where(t.id.in_([c.id for c in claimed]))
                     .values(next_attempt_at=now + lease))
    return claimed


def mark_delivered(conn: Connection, row_id: int, now: datetime) -> None:
    t = webhook_outbox.c
    conn.execute(update(webhook_outbox).where(t.id == row_id).values(
        attempts=t.attempts + 1, delivered_at=now, next_attempt_at=None, last_error=""))


def mark_failed(conn: Connection, row_id: int, error: str, retry_at: datetime | None) -> None:
    """Count a failed attempt; `retry_at` None gives the row up."""
    t = webhook_outbox.c
    conn.execute(update(webhook_outbox).where(t.id == row_id).values(
        attempts=t.attempts + 1, next_attempt_at=retry_at, last_error=error[:MAX_ERROR_CHARS]))


def next_due(conn: Connection, endpoints: Collection[str]) -> datetime | None:
    """When the earliest pending row for these endpoints is due (None: nothing pending)."""
    if not endpoints:
        return None
    t = webhook_outbox.c
    value: datetime | None = conn.execute(
        select(func.min(t.next_attempt_at)).where(t.endpoint.in_(sorted(endpoints)))
    ).scalar()
    return value


def depth(conn: Connection) -> dict[str, int]:
    """Pending rows per endpoint (the queue-depth gauge)."""
    t = webhook_outbox.c
    rows = conn.execute(select(t.endpoint, func.count())
                        .where(t.next_attempt_at.is_not(None)).group_by(t.endpoint)).all()
    return {str(endpoint): int(n) for endpoint, n in rows}


def purge(conn: Connection, before: datetime) -> int:
    """Delete finished rows (delivered or given up) created before `before` (retention);
    pending rows stay whatever their age. The store's purge does it: see
    store.sql.purge_webhook_outbox."""
    return purge_webhook_outbox(conn, before)


def release(conn: Connection, row_ids: Sequence[int], now: datetime) -> None:
    """Hand claimed rows back untried (the sender is stopping): due again at `now`."""
    if row_ids:
        t = webhook_outbox.c
        conn.execute(update(webhook_outbox).where(t.id.in_(list(row_ids)))
                     .values(next_attempt_at=now))
