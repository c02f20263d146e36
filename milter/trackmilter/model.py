"""The vocabulary: stored events, in-line outcomes and skip reasons as frozen dataclasses and enums."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar


class Direction(StrEnum):
    """Whether we may track (and modify) a message or only record it."""

    OUTGOING = "outgoing"
    INBOUND = "inbound"


class RcptOutcome(StrEnum):
    """What our own MTA said to a recipient, in-line (before any delivery attempt)."""

    ACCEPTED = "accepted"
    REFUSED = "refused"


class EndReason(StrEnum):
    """How an SMTP transaction ended."""

    QUEUED = "queued"  # end of message reached; the MTA took it (unless a later milter refused)
    ALL_REFUSED = "all_recipients_refused"
    ABORTED = "aborted"  # RSET / client gone before end of message


class DeliveryStatus(StrEnum):
    """What the MTA logged about one delivery attempt (Postfix's status=, Sendmail's stat=)."""

    SENT = "sent"  # the next hop answered 2xx: accepted by it, nothing more
    DEFERRED = "deferred"  # temporary failure; the MTA will try again
    BOUNCED = "bounced"  # permanent failure; a bounce goes to the sender
    EXPIRED = "expired"  # retried until the queue lifetime ran out; returned to the sender


class SkipReason(StrEnum):
    """Why a message was recorded but not rewritten. Stable names: used in metrics and storage."""

    INBOUND = "inbound"
    NULL_SENDER = "null_sender"
    DKIM_SIGNED = "dkim_signed"
    SIGNED_OR_ENCRYPTED = "signed_or_encrypted"
    TOO_LARGE = "too_large"
    OPT_OUT = "opt_out_header"
    NO_LINKS = "no_links"
    # Nothing was rewritten, and some part was left alone because its charset is unknown
    # or its bytes are not text in it (RFC 2046 §4.1.2).
    CHARSET = "charset"
    # Nothing was rewritten, and some link was left as written because its token would be
    # longer than the trackers accept (tokens.MAX_TOKEN_CHARS).
    URL_TOO_LONG = "url_too_long"
    DISABLED = "disabled"
    ERROR = "error"
    # The milter's memory budget ([milter] memory_budget) had no room for the message in
    # time: it passed unmodified (with the tracking header).
    BUSY = "busy"


TRACKING_ID_BYTES = 10


# The first 4 bytes of a tracking id are the second our MTA accepted the message (the
# milter makes the id at MAIL FROM), big-endian seconds since 1970 (until 2106); the other 6
# are random (48 bits: two ids made in one second collide after about 2^24 messages in that
# second). The tracker reads the time from the signed token, so its first verdict knows
# "seconds after our MTA accepted the message" without a database. Ids made before this
# layout are 10 random bytes: their "time" is arbitrary, which is why readers only take one
# that lies in a plausible window (tracking_id_time).
_TIME_BYTES = 4
_PLAUSIBLE_SINCE = datetime(2024, 1, 1, tzinfo=UTC)


def new_tracking_id(at: datetime | None = None) -> str:
    """80-bit id, 16 lowercase base32 characters (short enough for headers and tokens): the
    second `at` (default now) and 48 random bits."""
    when = int((at or utcnow()).timestamp()) & 0xFFFFFFFF
    raw = when.to_bytes(_TIME_BYTES, "big") + secrets.token_bytes(
        TRACKING_ID_BYTES - _TIME_BYTES)
    return base64.b32encode(raw).decode("ascii").lower()


def tracking_id_time(tid: str, now: datetime) -> datetime | None:
    """When our MTA accepted the message, read from its tracking id; None when the id holds
    no plausible time (an id from before the timed layout, or not an id): not before 2024,
    not more than a day after `now`."""
    try:
        raw = tracking_id_to_bytes(tid)
    except ValueError:
        return None
    at = datetime.fromtimestamp(int.from_bytes(raw[:_TIME_BYTES], "big"), UTC)
    if at < _PLAUSIBLE_SINCE or at > now + timedelta(days=1):
        return None
    return at


def tracking_id_to_bytes(tid: str) -> bytes:
    """Inverse of :func:`new_tracking_id`; raises ``ValueError`` on anything else."""
    if len(tid) != 16:
        raise ValueError(f"tracking id must be 16 characters, got {len(tid)}: {tid!r}")
    try:
        return base64.b32decode(tid.upper())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a tracking id: {tid!r}") from exc


def tracking_id_from_bytes(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").lower()


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RecipientRecord:
    """One RCPT TO as our MTA answered it."""

    address: str
    outcome: RcptOutcome
    status: str = ""  # enhanced status code for refusals, e.g. "5.7.1"
    text: str = ""  # the MTA's reply text for refusals, verbatim
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class LinkRecord:
    """A link that was rewritten: its index in the message and the original target."""

    index: int
    url: str


class _Stored:
    """The spool's line format for an event: its fields as JSON values, plus its kind."""

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        # dataclasses.asdict's form, in one pass without its deep copies: every event is encoded for the journal before the MTA gets its answer.
        data: dict[str, Any] = _plain(self)
        data["kind"] = self.kind
        return data


