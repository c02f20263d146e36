"""Benchmark: the verdict scenario set (tests/data/verdicts/) replayed end to end, beside the
in-process replay (tests/support/verdict_scenarios.py).

    python tests/benchmarks/bench_verdicts.py [--gap-cap 60] [--keep DIR] [--only TEXT]

On loopback it starts a fake remote MX, a private Postfix with `trackmilter milter` (unix
socket), `trackmilter maillog` following Postfix's log, and `trackmilter web`; the
configuration is the set's as an administrator would write it: [networks] sources (one
labelled `cidr` list per provider, documentation prefixes standing in for the published
ranges), [web] trusted_proxies = the proxy at 127.0.0.1 (X-Forwarded-For), [verdict]
defaults. Every scenario is one message (its links in document order) sent through Postfix;
the signed links are taken from what the fake MX received. Each hit is requested with the
headers its client sends plus the proxy's X-Forwarded-For, at its time after the message's
REAL delivery (when the fake MX accepted it; `maillog` records the same delivery from
Postfix's log).

Time: offsets are kept as they are up to --gap-cap seconds; a longer quiet gap (delivery to
first hit, or between two hits of a message) is shortened to --gap-cap, so a person's click
two hours later comes --gap-cap seconds after the hit before it. With the default 60 s,
everything the verdict measures today (30 s after delivery, 10 s bursts) is replayed in real
time. A hit before delivery (an inline gateway) is made at delivery: the links are known
only from what the fake MX received. Hits of all messages interleave on one timeline.

Then it waits until every hit is stored, every delivery recorded and the stored verdicts are
what the reviser gives on the stored evidence (the revisions have settled; at most
--settle-timeout s), and prints machine precision (P), machine recall (R) and people kept
(K) per class, for first answers (the verdict the tracker answered with: `request_verdict`
of each hit, cross-checked against `trackmilter_tracker_hits_total` on /metrics) and final
answers (the stored verdict after revisions), beside the in-process figures. Exit 1 when
the end-to-end run could not replay or store every hit; the targets are reported, not
enforced (tests/unit/test_verdict_scenarios.py enforces them in process).

BEFORE (the model as committed at d770a64; full output in
tests/data/verdicts/results/before.txt), 216 hits, 93 people, 123 machines:

| answer | machine precision | machine recall | people kept |
|---|---|---|---|
| first, in process / end to end | 0.79 / 0.79 | 0.42 / 0.42 | 0.85 / 0.85 |
| final, in process / end to end | 0.55 / 0.55 | 0.47 / 0.47 | 0.48 / 0.48 |

AFTER (the evidence model; tests/data/verdicts/results/after.txt), same set:

| answer | machine precision | machine recall | people kept |
|---|---|---|---|
| first, in process / end to end | 1.00 / 1.00 | 0.93 / 0.93 | 1.00 / 1.00 |
| final, in process / end to end | 1.00 / 1.00 | 1.00 / 1.00 | 1.00 / 1.00 |

The first answers it still gets wrong (8): a sandbox clicking every link of a message with a
person's exact browser requests, and its pixel load; only the revision, which knows the
message's link count, can see that every link was followed.
"""

from __future__ import annotations

import argparse
import dataclasses
import email
import email.policy
import heapq
import ipaddress
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "milter"), str(REPO / "lab")]

from tests.support.verdict_scenarios import (  # noqa: E402
    BASE_URL,
    Judged,
    Replay,
    Scenario,
    ScenarioHit,
    ScenarioSet,
    config_sections,
    format_report,
    link_url,
    load,
    meets_targets,
    replay,
    request_headers,
)

from trackmilter.tokens import Signer  # noqa: E402
from trackmilter_lab import FakeMX, PostfixInstance, free_port, make_socket_dir, send  # noqa: E402
from trackmilter_lab.daemon import command, milter_process, write_config  # noqa: E402
from trackmilter_lab.postfix import postfix_available, wait_until  # noqa: E402
from trackmilter_lab.webproc import request, web_process  # noqa: E402

TOKEN_RE = re.compile(re.escape(BASE_URL) + r"(/[co]/[A-Za-z0-9_-]+)")


