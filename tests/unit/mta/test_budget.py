"""The memory budget: reservations across threads, waiting, giving up, and deadlock breaking."""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry
from tests.support import poll

from trackmilter.metrics import Metrics
from trackmilter.mta.budget import (
    LINK_COST,
    REPORT_FACTOR,
    REWRITE_FACTOR,
    Budget,
    Reservation,
    link_marks,
    report_cost,
    rewrite_cost,
)

LONG = 30.0  # a wait that a passing test never sits through


def in_thread(fn: Callable[[], bool]) -> tuple[threading.Thread, list[bool]]:
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


def waiting(budget: Budget, r: Reservation) -> bool:
    with budget._cond:
        return r in budget._waiting


def test_take_and_release_are_counted_and_shown() -> None:
    m = Metrics(CollectorRegistry())
    b = Budget(100, 0, metrics=m)
    r = b.reservation()
    assert r.take(40) and r.take(60)
    assert b.in_flight == 100 and r.held == 100
    get = m.registry.get_sample_value
    assert get("trackmilter_milter_memory_reserved_bytes") == 100
    assert get("trackmilter_milter_memory_budget_bytes") == 100
    r.release()
    r.release()  # idempotent
    assert b.in_flight == 0 and get("trackmilter_milter_memory_reserved_bytes") == 0
    assert r.take(10)  # not refused: may take again


def test_more_than_the_whole_budget_gives_up_at_once() -> None:
    b = Budget(100, LONG)
    r = b.reservation()
    assert r.take(60)
    start = time.monotonic()
    assert not r.take(41)  # 101 > 100: no wait could ever make room
    assert time.monotonic() - start < LONG / 2
    assert r.refused and r.waited == 0
    assert not r.take(1)  # refused stays refused
    r.release()
    assert b.in_flight == 0


def test_waits_for_room_then_gives_up() -> None:
    m = Metrics(CollectorRegistry())
    b = Budget(100, 0.2, metrics=m)
    holder = b.reservation()
    assert holder.take(100)  # holds it all and keeps running (not waiting)
    r = b.reservation()
    start = time.monotonic()
    assert not r.take(10)
    assert time.monotonic() - start >= 0.2 and r.waited >= 0.2
    assert m.registry.get_sample_value("trackmilter_milter_memory_waits_total") == 1
    assert b.in_flight == 100
    holder.release()
    assert not r.take(1)  # its wait is spent: refused for good


def test_wait_is_per_message_in_all() -> None:
    b = Budget(100, 1.0)
    holder = b.reservation()
    assert holder.take(95)
    r = b.reservation()
    t, out = in_thread(lambda: r.take(10))
    poll(lambda: waiting(b, r), timeout=LONG, what="r waits")
    holder.release()
    t.join(LONG)
    assert out == [True] and 0 < r.waited < 1.0
    assert holder.take(90)  # full again
    r.waited = 0.9  # as if its earlier chunks had waited that long
    start = time.monotonic()
    assert not r.take(10)
    assert time.monotonic() - start < 0.5 and r.waited >= 1.0


def test_waiter_gets_room_when_a_holder_releases() -> None:
    b = Budget(100, LONG)
    holder = b.reservation()
    assert holder.take(80)
    r = b.reservation()
    t, out = in_thread(lambda: r.take(50))
    poll(lambda: waiting(b, r), timeout=LONG, what="r waits")
    holder.release()
    t.join(LONG)
    assert out == [True] and b.in_flight == 50


def test_oldest_waiter_that_fits_goes_first() -> None:
    b = Budget(100, LONG)
    holder = b.reservation()
    older, younger = b.reservation(), b.reservation()
    assert holder.take(100)
    t_young, young_out = in_thread(lambda: younger.take(60))
    poll(lambda: waiting(b, younger), timeout=LONG, what="younger waits")
    t_old, old_out = in_thread(lambda: older.take(60))
    poll(lambda: waiting(b, older), timeout=LONG, what="older waits")
    holder.release()
    t_old.join(LONG)
    assert old_out == [True]
    assert waiting(b, younger)  # 60 + 60 > 100: still waiting, behind the older one
    older.release()
    t_young.join(LONG)
    assert young_out == [True]


