"""Reports seen by the milter: tied to the original message by the strongest tie they carry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.unit.store.store_helpers import T0, make_message

from trackmilter.model import ReportReceived, ReportRecipient, event_from_dict
from trackmilter.store import SQLStore

FAILED = ReportRecipient("Bob@Example.com", "failed", "5.1.1", "550", "userunknown", True,
                         "smtp; 550 5.1.1 <bob@example.com>: User unknown", "mx.example.com")


def report(**kw: object) -> ReportReceived:
    base: dict[str, object] = {"report": "dsn", "at": T0 + timedelta(hours=1),
                               "recipients": (FAILED,), "report_message_id": "<r1@mx.example>",
                               "reporting_mta": "mx.example.com", "mta": "mx1"}
    base.update(kw)
    return ReportReceived(**base)  # type: ignore[arg-type]


def test_round_trip_through_dict() -> None:
    ev = report(tracking_id="t000000000000001")
    assert event_from_dict(ev.to_dict()) == ev


@pytest.mark.parametrize(
    "tie",
    [
        pytest.param({"tracking_id": "T000000000000002"}, id="tracking-id"),
        pytest.param({"original_queue_id": "Q00000002"}, id="queue-id"),
        pytest.param({"original_message_id": "<m2@example.org>"}, id="message-id"),
    ],
)
def test_tied_by_each_kind_of_evidence(store: SQLStore, tie: dict[str, str]) -> None:
    store.write([make_message(1), make_message(2)])
    store.write([report(**tie)])
    [m] = store.lookup("t000000000000002")
    [dsn] = [e for e in m.events if e.kind == "dsn"]
    assert (dsn.recipient, dsn.status, dsn.code) == ("bob@example.com", "failed", "5.1.1")
    assert dsn.data is not None and dsn.data["reason"] == "userunknown"
    assert dsn.data["hardbounce"] is True and dsn.source == "mx.example.com"
    [other] = store.lookup("t000000000000001")
    assert not [e for e in other.events if e.kind == "dsn"]


def test_same_report_twice_is_stored_once(store: SQLStore) -> None:
    store.write([make_message(2)])
    store.write([report(tracking_id="t000000000000002")])
    store.write([report(tracking_id="t000000000000002")])
    [m] = store.lookup("t000000000000002")
    assert len([e for e in m.events if e.kind == "dsn"]) == 1


def test_mdn_and_arf_without_recipient_details(store: SQLStore) -> None:
    store.write([make_message(2)])
    store.write([
        report(report="mdn", report_message_id="<mdn@x>", tracking_id="t000000000000002",
               recipients=(ReportRecipient("bob@example.com", "displayed"),)),
        report(report="arf", report_message_id="<arf@x>", tracking_id="t000000000000002",
               recipients=(ReportRecipient("bob@example.com", "abuse"),)),
    ])
    [m] = store.lookup("t000000000000002")
    assert sorted((e.kind, e.status) for e in m.events if e.kind in ("mdn", "arf")) == [
        ("arf", "abuse"), ("mdn", "displayed")]


def test_tied_by_verp_to_the_latest_message_from_sender_to_recipient(store: SQLStore) -> None:
    store.write([make_message(1, rcpts=("bob@example.com",)),
                 make_message(2, rcpts=("bob@example.com",)),
                 make_message(3, rcpts=("carol@example.com",))])
    store.write([report(verp_sender="alice@example.org", verp_recipient="Bob@Example.com")])
    tied = [m.tracking_id for m in store.lookup("bob@example.com")
            if any(e.kind == "dsn" for e in m.events)]
    assert tied == ["t000000000000002"]


def test_tied_by_the_clients_envid(store: SQLStore) -> None:
    from dataclasses import replace

    store.write([replace(make_message(1), envelope_id="batch-7"), make_message(2)])
    store.write([report(envelope_id="batch-7")])
    [m] = store.lookup("t000000000000001")
    assert m.envelope_id == "batch-7"
    assert [e.kind for e in m.events if e.kind == "dsn"] == ["dsn"]


def test_another_servers_queue_id_does_not_outrank_the_message_id(store: SQLStore) -> None:
    # m1's queue id happens to equal the remote server's; the report quotes m2's Message-ID.
    store.write([make_message(1, queue_id="C0FFEE1"), make_message(2)])
    store.write([report(original_queue_id="C0FFEE1", original_message_id="<m2@example.org>",
                        reporting_mta="mx.remote.example", mta="mx1")])
    [m2] = store.lookup("t000000000000002")
    assert [e.kind for e in m2.events if e.kind == "dsn"] == ["dsn"]
    # Our own MTA's bounce: its queue id is ours, and it comes first.
    store.write([report(original_queue_id="C0FFEE1", original_message_id="<m2@example.org>",
                        reporting_mta="mx1", mta="mx1", report_message_id="<r2@mx1>")])
    [m1] = store.lookup("t000000000000001")
    assert [e.kind for e in m1.events if e.kind == "dsn"] == ["dsn"]
