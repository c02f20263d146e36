"""A content filter's hand-off logged after the re-injected copy's own outcomes.

amavisd-new style: Postfix hands OLD to 127.0.0.1:10024, amavis re-injects it into the
smtpd on 127.0.0.1:10025 as NEW and answers OLD's end of data only then, so NEW may be
delivered (LMTP to the mailbox store is quick), and even removed, before the smtp(8)
client logs `OLD: ... status=sent (250 2.0.0 from MTA(...): 250 2.0.0 Ok: queued as NEW)`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from trackmilter.maillog.daemon import KINDS, Queues, consume
from trackmilter.maillog.handoff import HAND_OFF_WINDOW, MAX_FINISHED_UNFILTERED, Unclaimed
from trackmilter.maillog.parse import LineParser
from trackmilter.metrics import Metrics
from trackmilter.model import DeliveryObserved, Event, Reinjected

REFERENCE = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OLD, NEW = "4A1B21C0A1", "5F2A31C0B2"
# enable_long_queue_ids = yes: the same lines with Postfix's long queue ids.
LONG_OLD, LONG_NEW = "4ZxLqk1fQTz9vBc", "4ZxLqm2HkWz9vBf"


def received(qid: str, at: str = "10:00:00", client: str = "mua.example.org[192.0.2.7]",
             service: str = "postfix/smtpd") -> str:
    return f"Nov 27 {at} mx {service}[2100]: {qid}: client={client}\n"


def queued(qid: str, sender: str, at: str = "10:00:00") -> str:
    return (f"Nov 27 {at} mx postfix/cleanup[2102]: {qid}: message-id=<{qid}@example.org>\n"
            f"Nov 27 {at} mx postfix/qmgr[2103]: {qid}: from=<{sender}>, size=2048, nrcpt=1 "
            "(queue active)\n")


def reinjected(qid: str, sender: str, at: str = "10:00:01") -> str:
    """amavis re-injecting: the second smtpd's client= line comes before its 250."""
    return (received(qid, at, "localhost[127.0.0.1]") + queued(qid, sender, at))


def lmtp(qid: str, rcpt: str, at: str = "10:00:01") -> str:
    return (f"Nov 27 {at} mx postfix/lmtp[2105]: {qid}: to=<{rcpt}>, "
            "relay=mail.example.net[private/dovecot-lmtp], delay=0.05, "
            "delays=0.01/0.01/0.01/0.02, dsn=2.0.0, "
            f"status=sent (250 2.0.0 <{rcpt}> 8B3pJUm7YmWWCQAAC1lQ9Q Saved)\n")


def smtp(qid: str, rcpt: str, at: str = "10:00:02") -> str:
    return (f"Nov 27 {at} mx postfix/smtp[2106]: {qid}: to=<{rcpt}>, "
            "relay=mx.example.net[192.0.2.9]:25, delay=1.1, delays=0/0/0.5/0.6, dsn=2.0.0, "
            "status=sent (250 2.0.0 Ok: queued as 9C1D2E3F4A)\n")


def hand_off(old: str, new: str, rcpt: str, at: str = "10:00:02",
             orig_to: str = "") -> str:
    orig = f"orig_to=<{orig_to}>, " if orig_to else ""
    return (f"Nov 27 {at} mx postfix/smtp[2101]: {old}: to=<{rcpt}>, {orig}"
            "relay=127.0.0.1[127.0.0.1]:10024, delay=2.2, delays=0.1/0/0/2.1, dsn=2.0.0, "
            "status=sent (250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: "
            f"queued as {new})\n")


def removed(qid: str, at: str = "10:00:02") -> str:
    return f"Nov 27 {at} mx postfix/qmgr[2103]: {qid}: removed\n"


class ListSink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def submit(self, event: Event) -> None:
        self.events.append(event)


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def info(self, event: str, **kw: object) -> None:
        self.lines.append((event, kw))

    warning = info