def test_when_every_holder_waits_the_youngest_gives_up_at_once() -> None:
    """Two messages each half-buffered, both wanting more than is left: waiting cannot help
    either. The younger gives up without waiting out its time; the older completes."""
    b = Budget(100, LONG)
    older, younger = b.reservation(), b.reservation()
    assert older.take(50) and younger.take(40)
    t, out = in_thread(lambda: older.take(30))
    poll(lambda: waiting(b, older), timeout=LONG, what="older waits")
    start = time.monotonic()
    assert not younger.take(30)
    assert time.monotonic() - start < LONG / 2 and younger.refused
    assert waiting(b, older)  # the younger still holds its 40 until its session drops them
    younger.release()
    t.join(LONG)
    assert out == [True] and b.in_flight == 80 and not older.refused


def test_the_victim_is_a_holder_not_a_newcomer_holding_nothing() -> None:
    """A newcomer waits too, but giving it up would free nothing: the youngest holder goes,
    and then both the oldest holder and the newcomer fit."""
    b = Budget(100, LONG)
    oldest, holder, newcomer = b.reservation(), b.reservation(), b.reservation()
    assert oldest.take(50) and holder.take(40)
    t_new, new_out = in_thread(lambda: newcomer.take(20))
    poll(lambda: waiting(b, newcomer), timeout=LONG, what="newcomer waits")
    t_old, old_out = in_thread(lambda: oldest.take(20))
    poll(lambda: waiting(b, oldest), timeout=LONG, what="oldest waits")
    assert not holder.take(20)  # now every holder waits and nothing fits
    assert holder.refused and not newcomer.refused and not oldest.refused
    holder.release()
    t_old.join(LONG)
    t_new.join(LONG)
    assert old_out == [True] and new_out == [True] and b.in_flight == 90


def test_unlimited_counts_without_limit() -> None:
    b = Budget(0, 0)
    r = b.reservation()
    assert r.take(10**12) and b.in_flight == 10**12
    r.release()
    assert b.in_flight == 0


@pytest.mark.parametrize("threads", [16])
def test_many_threads_never_exceed_the_budget_and_all_is_released(threads: int) -> None:
    limit = 10_000
    over: list[int] = []

    class Checked(Budget):
        def _grant(self, r: Reservation, n: int) -> None:
            super()._grant(r, n)
            if self._used > self.limit:
                over.append(self._used)

    b = Checked(limit, 0.02)
    outcomes = {"done": 0, "gave_up": 0}
    lock = threading.Lock()

    def session(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(60):
            r = b.reservation()
            ok = True
            for _ in range(rng.randint(1, 6)):
                if not r.take(rng.randint(1, 2_500)):
                    ok = False
                    break
            r.release()
            with lock:
                outcomes["done" if ok else "gave_up"] += 1

    workers = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(LONG)
    assert not any(w.is_alive() for w in workers)
    assert over == []
    assert b.in_flight == 0 and b._holders == 0 and b._waiting == []
    assert outcomes["done"] + outcomes["gave_up"] == threads * 60 and outcomes["done"] > 0


def test_costs() -> None:
    chunk = b'<a href="https://a.example/x">x</a> and http://b.example/ ' * 3
    assert link_marks(chunk) == 6
    assert rewrite_cost(chunk) == REWRITE_FACTOR * len(chunk) + LINK_COST * 6
    assert report_cost(chunk) == REPORT_FACTOR * len(chunk)
    # A link in base64 shows at any of the three alignments.
    for pad in (b"", b"a", b"ab"):
        encoded = base64.b64encode(pad + b"see https://x.example/ now")
        assert link_marks(encoded) == 1, (pad, encoded)


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Budget(-1, 0)
    with pytest.raises(ValueError):
        Budget(1, -1)
