"""A delivery logged under a content filter's re-injected queue id before the hand-off
named it: stored untied, then tied to the original message by the `Reinjected` event the
follower gives at the hand-off (store/relink.py), idempotently, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from tests.unit.maillog.test_maillog_handoff import (
    NEW,
    OLD,
    hand_off,
    lmtp,
    queued,
    received,
    reinjected,
    removed,
    smtp,
)
from tests.unit.store.store_helpers import make_message, row_counts

from trackmilter.cli import main
from trackmilter.maillog.daemon import KINDS, Queues, consume
from trackmilter.maillog.parse import LineParser
from trackmilter.metrics import Metrics
from trackmilter.model import (
    DeliveryObserved,
    DeliveryStatus,
    Event,
    MessageRecorded,
    Reinjected,
    event_from_dict,
)
from trackmilter.store import MessageView, SQLStore
from trackmilter.store.engine import make_engine
from trackmilter.store.schema import events

REFERENCE = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
STARTED = datetime(2026, 11, 27, 9, 59, 59, 500000, tzinfo=UTC)
MTA = "mx1"  # the milter's and the follower's mta_name (make_message records "mx1")


class Follower:
    """`trackmilter maillog` without its threads: log text in, events out."""

    def __init__(self) -> None:
        self.queues = Queues(MTA)
        self.parser = LineParser("postfix", reference=REFERENCE, kinds=KINDS)

    def read(self, text: str) -> list[Event]:
        out: list[Event] = []

        class Sink:
            def submit(self, event: Event) -> None:
                out.append(event)

        consume(text, self.parser, self.queues, Sink(), Metrics(CollectorRegistry()))
        return out


def message(sender: str = "alice@example.org", rcpts: tuple[str, ...] = ("bob@example.net",),
            queue_id: str = OLD) -> MessageRecorded:
    return make_message(1, tracking_id="t00000000000late", queue_id=queue_id, sender=sender,
                        rcpts=rcpts, started=STARTED)


def deliveries(view: MessageView) -> list[tuple[str | None, str, str]]:
    return [(e.recipient, e.status, (e.data or {}).get("queue_id", ""))
            for e in view.events if e.kind == "delivery"]


def status(db_url: str, tmp_path: Path, ident: str) -> str:
    cfg = tmp_path / "tm.toml"
    cfg.write_text(f'[database]\nurl = "{db_url}"\n')
    res = CliRunner().invoke(main, ["--config", str(cfg), "status", "--explain", ident])
    assert res.exit_code == 0, res.output
    return res.stdout


@pytest.mark.parametrize("sender", ["alice@example.org", ""], ids=["sender", "null-sender"])
def test_delivery_stored_before_the_hand_off_ends_up_on_the_original(
        store: SQLStore, db_url: str, tmp_path: Path, sender: str) -> None:
    """The follower's events in the order it gives them, each block written on its own
    (as the writer may): the delivery under NEW is stored untied first. A null-sender
    message (a bounce, an auto-reply) has nothing else that could tie it later."""
    store.write([message(sender)])
    follower = Follower()
    before = follower.read(received(OLD) + queued(OLD, sender) + reinjected(NEW, sender)
                           + lmtp(NEW, "bob@example.net") + removed(NEW))
    assert [type(e) for e in before] == [DeliveryObserved]
    store.write(before)
    [view] = store.lookup(OLD)
    assert deliveries(view) == []  # untied: no message has queue id NEW
    after = follower.read(hand_off(OLD, NEW, "bob@example.net") + removed(OLD))
    assert [type(e) for e in after] == [Reinjected]
    store.write(after)
    [view] = store.lookup(OLD)
    assert deliveries(view) == [("bob@example.net", "sent", NEW)]
    [by_rcpt] = store.lookup("bob@example.net")
    assert by_rcpt.tracking_id == view.tracking_id
    text = status(db_url, tmp_path, "bob@example.net")
    assert f"from <{sender}>" in text
    assert "accepted by the remote server mail.example.net[private/dovecot-lmtp]" in text
    assert "Saved" in text and "no evidence yet" not in text


def test_the_same_batch_and_replays_change_nothing(store: SQLStore, db_url: str) -> None:
    """Events may be replayed from a spool: the hand-off twice, the delivery again after it
    (it must not come back untied), and the whole batch again."""
    store.write([message()])
    follower = Follower()
    batch = follower.read(received(OLD) + reinjected(NEW, "") + lmtp(NEW, "bob@example.net")
                          + hand_off(OLD, NEW, "bob@example.net"))
    delivery, late = batch
    store.write(batch)  # the delivery and the hand-off in one write
    counts = row_counts(db_url)
    for replay in ([late], [late, late], [delivery], batch, [delivery, late, delivery]):
        store.write(replay)
        [view] = store.lookup(OLD)
        assert deliveries(view) == [("bob@example.net", "sent", NEW)], replay
    assert row_counts(db_url) == counts


def test_multi_recipient_with_orig_to(store: SQLStore) -> None:
    """Two recipients delivered before the hand-off, one through an alias the first
    cleanup expanded (the hand-off names both addresses); a third one after it."""
    store.write([message(rcpts=("bob@example.net", "team@example.net", "carol@example.com"))])
    follower = Follower()
    store.write(follower.read(received(OLD) + reinjected(NEW, "") + lmtp(NEW, "bob@example.net")
                              + lmtp(NEW, "dave@example.net")))
    store.write(follower.read(
        hand_off(OLD, NEW, "bob@example.net")
        + hand_off(OLD, NEW, "dave@example.net", orig_to="team@example.net")
        + hand_off(OLD, NEW, "carol@example.com")
        + smtp(NEW, "carol@example.com", at="10:00:03")))
    [view] = store.lookup(OLD)
    assert sorted(deliveries(view)) == [
        ("bob@example.net", "sent", NEW),
        ("carol@example.com", "sent", OLD),
        ("dave@example.net", "sent", NEW),
    ]


def _untied(queue_id: str, rcpt: str, at: datetime, mta: str = MTA) -> DeliveryObserved:
    return DeliveryObserved(queue_id, rcpt, DeliveryStatus.SENT, at, dsn="2.0.0",
                            relay="mx.example.net[192.0.2.9]:25", text="250 ok", mta=mta)


def test_only_the_re_injected_copy_s_lines_are_tied(store: SQLStore, db_url: str) -> None:
    store.write([message()])
    at = STARTED + timedelta(seconds=2)
    mine = _untied(NEW, "bob@example.net", at)
    others = [
        _untied("7E7E71C0A1", "bob@example.net", at),  # another queue id
        _untied(NEW, "bob@example.net", at + timedelta(seconds=1), mta="mx2"),  # another MTA
        _untied(NEW, "erin@example.net", at),  # a recipient the hand-off does not name
        # The short queue id NEW an hour earlier: another message.
        _untied(NEW, "bob@example.net", STARTED - timedelta(hours=1)),
    ]
    store.write([mine, *others])
    store.write([Reinjected(OLD, NEW, at + timedelta(seconds=1), ("bob@example.net",), MTA)])
    [view] = store.lookup(OLD)
    assert deliveries(view) == [("bob@example.net", "sent", NEW)]
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            untied = conn.execute(select(events.c.id).where(events.c.message.is_(None))).all()
    finally:
        engine.dispose()
    assert len(untied) == len(others)


def test_without_the_original_message_nothing_is_tied(store: SQLStore, db_url: str) -> None:
    """The milter recorded nothing under OLD (mail from pickup, another MTA's queue id)."""
    at = STARTED + timedelta(seconds=2)
    store.write([_untied(NEW, "bob@example.net", at)])
    store.write([Reinjected(OLD, NEW, at, ("bob@example.net",), MTA)])
    assert store.lookup(OLD) == [] and store.lookup("bob@example.net") == []
    assert row_counts(db_url)["events"] == 1


def test_round_trip_through_dict() -> None:
    ev = Reinjected(OLD, NEW, STARTED, ("bob@example.net", "team@example.net"), MTA)
    assert event_from_dict(ev.to_dict()) == ev
