"""Benchmark: how fast the SQLite store grows, per message and per tracker hit.

    python tests/benchmarks/bench_store_growth.py [--messages 20000] [--hits 40000]
        [--links 12] [--recipients 1] [--warmup 0.2]

Writes realistic events through `trackmilter.store.SQLStore` at default settings (a fresh
SQLite file made by `db upgrade`'s migrations, the daemons' batch size, the tracker's
reviser), then prints bytes of database file per message and per hit, and what a million
of each costs. The figures are slopes between two measurements (after the warm-up share
and at the end, each after a WAL checkpoint), so the empty schema does not count.

- A **message** is what the milter records for one outgoing newsletter copy: `--recipients`
  accepted recipients, `--links` rewritten links of realistic length, the pixel, the
  tracking header, the default `[milter] record_headers` (x-campaign); plus what
  `trackmilter maillog` adds for it: one delivery line per recipient (`sent`, 2.0.0, the
  remote server's reply verbatim).
- A **hit** is an open or a click as `trackmilter web` stores it: the hits of the verdict
  scenario set (tests/data/verdicts) answered by the real TrackerApp, with their kept
  request headers, verdict and reasons, re-addressed to the messages written before, and
  revised by the store's reviser as the tracker's store does (hit_verdicts rows).

Only the database file is measured: the spool (`[store] spool_dir`) is emptied as the
database takes the events, and a purge frees pages that SQLite reuses (the file does not
shrink without VACUUM).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # tests.support when run as a script
sys.path.append(str(REPO / "milter"))  # a checkout without installing (PYTHONPATH wins)
sys.path.append(str(REPO / "lab"))

import tests.support.verdict_scenarios as scenarios  # noqa: E402

from trackmilter import logging as tmlog  # noqa: E402
from trackmilter.config import load  # noqa: E402
from trackmilter.judging import reviser_from  # noqa: E402
from trackmilter.model import (  # noqa: E402
    DeliveryObserved,
    DeliveryStatus,
    Direction,
    EndReason,
    Event,
    HitRecorded,
    LinkRecord,
    MessageRecorded,
    RcptOutcome,
    RecipientRecord,
)
from trackmilter.store import SQLStore  # noqa: E402
from trackmilter.store.migrate import upgrade  # noqa: E402

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
# Newsletter links as they are sent: tracking parameters included (70-110 characters).
PATHS = ["spring-sale/shoes", "blog/2026/03/how-we-ship", "account/preferences",
         "products/kettle-1.7l-stainless", "stores/near-me", "help/returns"]


def tracking_id(n: int) -> str:
    """The milter's form: 10 bytes in 16 lower-case base32 characters (here: n, distinct)."""
    return base64.b32encode(n.to_bytes(10, "big")).decode("ascii").lower()


def message(n: int, links: int, recipients: int) -> list[Event]:
    """What the milter records for message n, and the delivery lines the log follower adds."""
    start = T0 + timedelta(seconds=n)
    rcpts = tuple(f"reader{n * recipients + r:07d}@mail{(n + r) % 97}.example.net"
                  for r in range(recipients))
    qid = f"4T{n:09X}"[-11:]
    msg = MessageRecorded(
        tracking_id=tracking_id(n), direction=Direction.OUTGOING, end=EndReason.QUEUED,
        sender="newsletter@shop.example.com", started_at=start,
        finished_at=start + timedelta(milliseconds=180),
        recipients=tuple(RecipientRecord(a, RcptOutcome.ACCEPTED, at=start) for a in rcpts),
        queue_id=qid, message_id=f"<20260302080000.{n:08d}@shop.example.com>",
        client_addr="192.0.2.10", client_name="app1.shop.example.com",
        auth_user="newsletter", helo="app1.shop.example.com", size=48_213, rewritten=True,
        pixel=True, tracking_header=True, mta="mx1.shop.example.com",
        links=tuple(LinkRecord(i, f"https://www.shop.example.com/{PATHS[i % len(PATHS)]}"
                               f"?utm_source=newsletter&utm_medium=email&utm_campaign="
                               f"spring-2026&utm_content=link{i}")
                    for i in range(1, links + 1)),
        headers=(("x-campaign", "spring-2026"),),
    )
    sent = [DeliveryObserved(
        queue_id=qid, recipient=a, status=DeliveryStatus.SENT, at=start + timedelta(seconds=3),
        dsn="2.0.0", relay=f"mx.mail{(n + r) % 97}.example.net[198.51.100.{r + 7}]:25",
        text=f"250 2.0.0 OK  1772438400 d9443c01a7336-{n:08x}si.{r} - gsmtp",
        mta="mx1.shop.example.com", transport="smtp") for r, a in enumerate(rcpts)]
    return [msg, *sent]


