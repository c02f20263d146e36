"""Pure judging of tracker hits: what a request tells plus the message's evidence → verdict and named reasons.

No I/O and no clock: the caller looks up the client's network (`web.networks`) and passes
the message's times, so the same inputs always give the same verdict and a stored history
can be recomputed.

Every reason leans one way (machine or human) with a weight, or is context:

- **decisive** machine evidence decides alone: something no person's click or mail client
  does (the hidden link, HEAD, a prefetch header, a listed scanner network, an automated
  user agent, a request that cannot come from the browser it names, every link of a message
  followed);
- otherwise the weights add up, **strong** 3 and **weak** 1 per side: a side wins when it
  has evidence and the other has none, or leads by 2 or more; anything closer is
  `unknown`. So one weak machine sign ("soon after delivery", "several links within
  seconds") never outweighs a request that is exactly its browser's user-activated
  navigation, and a bare browser user agent never outweighs a strong machine sign.

The stored reasons are ordered deciding first; `Reason.decided` says which they are.

| threshold | default | why / source |
|---|---|---|
| `soon_after_delivery` | 30 s | gateways scan when mail arrives: "most obvious anti-spam bot clicks happen in the first few seconds" after delivery (Suped, "How long does it take for anti-spam bots to click links", 2025); people click reset links that fast too, so it is weak evidence |
| `burst_window` | 10 s | Maestra's bot-click filter drops "5 or more clicks within 10 seconds" (help.maestra.io, "Filtering out fake clicks"); a person opening products in tabs does it too: weak |
| `burst_links` | 3 | distinct links in one window (Word to the Wise, "Barracuda filters clicking all links", 2013) |
| `every_link_min` | 3 | links a message must have before "followed every link" means anything; from 5 links, or 4 in document order, it is decisive: a person does not open every footer and social link |
| `group_prefix_v4` | /24 | the smallest prefix routed between networks (RIPE-399 / common BGP filter practice): a scanner farm rotates addresses inside it |
| `group_prefix_v6` | /64 | one link / one subnet (RFC 4291 §2.5.4, RFC 7421) |
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Literal, TypeVar

from trackmilter.agents import classify_agent as classify_agent  # re-exported for callers
from trackmilter.model import HitReason
from trackmilter.navigation import Finding, Fit, check_click, check_image

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
K = TypeVar("K")


class Verdict(StrEnum):
    HUMAN = "human"
    MACHINE = "machine"
    UNKNOWN = "unknown"


M, H = Verdict.MACHINE, Verdict.HUMAN

# One honest sentence per reason code; {e} is the evidence. Codes are stable (stored, counted
# in metrics); the sentences may improve.
TEXTS: Mapping[str, str] = {
    "apple_mpp_prefetch": "Apple Mail Privacy Protection prefetch ({e}): Apple loads images "
    "when mail arrives, whether or not it is read",
    "gmail_image_proxy": "Loaded through Gmail's image proxy, which fetches images when the "
    "message is displayed: probably a person viewing it, though not proof it was read",
    "yahoo_image_proxy": "Loaded through Yahoo Mail's image proxy, which fetches images when "
    "the message is displayed: probably a person viewing it, though not proof it was read",
    "scanner_user_agent": "The user agent names an automated scanner or fetcher ({e}), not a "
    "person's browser",
    "link_preview": "A link-preview service ({e}) fetched the link to draw a preview card; "
    "that is not a click",
    "headless_browser": "A headless browser ({e}): a program driving a browser, no person",
    "library_user_agent": "An HTTP library or command-line tool ({e}), not a browser or mail "
    "client",
    "crawler_user_agent": "The user agent calls itself a bot or crawler ({e})",
    "empty_user_agent": "No user agent at all: browsers and mail clients always send one",
    "bare_user_agent": "A bare 'Mozilla/5.0' user agent, as Apple's privacy proxy sends, but "
    "not from Apple's listed addresses: perhaps Apple from an unlisted range, perhaps a script",
    "head_request": "A HEAD request asks about the link without fetching it: link checkers do "
    "that, a browser following a click does not",
    "prefetch_header": "The request says it is a prefetch or preview ({e}), made in "
    "anticipation, not by a click",
    "soon_after_delivery": "Within seconds of the receiving server accepting the message "
    "({e}): when security gateways scan, though a person expecting it can be that quick",
    "soon_after_sending": "Within seconds of our MTA accepting the message ({e}), so sooner "
    "still after its delivery: when security gateways scan, though a person expecting it "
    "can be that quick",
    "not_like_its_browser": "The request cannot come from the browser its user agent names "
    "({e}): a program borrowing a browser's name",
    "unusual_request": "A request without what every such browser sends on a navigation "
    "({e})",
    "programmatic_navigation": "A real browser, but driven by a program ({e})",
    "not_a_navigation": "A script's request, not a followed link ({e})",
    "browser_navigation": "Exactly the request {e} sends when a person follows a link",
    "every_link": "This client or network followed every link of the message ({e}); a "
    "person follows the ones they want",
    "burst": "Several different links of this message followed within seconds from one client "
    "or network ({e}): scanners follow every link, a person follows one",
    "honeypot": "Followed the hidden link that no person can see",
    "honeypot_client": "From the client or network that followed this message's hidden link "
    "({e})",
    "scanner_network": "From the address ranges of {e}, whose mail security services fetch "
    "links and images; people click from their own networks",
    "mail_client": "A mail program's own user agent ({e}): the recipient's mail client loaded it",
    "browser": "A web browser's user agent ({e}), whose request could not be checked",
    "private_relay": "From Apple's relay addresses ({e}): the person's own address is hidden",
    "unrecognised_user_agent": "A user agent that is neither a known browser or mail client "
    "nor a known automated fetcher ({e})",
}


def reason_text(code: str, evidence: str = "") -> str:
    """The sentence a view shows for a stored reason (codes from newer versions still read)."""
    template = TEXTS.get(code)
    if template is None:
        return code.replace("_", " ") + (f": {evidence}" if evidence else "")
    return template.format(e=evidence or "?")


class Weight(IntEnum):
    """How much a reason counts (see the module docstring)."""

    CONTEXT = 0
    WEAK = 1
    STRONG = 3
    DECISIVE = 1000


# The weight of each reason code that leans; every one states its source where it is made.
WEIGHTS: Mapping[str, Weight] = {
    # decisive: no person's click or mail client does this
    "honeypot": Weight.DECISIVE, "honeypot_client": Weight.DECISIVE,
    "head_request": Weight.DECISIVE, "prefetch_header": Weight.DECISIVE,
    "scanner_network": Weight.DECISIVE, "scanner_user_agent": Weight.DECISIVE,
    "link_preview": Weight.DECISIVE, "headless_browser": Weight.DECISIVE,
    "library_user_agent": Weight.DECISIVE, "crawler_user_agent": Weight.DECISIVE,
    "empty_user_agent": Weight.DECISIVE, "apple_mpp_prefetch": Weight.DECISIVE,
    "not_like_its_browser": Weight.DECISIVE, "not_a_navigation": Weight.DECISIVE,
    # strong
    "unusual_request": Weight.STRONG, "programmatic_navigation": Weight.STRONG,
    "every_link": Weight.STRONG, "browser_navigation": Weight.STRONG,
    "mail_client": Weight.STRONG, "gmail_image_proxy": Weight.STRONG,
    "yahoo_image_proxy": Weight.STRONG,
    # weak
    "soon_after_delivery": Weight.WEAK, "soon_after_sending": Weight.WEAK,
    "burst": Weight.WEAK, "browser": Weight.WEAK,
}


@dataclass(frozen=True, slots=True)
class Reason:
    """One named piece of evidence: `leans` is the verdict it argues for, None for context;
    `decided`: among the reasons the verdict rests on."""

    code: str
    evidence: str = ""
    leans: Verdict | None = None
    weight: Weight | None = None  # None: WEIGHTS[code] (context when it does not lean)
    decided: bool = False

    @property
    def text(self) -> str:
        return reason_text(self.code, self.evidence)

    @property
    def counts(self) -> Weight:
        if self.leans is None:
            return Weight.CONTEXT
        return self.weight if self.weight is not None else WEIGHTS.get(self.code, Weight.WEAK)

    def record(self) -> HitReason:
        return HitReason(self.code, self.evidence, self.leans.value if self.leans else "",
                         self.counts.name.lower() if self.leans else "", self.decided)


@dataclass(frozen=True, slots=True)
class Hit:
    """What one request tells. `network` is the label of the configured range the client is
    in (looked up by the caller, so judging stays pure); `headers` has lower-cased names."""

    kind: Literal["click", "open"]
    at: datetime
    method: str = "GET"
    user_agent: str = ""
    client: IPAddress | None = None
    network: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    index: int = 0
    honeypot: bool = False
    # The tracker that recorded it kept the client-hint headers (Sec-CH-UA…); older ones did
    # not, and their hits must not be blamed for lacking them.
    hints_kept: bool = True


@dataclass(frozen=True, slots=True)
class Context:
    """The message's evidence at judging time; `others` may include later hits.

    `accepted_at`: when the remote server accepted it (the delivery log); `sent_at`: when our
    MTA accepted it (from the tracking id; delivery is later); `links`: how many links were
    rewritten (0: not known, as when a hit is answered)."""

    accepted_at: datetime | None = None
    others: Sequence[Hit] = ()
    sent_at: datetime | None = None
    links: int = 0


@dataclass(frozen=True, slots=True)
class Thresholds:
    soon_after_delivery: timedelta = timedelta(seconds=30)
    burst_window: timedelta = timedelta(seconds=10)
    burst_links: int = 3
    every_link_min: int = 3
    group_prefix_v4: int = 24
    group_prefix_v6: int = 64
    # Network labels (web.networks sources) and what they mean. Apple's egress ranges carry
    # both MPP prefetches and iCloud Private Relay browsing, so only the bare MPP user agent
    # from them is a machine.
    apple_networks: frozenset[str] = frozenset({"apple-mpp", "apple"})
    # Mail security services run here; a person's click comes from their own network.
    scanner_networks: frozenset[str] = frozenset(
        {"microsoft", "o365", "google", "proofpoint", "mimecast", "barracuda", "scanner"})
    # Webmail image proxies live in their operator's ranges by design.
    proxy_networks: frozenset[str] = frozenset({"google", "yahoo"})
    # The tracker's base URL is https (or loopback): the only origins browsers send Fetch
    # Metadata and client hints to.
    secure_origin: bool = True


DEFAULT = Thresholds()


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    reasons: tuple[Reason, ...] = ()

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)

    def records(self) -> tuple[HitReason, ...]:
        return tuple(r.record() for r in self.reasons)


# --- user agents (classified in trackmilter.agents) and the request's fit -----------------
def _agent_reasons(hit: Hit, th: Thresholds) -> list[Reason]:
    category, evidence = classify_agent(hit.user_agent)
    if category == "empty":
        return [Reason("empty_user_agent", "", M)]
    if category == "bare":
        if hit.network in th.apple_networks:
            return [Reason("apple_mpp_prefetch", f"Mozilla/5.0 from {hit.network}", M)]
        return [Reason("bare_user_agent", evidence)]
    if category in ("gmail", "yahoo"):
        if hit.kind == "open":
            return [Reason(f"{category}_image_proxy", evidence, H)]
        return [Reason("scanner_user_agent", evidence, M)]  # image proxies don't click
    if category == "mail":
        if hit.kind == "click":
            return _mail_click(hit, evidence, th)
        return [Reason("mail_client", evidence, H)]
    if category == "browser":
        out = _browser_reason(hit, evidence, th)
        if hit.network in th.apple_networks:
            out.append(Reason("private_relay", hit.network or ""))
        return out
    if category == "other":
        mode = hit.headers.get("sec-fetch-mode", "")
        if hit.kind == "click" and mode and mode.lower() != "navigate":
            # Fetch Metadata §2.3: only a navigation has mode "navigate"; a click is one.
            return [Reason("not_a_navigation", f"Sec-Fetch-Mode: {mode[:20]}", M),
                    Reason("unrecognised_user_agent", evidence)]
        return [Reason("unrecognised_user_agent", evidence)]
    return [Reason(category, evidence, M)]


def _mail_click(hit: Hit, evidence: str, th: Thresholds) -> list[Reason]:
    """A click with a mail program's own user agent. Mail programs open links in a
    browser, so this is an in-app web view (checked as its engine when the user agent
    names one: Apple's WebKit string carries the iOS version) or the program's own fetch,
    or a copied string: never human evidence on its own."""
    found = check_click(hit.user_agent, hit.headers, secure=th.secure_origin,
                        hints_kept=hit.hints_kept)
    if found.fit is Fit.UNCHECKED:
        return [Reason("mail_client", evidence)]  # context: no request to check
    return _fit_reasons(found, evidence)


def _fit_reasons(found: Finding, evidence: str) -> list[Reason]:
    if found.fit is Fit.INCONSISTENT:
        return [Reason("not_like_its_browser", found.evidence, M,
                       Weight.STRONG if found.minor else None)]
    if found.fit is Fit.UNUSUAL:
        if found.minor:
            # One header missing (a privacy setting, an extension): the rest is the
            # browser's own request; the two weigh the same, so unknown, never machine.
            return [Reason("unusual_request", found.evidence, M, Weight.WEAK),
                    Reason("browser", evidence, H)]
        return [Reason("unusual_request", found.evidence, M)]
    if found.fit is Fit.NO_ACTIVATION:
        return [Reason("programmatic_navigation", found.evidence, M)]
    if found.fit is Fit.CONSISTENT:
        return [Reason("browser_navigation", found.evidence, H)]
    return [Reason("browser", found.evidence or evidence, H)]


def _browser_reason(hit: Hit, evidence: str, th: Thresholds) -> list[Reason]:
    """A browser's user agent: on a click, how the request fits that browser (see
    trackmilter.navigation); on an open (an image load), the user agent alone."""
    if hit.kind != "click":
        found = check_image(hit.user_agent, hit.headers, secure=th.secure_origin)
    else:
        found = check_click(hit.user_agent, hit.headers, secure=th.secure_origin,
                            hints_kept=hit.hints_kept)
    return _fit_reasons(found, evidence)


# --- intent, network, time, the message's other hits ---------------------------------------
# Chrome sends Sec-Purpose (or legacy Purpose) "prefetch[;prerender]", Firefox sent
# "X-moz: prefetch", Safari "X-Purpose: preview" (MDN Sec-Purpose; Chromium
# prefetch_headers.cc).
_INTENT_HEADERS = ("sec-purpose", "purpose", "x-purpose", "x-moz")
_INTENT_WORDS = ("prefetch", "prerender", "preview", "instant")


def _prefetch(headers: Mapping[str, str]) -> str | None:
    if not headers:
        return None
    for name in _INTENT_HEADERS:
        value = headers.get(name)
        if value and (name == "x-moz" or any(w in value.lower() for w in _INTENT_WORDS)):
            return f"{name}: {value[:40]}"
    return None


def group_key(hit: Hit, th: Thresholds = DEFAULT) -> object | None:
    """What counts as one client or network: the configured range's label, else the /24 or
    /64 the address is in (scanner farms rotate addresses within them)."""
    if hit.network:
        return hit.network
    ip = hit.client
    if ip is None:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        return 4, int(ip) >> (32 - th.group_prefix_v4)
    return 6, int(ip) >> (128 - th.group_prefix_v6)


def _burst(hit: Hit, key: object, others: Sequence[tuple[object, Hit]],
           th: Thresholds) -> str | None:
    """Evidence when `hit` lies in a window of `burst_window` holding `burst_links` distinct
    links clicked from its group."""
    w = th.burst_window
    near = sorted(((o.at, o.index) for k, o in others
                   if k == key and o.kind == "click" and abs(o.at - hit.at) <= w),
                  key=lambda p: p[0])
    if len(near) + 1 < th.burst_links:
        return None
    near.append((hit.at, hit.index))
    near.sort(key=lambda p: p[0])
    # Every window that holds the hit starts at a click no later than it (and, as `near` is
    # within ±w of the hit, no earlier than w before it). One pass with two pointers over
    # the clicks in time order: [lo, hi) holds those in [start, start + w].
    count: dict[int, int] = {}
    lo = hi = 0
    for start, _ in near:
        if start > hit.at:
            break
        while near[lo][0] < start:
            i = near[lo][1]
            count[i] -= 1
            if not count[i]:
                del count[i]
            lo += 1
        while hi < len(near) and near[hi][0] <= start + w:
            count[near[hi][1]] = count.get(near[hi][1], 0) + 1
            hi += 1
        if len(count) >= th.burst_links:
            span = (near[hi - 1][0] - near[lo][0]).total_seconds()
            return f"{len(count)} links in {span:.1f} s"
    return None


# Sandboxes follow a message's links within minutes of each other; people sharing one
# network (an office behind NAT, the recipients of one message) over hours.
EVERY_LINK_WINDOW = timedelta(minutes=15)


def _every_link(hit: Hit, key: object, others: Sequence[tuple[object, Hit]], links: int,
                th: Thresholds) -> Reason | None:
    """The message's whole story for this client or network: every one of its links
    followed, at any pace a person would use, within EVERY_LINK_WINDOW of each other.
    Decisive from one exact address (5 links, or 4 in document order); from several
    addresses of one network, strong: they may be several people."""
    if links < th.every_link_min or (hit.kind == "click" and not 1 <= hit.index <= links):
        return None
    mine = sorted([(o.at, o.index, o.client) for k, o in others
                   if k == key and o.kind == "click" and 1 <= o.index <= links
                   and abs(o.at - hit.at) <= EVERY_LINK_WINDOW]
                  + ([(hit.at, hit.index, hit.client)] if hit.kind == "click" else []),
                  key=lambda c: (c[0], c[1]))
    if len({i for _, i, _ in mine}) < links:
        return None
    # The links all followed inside one window, not merely each within one of this hit.
    if mine[-1][0] - mine[0][0] > EVERY_LINK_WINDOW:
        return None
    firsts: dict[int, datetime] = {}
    for at, i, _ in mine:
        firsts.setdefault(i, at)
    order = [i for i, _ in sorted(firsts.items(), key=lambda p: p[1])]
    in_order = order == sorted(order)
    one_client = len({c for _, _, c in mine}) == 1 and mine[0][2] is not None
    evidence = f"all {links} links" + (", in document order" if in_order else "")
    if not one_client:
        evidence += ", from several addresses of one network"
    # Every footer and social link of a newsletter: no person. Three links followed in order
    # may be a reader going down a short message: strong, not decisive.
    decisive = one_client and (links >= 5 or (in_order and links >= 4))
    return Reason("every_link", evidence, M, Weight.DECISIVE if decisive else Weight.STRONG)


def _judge(hit: Hit, key: object | None, others: Sequence[tuple[object, Hit]],
           ctx: Context, th: Thresholds) -> Judgement:
    reasons: list[Reason] = []
    if hit.honeypot:
        reasons.append(Reason("honeypot", f"link {hit.index}", M))
    if hit.method.upper() == "HEAD":
        # RFC 9110 §9.3.2: HEAD asks for the headers only; browsers navigate with GET.
        reasons.append(Reason("head_request", "HEAD", M))
    intent = _prefetch(hit.headers)
    if intent:
        reasons.append(Reason("prefetch_header", intent, M))
    agent = _agent_reasons(hit, th)
    reasons.extend(agent)
    net = hit.network
    if net and net in th.scanner_networks and not (
            net in th.proxy_networks and agent[0].code.endswith("_image_proxy")):
        reasons.append(Reason("scanner_network", net, M))
    soon = th.soon_after_delivery.total_seconds()
    if ctx.accepted_at is not None:
        delta = (hit.at - ctx.accepted_at).total_seconds()
        # A little before acceptance counts too: clocks differ between hosts, and inline
        # gateways fetch before they answer 250.
        if abs(delta) <= soon:
            reasons.append(Reason("soon_after_delivery", f"{delta:+.0f} s", M))
    elif ctx.sent_at is not None:
        # Our MTA's acceptance (whole seconds) comes before delivery: a hit this soon after
        # it is at least as soon after delivery. Before it is a clock difference at most.
        delta = (hit.at - ctx.sent_at).total_seconds()
        if -5.0 <= delta <= soon:
            reasons.append(Reason("soon_after_sending", f"{delta:+.0f} s", M))
    if key is not None and others:
        if not hit.honeypot:
            for k, o in others:
                if o.honeypot and k == key:
                    reasons.append(Reason("honeypot_client", _describe(o), M))
                    break
        if hit.kind == "click":
            burst = _burst(hit, key, others, th)
            if burst:
                reasons.append(Reason("burst", burst, M))
        # An open from the client that followed every link is that client's too.
        every = _every_link(hit, key, others, ctx.links, th)
        if every:
            reasons.append(every)
    return _conclude(reasons)


def _describe(hit: Hit) -> str:
    return hit.network or (str(hit.client) if hit.client else "?")


def _conclude(reasons: list[Reason]) -> Judgement:
    """Decisive machine evidence decides; else the side with evidence and none against it,
    or a lead of two (a strong reason over a weak one), wins; else unknown."""
    if not reasons:
        return Judgement(Verdict.UNKNOWN)
    decisive = any(r.leans is M and r.counts is Weight.DECISIVE for r in reasons)
    m = sum(int(r.counts) for r in reasons if r.leans is M)
    h = sum(int(r.counts) for r in reasons if r.leans is H)
    if decisive:
        verdict, deciding = M, [r for r in reasons
                                if r.leans is M and r.counts is Weight.DECISIVE]
    elif m > h and (h == 0 or m - h >= 2):
        verdict, deciding = M, [r for r in reasons if r.leans is M]
    elif h > m and (m == 0 or h - m >= 2):
        verdict, deciding = H, [r for r in reasons if r.leans is H]
    else:
        verdict, deciding = Verdict.UNKNOWN, [r for r in reasons if r.leans is not None]
    chosen = {id(r) for r in deciding}
    marked = [replace(r, decided=True) if id(r) in chosen else r for r in reasons]
    # Deciding reasons first, then the others as context (stable within each group).
    marked.sort(key=lambda r: (not r.decided, -int(r.counts)))
    return Judgement(verdict, tuple(marked))


def judge(hit: Hit, context: Context = Context(), thresholds: Thresholds = DEFAULT
          ) -> Judgement:
    """The verdict on one hit given what is known of its message now."""
    key = group_key(hit, thresholds)
    others = [(group_key(o, thresholds), o) for o in context.others if o is not hit]
    return _judge(hit, key, others, context, thresholds)


def judge_keyed(hit: Hit, others: Sequence[tuple[object, Hit]], context: Context = Context(),
                thresholds: Thresholds = DEFAULT) -> Judgement:
    """`judge` for a caller that keeps (group_key, hit) pairs of the message's other hits
    (the tracker does, so a busy message does not cost a key per hit per request);
    `context.others` is not read."""
    return _judge(hit, group_key(hit, thresholds), others, context, thresholds)


def rejudge(hits: Sequence[tuple[K, Hit]], context: Context = Context(),
            thresholds: Thresholds = DEFAULT) -> list[tuple[K, Judgement]]:
    """Every hit of one message judged again with all the others as evidence (a burst
    seen later marks its first click too); `context.others` is not read. Same inputs, same
    answers, in input order."""
    keyed = [(group_key(h, thresholds), h) for _, h in hits]
    out = []
    for n, (ident, hit) in enumerate(hits):
        others = keyed[:n] + keyed[n + 1:]
        out.append((ident, _judge(hit, keyed[n][0], others, context, thresholds)))
    return out
