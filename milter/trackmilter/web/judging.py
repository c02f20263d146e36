"""Between the tracker, the store and trackmilter.verdict: settings into thresholds and
network lists, hits as the verdict module takes them, and the store's reviser."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import cast

from trackmilter.config import Settings
from trackmilter.model import HitReason, HitRecorded
from trackmilter.verdict import (
    Context,
    Thresholds,
    hit_from_record,
    judge,
    reason_text,
    rejudge,
)
from trackmilter.web.networks import Format, NetworkSet, NetworkSource

__all__ = ["networks_from", "reason_text", "request_judge", "reviser_from", "thresholds_from"]

Judged = tuple[str, tuple[HitReason, ...]]


def thresholds_from(settings: Settings) -> Thresholds:
    v = settings.verdict
    return Thresholds(
        soon_after_delivery=timedelta(seconds=v.soon_after_delivery),
        burst_window=timedelta(seconds=v.burst_window), burst_links=v.burst_links,
        group_prefix_v4=v.group_prefix_v4, group_prefix_v6=v.group_prefix_v6,
        apple_networks=frozenset(v.apple_networks),
        scanner_networks=frozenset(v.scanner_networks),
        proxy_networks=frozenset(v.proxy_networks),
    )


def sources_from(settings: Settings) -> list[NetworkSource]:
    return [NetworkSource(s.label, cast(Format, s.format), s.path, s.url, s.names)
            for s in settings.networks.sources]


def networks_from(settings: Settings) -> NetworkSet | None:
    """The configured lists; a file not downloaded yet is skipped (the tracker still starts,
    and `trackmilter networks refresh` fetches it), a malformed one is an error."""
    sources = sources_from(settings)
    return NetworkSet.load(sources, missing_ok=True) if sources else None


class RequestJudge:
    """The verdict when a hit is answered: the request and this process's recent hits of
    the same message (the delivery time is the store's to add, in a revision)."""

    def __init__(self, thresholds: Thresholds) -> None:
        self._th = thresholds

    def __call__(self, hit: HitRecorded, others: Sequence[HitRecorded]) -> Judged:
        ctx = Context(None, [hit_from_record(o) for o in others])
        j = judge(hit_from_record(hit), ctx, self._th)
        return str(j.verdict), j.records()


class Reviser:
    """All hits of one message judged again with the delivery time (the store calls it)."""

    def __init__(self, thresholds: Thresholds) -> None:
        self._th = thresholds

    def __call__(self, hits: Sequence[HitRecorded], accepted_at: datetime | None
                 ) -> list[Judged]:
        judged = rejudge([(n, hit_from_record(h)) for n, h in enumerate(hits)], accepted_at,
                         self._th)
        return [(str(j.verdict), j.records()) for _, j in judged]


def request_judge(settings: Settings) -> RequestJudge:
    return RequestJudge(thresholds_from(settings))


def reviser_from(settings: Settings) -> Reviser:
    return Reviser(thresholds_from(settings))
