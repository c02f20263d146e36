"""Rows read back as the store's view objects (status, the API, report)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, func, select

from trackmilter.store.hits import _chunks, hit_views
from trackmilter.store.schema import events, hits, recipients
from trackmilter.store.views import EventView, HitView, LinkView, MessageView, RecipientView


def message_views(conn: Connection, rows: Sequence[Row[Any]], *, with_hits: bool = True
                  ) -> list[MessageView]:
    """The messages of `rows` with their recipients and timelines, and their hits unless
    not `with_hits` (a report counts them in the database instead: hit_counts)."""
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
    hts: dict[str, list[HitView]] = (
        hit_views(conn, [m.tracking_id for m in rows]) if with_hits else {})
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




def hit_counts(conn: Connection, tracking_ids: Sequence[str]
               ) -> dict[str, dict[tuple[str, str], int]]:
    """Per tracking id, how many hits of each (target, verdict): counted in the database, so
    a message with a million hits costs a row per verdict, not a million objects."""
    found: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
    for chunk in _chunks(list(tracking_ids)):
        query = (select(hits.c.tracking_id, hits.c.target, hits.c.verdict, func.count())
                 .where(hits.c.tracking_id.in_(chunk))
                 .group_by(hits.c.tracking_id, hits.c.target, hits.c.verdict))
        for tid, target, verdict, n in conn.execute(query):
            found[tid][(str(target), str(verdict or "unknown"))] = int(n)
    return found
