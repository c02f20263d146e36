"""Webhook payloads: stable event ids, the body's shape, and the signature (a known vector)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from trackmilter.model import (
    DeliveryObserved,
    DeliveryStatus,
    Event,
    HitReason,
    HitRecorded,
    ReportReceived,
    ReportRecipient,
)
from trackmilter.webhooks.payload import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    build_payload,
    encode,
    event_id,
    event_type,
    headers,
    sign,
    verify,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

DELIVERY = DeliveryObserved(queue_id="4VxQ1", recipient="Bob@Example.net",
                            status=DeliveryStatus.BOUNCED, at=T0, dsn="5.1.1",
                            relay="mx.example.net[192.0.2.1]:25", text="user unknown",
                            mta="mx1")
REPORT = ReportReceived(report="arf", at=T0, report_message_id="<r1@isp.example>",
                        recipients=(ReportRecipient("carol@example.org", action="abuse"),),
                        tracking_id="abcdefghijklmnop")
HIT = HitRecorded(hit_id="h-1", target="click", tracking_id="abcdefghijklmnop", at=T0,
                  index=2, url="https://example.com/x", verdict="machine",
                  reasons=(HitReason("safe_links", "Microsoft", "machine"),))


def test_signature_known_vector() -> None:
    # printf '1700000000.{"id":"abc"}' | openssl dgst -sha256 -hmac topsecret
    assert sign(b"topsecret", 1700000000, b'{"id":"abc"}') == (
        "v1=117e0624eb1850a1ba0969ef6d05441abad7c782f0256a467a025815121003fe")


@pytest.mark.parametrize(("ev", "same"), [
    pytest.param(DELIVERY, dataclasses.replace(DELIVERY, recipient="<bob@example.net>",
                                               text="reworded"), id="delivery-replay"),
    pytest.param(REPORT, dataclasses.replace(REPORT, report_message_id="r1@isp.example",
                                             reporting_mta="other"), id="report-resent"),
    pytest.param(HIT, dataclasses.replace(HIT, verdict="human", reasons=()), id="hit-replay"),
])
def test_replay_has_the_same_id(ev: Event, same: Event) -> None:
    assert event_id(ev) == event_id(same)
    assert event_id(ev) == event_id(type(ev).from_dict(json.loads(json.dumps(ev.to_dict()))))
    assert len(event_id(ev)) == 64


@pytest.mark.parametrize(("ev", "other"), [
    pytest.param(DELIVERY, dataclasses.replace(DELIVERY, at=T0 + timedelta(seconds=1)),
                 id="delivery-next-attempt"),
    pytest.param(DELIVERY, dataclasses.replace(DELIVERY, status=DeliveryStatus.DEFERRED),
                 id="delivery-status"),
    pytest.param(DELIVERY, dataclasses.replace(DELIVERY, mta="mx2"), id="delivery-other-mta"),
    pytest.param(REPORT, dataclasses.replace(REPORT, report_message_id="<r2@isp.example>"),
                 id="report-other-message"),
    pytest.param(REPORT, dataclasses.replace(REPORT, report="dsn"), id="report-kind"),
    pytest.param(dataclasses.replace(REPORT, report_message_id="", report_queue_id="Q1"),
                 dataclasses.replace(REPORT, report_message_id="", report_queue_id="Q2"),
                 id="report-by-queue-id"),
    pytest.param(dataclasses.replace(REPORT, report_message_id=""),
                 dataclasses.replace(REPORT, report_message_id="", tracking_id="x" * 16),
                 id="report-unnamed"),
    pytest.param(HIT, dataclasses.replace(HIT, hit_id="h-2"), id="hit-other"),
])
def test_different_events_have_different_ids(ev: Event, other: Event) -> None:
    assert event_id(ev) != event_id(other)


@pytest.mark.parametrize(("ev", "etype"), [
    pytest.param(DELIVERY, "delivery.bounced", id="delivery"),
    pytest.param(REPORT, "report.arf", id="report"),
    pytest.param(dataclasses.replace(HIT, target="open"), "hit.open", id="hit"),
])
def test_payload_shape(ev: Event, etype: str) -> None:
    payload = build_payload(ev)
    assert payload["id"] == event_id(ev)
    assert payload["type"] == event_type(ev) == etype
    assert payload["occurred_at"] == "2024-05-01T12:00:00+00:00"
    assert payload["version"] == 1
    assert "kind" not in payload["data"]
    assert json.loads(encode(ev)) == payload
    assert encode(ev) == encode(ev)  # the body is stable: stored once, signed per attempt


def test_hit_payload_carries_verdict_and_reasons() -> None:
    data = build_payload(HIT)["data"]
    assert data["verdict"] == "machine"
    assert data["reasons"] == [{"code": "safe_links", "evidence": "Microsoft",
                                "leans": "machine", "weight": "", "decided": False}]


def test_message_events_have_no_webhook() -> None:
    from tests.unit.store.store_helpers import make_message

    with pytest.raises(ValueError, match="no webhook"):
        event_id(make_message(1))


BODY = encode(HIT).encode()
NOW = 1_700_000_000


def _signed(**change: str) -> dict[str, str]:
    h = headers(b"k1", event_id(HIT), NOW, BODY)
    h.update(change)
    return h


@pytest.mark.parametrize(("secrets", "hdrs", "body", "now", "error"), [
    pytest.param(b"k1", _signed(), BODY, NOW, "", id="valid"),
    pytest.param((b"old", b"k1"), _signed(), BODY, NOW + 299, "", id="rotation-and-skew"),
    pytest.param(b"k1", {k.lower(): v for k, v in _signed().items()}, BODY, NOW, "",
                 id="lowercase-headers"),
    pytest.param(b"k2", _signed(), BODY, NOW, "does not match", id="wrong-secret"),
    pytest.param(b"k1", _signed(), BODY + b" ", NOW, "does not match", id="body-changed"),
    pytest.param(b"k1", _signed(**{TIMESTAMP_HEADER: str(NOW + 1)}), BODY, NOW,
                 "does not match", id="timestamp-changed"),
    pytest.param(b"k1", _signed(), BODY, NOW + 301, "more than", id="too-old"),
    pytest.param(b"k1", _signed(**{TIMESTAMP_HEADER: "x"}), BODY, NOW, "Timestamp",
                 id="bad-timestamp"),
    pytest.param(b"k1", _signed(**{SIGNATURE_HEADER: ""}), BODY, NOW, "does not match",
                 id="unsigned"),
    pytest.param(b"k1", _signed(**{EVENT_ID_HEADER: "0" * 64}), BODY, NOW, "Event-Id",
                 id="id-mismatch"),
])
def test_verify(secrets: bytes | tuple[bytes, ...], hdrs: dict[str, str], body: bytes,
                now: int, error: str) -> None:
    if not error:
        assert verify(secrets, hdrs, body, now)["id"] == event_id(HIT)
        return
    with pytest.raises(SignatureError, match=error):
        verify(secrets, hdrs, body, now)


def test_headers() -> None:
    h = headers(b"k1", "e1", NOW, BODY)
    assert h["Content-Type"] == "application/json"
    assert h[EVENT_ID_HEADER] == "e1"
    assert h[TIMESTAMP_HEADER] == str(NOW)
    assert h[SIGNATURE_HEADER] == sign(b"k1", NOW, BODY)