def run(text: str, queues: Queues | None = None,
        log: RecordingLog | None = None) -> tuple[list[Event], Metrics]:
    sink, metrics = ListSink(), Metrics(CollectorRegistry())
    consume(text, LineParser("postfix", reference=REFERENCE, kinds=KINDS),
            queues or Queues("mx"), sink, metrics, log)
    return sink.events, metrics


def summary(events: list[Event]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for ev in events:
        if isinstance(ev, DeliveryObserved):
            out.append(("delivery", ev.queue_id, ev.recipient, str(ev.status)))
        elif isinstance(ev, Reinjected):
            out.append(("reinjected", ev.queue_id, ev.queued_as, *ev.recipients))
    return out


def an_earlier_hand_off() -> str:
    """A re-injection logged in the usual order: the site has a content filter."""
    return (received("1E0F01C0A0") + queued("1E0F01C0A0", "a@example.org")
            + reinjected("1E0F11C0A0", "a@example.org")
            + hand_off("1E0F01C0A0", "1E0F11C0A0", "x@example.net", at="10:00:01")
            + removed("1E0F01C0A0", at="10:00:01")
            + smtp("1E0F11C0A0", "x@example.net", at="10:00:01")
            + removed("1E0F11C0A0", at="10:00:01"))


# -- the usual order is unchanged ----------------------------------------------------------

def test_hand_off_first_ties_outcomes_directly() -> None:
    events, _ = run(received(OLD) + queued(OLD, "alice@example.org")
                    + reinjected(NEW, "alice@example.org") + hand_off(OLD, NEW, "bob@example.net")
                    + lmtp(NEW, "bob@example.net", at="10:00:02") + removed(NEW))
    assert summary(events) == [("delivery", OLD, "bob@example.net", "sent")]


# -- the late order -------------------------------------------------------------------------

@pytest.mark.parametrize(("old", "new"), [(OLD, NEW), (LONG_OLD, LONG_NEW)],
                         ids=["short-ids", "long-ids"])
def test_outcome_before_the_hand_off_is_tied_by_a_reinjected_event(old: str, new: str) -> None:
    """NEW delivered (LMTP) before OLD's hand-off line: the outcome went out under NEW,
    and the hand-off says NEW is OLD's, instead of being an outcome of its own."""
    text = (received(old) + queued(old, "") + reinjected(new, "") + lmtp(new, "bob@example.net")
            + hand_off(old, new, "bob@example.net") + removed(old) + removed(new))
    events, metrics = run(text)
    assert summary(events) == [
        ("delivery", new, "bob@example.net", "sent"),
        ("reinjected", old, new, "bob@example.net"),
    ]
    late = events[1]
    assert isinstance(late, Reinjected) and late.mta == "mx"
    assert late.at == datetime(2026, 11, 27, 10, 0, 2, tzinfo=UTC)
    get = metrics.registry.get_sample_value
    # The hand-off is neither an outcome nor an unparsed line.
    assert get("trackmilter_maillog_deliveries_total", {"outcome": "sent"}) == 1
    assert get("trackmilter_maillog_unparsed_lines_total") == 0


def test_outcomes_after_a_late_hand_off_go_to_the_original() -> None:
    """One recipient delivered before the hand-off, the other after: only the first needs
    the store to re-tie it; the second is OLD's at once."""
    text = (received(OLD) + queued(OLD, "alice@example.org") + reinjected(NEW, "alice@example.org")
            + lmtp(NEW, "bob@example.net")
            + hand_off(OLD, NEW, "bob@example.net") + hand_off(OLD, NEW, "carol@example.com")
            + smtp(NEW, "carol@example.com", at="10:00:03"))
    events, _ = run(text)
    assert summary(events) == [
        ("delivery", NEW, "bob@example.net", "sent"),
        ("reinjected", OLD, NEW, "bob@example.net"),
        ("reinjected", OLD, NEW, "carol@example.com"),
        ("delivery", OLD, "carol@example.com", "sent"),
    ]


@pytest.mark.parametrize("first", [True, False], ids=["first-hand-off", "filter-seen"])
def test_the_re_injected_copy_removed_before_the_hand_off(first: bool) -> None:
    """NEW delivered and removed before OLD's hand-off: still no outcome "sent to
    127.0.0.1:10024", and NEW (free again) is not chained to OLD for what comes next."""
    queues = Queues("mx")
    if not first:
        run(an_earlier_hand_off(), queues)
    text = (received(OLD) + queued(OLD, "") + reinjected(NEW, "") + lmtp(NEW, "bob@example.net")
            + removed(NEW) + hand_off(OLD, NEW, "bob@example.net") + removed(OLD))
    events, _ = run(text, queues)
    assert summary(events) == [
        ("delivery", NEW, "bob@example.net", "sent"),
        ("reinjected", OLD, NEW, "bob@example.net"),
    ]
    assert queues.origin(NEW) == NEW
    # A reused short queue id later is a message of its own.
    again, _ = run(received(NEW, at="10:05:00") + smtp(NEW, "dave@example.net", at="10:05:01"),
                   queues)
    assert summary(again) == [("delivery", NEW, "dave@example.net", "sent")]


def test_a_removed_copy_is_remembered_only_for_the_hand_off_window() -> None:
    queues = Queues("mx")
    run(an_earlier_hand_off(), queues)
    run(received(OLD) + reinjected(NEW, "") + lmtp(NEW, "bob@example.net") + removed(NEW),
        queues)
    # Eleven minutes of other mail later, a hand-off naming NEW is another server's 250.
    later = "10:11:02"
    events, _ = run(received("7B7B71C0A1", later) + smtp("7B7B71C0A1", "x@example.net", later)
                    + removed("7B7B71C0A1", later)
                    + hand_off(OLD, NEW, "bob@example.net", at=later), queues)
    assert ("reinjected", OLD, NEW, "bob@example.net") not in summary(events)


def test_orig_to_of_the_hand_off_is_named_too() -> None:
    """Aliases expanded before the filter: the hand-off names both addresses, so the store
    finds the re-injected copy's outcome under either."""
    text = (received(OLD) + reinjected(NEW, "") + lmtp(NEW, "bob@example.net")
            + hand_off(OLD, NEW, "bob@example.net", orig_to="team@example.net"))
    events, _ = run(text)
    assert summary(events)[-1] == ("reinjected", OLD, NEW, "bob@example.net", "team@example.net")


def test_two_filters_whose_first_hand_off_comes_last() -> None:
    """OLD -> MID -> NEW: MID's hand-off and NEW's delivery are logged before OLD's."""
    mid = "6A6A61C0A1"
    text = (received(OLD) + reinjected(mid, "") + reinjected(NEW, "")
            + hand_off(mid, NEW, "bob@example.net") + lmtp(NEW, "bob@example.net")
            + hand_off(OLD, mid, "bob@example.net")
            + smtp(NEW, "carol@example.com", at="10:00:03"))
    events, _ = run(text)
    assert summary(events) == [
        ("delivery", mid, "bob@example.net", "sent"),  # stored under MID, re-tied by:
        ("reinjected", OLD, mid, "bob@example.net"),
        ("delivery", OLD, "carol@example.com", "sent"),
    ]


def test_a_late_hand_off_is_logged_not_counted_as_a_delivery() -> None:
    log = RecordingLog()
    run(received(OLD) + reinjected(NEW, "") + lmtp(NEW, "bob@example.net")
        + hand_off(OLD, NEW, "bob@example.net"), log=log)
    assert [e for e, _ in log.lines] == ["delivery", "hand_off_after_outcomes"]
    fields = log.lines[1][1]
    assert (fields["queue_id"], fields["queued_as"], fields["recipients"]) == (
        OLD, NEW, ["bob@example.net"])


# -- across a restart ----------------------------------------------------------------------

@pytest.mark.parametrize("removed_first", [False, True], ids=["queued", "removed"])
def test_the_hand_off_after_a_restart(removed_first: bool) -> None:
    """The follower stopped between NEW's outcome (and removal) and OLD's hand-off: the
    state saved with the position remembers that NEW's outcome went out under NEW."""
    before = Queues("mx")
    run(an_earlier_hand_off(), before)
    run(received(OLD) + queued(OLD, "") + reinjected(NEW, "") + lmtp(NEW, "bob@example.net")
        + (removed(NEW) if removed_first else ""), before)
    after = Queues("mx")
    after.restore(json.loads(before.dump()))
    events, _ = run(hand_off(OLD, NEW, "bob@example.net") + removed(OLD), after)
    assert summary(events) == [("reinjected", OLD, NEW, "bob@example.net")]


def test_a_state_saved_before_these_tables_still_restores() -> None:
    queues = Queues("mx")
    queues.restore({"version": 1, "origin": [], "deferred": [], "local": [NEW]})
    events, _ = run(lmtp(NEW, "bob@example.net") + hand_off(OLD, NEW, "bob@example.net"),
                    queues)
    assert summary(events)[-1] == ("reinjected", OLD, NEW, "bob@example.net")


@pytest.mark.parametrize("tables", [
    pytest.param({"reported": "AB"}, id="string-as-list"),
    pytest.param({"reported": [1]}, id="not-a-queue-id"),
    pytest.param({"finished": [["A", "soon"]]}, id="not-a-time"),
    pytest.param({"finished": [["A"]]}, id="short-pair"),
    pytest.param({"filtering": "yes"}, id="not-a-boolean"),
])
def test_damaged_hand_off_tables_are_refused(tables: dict[str, object]) -> None:
    from trackmilter.maillog.daemon import QueueStateError

    queues = Queues("mx")
    with pytest.raises(QueueStateError):
        queues.restore({"version": 1, "origin": [], "deferred": [], "local": [], **tables})


def test_without_a_content_filter_few_removed_queue_ids_are_kept() -> None:
    """The state file is rewritten after every block: a site that never hands mail back
    keeps only the last few removed queue ids in it (enough for a first late hand-off)."""
    queues = Queues("mx")
    run("".join(received(f"3C3C{i:06X}") + smtp(f"3C3C{i:06X}", "x@example.net")
                + removed(f"3C3C{i:06X}") for i in range(MAX_FINISHED_UNFILTERED + 50)),
        queues)
    state = json.loads(queues.dump())
    assert (state["reported"], state["filtering"]) == ([], False)
    assert len(state["finished"]) == MAX_FINISHED_UNFILTERED
    # Once a hand-off is seen, the whole window is kept.
    run(an_earlier_hand_off(), queues)
    run("".join(received(f"3D3D{i:06X}") + smtp(f"3D3D{i:06X}", "x@example.net")
                + removed(f"3D3D{i:06X}") for i in range(MAX_FINISHED_UNFILTERED)), queues)
    assert len(json.loads(queues.dump())["finished"]) == 2 * MAX_FINISHED_UNFILTERED


def test_unclaimed_tables_are_bounded() -> None:
    t = Unclaimed(limit=3)
    t.handed_back()
    for i in range(5):
        t.report(f"Q{i}")
    assert list(t.reported) == ["Q2", "Q3", "Q4"]
    t.removed("Q2", 1000)
    t.removed("Q3", 1000 + HAND_OFF_WINDOW)
    t.removed("Q4", 1001 + HAND_OFF_WINDOW)
    assert list(t.finished) == ["Q3", "Q4"]  # Q2's window is over
    assert t.late("Q3", queued=False) and not t.late("Q3", queued=True)