@dataclass(frozen=True)
class MessageRecorded(_Stored):
    """Everything the milter learned about one SMTP transaction."""

    tracking_id: str
    direction: Direction
    end: EndReason
    sender: str
    started_at: datetime
    finished_at: datetime
    recipients: tuple[RecipientRecord, ...] = ()
    queue_id: str = ""
    message_id: str = ""
    client_addr: str = ""
    client_name: str = ""
    auth_user: str = ""
    helo: str = ""
    size: int = 0
    rewritten: bool = False
    skip_reason: str = ""
    pixel: bool = False
    links: tuple[LinkRecord, ...] = ()
    mta: str = ""  # which MTA host recorded it (several servers may share one store)
    tracking_header: bool = False  # whether our tracking-id header was added
    envelope_id: str = ""  # the client's ENVID (RFC 3461), decoded
    headers: tuple[tuple[str, str], ...] = ()  # [milter] record_headers found, name lower-cased

    kind = "message"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MessageRecorded:
        data = dict(data)
        data.pop("kind", None)
        data["direction"] = Direction(data["direction"])
        data["end"] = EndReason(data["end"])
        data["started_at"] = datetime.fromisoformat(data["started_at"])
        data["finished_at"] = datetime.fromisoformat(data["finished_at"])
        data["recipients"] = tuple(
            RecipientRecord(
                address=r["address"],
                outcome=RcptOutcome(r["outcome"]),
                status=r.get("status", ""),
                text=r.get("text", ""),
                at=datetime.fromisoformat(r["at"]),
            )
            for r in data.get("recipients", ())
        )
        data["links"] = tuple(LinkRecord(**link) for link in data.get("links", ()))
        data["headers"] = tuple((str(k), str(v)) for k, v in data.get("headers", ()))
        return cls(**data)

    @property
    def accepted(self) -> tuple[RecipientRecord, ...]:
        return tuple(r for r in self.recipients if r.outcome is RcptOutcome.ACCEPTED)


@dataclass(frozen=True)
class DeliveryObserved(_Stored):
    """One delivery attempt for one recipient, as the MTA's log tells it.

    Tied to the message by queue id (and the MTA host when several share a store); the
    reply text is the remote server's, verbatim, when there was one.
    """

    queue_id: str
    recipient: str
    status: DeliveryStatus
    at: datetime
    dsn: str = ""  # enhanced status code, e.g. "2.0.0", "5.1.1"
    relay: str = ""  # e.g. "mx.example.net[192.0.2.1]:25", "none", "local"
    text: str = ""  # the parenthesised explanation, verbatim
    orig_to: str = ""
    mta: str = ""  # which MTA host logged it
    delivered_to: str = ""  # the final address when an alias rewrote the recipient
    transport: str = ""  # the delivery agent: smtp, lmtp, local, virtual, pipe, discard, error

    kind = "delivery"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeliveryObserved:
        data = dict(data)
        data.pop("kind", None)
        data["status"] = DeliveryStatus(data["status"])
        data["at"] = datetime.fromisoformat(data["at"])
        return cls(**data)


@dataclass(frozen=True)
class Reinjected(_Stored):
    """A content filter handed the message the milter saw under `queue_id` back to our MTA
    as `queued_as`, and the log told outcomes under `queued_as` before it told the hand-off.

    Those outcomes were stored tied to no message; the store ties the ones for these
    recipients to the message of `queue_id`, and doing so twice changes nothing.
    """

    queue_id: str  # the queue id the milter saw (after any earlier hops)
    queued_as: str  # the queue id the filter's re-injection got
    at: datetime  # when the hand-off was logged
    recipients: tuple[str, ...] = ()  # the hand-off line's to= and orig_to=
    mta: str = ""  # which MTA host logged it

    kind = "reinjected"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reinjected:
        data = dict(data)
        data.pop("kind", None)
        data["at"] = datetime.fromisoformat(data["at"])
        data["recipients"] = tuple(str(r) for r in data.get("recipients", ()))
        return cls(**data)


@dataclass(frozen=True)
class ReportRecipient:
    """One recipient of a report: a DSN's per-recipient fields, an MDN or ARF's subject."""

    recipient: str
    action: str = ""  # DSN Action; MDN disposition type; ARF feedback type
    status: str = ""  # RFC 3463 enhanced status code
    replycode: str = ""  # SMTP reply code, when the report gives one
    reason: str = ""  # bounce reason (sisimai's vocabulary), "" when not a failure
    hardbounce: bool = False
    text: str = ""  # Diagnostic-Code or equivalent, verbatim
    remote_mta: str = ""
    last_attempt: str = ""  # DSN Last-Attempt-Date, verbatim
    retry_until: str = ""  # DSN Will-Retry-Until (delay reports), verbatim


