"""Does a click look like the browser its User-Agent names? Pure: headers in, finding out.

A person's click on a link is a top-level navigation, and each browser family sends a known
set of request headers with one. A program that borrows a browser's User-Agent rarely sends
the rest; a browser driven by a program navigates without user activation. What is checked,
and why:

| header | who sends it on a navigation | source |
|---|---|---|
| `Sec-Fetch-Site`, `-Mode: navigate`, `-Dest: document` | Chromium 80+ (Site/Mode 76+), Firefox 90+, Safari 16.4+ — to secure origins only (https, and loopback) | W3C Fetch Metadata Request Headers; chromestatus.com/feature/5155867204780032; MDN Firefox 90 release notes; WebKit "Features in Safari 16.4" |
| `Sec-Fetch-User: ?1` | Chromium and Firefox, when the navigation was user-activated (a click, a typed URL, a link opened from another app); never on `page.goto()`-style programmatic navigation; WebKit does not send it | Fetch Metadata §2.4; HTML "tracking user activation" |
| `Sec-CH-UA` (brands with the major version) | Chromium 89+ by default to secure origins; never Firefox or Safari | WICG User-Agent Client Hints; developer.chrome.com "User-Agent Client Hints" |
| `Sec-CH-UA-Platform` | Chromium 93+ by default | same |
| `Accept: text/html,…` | every browser's navigation | MDN "List of default Accept values" |
| `Accept-Language` | every browser | RFC 9110 §12.5.4; browsers send the user's language list |

Thresholds are a few versions past each browser's first release of a header, so a
browser just before it is never called inconsistent. Android WebView (`; wv)`) navigations
come from an app's code, so they say nothing about activation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache


class Fit(StrEnum):
    """How a click's request fits the browser its User-Agent names."""

    CONSISTENT = "consistent"  # everything the browser sends, user-activated (or WebKit)
    NO_ACTIVATION = "no_activation"  # like the browser, but navigated by a program
    UNUSUAL = "unusual"  # a header every such navigation carries is missing
    INCONSISTENT = "inconsistent"  # cannot be that browser: missing Fetch Metadata, wrong mode, …
    UNCHECKED = "unchecked"  # nothing to compare: an old version, an insecure origin, …


@dataclass(frozen=True, slots=True)
class Browser:
    family: str  # chromium | firefox | webkit | other
    name: str  # Chrome, Edge, Opera, Firefox, Safari, …
    major: int  # the engine's major version (Chromium's, Firefox's, Safari's / iOS's)
    platform: str = ""  # Windows | macOS | Linux | Android | Chrome OS | iOS
    webview: bool = False


@dataclass(frozen=True, slots=True)
class Finding:
    fit: Fit
    evidence: str = ""  # what was missing or wrong, or what matched
    # A gap a person's setup can explain (one header a privacy setting or an extension
    # drops; Fetch Metadata missing behind a proxy that says it is one, Via): weighed
    # lighter by the verdict.
    minor: bool = False


# Versions from which a navigation always carries the header (see the table above, plus a
# margin of a few releases).
CHROMIUM_FETCH_METADATA = 80
CHROMIUM_CLIENT_HINTS = 90
CHROMIUM_PLATFORM_HINT = 95
FIREFOX_FETCH_METADATA = 90
WEBKIT_FETCH_METADATA = (16, 4)

_CHROME = re.compile(r"\bchrome/(\d+)")
_EDGE = re.compile(r"\bedg/(\d+)")
_OPERA = re.compile(r"\bopr/(\d+)")
_FIREFOX = re.compile(r"\bfirefox/(\d+)")
_SAFARI = re.compile(r"\bversion/(\d+)(?:\.(\d+))?.*\bsafari/")
_IOS = re.compile(r"\b(?:iphone|ipad|ipod).*? os (\d+)(?:_(\d+))?")
_BRAND = re.compile(r'"([^"]*)"\s*;\s*v\s*=\s*"(\d+)')


_CROS = re.compile(r"\bcros\b")


