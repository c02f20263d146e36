"""`trackmilter report` over a real store: every rate with its denominator, verdicts kept
apart, and the footnotes that say what the numbers cannot mean."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner
from tests.unit.store.store_helpers import T0, make_message

from trackmilter.cli import main
from trackmilter.model import (
    DeliveryObserved,
    DeliveryStatus,
    HitReason,
    HitRecorded,
    ReportReceived,
    ReportRecipient,
)
from trackmilter.store import SQLStore
from trackmilter.tally import Tally, render


def _delivery(m: object, rcpt: str, status: DeliveryStatus, dsn: str) -> DeliveryObserved:
    return DeliveryObserved(m.queue_id, rcpt, status, m.started_at + timedelta(seconds=5),  # type: ignore[attr-defined]
                            dsn=dsn, relay="mx.example.net[192.0.2.9]:25", mta=m.mta)  # type: ignore[attr-defined]


def _hit(n: int, tid: str, target: str, verdict: str) -> HitRecorded:
    return HitRecorded(hit_id=f"h{n}", target=target, tracking_id=tid,
                       at=T0 + timedelta(hours=2, seconds=n), verdict=verdict,
                       reasons=(HitReason("x", "", ""),))


def fill(store: SQLStore) -> None:
    a = make_message(1, tracking_id="t000000000000001", queue_id="4Q1",
                     rcpts=("a@gmail.com",), refused=("x@nowhere.example",))
    b = make_message(2, tracking_id="t000000000000002", queue_id="4Q2", rcpts=("b@example.net",))
    c = make_message(3, tracking_id="t000000000000003", queue_id="4Q3", rcpts=("c@example.net",),
                     sender="other@example.org")
    store.write([a, b, c])
    store.write([
        _delivery(a, "a@gmail.com", DeliveryStatus.SENT, "2.0.0"),
        _delivery(b, "b@example.net", DeliveryStatus.BOUNCED, "5.1.1"),
        _delivery(c, "c@example.net", DeliveryStatus.DEFERRED, "4.7.1"),
        ReportReceived("arf", T0 + timedelta(hours=1), (ReportRecipient("a@gmail.com", "abuse"),),
                       tracking_id="t000000000000001", report_message_id="<arf1@x>"),
        _hit(1, "t000000000000001", "open", "machine"),
        _hit(2, "t000000000000001", "click", "human"),
        _hit(3, "t000000000000001", "click", "machine"),
        _hit(4, "t000000000000002", "open", "human"),
    ])


def test_tally_from_the_store(store: SQLStore) -> None:
    fill(store)
    t = Tally()
    for views in store.scan(T0 - timedelta(days=1), chunk=2):  # chunks: nothing lost
        for m in views:
            t.add(m)
    assert (t.messages, t.recipients, t.refused_inline) == (3, 3, 1)
    assert t.states["sent"] == 1 and t.states["bounced"] == 1 and t.states["deferred"] == 1
    assert (t.hard, t.soft) == (1, 0) and t.codes["5.1.1"] == 1
    assert t.complaints == 1
    assert t.clicks == {"human": 1} and t.click_hits == {"human": 1, "machine": 1}
    assert t.opens == {"machine": 1, "human": 1}
    text = render(t, "test")
    assert "accepted by the remote server        1   33.3 % of 3" in text
    assert "not proof of inbox placement" in text and "never 'unread'" in text
    assert store.count_messages(T0 - timedelta(days=1), "other@example.org") == 1


def test_report_command_json_and_sender_filter(store: SQLStore, db_url: str,
                                               tmp_path: Path) -> None:
    fill(store)
    cfg = tmp_path / "tm.toml"
    cfg.write_text(f'[database]\nurl = "{db_url}"\n')
    runner = CliRunner()
    days = (__import__("datetime").datetime.now(T0.tzinfo) - T0).days + 2
    res = runner.invoke(main, ["--config", str(cfg), "report", "--since", f"{days}d", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{"):])
    assert data["messages"] == 3 and data["states"]["bounced"] == 1
    res = runner.invoke(main, ["--config", str(cfg), "report", "--since", f"{days}d",
                               "--sender", "other@example.org"])
    assert res.exit_code == 0, res.output
    assert "messages                    1" in res.stdout
    res = runner.invoke(main, ["--config", str(cfg), "report", "--since", "yesterday"])
    assert res.exit_code == 2 and "expected e.g. 7d" in res.output


def test_report_by_recorded_header(store: SQLStore, db_url: str, tmp_path: Path) -> None:
    from dataclasses import replace

    spring = replace(make_message(1, tracking_id="t000000000000011", queue_id="4H1"),
                     headers=(("x-campaign", "spring"),))
    autumn = replace(make_message(2, tracking_id="t000000000000012", queue_id="4H2"),
                     headers=(("x-campaign", "autumn"),))
    store.write([spring, autumn, make_message(3, tracking_id="t000000000000013")])
    (view,) = store.lookup("t000000000000011")
    assert view.headers == {"x-campaign": "spring"}
    cfg = tmp_path / "tm.toml"
    cfg.write_text(f'[database]\nurl = "{db_url}"\n')
    days = (__import__("datetime").datetime.now(T0.tzinfo) - T0).days + 2
    res = CliRunner().invoke(main, ["--config", str(cfg), "report", "--since", f"{days}d",
                                    "--header", "X-Campaign=spring", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout[res.stdout.index("{"):])
    assert data["messages"] == 1 and data["headers"] == {"x-campaign": "spring"}
    res = CliRunner().invoke(main, ["--config", str(cfg), "report", "--header", "nonsense"])
    assert res.exit_code == 2 and "NAME=VALUE" in res.output


def test_outgoing_only_by_default_and_where_a_2xx_meant_least(store: SQLStore) -> None:
    """Postfix's own bounce notices (null sender) and inbound mail are counted apart, and a
    recipient whose server accepted then bounced it is counted against that domain."""
    import dataclasses

    from trackmilter.model import Direction
    from trackmilter.tally import tally

    late = make_message(11, tracking_id="t000000000000011", queue_id="4Q11",
                        rcpts=("late@example.com",))
    ok = make_message(12, tracking_id="t000000000000012", queue_id="4Q12",
                      rcpts=("fine@example.com",))
    notice = make_message(13, tracking_id="t000000000000013", queue_id="4Q13",
                          rcpts=("alice@example.org",), sender="")
    inbound = dataclasses.replace(
        make_message(14, tracking_id="t000000000000014", queue_id="4Q14",
                     rcpts=("staff@example.org",)), direction=Direction.INBOUND)
    store.write([late, ok, notice, inbound])
    store.write([
        _delivery(late, "late@example.com", DeliveryStatus.SENT, "2.0.0"),
        _delivery(ok, "fine@example.com", DeliveryStatus.SENT, "2.0.0"),
        _delivery(notice, "alice@example.org", DeliveryStatus.SENT, "2.0.0"),
        ReportReceived("dsn", T0 + timedelta(hours=1),
                       (ReportRecipient("late@example.com", "failed", "5.2.2",
                                        reason="mailboxfull", hardbounce=False),),
                       tracking_id="t000000000000011", report_message_id="<dsn11@x>"),
    ])
    t = tally(store, T0 - timedelta(days=1))
    assert (t.messages, t.recipients) == (2, 2)
    assert dict(t.set_aside) == {"inbound": 1, "bounce notice (null sender)": 1}
    assert (t.accepted_by_domain["example.com"], t.bounced_after_by_domain["example.com"]) == (2, 1)
    text = render(t, "title")
    assert "accepted, then bounced (by receiving domain" in text
    assert "example.com" in text and "50.0 % of 2" in text
    assert "not counted above (--all counts them): 1 bounce notice (null sender), 1 inbound" \
        in text
    everything = tally(store, T0 - timedelta(days=1), everything=True)
    assert everything.messages == 4 and not everything.set_aside


def test_hits_are_counted_in_the_database_not_loaded(store: SQLStore) -> None:
    """A report never loads a message's hits: a message with thousands of them costs a row
    per (target, verdict)."""
    from trackmilter.tally import tally

    fill(store)
    many = [_hit(100 + n, "t000000000000002", "click", ("machine", "human")[n % 2])
            for n in range(3000)]
    for i in range(0, len(many), 500):
        store.write(many[i:i + 500])
    views = [v for chunk in store.scan(T0 - timedelta(days=1), with_hits=False) for v in chunk]
    assert views and all(not v.hits for v in views)
    counts = store.hit_counts(["t000000000000002"])["t000000000000002"]
    assert counts == {("open", "human"): 1, ("click", "machine"): 1500,
                      ("click", "human"): 1500}
    t = tally(store, T0 - timedelta(days=1))
    assert t.click_hits["machine"] == 1500 + 1 and t.click_hits["human"] == 1500 + 1
    assert t.clicks["human"] == 2  # per message, under its most telling verdict
