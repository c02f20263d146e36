"""The revisions: a message is judged again once its hits settle, at least every MAX_DELAY
while hammered, and again later if the store was down."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from trackmilter.metrics import Metrics
from trackmilter.web.revisions import RevisionQueue


class Store:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail = False

    def revise_hits(self, tracking_ids: Sequence[str], since: datetime | None = None) -> int:
        if self.fail:
            raise RuntimeError("database down")
        self.calls.append(sorted(tracking_ids))
        return len(tracking_ids)


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    warning = info


def make(now: list[float]) -> tuple[RevisionQueue, Store, Metrics]:
    store, metrics = Store(), Metrics(CollectorRegistry())
    r = RevisionQueue(store, metrics, Log(), settle=2.0, max_delay=30.0, clock=lambda: now[0],
                start=False)
    return r, store, metrics


def test_waits_for_quiet_then_revises_once() -> None:
    now = [100.0]
    r, store, metrics = make(now)
    r.note("a")
    now[0] = 101.0
    r.note("a")
    r.note("b")
    assert r.run_once() == 0 and store.calls == []
    now[0] = 103.5
    assert r.run_once() == 2
    assert store.calls == [["a", "b"]]
    assert r.run_once() == 0
    # Counted where the revision is written (judging.RevisionCounter, a store hook), not here.
    assert metrics.registry.get_sample_value(
        "trackmilter_tracker_verdict_revisions_total", {"target": "click", "verdict": "machine"}
    ) is None


def test_hammered_message_is_revised_every_max_delay() -> None:
    now = [0.0]
    r, store, _ = make(now)
    for t in range(0, 31):
        now[0] = float(t)
        r.note("a")
        r.run_once()
    assert store.calls == [["a"]]


def test_store_down_keeps_them_pending() -> None:
    now = [0.0]
    r, store, _ = make(now)
    r.note("a")
    store.fail = True
    now[0] = 5.0
    assert r.run_once() == 0
    store.fail = False
    now[0] = 8.0
    assert r.run_once() == 1 and store.calls == [["a"]]


def test_close_revises_what_is_pending() -> None:
    now = [0.0]
    r, store, _ = make(now)
    r.note("a")
    r.close()
    assert store.calls == [["a"]]


def test_noting_store_notes_only_after_a_successful_write() -> None:
    from trackmilter.model import HitRecorded
    from trackmilter.web.revisions import NotingStore

    class Inner:
        fail = True

        def write(self, events: Any) -> None:
            if self.fail:
                raise RuntimeError("database down")

    now = [0.0]
    r, store, _ = make(now)
    inner = Inner()
    noting = NotingStore(inner, r)
    hit = HitRecorded(hit_id="h1", target="click", tracking_id="abcdefghijklmnop",
                      at=datetime(2026, 11, 27, tzinfo=UTC))
    try:
        noting.write([hit])
    except RuntimeError:
        pass
    now[0] = 10.0
    assert r.run_once() == 0 and store.calls == []  # the writer spooled it: nothing to revise
    inner.fail = False
    noting.write([hit])  # the replay
    now[0] = 20.0
    assert r.run_once() == 1 and store.calls == [["abcdefghijklmnop"]]
