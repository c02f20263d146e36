"""Tracker hits in the store: stored once, shown with their message, verdicts revised with
evidence only the database has, and every verdict kept."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select
from tests.unit.store.store_helpers import T0, make_message

from trackmilter.model import (
    DeliveryObserved,
    DeliveryStatus,
    HitReason,
    HitRecorded,
    event_from_dict,
)
from trackmilter.store import SQLStore
from trackmilter.store.engine import make_engine
from trackmilter.store.schema import hit_verdicts, hits

TID = "t000000000000001"


def hit(n: int, seconds: float, *, index: int = 1, verdict: str = "unknown",
        ua: str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0") -> HitRecorded:
    return HitRecorded(
        hit_id=f"h{n:04d}", target="click", tracking_id=TID, at=T0 + timedelta(seconds=seconds),
        index=index, url=f"https://shop.example.org/{index}", client="192.0.2.7",
        method="GET", user_agent=ua, headers=(("accept", "text/html"),), verdict=verdict,
        reasons=(HitReason("browser", "Firefox", "human"),) if verdict == "human" else (),
        tracker="t1",
    )


class BurstReviser:
    """Stands in for the verdict module: three or more hits of one message within ten
    seconds are all machine; a hit within a minute of acceptance is machine too."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, datetime | None]] = []

    def __call__(self, hs: Sequence[HitRecorded], accepted: datetime | None, links: int = 0
                 ) -> list[tuple[str, tuple[HitReason, ...]]]:
        self.calls.append((len(hs), accepted))
        out = []
        for h in hs:
            near = [o for o in hs if abs((o.at - h.at).total_seconds()) <= 10]
            if len(near) >= 3:
                out.append(("machine", (HitReason("burst", str(len(near)), "machine"),)))
            elif accepted is not None and (h.at - accepted).total_seconds() < 60:
                out.append(("machine", (HitReason("soon_after_delivery", "", "machine"),)))
            else:
                out.append((h.verdict, h.reasons))
        return out


def count(url: str, table: object) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)  # type: ignore[arg-type]
    finally:
        engine.dispose()


def test_round_trip_through_dict() -> None:
    ev = hit(1, 5, verdict="human")
    assert event_from_dict(ev.to_dict()) == ev


def test_stored_once_and_shown_with_history(store: SQLStore, db_url: str) -> None:
    store.write([make_message(1, tracking_id=TID)])
    store.write([hit(1, 3600, verdict="human")])
    store.write([hit(1, 3600, verdict="human")])  # a spool replay
    assert count(db_url, hits) == 1
    assert count(db_url, hit_verdicts) == 0  # revisions only; the first verdict is on the hit
    (view,) = store.lookup(TID)
    (h,) = view.hits
    assert (h.target, h.index, h.verdict, h.client) == ("click", 1, "human", "192.0.2.7")
    assert h.reasons == ({"code": "browser", "evidence": "Firefox", "leans": "human",
                         "weight": "", "decided": False},)
    assert [v["cause"] for v in h.history] == ["request"]
    assert view.to_dict()["hits"][0]["url"] == "https://shop.example.org/1"


def test_hit_before_its_message_is_kept_and_shown_later(store: SQLStore) -> None:
    store.write([hit(1, 3600)])
    assert store.lookup(TID) == []
    store.write([make_message(1, tracking_id=TID)])
    (view,) = store.lookup(TID)
    assert len(view.hits) == 1


def test_revision_marks_a_burst_and_keeps_the_first_verdict(db_url: str) -> None:
    from trackmilter.store import upgrade

    upgrade(db_url)
    reviser = BurstReviser()
    store = SQLStore(db_url, reviser=reviser)
    try:
        store.write([make_message(1, tracking_id=TID)])
        store.write([hit(1, 3600, verdict="human")])
        store.write([hit(2, 3602, index=2), hit(3, 3603, index=3)])
        assert store.revise_hits([TID]) == 3
        assert store.revise_hits([TID]) == 0  # nothing new: nothing changes
        store.write([hit(1, 3600, verdict="human")])  # a replay does not undo the revision
        assert count(db_url, hit_verdicts) == 3
        (view,) = store.lookup(TID)
        first = view.hits[0]
        assert first.verdict == "machine"
        assert [v["verdict"] for v in first.history] == ["human", "machine"]
        assert [v["cause"] for v in first.history] == ["request", "revision"]
        assert {h.verdict for h in view.hits} == {"machine"}
    finally:
        store.close()


def test_a_delivery_stored_after_the_hits_revises_them(db_url: str) -> None:
    from trackmilter.store import upgrade

    upgrade(db_url)
    reviser = BurstReviser()
    store = SQLStore(db_url, reviser=reviser)
    try:
        msg = make_message(1, tracking_id=TID, queue_id="4QABC")
        store.write([msg])
        sent_at = msg.started_at + timedelta(seconds=5)
        store.write([hit(1, (sent_at - T0).total_seconds() + 20, verdict="unknown")])
        store.write([DeliveryObserved("4QABC", "bob@example.com", DeliveryStatus.SENT, sent_at,
                                      dsn="2.0.0", relay="mx.example.net[192.0.2.9]:25",
                                      mta=msg.mta)])
        assert reviser.calls and reviser.calls[-1][1] == sent_at
        (view,) = store.lookup(TID)
        assert view.hits[0].verdict == "machine"
        assert view.hits[0].reasons[0]["code"] == "soon_after_delivery"
    finally:
        store.close()


def test_purge_deletes_only_what_is_older(store: SQLStore, db_url: str) -> None:
    old, new = make_message(1, tracking_id=TID), make_message(600, tracking_id="t000000000000002")
    store.write([old, new, hit(1, 120), hit(2, 600 * 60 + 30)])
    counts = store.purge(T0 + timedelta(minutes=300))
    assert counts == {"hits": 1, "messages": 1, "untied_events": 0, "webhook_deliveries": 0}
    assert store.lookup(TID) == []
    assert [v.tracking_id for v in store.lookup("t000000000000002")] == ["t000000000000002"]
    assert count(db_url, hits) == 1
