"""SQLStore: the Store on SQLite or PostgreSQL, with idempotent batched writes and lookups."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, exc, func, select, union

from trackmilter.model import (
    DeliveryObserved,
    Event,
    HitRecorded,
    MessageRecorded,
    Reinjected,
    ReportReceived,
    utcnow,
)
from trackmilter.store import backfill, relink
from trackmilter.store.base import EventRejected, WriteHook
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
    hit_views,
    revise,
    tracking_ids_of,
    write_hits,
)
from trackmilter.store.migrate import check_schema
from trackmilter.store.rows import (
    DELIVERY_KIND,
    INLINE_KIND,
    MAX_INDEXED_CHARS,
    messages_for_deliveries,
    normalize_address,
    placeholder,
    strip_brackets,
    upsert,
)
from trackmilter.store.schema import events, hits, messages, recipients, webhook_outbox
from trackmilter.store.views import EventView, HitView, LinkView, MessageView, RecipientView


def _bounded_key(key: str) -> str:
    """A dedup key short enough for a unique index, still distinct when it had to shrink."""
    if len(key) <= MAX_INDEXED_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def inline_dedup_key(tracking_id: str, address: str) -> str:
    """One in-line outcome per (message, recipient): a replay updates it instead of adding one."""
    return f"{INLINE_KIND}:{tracking_id}:{address}"


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
        batch = _Batch.build(events_)
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
                return _views(conn, rows)
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

    def scan(self, since: datetime, sender: str = "", chunk: int = 200
             ) -> Iterator[list[MessageView]]:
        """Every message started at or after `since` (from `sender`, if given), as views,
        `chunk` at a time in id order: a report over weeks never holds them all."""
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
                    views = _views(conn, rows)
            except exc.SQLAlchemyError as e:
                raise translate(e, self._url) from e
            if not rows:
                return
            last = rows[-1].id
            yield views

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


class _Batch:
    """The rows of one ``write`` call, deduplicated: a multi-row upsert on PostgreSQL
    fails if it touches the same row twice, and a spool replay can repeat an event."""

    def __init__(self) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.recipients: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        # Delivery events still to be tied to a message: (queue id, mta, at, events key).
        self.deliveries: list[tuple[str, str, datetime, str]] = []
        # Report events still to be tied: (report, events keys).
        self.reports: list[tuple[ReportReceived, list[str]]] = []
        self.hits: list[HitRecorded] = []
        # Content-filter hand-offs logged after the re-injected copy's deliveries.
        self.reinjected: list[Reinjected] = []

    @classmethod
    def build(cls, items: Iterable[Event]) -> _Batch:
        batch = cls()
        for event in items:
            try:
                if isinstance(event, MessageRecorded):
                    batch._add_message(event)
                elif isinstance(event, DeliveryObserved):
                    batch._add_delivery(event)
                elif isinstance(event, ReportReceived):
                    batch._add_report(event)
                elif isinstance(event, HitRecorded):
                    batch.hits.append(event)
                elif isinstance(event, Reinjected):
                    batch.reinjected.append(event)
                else:  # pragma: no cover - grows with model.Event
                    raise EventRejected(f"the SQL store cannot store {type(event).__name__}")
            except (AttributeError, TypeError, ValueError) as e:
                raise EventRejected(f"cannot store {event!r}: {e}") from e
        return batch

    def _add_message(self, ev: MessageRecorded) -> None:
        tid = ev.tracking_id.lower()[:MAX_INDEXED_CHARS]
        self.messages[tid] = {
            "tracking_id": tid,
            "queue_id": ev.queue_id[:MAX_INDEXED_CHARS],
            "message_id": strip_brackets(ev.message_id)[:MAX_INDEXED_CHARS],
            "envelope_id": ev.envelope_id[:MAX_INDEXED_CHARS],
            "headers": dict(ev.headers) or None,
            "direction": str(ev.direction),
            "end_reason": str(ev.end),
            "sender": ev.sender,
            "client_addr": ev.client_addr,
            "client_name": ev.client_name,
            "auth_user": ev.auth_user,
            "helo": ev.helo,
            "size": int(ev.size),
            "rewritten": bool(ev.rewritten),
            "skip_reason": ev.skip_reason,
            "pixel": bool(ev.pixel),
            "tracking_header": bool(ev.tracking_header),
            "link_count": len(ev.links),
            "links": [[i, u] for i, u in sorted({int(lk.index): lk.url for lk in ev.links}.items())]
                     or None,
            "mta": ev.mta,
            "started_at": ev.started_at,
            "finished_at": ev.finished_at,
        }
        for r in ev.recipients:
            address = normalize_address(r.address)
            self.recipients[(tid, address)] = {
                "address": address,
                "outcome": str(r.outcome),
                "status": r.status,
                "text": r.text,
                "at": r.at,
            }
            key = inline_dedup_key(tid, address)
            self.events[key] = {
                "recipient": address,
                "kind": INLINE_KIND,
                "at": r.at,
                "source": ev.mta or "milter",
                "status": str(r.outcome),
                "code": r.status,
                "text": r.text,
                "data": None,
                "dedup_key": key,
                "_tid": tid,
            }

    def _add_delivery(self, ev: DeliveryObserved) -> None:
        address = normalize_address(ev.recipient)
        queue_id = ev.queue_id[:MAX_INDEXED_CHARS]
        # The same log line read twice (a restart before the follower saved its position)
        # is the same event; a new attempt has a new time.
        # An alias expanding to two addresses gives two lines for one recipient.
        final = f":{ev.delivered_to.lower()}" if ev.delivered_to else ""
        key = _bounded_key(
            f"{DELIVERY_KIND}:{ev.mta}:{queue_id}:{address}{final}:{ev.status}:"
            f"{ev.at.isoformat()}"
        )
        data = {"queue_id": queue_id, "relay": ev.relay}
        if ev.orig_to:
            data["orig_to"] = ev.orig_to
        if ev.delivered_to:
            data["delivered_to"] = ev.delivered_to
        if ev.transport:
            data["transport"] = ev.transport
        self.events[key] = {
            "recipient": address,
            "kind": DELIVERY_KIND,
            "at": ev.at,
            "source": ev.mta or "maillog",
            "status": str(ev.status),
            "code": ev.dsn,
            "text": ev.text,
            "data": data,
            "dedup_key": key,
            "_tid": None,
        }
        self.deliveries.append((queue_id, ev.mta, ev.at, key))

    def _add_report(self, ev: ReportReceived) -> None:
        # A report is identified by its own Message-ID (or queue id at our MTA): the same
        # report seen twice (a resend, a spool replay) is stored once.
        ident = strip_brackets(ev.report_message_id) or f"{ev.mta}:{ev.report_queue_id}"
        keys = []
        for n, r in enumerate(ev.recipients or (None,)):
            address = normalize_address(r.recipient) if r is not None else ""
            key = _bounded_key(f"{ev.report}:{ident}:{address or n}")
            data: dict[str, Any] = {"reporting_mta": ev.reporting_mta,
                                    "report_queue_id": ev.report_queue_id}
            if r is not None:
                data.update(reason=r.reason, hardbounce=r.hardbounce, replycode=r.replycode,
                            remote_mta=r.remote_mta)
                data.update((k, v) for k, v in (("last_attempt", r.last_attempt),
                                                ("retry_until", r.retry_until)) if v)
            self.events[key] = {
                "recipient": address or None,
                "kind": ev.report,
                "at": ev.at,
                "source": ev.reporting_mta or ev.mta or "report",
                "status": r.action if r is not None else "",
                "code": r.status if r is not None else "",
                "text": r.text if r is not None else "",
                "data": data,
                "dedup_key": key,
                "_tid": None,
            }
            keys.append(key)
        self.reports.append((ev, keys))

    def write(self, conn: Connection) -> list[int]:
        """Write the batch; return the messages that delivery lines were tied to."""
        # Before any row is written: a concurrent writer of these deliveries' messages (or
        # of these messages' deliveries) would not see our rows, nor we theirs.
        backfill.serialize(conn, ties=bool(self.deliveries or self.reinjected),
                           messages=bool(self.messages))
        if self.messages:
            upsert(conn, messages, list(self.messages.values()), ["tracking_id"])
        ids = _message_ids(conn, list(self.messages))
        if self.recipients:
            rows = [{"message": ids[tid], **row} for (tid, _), row in self.recipients.items()]
            upsert(conn, recipients, rows, ["message", "address"])
        # Deliveries stored before their message (a milter's journal replayed late).
        tied = set(backfill.apply(conn, [(ids[tid], row["queue_id"], row["started_at"])
                                         for tid, row in self.messages.items()]))
        by_delivery = messages_for_deliveries(conn, self.deliveries)
        by_delivery.update(_messages_for_reports(conn, self.reports))
        if self.events:
            # A row tied since it was first written (store/relink.py, store/backfill.py)
            # stays tied.
            kept = relink.kept_ties(conn, [key for key, row in self.events.items()
                                           if row["_tid"] is None and key not in by_delivery])
            rows = []
            for key, row in self.events.items():
                row = dict(row)
                tid = row.pop("_tid")
                row["message"] = ids[tid] if tid is not None else by_delivery.get(key, kept.get(key))
                rows.append(row)
            upsert(conn, events, rows, ["dedup_key"])
        if self.hits:
            write_hits(conn, self.hits)
        tied.update(by_delivery[key] for _, _, _, key in self.deliveries if key in by_delivery)
        # After the upsert: this batch's own deliveries under the new queue id are there.
        tied.update(relink.apply(conn, self.reinjected))
        return sorted(tied)


def _message_ids(conn: Connection, tracking_ids: list[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    mark = placeholder(conn.dialect)
    # Chunked: old SQLite builds allow only 999 bound parameters per statement.
    for start in range(0, len(tracking_ids), 500):
        chunk = tuple(tracking_ids[start : start + 500])
        query = (
            "SELECT tracking_id, id FROM messages WHERE tracking_id IN "
            f"({', '.join(mark for _ in chunk)})"
        )
        for tid, mid in conn.exec_driver_sql(query, chunk):
            ids[tid] = mid
    return ids


def _messages_for_reports(
    conn: Connection, reports: list[tuple[ReportReceived, list[str]]]
) -> dict[str, int]:
    """events key -> message id for reports, by the strongest tie each one carries: our
    tracking id, the original queue id, the original Message-ID, the client's ENVID, then a
    VERP address
    (the latest message from that sender to that recipient)."""
    found: dict[str, int] = {}
    for ev, keys in reports:
        mid = None
        if ev.tracking_id:
            mid = conn.execute(
                select(messages.c.id).where(messages.c.tracking_id == ev.tracking_id.lower())
            ).scalar()
        # X-Postfix-Queue-ID names the queue of the MTA that wrote the report: ours only
        # when our MTA reported (Postfix's own bounces). Another server's queue id may equal
        # one of ours by chance, so there the Message-ID goes first.
        ours = _reported_by_us(ev)
        if mid is None and ev.original_queue_id and ours:
            mid = _by_queue_id(conn, ev)
        if mid is None and ev.original_message_id:
            wanted = strip_brackets(ev.original_message_id)[:MAX_INDEXED_CHARS]
            mid = conn.execute(
                select(messages.c.id)
                .where(messages.c.message_id == wanted)
                .order_by(messages.c.started_at.desc())
                .limit(1)
            ).scalar()
        if mid is None and ev.original_queue_id and not ours:
            mid = _by_queue_id(conn, ev)
        if mid is None and ev.envelope_id:
            mid = conn.execute(
                select(messages.c.id)
                .where(messages.c.envelope_id == ev.envelope_id[:MAX_INDEXED_CHARS],
                       messages.c.started_at <= ev.at)
                .order_by(messages.c.started_at.desc())
                .limit(1)
            ).scalar()
        if mid is None and ev.verp_sender and ev.verp_recipient:
            mid = conn.execute(
                select(messages.c.id)
                .join(recipients, recipients.c.message == messages.c.id)
                .where(
                    messages.c.sender == ev.verp_sender,
                    recipients.c.address == normalize_address(ev.verp_recipient),
                    messages.c.started_at <= ev.at,
                )
                .order_by(messages.c.started_at.desc())
                .limit(1)
            ).scalar()
        if mid is not None:
            found.update(dict.fromkeys(keys, int(mid)))
    return found


def _by_queue_id(conn: Connection, ev: ReportReceived) -> Any:
    """The latest message with the report's original queue id at the MTA that saw it."""
    query = select(messages.c.id).where(
        messages.c.queue_id == ev.original_queue_id, messages.c.started_at <= ev.at
    )
    if ev.mta:
        query = query.where(messages.c.mta == ev.mta)
    return conn.execute(query.order_by(messages.c.started_at.desc()).limit(1)).scalar()


