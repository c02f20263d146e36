"""The memory budget in the session: reserved as the body arrives, released on every path."""

from __future__ import annotations

import email
import email.policy
import time
from dataclasses import replace
from io import BytesIO
from typing import Any

import Milter
import pytest
import structlog
from Milter.testctx import TestCtx as MilterTestCtx
from prometheus_client import CollectorRegistry
from tests.support import bigmail
from tests.unit.mta.test_session_flow import (  # noqa: F401 - _no_noreply is a fixture
    BASE,
    BOUNCE,
    HTML_MSG,
    SIGNER,
    ListSink,
    _no_noreply,
    _queue,
    run,
)

from trackmilter.config import MilterSettings, Settings, TrackingSettings
from trackmilter.metrics import Metrics
from trackmilter.model import EndReason
from trackmilter.mta import budget as budget_mod
from trackmilter.mta.session import Deps, Session

MIB = 1024 * 1024


def deps_with(sink: ListSink, *, budget: int = 256 * MIB, wait: float = 5.0,
              **tracking: Any) -> Deps:
    settings = Settings(milter=MilterSettings(memory_budget=budget, memory_wait=wait),
                        tracking=TrackingSettings(**{"base_url": BASE, **tracking}))
    return Deps(settings=settings, signer=SIGNER if settings.tracking.base_url else None,
                sink=sink, metrics=Metrics(CollectorRegistry()),
                log=structlog.get_logger("test"))


def big(size: int) -> bytes:
    return bigmail.message("quoted-printable", size)


def get(deps: Deps, name: str, **labels: str) -> float | None:
    return deps.metrics.registry.get_sample_value(name, labels)


def started(deps: Deps, raw: bytes) -> MilterTestCtx:
    """A transaction whose whole body has arrived, before end of message."""
    Milter.factory = lambda: Session(deps)
    ctx = MilterTestCtx()
    ctx._connect(helo="client.example", ip="127.0.0.1")
    ctx._envfrom("<alice@example.com>")
    ctx._envrcpt("<bob@example.net>")
    head, _, body = raw.partition(b"\r\n\r\n")
    ctx._msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for name, value in ctx._msg.items():
        ctx._header(name, value)
    ctx._eoh()
    ctx._feed_body(BytesIO(body))
    return ctx


def test_reserved_while_buffered_released_at_end_of_message() -> None:
    sink = ListSink()
    deps = deps_with(sink)
    ctx = started(deps, big(200_000))
    held = deps.budget.in_flight
    assert held >= budget_mod.REWRITE_FACTOR * 200_000
    assert get(deps, "trackmilter_milter_memory_reserved_bytes") == held
    ctx._setsymval("i", "4QID")
    ctx._eom()
    assert ctx._bodyreplaced and sink.events[-1].rewritten
    assert deps.budget.in_flight == 0
    assert get(deps, "trackmilter_milter_memory_reserved_bytes") == 0
    ctx._close()


@pytest.mark.parametrize("end", ["abort", "close"])
def test_released_when_the_transaction_ends_before_end_of_message(end: str) -> None:
    """RSET, or the client (or MTA) dropping the connection mid-body: libmilter calls
    abort and/or close; the reservation goes with the transaction."""
    sink = ListSink()
    deps = deps_with(sink)
    ctx = started(deps, big(100_000))
    assert deps.budget.in_flight > 0
    if end == "abort":
        ctx._abort()
    else:
        ctx._close()
    assert deps.budget.in_flight == 0
    assert [e.end for e in sink.events] == [EndReason.ABORTED]


def test_released_when_the_rewrite_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import trackmilter.mta.session as session_mod

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(session_mod, "rewrite_message", boom)
    sink = ListSink()
    deps = deps_with(sink)
    out = run(deps, big(50_000))
    assert not out.replaced and sink.events[0].skip_reason == "error"
    assert deps.budget.in_flight == 0


