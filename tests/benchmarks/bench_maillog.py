"""Benchmark: per-recipient outcomes from a Postfix log, trackmilter's parser vs pflogsumm.

    python tests/benchmarks/bench_maillog.py [--lines 250000] [--rounds 5]

Synthesises a mixed log from the line shapes of the real Postfix 3.7 capture in
tests/unit/maillog/data (connect, client=, message-id, qmgr from/removed, sent, greylist
deferrals, 550 bounces with their non-delivery notices, NOQUEUE rejects, disconnect),
then times, on the same file and in alternating rounds:

- pflogsumm (Debian package `pflogsumm`) producing its report;
- `LineParser(kinds=OUTCOMES).scan` reading the file and tallying each recipient's
  latest outcome (the comparison with pflogsumm, which also only tallies), plus, for
  information: the daemon's whole per-block path up to the store's writer (chains,
  expiry, one DeliveryObserved event per recipient), every record kind, and `parse`
  called per line.

Prints lines/s side by side and the ratio (best round of each), and checks that our
outcome counts equal pflogsumm's grand totals (every recipient in the synthetic log is
unique, so they must). Exit status 1 when the counts differ or the outcome scan is below
5x pflogsumm, 2 when pflogsumm is not installed.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry

from trackmilter.maillog import OUTCOMES, Delivery, LineParser, Rejection
from trackmilter.maillog.daemon import KINDS, Queues, consume
from trackmilter.metrics import Metrics

T = TypeVar("T")
TARGET_RATIO = 5.0
REFERENCE = datetime(2026, 11, 28, tzinfo=UTC)

# Shapes of lines from tests/unit/maillog/data/postfix-3.7-lab.log, with the variable
# parts as format fields.
CONNECT = "postfix/smtpd[{pid}]: connect from {client}"
DISCONNECT = "postfix/smtpd[{pid}]: disconnect from {client} ehlo=1 mail=1 rcpt={n} data=1 quit=1 commands={c}"
CLIENT = "postfix/smtpd[{pid}]: {qid}: client={client}"
MESSAGE_ID = "postfix/cleanup[{pid}]: {qid}: message-id=<{mid}>"
QMGR_FROM = "postfix/qmgr[99]: {qid}: from=<{sender}>, size={size}, nrcpt={n} (queue active)"
REMOVED = "postfix/qmgr[99]: {qid}: removed"
SENT = "postfix/smtp[{pid}]: {qid}: to=<{to}>, relay={relay}, delay={delay}, delays=0.02/0.03/0/0.08, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {qid2})"
DEFERRED = "postfix/smtp[{pid}]: {qid}: to=<{to}>, relay={relay}, delay={delay}, delays=0.02/0.03/0/0.04, dsn=4.7.1, status=deferred (host {host} said: 450 4.7.1 <{to}>: Greylisted (try again later, in 1s), see https://g.example/?a=1,2 (in reply to RCPT TO command))"
BOUNCED = "postfix/smtp[{pid}]: {qid}: to=<{to}>, relay={relay}, delay={delay}, delays=0.02/0.03/0/0.08, dsn=5.1.1, status=bounced (host {host} said: 550 5.1.1 <{to}>: Recipient address rejected: User unknown (in virtual table, see: https://x.example/(a,b)) (in reply to RCPT TO command))"
NOTICE = "postfix/bounce[{pid}]: {qid}: sender non-delivery notification: {qid2}"
REJECT = "postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {client}: 554 5.7.1 <{to}>: Recipient address rejected: Recipient refused by policy; from=<{sender}> to=<{to}> proto=ESMTP helo=<[127.0.0.1]>"


class Synth:
    """A deterministic stream of messages, each written as the lines Postfix logs for it."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.second = 0
        self.lines: list[str] = []

    def qid(self) -> str:
        return "".join(self.rnd.choices("0123456789ABCDEF", k=11))

    def emit(self, shape: str, **fields: object) -> None:
        s = self.second
        stamp = f"Nov 27 {s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d} mx1 "
        self.lines.append(stamp + shape.format(**fields))

    def message(self) -> None:
        rnd = self.rnd
        self.second += rnd.random() < 0.3
        pid = rnd.randrange(1000, 30000)
        client = f"client{rnd.randrange(50)}.example.org[192.0.2.{rnd.randrange(1, 255)}]"
        sender = f"news{rnd.randrange(20)}@shop.example.org"
        self.emit(CONNECT, pid=pid, client=client)
        if rnd.random() < 0.05:
            to = f"user{len(self.lines)}@example.net"
            self.emit(REJECT, pid=pid, client=client, to=to, sender=sender)
            self.emit(DISCONNECT, pid=pid, client=client, n="0/1", c="4/5")
            return
        qid, n = self.qid(), rnd.choice((1, 1, 1, 2, 3))
        self.emit(CLIENT, pid=pid, qid=qid, client=client)
        self.emit(MESSAGE_ID, pid=pid + 1, qid=qid, mid=f"{rnd.getrandbits(60)}@example.org")
        self.emit(QMGR_FROM, qid=qid, sender=sender, size=rnd.randrange(2000, 90000), n=n)
        self.emit(DISCONNECT, pid=pid, client=client, n=n, c=4 + n)
        bounced = False
        for _ in range(n):
            to = f"user{len(self.lines)}@dom{rnd.randrange(300)}.example"
            host = f"mx.dom{rnd.randrange(300)}.example[203.0.113.{rnd.randrange(1, 255)}]"
            x = rnd.random()
            shape = SENT if x < 0.90 else DEFERRED if x < 0.96 else BOUNCED
            bounced = bounced or shape is BOUNCED
            self.emit(
                shape, pid=pid + 2, qid=qid, to=to, host=host, relay=host + ":25",
                delay=f"{rnd.random() * 3:.2f}", qid2=self.qid(),
            )  # fmt: skip
        if bounced:
            notice = self.qid()
            self.emit(MESSAGE_ID, pid=pid + 1, qid=notice, mid=f"{notice}@mx1.example.org")
            self.emit(QMGR_FROM, qid=notice, sender="", size=2465, n=1)
            self.emit(NOTICE, pid=pid + 3, qid=qid, qid2=notice)
            self.emit(
                SENT, pid=pid + 2, qid=notice, to=sender, relay="127.0.0.1[127.0.0.1]:25",
                delay="0.02", qid2=self.qid(),
            )  # fmt: skip
            self.emit(REMOVED, qid=notice)
        self.emit(REMOVED, qid=qid)


