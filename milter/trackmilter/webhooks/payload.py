"""Pure: an event's stable webhook id, its JSON payload, and the HMAC signature receivers verify."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

from trackmilter.addresses import Network, in_networks
from trackmilter.model import (
    DeliveryObserved,
    Direction,
    Event,
    HitRecorded,
    MessageRecorded,
    RcptOutcome,
    RecipientRecord,
    ReportReceived,
)

# The configuration's `events` vocabulary; a payload's `type` is "<kind>.<subtype>".
WEBHOOK_KINDS = ("delivery", "report", "hit")
PAYLOAD_VERSION = 1

EVENT_ID_HEADER = "X-Trackmilter-Event-Id"
TIMESTAMP_HEADER = "X-Trackmilter-Timestamp"
SIGNATURE_HEADER = "X-Trackmilter-Signature"
SIGNATURE_SCHEME = "v1"
# How old a timestamp a receiver should still accept (replay protection); see verify().
DEFAULT_TOLERANCE = 300


class SignatureError(ValueError):
    """A request whose signature, timestamp or event id does not verify."""


def event_id(ev: Event) -> str:
    """A deterministic id (64 hex digits) from what identifies the event, so a replay of the
    same event (spool replay, a log line read twice, a resent report) gets the same id.

    The fields mirror the store's own deduplication keys (store/sql.py)."""
    if isinstance(ev, HitRecorded):
        parts = ["hit", ev.hit_id, *([f"revision:{ev.revision}"] if ev.revision else [])]
    elif isinstance(ev, DeliveryObserved):
        parts = ["delivery", ev.mta, ev.queue_id, _address(ev.recipient),
                 ev.delivered_to.lower(), str(ev.status), ev.at.isoformat()]
    elif isinstance(ev, ReportReceived):
        ident = _address(ev.report_message_id)
        if ident:
            ident = "mid:" + ident
        elif ev.report_queue_id:
            ident = f"qid:{ev.mta}:{ev.report_queue_id}"
        else:
            # Nothing names this report: the whole of it does (a byte-identical replay).
            ident = "all:" + canonical_json(ev.to_dict())
        parts = ["report", ev.report, ident,
                 *sorted(_address(r.recipient) for r in ev.recipients)]
    else:
        raise ValueError(f"no webhook for {ev.kind!r} events")
    return _digest(parts)


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def event_type(ev: Event) -> str:
    """`delivery.sent|deferred|bounced|expired`, `report.dsn|mdn|arf`, `hit.click|open`."""
    if isinstance(ev, DeliveryObserved):
        return f"delivery.{ev.status}"
    if isinstance(ev, ReportReceived):
        return f"report.{ev.report}"
    if isinstance(ev, HitRecorded):
        return f"hit.{ev.target}.revised" if ev.revision else f"hit.{ev.target}"
    raise ValueError(f"no webhook for {ev.kind!r} events")


def build_payload(ev: Event) -> dict[str, Any]:
    """The JSON object POSTed for one event: envelope fields plus the event as stored."""
    data = ev.to_dict()
    data.pop("kind", None)
    if isinstance(ev, HitRecorded):
        # The verdict given when the hit was answered, or one a revision changed it to.
        data["answer"] = "revised" if ev.revision else "first"
    at = data.get("at", "")
    return {
        "id": event_id(ev),
        "type": event_type(ev),
        "occurred_at": at,
        "version": PAYLOAD_VERSION,
        "data": data,
    }


def webhook_kind(ev: Event) -> str:
    """The `events` vocabulary word an endpoint subscribes with: a message the milter
    recorded counts as `delivery` (its in-line refusals are delivery outcomes)."""
    return "delivery" if isinstance(ev, MessageRecorded) else ev.kind


