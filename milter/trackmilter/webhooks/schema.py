"""The webhook outbox table, registered on the store's metadata (migration 0004)."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table, Text

from trackmilter.store.schema import ID, UTCDateTime, metadata

# One row per (endpoint, event): written in the transaction that stores the event, so a
# row exists exactly when its event does. State, from the timestamps:
#   pending    next_attempt_at set (due when it is in the past; a claim pushes it ahead)
#   delivered  delivered_at set, next_attempt_at NULL
#   given up   both NULL (max_attempts reached; last_error says why)
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),  # payload.event_id: replays collide
    Column("endpoint", Text, nullable=False),  # the endpoint's URL as configured
    Column("event_type", String(32), nullable=False),  # e.g. delivery.bounced
    Column("payload", Text, nullable=False),  # the exact body that is signed and sent
    Column("created_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("last_error", Text, nullable=False, server_default=""),
    Index(None, "endpoint", "event_id", unique=True),
    Index(None, "next_attempt_at"),
    Index(None, "created_at"),
)
