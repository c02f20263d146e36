"""The tracker's hits in SQL: idempotent inserts, verdict history, and revisions with the
evidence only the database has (the delivery time, hits answered by other processes)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from trackmilter.model import HitReason, HitRecorded
from trackmilter.store.rows import upsert
from trackmilter.store.schema import events, hit_verdicts, hits, messages
from trackmilter.store.views import HitView

# A reviser judges all hits of one message again, given when the remote server first
# accepted it (None: not known) and how many links it has (0: not known); it returns one
# (verdict, reasons) per hit, in order.
Judgement = tuple[str, tuple[HitReason, ...]]
Reviser = Callable[[Sequence[HitRecorded], "datetime | None", int], Sequence[Judgement]]

# Hits of one message judged again in a revision, the latest: a burst or the delivery time
# concern the recent ones, and a message with more hits than this in one revision is being
# hammered by a machine anyway. Bounded in SQL: a revision holds the write lock.
REVISION_WINDOW = 50
CHUNK = 500


def hit_row(ev: HitRecorded) -> dict[str, Any]:
    return {
        "hit_id": ev.hit_id[:64],
        "tracking_id": ev.tracking_id.lower()[:32],
        "target": ev.target,
        "idx": int(ev.index),
        "url": ev.url,
        "at": ev.at,
        "client": ev.client,
        "network": ev.network,
        "method": ev.method[:16],
        "user_agent": ev.user_agent,
        "headers": dict(ev.headers) or None,
        "honeypot": bool(ev.honeypot),
        "tracker": ev.tracker,
        "request_verdict": ev.verdict,
        "request_reasons": reasons_json(ev.reasons),
        "verdict": ev.verdict,
        "reasons": reasons_json(ev.reasons),
    }


def reasons_json(reasons: Iterable[HitReason]) -> list[dict[str, Any]]:
    return [{"code": r.code, "evidence": r.evidence, "leans": r.leans, "weight": r.weight,
             "decided": r.decided} for r in reasons]


def reasons_from_json(data: Any) -> tuple[HitReason, ...]:
    """Stored reasons; those stored before weights existed read with none."""
    if not isinstance(data, list):
        return ()
    return tuple(HitReason(str(r.get("code", "")), str(r.get("evidence", "")),
                           str(r.get("leans", "")), str(r.get("weight", "")),
                           bool(r.get("decided", False))) for r in data if isinstance(r, dict))


def write_hits(conn: Connection, batch: Sequence[HitRecorded]) -> None:
    """Insert the hits, each with the verdict it was answered with; a hit already stored (a
    spool replay) is left as it is, revisions included. One statement, no read-back: the
    tracker's writer runs beside the requests it must not slow down."""
    rows = {ev.hit_id[:64]: hit_row(ev) for ev in batch}
    upsert(conn, hits, list(rows.values()), ["hit_id"], update=False)


def revise(conn: Connection, tracking_ids: Sequence[str], reviser: Reviser, now: datetime,
           since: datetime | None = None) -> list[HitRecorded]:
    """Judge the hits of these messages again (those at or after ``since``, at most
    REVISION_WINDOW per message, the latest); store the verdicts that changed, each as a new
    revision. Returns the hits whose verdict changed, as revised (`revision` set)."""
    if conn.dialect.name == "postgresql":
        # Several trackers may revise one message at once: one at a time per message, in
        # a fixed order (no deadlock), so a revision never overwrites a newer one with what
        # an older snapshot saw. SQLite's BEGIN IMMEDIATE already serialises writers.
        for tid in sorted(tracking_ids):
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%s))", (tid,))
    accepted = _accepted_at(conn, tracking_ids)
    links = _link_counts(conn, tracking_ids)
    by_tid: dict[str, list[Any]] = {}
    for tid in tracking_ids:
        # One index range per message, newest first, stopping at the window: a message
        # with thousands of hits costs what one with fifty does (a window function over
        # the message's hits read them all, holding the write lock meanwhile).
        query = select(hits).where(hits.c.tracking_id == tid)
        if since is not None:
            query = query.where(hits.c.at >= since)
        rows = list(conn.execute(
            query.order_by(hits.c.at.desc(), hits.c.id.desc()).limit(REVISION_WINDOW)))
        if rows:
            by_tid[tid] = rows[::-1]
    changed: list[HitRecorded] = []
    for tid, rows in by_tid.items():
        judged = reviser([_hit(r) for r in rows], accepted.get(tid), links.get(tid, 0))
        for row, (verdict, reasons) in zip(rows, judged, strict=True):
            data = reasons_json(reasons)
            if verdict == row.verdict and data == (row.reasons or []):
                continue
            conn.execute(update(hits).where(hits.c.id == row.id)
                         .values(verdict=verdict, reasons=data))
            result = conn.execute(insert(hit_verdicts).values(
                hit=row.id, at=now, verdict=verdict, reasons=data, cause="revision"))
            rev = int(result.inserted_primary_key[0]) if result.inserted_primary_key else 1
            changed.append(dataclasses.replace(_hit(row), verdict=verdict,
                                               reasons=tuple(reasons), revision=rev))
    return changed


