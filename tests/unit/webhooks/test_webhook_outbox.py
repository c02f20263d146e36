"""The outbox: rows go in with the events (once per endpoint and event), are claimed when due."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from tests.unit.store.store_helpers import T0, make_message

from trackmilter.config import WebhookEndpoint
from trackmilter.model import (
    DeliveryObserved,
    DeliveryStatus,
    Direction,
    Event,
    HitRecorded,
    MessageRecorded,
    RcptOutcome,
    RecipientRecord,
)
from trackmilter.webhooks import outbox
from trackmilter.webhooks.payload import encode, event_id
from trackmilter.webhooks.schema import webhook_outbox

ALL = WebhookEndpoint("http://a.example/hook", Path("/nonexistent"))
HITS = WebhookEndpoint("http://b.example/hook", Path("/nonexistent"), ("hit",))
LEASE = timedelta(minutes=5)


def delivery(n: int) -> DeliveryObserved:
    return DeliveryObserved(queue_id=f"Q{n}", recipient="bob@example.net",
                            status=DeliveryStatus.SENT, at=T0 + timedelta(seconds=n),
                            mta="mx1")


def hit(n: int) -> HitRecorded:
    return HitRecorded(hit_id=f"h{n}", target="open", tracking_id="t" * 16, at=T0)



def refusing(n: int, *refused: str) -> MessageRecorded:
    """Outgoing mail from an authenticated client, with recipients our MTA refused."""
    return dataclasses.replace(make_message(n, refused=refused or ("no@example.net",)),
                               auth_user="alice")


def rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(webhook_outbox).order_by(webhook_outbox.c.id))]


def add(engine: Engine, events: list[Event], endpoints: tuple[WebhookEndpoint, ...] = (ALL,),
        ) -> int:
    with engine.begin() as conn:
        return outbox.enqueue(conn, events, endpoints, T0)


@pytest.mark.parametrize(("events", "endpoints", "expected"), [
    pytest.param([delivery(1), hit(1)], (ALL, HITS),
                 {(ALL.url, "delivery.sent"), (ALL.url, "hit.open"), (HITS.url, "hit.open")},
                 id="routed-by-kind"),
    pytest.param([make_message(1)], (ALL,), set(), id="acceptance-by-our-mta-is-no-news"),
    pytest.param([refusing(1)], (ALL, HITS), {(ALL.url, "delivery.refused")},
                 id="inline-refusal"),
    pytest.param([dataclasses.replace(refusing(1), direction=Direction.INBOUND)], (ALL,),
                 set(), id="inbound-refusals-are-spam-defence"),
    pytest.param([dataclasses.replace(refusing(1), auth_user="")], (ALL,), set(),
                 id="outgoing-by-sender-domain-alone-is-not-trusted"),
    pytest.param([refusing(1)], (HITS,), set(), id="refusals-are-delivery-kind"),
    pytest.param([delivery(1)], (HITS,), set(), id="kind-not-wanted"),
    pytest.param([delivery(1)], (), set(), id="no-endpoints"),
    pytest.param([delivery(1), dataclasses.replace(delivery(1), text="again")], (ALL,),
                 {(ALL.url, "delivery.sent")}, id="duplicate-in-batch"),
])
def test_enqueue(engine: Engine, events: list[Event], endpoints: tuple[WebhookEndpoint, ...],
                 expected: set[tuple[str, str]]) -> None:
    assert add(engine, events, endpoints) == len(expected)
    got = rows(engine)
    assert {(r["endpoint"], r["event_type"]) for r in got} == expected
    for r in got:
        assert r["attempts"] == 0
        assert r["next_attempt_at"] == T0
        assert r["delivered_at"] is None


def test_each_inline_refusal_is_a_delivery_refused_once(engine: Engine) -> None:
    msg = dataclasses.replace(make_message(1, rcpts=("ok@example.net",),
                                           refused=("No@Example.net", "nope@example.net")),
                              auth_user="alice")
    assert add(engine, [msg]) == 2
    got = rows(engine)
    bodies = [json.loads(str(r["payload"])) for r in got]
    assert [b["type"] for b in bodies] == ["delivery.refused"] * 2
    first = bodies[0]
    assert first["id"] == got[0]["event_id"]
    assert first["data"]["recipient"] == "No@Example.net"
    assert (first["data"]["status"], first["data"]["dsn"], first["data"]["text"]) == (
        "refused", "5.7.1", "Relay access denied")
    assert (first["data"]["tracking_id"], first["data"]["queue_id"], first["data"]["mta"]) == (
        msg.tracking_id, msg.queue_id, "mx1")
    assert first["occurred_at"] == first["data"]["at"] == msg.recipients[1].at.isoformat()
    # The spool replays the same event: nothing new. Another message's refusal is news.
    assert add(engine, [msg]) == 0
    assert add(engine, [refusing(2)]) == 1
    assert json.loads(str(rows(engine)[0]["payload"]))["data"]["temporary"] is False


def test_refusal_from_a_trusted_network_without_auth(engine: Engine) -> None:
    msg = make_message(1, refused=("no@example.net",))  # from 192.0.2.1, no SASL login
    with engine.begin() as conn:
        assert outbox.enqueue(conn, [msg], (ALL,), T0) == 0
        nets = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.0/24"))
        assert outbox.enqueue(conn, [msg], (ALL,), T0, nets) == 1


def test_a_later_answer_for_the_same_address_stands(engine: Engine) -> None:
    at = T0 + timedelta(seconds=5)
    msg = refusing(1)
    temp = RecipientRecord("Try@example.net", RcptOutcome.REFUSED, "4.7.1", "Slow down", at)
    again = RecipientRecord("no@example.net", RcptOutcome.ACCEPTED, at=at)
    msg = dataclasses.replace(msg, recipients=(*msg.recipients, temp, again))
    assert add(engine, [msg]) == 1  # no@ was accepted at the second try
    data = json.loads(str(rows(engine)[0]["payload"]))["data"]
    assert (data["recipient"], data["dsn"], data["temporary"]) == ("Try@example.net", "4.7.1", True)


def test_replay_is_not_enqueued_twice(engine: Engine) -> None:
    assert add(engine, [delivery(1), hit(1)]) == 2
    before = rows(engine)
    assert add(engine, [hit(1), delivery(1), delivery(2)]) == 1
    after = rows(engine)
    assert after[:2] == before
    assert after[2]["event_id"] == event_id(delivery(2))
    assert after[2]["payload"] == encode(delivery(2))


def test_rolled_back_batch_leaves_no_row(engine: Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        outbox.enqueue(conn, [delivery(1)], (ALL,), T0)
        raise RuntimeError("the store's write failed")
    assert rows(engine) == []


def test_claim_takes_due_rows_once(engine: Engine) -> None:
    add(engine, [delivery(n) for n in range(5)] + [hit(1)], (ALL, HITS))
    with engine.begin() as conn:
        assert outbox.claim(conn, {ALL.url}, T0 - timedelta(seconds=1), LEASE, 10) == []
        first = outbox.claim(conn, {ALL.url}, T0, LEASE, 4)
        second = outbox.claim(conn, {ALL.url}, T0, LEASE, 4)
        assert outbox.claim(conn, {"http://unknown.example/"}, T0, LEASE, 4) == []
    assert len(first) == 4
    assert len(second) == 2  # the rest of ALL's six; HITS's row is not asked for
    assert {c.id for c in first}.isdisjoint(c.id for c in second)
    assert all(c.endpoint == ALL.url and c.attempts == 0 for c in first + second)
    with engine.begin() as conn:
        # The lease ran out (a worker died): the rows are due again.
        assert len(outbox.claim(conn, {ALL.url}, T0 + LEASE, LEASE, 10)) == 6
        outbox.release(conn, [first[0].id], T0)
        assert outbox.next_due(conn, {ALL.url}) == T0
        again = outbox.claim(conn, {ALL.url}, T0, LEASE, 10)
    assert [c.id for c in again] == [first[0].id]


def test_marks(engine: Engine) -> None:
    add(engine, [delivery(1), delivery(2), delivery(3)])
    ids = [r["id"] for r in rows(engine)]
    later = T0 + timedelta(minutes=1)
    with engine.begin() as conn:
        outbox.mark_delivered(conn, ids[0], later)
        outbox.mark_failed(conn, ids[1], "HTTP 503", later)
        outbox.mark_failed(conn, ids[2], "x" * 2000, None)
        assert outbox.depth(conn) == {ALL.url: 1}
        assert outbox.next_due(conn, {ALL.url}) == later
    a, b, c = rows(engine)
    assert (a["attempts"], a["delivered_at"], a["next_attempt_at"]) == (1, later, None)
    assert (b["attempts"], b["last_error"], b["next_attempt_at"]) == (1, "HTTP 503", later)
    assert (c["attempts"], c["delivered_at"], c["next_attempt_at"]) == (1, None, None)
    assert len(str(c["last_error"])) == outbox.MAX_ERROR_CHARS
    with engine.begin() as conn:
        assert outbox.purge(conn, T0 + timedelta(days=1)) == 2  # the pending row stays
    assert [r["id"] for r in rows(engine)] == [ids[1]]


def test_postgresql_claimers_skip_locked_rows(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises claimers with BEGIN IMMEDIATE instead")
    add(engine, [delivery(n) for n in range(4)])
    with engine.connect() as one, engine.connect() as two:
        with one.begin():
            first = outbox.claim(one, {ALL.url}, T0, LEASE, 2)
            with two.begin():  # while the first claim's transaction is still open
                second = outbox.claim(two, {ALL.url}, T0, LEASE, 10)
    assert len(first) == 2
    assert len(second) == 2
    assert {c.id for c in first}.isdisjoint(c.id for c in second)