def items(ev: Event, outgoing_networks: Sequence[Network] = ()) -> list[tuple[str, str, str]]:
    """(id, type, body) of every webhook an event makes.

    Most events make one. A message the milter recorded makes one `delivery.refused` for
    each recipient our own MTA refused in-line, and none otherwise (acceptance by our MTA
    is no news; the delivery line that follows is). Only for mail from a client we trust:
    SASL-authenticated, or in `outgoing_networks` ([milter] outgoing_networks). A sender
    domain alone does not do: anyone can forge one at an inbound MX, and its refusals are
    spam defence, not delivery news.
    """
    if isinstance(ev, MessageRecorded):
        trusted = bool(ev.auth_user) or in_networks(ev.client_addr, tuple(outgoing_networks))
        if ev.direction is not Direction.OUTGOING or not trusted:
            return []
        last: dict[str, RecipientRecord] = {}
        for r in ev.recipients:  # the same address twice: its last answer stands
            last.pop(_address(r.address), None)
            last[_address(r.address)] = r
        out = []
        for r in last.values():
            if r.outcome is RcptOutcome.REFUSED:
                payload = refusal_payload(ev, r)
                out.append((payload["id"], payload["type"], canonical_json(payload)))
        return out
    return [(event_id(ev), event_type(ev), encode(ev))]


def refusal_payload(ev: MessageRecorded, r: RecipientRecord) -> dict[str, Any]:
    """`delivery.refused`: shaped like a delivery outcome from the log (`recipient`,
    `status`, `dsn`, `text`, `at`, `queue_id`, `mta`), with what the milter knows of the
    message. There is no 3-digit code: Postfix does not pass it to milters. `temporary`:
    a 4.x.x refusal (a rate limit, a verification not done yet), which the client retries."""
    at = r.at.isoformat()
    return {
        "id": _digest(["refused", ev.mta, ev.tracking_id, _address(r.address)]),
        "type": "delivery.refused",
        "occurred_at": at,
        "version": PAYLOAD_VERSION,
        "data": {
            "recipient": r.address, "status": "refused", "dsn": r.status, "text": r.text,
            "at": at, "temporary": r.status.startswith("4"),
            "queue_id": ev.queue_id, "mta": ev.mta, "tracking_id": ev.tracking_id,
            "message_id": ev.message_id, "sender": ev.sender, "client_addr": ev.client_addr,
            "auth_user": ev.auth_user, "relay": "", "transport": "",
        },
    }


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON: the same event always serialises to the same body."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode(ev: Event) -> str:
    """The request body for one event (stored in the outbox, signed as UTF-8 bytes)."""
    return canonical_json(build_payload(ev))


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """`v1=` + hex HMAC-SHA256(secret, "<timestamp>.<body>")."""
    mac = hmac.new(secret, str(int(timestamp)).encode("ascii") + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_SCHEME}={mac.hexdigest()}"


def headers(secret: bytes, event_id_: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of a delivery request."""
    return {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: event_id_,
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


def verify(secrets: tuple[bytes, ...] | bytes, request_headers: Mapping[str, str],
           body: bytes, now: float, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """What a receiver does: check the timestamp is recent, that a `v1=` signature matches
    one of `secrets` (several during a key rotation), and that the body's id is the header's.
    Returns the decoded payload; raises :class:`SignatureError`. Header names are matched
    case-insensitively."""
    lower = {k.lower(): v for k, v in request_headers.items()}
    stamp = lower.get(TIMESTAMP_HEADER.lower(), "")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise SignatureError(f"bad or missing {TIMESTAMP_HEADER}: {stamp!r}") from exc
    if abs(now - timestamp) > tolerance:
        raise SignatureError(f"timestamp {timestamp} is more than {tolerance}s from {int(now)}")
    keys = (secrets,) if isinstance(secrets, bytes) else secrets
    offered = [s.strip() for s in lower.get(SIGNATURE_HEADER.lower(), "").split(",")]
    expected = [sign(k, timestamp, body) for k in keys]
    if not any(hmac.compare_digest(o, e) for o in offered for e in expected):
        raise SignatureError("signature does not match")
    try:
        payload: dict[str, Any] = json.loads(body)
    except ValueError as exc:
        raise SignatureError(f"body is not JSON: {exc}") from exc
    if payload.get("id") != lower.get(EVENT_ID_HEADER.lower()):
        raise SignatureError(f"{EVENT_ID_HEADER} does not match the body's id")
    return payload


def _address(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    return value.lower()