def hit_templates() -> list[HitRecorded]:
    """The hits the real tracker records for the verdict scenario set (every client
    profile there: people's browsers and mail apps, Apple's and Google's proxies, link
    scanners), as it hands them to its writer."""
    captured: list[HitRecorded] = []

    class Capture(scenarios._Sink):
        def submit(self, event: Any) -> None:
            super().submit(event)
            captured.append(event)

    scenarios._Sink = Capture  # type: ignore[misc]  # the replay's own sink, observed
    scenarios.replay()
    if not captured:
        raise SystemExit("the verdict scenario replay recorded no hit")
    return captured


def hit(n: int, template: HitRecorded, messages: int) -> HitRecorded:
    m = (n * 7919) % messages  # spread over the messages written before
    return dataclasses.replace(template, hit_id=f"{n:032x}", tracking_id=tracking_id(m),
                               at=T0 + timedelta(seconds=m, minutes=5 + n % 600))


def db_bytes(path: Path) -> int:
    """The database file's size once the WAL is folded into it."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def grow(store: SQLStore, path: Path, count: int, warmup: int, batch: int,
         make: Callable[[int], Sequence[Event]]) -> tuple[float, float]:
    """(bytes per item, seconds) between item `warmup` and item `count`."""
    pending: list[Event] = []
    size0 = 0
    started = time.perf_counter()
    for n in range(count):
        if n == warmup:
            if pending:
                store.write(pending)
                pending = []
            size0 = db_bytes(path)
            started = time.perf_counter()
        pending.extend(make(n))
        if len(pending) >= batch:
            store.write(pending)
            pending = []
    if pending:
        store.write(pending)
    return (db_bytes(path) - size0) / (count - warmup), time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--hits", type=int, default=40_000)
    ap.add_argument("--links", type=int, default=12, help="rewritten links per message")
    ap.add_argument("--recipients", type=int, default=1, help="recipients per message")
    ap.add_argument("--warmup", type=float, default=0.2,
                    help="share of each phase written before the first measurement")
    args = ap.parse_args(argv)
    tmlog.configure("json", "warning")  # not a line per replayed hit
    settings = load(None, environ={})  # every default
    batch = settings.store.batch_size
    templates = hit_templates()
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp:
        path = Path(tmp) / "trackmilter.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        empty = db_bytes(path)
        store = SQLStore(url, reviser=reviser_from(settings),
                         statement_timeout=settings.database.statement_timeout)
        try:
            per_msg, t_msg = grow(store, path, args.messages, int(args.messages * args.warmup),
                                  batch, lambda n: message(n, args.links, args.recipients))
            per_hit, t_hit = grow(
                store, path, args.hits, int(args.hits * args.warmup), batch,
                lambda n: [hit(n, templates[n % len(templates)], args.messages)])
        finally:
            store.close()
        with sqlite3.connect(path) as conn:
            revisions = conn.execute("SELECT count(*) FROM hit_verdicts").fetchone()[0]
            stored = conn.execute("SELECT count(*) FROM hits").fetchone()[0]
            kept = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        total = path.stat().st_size
    if (kept, stored) != (args.messages, args.hits):  # a duplicate id would be stored once
        print(f"stored {kept} messages and {stored} hits of {args.messages} and {args.hits}",
              file=sys.stderr)
        return 1
    print(f"SQLite {sqlite3.sqlite_version}, batches of {batch} events, empty schema "
          f"{empty / 1024:.0f} KiB, at the end {total / 2**20:.1f} MiB")
    print(f"message ({args.recipients} recipient(s) with a delivery line each, {args.links} "
          f"links): {per_msg:,.0f} bytes -> {per_msg / 1000:.2f} GB per million messages "
          f"({args.messages} written, {args.messages / t_msg:,.0f}/s)")
    print(f"hit ({len(templates)} kinds from the verdict scenarios, {revisions} revisions "
          f"for {stored} hits): {per_hit:,.0f} bytes -> {per_hit / 1000:.2f} GB per million "
          f"hits ({args.hits} written, {args.hits / t_hit:,.0f}/s)")
    print(f"per 1,000: {per_msg:,.0f} KB of messages, {per_hit:,.0f} KB of hits "
          "(KB = 1,000 bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