def _reported_by_us(ev: ReportReceived) -> bool:
    """Whether the report was written by the MTA whose milter saw it (or does not say)."""
    reporter = ev.reporting_mta.strip().lower().rstrip(".")
    return not reporter or not ev.mta or reporter == ev.mta.strip().lower().rstrip(".")


def _views(conn: Connection, rows: Sequence[Row[Any]]) -> list[MessageView]:
    if not rows:
        return []
    ids = [row.id for row in rows]
    rcpts: dict[int, list[RecipientView]] = defaultdict(list)
    for r in conn.execute(
        select(recipients).where(recipients.c.message.in_(ids)).order_by(recipients.c.id)
    ):
        rcpts[r.message].append(RecipientView(r.address, r.outcome, r.status, r.text, r.at))
    evs: dict[int, list[EventView]] = defaultdict(list)
    for r in conn.execute(
        select(events).where(events.c.message.in_(ids)).order_by(events.c.at, events.c.id)
    ):
        evs[r.message].append(
            EventView(r.kind, r.at, r.recipient, r.source, r.status, r.code, r.text, r.data)
        )
    hts: dict[str, list[HitView]] = hit_views(conn, [m.tracking_id for m in rows])
    return [
        MessageView(
            tracking_id=m.tracking_id,
            direction=m.direction,
            end_reason=m.end_reason,
            sender=m.sender,
            started_at=m.started_at,
            finished_at=m.finished_at,
            queue_id=m.queue_id,
            message_id=m.message_id,
            envelope_id=m.envelope_id,
            headers=dict(m.headers or {}),
            client_addr=m.client_addr,
            client_name=m.client_name,
            auth_user=m.auth_user,
            helo=m.helo,
            size=m.size,
            rewritten=bool(m.rewritten),
            skip_reason=m.skip_reason,
            pixel=bool(m.pixel),
            tracking_header=bool(m.tracking_header),
            link_count=m.link_count,
            mta=m.mta,
            recipients=tuple(rcpts[m.id]),
            links=tuple(LinkView(int(i), str(u)) for i, u in m.links or ()),
            events=tuple(evs[m.id]),
            hits=tuple(hts.get(m.tracking_id, ())),
        )
        for m in rows
    ]


def purge_webhook_outbox(conn: Connection, before: datetime) -> int:
    """Delete the webhook outbox's finished rows (delivered or given up) created before
    `before`; pending rows stay whatever their age."""
    t = webhook_outbox.c
    result = conn.execute(delete(webhook_outbox).where(t.created_at < before,
                                                       t.next_attempt_at.is_(None)))
    return int(result.rowcount or 0)
