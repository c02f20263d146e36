"""Timelines that never claim more than the evidence: the `trackmilter status` view."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from trackmilter.store.views import EventView, HitView, MessageView
from trackmilter.verdict import reason_text

# What each in-line event proves, in words a sender can read without over-reading them.
_INLINE = {
    "accepted": "accepted by our MTA for delivery (not yet delivered)",
    "refused": "refused by our MTA: never sent",
}
# What the MTA's delivery log proves: what the next hop answered, nothing beyond it.
_DELIVERY = {
    "sent": "accepted by the remote server {relay} (not proof of inbox placement)",
    "deferred": "deferred: not accepted yet by {relay}; the MTA will retry",
    "bounced": "bounced: refused by {relay}; not delivered",
    "expired": "expired: the MTA gave up retrying; not delivered",
}
# Our own MTA's delivery agents: nothing crossed to another server.
_LOCAL_DELIVERED = {"sent": "delivered locally by our MTA ({relay})",
                    "bounced": "refused by our MTA's local delivery ({relay}); not delivered"}
_LOCAL = {
    "discard": {"sent": "discarded by our MTA (not delivered)"},
    "local": _LOCAL_DELIVERED, "virtual": _LOCAL_DELIVERED, "pipe": _LOCAL_DELIVERED,
    "error": {"bounced": "refused by our MTA (error transport); not delivered"},
}
# Reports that came back as mail (through the milter).
_DSN = {
    "failed": "bounce report (DSN) from {source}: not delivered",
    "delayed": "delay report (DSN) from {source}: not delivered yet, still trying",
    "delivered": "DSN from {source}: delivered to the recipient's mailbox server",
    "relayed": "DSN from {source}: relayed onward to a system that sends no reports",
    "expanded": "DSN from {source}: delivered and forwarded to further addresses",
}
# RFC 8098 disposition types: only "displayed" is what people call a read receipt.
_MDN = {
    "displayed": "read receipt (MDN: displayed): the recipient's mail client says it showed "
    "the message; not proof that anyone read it",
    "deleted": "the recipient's mail client reports the message deleted (MDN: deleted), "
    "perhaps unread",
    "dispatched": "the recipient's mail system reports it dispatched (MDN: dispatched): "
    "printed, faxed or forwarded, not necessarily displayed",
    "processed": "the recipient's mail system reports it processed (MDN: processed), "
    "without displaying it",
}
# Which evidence settles a recipient's current state: a later retry never undoes an answer,
# and a bounce after "sent" (a DSN that came back) still wins because it is later.
_FINAL = {"sent", "bounced", "expired"}
_END = {
    "queued": "",
    "all_recipients_refused": "transaction ended: every recipient refused, no message sent",
    "aborted": "transaction ended before the message was complete: nothing sent",
}


def _iso(at: datetime | None) -> str:
    return at.isoformat() if at is not None else ""


def _data(ev: EventView) -> Mapping[str, Any]:
    return ev.data or {}


def describe_event(ev: EventView) -> str:
    kind, status = ev.kind, ev.status
    detail = " ".join(x for x in (ev.code, ev.text) if x)
    data = _data(ev)
    if kind == "inline":
        text = _INLINE.get(status, status)
    elif kind == "delivery":
        relay = str(data.get("relay") or "the next hop").strip()
        local = _LOCAL.get(str(data.get("transport") or ""))
        if local and status in local:
            text = local[status].format(relay=relay)
        else:
            text = _DELIVERY.get(status, status).format(relay=relay)
        if data.get("delivered_to"):
            text += f" [delivered to {data['delivered_to']}]"
    elif kind == "dsn":
        text = _DSN.get(status, f"DSN from {{source}}: {status}").format(
            source=ev.source or "a remote server")
        if status == "failed" and data.get("reason"):
            text += f"; reason {data['reason']}, {'hard' if data.get('hardbounce') else 'soft'}"
    elif kind == "mdn":
        text = _MDN.get(status, "the recipient's mail system sent a disposition notification "
                        f"(MDN: {status or 'no disposition'})")
    elif kind == "arf":
        text = f"complaint: the recipient's provider reports it as {status or 'abuse'} (ARF)"
    else:
        text = f"{kind}: {status}"
    return f"{text} ({detail})" if detail else text


# Log stamps have whole seconds, the milter's microseconds: within one second, in-line
# evidence comes first, then the log, then reports that came back as mail.
_RANK = {"inline": 0, "delivery": 1}


def _order(ev: EventView) -> tuple[str, int, str]:
    at = _iso(ev.at)
    return at[:19], _RANK.get(ev.kind, 2), at


def _lines(events: list[EventView]) -> list[str]:
    """One line per piece of evidence; a run of identical ones (retries that all got the
    same answer) is one line with how many and until when."""
    lines: list[str] = []
    run: list[EventView] = []

    def same(a: EventView, b: EventView) -> bool:
        return (a.kind, a.status, a.code, a.text) == (b.kind, b.status, b.code, b.text)

    for ev in [*events, None]:
        if ev is not None and run and same(run[0], ev):
            run.append(ev)
            continue
        if run:
            text = f"{_iso(run[0].at)}  {describe_event(run[0])}"
            if len(run) > 1:
                text += f" [{len(run)} times, the last at {_iso(run[-1].at)}]"
            lines.append(text)
        run = [ev] if ev is not None else []
    return lines


def _latest(events: Iterable[EventView]) -> tuple[EventView | None, bool]:
    """The evidence that says where a recipient stands (the latest settling one, else the
    latest of any kind), and whether it is a failure after the next hop had said 250."""
    ordered = sorted(events, key=_order)
    if not ordered:
        return None, False
    settled = [ev for ev in ordered if _settles(ev)]
    latest = settled[-1] if settled else ordered[-1]
    sent = [ev for ev in ordered if ev.kind == "delivery" and ev.status == "sent"]
    late = bool(sent) and _failed(latest) and _order(latest) >= _order(sent[0])
    return latest, late


def current(events: Iterable[EventView]) -> str:
    """One line for where a recipient stands now; "" when there is no evidence."""
    latest, late = _latest(events)
    if latest is None:
        return ""
    prefix = "bounced after the remote server had accepted it: " if late else ""
    return prefix + describe_event(latest)


# A short machine-readable name for where a recipient stands (status --json "state").
_STATES = {
    ("inline", "accepted"): "accepted",  # by our MTA, nothing known beyond
    ("inline", "refused"): "refused",
    ("delivery", "sent"): "sent",  # accepted by the next hop
    ("delivery", "deferred"): "deferred",
    ("delivery", "bounced"): "bounced",
    ("delivery", "expired"): "expired",
    ("dsn", "failed"): "bounced",
    ("dsn", "delayed"): "deferred",
}


def state(events: Iterable[EventView]) -> str:
    """`unknown` without evidence; else what the deciding evidence says (see _STATES).
    A read receipt or a complaint never changes it: they say nothing about delivery."""
    latest, _ = _latest(ev for ev in events if ev.kind not in ("mdn", "arf"))
    if latest is None:
        return "unknown"
    if latest.kind == "dsn" and latest.status == "failed" and (
        latest.code.startswith("4.") or _data(latest).get("reason") == "expired"
    ):
        return "expired"  # failed on a temporary error: the reporting MTA gave up retrying
    transport = str(_data(latest).get("transport") or "")
    if latest.kind == "delivery" and latest.status == "sent" and transport in _LOCAL:
        return "discarded" if transport == "discard" else "delivered_locally"
    return _STATES.get((latest.kind, latest.status), "unknown")


def _recipient_events(m: MessageView, address: str) -> list[EventView]:
    return [ev for ev in m.events if ev.recipient == address]


def annotate(messages: Sequence[MessageView]) -> list[dict[str, Any]]:
    """The messages as JSON (status --json, the API): each recipient with its `state` and
    the `now` sentence, each hit with its sentence, each message with its `engagement`."""
    out = []
    for m in messages:
        d = m.to_dict()
        for r, rd in zip(m.recipients, d["recipients"], strict=True):
            mine = _recipient_events(m, r.address)
            rd["state"] = state(mine)
            rd["now"] = current(mine) or "no evidence yet: unknown"
        for h, hd in zip(m.hits, d["hits"], strict=True):
            hd["text"] = describe_hit(h)
        d["engagement"] = engagement(m)
        out.append(d)
    return out


def _reason_text(reason: Mapping[str, Any]) -> str:
    return reason_text(str(reason.get("code", "")), str(reason.get("evidence", "")))


def describe_hit(h: HitView) -> str:
    """`clicked link 2 (https://…) — machine (the deciding reasons) [outweighed: …]
    [also: …]`: the verdict with the reasons it rests on first, then the evidence that
    pointed the other way and the rest, never a bare "read"."""
    what = "opened" if h.target == "open" else f"clicked link {h.index} ({h.url})"
    verdict = h.verdict or "unknown"
    text = f"{what} — {verdict}"
    # Reasons stored before weights existed carry no `decided`: all of them are shown as
    # they were, as the verdict's reasons.
    marked = any(r.get("decided") for r in h.reasons)
    deciding = [r for r in h.reasons if r.get("decided") or not marked]
    rest = [r for r in h.reasons if marked and not r.get("decided")]
    against = [r for r in rest if r.get("leans") and r.get("leans") != verdict
               and verdict != "unknown"]
    also = [r for r in rest if r not in against]
    if deciding:
        text += f" ({'; '.join(_reason_text(r) for r in deciding)})"
    if against:
        text += f" [outweighed: {'; '.join(_reason_text(r) for r in against)}]"
    if also:
        text += f" [also: {'; '.join(_reason_text(r) for r in also)}]"
    if len(h.history) > 1 and h.history[0].get("verdict") != h.verdict:
        text += f" [revised; first judged {h.history[0].get('verdict')}]"
    return text


def engagement(m: MessageView) -> dict[str, Any]:
    """Opens and clicks by verdict, who they can be attributed to, and one honest sentence."""
    counts: dict[str, dict[str, int]] = {
        t: {"human": 0, "machine": 0, "unknown": 0} for t in ("open", "click")}
    for h in m.hits:
        bucket = counts.get(h.target)
        if bucket is not None:
            bucket[h.verdict if h.verdict in bucket else "unknown"] += 1
    accepted = [r.address for r in m.recipients if r.outcome == "accepted"]
    # The body (and so every link) is shared by all recipients of one transaction.
    who = accepted[0] if len(accepted) == 1 else None
    return {
        "opens": counts["open"], "clicks": counts["click"], "attributed_to": who,
        "summary": _engagement_summary(m, counts),
    }


def _engagement_summary(m: MessageView, counts: Mapping[str, Mapping[str, int]]) -> str:
    parts = []
    for target, verb in (("click", "clicked"), ("open", "opened")):
        c = counts[target]
        if c["human"]:
            parts.append(f"{verb} — human")
        elif c["unknown"]:
            parts.append(f"{verb} — unknown whether by a person")
        elif c["machine"]:
            parts.append(f"{verb} — machine only (not a person)")
    if not counts["open"]["human"] + counts["open"]["unknown"] + counts["open"]["machine"]:
        parts.append("no open signal (images blocked or plain text): unknown" if m.pixel
                     else "no open pixel in this message: opens cannot be known")
    return "; ".join(parts)


def _failed(ev: EventView) -> bool:
    return (ev.kind == "delivery" and ev.status in ("bounced", "expired")) or (
        ev.kind == "dsn" and ev.status == "failed")


def _settles(ev: EventView) -> bool:
    return (ev.kind == "delivery" and ev.status in _FINAL) or _failed(ev)


def render(messages: Iterable[MessageView]) -> str:
    """Plain-text timeline for the messages returned by the store's lookup."""
    out: list[str] = []
    for m in messages:
        ids = [f"queue id {m.queue_id}" if m.queue_id else "no queue id",
               f"Message-ID <{m.message_id}>" if m.message_id else "no Message-ID"]
        out.append(f"message {m.tracking_id} ({', '.join(ids)})")
        client = m.client_name or m.client_addr or "?"
        auth = f", authenticated as {m.auth_user}" if m.auth_user else ""
        out.append(f"  from <{m.sender}> via {client}{auth}; "
                   f"{m.direction}, {m.size} bytes, at {_iso(m.started_at)}")
        if m.rewritten:
            pixel = " and an open pixel" if m.pixel else ""
            out.append(f"  tracking: {m.link_count} link(s) rewritten{pixel}")
        elif m.tracking_header:
            why = f" ({m.skip_reason})" if m.skip_reason else ""
            out.append(f"  tracking: tracking-id header added, body not modified{why}")
        elif m.skip_reason:
            out.append(f"  tracking: message not modified ({m.skip_reason})")
        if _END.get(m.end_reason, ""):
            out.append(f"  {_END[m.end_reason]}")
        timeline = sorted(m.events, key=_order)
        for r in m.recipients:
            out.append(f"  {r.address}")
            events = [ev for ev in timeline if ev.recipient == r.address]
            out.extend(f"    {line}" for line in _lines(events))
            if not events:
                out.append("    no evidence yet: unknown")
            elif len(events) > 1:
                out.append(f"    now: {current(events)}")
        if m.hits or m.rewritten:
            eng = engagement(m)
            who = (f"attributed to {eng['attributed_to']}, the only recipient"
                   if eng["attributed_to"] else "not attributable to one recipient: the "
                   "links are shared by all recipients of the message")
            out.append(f"  opens and clicks ({who}): {eng['summary']}")
            for h in m.hits:
                client = f" from {h.client}" if h.client else ""
                out.append(f"    {_iso(h.at)}  {describe_hit(h)}{client}")
        known = {r.address for r in m.recipients}
        for ev in timeline:
            # Evidence about the message, or about an address it was not sent to in-line
            # (a DSN naming a forwarded address): shown, never dropped.
            if ev.recipient not in known:
                who = f"{ev.recipient}: " if ev.recipient else ""
                out.append(f"  {_iso(ev.at)}  {who}{describe_event(ev)}")
        out.append("")
    return "\n".join(out)
