"""Integration: a fleet on one PostgreSQL database (docs/fleet.md).

Two mail hosts, each a private Postfix with its own `trackmilter milter` ([milter]
mta_name mx1.lab.example / mx2.lab.example) and its own `trackmilter maillog` following
that Postfix's log; two tracker nodes under one base URL, `trackmilter web` and nginx's
edge with `trackmilter edge`; two `trackmilter webhooks` POSTing to a real receiver. Every
daemon has its own configuration file; they share the tracking key file and the database
(a fresh schema in $TRACKMILTER_TEST_PG_URL).

Mail goes out through both Postfix instances to one fake remote MX. Two messages collide
on queue id: the first is real Postfix mail on mx1 (Postfix's queue id, its real log line
followed from the file); the second is given the same queue id on mx2 by an MTA speaking
the milter protocol to mx2's milter (Debian's miltertest, as Postfix would with that
queue id: Postfix's ids cannot be chosen) while that milter's database relay is cut, and
mx2's `trackmilter maillog -` reads the Postfix lines of its delivery on standard input:
the line is stored before its message, and tied to it when mx2's milter replays its
journal, never to mx1's message. Links and pixels are requested through both
trackers, one recipient's four links across both within a second, each request a
person's Firefox navigation: no node alone sees a burst, the store's revision does.

Then mx2 loses the database again while a newsletter is delivered and its links are
followed through both trackers; once its milter replays the message, the milter's store
ties the delivery line and judges the hits again with what the message brings (the
trackers are stopped first: no other process can have done it).

Asserted: every message, delivery and hit stored once; each delivery tied to its own
message by (mta_name, queue id); the cross-node burst and every-link reasons on hits
answered by different nodes; `status --json` and `report --json` as sent; one webhook per
stored event (revisions included), each received once from one of two senders; no daemon
logged a warning it should not have.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select
from tests.support import poll
from tests.support.fleet import (
    Daemon,
    Receiver,
    fleet_config,
    log_problems,
    milter_transaction,
    new_key_file,
    pg_schema,
    postfix_lines,
    receiving,
)
from tests.support.lab import PostfixFactory
from tests.unit.store.store_helpers import PG_URL, SocketProxy, pg_target, via_proxy

from trackmilter import config as cfgmod
from trackmilter.store.schema import events, hit_verdicts, hits, messages, webhook_outbox
from trackmilter_lab import FakeMX, MilterProcess, PostfixInstance, child, edgeproc, free_port, send
from trackmilter_lab.daemon import BASE_URL, command, status
from trackmilter_lab.webproc import WebProcess, request, web_process

DATA = Path(__file__).resolve().parents[1] / "unit" / "web" / "data"
TOKEN_RE = re.compile(re.escape(BASE_URL) + r"(/[co]/[A-Za-z0-9_-]+)")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
# What Firefox sends when a person follows a link from webmail (trackmilter.navigation).
FIREFOX_NAV = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
               "Accept-Language": "en-US,en;q=0.5", "Sec-Fetch-Dest": "document",
               "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "cross-site",
               "Sec-Fetch-User": "?1"}
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
HTML = """<html><body><p>Hello,</p>
<p><a href="https://shop.example.org/offer?id=1&amp;src=mail">Our offer</a></p>
<p><a href="https://shop.example.org/account">Your account</a></p>
<p><a href="https://blog.example.org/news">News</a></p>
<p style="font-size: small"><a href="https://shop.example.org/unsubscribe">Unsubscribe</a></p>
</body></html>
"""
SENDER = "news@example.com"
MX = ("mx1.lab.example", "mx2.lab.example")
WEB, EDGE = "tracker-a.lab.example", "tracker-b.lab.example"
WEBHOOK_SECRET = b"fleet-webhook-secret-0123456789"
# Long enough that every hit of the test is "soon after delivery" once the store's revision
# knows the delivery time: a hit whose reasons say so has been revised from the store.
SOON = 900

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="TRACKMILTER_TEST_PG_URL is not set: the fleet "
                       "shares one PostgreSQL database (scripts/test makes one)"),
    pytest.mark.skipif(edgeproc.available() is not None,
                       reason=f"{edgeproc.available()}: scripts/setup installs it"),
    pytest.mark.skipif(shutil.which("miltertest") is None,
                       reason="miltertest is not installed: scripts/setup installs it"),
]


@dataclass
class Sent:
    """One message as the test sent it, and what the store must end up with."""

    host: str  # mta_name
    rcpt: str
    tracking_id: str = ""
    queue_id: str = ""
    clicks: list[str] = field(default_factory=list)
    pixel: str = ""
    outcome: str = "sent"


@dataclass
class Fleet:
    mx: FakeMX
    postfix: dict[str, PostfixInstance]
    configs: dict[str, Path]
    ports: dict[str, int]
    receiver: Receiver
    engine: Engine
    # mx2's milter reaches the database through this relay (the test cuts it).
    mx2_db: SocketProxy
    trackers: list[WebProcess | edgeproc.EdgeTracker]

    def newsletter(self, host: str, rcpt: str) -> Sent:
        msg = EmailMessage()
        msg["From"] = f"Shop <{SENDER}>"
        msg["To"] = rcpt
        msg["Subject"] = "This week"
        msg.set_content("Plain: https://shop.example.org/offer\n")
        msg.add_alternative(HTML, subtype="html", cte="quoted-printable")
        parsed = self._send(host, rcpt, msg)
        html = parsed.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
        paths = TOKEN_RE.findall(html)
        clicks = [p for p in paths if p.startswith("/c/")]
        opens = [p for p in paths if p.startswith("/o/")]
        assert len(clicks) == 4 and len(opens) == 1, html
        return Sent(host, rcpt, parsed["X-Trackmilter-ID"], clicks=clicks, pixel=opens[0])

    def receipt(self, host: str, rcpt: str) -> Sent:
        msg = EmailMessage()
        msg["From"] = SENDER
        msg["To"] = rcpt
        msg["Subject"] = "Your receipt"
        msg.set_content("Thank you for your order.\n")
        parsed = self._send(host, rcpt, msg)
        return Sent(host, rcpt, parsed["X-Trackmilter-ID"])

    def _send(self, host: str, rcpt: str, msg: EmailMessage) -> email.message.EmailMessage:
        pf = self.postfix[host]
        assert send("127.0.0.1", pf.smtp_port, SENDER, [rcpt],
                    msg.as_bytes(policy=email.policy.SMTP)) == {}
        got = self.mx.wait_for(lambda ms: [m for m in ms if rcpt in m.recipients], timeout=60)
        return email.message_from_bytes(got[-1].data, policy=email.policy.default)

    def hit(self, node: str, path: str, client: str, ua: str, **headers: str) -> int:
        h = {"X-Forwarded-For": client, "User-Agent": ua, **headers}
        return request(self.ports[node], path, headers=h)[0]

    def status(self, ident: str, via: str = "mx1") -> list[dict[str, Any]]:
        return status(self.configs[via], ident)

    def message(self, tracking_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(messages).where(
                messages.c.tracking_id == tracking_id)).one_or_none()

    def rows(self, table: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(table)))


def codes(h: Any) -> set[str]:
    return {r["code"] for r in (h["reasons"] if isinstance(h, dict) else h.reasons) or ()}


@pytest.fixture
def fleet(fake_mx: FakeMX, postfix_lab: PostfixFactory, socket_dir: Path,
          tmp_path: Path) -> Iterator[Fleet]:
    with ExitStack() as stack:
        db_url = stack.enter_context(pg_schema(PG_URL))
        receiver = stack.enter_context(receiving(WEBHOOK_SECRET))
        key = new_key_file(tmp_path / "common" / "tracking.key")
        hook_secret = tmp_path / "common" / "webhook.secret"
        hook_secret.write_text(WEBHOOK_SECRET.decode() + "\n")
        common: dict[str, dict[str, Any]] = {
            # Every daemon that stores events puts what the endpoint wants in the outbox.
            "webhooks": {"endpoints": [{"url": receiver.url, "secret_file": str(hook_secret)}],
                         "metrics_listen": "", "timeout": 5.0, "backoff_initial": 0.2},
            "verdict": {"soon_after_delivery": SOON},
            "networks": {"sources": [{"label": "apple-mpp", "format": "apple-csv",
                                      "path": str(DATA / "apple-egress.csv")}]},
        }
        configs: dict[str, Path] = {}
        postfix: dict[str, PostfixInstance] = {}
        followers: dict[str, Daemon] = {}
        proxy = SocketProxy(pg_target(PG_URL))
        proxy.up()
        stack.callback(proxy.close)  # after mx2's milter has stopped (callbacks run LIFO)
        for n, name in enumerate(MX, 1):
            sock = socket_dir / f"mx{n}.sock"
            cfg = fleet_config(tmp_path / f"mx{n}", db_url=db_url, key_file=key, extra={
                **common,
                "milter": {"socket": f"unix:{sock}", "mta_name": name},
                "maillog": {"mta_name": name, "metrics_listen": "", "poll_interval": 0.1,
                            "state_file": str(tmp_path / f"mx{n}" / "maillog.state")},
            })
            configs[f"mx{n}"] = cfg
            if n == 1:  # the schema, once, before any daemon starts
                subprocess.run(command(cfg, "db", "upgrade"), check=True, capture_output=True,
                               timeout=120)
            # mx2's milter (only it) goes through the relay: its environment overrides the
            # file's [database] url.
            env = {**os.environ, "TRACKMILTER_DATABASE_URL": via_proxy(db_url, proxy)} \
                if n == 2 else None
            milter = MilterProcess(command(cfg, "milter"), sock, env=env,
                                   log_path=cfg.parent / "milter.log").start()
            stack.callback(milter.stop)
            postfix[name] = postfix_lab(milter=milter.spec, myhostname=name)
            follower = Daemon(cfg, "maillog", str(postfix[name].log_path),
                              log_path=cfg.parent / "maillog.log").start()
            stack.callback(follower.stop)
            followers[name] = follower

        ports = {"web": free_port(), "edge": free_port()}
        edge_metrics = free_port()
        # The load balancer's address (loopback here) is believed: X-Forwarded-For names
        # the reader (the edge's nginx: set_real_ip_from, below).
        configs["web"] = fleet_config(tmp_path / "web", db_url=db_url, key_file=key, extra={
            **common, "web": {"listen": f"127.0.0.1:{ports['web']}", "name": WEB,
                              "trusted_proxies": ["127.0.0.1/32"]}})
        configs["edge"] = fleet_config(tmp_path / "edge", db_url=db_url, key_file=key, extra={
            **common, "web": {"name": EDGE},
            "edge": {"log": str(tmp_path / "edge" / "hits.log"), "poll_interval": 0.1,
                     "state_file": str(tmp_path / "edge" / "edge.state"),
                     "metrics_listen": f"127.0.0.1:{edge_metrics}"}})
        configs["hooks"] = fleet_config(tmp_path / "hooks", db_url=db_url, key_file=key,
                                        extra=common)
        web = web_process(configs["web"], ports["web"]).start()
        stack.callback(web.stop)
        settings = cfgmod.load(configs["edge"])
        # As shipped: nginx buffers its hit log (64k, flushed every second).
        nginx = edgeproc.EdgeNginx(tmp_path / "edge" / "nginx", ports["edge"], key,
                                   settings.edge.log, real_ip_from=("127.0.0.1",))
        edge = edgeproc.EdgeTracker(configs["edge"], nginx, edge_metrics)
        stack.callback(edge.stop)
        edge.start()
        # Two senders of the one outbox, as on two hosts: each row is claimed by one.
        hooks = [Daemon(configs["hooks"], "webhooks",
                        log_path=tmp_path / "hooks" / f"webhooks-{n}.log").start()
                 for n in (1, 2)]
        for sender in hooks:
            stack.callback(sender.stop)

        engine = create_engine(db_url)
        stack.callback(engine.dispose)
        yield Fleet(fake_mx, postfix, configs, ports, receiver, engine, proxy, [web, edge])
        for name, daemon in [*followers.items(), *(("webhooks", h) for h in hooks)]:
            assert daemon.alive(), f"{name} exited early:\n{daemon.output()}"


def test_a_fleet_on_one_postgresql(fleet: Fleet, tmp_path: Path) -> None:
    # -- mail through both hosts --------------------------------------------------------
    alice = fleet.newsletter(MX[0], "alice@example.net")  # her links: across both trackers
    bob = fleet.newsletter(MX[0], "bob@example.net")
    dave = fleet.newsletter(MX[1], "dave@example.net")
    carol1 = fleet.receipt(MX[0], "carol@example.org")  # real Postfix queue id on mx1
    first = [alice, bob, dave, carol1]

    def delivered(sent: list[Sent], *, tied: bool = True) -> bool:
        """Each one's delivery line stored (and tied to a message: the milter's record and
        the log line reach the database in either order)."""
        found = {(e.recipient, e.status) for e in fleet.rows(events)
                 if e.kind == "delivery" and (e.message is not None or not tied)}
        return all((s.rcpt, s.outcome) in found for s in sent)

    poll(lambda: delivered(first), 60, 0.1, "the deliveries of both hosts stored")
    for s in first:
        s.queue_id = fleet.message(s.tracking_id).queue_id

    # -- the same queue id on mx2, its delivery stored before its message ------------------
    # mx2's milter loses the database (its relay is cut) and keeps what it records in its
    # journal; mx2's Postfix logs the delivery attempt of a message with mx1's queue id.
    qid = carol1.queue_id
    carol2 = Sent(MX[1], "carol@example.com", queue_id=qid, outcome="bounced")
    fleet.mx2_db.down()
    msgid = f"receipt-2.{qid}@example.com"
    carol2.tracking_id = milter_transaction(
        cfgmod.load(fleet.configs["mx2"]).milter.socket, tmp_path, qid=qid, sender=SENDER,
        rcpt=carol2.rcpt, message_id=msgid)
    lines = postfix_lines(qid, host=MX[1], sender=SENDER, rcpt=carol2.rcpt, message_id=msgid,
                          status="bounced", dsn="5.1.1", relay="mx.example.com[192.0.2.25]:25",
                          reply="host mx.example.com[192.0.2.25] said: 550 5.1.1 "
                                "<carol@example.com>: Recipient address rejected: User "
                                "unknown (in reply to RCPT TO command)")
    # mx2's log follower reading those lines on standard input (its own state file).
    stdin_cfg = fleet_config(
        tmp_path / "mx2-stdin", db_url=str(cfgmod.load(fleet.configs["mx2"]).database.url),
        key_file=cfgmod.load(fleet.configs["mx2"]).tracking.secret_file,
        extra={"maillog": {"mta_name": MX[1], "metrics_listen": "",
                           "state_file": str(tmp_path / "mx2-stdin" / "maillog.state")},
               "webhooks": _webhooks(fleet.configs["mx2"])})
    fed = subprocess.run(command(stdin_cfg, "maillog", "-"), input="".join(lines).encode(),
                         capture_output=True, timeout=60)
    assert fed.returncode == 0, fed.stderr.decode()
    (tmp_path / "mx2-stdin" / "stdin.log").write_bytes(fed.stdout + fed.stderr)
    # Stored, and tied to nothing: mx1's message with this queue id is not mx2's.
    [early] = [e for e in fleet.rows(events) if e.recipient == carol2.rcpt]
    assert (early.kind, early.status, early.source, early.message) == (
        "delivery", "bounced", MX[1], None)
    assert fleet.message(carol2.tracking_id) is None
    fleet.mx2_db.up()  # mx2's milter replays its journal: the message, then the tie

    sent = [*first, carol2]
    poll(lambda: fleet.message(carol2.tracking_id), 60, 0.1, "mx2's message replayed")
    poll(lambda: delivered(sent), 60, 0.1, "every delivery stored")

    # -- clicks and opens through both trackers --------------------------------------------
    # A sandbox follows alice's four links in order, as a person's Firefox would, across
    # both nodes: each node sees two, no burst.
    for node, path in zip(("web", "edge", "web", "edge"), alice.clicks, strict=True):
        assert fleet.hit(node, path, "203.0.113.70", FIREFOX, **FIREFOX_NAV) == 302
    assert fleet.hit("edge", bob.clicks[1], "192.0.2.44", FIREFOX, **FIREFOX_NAV) == 302
    assert fleet.hit("web", bob.pixel, "66.249.84.10", GMAIL) == 200
    assert fleet.hit("edge", dave.pixel, "172.224.226.5", "Mozilla/5.0") == 200  # Apple MPP
    assert fleet.hit("web", dave.clicks[0], "192.0.2.60", FIREFOX, **FIREFOX_NAV) == 302
    answered = {"web": 4, "edge": 4}

    def settled() -> list[Any] | None:
        rows = fleet.rows(hits)
        if len(rows) < sum(answered.values()):
            return None
        # Only a revision from the store knows the delivery time.
        if not all("soon_after_delivery" in codes(r) for r in rows):
            return None
        mine = [r for r in rows if r.tracking_id == alice.tracking_id]
        if not all({"burst", "every_link"} <= codes(r) for r in mine):
            return None
        return rows

    poll(settled, 60, 0.3, "hits stored and revised from the store")

    # -- a mail host that lost the database while its mail was delivered and read -----------
    # mx2's milter journals erin's newsletter, Postfix delivers it, mx2's log follower stores
    # the line (tied to nothing yet), and her four links are followed through both nodes.
    fleet.mx2_db.down()
    erin = fleet.newsletter(MX[1], "erin@example.net")
    poll(lambda: delivered([erin], tied=False), 60, 0.1, "erin's delivery line stored")
    assert [e.message for e in fleet.rows(events) if e.recipient == erin.rcpt] == [None]
    for node, path in zip(("web", "edge", "web", "edge"), erin.clicks, strict=True):
        assert fleet.hit(node, path, "203.0.113.80", FIREFOX, **FIREFOX_NAV) == 302
    answered = {"web": 6, "edge": 6}

    def erins(rows: list[Any]) -> list[Any]:
        return sorted((h for h in rows if h.tracking_id == erin.tracking_id),
                      key=lambda h: h.idx)

    # The trackers' revision sees the four hits (a burst across nodes), but neither the
    # message's link count nor its delivery: the message is not stored.
    def revised_without_the_message() -> list[Any] | None:
        mine = erins(fleet.rows(hits))
        return mine if len(mine) == 4 and all("burst" in codes(h) for h in mine) else None

    early = poll(revised_without_the_message, 60, 0.2, "erin's hits revised by a tracker")
    assert all(h.verdict == "unknown" and not {"every_link", "soon_after_delivery"} & codes(h)
               for h in early), [h.reasons for h in early]
    for tracker in fleet.trackers:
        tracker.stop()  # a last revision pass each: no tracker revises after this
    fleet.mx2_db.up()
    sent.append(erin)

    # mx2's milter replays erin's message; its store ties the line to it and judges her
    # hits again with the link count and the delivery time the message brings.
    def judged_with_the_message() -> list[Any] | None:
        late = erins(fleet.rows(hits))
        ok = fleet.message(erin.tracking_id) is not None and all(
            h.verdict == "machine" and {"every_link", "soon_after_delivery"} <= codes(h)
            for h in late)
        return late if ok else None

    poll(judged_with_the_message, 60, 0.2, "erin's hits judged with her replayed message")
    erin.queue_id = fleet.message(erin.tracking_id).queue_id
    stored_hits = fleet.rows(hits)

    # -- every message, delivery and hit stored once ---------------------------------------
    msgs = fleet.rows(messages)
    assert sorted(m.tracking_id for m in msgs) == sorted(s.tracking_id for s in sent)
    by_tid = {m.tracking_id: m for m in msgs}
    for s in sent:
        assert (by_tid[s.tracking_id].mta, by_tid[s.tracking_id].queue_id) == (s.host,
                                                                               s.queue_id)
    # The collision: one queue id, two hosts, two messages.
    assert sorted((m.mta, m.queue_id) for m in msgs if m.queue_id == qid) == [
        (MX[0], qid), (MX[1], qid)]
    timeline = fleet.rows(events)
    assert Counter(e.kind for e in timeline) == {"inline": len(sent), "delivery": len(sent)}
    deliveries = [e for e in timeline if e.kind == "delivery"]
    by_id = {m.id: m for m in msgs}
    for s in sent:
        [d] = [d for d in deliveries if d.recipient == s.rcpt]
        m = by_id[d.message]  # tied, and to its own message
        assert (m.tracking_id, m.mta, d.source, d.status, d.data["queue_id"]) == (
            s.tracking_id, s.host, s.host, s.outcome, s.queue_id), s

    assert len(stored_hits) == sum(answered.values())
    assert len({h.hit_id for h in stored_hits}) == len(stored_hits)
    assert Counter(h.tracker for h in stored_hits) == {WEB: answered["web"],
                                                        EDGE: answered["edge"]}

    # -- the burst seen across nodes ---------------------------------------------------------
    sweep = sorted((h for h in stored_hits if h.tracking_id == alice.tracking_id),
                   key=lambda h: h.idx)
    assert [(h.idx, h.tracker) for h in sweep] == [(1, WEB), (2, EDGE), (3, WEB), (4, EDGE)]
    for h in sweep:
        # Answered as a person's click: neither node alone saw more than two links.
        assert h.request_verdict == "human", h.request_reasons
        assert not {"burst", "every_link"} & codes({"reasons": h.request_reasons})
        assert h.verdict == "machine"
        decided = {r["code"] for r in h.reasons if r["decided"]}
        assert "every_link" in decided, h.reasons
        evidence = {r["code"]: r["evidence"] for r in h.reasons}
        # (", in document order" too, unless two clicks fell within one millisecond: the
        # edge's time is nginx's $msec, the web's is taken to the microsecond.)
        assert evidence["every_link"].startswith("all 4 links"), evidence
        assert evidence["burst"].startswith("4 links in "), evidence
    revisions = fleet.rows(hit_verdicts)
    assert {r.hit for r in revisions} >= {h.id for h in sweep}
    assert all(r.cause == "revision" for r in revisions)

    people = {(h.tracking_id, h.target): h for h in stored_hits
              if h.tracking_id not in (alice.tracking_id, erin.tracking_id)}
    assert people[(bob.tracking_id, "click")].verdict == "human"
    assert people[(bob.tracking_id, "open")].verdict == "human"
    assert people[(dave.tracking_id, "click")].verdict == "human"
    assert people[(dave.tracking_id, "open")].verdict == "machine"
    assert "apple_mpp_prefetch" in codes(people[(dave.tracking_id, "open")])

    # -- status --json, through any node's configuration -----------------------------------
    for s, via in zip(sent, ("mx2", "web", "edge", "hooks", "mx1", "mx2"), strict=True):
        [v] = fleet.status(s.tracking_id, via=via)
        assert (v["mta"], v["queue_id"], v["sender"]) == (s.host, s.queue_id, SENDER)
        assert [(r["address"], r["state"]) for r in v["recipients"]] == [(s.rcpt, s.outcome)]
        assert len(v["hits"]) == sum(h.tracking_id == s.tracking_id for h in stored_hits)
    [a] = fleet.status(alice.tracking_id, via="edge")
    assert a["engagement"]["clicks"] == {"human": 0, "machine": 4, "unknown": 0}
    assert {h["verdict"] for h in a["hits"]} == {"machine"}
    assert all({"burst", "every_link"} <= codes(h) for h in a["hits"])
    collided = fleet.status(qid, via="web")
    assert sorted((v["mta"], v["tracking_id"], v["recipients"][0]["state"]) for v in collided) \
        == sorted([(MX[0], carol1.tracking_id, "sent"), (MX[1], carol2.tracking_id, "bounced")])
    for v in collided:
        [ev] = [e for e in v["events"] if e["kind"] == "delivery"]
        assert ev["source"] == v["mta"]
    text = subprocess.run(command(fleet.configs["mx1"], "status", qid), capture_output=True,
                          text=True, timeout=60).stdout
    assert text.count(f"queue {qid}") == 2, text
    assert f"on {MX[0]}" in text and f"on {MX[1]}" in text, text  # each host's log

    # -- report --json ----------------------------------------------------------------------
    out = subprocess.run(command(fleet.configs["hooks"], "report", "--json"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["messages"], report["outgoing"], report["recipients"]) == (6, 6, 6)
    assert report["refused_inline"] == 0
    assert report["states"] == {"sent": 5, "bounced": 1}
    assert (report["failures"]["hard"], report["failures"]["soft"]) == (1, 0)
    assert report["failures"]["codes"] == {"5.1.1": 1}
    assert (report["pixel_messages"], report["tracked_messages"]) == (4, 4)
    assert report["clicked"] == {"machine": 2, "human": 2}
    assert report["opened"] == {"human": 1, "machine": 1}
    assert report["click_hits"] == {"machine": 8, "human": 2}
    assert report["open_hits"] == {"human": 1, "machine": 1}

    # -- one webhook per stored event, each received once ----------------------------------
    def drained() -> list[Any] | None:
        rows = fleet.rows(webhook_outbox)
        ids, _ = fleet.receiver.snapshot()
        if any(r.delivered_at is None for r in rows) or set(ids) != {r.event_id for r in rows}:
            return None
        return rows

    outbox = poll(drained, 60, 0.3, "every webhook delivered")
    ids, payloads = fleet.receiver.snapshot()
    assert fleet.receiver.rejected == []
    assert set(ids.values()) == {1}, ids
    revisions = fleet.rows(hit_verdicts)  # now final
    want = Counter({"delivery.sent": 5, "delivery.bounced": 1, "hit.click": 10, "hit.open": 2})
    for r in revisions:
        want[f"hit.{next(h.target for h in stored_hits if h.id == r.hit)}.revised"] += 1
    assert Counter(r.event_type for r in outbox) == want
    assert Counter(p["type"] for p in payloads.values()) == want
    got_hits = Counter(p["data"]["hit_id"] for p in payloads.values()
                       if p["type"] in ("hit.click", "hit.open"))
    assert got_hits == Counter(h.hit_id for h in stored_hits)
    assert sorted(p["data"]["revision"] for p in payloads.values()
                  if p["type"].endswith(".revised")) == sorted(r.id for r in revisions)
    got_deliveries = sorted((p["data"]["mta"], p["data"]["queue_id"], p["data"]["recipient"],
                             p["data"]["status"]) for p in payloads.values()
                            if p["type"].startswith("delivery."))
    assert got_deliveries == sorted((s.host, s.queue_id, s.rcpt, s.outcome) for s in sent)

    # -- and nothing went wrong on the way ------------------------------------------------
    # Only what the cut relay caused: mx2's milter found its database unavailable.
    allowed = {"mx2/milter.log": frozenset({"store_unavailable"})}
    for log in ("mx1/milter.log", "mx1/maillog.log", "mx2/milter.log", "mx2/maillog.log",
                "web/web.log", "edge/edge.log", "hooks/webhooks-1.log",
                "hooks/webhooks-2.log"):
        assert log_problems(tmp_path / log, allowed.get(log, frozenset())) == [], log
    assert log_problems(tmp_path / "mx2-stdin" / "stdin.log") == []
    nginx_errors = child.output(tmp_path / "edge" / "nginx" / "error.log")
    assert not re.search(r"\[(error|crit|alert|emerg)\]", nginx_errors), nginx_errors


def _webhooks(config: Path) -> dict[str, Any]:
    s = cfgmod.load(config).webhooks
    return {"endpoints": [{"url": e.url, "secret_file": str(e.secret_file)}
                          for e in s.endpoints], "metrics_listen": ""}

