"""Verdicts on tracker hits: each reason alone, the combinations that matter, and re-judging a
message when later hits reveal a burst or a honeypot."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trackmilter.judging import hit_from_record
from trackmilter.model import HitReason, HitRecorded
from trackmilter.verdict import (
    TEXTS,
    Context,
    Hit,
    Judgement,
    Reason,
    Thresholds,
    Verdict,
    judge,
    reason_text,
    rejudge,
)

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)  # the remote server accepted the message
LATER = T0 + timedelta(hours=2)

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
          "Gecko) Version/17.1 Safari/605.1.15")
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)"
OUTLOOK_MSO = "Mozilla/4.0 (compatible; ms-office; MSOffice 16)"
APPLE_MAIL = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Mobile/15E148")
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0"


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# What each browser sends when a person follows a link from webmail (W3C Fetch Metadata,
# WICG UA client hints, MDN's default Accept values): see trackmilter.navigation.
CHROME_NAV = {
    "sec-ch-ua": '"Google Chrome";v="120", "Chromium";v="120", "Not_A Brand";v="24"',
    "sec-ch-ua-mobile": "?0", "sec-ch-ua-platform": '"Windows"',
    "upgrade-insecure-requests": "1",
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
              "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-user": "?1",
    "sec-fetch-dest": "document", "accept-language": "en-US,en;q=0.9",
}
SAFARI_NAV = {
    "accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "sec-fetch-site": "cross-site", "sec-fetch-dest": "document",
    "accept-language": "en-GB,en;q=0.9", "sec-fetch-mode": "navigate",
}


# A browser loading the pixel in a webmail page (an img element: no-cors, dest image).
CHROME_IMG = {
    "sec-ch-ua": CHROME_NAV["sec-ch-ua"], "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Windows"',
    "accept": "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image",
    "accept-language": "en-US,en;q=0.9",
}


def hit(kind: str = "click", at: datetime = LATER, *, bare: bool = False, **kw: Any) -> Hit:
    """A request comes with its browser's headers (a person's) unless `bare`."""
    kw.setdefault("user_agent", CHROME)
    kw.setdefault("client", ip("198.51.100.7"))
    kw.setdefault("index", 1 if kind == "click" else 0)
    if not bare:
        if kind == "click":
            nav = {CHROME: CHROME_NAV, SAFARI: SAFARI_NAV}.get(kw["user_agent"], {})
        else:
            nav = {CHROME: CHROME_IMG}.get(kw["user_agent"], {})
        kw["headers"] = {**nav, **kw.get("headers", {})}
    return Hit(kind, at, **kw)  # type: ignore[arg-type]


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize("h, accepted, verdict, codes", [
    # Apple Mail Privacy Protection: the bare user agent, and only from Apple's ranges.
    pytest.param(hit("open", user_agent="Mozilla/5.0", network="apple-mpp"), T0, "machine",
                 ["apple_mpp_prefetch"], id="mpp-ua-from-apple-range"),
    pytest.param(hit("open", user_agent="Mozilla/5.0"), T0, "unknown", ["bare_user_agent"],
                 id="mpp-ua-from-elsewhere"),
    pytest.param(hit("open", user_agent=APPLE_MAIL, network="apple-mpp"), T0, "human",
                 ["mail_client"], id="apple-mail-own-fetch"),
    pytest.param(hit(user_agent=SAFARI, network="apple-mpp"), T0, "human",
                 ["browser_navigation", "private_relay"], id="safari-click-via-private-relay"),
    # Webmail image proxies fetch on display: probably a person.
    pytest.param(hit("open", user_agent=GMAIL, network="google"), T0, "human",
                 ["gmail_image_proxy"], id="gmail-proxy-open"),
    pytest.param(hit("open", user_agent=GMAIL), None, "human", ["gmail_image_proxy"],
                 id="gmail-proxy-open-no-lists"),
    pytest.param(hit("open", user_agent=YAHOO), T0, "human", ["yahoo_image_proxy"],
                 id="yahoo-proxy-open"),
    pytest.param(hit(user_agent=GMAIL, network="google"), T0, "machine",
                 ["scanner_user_agent", "scanner_network"], id="image-proxy-does-not-click"),
    pytest.param(hit("open", user_agent=GMAIL, network="microsoft"), T0, "machine",
                 ["scanner_network", "gmail_image_proxy"], id="gmail-ua-from-microsoft"),
    # A proxy fetching as the message is displayed, seconds after delivery: a person who
    # was looking (the proxy is strong, the timing weak).
    pytest.param(hit("open", user_agent=GMAIL, at=s(8)), T0, "human",
                 ["gmail_image_proxy", "soon_after_delivery"], id="gmail-proxy-within-seconds"),
    # Real mail clients are people, whatever crawler lists say.
    # A click with a mail program's own user agent: the program's fetch or a copied string
    # (mail programs open links in a browser), context only; a WebKit view is checked as one.
    pytest.param(hit(user_agent=OUTLOOK), T0, "unknown", ["mail_client"],
                 id="outlook-desktop-click"),
    pytest.param(hit(user_agent=APPLE_MAIL, bare=True), T0, "machine",
                 ["not_like_its_browser"], id="apple-mail-ua-click-without-webkit-headers"),
    pytest.param(hit("open", user_agent=OUTLOOK_MSO), T0, "human", ["mail_client"],
                 id="outlook-ms-office-open"),
    pytest.param(hit("open", user_agent=THUNDERBIRD), T0, "human", ["mail_client"],
                 id="thunderbird-open"),
    pytest.param(hit("open", user_agent=APPLE_MAIL), T0, "human", ["mail_client"],
                 id="apple-mail-open"),
    # Browsers: the request must be what the browser sends.
    pytest.param(hit(), T0, "human", ["browser_navigation"], id="browser-click-two-hours-later"),
    pytest.param(hit(), None, "human", ["browser_navigation"],
                 id="browser-click-delivery-unknown"),
    pytest.param(hit(user_agent="Mozilla/5.0 (Linux; Android 13; CUBOT X30) AppleWebKit/537.36 "
                 "(KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36",
                 headers={**CHROME_NAV, "sec-ch-ua-platform": '"Android"'}), T0, "human",
                 ["browser_navigation"], id="cubot-phone-is-not-a-bot"),
    pytest.param(hit(user_agent="SomeApp/1.0"), T0, "unknown", ["unrecognised_user_agent"],
                 id="unrecognised"),
    pytest.param(hit(bare=True), T0, "machine", ["not_like_its_browser"],
                 id="browser-ua-without-its-headers"),
    pytest.param(hit(headers={"sec-fetch-user": ""}), T0, "machine",
                 ["programmatic_navigation"], id="browser-navigating-without-a-click"),
    pytest.param(hit(headers={"accept-language": ""}), T0, "unknown",
                 ["unusual_request", "browser"], id="browser-without-accept-language"),
    pytest.param(hit(headers={"accept-language": "", "accept": "*/*"}), T0, "machine",
                 ["unusual_request"], id="browser-without-two-of-its-headers"),
    pytest.param(hit(bare=True, headers={"via": "1.1 proxy.corp"}), T0, "machine",
                 ["not_like_its_browser"], id="no-fetch-metadata-behind-a-proxy"),
    # Scanners, time, network.
    pytest.param(hit(at=s(4), network="microsoft"), T0, "machine",
                 ["scanner_network", "browser_navigation", "soon_after_delivery"],
                 id="safe-links-scan-after-delivery"),
    # People click reset links within seconds: timing alone does not outweigh a request
    # that is exactly a person's browser.
    pytest.param(hit(at=s(6)), T0, "human", ["browser_navigation", "soon_after_delivery"],
                 id="person-seconds-after-delivery"),
    pytest.param(hit(at=s(6), bare=True), T0, "machine",
                 ["not_like_its_browser", "soon_after_delivery"],
                 id="browser-ua-seconds-after-delivery"),
    pytest.param(hit("open", bare=True), T0, "machine", ["not_like_its_browser"],
                 id="pixel-with-a-browser-ua-and-no-image-headers"),
    pytest.param(hit("open"), T0, "human", ["browser"], id="pixel-in-a-webmail-page"),
    pytest.param(hit(at=s(-3), headers={"sec-fetch-user": ""}), T0, "machine",
                 ["programmatic_navigation", "soon_after_delivery"],
                 id="inline-gateway-before-the-250"),
    pytest.param(hit(at=s(31)), T0, "human", ["browser_navigation"], id="just-outside-the-window"),
    pytest.param(hit(network="proofpoint"), T0, "machine",
                 ["scanner_network", "browser_navigation"], id="proofpoint-range-later"),
    pytest.param(hit(user_agent="Barracuda Sentinel (EE)"), T0, "machine",
                 ["scanner_user_agent"], id="barracuda-sentinel"),
    pytest.param(hit(user_agent="Mozilla/5.0 (compatible; MicrosoftPreview/2.0; "
                 "+https://aka.ms/MicrosoftPreview)"), T0, "machine", ["scanner_user_agent"],
                 id="microsoft-preview"),
    pytest.param(hit(user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
                 "Gecko) HeadlessChrome/120.0.0.0 Safari/537.36"), T0, "machine",
                 ["headless_browser"], id="headless-chrome"),
    pytest.param(hit(user_agent="python-requests/2.31.0"), T0, "machine",
                 ["library_user_agent"], id="python-requests"),
    pytest.param(hit(user_agent="curl/8.4.0"), T0, "machine", ["library_user_agent"], id="curl"),
    pytest.param(hit(user_agent=""), T0, "machine", ["empty_user_agent"], id="empty-ua"),
    pytest.param(hit(user_agent="Mozilla/5.0 (compatible; ExampleCrawler/1.0; "
                 "+http://example.org/bot)"), T0, "machine", ["crawler_user_agent"],
                 id="self-declared-crawler"),
    # Method and intent.
    pytest.param(hit(method="HEAD"), T0, "machine", ["head_request", "browser_navigation"],
                 id="head"),
    pytest.param(hit(headers={"sec-purpose": "prefetch"}), T0, "machine",
                 ["prefetch_header", "browser_navigation"], id="sec-purpose-prefetch"),
    pytest.param(hit(headers={"sec-purpose": "prefetch;prerender"}), T0, "machine",
                 ["prefetch_header", "browser_navigation"], id="sec-purpose-prerender"),
    pytest.param(hit(headers={"purpose": "prefetch"}), T0, "machine",
                 ["prefetch_header", "browser_navigation"], id="legacy-purpose"),
    pytest.param(hit(user_agent=SAFARI, headers={"x-purpose": "preview"}), T0, "machine",
                 ["prefetch_header", "browser_navigation"], id="safari-x-purpose-preview"),
    pytest.param(hit(headers={"x-moz": "prefetch"}), T0, "machine",
                 ["prefetch_header", "browser_navigation"], id="firefox-x-moz"),
    pytest.param(hit(honeypot=True, index=9), T0, "machine",
                 ["honeypot", "browser_navigation"], id="honeypot"),
])
def test_judge_one_hit(h: Hit, accepted: datetime | None, verdict: str, codes: list[str]) -> None:
    j = judge(h, Context(accepted))
    assert (j.verdict, list(j.codes)) == (verdict, codes)


@pytest.mark.parametrize("ua", [
    pytest.param("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", id="slack"),
    pytest.param("Twitterbot/1.0", id="twitter"),
    pytest.param("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
                 id="facebook"),
    pytest.param("WhatsApp/2.23.20.0 A", id="whatsapp"),
    pytest.param("TelegramBot (like TwitterBot)", id="telegram"),
    pytest.param("Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
                 id="discord"),
    pytest.param("Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5", id="skype"),
    pytest.param("LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
                 id="linkedin"),
])
def test_link_previews_are_not_clicks(ua: str) -> None:
    j = judge(hit(user_agent=ua))
    assert (j.verdict, j.codes) == (Verdict.MACHINE, ("link_preview",))


def clicks(*spec: tuple[float, int, str]) -> list[tuple[str, Hit]]:
    return [(f"h{n}", hit(at=s(t), index=i, client=ip(c))) for n, (t, i, c) in enumerate(spec)]


@pytest.mark.parametrize("hits, burst", [
    pytest.param(clicks((100, 1, "192.0.2.10"), (101, 2, "192.0.2.11"), (102, 3, "192.0.2.12"),
                        (103, 4, "192.0.2.13")), {"h0", "h1", "h2", "h3"},
                 id="four-links-in-3s-from-one-24"),
    pytest.param(clicks((100, 1, "192.0.2.10"), (102, 2, "192.0.2.10")), set(),
                 id="two-links-is-a-person"),
    pytest.param(clicks((100, 1, "192.0.2.10"), (115, 2, "192.0.2.10"), (130, 3, "192.0.2.10")),
                 set(), id="three-links-slowly"),
    pytest.param(clicks((100, 1, "192.0.2.10"), (100.5, 1, "192.0.2.10"), (101, 1, "192.0.2.10"),
                        (101.5, 1, "192.0.2.10")), set(), id="same-link-repeated"),
    pytest.param(clicks((100, 1, "192.0.2.10"), (101, 2, "198.51.100.10"), (102, 3, "203.0.113.1")),
                 set(), id="different-networks"),
    pytest.param(clicks((100, 1, "2001:db8:1:2::a"), (101, 2, "2001:db8:1:2::b"),
                        (102, 3, "2001:db8:1:2::c")), {"h0", "h1", "h2"}, id="one-ipv6-64"),
    pytest.param(clicks((100, 1, "2001:db8:1:2::a"), (101, 2, "2001:db8:1:3::a"),
                        (102, 3, "2001:db8:1:4::a")), set(), id="different-ipv6-64s"),
    pytest.param(clicks((50, 9, "192.0.2.10"), (100, 1, "192.0.2.10"), (104, 2, "192.0.2.10"),
                        (109, 3, "192.0.2.10"), (500, 4, "192.0.2.10")),
                 {"h1", "h2", "h3"}, id="only-the-burst-not-before-or-after"),
    pytest.param([*clicks((100, 1, "192.0.2.10"), (101, 2, "192.0.2.10")),
                  ("o", hit("open", at=s(100.5), client=ip("192.0.2.10")))], set(),
                 id="opens-are-not-links"),
])
def test_burst_on_rejudge(hits: list[tuple[str, Hit]], burst: set[str]) -> None:
    got = rejudge(hits)
    assert [i for i, _ in got] == [i for i, _ in hits]
    assert {i for i, j in got if "burst" in j.codes} == burst
    # A burst is weak evidence: these requests are each a person's browser navigation
    # (someone opening links in tabs), which outweighs it.
    assert all(j.verdict is Verdict.HUMAN for _, j in got)


def test_burst_decides_when_the_request_does_not_speak_for_a_person() -> None:
    """An unrecognised client sweeping links: the burst is the only leaning evidence."""
    hits = [(n, hit(at=s(100 + n), index=n + 1, user_agent="SomeApp/1.0")) for n in range(3)]
    assert {j.verdict for _, j in rejudge(hits)} == {Verdict.MACHINE}


def test_burst_seen_later_marks_the_first_click() -> None:
    hits = clicks((100, 1, "192.0.2.10"), (101, 2, "192.0.2.77"), (102, 3, "192.0.2.10"),
                  (103, 4, "192.0.2.200"))
    first = hits[0][1]
    # At answer time only the first click was known.
    assert "burst" not in judge(first, Context(T0)).codes
    later = judge(first, Context(T0, [h for _, h in hits]))
    assert [r.evidence for r in later.reasons if r.code == "burst"] == ["4 links in 3.0 s"]


def _burst_by_definition(hit: Hit, others: list[Hit], th: Thresholds) -> str | None:
    """The burst rule read literally: try every window [start, start + w] that starts at a
    click no later than the hit and holds it; the first with enough distinct links wins."""
    w = th.burst_window
    near = sorted([(o.at, o.index) for o in others if abs(o.at - hit.at) <= w]
                  + [(hit.at, hit.index)], key=lambda p: p[0])
    if len(near) < th.burst_links:
        return None
    for start, _ in near:
        if start > hit.at:
            break
        inside = [(t, i) for t, i in near if start <= t <= start + w]
        links = {i for _, i in inside}
        if len(links) >= th.burst_links:
            return f"{len(links)} links in {(inside[-1][0] - inside[0][0]).total_seconds():.1f} s"
    return None


def test_burst_evidence_matches_its_definition_on_random_clicks() -> None:
    # Whole seconds and few links: many ties and repeated links, where a windowing slip shows.
    th = Thresholds()
    rng = random.Random(20261127)
    seen = set()
    for _ in range(3000):
        n = rng.randint(1, 12)
        clicks = [hit(at=s(rng.randint(0, 30)), index=rng.randint(1, 5), client=ip("192.0.2.9"))
                  for _ in range(n)]
        me, others = clicks[0], clicks[1:]
        got = judge(me, Context(None, others), th)
        evidence = [r.evidence for r in got.reasons if r.code == "burst"]
        expected = _burst_by_definition(me, others, th)
        assert evidence == ([expected] if expected else []), (me, others)
        seen.add(bool(expected))
    assert seen == {True, False}


def test_burst_groups_by_network_label() -> None:
    hits = [(n, hit(at=s(100 + n), index=n, client=ip(a), network="corp-proxy"))
            for n, a in enumerate(("192.0.2.1", "198.51.100.1", "203.0.113.1"))]
    assert all("burst" in j.codes for _, j in rejudge(hits))


def test_honeypot_marks_the_same_clients_other_hits() -> None:
    hits = [
        ("open", hit("open", at=s(200), client=ip("192.0.2.10"))),
        ("first", hit(at=s(300), index=1, client=ip("192.0.2.10"))),
        ("trap", hit(at=s(301), index=7, client=ip("192.0.2.11"), honeypot=True)),
        ("person", hit(at=LATER, index=1, client=ip("203.0.113.5"))),
    ]
    got = dict(rejudge(hits, Context(T0)))
    assert got["trap"].verdict is Verdict.MACHINE and "honeypot" in got["trap"].codes
    for name in ("open", "first"):
        assert got[name].verdict is Verdict.MACHINE
        assert got[name].codes[0] == "honeypot_client"
        assert got[name].reasons[0].evidence == "192.0.2.11"
    assert got["person"] == Judgement(Verdict.HUMAN, (
        Reason("browser_navigation", "Chrome 120", Verdict.HUMAN, decided=True),))


def test_rejudge_is_deterministic_and_order_free() -> None:
    hits = [*clicks((100, 1, "192.0.2.10"), (101, 2, "192.0.2.11"), (102, 3, "192.0.2.12"),
                    (7000, 1, "203.0.113.9")),
            ("mpp", hit("open", at=s(900), user_agent="Mozilla/5.0", network="apple-mpp"))]
    expected = dict(rejudge(hits, Context(T0)))
    shuffled = hits[:]
    random.Random(4).shuffle(shuffled)
    assert dict(rejudge(shuffled, Context(T0))) == expected
    assert dict(rejudge(hits, Context(T0))) == expected


def test_thresholds_are_honoured() -> None:
    strict = Thresholds(soon_after_delivery=timedelta(seconds=60), burst_links=2,
                        burst_window=timedelta(seconds=3), group_prefix_v4=16)
    app = hit(at=s(45), user_agent="SomeApp/1.0")
    assert judge(app, Context(T0), strict).verdict is Verdict.MACHINE
    assert judge(app, Context(T0)).verdict is Verdict.UNKNOWN
    two = clicks((100, 1, "192.0.2.10"), (102, 2, "192.0.200.1"))
    assert all("burst" in j.codes for _, j in rejudge(two, Context(), strict))
    assert not any("burst" in j.codes for _, j in rejudge(two))


def test_every_reason_has_an_honest_sentence() -> None:
    for code in TEXTS:
        text = reason_text(code, "x")
        assert text and "{" not in text and text[0].isupper(), code
    r = Reason("apple_mpp_prefetch", "Mozilla/5.0 from apple-mpp", Verdict.MACHINE)
    assert r.text.startswith("Apple Mail Privacy Protection prefetch")
    assert "whether or not it is read" in r.text
    assert reason_text("some_future_code", "42") == "some future code: 42"
    assert r.record() == HitReason("apple_mpp_prefetch", "Mozilla/5.0 from apple-mpp", "machine",
                                   "decisive")
    assert Reason("private_relay", "apple-mpp").record().leans == ""


def test_hit_from_stored_record() -> None:
    rec = HitRecorded(hit_id="a", target="open", tracking_id="t", at=T0, client="192.0.2.0/24",
                      network="apple-mpp", user_agent="Mozilla/5.0",
                      headers=(("sec-purpose", "prefetch"),))
    h = hit_from_record(rec)
    assert (h.kind, h.client, h.network, dict(h.headers)) == (
        "open", ip("192.0.2.0"), "apple-mpp", {"sec-purpose": "prefetch"})
    assert judge(h).codes == ("prefetch_header", "apple_mpp_prefetch")
    assert hit_from_record(HitRecorded(hit_id="b", target="click", tracking_id="t", at=T0)
                           ).client is None



def _nav_clicks(clients: list[str], minutes_apart: float, links: int = 5
                ) -> list[tuple[int, Hit]]:
    return [(n, hit(at=s(100 + n * minutes_apart * 60), index=n + 1, client=ip(c)))
            for n, c in enumerate(clients[:links])]


def test_every_link_needs_one_client_within_minutes_to_decide() -> None:
    """A sandbox: one address, every link within minutes, decisive. People sharing one
    office network, each clicking one link hours apart: no evidence. Several addresses of
    one network within minutes: strong, so a person's exact browser request is not
    outweighed (unknown at worst)."""
    one = _nav_clicks(["198.51.100.10"] * 5, 0.5)
    assert {j.verdict for _, j in rejudge(one, Context(links=5))} == {Verdict.MACHINE}
    office = _nav_clicks([f"198.51.100.{10 + n}" for n in range(5)], 60)
    judged = rejudge(office, Context(links=5))
    assert all(j.verdict is Verdict.HUMAN and "every_link" not in j.codes for _, j in judged)
    nat = _nav_clicks([f"198.51.100.{10 + n}" for n in range(5)], 0.5)
    judged = rejudge(nat, Context(links=5))
    assert all("every_link" in j.codes for _, j in judged)
    assert all(j.verdict is not Verdict.MACHINE for _, j in judged)
