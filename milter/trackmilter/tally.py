"""`trackmilter report`: counts and rates over many messages, each with its denominator and
a footnote on what it can and cannot mean."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from trackmilter.status import failed_after_acceptance, state
from trackmilter.store.base import StoreReader
from trackmilter.store.views import EventView, MessageView

# The recipient states of status.state, grouped as the report counts them.
_REMOTE = {"sent"}
_FAILED = {"bounced", "expired"}


@dataclass
class Tally:
    """What the messages of one report add up to (fed one message at a time)."""

    messages: int = 0
    outgoing: int = 0
    recipients: int = 0
    refused_inline: int = 0
    states: Counter[str] = field(default_factory=Counter)
    hard: int = 0
    soft: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    complaints: int = 0
    read_receipts: int = 0
    pixel_messages: int = 0
    tracked_messages: int = 0
    opens: Counter[str] = field(default_factory=Counter)  # verdict -> messages
    clicks: Counter[str] = field(default_factory=Counter)  # verdict -> messages
    open_hits: Counter[str] = field(default_factory=Counter)
    click_hits: Counter[str] = field(default_factory=Counter)
    # Messages left out of the counts (without --all): inbound mail, bounce notices.
    set_aside: Counter[str] = field(default_factory=Counter)
    # Per receiving domain: recipients its servers accepted (2xx), and of those, how many
    # bounced afterwards (backscatter: where a 250 meant least).
    accepted_by_domain: Counter[str] = field(default_factory=Counter)
    bounced_after_by_domain: Counter[str] = field(default_factory=Counter)

    def add(self, m: MessageView, hit_counts: Mapping[tuple[str, str], int] | None = None
            ) -> None:
        """One message; its hits as counted by (target, verdict) in the database, or (None)
        from the view's own hits."""
        self.messages += 1
        if m.direction == "outgoing":
            self.outgoing += 1
        for r in m.recipients:
            if r.outcome == "refused":
                self.refused_inline += 1
                continue
            self.recipients += 1
            mine = [ev for ev in m.events if ev.recipient == r.address]
            st = state(mine)
            self.states[st] += 1
            if st in _FAILED:
                self._failure(mine)
            if any(ev.kind == "delivery" and ev.status == "sent" for ev in mine):
                domain = r.address.rpartition("@")[2].lower()
                self.accepted_by_domain[domain] += 1
                if failed_after_acceptance(mine):
                    self.bounced_after_by_domain[domain] += 1
        for ev in m.events:
            if ev.kind == "arf":
                self.complaints += 1
            elif ev.kind == "mdn" and ev.status == "displayed":
                self.read_receipts += 1
        if m.pixel:
            self.pixel_messages += 1
        if m.rewritten:
            self.tracked_messages += 1
        if hit_counts is None:
            counted: dict[tuple[str, str], int] = {}
            for h in m.hits:
                key = (h.target, h.verdict or "unknown")
                counted[key] = counted.get(key, 0) + 1
            hit_counts = counted
        self._hits(hit_counts)

    def _failure(self, events: list[EventView]) -> None:
        failing = [ev for ev in events if ev.kind in ("delivery", "dsn")
                   and ev.status in ("bounced", "expired", "failed")]
        if not failing:
            return
        last = failing[-1]
        data = last.data or {}
        code = last.code
        hard = bool(data.get("hardbounce")) if last.kind == "dsn" else code.startswith("5")
        if hard:
            self.hard += 1
        else:
            self.soft += 1
        self.reasons[str(data.get("reason") or ("expired" if last.status == "expired"
                                                else "unknown"))] += 1
        if code:
            self.codes[code] += 1

    def _hits(self, counts: Mapping[tuple[str, str], int]) -> None:
        best: dict[str, str] = {}
        rank = {"human": 2, "unknown": 1, "machine": 0}
        for (target, verdict), n in counts.items():
            (self.open_hits if target == "open" else self.click_hits)[verdict] += n
            # A message counts once per target, under its most telling verdict.
            if rank.get(verdict, 1) > rank.get(best.get(target, ""), -1):
                best[target] = verdict
        for target, verdict in best.items():
            (self.opens if target == "open" else self.clicks)[verdict] += 1


