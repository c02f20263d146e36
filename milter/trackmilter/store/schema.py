"""The database schema as SQLAlchemy Core tables, portable between SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes stored as UTC.

    SQLite has no timezone type and SQLAlchemy drops the offset there, and PostgreSQL
    returns ``timestamptz`` in the session's zone: normalising both ways makes every value
    read back an aware UTC datetime on either backend.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # Naive values only come from bugs upstream; the model always uses UTC.
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# SQLite only auto-increments a column declared exactly "INTEGER PRIMARY KEY".
ID = BigInteger().with_variant(Integer(), "sqlite")

# JSONB on PostgreSQL so later issues can index and query evidence; None is SQL NULL, not 'null'.
JSONData = JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

# Named constraints: Alembic's SQLite batch mode can only alter constraints that have names.
NAMING_CONVENTION: dict[str, Any] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Lengths only on values we generate (ids, enum names): a VARCHAR limit on anything an SMTP
# client or a remote server controls would turn odd input into a rejected event.
metadata = MetaData(naming_convention=NAMING_CONVENTION)

messages = Table(
    "messages",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("tracking_id", String(32), nullable=False),
    Column("queue_id", Text, nullable=False, server_default=""),
    Column("message_id", Text, nullable=False, server_default=""),
    Column("direction", String(32), nullable=False),
    Column("end_reason", String(32), nullable=False),
    Column("sender", Text, nullable=False, server_default=""),
    Column("client_addr", Text, nullable=False, server_default=""),
    Column("client_name", Text, nullable=False, server_default=""),
    Column("auth_user", Text, nullable=False, server_default=""),
    Column("helo", Text, nullable=False, server_default=""),
    Column("size", BigInteger, nullable=False, server_default="0"),
    Column("rewritten", Boolean, nullable=False),
    Column("skip_reason", String(32), nullable=False, server_default=""),
    Column("pixel", Boolean, nullable=False),
    Column("tracking_header", Boolean, nullable=False),
    Column("link_count", Integer, nullable=False, server_default="0"),
    Column("mta", Text, nullable=False, server_default=""),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Index(None, "tracking_id", unique=True),
    Index(None, "queue_id"),
    Index(None, "message_id"),
    Index(None, "started_at"),
    # Revision 0002: the client's ENVID (RFC 3461), echoed by DSNs as Original-Envelope-Id.
    Column("envelope_id", Text, nullable=False, server_default=""),
    Index(None, "envelope_id"),
    # Revision 0005: [milter] record_headers found in the message, {name: value}.
    Column("headers", JSONData, nullable=True),
    # The rewritten links as [[index, url], ...] in index order (NULL: none). One value
    # per message, not a row per link: the writer stores each message's links in one
    # go, and they are only ever read with their message.
    Column("links", JSONData, nullable=True),
)

recipients = Table(
    "recipients",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("message", ID, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("address", Text, nullable=False),  # lowercased
    Column("outcome", String(32), nullable=False),
    Column("status", Text, nullable=False, server_default=""),
    Column("text", Text, nullable=False, server_default=""),
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("message", "address"),
    Index(None, "address"),
)

events = Table(
    "events",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    # Nullable: a log line or a report may arrive before (or without) the message it is about.
    Column("message", ID, ForeignKey("messages.id", ondelete="CASCADE"), nullable=True),
    Column("recipient", Text, nullable=True),  # lowercased address
    Column("kind", String(32), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("source", Text, nullable=False, server_default=""),
    Column("status", Text, nullable=False, server_default=""),
    Column("code", Text, nullable=False, server_default=""),
    Column("text", Text, nullable=False, server_default=""),
    Column("data", JSONData, nullable=True),
    # Idempotency key: a replayed spool or re-read log must not add the same event twice,
    # while a message may legitimately have many events of one kind (several deferrals,
    # opens). Each writer derives a key from what makes its event unique; NULL never
    # conflicts on either backend.
    Column("dedup_key", Text, nullable=True),
    Index(None, "message"),
    Index(None, "recipient"),
    Index(None, "dedup_key", unique=True),
    # The latest delivery line from each MTA (SQLStore.log_progress; migration 0008).
    Index("ix_events_source_kind_at", "source", "kind", "at"),
)


class UntiedQueueId(ColumnElement[str]):
    """``events.data``'s queue id, spelled exactly as index ix_events_untied_queue_id is
    (revision 0007): SQLite uses an expression index only for the same expression, with
    its JSON path written out, not bound as a parameter."""

    type = Text()
    inherit_cache = True


@compiles(UntiedQueueId, "postgresql")
def _untied_queue_id_postgresql(element: UntiedQueueId, compiler: SQLCompiler,
                                **kw: Any) -> str:
    return "(data ->> 'queue_id')"


@compiles(UntiedQueueId, "sqlite")
def _untied_queue_id_sqlite(element: UntiedQueueId, compiler: SQLCompiler, **kw: Any) -> str:
    return "json_extract(data, '$.queue_id')"


# Revision 0007: untied events by queue id, for a message written after its deliveries
# (store/backfill.py). Partial: tied rows, nearly all of them, are not in it. (_table: its
# expression names no column the table could be found by.)
Index("ix_events_untied_queue_id", UntiedQueueId(), _table=events,
      sqlite_where=events.c.message.is_(None), postgresql_where=events.c.message.is_(None))

# Revision 0003: the tracker's hits and every verdict each was given.
hits = Table(
    "hits",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("hit_id", String(64), nullable=False),  # the tracker's id: replays store once
    # By tracking id, not a foreign key: a hit may be stored before its message (the milter
    # spooling while the database was down) and a purge of messages keeps hit statistics.
    Column("tracking_id", String(32), nullable=False),
    Column("target", String(8), nullable=False),  # click | open
    Column("idx", Integer, nullable=False, server_default="0"),
    Column("url", Text, nullable=False, server_default=""),
    Column("at", UTCDateTime, nullable=False),
    Column("client", Text, nullable=False, server_default=""),
    Column("network", Text, nullable=False, server_default=""),
    Column("method", String(16), nullable=False, server_default="GET"),
    Column("user_agent", Text, nullable=False, server_default=""),
    Column("headers", JSONData, nullable=True),
    Column("honeypot", Boolean, nullable=False, server_default="0"),
    Column("tracker", Text, nullable=False, server_default=""),
    # The verdict given when the hit was answered (never changes) and the current one;
    # hit_verdicts keeps every revision in between.
    Column("request_verdict", String(16), nullable=False),
    Column("request_reasons", JSONData, nullable=True),
    Column("verdict", String(16), nullable=False),
    Column("reasons", JSONData, nullable=True),
    Index(None, "hit_id", unique=True),
    Index(None, "tracking_id", "at"),
    Index(None, "at"),
)

hit_verdicts = Table(
    "hit_verdicts",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("hit", ID, ForeignKey("hits.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),  # when this verdict was given
    Column("verdict", String(16), nullable=False),
    Column("reasons", JSONData, nullable=True),
    Column("cause", String(32), nullable=False),  # revision
    Index(None, "hit"),
)

# The webhook outbox (migration 0004); trackmilter.webhooks.outbox fills and drains it.
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
