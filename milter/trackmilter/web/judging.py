"""Between the tracker and trackmilter.verdict: hits as the verdict module wants them, the
network lists from configuration, and the store's reviser. (Provisional.)"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from trackmilter.config import Settings
from trackmilter.model import HitReason, HitRecorded


def request_judge(settings: Settings) -> Any:
    def judge(hit: HitRecorded, others: Sequence[HitRecorded]
              ) -> tuple[str, tuple[HitReason, ...]]:
        return "unknown", ()

    return judge


def reviser_from(settings: Settings) -> Any:
    def revise(hits: Sequence[HitRecorded], accepted_at: datetime | None
               ) -> list[tuple[str, tuple[HitReason, ...]]]:
        return [(h.verdict, h.reasons) for h in hits]

    return revise


def networks_from(settings: Settings) -> Any:
    return None


def reason_text(code: str, evidence: str) -> str:
    return code.replace("_", " ") + (f": {evidence}" if evidence else "")