_UNITS = {"d": 86400, "h": 3600, "m": 60}
# Back to the year 1 is further than any store goes; more would overflow the date.
MAX_SINCE = timedelta(days=365 * 1000)


def parse_since(value: str) -> timedelta:
    """"7d", "12h", "30m" or a plain number of days; ValueError for anything else."""
    v = value.strip().lower()
    try:
        if v and v[-1] in _UNITS:
            span = timedelta(seconds=float(v[:-1]) * _UNITS[v[-1]])
        else:
            span = timedelta(days=float(v))
    except (ValueError, OverflowError):  # OverflowError: "infd", "1e400d"
        raise ValueError(f"expected e.g. 7d, 12h or 30m, got {value!r}") from None
    if span <= timedelta(0) or span > MAX_SINCE:
        raise ValueError(f"expected a period after 0 and at most {MAX_SINCE.days} days, "
                         f"got {value!r}")
    return span


def set_aside(m: MessageView) -> str:
    """Why a message is not the sender's outgoing mail ("" when it is): inbound mail (an
    MX's), or a bounce notice our own MTA sent (the null sender, RFC 5321 §4.5.5)."""
    if m.direction != "outgoing":
        return "inbound"
    if not m.sender.strip("<>"):
        return "bounce notice (null sender)"
    return ""


def tally(store: StoreReader, since: datetime, sender: str = "", wanted: Mapping[str, str] = {},
          allowed: Callable[[str], bool] = lambda sender: True,
          progress: Callable[[int], None] = lambda n: None, everything: bool = False) -> Tally:
    """Scan the store's messages from `since` (from `sender`) and add up those that carry
    the `wanted` recorded headers and whose sender is `allowed`: outgoing mail only, unless
    `everything` (inbound mail and bounce notices are counted apart); `progress` gets each
    chunk's size."""
    t = Tally()
    # Hits are counted in the database, a row per (message, target, verdict): a message
    # with a million hits costs what one with ten does.
    for views in store.scan(since, sender, with_hits=False):
        counts = store.hit_counts([m.tracking_id for m in views])
        for m in views:
            if not (matches(m, wanted) and allowed(m.sender)):
                continue
            why = set_aside(m)
            if why and not everything:
                t.set_aside[why] += 1
            else:
                t.add(m, counts.get(m.tracking_id, {}))
        progress(len(views))
    return t


def header_filter(specs: Iterable[str]) -> dict[str, str]:
    """`X-Campaign=spring` (several allowed: all must match) -> {"x-campaign": "spring"}."""
    wanted: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected NAME=VALUE, got {spec!r}")
        wanted[name.strip().lower()] = value.strip()
    return wanted


def matches(m: MessageView, wanted: Mapping[str, str]) -> bool:
    """Whether the message recorded every wanted header with that value ([milter]
    record_headers decides which headers are recorded at all)."""
    have = m.headers
    return all(have.get(k) == v for k, v in wanted.items())


def _pct(n: int, d: int) -> str:
    return f"{n:>7}  {100 * n / d:5.1f} % of {d}" if d else f"{n:>7}  (no denominator)"


FOOTNOTES = [
    "accepted by the remote server: the next server answered 2xx; not proof of inbox "
    "placement (spam folder, a later silent drop).",
    "bounced: refused by the remote server, or a bounce report (DSN) came back; hard = a "
    "permanent failure (5.x.x), soft = temporary failures that expired.",
    "complaints: ARF reports from providers' feedback loops; most providers send none, so "
    "zero is not proof of zero complaints.",
    "opened / clicked: messages with at least one hit, by their most telling verdict "
    "(human > unknown > machine). 'machine' hits (Apple Mail Privacy Protection, link "
    "scanners) say nothing about a person; no hit is 'unknown', never 'unread': images may "
    "be blocked and plain-text readers load no pixel. Hits are per message: the links of "
    "a message are shared by all its recipients.",
    "outgoing mail only: inbound mail (an MX's) and the bounce notices our MTA sends (null "
    "sender) are counted apart; accepted, then bounced: recipients whose server answered "
    "2xx and a bounce report came back later.",
]


