"""Late content-filter hand-offs: deliveries already stored under the re-injected queue id
are tied to the message the milter recorded under the original one.

A delivery event is tied to its message when it is written, by queue id (see
`rows.messages_for_deliveries`); one logged under a filter's re-injected queue id NEW before
the hand-off line named NEW matched no message and was stored untied. A `Reinjected` event
(from `trackmilter maillog`) names NEW and the original queue id; applying it is an UPDATE
of untied rows only, so a replay, or the same event twice, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, update

from trackmilter.model import Reinjected
from trackmilter.store.rows import (
    CLOCK_SLACK,
    DELIVERY_KIND,
    MAX_INDEXED_CHARS,
    messages_for_deliveries,
    normalize_address,
)
from trackmilter.store.schema import events, messages

__all__ = ["apply", "kept_ties"]


def apply(conn: Connection, handoffs: Sequence[Reinjected]) -> list[int]:
    """Tie the untied deliveries logged under each hand-off's `queued_as`, for its
    recipients, to the message of its `queue_id`; return the messages that gained any."""
    if not handoffs:
        return []
    # The message is found as a delivery line under the original queue id would find it:
    # the same rules for a reused short queue id and for several MTAs sharing a store.
    found = messages_for_deliveries(conn, [
        (ev.queue_id[:MAX_INDEXED_CHARS], ev.mta, ev.at, str(n)) for n, ev in enumerate(handoffs)
    ])
    if not found:
        return []
    started = {mid: at for mid, at in conn.execute(
        select(messages.c.id, messages.c.started_at)
        .where(messages.c.id.in_(sorted(set(found.values())))))}
    tied: set[int] = set()
    for n, ev in enumerate(handoffs):
        mid = found.get(str(n))
        addresses = sorted({normalize_address(a) for a in ev.recipients if a.strip()})
        if mid is None or not addresses:
            continue
        new = ev.queued_as[:MAX_INDEXED_CHARS]
        # By recipient (indexed), then the queue id each row keeps in its data. The
        # re-injected copy exists only after the original message started, and its lines
        # come before the hand-off's: the window keeps out a reused short queue id's
        # older or later lines.
        rows = conn.execute(
            select(events.c.id, events.c.data).where(
                events.c.recipient.in_(addresses),
                events.c.message.is_(None),
                events.c.kind == DELIVERY_KIND,
                events.c.source == (ev.mta or "maillog"),
                events.c.at >= started[mid] - CLOCK_SLACK,
                events.c.at <= ev.at + CLOCK_SLACK,
            )
        ).all()
        ids = [r.id for r in rows if _queue_id(r.data) == new]
        if ids:
            conn.execute(update(events)
                         .where(events.c.id.in_(ids), events.c.message.is_(None))
                         .values(message=mid))
            tied.add(mid)
    return sorted(tied)


def kept_ties(conn: Connection, keys: Sequence[str]) -> dict[str, int]:
    """dedup key -> message, for the rows with these keys that are tied already.

    A row written again (a spool replay, a log read twice) whose message is not found at
    write time would otherwise be untied again by the upsert, undoing an `apply`."""
    found: dict[str, int] = {}
    for start in range(0, len(keys), 500):  # old SQLite builds: 999 parameters at most
        chunk = list(keys[start:start + 500])
        query = select(events.c.dedup_key, events.c.message).where(
            events.c.dedup_key.in_(chunk), events.c.message.is_not(None))
        found.update({key: int(mid) for key, mid in conn.execute(query)})
    return found


def _queue_id(data: Any) -> str | None:
    return data.get("queue_id") if isinstance(data, dict) else None