@dataclass(order=True)
class Planned:
    due: float  # wall-clock time.time() at which to make the request
    seq: int
    scenario: Scenario = field(compare=False)
    index: int = field(compare=False)  # the hit's place in scenario.hits
    path: str = field(compare=False)
    shifted: float = field(compare=False)  # seconds after delivery it is really made


@dataclass
class Sent:
    planned: Planned
    status: int = 0
    at: float = 0.0
    error: str = ""


def compressed_offsets(hits: Sequence[ScenarioHit], cap: float) -> list[float]:
    """Each hit's offset after delivery once quiet gaps longer than `cap` are shortened to
    `cap` (hits before delivery are made at delivery), in the hits' order."""
    order = sorted(range(len(hits)), key=lambda i: hits[i].t)
    out = [0.0] * len(hits)
    prev_t, prev_s = 0.0, 0.0
    for i in order:
        t = max(hits[i].t, 0.0)
        prev_s += min(t - prev_t, cap)
        prev_t = t
        out[i] = prev_s
    return out


def newsletter(scenario: Scenario, to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Shop <news@example.com>"
    msg["To"] = to
    msg["Subject"] = f"Scenario {scenario.id}"
    msg.set_content(f"{scenario.description}\n")
    items = "\n".join(f'<p><a href="{link_url(scenario, i)}">Item {i}</a></p>'
                      for i in range(1, scenario.links + 1))
    msg.add_alternative(f"<html><body><p>{scenario.description}</p>\n{items}\n</body></html>\n",
                        subtype="html", cte="quoted-printable")
    return msg.as_bytes(policy=email.policy.SMTP)


class Rig:
    def __init__(self, data: ScenarioSet, workdir: Path) -> None:
        self.data = data
        self.workdir = workdir
        self.port = free_port()
        self.sockdir = make_socket_dir()
        sock = self.sockdir / "trackmilter.sock"
        extra = config_sections(data, workdir)
        extra["web"].update({"listen": f"127.0.0.1:{self.port}", "name": "bench"})
        extra["maillog"] = {"state_file": str(workdir / "tm" / "maillog.state"),
                            "metrics_listen": "", "mta_name": "lab.example",
                            "poll_interval": 0.1}
        self.config = write_config(workdir / "tm", sock, extra=extra)
        self.signer = Signer.from_file(workdir / "tm" / "secret")
        self.stops: list[Any] = []
        self.mx = FakeMX()
        self.mx.start()
        self.stops.append(self.mx.stop)
        self.milter = milter_process(self.config, sock).start()
        self.stops.append(self.milter.stop)
        self.postfix = PostfixInstance(milter=self.milter.spec, relay_port=self.mx.port)
        self.postfix.start()
        self.stops.append(self._stop_postfix)
        self.web = web_process(self.config, self.port).start()
        self.stops.append(self.web.stop)
        self._maillog_out = open(workdir / "maillog-follower.log", "wb")  # noqa: SIM115
        self.maillog = subprocess.Popen(
            command(self.config, "maillog", str(self.postfix.log_path)),
            stdout=self._maillog_out, stderr=subprocess.STDOUT)
        self.stops.append(self._stop_maillog)

    def _stop_postfix(self) -> None:
        self.postfix.stop()
        try:
            shutil.copy(self.postfix.log_path, self.workdir / "postfix.maillog")
        finally:
            self.postfix.cleanup()

    def _stop_maillog(self) -> None:
        self.maillog.send_signal(signal.SIGTERM)
        try:
            self.maillog.wait(30)
        except subprocess.TimeoutExpired:
            self.maillog.kill()
            self.maillog.wait(10)
        self._maillog_out.close()

    def close(self) -> None:
        for stop in reversed(self.stops):
            try:
                stop()
            except Exception as e:  # noqa: BLE001 - stop the rest all the same
                print(f"stopping: {e!r}", file=sys.stderr)
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def send(self, n: int, scenario: Scenario) -> tuple[str, float, list[str], str]:
        """Send the scenario's message; (tracking id, delivery time, click paths in document
        order, pixel path) from what the fake MX accepted."""
        before = len(self.mx.messages)
        to = f"s{n}@example.net"
        refused = send("127.0.0.1", self.postfix.smtp_port, "news@example.com", [to],
                       newsletter(scenario, to))
        if refused:
            raise RuntimeError(f"{scenario.id}: refused {refused}")
        got = self.mx.wait_for(
            lambda ms: [m for m in ms[before:] if to in m.recipients], timeout=60)[0]
        parsed = email.message_from_bytes(got.data, policy=email.policy.default)
        html = parsed.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
        paths = TOKEN_RE.findall(html)
        clicks = [p for p in paths if p.startswith("/c/")]
        opens = [p for p in paths if p.startswith("/o/")]
        if len(clicks) != scenario.links or len(opens) != 1:
            raise RuntimeError(f"{scenario.id}: {len(clicks)} links, {len(opens)} pixels")
        for i, path in enumerate(clicks, 1):  # link i of the document is the i-th token
            data = self.signer.verify(path[3:])
            if (data.index, data.url) != (i, link_url(scenario, i)):
                raise RuntimeError(f"{scenario.id}: link {i} signed as {data}")
        return str(parsed["X-Trackmilter-ID"]), got.received_at, clicks, opens[0]


def fire(rig: Rig, item: Planned) -> Sent:
    hit = item.scenario.hits[item.index]
    out = Sent(item)
    try:
        out.at = time.time()
        out.status = request(rig.port, item.path, method=hit.client.method,
                             headers=dict(request_headers(hit, rig.data)))[0]
    except OSError as e:
        out.error = repr(e)
    return out


def run(data: ScenarioSet, rig: Rig, cap: float) -> tuple[dict[str, Scenario], list[Sent]]:
    """Send every message and make every hit on its (compressed) timeline."""
    heap: list[Planned] = []
    lock = threading.Condition()
    sent: list[Sent] = []
    done_sending = threading.Event()
    by_tid: dict[str, Scenario] = {}

    def dispatcher() -> None:
        # Each hit is handed to a worker when it is due (the replay's clock, not a wait
        # for anything to happen): a message sent later may bring hits due sooner.
        with ThreadPoolExecutor(max_workers=16) as pool:
            futures = []
            while True:
                with lock:
                    while True:
                        now = time.time()
                        if heap and heap[0].due <= now:
                            item: Planned | None = heapq.heappop(heap)
                            break
                        if not heap and done_sending.is_set():
                            item = None
                            break
                        lock.wait(min(heap[0].due - now, 0.5) if heap else 0.5)
                if item is None:
                    break
                futures.append(pool.submit(fire, rig, item))
            sent.extend(f.result() for f in futures)

    thread = threading.Thread(target=dispatcher, name="hits")
    thread.start()
    seq = 0
    try:
        for n, scenario in enumerate(data.scenarios):
            tid, delivered, clicks, pixel = rig.send(n, scenario)
            by_tid[tid] = scenario
            offsets = compressed_offsets(scenario.hits, cap)
            with lock:
                for i, hit in enumerate(scenario.hits):
                    path = clicks[hit.link - 1] if hit.target == "click" else pixel
                    heapq.heappush(heap, Planned(delivered + offsets[i], seq, scenario, i,
                                                 path, offsets[i]))
                    seq += 1
                lock.notify()
    finally:
        done_sending.set()
        with lock:
            lock.notify()
        thread.join()
    return by_tid, sent


# --- reading the store -----------------------------------------------------------------------

def stored_state(config: Path, tids: Sequence[str]) -> tuple[list[Any], dict[str, datetime]]:
    from sqlalchemy import and_, create_engine, select

    from trackmilter import config as cfgmod
    from trackmilter.store.schema import events, hits, messages

    settings = cfgmod.load(config)
    engine = create_engine(settings.database.url)
    try:
        with engine.connect() as conn:
            rows = list(conn.execute(select(hits).where(hits.c.tracking_id.in_(list(tids)))
                                     .order_by(hits.c.at, hits.c.id)))
            accepted: dict[str, datetime] = {}
            query = (select(messages.c.tracking_id, events.c.at)
                     .join(events, events.c.message == messages.c.id)
                     .where(messages.c.tracking_id.in_(list(tids)),
                            and_(events.c.kind == "delivery", events.c.status == "sent")))
            for tid, at in conn.execute(query):
                if tid not in accepted or at < accepted[tid]:
                    accepted[tid] = at
    finally:
        engine.dispose()
    return rows, accepted


def settled(config: Path, rows: Sequence[Any], accepted: Mapping[str, datetime],
            links: Mapping[str, int]) -> list[str]:
    """Hits whose stored verdict is not what the reviser gives on the stored evidence (the
    delivery time, the message's link count; the revisions have not caught up yet); empty
    once settled."""
    from trackmilter import config as cfgmod
    from trackmilter.judging import reviser_from
    from trackmilter.model import HitReason, HitRecorded

    reviser = reviser_from(cfgmod.load(config))
    per: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        per[r.tracking_id].append(r)
    behind = []
    for tid, rs in per.items():
        recs = [HitRecorded(
            hit_id=r.hit_id, target=r.target, tracking_id=r.tracking_id, at=r.at, index=r.idx,
            url=r.url, client=r.client, network=r.network, method=r.method,
            user_agent=r.user_agent, headers=tuple((r.headers or {}).items()),
            honeypot=r.honeypot, verdict=r.verdict, tracker=r.tracker,
            reasons=tuple(HitReason(x["code"], x.get("evidence", ""), x.get("leans", ""))
                          for x in r.reasons or ())) for r in rs]
        judged = reviser(recs, accepted.get(tid), links.get(tid, 0))
        for r, (verdict, reasons) in zip(rs, judged, strict=True):
            if verdict != r.verdict or [x.code for x in reasons] != [
                    x["code"] for x in r.reasons or ()]:
                behind.append(r.hit_id)
    return behind


def collect(by_tid: Mapping[str, Scenario], rows: Sequence[Any]) -> tuple[Replay, list[str]]:
    """Each stored hit matched to its scenario hit (message, target, link, client, in time
    order): first = request_verdict, final = verdict."""
    out = Replay()
    problems = []
    queue: dict[tuple[str, str, int, str], list[Any]] = defaultdict(list)
    for r in rows:
        ip = ipaddress.ip_address(r.client) if r.client else None
        queue[(r.tracking_id, r.target, r.idx, str(ip))].append(r)
    for tid, scenario in by_tid.items():
        for i in sorted(range(len(scenario.hits)), key=lambda k: scenario.hits[k].t):
            hit = scenario.hits[i]
            key = (tid, hit.target, hit.link, str(ipaddress.ip_address(hit.ip)))
            if not queue.get(key):
                problems.append(f"{scenario.id} hit {i}: not stored")
                continue
            r = queue[key].pop(0)
            out.judged.append(Judged(
                scenario, hit, r.request_verdict,
                tuple(x["code"] for x in r.request_reasons or ()), r.verdict,
                tuple(x["code"] for x in r.reasons or ())))
    return out, problems


def metric_counts(port: int) -> Counter[str]:
    """trackmilter_tracker_hits_total by verdict, as /metrics says (first answers)."""
    body = request(port, "/metrics")[2].decode()
    out: Counter[str] = Counter()
    for line in body.splitlines():
        if line.startswith("trackmilter_tracker_hits_total{"):
            m = re.search(r'verdict="(\w+)"', line)
            if m:
                out[m.group(1)] += int(float(line.rsplit(" ", 1)[1]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--gap-cap", type=float, default=60.0,
                    help="longest quiet gap replayed as it is, seconds (default 60)")
    ap.add_argument("--settle-timeout", type=float, default=120.0)
    ap.add_argument("--keep", type=Path, help="work in DIR and keep it (logs, database)")
    ap.add_argument("--only", default="",
                    help="replay only scenarios whose class or id contains this (a quick check)")
    args = ap.parse_args(argv)
    if not postfix_available():
        print("Postfix is not installed: scripts/setup installs it", file=sys.stderr)
        return 2
    from trackmilter import logging as tmlog

    tmlog.configure("json", "warning")
    data = load()
    if args.only:
        data = dataclasses.replace(data, scenarios=tuple(
            s for s in data.scenarios if args.only in s.cls or args.only in s.id))
    started = time.time()
    inproc = replay(data)
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench-verdicts-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rig = Rig(data, workdir)
    try:
        by_tid, sent = run(data, rig, args.gap_cap)
        failed = [s for s in sent if s.error or s.status not in (200, 302)]
        late = sorted(s.at - s.planned.due for s in sent if not s.error)
        total = sum(len(s.hits) for s in data.scenarios)
        state: dict[str, Any] = {}

        def check() -> bool | None:
            rows, accepted = stored_state(rig.config, list(by_tid))
            state["rows"], state["accepted"] = rows, accepted
            if len(rows) < total - len(failed) or len(accepted) < len(by_tid):
                return None
            behind = settled(rig.config, rows, accepted,
                             {tid: sc.links for tid, sc in by_tid.items()})
            state["behind"] = behind
            return True if not behind else None

        try:
            wait_until(check, args.settle_timeout, interval=0.5, what="revisions settled")
            settle_note = "settled"
        except TimeoutError:
            settle_note = (f"NOT settled after {args.settle_timeout:.0f} s: "
                           f"{len(state.get('rows', []))}/{total} hits stored, "
                           f"{len(state.get('accepted', {}))}/{len(by_tid)} deliveries, "
                           f"{len(state.get('behind', []))} verdicts behind the reviser")
        e2e, problems = collect(by_tid, state.get("rows", []))
        metrics = metric_counts(rig.port)
    finally:
        rig.close()
    first = Counter(j.first for j in e2e.judged)
    shifted = sum(1 for s in data.scenarios for h, o in
                  zip(s.hits, compressed_offsets(s.hits, args.gap_cap), strict=True)
                  if abs(h.t - o) > 1e-9)
    print(f"verdict scenario set: {len(data.scenarios)} messages, {total} hits "
          f"({sum(h.human for _, h in data.hits())} people, "
          f"{sum(h.machine for _, h in data.hits())} machines)")
    print(f"end to end: real Postfix + milter + maillog + web; quiet gaps over "
          f"{args.gap_cap:.0f} s shortened to it ({shifted} hits moved earlier); "
          f"requests late by median {late[len(late) // 2] * 1000:.0f} ms, "
          f"max {late[-1] * 1000:.0f} ms; "
          f"{len(failed)} failed requests; {settle_note}; wall {time.time() - started:.0f} s")
    print(f"first answers on /metrics (trackmilter_tracker_hits_total): {dict(metrics)}; "
          f"from the hit records: {dict(first)}"
          + ("" if metrics == first else "  <- DIFFERENT"))
    for p in problems[:20]:
        print("  problem:", p)
    print()
    print(format_report(inproc, "in-process", {"end-to-end": e2e}, wrong=False))
    for name, r in (("in-process", inproc), ("end-to-end", e2e)):
        print(f"{name}: targets met, first {meets_targets(r.score('first'))}, "
              f"final {meets_targets(r.score('final'))}")
    diff = [(a, b) for a, b in zip(
        sorted(inproc.judged, key=_key), sorted(e2e.judged, key=_key), strict=False)
        if (a.first, a.final) != (b.first, b.final)]
    print(f"hits judged differently end to end than in process: {len(diff)}")
    for a, b in diff[:40]:
        print(f"  {a.scenario.id} t={a.hit.t:.1f} {a.hit.actor}: in-process {a.first}->"
              f"{a.final} [{','.join(a.final_reasons)}], end-to-end {b.first}->{b.final} "
              f"[{','.join(b.final_reasons)}]")
    print()
    print(format_report(e2e, "end-to-end"))
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed or problems or len(e2e.judged) != total else 0


def _key(j: Judged) -> tuple[str, float, str, int]:
    return (j.scenario.id, j.hit.t, j.hit.ip, j.hit.link)


if __name__ == "__main__":
    sys.exit(main())