def _platform(low: str) -> str:
    if "android" in low:
        return "Android"
    if "windows nt" in low:
        return "Windows"
    if _CROS.search(low):  # a token: "microsoft" holds "cros"
        return "Chrome OS"
    if "macintosh" in low or "mac os x" in low:
        return "macOS"
    if "linux" in low or "x11" in low:
        return "Linux"
    return ""


@lru_cache(maxsize=4096)
def browser_of(user_agent: str) -> Browser | None:
    """The browser engine and version a User-Agent claims; None for anything else. Cached,
    as classify_agent is: a few strings make most of the traffic, asked on every click."""
    low = user_agent.lower()
    if not low.startswith("mozilla/5.0 ("):
        return None
    ios = _IOS.search(low)
    if ios:  # every iOS browser is WebKit at the system's version (CriOS, FxiOS, EdgiOS too)
        major, minor = int(ios.group(1)), int(ios.group(2) or 0)
        return Browser("webkit", "Safari (iOS)", major * 100 + minor, "iOS")
    chrome = _CHROME.search(low)
    if chrome:
        name = "Edge" if _EDGE.search(low) else "Opera" if _OPERA.search(low) else "Chrome"
        # Android WebView says "; wv)", but apps that set their own user agent drop it and
        # keep WebView's "Version/4.0" before "Chrome/" (Chrome for Android never sends it).
        webview = "; wv)" in low or ("android" in low and "version/4.0" in low)
        return Browser("chromium", name, int(chrome.group(1)), _platform(low),
                       webview=webview)
    firefox = _FIREFOX.search(low)
    if firefox:
        return Browser("firefox", "Firefox", int(firefox.group(1)), _platform(low))
    safari = _SAFARI.search(low)
    if safari and "macintosh" in low:
        major, minor = int(safari.group(1)), int(safari.group(2) or 0)
        return Browser("webkit", "Safari", major * 100 + minor, "macOS")
    return None


_PLATFORM_HINTS = {"windows": "Windows", "macos": "macOS", "linux": "Linux",
                   "android": "Android", "chrome os": "Chrome OS", "chromeos": "Chrome OS"}


def check_click(user_agent: str, headers: Mapping[str, str], *, secure: bool = True,
                hints_kept: bool = True) -> Finding:
    """How a click's request fits the browser its User-Agent claims.

    `headers`: lower-cased names. `secure`: the tracker's origin is https (or loopback), the
    only origins browsers send Fetch Metadata and client hints to. `hints_kept`: whether the
    tracker that recorded the hit kept the client-hint headers (older ones did not).
    """
    b = browser_of(user_agent)
    if b is None:
        return Finding(Fit.UNCHECKED)
    if not secure:
        return Finding(Fit.UNCHECKED, f"{b.name} {_ver(b)} on an http origin")
    hints = headers.get("sec-ch-ua")
    early = _hints_or_age(b, hints)
    if early is not None:
        return early
    who = f"{b.name} {_ver(b)}"
    site, mode, dest = (headers.get(f"sec-fetch-{k}") for k in ("site", "mode", "dest"))
    if site is None and mode is None and dest is None:
        # Behind a proxy that says so (Via), it may have dropped them: weighed lighter.
        return Finding(Fit.INCONSISTENT, f"no Sec-Fetch-* headers, which {who} sends on "
                       "every navigation", minor=bool(headers.get("via")))
    if mode is not None and mode.lower() != "navigate":
        return Finding(Fit.INCONSISTENT, f"Sec-Fetch-Mode: {mode[:20]}, not a navigation")
    if dest is not None and dest.lower() not in ("document", "iframe"):
        return Finding(Fit.INCONSISTENT, f"Sec-Fetch-Dest: {dest[:20]}, not a page")
    if b.family == "chromium" and hints_kept and hints is not None:
        versions = {int(v) for _, v in _BRAND.findall(hints)}
        if versions and b.major not in versions:
            return Finding(Fit.INCONSISTENT, f"client hints say version "
                           f"{'/'.join(map(str, sorted(versions)))}, the user agent {b.major}")
        platform = headers.get("sec-ch-ua-platform", "").strip().strip('"').lower()
        claimed = _PLATFORM_HINTS.get(platform)
        # Chrome's "desktop site" on Android (the default on large tablets) sends a Linux
        # user agent with the Android platform hint.
        desktop_site = (claimed, b.platform) == ("Android", "Linux")
        if claimed and b.platform and claimed != b.platform and not desktop_site:
            return Finding(Fit.INCONSISTENT, f"client hints say {claimed}, the user agent "
                           f"{b.platform}")
    missing = [h for h, v in (("Sec-Fetch-Site", site), ("Sec-Fetch-Mode", mode),
                              ("Sec-Fetch-Dest", dest)) if v is None]
    accept = headers.get("accept", "")
    if not accept.lower().startswith("text/html"):
        missing.append("Accept: text/html")
    if not headers.get("accept-language"):
        missing.append("Accept-Language")
    if (b.family == "chromium" and hints_kept and hints is None and not b.webview
            and b.major >= CHROMIUM_CLIENT_HINTS):
        missing.append("Sec-CH-UA")
    if missing:
        # One header a privacy setting or an extension may drop: minor.
        minor = len(missing) == 1 and missing[0] in ("Accept-Language", "Sec-CH-UA")
        return Finding(Fit.UNUSUAL, f"{who} without {', '.join(missing)}", minor=minor)
    if b.family in ("chromium", "firefox") and not b.webview:
        if headers.get("sec-fetch-user", "").strip() != "?1":
            return Finding(Fit.NO_ACTIVATION, f"{who} navigation without Sec-Fetch-User: "
                           "not started by a person's click")
    return Finding(Fit.CONSISTENT, who)


