"""The status view never says more than the evidence."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from trackmilter import status
from trackmilter.store.views import EventView, HitView, MessageView, RecipientView

# The cases are written as the JSON view's dicts; "tN" is N seconds after T0.
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _at(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, str) and value[0] == "t" and value[1:].isdigit():
        return T0 + timedelta(seconds=int(value[1:]))
    return datetime.fromisoformat(value)


def _event(d: Mapping[str, Any]) -> EventView:
    return EventView(kind=d["kind"], at=_at(d.get("at")), recipient=d.get("recipient"),
                     source=d.get("source", ""), status=d.get("status", ""),
                     code=d.get("code", ""), text=d.get("text", ""), data=d.get("data"))


def _hit(d: Mapping[str, Any]) -> HitView:
    return HitView(target=d["target"], at=_at(d.get("at")), index=d.get("index", 0),
                   url=d.get("url", ""), client=d.get("client", ""), network="", method="GET",
                   user_agent="", verdict=d.get("verdict", ""),
                   reasons=tuple(d.get("reasons", ())), history=tuple(d.get("history", ())))


def view(d: Mapping[str, Any]) -> MessageView:
    return MessageView(
        tracking_id=d["tracking_id"], direction=d.get("direction", ""),
        end_reason=d.get("end_reason", ""), sender=d.get("sender", ""),
        started_at=_at(d.get("started_at")), finished_at=None,
        queue_id=d.get("queue_id", ""), message_id=d.get("message_id", ""),
        client_addr=d.get("client_addr", ""), size=d.get("size", 0),
        rewritten=d.get("rewritten", False), skip_reason=d.get("skip_reason", ""),
        pixel=d.get("pixel", False), tracking_header=d.get("tracking_header", False),
        link_count=d.get("link_count", 0), mta=d.get("mta", ""),
        recipients=tuple(RecipientView(r["address"], r.get("outcome", ""), "", "", None)
                         for r in d.get("recipients", ())),
        events=tuple(_event(e) for e in d.get("events", ())),
        hits=tuple(_hit(h) for h in d.get("hits", ())))


def render(messages: Iterable[Mapping[str, Any]]) -> str:
    return status.render([view(m) for m in messages])


def annotate(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return status.annotate([view(m) for m in messages])


def state(events: Iterable[Mapping[str, Any]]) -> str:
    return status.state([_event(e) for e in events])


def _msg(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tracking_id": "abcdefghijklmnop", "queue_id": "4ABC", "message_id": "m@x",
        "sender": "a@example.com", "client_addr": "127.0.0.1", "direction": "outgoing",
        "size": 10, "started_at": "2026-01-01T00:00:00+00:00", "end_reason": "queued",
        "recipients": [{"address": "b@example.net"}, {"address": "c@example.net"}],
        "events": [{"kind": "inline", "recipient": "b@example.net", "status": "accepted",
                    "at": "t1", "code": "", "text": ""},
                   {"kind": "inline", "recipient": "c@example.net", "status": "refused",
                    "at": "t2", "code": "5.7.1", "text": "Recipient refused"}],
    }
    base.update(kw)
    return base


def test_accepted_in_line_is_not_called_delivered() -> None:
    text = render([_msg()])
    assert "accepted by our MTA for delivery (not yet delivered)" in text
    assert "delivered to" not in text and "inbox" not in text


def test_refusal_shows_code_and_text() -> None:
    assert "refused by our MTA: never sent (5.7.1 Recipient refused)" in render([_msg()])


def test_no_evidence_is_unknown() -> None:
    text = render([_msg(events=[])])
    assert text.count("no evidence yet: unknown") == 2


def test_tracking_summary() -> None:
    assert "3 link(s) rewritten and an open pixel" in render(
        [_msg(rewritten=True, link_count=3, pixel=True)])
    assert "tracking-id header added, body not modified (no_links)" in render(
        [_msg(tracking_header=True, skip_reason="no_links")])
    assert "message not modified (dkim_signed)" in render([_msg(skip_reason="dkim_signed")])
    assert "every recipient refused" in render([_msg(end_reason="all_recipients_refused")])


def _delivery(status: str, at: str, code: str = "", text: str = "") -> dict[str, Any]:
    return {"kind": "delivery", "recipient": "b@example.net", "status": status, "at": at,
            "code": code, "text": text, "data": {"relay": "mx.example.net[192.0.2.9]:25"}}


def test_sent_is_accepted_by_remote_not_inbox() -> None:
    events = [*_msg()["events"], _delivery("sent", "t3", "2.0.0", "250 2.0.0 Ok")]
    text = render([_msg(events=events)])
    assert ("accepted by the remote server mx.example.net[192.0.2.9]:25 (not proof of inbox "
            "placement) (2.0.0 250 2.0.0 Ok)") in text
    assert "now: accepted by the remote server" in text


def test_retry_does_not_undo_an_answer_and_later_bounce_wins() -> None:
    events = [*_msg()["events"], _delivery("deferred", "t3", "4.4.1"),
              _delivery("bounced", "t5", "5.1.1", "user unknown"), _delivery("deferred", "t4")]
    assert "now: bounced: refused by mx.example.net[192.0.2.9]:25" in render([_msg(events=events)])
    events.append(_delivery("sent", "t2"))
    assert "now: bounced after the remote server had accepted it: bounced: refused by" in render(
        [_msg(events=events)])


def test_deferred_alone_is_not_final() -> None:
    events = [*_msg()["events"], _delivery("deferred", "t3", "4.4.1", "Connection refused")]
    text = render([_msg(events=events)])
    assert "now: deferred: not accepted yet by mx.example.net[192.0.2.9]:25; the MTA will retry" \
        in text


def test_reports_say_what_they_prove() -> None:
    dsn = {"kind": "dsn", "recipient": "b@example.net", "status": "failed", "at": "t6",
           "code": "5.2.2", "text": "mailbox full", "source": "mx.example.net",
           "data": {"reason": "mailboxfull", "hardbounce": False}}
    mdn = {"kind": "mdn", "recipient": "b@example.net", "status": "displayed", "at": "t7"}
    events = [*_msg()["events"], _delivery("sent", "t3", "2.0.0"), dsn, mdn]
    text = render([_msg(events=events)])
    assert ("bounce report (DSN) from mx.example.net: not delivered; reason mailboxfull, soft "
            "(5.2.2 mailbox full)") in text
    assert ("read receipt (MDN: displayed): the recipient's mail client says it showed the "
            "message; not proof that anyone read it") in text
    # The receipt is not settling evidence: the DSN after the 250 is where it stands.
    assert "now: bounced after the remote server had accepted it: bounce report (DSN)" in text
    deleted = {**mdn, "status": "deleted"}
    text = render([_msg(events=[*_msg()["events"], deleted])])
    assert "reports the message deleted (MDN: deleted), perhaps unread" in text
    assert "read receipt" not in text


def test_evidence_for_an_unknown_address_is_shown() -> None:
    arf = {"kind": "arf", "recipient": "forwarded@example.org", "status": "abuse", "at": "t9"}
    text = render([_msg(events=[*_msg()["events"], arf])])
    assert "forwarded@example.org: complaint: the recipient's provider reports it as abuse" in text


def test_inline_before_log_within_one_second_and_retries_folded() -> None:
    inline = {"kind": "inline", "recipient": "b@example.net", "status": "accepted",
              "at": "2026-01-01T00:00:05.500000+00:00", "code": "", "text": ""}
    events = [_delivery("deferred", f"2026-01-01T00:00:0{n}+00:00", "4.2.0", "try later")
              for n in (5, 6, 7)] + [inline]
    text = render([_msg(recipients=[{"address": "b@example.net"}], events=events)])
    lines = [ln.strip() for ln in text.splitlines()]
    i = lines.index("b@example.net")
    assert lines[i + 1].startswith("2026-01-01T00:00:05.500000+00:00  accepted by our MTA")
    assert lines[i + 2].endswith("[3 times, the last at 2026-01-01T00:00:07+00:00]")
    assert lines[i + 3].startswith("now: deferred")


def test_state_is_the_deciding_evidence_and_receipts_do_not_count() -> None:
    inline = _msg()["events"][0]
    assert state([]) == "unknown"
    assert state([inline]) == "accepted"
    assert state([_msg()["events"][1]]) == "refused"
    assert state([inline, _delivery("deferred", "t3"), _delivery("deferred", "t4")]) == "deferred"
    assert state([inline, _delivery("deferred", "t3"), _delivery("expired", "t5")]) == "expired"
    dsn = {"kind": "dsn", "recipient": "b@example.net", "status": "failed", "at": "t6"}
    mdn = {"kind": "mdn", "recipient": "b@example.net", "status": "displayed", "at": "t7"}
    assert state([inline, _delivery("sent", "t3"), dsn, mdn]) == "bounced"
    assert state([inline, _delivery("sent", "t3"), mdn]) == "sent"
    gave_up = {**dsn, "data": {"reason": "expired"}}
    assert state([inline, _delivery("deferred", "t3"), gave_up]) == "expired"
    assert state([inline, {**dsn, "code": "4.2.0"}]) == "expired"
    [m] = annotate([_msg(events=[inline, _delivery("sent", "t3"), dsn])])
    b, c = m["recipients"]
    assert b["state"] == "bounced" and b["now"].startswith("bounced after the remote server")
    assert (c["state"], c["now"]) == ("unknown", "no evidence yet: unknown")


def _local(transport: str, relay: str, status: str = "sent", **data: str) -> dict[str, Any]:
    return {"kind": "delivery", "recipient": "b@example.net", "status": status, "at": "t3",
            "code": "2.0.0", "text": "delivered", "data": {"relay": relay,
                                                            "transport": transport, **data}}


def test_our_own_delivery_agents_are_not_a_remote_server() -> None:
    for transport, relay, words, st in [
        ("discard", "none", "discarded by our MTA (not delivered)", "discarded"),
        ("local", "local", "delivered locally by our MTA (local)", "delivered_locally"),
        ("virtual", "virtual", "delivered locally by our MTA (virtual)", "delivered_locally"),
    ]:
        events = [*_msg()["events"], _local(transport, relay)]
        text = render([_msg(events=events)])
        assert words in text and "remote server" not in text, transport
        (m,) = annotate([_msg(events=events)])
        assert m["recipients"][0]["state"] == st


def test_alias_expansion_names_the_final_address() -> None:
    events = [*_msg()["events"],
              _local("smtp", "mx.example.net[192.0.2.9]:25", delivered_to="real@example.net")]
    assert "[delivered to real@example.net]" in render([_msg(events=events)])


def test_hits_are_shown_with_verdicts_and_never_as_reads() -> None:
    hits = [
        {"target": "open", "at": "t4", "index": 0, "url": "", "client": "17.58.0.1",
         "verdict": "machine", "history": [{"verdict": "machine"}],
         "reasons": [{"code": "apple_mpp_prefetch", "evidence": "Mozilla/5.0",
                      "leans": "machine"}]},
        {"target": "click", "at": "t5", "index": 2, "url": "https://x.example/", "client": "",
         "verdict": "machine", "history": [{"verdict": "human"}, {"verdict": "machine"}],
         "reasons": [{"code": "burst", "evidence": "3 links in 2.0 s", "leans": "machine"}]},
    ]
    one = _msg(recipients=[{"address": "b@example.net", "outcome": "accepted"}],
               hits=hits, pixel=True, rewritten=True)
    (m,) = annotate([one])
    assert m["engagement"]["attributed_to"] == "b@example.net"
    assert m["engagement"]["opens"] == {"human": 0, "machine": 1, "unknown": 0}
    assert "opened — machine only (not a person)" in m["engagement"]["summary"]
    text = render([m])
    assert "opened — machine (Apple Mail Privacy Protection prefetch" in text
    assert "clicked link 2 (https://x.example/) — machine (" in text
    assert "[revised; first judged human]" in text
    assert " read" not in text.replace("whether or not it is read", "")
    (none,) = annotate([_msg(pixel=True, rewritten=True)])
    assert none["engagement"]["attributed_to"] is None
    assert "no open signal (images blocked or plain text): unknown" in (
        none["engagement"]["summary"])


def test_a_hit_shows_the_deciding_reasons_first_and_what_it_outweighed() -> None:
    hits = [{"target": "click", "at": "t4", "index": 1, "url": "https://x.example/",
             "verdict": "machine", "history": [{"verdict": "machine"}],
             "reasons": [{"code": "not_like_its_browser", "evidence": "no Sec-Fetch-* headers",
                          "leans": "machine", "weight": "decisive", "decided": True},
                         {"code": "soon_after_delivery", "evidence": "+3 s",
                          "leans": "machine", "weight": "weak", "decided": False},
                         {"code": "browser", "evidence": "Chrome 131", "leans": "human",
                          "weight": "weak", "decided": False}]}]
    text = render([_msg(hits=hits, rewritten=True)])
    line = next(ln for ln in text.splitlines() if "clicked link 1" in ln)
    assert line.index("cannot come from the browser") < line.index("[outweighed: A web browser")
    assert "[also: Within seconds of the receiving server" in line
    assert "(A web browser" not in line  # never "machine (…; a browser)"


def test_the_short_view_fits_a_terminal_and_shows_only_the_asked_recipient() -> None:
    long_text = "Connection timed out while talking to the server " * 8
    events = [*_msg()["events"],
              _delivery("deferred", "t3", "4.4.1", long_text),
              _delivery("deferred", "t4", "4.4.1", long_text),
              _delivery("sent", "t9", "2.0.0", "250 2.0.0 Ok: queued as 9C")]
    hits = [{"target": "click", "at": "t20", "index": 1, "url": "https://x.example/" + "a" * 300,
             "client": "203.0.113.9", "verdict": "machine", "history": [{"verdict": "human"},
                                                                          {"verdict": "machine"}],
             "reasons": [{"code": "every_link", "evidence": "all 3 links", "leans": "machine",
                          "weight": "decisive", "decided": True},
                         {"code": "browser_navigation", "evidence": "Chrome 131",
                          "leans": "human", "weight": "strong", "decided": False}]}]
    m = view(_msg(events=events, hits=hits, rewritten=True, link_count=3,
                  mta="mx1", direction="outgoing"))
    text = status.render_short([m], "B@example.net", {"mx1": T0 + timedelta(seconds=9)})
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= 100
    assert "  b@example.net: accepted by the remote server (not proof of inbox)" in lines
    assert not any("c@example.net" in ln for ln in lines if not ln.startswith("  (and"))
    assert "  (and 1 other recipient(s): trackmilter status abcdefghijklmnop)" in lines
    assert any("deferred by mx.example.net[192.0.2.9]:25 ×2 until 00:00:04  4.4.1 Conn"
               in ln for ln in lines)  # retries folded
    hit = next(ln for ln in lines if "click 1" in ln)
    assert "machine (first human)  every_link  203.0.113.9" in hit
    assert "browser_navigation" not in hit  # the deciding codes only; --explain says more
    assert "  log: read up to 2026-01-01 00:00:09 on mx1" in lines
    silent = status.render_short([m], "", {"mx1": None})
    assert "no delivery line from mx1 stored yet: is `trackmilter maillog` running there?" \
        in silent
    assert "c@example.net: refused by our MTA; never sent" in silent
