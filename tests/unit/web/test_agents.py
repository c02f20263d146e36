"""User-agent classification: what `classify_agent` makes of real clients' strings."""

from __future__ import annotations

import pytest

from trackmilter import agents, verdict
from trackmilter.agents import classify_agent

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
          "Gecko) Version/17.1 Safari/605.1.15")
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)"


@pytest.mark.parametrize("ua, category, evidence", [
    pytest.param(CHROME, "browser", "Chrome 120", id="chrome"),
    pytest.param(SAFARI, "browser", "Safari 17", id="safari"),
    pytest.param(CHROME + " Edg/120.0.2210.91", "browser", "Edge 120", id="edge"),
    pytest.param("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
                 "browser", "Firefox 121", id="firefox"),
    pytest.param(OUTLOOK, "mail", "Microsoft Outlook", id="outlook"),
    pytest.param("Outlook-iOS/709.2226530.prod.iphone (4.2350.0)", "mail", "Outlook for iOS",
                 id="outlook-ios"),
    pytest.param("Microsoft Office Existence Discovery", "scanner_user_agent",
                 "Microsoft Office Existence Discovery", id="office-link-probe"),
    pytest.param("  Mozilla/5.0 ", "bare", "Mozilla/5.0", id="bare-with-spaces"),
])
def test_classify_agent(ua: str, category: str, evidence: str) -> None:
    assert classify_agent(ua) == (category, evidence)


def test_verdict_re_exports_classify_agent() -> None:
    assert verdict.classify_agent is agents.classify_agent
