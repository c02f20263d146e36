"""Timelines that never claim more than the evidence: the `trackmilter status` view."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from trackmilter.store.views import EventView, HitView, MessageView

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


def _runs(events: list[EventView]) -> list[list[EventView]]:
    """Consecutive identical pieces of evidence (retries that all got the same answer)."""
    runs: list[list[EventView]] = []
    for ev in events:
        if runs and (runs[-1][0].kind, runs[-1][0].status, runs[-1][0].code,
                     runs[-1][0].text) == (ev.kind, ev.status, ev.code, ev.text):
            runs[-1].append(ev)
        else:
            runs.append([ev])
    return runs


def _lines(events: list[EventView]) -> list[str]:
    """One line per piece of evidence; a run of identical ones is one line with how many
    and until when."""
    lines: list[str] = []
    for run in _runs(events):
        text = f"{_iso(run[0].at)}  {describe_event(run[0])}"
        if len(run) > 1:
            text += f" [{len(run)} times, the last at {_iso(run[-1].at)}]"
        lines.append(text)
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


def failed_after_acceptance(events: Iterable[EventView]) -> bool:
    """The remote server said 2xx, and a failure came afterwards (a bounce report, a
    later refusal): its acceptance meant little."""
    return _latest(events)[1]


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
    # Here, not above: only --explain and the JSON need the sentences, and the verdict
    # module (user-agent tables, browser checks) costs `trackmilter status` 25 ms to import.
    from trackmilter.verdict import reason_text

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


# --- the compact view: `trackmilter status` (one line per piece of evidence) -------------------
WIDTH = 100

# Few words per event, the same honesty: "accepted by" a server is never "delivered".
_SHORT_INLINE = {"accepted": "accepted by our MTA", "refused": "refused by our MTA, not sent"}
_SHORT_DELIVERY = {"sent": "accepted by {relay}", "deferred": "deferred by {relay}",
                   "bounced": "bounced by {relay}", "expired": "expired: our MTA gave up"}
_SHORT_LOCAL = {"discard": "discarded by our MTA", "local": "delivered locally ({relay})",
                "virtual": "delivered locally ({relay})", "pipe": "delivered locally ({relay})",
                "error": "refused by our MTA (error transport)"}
_SHORT_DSN = {"failed": "bounce report from {source}", "delayed": "delay report from {source}",
              "delivered": "DSN delivered from {source}", "relayed": "DSN relayed from {source}",
              "expanded": "DSN expanded from {source}"}
_SHORT_STATE = {
    "accepted": "accepted by our MTA; nothing known beyond",
    "refused": "refused by our MTA; never sent",
    "sent": "accepted by the remote server (not proof of inbox)",
    "deferred": "deferred; our MTA retries",
    "bounced": "bounced; not delivered",
    "expired": "expired; not delivered",
    "delivered_locally": "delivered locally by our MTA",
    "discarded": "discarded by our MTA",
    "unknown": "no evidence yet: unknown",
}


def _clock(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at is not None else "?" * 19


def _fit(line: str) -> str:
    return line if len(line) <= WIDTH else line[:WIDTH - 1] + "…"


def short_event(ev: EventView) -> str:
    """An event in a few words (codes, not sentences); --explain gives the sentences."""
    text, detail = _short_parts(ev)
    return f"{text}  {detail}" if detail else text


def _short_parts(ev: EventView) -> tuple[str, str]:
    data = _data(ev)
    relay = str(data.get("relay") or "the next hop").strip()
    if ev.kind == "inline":
        text = _SHORT_INLINE.get(ev.status, ev.status)
    elif ev.kind == "delivery":
        transport = str(data.get("transport") or "")
        if transport in _SHORT_LOCAL and ev.status in ("sent", "bounced"):
            text = _SHORT_LOCAL[transport].format(relay=relay)
        else:
            text = _SHORT_DELIVERY.get(ev.status, ev.status).format(relay=relay)
    elif ev.kind == "dsn":
        text = _SHORT_DSN.get(ev.status, f"DSN {ev.status} from {{source}}").format(
            source=ev.source or "a remote server")
        if ev.status == "failed" and data.get("reason"):
            text += f": {data['reason']}, {'hard' if data.get('hardbounce') else 'soft'}"
    elif ev.kind == "mdn":
        text = f"MDN {ev.status or 'without disposition'} (not proof of reading)"
    elif ev.kind == "arf":
        text = f"complaint (ARF {ev.status or 'abuse'})"
    else:
        text = f"{ev.kind} {ev.status}"
    return text, " ".join(x for x in (ev.code, ev.text) if x)


def _short_lines(events: list[EventView], indent: str) -> list[str]:
    lines: list[str] = []
    for run in _runs(events):
        # The count before the reply text: a long reply is what gets cut at WIDTH.
        text, detail = _short_parts(run[0])
        if len(run) > 1:
            text += f" ×{len(run)} until {_clock(run[-1].at)[11:]}"
        lines.append(_fit(f"{indent}{_clock(run[0].at)}  {text}"
                          + (f"  {detail}" if detail else "")))
    return lines


def short_hit(h: HitView) -> str:
    """`open`/`click 2`, the verdict and the codes of the reasons it rests on."""
    what = "open   " if h.target == "open" else f"click {h.index:<2}"
    marked = any(r.get("decided") for r in h.reasons)
    codes = [str(r.get("code", "")) for r in h.reasons if r.get("decided") or not marked]
    revised = ""
    if len(h.history) > 1 and h.history[0].get("verdict") != h.verdict:
        revised = f" (first {h.history[0].get('verdict')})"
    client = f"  {h.client}" if h.client else ""
    return f"{what}  {h.verdict or 'unknown'}{revised}  {','.join(codes)}{client}"


def render_short(messages: Iterable[MessageView], only: str = "",
                 log_seen: Mapping[str, datetime | None] | None = None) -> str:
    """`trackmilter status`: one line per piece of evidence, at most WIDTH columns.

    `only`: show just this recipient (the address asked about). `log_seen`: per MTA name,
    the latest delivery-log line stored from it (None: none ever), so that "nothing yet"
    can be told from "the log follower is not running"."""
    out: list[str] = []
    want = only.strip().strip("<>").lower()
    for m in messages:
        ids = [f"queue {m.queue_id}" if m.queue_id else "no queue id",
               f"<{m.message_id}>" if m.message_id else "no Message-ID"]
        out.append(_fit(f"message {m.tracking_id}  {'  '.join(ids)}"))
        auth = f" auth {m.auth_user}" if m.auth_user else ""
        out.append(_fit(f"  {_clock(m.started_at)}  from <{m.sender}> via "
                        f"{m.client_name or m.client_addr or '?'}{auth}  {m.direction}  "
                        f"{m.size} bytes"))
        if m.rewritten:
            pixel = " + open pixel" if m.pixel else ""
            out.append(_fit(f"  tracking: {m.link_count} link(s) rewritten{pixel}"))
        elif m.skip_reason or m.tracking_header:
            out.append(_fit(f"  tracking: body not modified ({m.skip_reason or 'tracking off'})"))
        if _END.get(m.end_reason, ""):
            out.append(_fit(f"  {_END[m.end_reason]}"))
        timeline = sorted(m.events, key=_order)
        recipients = [r for r in m.recipients if not want or r.address.lower() == want]
        if want and not recipients:
            recipients = list(m.recipients)  # asked by another id: show them all
        hidden = len(m.recipients) - len(recipients)
        for r in recipients:
            events = [ev for ev in timeline if ev.recipient == r.address]
            out.append(_fit(f"  {r.address}: {_SHORT_STATE.get(state(events), state(events))}"))
            out.extend(_short_lines(events, "    "))
        if hidden:
            out.append(f"  (and {hidden} other recipient(s): trackmilter status {m.tracking_id})")
        known = {r.address for r in m.recipients}
        others = [ev for ev in timeline if ev.recipient not in known]
        if others:
            out.append("  about the message:")
            for ev in others:
                who = f"{ev.recipient}: " if ev.recipient else ""
                out.append(_fit(f"    {_clock(ev.at)}  {who}{short_event(ev)}"))
        if m.hits or m.rewritten:
            eng = engagement(m)
            who = (f"by {eng['attributed_to']}, the only recipient" if eng["attributed_to"]
                   else "not attributable to one recipient")
            out.append(_fit(f"  opens/clicks ({who}): {eng['summary']}"))
            out.extend(_fit(f"    {_clock(h.at)}  {short_hit(h)}") for h in m.hits)
        if log_seen is not None and m.mta and m.direction == "outgoing":
            seen = log_seen.get(m.mta)
            if seen is None:
                out.append(_fit(f"  log: no delivery line from {m.mta} stored yet: is "
                                "`trackmilter maillog` running there?"))
            else:
                out.append(_fit(f"  log: read up to {_clock(seen)} on {m.mta}"))
        out.append("")
    return "\n".join(out)