def test_released_when_body_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import trackmilter.mta.session as session_mod

    calls = {"n": 0}
    real = session_mod.rewrite_cost

    def flaky(chunk: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("bug")
        return real(chunk)

    monkeypatch.setattr(session_mod, "rewrite_cost", flaky)
    sink = ListSink()
    deps = deps_with(sink)
    out = run(deps, big(300_000))  # several chunks
    assert calls["n"] == 2  # failed: the rest was not kept, so not reserved
    assert not out.replaced and sink.events[0].skip_reason == "error"
    assert deps.budget.in_flight == 0
    assert get(deps, "trackmilter_errors_total", stage="body") == 1


def test_larger_than_the_whole_budget_passes_unmodified_at_once() -> None:
    sink = ListSink()
    deps = deps_with(sink, budget=MIB, wait=30.0)  # 1 MiB: ~80 kB of body at 12x
    start = time.monotonic()
    out = run(deps, big(200_000))
    assert time.monotonic() - start < 15  # did not wait its 30 s
    assert not out.replaced
    [ev] = sink.events
    assert ev.skip_reason == "busy" and not ev.rewritten and ev.tracking_header
    assert out.headers["X-Trackmilter-ID"] == ev.tracking_id  # the header costs no body
    assert deps.budget.in_flight == 0
    assert get(deps, "trackmilter_milter_skipped_total", reason="busy") == 1
    assert get(deps, "trackmilter_milter_messages_total",
               direction="outgoing", action="tracked") == 1
    # A small message still fits.
    out = run(deps, HTML_MSG)
    assert out.replaced and sink.events[-1].rewritten


def test_waits_for_room_then_passes_unmodified_as_busy() -> None:
    sink = ListSink()
    deps = deps_with(sink, budget=4 * MIB, wait=0.2)
    other = deps.budget.reservation()  # another message, still receiving, holds it all
    assert other.take(4 * MIB)
    start = time.monotonic()
    out = run(deps, HTML_MSG)
    assert time.monotonic() - start >= 0.2
    assert not out.replaced and sink.events[-1].skip_reason == "busy"
    assert "X-Trackmilter-ID" in out.headers
    assert get(deps, "trackmilter_milter_memory_waits_total") == 1
    other.release()
    assert deps.budget.in_flight == 0
    out = run(deps, HTML_MSG)
    assert out.replaced


def test_bodies_never_rewritten_are_not_kept() -> None:
    sink = ListSink()
    for deps in (deps_with(sink, base_url=""), deps_with(sink, rewrite_links=False,
                                                         open_pixel=False)):
        ctx = started(deps, big(100_000))
        assert deps.budget.in_flight == 0
        ctx._close()
    deps = deps_with(sink)
    ctx = started(deps, b"X-Trackmilter-ID: abcdefghijklmnop\r\n" + big(100_000))
    assert deps.budget.in_flight == 0  # already tracked: passes as it is
    ctx._close()


def test_report_kept_within_the_budget_or_counted_busy() -> None:
    seen: list[bytes] = []
    sink = ListSink()
    deps = _queue(sink, seen, deps_with(sink))
    run(deps, BOUNCE, sender="<>", ip="192.0.2.7")
    assert deps.reports is not None
    deps.reports.close()
    assert len(seen) == 1 and deps.budget.in_flight == 0

    # A bounce whose reservation (3x its body) is more than the whole budget.
    seen.clear()
    sink = ListSink()
    deps = _queue(sink, seen, deps_with(sink, budget=MIB))
    huge = BOUNCE.replace(b"sorry\r\n", b"sorry\r\n" + (b"y" * 76 + b"\r\n") * 5000)
    assert len(huge) * budget_mod.REPORT_FACTOR > MIB and len(huge) < 1024 * 1024
    run(deps, huge, sender="<>", ip="192.0.2.7")
    deps.reports.close()  # type: ignore[union-attr]
    assert seen == [] and sink.events[0].skip_reason == "inbound"
    assert get(deps, "trackmilter_reports_skipped_total", reason="busy") == 1
    assert deps.budget.in_flight == 0


def test_budget_zero_means_no_limit() -> None:
    sink = ListSink()
    deps = deps_with(sink, budget=0)
    out = run(deps, big(300_000))
    assert out.replaced and deps.budget.in_flight == 0


def test_deps_share_one_budget_and_replace_builds_its_own() -> None:
    sink = ListSink()
    deps = deps_with(sink)
    assert deps.budget is deps.budget and deps.budget.limit == 256 * MIB
    other = replace(deps, settings=replace(deps.settings, milter=MilterSettings(
        memory_budget=2 * MIB)))
    assert other.budget is not deps.budget and other.budget.limit == 2 * MIB


class _Sink(ListSink):
    def submit(self, event: Any) -> None:
        self.events[:] = [event]


@pytest.mark.parametrize("gap", [0, 2000], ids=["dense-links", "sparse-links"])
@pytest.mark.parametrize("cte", bigmail.CTES)
def test_reservation_covers_the_measured_peak(cte: str, gap: int) -> None:
    """What a message reserves covers what it costs: tracemalloc's peak over the whole
    transaction (chunks, join, engine, link records), for each transfer encoding, with
    many links and with few (tests/benchmarks/bench_memory.py measures 10 MB bodies)."""
    sink = _Sink()
    deps = deps_with(sink, budget=0)
    raw, links = bigmail.body(cte, MIB, gap)
    m = bigmail.transaction_peak(deps, raw, links=links)
    assert m.rewritten and m.reserved > 0
    assert m.peak < 0.8 * m.reserved, (m.peak / m.body, m.reserved / m.body)
