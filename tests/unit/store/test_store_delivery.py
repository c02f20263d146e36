"""Delivery events from the MTA log: tied to the right message by queue id, stored once."""

from __future__ import annotations

from datetime import timedelta

from tests.unit.store.store_helpers import T0, make_message, row_counts

from trackmilter.model import DeliveryObserved, DeliveryStatus, event_from_dict
from trackmilter.store import SQLStore


def delivery(queue_id: str, rcpt: str, status: DeliveryStatus, minutes: float,
             **kw: str) -> DeliveryObserved:
    return DeliveryObserved(queue_id, rcpt, status, T0 + timedelta(minutes=minutes),
                            dsn=kw.pop("dsn", "2.0.0"), relay="mx.example.net[192.0.2.9]:25",
                            text=kw.pop("text", "250 2.0.0 Ok: queued as ABC"),
                            mta=kw.pop("mta", "mx1"), **kw)


def test_round_trip_through_dict() -> None:
    ev = delivery("4Q1", "Bob@Example.com", DeliveryStatus.DEFERRED, 1, orig_to="b@example.com")
    assert event_from_dict(ev.to_dict()) == ev


def test_tied_to_latest_message_with_that_queue_id(store: SQLStore) -> None:
    # m1 (T0+1min) and m2 (T0+2min) share a reused queue id; a line at T0+1.5min is m1's.
    store.write([make_message(1, queue_id="4XyZ1"), make_message(2, queue_id="4XyZ1")])
    store.write([
        delivery("4XyZ1", "bob@example.com", DeliveryStatus.SENT, 1.5),
        delivery("4XyZ1", "bob@example.com", DeliveryStatus.BOUNCED, 3, dsn="5.1.1",
                 text="host mx said: 550 5.1.1 <bob@example.com>: user unknown"),
    ])
    by_tid = {m.tracking_id: m for m in store.lookup("4XyZ1")}
    [sent] = [e for e in by_tid["t000000000000001"].events if e.kind == "delivery"]
    [bounced] = [e for e in by_tid["t000000000000002"].events if e.kind == "delivery"]
    assert (sent.status, sent.code, sent.recipient) == ("sent", "2.0.0", "bob@example.com")
    assert sent.data == {"queue_id": "4XyZ1", "relay": "mx.example.net[192.0.2.9]:25"}
    assert (bounced.status, bounced.code) == ("bounced", "5.1.1")
    assert bounced.text.endswith("user unknown")


def test_other_mta_or_unknown_queue_id_stays_unattached(store: SQLStore, db_url: str) -> None:
    store.write([make_message(1, queue_id="4Q1")])
    store.write([
        delivery("4Q1", "bob@example.com", DeliveryStatus.SENT, 2, mta="mx2"),
        delivery("4NOPE", "carol@example.com", DeliveryStatus.SENT, 2),
    ])
    [m] = store.lookup("4Q1")
    assert [e.kind for e in m.events] == ["inline"]
    # Still stored, and found by recipient once a message for it exists.
    assert row_counts(db_url)["events"] == 3


def test_same_line_twice_is_one_event(store: SQLStore, db_url: str) -> None:
    store.write([make_message(1, queue_id="4Q1")])
    ev = delivery("4Q1", "bob@example.com", DeliveryStatus.DEFERRED, 2, dsn="4.4.1",
                  text="connect to mx.example.net[192.0.2.9]:25: Connection refused")
    store.write([ev, ev])
    store.write([ev])
    later = delivery("4Q1", "bob@example.com", DeliveryStatus.DEFERRED, 12, dsn="4.4.1")
    store.write([later])
    [m] = store.lookup("4Q1")
    assert [e.status for e in m.events if e.kind == "delivery"] == ["deferred", "deferred"]


def test_whole_second_stamp_ties_to_the_message_started_within_that_second(
        store: SQLStore) -> None:
    # An old message with the same (reused) queue id, and the new one started at :05.300;
    # the log stamps its delivery 12:xx:05 (no fraction): it is the new message's.
    old = make_message(1, tracking_id="t000000000000001", queue_id="4REUSE")
    new = make_message(2, tracking_id="t000000000000002", queue_id="4REUSE",
                       started=T0 + timedelta(hours=3, seconds=5, milliseconds=300))
    store.write([old, new])
    stamp = T0 + timedelta(hours=3, seconds=5)
    store.write([DeliveryObserved("4REUSE", "bob@example.com", DeliveryStatus.SENT, stamp,
                                  dsn="2.0.0", relay="mx.example.net[192.0.2.9]:25",
                                  mta=new.mta)])
    by_tid = {m.tracking_id: m for m in store.lookup("4REUSE")}
    assert sorted(e.kind for e in by_tid["t000000000000002"].events) == ["delivery", "inline"]
    assert [e.kind for e in by_tid["t000000000000001"].events] == ["inline"]