def _accepted_at(conn: Connection, tracking_ids: Sequence[str]) -> dict[str, datetime]:
    """When a remote server first accepted each message (a `sent` delivery line)."""
    found: dict[str, datetime] = {}
    for chunk in _chunks(list(tracking_ids)):
        query = (
            select(messages.c.tracking_id, events.c.at)
            .join(events, events.c.message == messages.c.id)
            .where(messages.c.tracking_id.in_(chunk),
                   and_(events.c.kind == "delivery", events.c.status == "sent"))
        )
        for tid, at in conn.execute(query):
            if tid not in found or at < found[tid]:
                found[tid] = at
    return found


def _link_counts(conn: Connection, tracking_ids: Sequence[str]) -> dict[str, int]:
    """How many links each message had rewritten (the milter records it)."""
    found: dict[str, int] = {}
    for chunk in _chunks(list(tracking_ids)):
        query = select(messages.c.tracking_id, messages.c.link_count).where(
            messages.c.tracking_id.in_(chunk))
        for tid, n in conn.execute(query):
            found[tid] = int(n or 0)
    return found


def tracking_ids_of(conn: Connection, message_ids: Iterable[int]) -> list[str]:
    """Tracking ids of these messages that have hits: new deliveries may change verdicts."""
    out: list[str] = []
    for chunk in _chunks(sorted(set(message_ids))):
        query = (
            select(messages.c.tracking_id).where(messages.c.id.in_(chunk))
            .where(messages.c.tracking_id.in_(select(hits.c.tracking_id).distinct()))
        )
        out.extend(tid for (tid,) in conn.execute(query))
    return out


def hit_views(conn: Connection, tracking_ids: Sequence[str]) -> dict[str, list[HitView]]:
    """Stored hits per tracking id, oldest first, each with its verdict history."""
    rows: list[Any] = []
    for chunk in _chunks(list(tracking_ids)):
        query = (select(hits).where(hits.c.tracking_id.in_(chunk))
                 .order_by(hits.c.at, hits.c.id))
        rows.extend(conn.execute(query))
    history: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        history[r.id].append({"at": r.at.isoformat(), "verdict": r.request_verdict,
                              "reasons": r.request_reasons or [], "cause": "request"})
    for chunk in _chunks([r.id for r in rows]):
        query = (select(hit_verdicts).where(hit_verdicts.c.hit.in_(chunk))
                 .order_by(hit_verdicts.c.id))
        for v in conn.execute(query):
            history[v.hit].append({"at": v.at.isoformat(), "verdict": v.verdict,
                                   "reasons": v.reasons or [], "cause": v.cause})
    found: dict[str, list[HitView]] = defaultdict(list)
    for r in rows:
        found[r.tracking_id].append(HitView(
            target=r.target, at=r.at, index=r.idx, url=r.url, client=r.client,
            network=r.network, method=r.method, user_agent=r.user_agent, verdict=r.verdict,
            reasons=tuple(r.reasons or ()), history=tuple(history.get(r.id, ())),
            hit_id=r.hit_id,
        ))
    return found


def _hit(row: Any) -> HitRecorded:
    return HitRecorded(
        hit_id=row.hit_id, target=row.target, tracking_id=row.tracking_id, at=row.at,
        index=row.idx, url=row.url, client=row.client, network=row.network,
        method=row.method, user_agent=row.user_agent,
        headers=tuple((row.headers or {}).items()), honeypot=row.honeypot,
        verdict=row.verdict, reasons=reasons_from_json(row.reasons), tracker=row.tracker,
    )


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    # Old SQLite builds allow only 999 bound parameters per statement.
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
