"""Read-side snapshots of stored messages: frozen dataclasses with a JSON-ready ``to_dict``."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class RecipientView:
    """A recipient as our MTA answered it in-line (``outcome`` is accepted or refused)."""

    address: str
    outcome: str
    status: str
    text: str
    at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "outcome": self.outcome,
            "status": self.status,
            "text": self.text,
            "at": _iso(self.at),
        }


@dataclass(frozen=True)
class LinkView:
    """A rewritten link: its index in the message (the one in the token) and the original URL."""

    index: int
    url: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "url": self.url}


@dataclass(frozen=True)
class EventView:
    """One entry of a message's timeline: what happened, when, and the evidence."""

    kind: str
    at: datetime | None
    recipient: str | None = None
    source: str = ""
    status: str = ""
    code: str = ""
    text: str = ""
    # Kind-specific evidence (user agent, verdict reasons, DSN fields); JSON-compatible.
    data: dict[str, Any] | None = field(default=None, hash=False, compare=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": _iso(self.at),
            "recipient": self.recipient,
            "source": self.source,
            "status": self.status,
            "code": self.code,
            "text": self.text,
            "data": self.data,
        }


@dataclass(frozen=True)
class HitView:
    """A click or open answered by the tracker, with its current verdict and the history."""

    target: str  # click | open
    at: datetime | None
    index: int
    url: str
    client: str
    network: str
    method: str
    user_agent: str
    verdict: str
    reasons: tuple[dict[str, str], ...] = ()
    history: tuple[dict[str, Any], ...] = ()  # every verdict given, oldest first
    hit_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "at": _iso(self.at),
            "index": self.index,
            "url": self.url,
            "client": self.client,
            "network": self.network,
            "method": self.method,
            "user_agent": self.user_agent,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "history": list(self.history),
            "hit_id": self.hit_id,
        }


@dataclass(frozen=True)
class MessageView:
    """A stored message with its recipients, links and timeline (events ordered by time)."""

    tracking_id: str
    direction: str
    end_reason: str
    sender: str
    started_at: datetime | None
    finished_at: datetime | None
    queue_id: str = ""
    message_id: str = ""  # without angle brackets
    envelope_id: str = ""  # the client's ENVID (RFC 3461), "" when it gave none
    headers: dict[str, str] = field(default_factory=dict, hash=False)  # record_headers found
    client_addr: str = ""
    client_name: str = ""
    auth_user: str = ""
    helo: str = ""
    size: int = 0
    rewritten: bool = False
    skip_reason: str = ""
    pixel: bool = False
    tracking_header: bool = False
    link_count: int = 0
    mta: str = ""
    recipients: tuple[RecipientView, ...] = ()
    links: tuple[LinkView, ...] = ()
    events: tuple[EventView, ...] = ()
    hits: tuple[HitView, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                out[f.name] = value.isoformat()
            elif isinstance(value, tuple):
                out[f.name] = [item.to_dict() for item in value]
            else:
                out[f.name] = value
        return out