@dataclass(frozen=True)
class ReportReceived(_Stored):
    """A bounce (DSN), read receipt (MDN) or complaint (ARF) that passed through the milter,
    with what ties it to the original message, strongest first: our tracking id, the
    original queue id (Postfix's own bounces), the original Message-ID."""

    report: str  # "dsn" | "mdn" | "arf"
    at: datetime
    recipients: tuple[ReportRecipient, ...] = ()
    tracking_id: str = ""
    original_queue_id: str = ""
    original_message_id: str = ""
    envelope_id: str = ""
    reporting_mta: str = ""
    report_queue_id: str = ""  # the report's own queue id at our MTA
    report_message_id: str = ""
    mta: str = ""  # which MTA host's milter saw it
    # From a VERP bounce address (`sender+rcpt=domain@host`): the original envelope.
    verp_sender: str = ""
    verp_recipient: str = ""

    kind = "report"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReportReceived:
        data = dict(data)
        data.pop("kind", None)
        data["at"] = datetime.fromisoformat(data["at"])
        data["recipients"] = tuple(ReportRecipient(**r) for r in data.get("recipients", ()))
        return cls(**data)


@dataclass(frozen=True)
class HitReason:
    """One named piece of evidence behind a tracker verdict (see trackmilter.verdict)."""

    code: str  # stable snake_case name, e.g. "apple_mpp_prefetch", "burst"
    evidence: str = ""  # what matched: the user-agent token, the network label, seconds
    leans: str = ""  # "human" | "machine" | "" (context only)
    weight: str = ""  # "decisive" | "strong" | "weak" | "" (context only)
    decided: bool = False  # among the reasons the verdict rests on


@dataclass(frozen=True)
class HitRecorded(_Stored):
    """One request for a tracking link or the open pixel, as the tracker saw and judged it.

    The verdict is the one given when the request was answered (from the request and what
    that tracker process had seen); the store may revise it when more evidence is known
    (the delivery time, a burst of hits in other processes) and keeps every revision.
    """

    hit_id: str  # random: the same hit replayed from the spool is stored once
    target: str  # "click" | "open"
    tracking_id: str
    at: datetime
    index: int = 0  # the link's index in the message; 0 for the pixel
    url: str = ""  # the signed target (clicks)
    client: str = ""  # the client address as stored ([privacy] truncation applied)
    network: str = ""  # label of the configured IP range the client is in, if any
    method: str = "GET"
    user_agent: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # the request headers that matter as evidence
    honeypot: bool = False
    verdict: str = "unknown"  # "human" | "machine" | "unknown"
    reasons: tuple[HitReason, ...] = ()
    tracker: str = ""  # which tracker host answered
    # 0: as answered. >0: a later verdict on the same hit (the id of its revision row),
    # never stored as a hit again, only sent to webhooks as hit.<target>.revised.
    revision: int = 0

    kind = "hit"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HitRecorded:
        data = dict(data)
        data.pop("kind", None)
        data["at"] = datetime.fromisoformat(data["at"])
        data["headers"] = tuple((str(k), str(v)) for k, v in data.get("headers", ()))
        data["reasons"] = tuple(HitReason(**r) for r in data.get("reasons", ()))
        return cls(**data)


Event = MessageRecorded | DeliveryObserved | ReportReceived | HitRecorded | Reinjected
"""Union of everything the store accepts; grows as later layers add event kinds."""

EVENT_KINDS: dict[
    str,
    type[MessageRecorded] | type[DeliveryObserved] | type[ReportReceived] | type[HitRecorded]
    | type[Reinjected],
] = {
    MessageRecorded.kind: MessageRecorded,
    HitRecorded.kind: HitRecorded,
    DeliveryObserved.kind: DeliveryObserved,
    ReportReceived.kind: ReportReceived,
    Reinjected.kind: Reinjected,
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from its ``to_dict`` form (the spool's line format)."""
    kind = data.get("kind")
    try:
        cls = EVENT_KINDS[str(kind)]
    except KeyError as exc:
        raise ValueError(f"unknown event kind {kind!r}") from exc
    return cls.from_dict(data)


_FIELDS: dict[type, tuple[str, ...]] = {}


def _plain(value: Any) -> Any:
    """JSON-ready copy of a value: dataclasses as dicts of their fields (in order),
    tuples and lists as lists, datetimes as ISO 8601, StrEnums as their string."""
    cls = type(value)
    if cls is str or cls is int or cls is bool or value is None or cls is float:
        return value
    names = _FIELDS.get(cls)
    if names is None and is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[cls] = tuple(f.name for f in fields(value))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return str(value)
    return value
