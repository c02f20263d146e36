"""User-agent knowledge: token tables of machines, mail clients, browsers; `classify_agent`."""

from __future__ import annotations

import re
from functools import lru_cache

# Matched on the lower-cased user agent, first table first. Sources: the vendors' own strings
# (aka.ms/MicrosoftPreview, help.yahoo.com SLN28749, Barracuda campus "Unwanted link
# clicks"), Litmus/SocketLabs notes on proxies, and the bots' documentation pages.
_MACHINE_AGENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("headless_browser", ("headlesschrome", "phantomjs", "headlessfirefox")),
    ("link_preview", (
        "slackbot", "slack-imgproxy", "twitterbot", "facebookexternalhit", "facebot",
        "whatsapp", "telegrambot", "discordbot", "skypeuripreview", "linkedinbot", "embedly",
        "iframely", "redditbot", "pinterestbot", "applebot", "vkshare", "mastodon",
        "google-pagerenderer")),
    # Mail security gateways and link checkers that name themselves. Most (Safe Links,
    # Proofpoint, Mimecast) send ordinary browser strings instead: networks, timing and
    # bursts catch those.
    ("scanner_user_agent", (
        # MicrosoftPreview renders previews of links in Outlook and Teams mail.
        "microsoftpreview", "bingpreview", "barracuda sentinel", "barracuda", "proofpoint",
        "mimecast", "ironport", "trendmicro", "trend micro",
        "symantec", "forcepoint", "sophos", "mcafee", "fireeye", "google-safety",
        # Office apps probe a link before handing it to the browser.
        "microsoft office existence discovery", "microsoft office protocol discovery")),
    ("library_user_agent", (
        "python-requests", "python-urllib", "python-httpx", "aiohttp", "curl/", "libcurl",
        "wget/", "go-http-client", "java/", "okhttp", "apache-httpclient", "libwww-perl",
        "lwp::", "node-fetch", "axios/", "undici", "guzzlehttp", "php/", "ruby", "faraday",
        "httpie", "postmanruntime", "insomnia", "powershell", "winhttp", "scrapy", "reqwest",
        "http.rb", "httpclient")),
)
# Outlook desktop fetches images as "Microsoft Office/16.0 (…; Microsoft Outlook 16.0…)" or
# "Mozilla/4.0 (compatible; ms-office; MSOffice 16)": a mail client, though general crawler
# lists flag it as a bot.
_MAIL_AGENTS: tuple[tuple[str, str], ...] = (
    ("microsoft outlook", "Microsoft Outlook"), ("microsoft office/", "Microsoft Office"),
    ("ms-office", "Microsoft Outlook (ms-office)"), ("msoffice", "Microsoft Outlook"),
    ("outlook-ios", "Outlook for iOS"), ("outlook-android", "Outlook for Android"),
    ("thunderbird/", "Thunderbird"), ("em client", "eM Client"), ("mailbird", "Mailbird"),
    ("postbox/", "Postbox"), ("airmail", "Airmail"), ("evolution/", "Evolution"),
    ("claws mail", "Claws Mail"), ("seamonkey/", "SeaMonkey"), ("kmail", "KMail"),
)
# Whole user agents of HTTP clients too short to match as tokens: Node's built-in fetch
# sends "node" (nodejs.org/api/globals.html#fetch, via undici), undici itself "undici".
_LIBRARY_EXACT = frozenset({"node", "undici", "deno", "bun"})
_CRAWLER = re.compile(r"\b[\w-]*(?:bot|crawler|spider)\b|\+https?://")
_NOT_CRAWLER = ("cubot",)  # a phone brand in Android user agents
# Apple Mail's own fetch: a WebKit string with no browser product token ("Safari/").
_APPLE_MAIL = re.compile(
    r"^mozilla/5\.0 \((?:macintosh|iphone|ipad)[^)]*\) applewebkit/[\d.]+ \(khtml, like gecko\)"
    r"(?: mobile/\w+)?$")
_BROWSER_TOKEN = re.compile(r"(edg|edge|opr|firefox|fxios|crios|chrome|version|safari|trident)"
                            r"/(\d+)")
_BROWSER_NAMES = {"edg": "Edge", "edge": "Edge", "opr": "Opera", "firefox": "Firefox",
                  "fxios": "Firefox", "crios": "Chrome", "chrome": "Chrome",
                  "version": "Safari", "safari": "Safari", "trident": "Internet Explorer"}


@lru_cache(maxsize=8192)
def classify_agent(user_agent: str) -> tuple[str, str]:
    """(category, evidence) for a user agent; cached because a few strings make most traffic.
    Categories: empty, bare, gmail, yahoo, a machine reason code, mail, browser, other."""
    ua = user_agent.strip()
    if not ua:
        return "empty", ""
    low = ua.lower()
    if low == "mozilla/5.0":
        return "bare", "Mozilla/5.0"
    if low in _LIBRARY_EXACT:
        return "library_user_agent", ua
    if "googleimageproxy" in low:
        return "gmail", "GoogleImageProxy"
    if "yahoomailproxy" in low:
        return "yahoo", "YahooMailProxy"
    for code, tokens in _MACHINE_AGENTS:
        for token in tokens:
            if token in low:
                return code, _original(ua, low, token)
    for token, name in _MAIL_AGENTS:
        if token in low:
            return "mail", name
    m = _CRAWLER.search(low)
    if m and m.group(0) not in _NOT_CRAWLER:
        return "crawler_user_agent", _original(ua, low, m.group(0))
    if _APPLE_MAIL.match(low):
        return "mail", "Apple Mail"
    if low.startswith("mozilla/5.0 (") and any(
            e in low for e in ("applewebkit/", "gecko/", "trident/")):
        found = {name: int(ver) for name, ver in _BROWSER_TOKEN.findall(low)}
        for token in ("edg", "edge", "opr", "firefox", "fxios", "crios", "chrome", "version",
                      "safari", "trident"):
            if token in found:
                return "browser", f"{_BROWSER_NAMES[token]} {found[token]}"
        return "browser", "in-app browser"
    return "other", ua[:80]


def _original(ua: str, low: str, token: str) -> str:
    """The matched token as the client wrote it (lower() keeps positions for ASCII)."""
    i = low.find(token)
    return ua[i:i + len(token)].strip() if len(low) == len(ua) else token