def synthesise(lines: int, seed: int = 7) -> str:
    synth = Synth(seed)
    while len(synth.lines) < lines:
        synth.message()
    return "\n".join(synth.lines[:lines]) + "\n"


def run_pflogsumm(pflogsumm: str, path: Path) -> str:
    done = subprocess.run([pflogsumm, str(path)], capture_output=True, text=True, check=True)
    return done.stdout


def outcomes_scan(path: Path) -> Counter[str]:
    """Each recipient's latest outcome, as `trackmilter maillog` tallies it."""
    latest: dict[tuple[str | None, str], str] = {}
    for r in LineParser(reference=REFERENCE, kinds=OUTCOMES).scan(path.read_text()):
        if type(r) is Delivery:
            latest[r.queue_id, r.recipients[0]] = r.status.value
        elif type(r) is Rejection:
            latest[r.queue_id, r.recipient or ""] = "rejected"
    return Counter(latest.values())


class _CountingSink:
    def __init__(self) -> None:
        self.n = 0

    def submit(self, event: object) -> None:
        self.n += 1


def daemon_events(path: Path) -> Counter[str]:
    """What `trackmilter maillog` does per block, up to handing events to the store's
    writer: parse, follow chains and expiry, build one DeliveryObserved per recipient."""
    sink = _CountingSink()
    metrics = Metrics(CollectorRegistry())
    consume(path.read_text(), LineParser(reference=REFERENCE, kinds=KINDS), Queues("bench"),
            sink, metrics)
    return Counter({"events": sink.n})


def all_kinds_scan(path: Path) -> Counter[str]:
    parser = LineParser(reference=REFERENCE)
    return Counter(type(r).__name__ for r in parser.scan(path.read_text()))


def per_line_parse(path: Path) -> Counter[str]:
    parser = LineParser(reference=REFERENCE)
    with path.open() as f:
        return Counter(type(r).__name__ for r in map(parser.parse, f) if r is not None)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def pflogsumm_totals(report: str) -> dict[str, int]:
    """The Grand Totals lines we can compare with our own counts."""
    totals = {}
    for key, label in (("sent", "delivered"), ("bounced", "bounced"), ("rejected", "rejected")):
        m = re.search(rf"^\s*(\d+)\s+{label}\b", report, re.MULTILINE)
        if m is not None:
            totals[key] = int(m[1])
    m = re.search(r"deferred\s+\((\d+)\s+deferrals\)", report)
    if m is not None:
        totals["deferred"] = int(m[1])
    return totals


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=250_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    pflogsumm = shutil.which("pflogsumm")
    if pflogsumm is None:
        print("pflogsumm is not installed: apt-get install -y pflogsumm", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-maillog-") as tmp:
        path = Path(tmp) / "maillog"
        path.write_text(synthesise(args.lines))
        ours: dict[str, list[float]] = {
            "outcomes": [], "daemon events": [], "all kinds": [], "parse per line": []}
        theirs: list[float] = []
        variants = {
            "outcomes": outcomes_scan,
            "daemon events": daemon_events,
            "all kinds": all_kinds_scan,
            "parse per line": per_line_parse,
        }
        report, counts = "", Counter[str]()
        for _ in range(args.rounds):
            seconds, report = timed(partial(run_pflogsumm, pflogsumm, path))
            theirs.append(seconds)
            for name, variant in variants.items():
                seconds, result = timed(partial(variant, path))
                ours[name].append(seconds)
                counts = result if name == "outcomes" else counts
    base = args.lines / min(theirs)
    print(f"{args.lines} lines, best of {args.rounds} rounds")
    print(f"  {'pflogsumm':<28} {base:>10,.0f} lines/s")
    for name, runs in ours.items():
        rate = args.lines / min(runs)
        print(f"  {'trackmilter ' + name:<28} {rate:>10,.0f} lines/s  {rate / base:5.1f}x")
    totals = pflogsumm_totals(report)
    print(f"  outcomes (latest per recipient): {dict(sorted(counts.items()))}")
    print(f"  pflogsumm grand totals:          {dict(sorted(totals.items()))}")
    if dict(counts) != totals:  # every recipient is unique in the synthetic log
        print("FAIL: our outcome counts differ from pflogsumm's totals")
        return 1
    ratio = args.lines / min(ours["outcomes"]) / base
    if ratio < TARGET_RATIO:
        print(f"FAIL: outcome scan is {ratio:.1f}x pflogsumm, target {TARGET_RATIO}x")
        return 1
    print(f"ok: outcome scan is {ratio:.1f}x pflogsumm (target {TARGET_RATIO}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
