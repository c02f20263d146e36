"""The status view never says more than the evidence."""

from __future__ import annotations

from typing import Any

from trackmilter.status import render


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
