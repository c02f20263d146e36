"""The follower's core: real Postfix log lines in, per-recipient events out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from trackmilter.follow import FileFollower, load_consumer_state, load_position
from trackmilter.maillog.daemon import (
    KINDS,
    MAX_LOGGED_CHARS,
    Queues,
    QueueStateError,
    bad_line_logger,
    consume,
    follow_file,
    restore_queues,
)
from trackmilter.maillog.parse import LineParser
from trackmilter.maillog.records import LogRecord
from trackmilter.metrics import Metrics
from trackmilter.model import DeliveryObserved, DeliveryStatus, Event

DATA = Path(__file__).parent / "data"
REFERENCE = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class ListSink:
    def __init__(self) -> None:
        self.events: list[DeliveryObserved] = []

    def submit(self, event: Event) -> None:
        assert isinstance(event, DeliveryObserved)
        self.events.append(event)


def run(text: str) -> tuple[list[DeliveryObserved], Metrics]:
    sink, metrics = ListSink(), Metrics(CollectorRegistry())
    consume(text, LineParser("postfix", reference=REFERENCE, kinds=KINDS), Queues("lab"),
            sink, metrics)
    return sink.events, metrics


def by_rcpt(events: list[DeliveryObserved], queue_id: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ev in events:
        if ev.queue_id == queue_id:
            out.setdefault(ev.recipient, []).append(str(ev.status))
    return out


def test_lab_log_outcomes_per_recipient() -> None:
    events, metrics = run((DATA / "postfix-3.7-lab.log").read_text())
    seq = by_rcpt(events, "4633B20E19D")
    assert seq["ok1@example.net"] == ["sent"]
    assert seq["reject1@example.net"] == ["bounced"]
    # Deferred on every retry, then the message expired: expired is derived per recipient.
    assert seq["defer1@example.net"][0] == "deferred"
    assert seq["defer1@example.net"][-1] == "expired"
    [bounced] = [e for e in events if e.recipient == "reject1@example.net"]
    assert bounced.dsn == "5.1.1" and bounced.mta == "lab"
    assert bounced.text.endswith("(in reply to RCPT TO command)")
    assert bounced.relay == "127.0.0.1[127.0.0.1]:45345"
    lines = metrics.registry.get_sample_value("trackmilter_maillog_lines_total")
    assert lines == len((DATA / "postfix-3.7-lab.log").read_text().splitlines())
    sent = metrics.registry.get_sample_value("trackmilter_maillog_deliveries_total",
                                             {"outcome": "sent"})
    assert sent == sum(1 for e in events if e.status is DeliveryStatus.SENT) > 0


def test_lab_content_filter_hops_are_no_outcome() -> None:
    """The lab's filter re-injects through `postfix-reinject/smtpd` until cleanup's hop
    limit: one outcome (the bounce), on the queue id the milter saw, not a "sent" per hop.
    Its test MX also listens on loopback, and its "sent" still counts (ok1 above)."""
    events, _ = run((DATA / "postfix-3.7-lab.log").read_text())
    hops = [(e.queue_id, str(e.status)) for e in events if e.recipient == "f@filter.test"]
    assert hops == [("5537920E1AC", "bounced")]


def test_expired_uses_the_last_deferral_as_evidence() -> None:
    events, _ = run((DATA / "postfix-3.7-lab.log").read_text())
    [expired] = [e for e in events
                 if e.queue_id == "4C8BA20E1A1" and e.status is DeliveryStatus.EXPIRED]
    assert expired.recipient == "y@dead.test" and expired.dsn == "4.4.1"
    assert "Connection refused" in expired.text
    assert expired.at.strftime("%H:%M:%S") == "00:00:38"


def _line(qid: str, to: str, relay: str, status: str, reply: str) -> str:
    return (f"Nov 27 10:00:00 mx postfix/smtp[1]: {qid}: to=<{to}>, relay={relay}, delay=1, "
            f"delays=0/0/0/1, dsn=2.0.0, status={status} ({reply})\n")


def _queued(qid: str) -> str:
    """What the re-injecting smtpd logs before it answers `250 ... queued as`."""
    return f"Nov 27 10:00:00 mx postfix-reinject/smtpd[2]: {qid}: client=localhost[127.0.0.1]\n"


def test_content_filter_reinjection_is_chained_to_the_original_queue_id() -> None:
    text = (
        _queued("AAA111")
        + _queued("BBB222")
        + _line("AAA111", "bob@example.net", "127.0.0.1[127.0.0.1]:10024", "sent",
                "250 2.0.0 Ok: queued as BBB222")
        + _queued("CCC333")
        + _line("BBB222", "bob@example.net", "127.0.0.1[127.0.0.1]:10025", "sent",
                "250 2.0.0 Ok: queued as CCC333")
        + _line("CCC333", "bob@example.net", "mx.example.net[192.0.2.9]:25", "sent",
                "250 2.0.0 Ok: queued as REMOTE9")
        + _line("REMOTE9", "x@example.net", "mx.example.net[192.0.2.9]:25", "sent", "250 ok")
    )
    events, _ = run(text)
    # The two hand-offs to the filter are no outcome: only the remote server's answer is.
    assert [e.queue_id for e in events] == ["AAA111", "REMOTE9"]
    assert events[0].relay.startswith("mx.example.net")
    assert events[0].status is DeliveryStatus.SENT


def test_loopback_hand_off_is_not_acceptance_by_a_remote_server() -> None:
    """`relay=127.0.0.1...:10025, status=sent (... queued as NEW)` to our own content
    filter used to be stored as "accepted by the remote server 127.0.0.1"."""
    text = (
        _queued("AAA111")
        + _queued("NEW222")
        + _line("AAA111", "bob@example.net", "127.0.0.1[127.0.0.1]:10025", "sent",
                "250 2.0.0 Ok: queued as NEW222")
    )
    events, metrics = run(text)
    assert events == []
    assert metrics.registry.get_sample_value("trackmilter_maillog_unparsed_lines_total") == 0
    # The real outcome comes under NEW222 and is the original's.
    more, _ = run(text + _line("NEW222", "bob@example.net", "mx[192.0.2.9]:25", "bounced",
                               "host mx said: 550 5.1.1 no such user"))
    assert [(e.queue_id, e.recipient, str(e.status)) for e in more] == [
        ("AAA111", "bob@example.net", "bounced")]


def test_a_hand_off_after_deferrals_clears_them() -> None:
    """The filter was down (deferred), then took the mail: the old queue id is not expired."""
    queues = Queues("lab")
    text = (
        _queued("AAA111")
        + _line("AAA111", "bob@example.net", "127.0.0.1[127.0.0.1]:10025", "deferred",
                "connect to 127.0.0.1[127.0.0.1]:10025: Connection refused")
        + _queued("NEW222")
        + _line("AAA111", "bob@example.net", "127.0.0.1[127.0.0.1]:10025", "sent",
                "250 2.0.0 Ok: queued as NEW222")
        + "Nov 27 10:00:00 mx postfix/qmgr[3]: AAA111: from=<s@example.org>, "
          "status=expired, returned to sender\n"
    )
    events = _consume(text, queues)
    assert [str(e.status) for e in events] == ["deferred"]


def test_a_loopback_next_hop_that_is_not_our_mta_still_counts() -> None:
    """A server that merely listens on loopback (the lab's test MX, a relay on this host)
    gives queue ids our log never shows: its 250 is an acceptance like any other."""
    events, _ = run(_queued("AAA111") + _line(
        "AAA111", "bob@example.net", "127.0.0.1[127.0.0.1]:2525", "sent",
        "250 2.0.0 Ok: queued as 9A8B7C6D"))
    assert [(e.queue_id, str(e.status)) for e in events] == [("AAA111", "sent")]


def test_lines_the_parser_does_not_know_are_counted_not_fatal() -> None:
    broken = "Nov 27 10:00:00 mx postfix/smtp[1]: 4ABC: to=<a@b>, status=sent (250 ok\n"
    good = _line("AAA111", "bob@example.net", "mx[192.0.2.9]:25", "sent", "250 ok")
    events, metrics = run("garbage\n\x00\nNov 27 10:00:00 mx postfix/smtpd[1]: connect from x\n"
                          + broken.replace("to=<a@b>, ", "") + good)
    assert [e.queue_id for e in events] == ["AAA111"]
    assert metrics.registry.get_sample_value("trackmilter_maillog_lines_total") == 5
    # The outcome line without to= is malformed: counted apart; the others are just noise.
    assert metrics.registry.get_sample_value("trackmilter_maillog_unparsed_lines_total") == 1


def _consume(text: str, queues: Queues, metrics: Metrics | None = None,
             parser: LineParser | None = None) -> list[DeliveryObserved]:
    sink = ListSink()
    consume(text, parser or LineParser("postfix", reference=REFERENCE, kinds=KINDS), queues,
            sink, metrics or Metrics(CollectorRegistry()), RecordingLog())
    return sink.events


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    info = warning


# -- a line or record that fails is logged, counted, and the rest of the block goes on --

def test_a_malformed_delay_does_not_stop_the_follower() -> None:
    """`delay=1..2` raised ValueError out of consume(): the daemon died, restarted at the
    same position and died again, for ever."""
    bad = _line("BAD111", "a@example.net", "mx[192.0.2.9]:25", "sent", "250 ok").replace(
        "delay=1,", "delay=1..2,")
    good = _line("AAA111", "bob@example.net", "mx[192.0.2.9]:25", "sent", "250 ok")
    events, metrics = run(bad + good)
    assert [e.queue_id for e in events] == ["AAA111"]
    assert metrics.registry.get_sample_value("trackmilter_maillog_unparsed_lines_total") == 1


class FragileTracker(Queues):
    def events(self, record: LogRecord) -> list[DeliveryObserved]:
        if record.queue_id == "BAD111":
            raise RuntimeError("a bug")
        return super().events(record)


def test_a_record_the_tracker_fails_on_is_logged_counted_and_skipped() -> None:
    sink, metrics, log = ListSink(), Metrics(CollectorRegistry()), RecordingLog()
    text = (_line("BAD111", "a@example.net", "mx[192.0.2.9]:25", "sent", "250 " + "x" * 1000)
            + _line("AAA111", "bob@example.net", "mx[192.0.2.9]:25", "sent", "250 ok"))
    n = consume(text, LineParser("postfix", reference=REFERENCE, kinds=KINDS),
                FragileTracker("lab"), sink, metrics, log)
    assert n == 1 and [e.queue_id for e in sink.events] == ["AAA111"]
    assert metrics.registry.get_sample_value("trackmilter_maillog_unparsed_lines_total") == 1
    [(event, fields)] = [(e, f) for e, f in log.lines if e != "delivery"]
    assert event == "maillog_line_failed" and fields["stage"] == "track"
    [(_, delivery)] = [(e, f) for e, f in log.lines if e == "delivery"]
    assert (delivery["queue_id"], delivery["recipient"], delivery["status"]) == (
        "AAA111", "bob@example.net", "sent")
    assert "BAD111" in fields["record"] and len(fields["record"]) <= MAX_LOGGED_CHARS + 1
    assert "a bug" in fields["error"]


def test_a_line_the_parser_fails_on_is_logged_cut_short() -> None:
    log = RecordingLog()
    report = bad_line_logger(log)
    report("x" * 5000, ValueError("could not convert"))
    [(event, fields)] = log.lines
    assert event == "maillog_line_failed" and fields["stage"] == "parse"
    assert len(fields["line"]) <= MAX_LOGGED_CHARS + 1
    assert "could not convert" in fields["error"]


# -- aliases: the recipient is the address the client gave ----------------------------

ALIAS = (
    "Nov 27 00:01:19 lab postfix/error[7549]: 31E3220E2B9: to=<other@err.test>, "
    "orig_to=<alias@example.net>, relay=none, delay=0.05, delays=0.03/0.01/0/0.01, "
    "dsn=5.1.1, status=bounced (this domain is gone (closed, 2024))\n"
    "Nov 27 00:01:19 lab postfix/smtp[7548]: 31E3220E2B9: to=<ok3@example.net>, "
    "orig_to=<alias@example.net>, relay=127.0.0.1[127.0.0.1]:42097, delay=0.07, "
    "delays=0.03/0.03/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 42218E1915)\n"
)


def test_an_aliased_recipient_is_the_address_the_milter_recorded() -> None:
    """The milter records RCPT TO (orig_to when Postfix rewrote it), so the event must be
    about that address, or the status view never joins the two."""
    events, _ = run(ALIAS)
    assert [(e.recipient, e.orig_to, str(e.status)) for e in events] == [
        ("alias@example.net", "alias@example.net", "bounced"),
        ("alias@example.net", "alias@example.net", "sent"),
    ]


def test_each_expansion_of_an_alias_expires_on_its_own() -> None:
    """One alias, two final addresses, both deferred: both expire (keyed by the pair)."""
    deferred = ALIAS.replace("status=bounced", "status=deferred").replace(
        "status=sent", "status=deferred")
    expired = ("Nov 27 00:05:00 lab postfix/qmgr[1]: 31E3220E2B9: from=<s@example.org>, "
               "status=expired, returned to sender\n")
    events, _ = run(deferred + expired)
    assert [(e.recipient, e.relay, str(e.status)) for e in events[2:]] == [
        ("alias@example.net", "none", "expired"),
        ("alias@example.net", "127.0.0.1[127.0.0.1]:42097", "expired"),
    ]


def test_our_own_mta_s_transport_results_keep_their_relay() -> None:
    """discard(8) logs relay=none; local/virtual their own names: the event keeps them
    verbatim (the model has no transport field yet, see Delivery.transport)."""
    text = (
        "Nov 27 00:00:23 lab postfix/discard[6922]: 5641020E1A0: to=<d@discard.test>, "
        "relay=none, delay=0.04, delays=0.01/0.02/0/0, dsn=2.0.0, status=sent (silently dropped)\n"
        "Nov 27 00:00:23 lab postfix/virtual[6914]: 4B14720E1A0: to=<carol@virt.test>, "
        "relay=virtual, delay=0.04, delays=0/0.03/0/0, dsn=2.0.0, status=sent (delivered to maildir)\n"
    )
    events, _ = run(text)
    assert [(e.relay, e.text) for e in events] == [
        ("none", "silently dropped"), ("virtual", "delivered to maildir")]


# -- state across restarts --------------------------------------------------------------

DEFERRED = _line("DDD111", "late@example.net", "mx[192.0.2.9]:25", "deferred",
                 "host mx said: 450 4.7.1 try later").replace("dsn=2.0.0", "dsn=4.7.1")
EXPIRED = ("Nov 27 11:00:00 mx postfix/qmgr[3]: DDD111: from=<s@example.org>, "
           "status=expired, returned to sender\n")
CHAIN = (
    _queued("AAA111") + _queued("NEW222")
    + _line("AAA111", "bob@example.net", "127.0.0.1[127.0.0.1]:10025", "sent",
            "250 2.0.0 Ok: queued as NEW222")
)
AFTER_CHAIN = _line("NEW222", "bob@example.net", "mx[192.0.2.9]:25", "sent", "250 ok")


def test_tracker_state_survives_a_restart() -> None:
    """After a restart, an expiry still knows who was deferred and a chain still leads back."""
    before = Queues("lab")
    _consume(DEFERRED + CHAIN, before)
    after = Queues("lab")
    after.restore(json.loads(before.dump()))
    events = _consume(EXPIRED + AFTER_CHAIN, after)
    assert [(e.queue_id, e.recipient, str(e.status), e.dsn) for e in events] == [
        ("DDD111", "late@example.net", "expired", "4.7.1"),
        ("AAA111", "bob@example.net", "sent", "2.0.0"),
    ]
    assert events[0].text == "host mx said: 450 4.7.1 try later"
    # Without the state, the same lines lose both.
    fresh = _consume(EXPIRED + AFTER_CHAIN, Queues("lab"))
    assert [(e.queue_id, str(e.status)) for e in fresh] == [("NEW222", "sent")]


def test_removed_forgets_what_was_kept_about_a_queue_id() -> None:
    queues = Queues("lab")
    _consume(DEFERRED + CHAIN, queues)
    _consume("".join(f"Nov 27 11:00:00 mx postfix/qmgr[3]: {q}: removed\n"
                     for q in ("DDD111", "AAA111", "NEW222")), queues)
    assert json.loads(queues.dump()) == {"version": 1, "origin": [], "deferred": [],
                                          "local": [], "reported": [], "finished": [],
                                          "filtering": True}


def test_tracker_state_is_bounded() -> None:
    queues = Queues("lab", limit=2)
    text = "".join(
        _queued(f"Q{i}") + _line(f"Q{i}", "a@example.net", "127.0.0.1[127.0.0.1]:10025",
                                 "sent", f"250 2.0.0 Ok: queued as N{i}")
        + _line(f"Q{i}", "b@example.net", "mx[192.0.2.9]:25", "deferred", "450 later")
        for i in range(5)
    )
    _consume(text, queues)
    state = json.loads(queues.dump())
    assert [new for new, _ in state["origin"]] == ["N3", "N4"]
    assert [qid for qid, _ in state["deferred"]] == ["Q3", "Q4"]
    assert state["local"] == ["Q3", "Q4"]
    small = Queues("lab", limit=1)
    small.restore(state)
    assert [new for new, _ in json.loads(small.dump())["origin"]] == ["N4"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(None, id="none"),
        pytest.param([1, 2], id="list"),
        pytest.param({"version": 99}, id="other-version"),
        pytest.param({"version": 1}, id="missing-tables"),
        pytest.param({"version": 1, "origin": [["A", 1]], "deferred": [], "local": []},
                     id="bad-origin"),
        pytest.param({"version": 1, "origin": [], "deferred": [["Q", [{"to": "a"}]]],
                      "local": []}, id="bad-pending"),
        pytest.param({"version": 1, "origin": [], "deferred": [], "local": "AB"},
                     id="string-as-list"),
    ],
)
def test_a_damaged_state_is_refused_whole(data: object) -> None:
    queues = Queues("lab")
    _consume(DEFERRED, queues)
    before = queues.dump()
    with pytest.raises(QueueStateError):
        queues.restore(data)
    assert queues.dump() == before


# -- the follower loop: flush, then save position and state together ---------------------

class FlushSink(ListSink):
    def __init__(self, ok: bool) -> None:
        super().__init__()
        self.ok = ok
        self.flushes = 0

    def flush(self, timeout: float | None = None) -> bool:
        self.flushes += 1
        return self.ok


def _follow(log: Path, state: Path, sink: FlushSink, queues: Queues,
            polls: int = 2) -> RecordingLog:
    """Run the follower loop for `polls` polls, as run() does."""
    calls = [0]

    def should_stop() -> bool:
        calls[0] += 1
        return calls[0] > polls

    recording = RecordingLog()
    follower = FileFollower(log, state_path=state, sleep=lambda _s: None)
    follow_file(follower, LineParser("postfix", reference=REFERENCE, kinds=KINDS), queues,
                sink, Metrics(CollectorRegistry()), recording, should_stop)
    return recording


def test_position_is_not_saved_when_the_flush_fails(tmp_path: Path) -> None:
    """run() ignored flush()'s result: the position could be saved before the events
    were stored, and a crash then lost them."""
    log, state = tmp_path / "mail.log", tmp_path / "maillog.state"
    log.write_text(DEFERRED)
    sink = FlushSink(ok=False)
    recording = _follow(log, state, sink, Queues("lab"))
    # Tried when caught up and once more at the stop: never saved.
    assert sink.flushes >= 1 and len(sink.events) == 1
    assert not state.exists()
    events = [event for event, _ in recording.lines]
    assert events[0] == "delivery" and set(events[1:]) == {"maillog_flush_incomplete"}
    assert len(events) == 1 + sink.flushes
    # Once a flush succeeds, the position and the state are saved together.
    sink = FlushSink(ok=True)
    _follow(log, state, sink, Queues("lab"))
    assert load_position(state) is not None
    assert load_position(state).offset == len(DEFERRED)  # type: ignore[union-attr]
    saved = load_consumer_state(state)
    assert isinstance(saved, dict) and [q for q, _ in saved["deferred"]] == ["DDD111"]


def test_restart_restores_the_state_saved_with_the_position(tmp_path: Path) -> None:
    log, state = tmp_path / "mail.log", tmp_path / "maillog.state"
    log.write_text(DEFERRED)
    _follow(log, state, FlushSink(ok=True), Queues("lab"))
    with log.open("a") as f:
        f.write(EXPIRED)
    queues, sink = Queues("lab"), FlushSink(ok=True)
    assert restore_queues(queues, state, RecordingLog())
    _follow(log, state, sink, queues)
    assert [(e.recipient, str(e.status)) for e in sink.events] == [
        ("late@example.net", "expired")]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param("[1]", id="not-an-object"),
        pytest.param('{"offset": 3, "consumer": {"version": 7}}', id="other-version"),
        pytest.param('{"consumer": {"version": 1, "origin": 5}}', id="damaged"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
def test_a_damaged_state_file_is_logged_and_the_tracker_starts_empty(
    tmp_path: Path, content: str | bytes
) -> None:
    state = tmp_path / "maillog.state"
    if isinstance(content, bytes):
        state.write_bytes(content)
    else:
        state.write_text(content)
    queues, recording = Queues("lab"), RecordingLog()
    assert not restore_queues(queues, state, recording)
    assert [event for event, _ in recording.lines] == ["maillog_state_unreadable"]
    assert json.loads(queues.dump())["deferred"] == []


def test_a_missing_state_file_is_a_fresh_start(tmp_path: Path) -> None:
    recording = RecordingLog()
    assert not restore_queues(Queues("lab"), tmp_path / "none", recording)
    assert recording.lines == []


def test_a_state_file_of_the_previous_version_keeps_its_position(tmp_path: Path) -> None:
    """Position files written before the queue state was kept still give the position."""
    state = tmp_path / "maillog.state"
    state.write_text('{"device": 1, "inode": 2, "offset": 3, "head_len": 3, "head": "ab"}')
    assert not restore_queues(Queues("lab"), state, RecordingLog())
    assert load_position(state) is not None


def test_events_keep_the_final_address_and_the_delivery_agent() -> None:
    events, _ = run(ALIAS)
    assert all(e.delivered_to and e.delivered_to != e.recipient for e in events)
    assert len({e.delivered_to for e in events}) == 2
    assert {e.transport for e in events} <= {"smtp", "error", "discard", "local", "virtual"}
    assert all(e.transport for e in events)


def test_outcome_metrics_by_status_dsn_and_provider() -> None:
    from prometheus_client import CollectorRegistry

    from trackmilter.maillog.daemon import Queues, consume, provider_of
    from trackmilter.maillog.parse import LineParser

    assert provider_of("Bob@GMAIL.com", frozenset({"gmail.com"})) == "gmail.com"
    assert provider_of("bob@corp.example", frozenset({"gmail.com"})) == "other"
    block = (
        "Nov 27 00:01:19 lab postfix/smtp[1]: 4AAA: to=<a@gmail.com>, relay=mx[192.0.2.1]:25, "
        "delay=1.5, delays=0.1/0.1/0.3/1, dsn=2.0.0, status=sent (250 2.0.0 ok)\n"
        "Nov 27 00:01:20 lab postfix/smtp[1]: 4AAB: to=<b@corp.example>, relay=mx[192.0.2.2]:25, "
        "delay=3, delays=0.1/0.1/0.3/2.5, dsn=5.1.1, status=bounced (550 5.1.1 unknown)\n"
    )
    metrics = Metrics(CollectorRegistry())
    sink = ListSinkForMetrics()
    consume(block, LineParser("postfix", kinds=KINDS), Queues("lab"), sink, metrics,
            providers=frozenset({"gmail.com"}))
    get = metrics.registry.get_sample_value
    assert get("trackmilter_delivery_outcomes_total",
               {"outcome": "sent", "enhanced_code": "2.0.0", "provider": "gmail.com"}) == 1
    assert get("trackmilter_delivery_outcomes_total",
               {"outcome": "bounced", "enhanced_code": "5.1.1", "provider": "other"}) == 1
    assert get("trackmilter_delivery_delay_seconds_count", {"outcome": "bounced"}) == 1
    assert get("trackmilter_delivery_delay_seconds_sum", {"outcome": "sent"}) == 1.5


class ListSinkForMetrics:
    def __init__(self) -> None:
        self.events: list[object] = []

    def submit(self, event: object) -> None:
        self.events.append(event)


def test_a_backlog_is_read_while_stored_and_saved_when_caught_up(tmp_path: Path) -> None:
    """Standard input with more waiting (a backlog): blocks are read while the writer
    stores, flushed once a second; caught up, every block is stored before the next."""
    from trackmilter.maillog.daemon import follow_stream
    from trackmilter.maillog.journal import JournalLines

    blocks = [DEFERRED, EXPIRED, DEFERRED]

    def follow(more: bool) -> FlushSink:
        sink = FlushSink(ok=True)
        follow_stream(iter(blocks), JournalLines(), LineParser(
            "postfix", reference=REFERENCE, kinds=KINDS), Queues("lab"), sink,
            Metrics(CollectorRegistry()), RecordingLog(), None, lambda: False,
            clock=lambda: 0.0, more_waiting=lambda: more)
        return sink

    backlog = follow(more=True)
    assert backlog.flushes == 1  # once, at the end (the clock never reached a second)
    caught_up = follow(more=False)
    assert caught_up.flushes == 3  # one per block
    assert len(backlog.events) == len(caught_up.events) > 0
