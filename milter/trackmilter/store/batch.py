"""A batch of events as rows: messages, recipients, deliveries and reports tied to their
message, written idempotently in one transaction (SQLStore.write)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from trackmilter.model import (
    DeliveryObserved,
    Event,
    HitRecorded,
    MessageRecorded,
    Reinjected,
    ReportReceived,
)
from trackmilter.store import backfill, relink
from trackmilter.store.base import EventRejected
from trackmilter.store.hits import write_hits
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
from trackmilter.store.schema import events, messages, recipients


def _bounded_key(key: str) -> str:
    """A dedup key short enough for a unique index, still distinct when it had to shrink."""
    if len(key) <= MAX_INDEXED_CHARS:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def inline_dedup_key(tracking_id: str, address: str) -> str:
    """One in-line outcome per (message, recipient): a replay updates it instead of adding one."""
    return f"{INLINE_KIND}:{tracking_id}:{address}"


class Batch:
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
    def build(cls, items: Iterable[Event]) -> Batch:
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


