"""Does a request look like the browser its User-Agent names (trackmilter.navigation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trackmilter.model import new_tracking_id, tracking_id_time
from trackmilter.navigation import Fit, browser_of, check_click, check_image

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
EDGE = CHROME + " Edg/131.0.0.0"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
          "Gecko) Version/17.6 Safari/605.1.15")
IOS_CHROME = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1")
OLD_SAFARI = SAFARI.replace("Version/17.6", "Version/15.6")
WEBVIEW = ("Mozilla/5.0 (Linux; Android 14; Pixel 8; wv) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Version/4.0 Chrome/131.0.6778.81 Mobile Safari/537.36")

DDG = ("Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
       "Chrome/131.0.0.0 Mobile Safari/537.36 DuckDuckGo/5")
MAC_CHROME_MS = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
                 "Gecko) Chrome/131.0.0.0 Safari/537.36 Microsoft")

NAV = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document",
       "accept": "text/html,application/xhtml+xml,*/*;q=0.8", "accept-language": "en"}
HINTS = {"sec-ch-ua": '"Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"',
         "sec-ch-ua-platform": '"Windows"'}
USER = {"sec-fetch-user": "?1"}


@pytest.mark.parametrize("ua, headers, fit", [
    pytest.param(CHROME, {**NAV, **HINTS, **USER}, Fit.CONSISTENT, id="chrome-person"),
    pytest.param(EDGE, {**NAV, **USER, "sec-ch-ua": '"Microsoft Edge";v="131", '
                        '"Chromium";v="131"'}, Fit.CONSISTENT, id="edge-person"),
    pytest.param(FIREFOX, {**NAV, **USER}, Fit.CONSISTENT, id="firefox-person"),
    pytest.param(SAFARI, NAV, Fit.CONSISTENT, id="safari-sends-no-sec-fetch-user"),
    pytest.param(IOS_CHROME, NAV, Fit.CONSISTENT, id="ios-chrome-is-webkit"),
    pytest.param(WEBVIEW, NAV, Fit.CONSISTENT, id="android-webview-no-activation-known"),
    pytest.param(CHROME, {**NAV, **HINTS}, Fit.NO_ACTIVATION, id="chrome-page-goto"),
    pytest.param(FIREFOX, NAV, Fit.NO_ACTIVATION, id="firefox-driven"),
    pytest.param(CHROME, {"accept": "*/*"}, Fit.INCONSISTENT, id="script-with-chrome-ua"),
    pytest.param(CHROME, {**NAV, **USER, "sec-fetch-mode": "cors"}, Fit.INCONSISTENT,
                 id="fetch-not-navigation"),
    pytest.param(CHROME, {**NAV, **USER, "sec-ch-ua": '"Chromium";v="120"'}, Fit.INCONSISTENT,
                 id="hints-of-another-version"),
    pytest.param(CHROME, {**NAV, **USER, **HINTS, "sec-ch-ua-platform": '"Linux"'},
                 Fit.INCONSISTENT, id="hints-of-another-platform"),
    pytest.param(FIREFOX, {**NAV, **USER, **HINTS}, Fit.INCONSISTENT,
                 id="firefox-never-sends-client-hints"),
    pytest.param(CHROME, {**NAV, **USER}, Fit.UNUSUAL, id="chrome-without-client-hints"),
    pytest.param(CHROME, {**NAV, **USER, **HINTS, "accept-language": ""}, Fit.UNUSUAL,
                 id="no-accept-language"),
    pytest.param(CHROME, {**NAV, **USER, **HINTS, "accept": "*/*"}, Fit.UNUSUAL,
                 id="navigation-accepting-anything"),
    pytest.param(OLD_SAFARI, {}, Fit.UNCHECKED, id="safari-before-fetch-metadata"),
    pytest.param(DDG, {**NAV, **USER}, Fit.CONSISTENT, id="webview-without-wv-token"),
    pytest.param(CHROME.replace("Windows NT 10.0; Win64; x64", "X11; Linux x86_64"),
                 {**NAV, **USER, **HINTS, "sec-ch-ua-platform": '"Android"'},
                 Fit.CONSISTENT, id="android-desktop-site"),
    pytest.param(MAC_CHROME_MS, {**NAV, **USER, **HINTS, "sec-ch-ua-platform": '"macOS"'},
                 Fit.CONSISTENT, id="microsoft-in-the-ua-is-not-chrome-os"),
    pytest.param("SomeApp/1.0", {}, Fit.UNCHECKED, id="not-a-browser"),
])
def test_a_click_against_its_browser(ua: str, headers: dict[str, str], fit: Fit) -> None:
    assert check_click(ua, headers).fit is fit


def test_insecure_origins_get_no_fetch_metadata_so_nothing_is_checked() -> None:
    assert check_click(CHROME, {}, secure=False).fit is Fit.UNCHECKED


def test_hits_kept_without_client_hints_are_not_blamed_for_lacking_them() -> None:
    assert check_click(CHROME, {**NAV, **USER}, hints_kept=False).fit is Fit.CONSISTENT


def test_image_loads() -> None:
    img = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image",
           "accept": "image/avif,image/webp,*/*"}
    assert check_image(CHROME, img).fit is Fit.UNCHECKED  # fits: says little of who looked
    assert check_image(CHROME, {"accept": "*/*"}).fit is Fit.INCONSISTENT
    assert check_image(CHROME, {**img, "sec-fetch-dest": "document"}).fit is Fit.INCONSISTENT
    assert check_image(SAFARI, {**img, **HINTS}).fit is Fit.INCONSISTENT


def test_browser_versions() -> None:
    b = browser_of(CHROME)
    assert b is not None and (b.family, b.name, b.major, b.platform) == (
        "chromium", "Chrome", 131, "Windows")
    ios = browser_of(IOS_CHROME)
    assert ios is not None and (ios.family, ios.major) == ("webkit", 1706)
    assert browser_of("curl/8.4.0") is None


def test_the_tracking_id_carries_the_second_our_mta_accepted_the_message() -> None:
    at = datetime(2026, 12, 6, 7, 0, 5, tzinfo=UTC)
    tid = new_tracking_id(at)
    assert len(tid) == 16 and tid != new_tracking_id(at)  # the rest is random
    assert tracking_id_time(tid, at + timedelta(hours=1)) == at
    # A time in the future (beyond a day's clock difference) or before 2024 is no time:
    # an id from before the timed layout holds random bytes there.
    assert tracking_id_time(tid, at - timedelta(days=2)) is None
    assert tracking_id_time(new_tracking_id(datetime(2020, 1, 1, tzinfo=UTC)), at) is None
    assert tracking_id_time("not-an-id", at) is None



def test_gaps_a_persons_setup_explains_are_minor() -> None:
    one_gap = check_click(FIREFOX, {**NAV, **USER, "accept-language": ""})
    assert (one_gap.fit, one_gap.minor) == (Fit.UNUSUAL, True)
    proxied = check_click(CHROME, {"via": "1.1 proxy.corp", "accept": "text/html"})
    assert (proxied.fit, proxied.minor) == (Fit.INCONSISTENT, True)
    script = check_click(CHROME, {"accept": "*/*"})
    assert (script.fit, script.minor) == (Fit.INCONSISTENT, False)