def check_image(user_agent: str, headers: Mapping[str, str], *, secure: bool = True) -> Finding:
    """How a pixel load fits the browser its User-Agent claims (a webmail page showing the
    image without a proxy): an image request carries `Sec-Fetch-Dest: image` with mode
    `no-cors` (Fetch Metadata; the HTML `img` element's request) and an Accept naming image
    types. Only what cannot be that browser is reported (INCONSISTENT, UNUSUAL); a request
    that fits is UNCHECKED, since an image load says little of who looked."""
    b = browser_of(user_agent)
    if b is None or not secure:
        return Finding(Fit.UNCHECKED)
    early = _hints_or_age(b, headers.get("sec-ch-ua"))
    if early is not None:
        return early
    who = f"{b.name} {_ver(b)}"
    site, mode, dest = (headers.get(f"sec-fetch-{k}") for k in ("site", "mode", "dest"))
    if site is None and mode is None and dest is None:
        return Finding(Fit.INCONSISTENT, f"no Sec-Fetch-* headers, which {who} sends with "
                       "every image it loads")
    if dest is not None and dest.lower() not in ("image", "empty"):
        return Finding(Fit.INCONSISTENT, f"Sec-Fetch-Dest: {dest[:20]}, not an image")
    if not headers.get("accept"):
        return Finding(Fit.UNUSUAL, f"{who} without Accept")
    return Finding(Fit.UNCHECKED, who)


def _hints_or_age(b: Browser, hints: str | None) -> Finding | None:
    """What settles a request before its Fetch Metadata is read: client hints from a
    browser that never sends them, or a version from before Fetch Metadata."""
    if hints is not None and b.family != "chromium":
        return Finding(Fit.INCONSISTENT, f"{b.name} never sends Sec-CH-UA client hints")
    if b.family == "chromium":
        since = b.major >= CHROMIUM_FETCH_METADATA
    elif b.family == "firefox":
        since = b.major >= FIREFOX_FETCH_METADATA
    else:
        since = b.major >= WEBKIT_FETCH_METADATA[0] * 100 + WEBKIT_FETCH_METADATA[1]
    if not since:
        return Finding(Fit.UNCHECKED, f"{b.name} {_ver(b)} predates Fetch Metadata")
    return None


def _ver(b: Browser) -> str:
    return f"{b.major // 100}.{b.major % 100}" if b.family == "webkit" else str(b.major)
