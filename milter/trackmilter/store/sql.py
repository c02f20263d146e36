"""SQLStore: the Store on SQLite or PostgreSQL, with idempotent batched writes and lookups."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, exc, func, select, union

from trackmilter.model import (
    Event,
    HitRecorded,
    utcnow,
)
from trackmilter.store.base import WriteHook
from trackmilter.store.batch import Batch
from trackmilter.store.engine import (
    DEFAULT_BUSY_TIMEOUT,
    Interrupter,
    describe,
    make_engine,
    parse_url,
    translate,
)
from trackmilter.store.hits import (
    Reviser,
    revise,
    tracking_ids_of,
)
from trackmilter.store.migrate import check_schema
from trackmilter.store.reading import hit_counts, message_views
from trackmilter.store.rows import (
    DELIVERY_KIND,
    MAX_INDEXED_CHARS,
    normalize_address,
    strip_brackets,
)
from trackmilter.store.schema import events, hits, messages, recipients, webhook_outbox
from trackmilter.store.views import MessageView


class SQLStore:
    """A :class:`~trackmilter.store.base.Store` on any SQLAlchemy URL of a supported backend.

    Creating it does not connect: a daemon must start (and spool) while the database is
    down. The schema version is checked on the first connection that succeeds.
    """

    def __init__(self, url: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
                 statement_timeout: float = 0.0,
                 reviser: Reviser | None = None, hooks: Sequence[WriteHook] = ()) -> None:
        self._url = parse_url(url)
        # Judges the tracker's hits again when a delivery time arrives after them.
        self._reviser = reviser
        # Called in each write transaction with what it stored (and with revised hits): the
        # webhook outbox, so events enter it in the transaction that stores them.
        self._hooks = tuple(hooks)
        self._where = describe(self._url)
        self._engine = make_engine(self._url, busy_timeout=busy_timeout,
                                   statement_timeout=statement_timeout)
        self._interrupter = Interrupter(self._engine)
        # Only SQLite looks at this option (see engine._configure_sqlite).
        self._write_engine = self._engine.execution_options(sqlite_begin="IMMEDIATE")
        self._schema_ok = False

    def __repr__(self) -> str:
        return f"SQLStore({self._where!r})"

    # -- Store protocol -------------------------------------------------------------------

    def write(self, events_: Sequence[Event]) -> None:
        if not events_:
            return
        batch = Batch.build(events_)
        try:
            with self._write_engine.begin() as conn:
                self._ensure_schema(conn)
                tied = batch.write(conn)
                self._hooked(conn, events_)
                if self._reviser is not None and tied:
                    tids = tracking_ids_of(conn, tied)
                    if tids:
                        self._revised(conn, revise(conn, tids, self._reviser, utcnow()))
        except exc.SQLAlchemyError as e:
            raise translate(e, self._url) from e

    def revise_hits(self, tracking_ids: Sequence[str], since: datetime | None = None) -> int:
        """Judge these messages' hits again with everything stored (see store.hits.revise)."""
        if self._reviser is None or not tracking_ids:
            return 0
        try:
            with self._write_engine.begin() as conn:
                self._ensure_schema(conn)
                return self._revised(
                    conn, revise(conn, tracking_ids, self._reviser, utcnow(), since))
        except exc.SQLAlchemyError as e:
            raise translate(e, self._url) from e

    def _revised(self, conn: Connection, revised: list[HitRecorded]) -> int:
        """Revised verdicts go to the hooks too (webhooks: hit.<target>.revised)."""
        if revised:
            self._hooked(conn, revised)
        return len(revised)

    def _hooked(self, conn: Connection, events_: Sequence[Event]) -> None:
        if self._hooks:
            now = utcnow()
            for hook in self._hooks:
                hook.written(conn, events_, now)

    def lookup(self, ident: str, *, limit: int = 100) -> list[MessageView]:
        ident = ident.strip()
        if not ident:
            return []
        addr = normalize_address(ident)
        # A UNION of index lookups, not one WHERE … OR …: PostgreSQL answers the OR form
        # by scanning every message.
        candidates = union(
            select(messages.c.id).where(messages.c.tracking_id == ident.lower()),
            select(messages.c.id).where(messages.c.queue_id == ident),
            select(messages.c.id).where(
                messages.c.message_id == strip_brackets(ident)[:MAX_INDEXED_CHARS]
            ),
            select(recipients.c.message).where(recipients.c.address == addr),
            # Later layers may record events for a recipient the milter never saw in-line.
            select(events.c.message).where(
                events.c.recipient == addr, events.c.message.is_not(None)
            ),
        ).subquery()
        query = (
            select(messages)
            .where(messages.c.id.in_(select(candidates.c.id)))
            .order_by(messages.c.started_at.desc(), messages.c.id.desc())
            .limit(limit)
        )
        try:
            with self._engine.connect() as conn:
                self._ensure_schema(conn)
                rows = conn.execute(query).all()
                return message_views(conn, rows)
        except exc.SQLAlchemyError as e:
            raise translate(e, self._url) from e

    def count_messages(self, since: datetime, sender: str = "") -> int:
        """How many messages `scan` will go through (for a progress bar)."""
        query = select(func.count()).select_from(messages).where(messages.c.started_at >= since)
        if sender:
            query = query.where(messages.c.sender == sender)
        try:
            with self._engine.connect() as conn:
                self._ensure_schema(conn)
                return int(conn.execute(query).scalar() or 0)
        except exc.SQLAlchemyError as e:
            raise translate(e, self._url) from e

    def log_progress(self, mtas: Sequence[str]) -> dict[str, datetime | None]:
        """Per MTA name, the time of the latest delivery-log line stored from it (None:
        none ever): how far `trackmilter maillog` has read that MTA's log."""
        out: dict[str, datetime | None] = {}
        try:
            with self._engine.connect() as conn:
                self._ensure_schema(conn)
                for mta in dict.fromkeys(mtas):
                    out[mta] = conn.execute(
                        select(func.max(events.c.at)).where(
                            events.c.kind == DELIVERY_KIND, events.c.source == mta)
                    ).scalar()
        except exc.SQLAlchemyError as e:
            raise translate(e, self._url) from e
        return out

    def scan(self, since: datetime, sender: str = "", chunk: int = 200, *,
             with_hits: bool = True) -> Iterator[list[MessageView]]:
        """Every message started at or after `since` (from `sender`, if given), as views,
        `chunk` at a time in id order: a report over weeks never holds them all. Without
        `with_hits`, the views carry no hits (count them with hit_counts)."""
        last = 0
        while True:
            query = (select(messages).where(messages.c.started_at >= since,
                                            messages.c.id > last)
                     .order_by(messages.c.id).limit(chunk))
            if sender:
                query = query.where(messages.c.sender == sender)
            try:
                with self._engine.connect() as conn:
                    self._ensure_schema(conn)
                    rows = conn.execute(query).all()
                    views = message_views(conn, rows, with_hits=with_hits)
            except exc.SQLAlchemyError as e:
                raise translate(e, self._url) from e
            if not rows:
                return
            last = rows[-1].id
            yield views

    def hit_counts(self, tracking_ids: Sequence[str]) -> dict[str, dict[tuple[str, str], int]]:
        """Per tracking id, hits by (target, verdict), counted in the database."""
        try:
            with self._engine.connect() as conn:
                self._ensure_schema(conn)
                return hit_counts(conn, tracking_ids)
        except exc.SQLAlchemyError as e:
            raise translate(e, self._url) from e

    def purge(self, before: datetime) -> dict[str, int]:
        """Delete what is older than ``before`` (retention): messages with their recipients,
        links and timeline, hits with their verdict history, and evidence never tied to a
        message. Returns how many rows of each went."""
        counts: dict[str, int] = {}
        try:
            with self._write_engine.begin() as conn:
                self._ensure_schema(conn)
                counts["hits"] = conn.execute(delete(hits).where(hits.c.at < before)).rowcount
                counts["messages"] = conn.execute(
                    delete(messages).where(messages.c.started_at < before)).rowcount
                counts["untied_events"] = conn.execute(
                    delete(events).where(events.c.message.is_(None), events.c.at < before)
                ).rowcount
                counts["webhook_deliveries"] = purge_webhook_outbox(conn, before)
        except exc.SQLAlchemyError as e:
            raise translate(e, self._url) from e
        return counts

    def ping(self) -> None:
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
                self._ensure_schema(conn)
        except exc.SQLAlchemyError as e:
            raise translate(e, self._url) from e

    def interrupt(self) -> int:
        """End a write that hangs (the writer's watchdog, from another thread): see
        engine.Interrupter. The interrupted write raises StoreUnavailable."""
        return self._interrupter.interrupt()

    def close(self) -> None:
        self._engine.dispose()

    # -- internals ------------------------------------------------------------------------

    def _ensure_schema(self, conn: Connection) -> None:
        if not self._schema_ok:
            check_schema(conn, self._where)
            self._schema_ok = True


def purge_webhook_outbox(conn: Connection, before: datetime) -> int:
    """Delete the webhook outbox's finished rows (delivered or given up) created before
    `before`; pending rows stay whatever their age."""
    t = webhook_outbox.c
    result = conn.execute(delete(webhook_outbox).where(t.created_at < before,
                                                       t.next_attempt_at.is_(None)))
    return int(result.rowcount or 0)
