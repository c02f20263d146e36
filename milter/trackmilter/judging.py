"""Between the daemons, the store and trackmilter.verdict: settings into thresholds, hits as
the verdict module takes them, the tracker's judge at answer time and the store's reviser.

A neutral module: the tracker (web, edge), maillog and the milter (its store's reviser)
use it, it uses none of them (the network lists, a tracker's own, are
`trackmilter.web.networks.networks_from`)."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from trackmilter.config import Settings
from trackmilter.model import HitReason, HitRecorded, tracking_id_time
from trackmilter.verdict import (
    Context,
    Hit,
    IPAddress,
    Thresholds,
    group_key,
    judge_keyed,
    rejudge,
)

__all__ = ["KEPT_HEADER", "KEPT_VERSION", "RequestJudge", "RevisionCounter", "Reviser", "hit_from_record", "parse_client", "request_judge",
           "reviser_from", "thresholds_from"]

Judged = tuple[str, tuple[HitReason, ...]]

# Which request headers a tracker keeps as evidence, stored with a hit's headers: version 2
# added the client hints (Sec-CH-UA…) and Upgrade-Insecure-Requests. A hit recorded by an
# older tracker carries no such entry, and is not blamed for headers nobody kept.
KEPT_HEADER = "x-trackmilter-kept"
KEPT_VERSION = "2"


def thresholds_from(settings: Settings) -> Thresholds:
    v = settings.verdict
    return Thresholds(
        soon_after_delivery=timedelta(seconds=v.soon_after_delivery),
        burst_window=timedelta(seconds=v.burst_window), burst_links=v.burst_links,
        group_prefix_v4=v.group_prefix_v4, group_prefix_v6=v.group_prefix_v6,
        apple_networks=frozenset(v.apple_networks),
        scanner_networks=frozenset(v.scanner_networks),
        proxy_networks=frozenset(v.proxy_networks),
        secure_origin=secure_origin(settings.tracking.base_url),
    )


def secure_origin(base_url: str) -> bool:
    """Browsers send Fetch Metadata and client hints only to potentially trustworthy origins
    (W3C Secure Contexts §3.1): https, and http on loopback."""
    parts = urlsplit(base_url)
    if not base_url or parts.scheme == "https":  # no tracker yet: judge as behind https
        return True
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Other hits of a message this process remembers for the verdict at answer time (a burst
# across processes is found by the store's revision).
# Enough to see a burst of burst_links links as it happens; the store's revision sees more.
RECENT_PER_MESSAGE = 8
RECENT_MESSAGES = 50_000


class RequestJudge:
    """The verdict when a hit is answered: the request, this process's recent hits of the
    same message and when our MTA accepted it (in the tracking id; the remote server's
    acceptance is the store's to add, in a revision). Not thread-safe: one per event loop."""

    def __init__(self, thresholds: Thresholds) -> None:
        self._th = thresholds
        self._recent: OrderedDict[str, deque[tuple[object, Hit]]] = OrderedDict()

    def __call__(self, hit: HitRecorded, client: IPAddress | None = None) -> Judged:
        tid = hit.tracking_id
        h = hit_from_record(hit, client)
        recent = self._recent.get(tid)
        ctx = Context(sent_at=tracking_id_time(tid, hit.at))
        j = judge_keyed(h, recent or (), ctx, self._th)
        if recent is None:
            recent = self._recent[tid] = deque(maxlen=RECENT_PER_MESSAGE)
            if len(self._recent) > RECENT_MESSAGES:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(tid)
        recent.append((group_key(h, self._th), h))
        return str(j.verdict), j.records()


class Reviser:
    """All hits of one message judged again with what the store knows of it: when the
    remote server accepted it and how many links it has (the store calls it)."""

    def __init__(self, thresholds: Thresholds) -> None:
        self._th = thresholds

    def __call__(self, hits: Sequence[HitRecorded], accepted_at: datetime | None,
                 links: int = 0) -> list[Judged]:
        sent_at = tracking_id_time(hits[0].tracking_id, hits[0].at) if hits else None
        ctx = Context(accepted_at=accepted_at, sent_at=sent_at, links=links)
        judged = rejudge([(n, hit_from_record(h)) for n, h in enumerate(hits)], ctx, self._th)
        return [(str(j.verdict), j.records()) for _, j in judged]


def request_judge(settings: Settings) -> RequestJudge:
    return RequestJudge(thresholds_from(settings))


def reviser_from(settings: Settings) -> Reviser:
    return Reviser(thresholds_from(settings))


def parse_client(text: str) -> IPAddress | None:
    """A stored client: an address, or a network when [privacy] truncated it (its first
    address groups the same at /24 and /64)."""
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    try:
        return ipaddress.ip_network(text, strict=False).network_address
    except ValueError:
        return None


def _kept(value: str) -> int:
    """The header-set version a hit was recorded with (0: before versions were recorded)."""
    return int(value) if value.isdigit() else 0


def hit_from_record(record: HitRecorded, client: IPAddress | None = None) -> Hit:
    """`client`: the address already parsed (the tracker has it), else read from the record."""
    headers = dict(record.headers)
    return Hit(
        kind="open" if record.target == "open" else "click", at=record.at,
        method=record.method, user_agent=record.user_agent,
        client=client if client is not None else parse_client(record.client),
        network=record.network or None,
        headers=headers, index=record.index, honeypot=record.honeypot,
        hints_kept=_kept(headers.get(KEPT_HEADER, "")) >= int(KEPT_VERSION))


class RevisionCounter:
    """A store write hook that counts the verdicts a revision changed, by target and new
    verdict (trackmilter_tracker_verdict_revisions_total), in whichever process revises:
    the tracker (hits stored later) or the log follower (a delivery time). A write that
    rolls back is counted all the same, and again when it is retried: rare, and the count
    is of revisions made, not of those that survived."""

    def __init__(self, metrics: Any) -> None:
        self._metrics = metrics

    def written(self, conn: Any, events: Sequence[Any], now: datetime) -> None:
        m = self._metrics
        for ev in events:
            if isinstance(ev, HitRecorded) and ev.revision:
                m.child(m.verdict_revisions, ev.target, ev.verdict or "unknown").inc()
