"""Memory of one message through the milter, against what the memory budget reserves for it.

Run: python tests/benchmarks/bench_memory.py [--size-mb 10] [--gaps 0,40,200,2000]

For each transfer encoding of the HTML part and each link density (bytes of text after
each link), one outgoing transaction goes through a Session (libmilter's context calls
stubbed) under tracemalloc: the peak over the whole transaction (chunks as received, the
join, the engine, the LinkRecords) against the body size, and against the reservation of
trackmilter.mta.budget. A second table shows the engine alone (rewrite_message on a body
that already exists), which is what its own copies cost. Exits 1 when a reservation is
below the measured peak.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests.support
sys.path.insert(0, str(HERE.parents[1] / "milter"))
sys.path.insert(0, str(HERE.parents[1] / "lab"))  # the test lab (trackmilter_lab)

import structlog  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from tests.support import bigmail  # noqa: E402

from trackmilter.config import MilterSettings, Settings, TrackingSettings  # noqa: E402
from trackmilter.metrics import Metrics  # noqa: E402
from trackmilter.mta.session import Deps  # noqa: E402
from trackmilter.rewrite import RewriteOptions, rewrite_message  # noqa: E402
from trackmilter.tokens import Signer  # noqa: E402

BASE = "https://t.example.com"


class Sink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def submit(self, event: object) -> None:
        self.events = [event]  # keep the last only


def deps() -> Deps:
    settings = Settings(milter=MilterSettings(memory_budget=0, max_message_size=0),
                        tracking=TrackingSettings(base_url=BASE))
    return Deps(settings=settings, signer=Signer([b"k" * 32]), sink=Sink(),
                metrics=Metrics(CollectorRegistry()), log=structlog.get_logger("bench"))


def engine_peak(cte: str, size: int, gap: int) -> tuple[int, int, int]:
    """(body bytes, links, tracemalloc peak of rewrite_message above its input)."""
    raw, n = bigmail.body(cte, size, gap)
    sign = Signer([b"k" * 32]).for_message("abcdefghijklmnop")

    def linker(index: int, url: str) -> str:
        return f"{BASE}/c/{sign.click(index, url)}"

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    rewrite_message(bigmail.CONTENT_TYPE, None, raw, linker, f"{BASE}/o/x",
                    RewriteOptions(tracker_prefix=BASE + "/"))
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return len(raw), n, peak


def main() -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=10.0)
    ap.add_argument("--gaps", default="0,40,200,2000",
                    help="bytes of text after each link, comma-separated")
    args = ap.parse_args()
    size = int(args.size_mb * 1024 * 1024)
    gaps = [int(g) for g in args.gaps.split(",")]
    mb = 1024 * 1024
    ok = True
    print(f"{'cte':17} {'gap':>5} {'body MB':>8} {'links':>7} {'peak MB':>8} "
          f"{'x body':>7} {'reserved MB':>11} {'peak/res':>8} {'s':>5}")
    for cte in bigmail.CTES:
        for gap in gaps:
            raw, n = bigmail.body(cte, size, gap)
            t = time.perf_counter()
            m = bigmail.transaction_peak(deps(), raw, links=n)
            dt = time.perf_counter() - t
            del raw
            ratio = m.peak / m.reserved
            ok &= ratio < 1 and m.rewritten
            print(f"{cte:17} {gap:5} {m.body / mb:8.2f} {n:7} {m.peak / mb:8.1f} "
                  f"{m.peak / m.body:7.2f} {m.reserved / mb:11.1f} {ratio:8.2f} {dt:5.1f}")
    print("\nengine alone (rewrite_message, above its input):")
    print(f"{'cte':17} {'gap':>5} {'body MB':>8} {'links':>7} {'peak MB':>8} {'x body':>7}")
    for cte in bigmail.CTES:
        for gap in gaps:
            body, n, peak = engine_peak(cte, size, gap)
            print(f"{cte:17} {gap:5} {body / mb:8.2f} {n:7} {peak / mb:8.1f} {peak / body:7.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
