"""A verdict revised later reaches the webhooks as hit.<target>.revised, with an id of its
own (the original hit's event is not replaced), in the transaction that revises it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from trackmilter.config import WebhookEndpoint
from trackmilter.model import HitReason, HitRecorded
from trackmilter.store import SQLStore, upgrade
from trackmilter.store.engine import make_engine
from trackmilter.webhooks.outbox import OutboxHook
from trackmilter.webhooks.payload import event_id, event_type
from trackmilter.webhooks.schema import webhook_outbox

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
HOOK = WebhookEndpoint("https://app.example/hook", Path("/nonexistent"), ("hit",))


def hit(n: int) -> HitRecorded:
    return HitRecorded(hit_id=f"h{n}", target="click", tracking_id="abcdefghijklmnop",
                       at=T0 + timedelta(seconds=n), index=n, verdict="human",
                       reasons=(HitReason("browser", "Firefox", "human"),))


def all_machine(hs: Sequence[HitRecorded], accepted: datetime | None, links: int = 0
                ) -> list[tuple[str, tuple[HitReason, ...]]]:
    return [("machine", (HitReason("burst", "3 links", "machine"),)) for _ in hs]


def test_revisions_are_sent_as_their_own_events(db_url: str) -> None:
    upgrade(db_url)
    store = SQLStore(db_url, reviser=all_machine, hooks=(OutboxHook((HOOK,)),))
    try:
        store.write([hit(1), hit(2)])
        assert store.revise_hits(["abcdefghijklmnop"]) == 2
        assert store.revise_hits(["abcdefghijklmnop"]) == 0
    finally:
        store.close()
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(webhook_outbox.c.event_type, webhook_outbox.c.event_id)
                                .order_by(webhook_outbox.c.id)).all()
    finally:
        engine.dispose()
    types = [t for t, _ in rows]
    assert types == ["hit.click", "hit.click", "hit.click.revised", "hit.click.revised"]
    assert len({i for _, i in rows}) == 4
    assert rows[0][1] == event_id(hit(1))


def test_revision_ids_and_types() -> None:
    from dataclasses import replace

    revised = replace(hit(1), verdict="machine", revision=7)
    assert event_type(revised) == "hit.click.revised" and event_type(hit(1)) == "hit.click"
    assert event_id(revised) != event_id(hit(1))
    assert event_id(revised) == event_id(replace(revised))