def render(t: Tally, title: str) -> str:
    lines = [title, ""]
    r = t.recipients
    lines += [
        f"messages              {t.messages:>7}  ({t.outgoing} outgoing)",
        f"recipients            {r:>7}  accepted by our MTA ({t.refused_inline} refused in-line)",
        "",
        "delivery (per recipient accepted by our MTA)",
        f"  accepted by the remote server  {_pct(t.states['sent'], r)}",
        f"  delivered locally / discarded  {_pct(t.states['delivered_locally'] + t.states['discarded'], r)}",
        f"  deferred (still trying)        {_pct(t.states['deferred'], r)}",
        f"  bounced                        {_pct(t.states['bounced'], r)}",
        f"  expired                        {_pct(t.states['expired'], r)}",
        f"  no delivery evidence yet       {_pct(t.states['accepted'] + t.states['unknown'], r)}",
    ]
    failed = t.hard + t.soft
    if failed:
        lines.append(f"  failures: {t.hard} hard, {t.soft} soft; top reasons: "
                     + ", ".join(f"{k} {v}" for k, v in t.reasons.most_common(5))
                     + "; top codes: " + ", ".join(f"{k} {v}" for k, v in t.codes.most_common(5)))
    lines += [
        f"  complaints (ARF)               {_pct(t.complaints, r)}",
        f"  read receipts (MDN displayed)  {_pct(t.read_receipts, r)}",
        "",
        f"engagement (per message; {t.pixel_messages} with an open pixel, {t.tracked_messages} "
        "with tracked links)",
    ]
    for name, per_msg, hits, denom in (("opened ", t.opens, t.open_hits, t.pixel_messages),
                                       ("clicked", t.clicks, t.click_hits, t.tracked_messages)):
        for verdict in ("human", "unknown", "machine"):
            lines.append(f"  {name} — {verdict:8} {_pct(per_msg[verdict], denom)}"
                         f"   ({hits[verdict]} hits)")
    if t.bounced_after_by_domain:
        lines += ["", "accepted, then bounced (by receiving domain: where a 2xx meant least)"]
        worst = sorted(t.bounced_after_by_domain.items(),
                       key=lambda kv: (-kv[1] / t.accepted_by_domain[kv[0]], -kv[1], kv[0]))
        for domain, n in worst[:10]:
            lines.append(f"  {domain:30} {_pct(n, t.accepted_by_domain[domain])}")
    if t.set_aside:
        lines += ["", "not counted above (--all counts them): " + ", ".join(
            f"{n} {why}" for why, n in sorted(t.set_aside.items()))]
    lines += ["", "notes:"] + [f"  {n}. {text}" for n, text in enumerate(FOOTNOTES, 1)]
    return "\n".join(lines)


def as_dict(t: Tally) -> dict[str, Any]:
    return {
        "messages": t.messages, "outgoing": t.outgoing, "recipients": t.recipients,
        "refused_inline": t.refused_inline, "states": dict(t.states),
        "failures": {"hard": t.hard, "soft": t.soft, "reasons": dict(t.reasons),
                     "codes": dict(t.codes)},
        "complaints": t.complaints, "read_receipts": t.read_receipts,
        "pixel_messages": t.pixel_messages, "tracked_messages": t.tracked_messages,
        "opened": dict(t.opens), "clicked": dict(t.clicks),
        "open_hits": dict(t.open_hits), "click_hits": dict(t.click_hits),
        "set_aside": dict(t.set_aside),
        "accepted_then_bounced": {d: {"bounced": n, "accepted": t.accepted_by_domain[d]}
                                  for d, n in t.bounced_after_by_domain.items()},
        "notes": FOOTNOTES,
    }
