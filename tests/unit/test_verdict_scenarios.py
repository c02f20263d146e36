"""The verdict scenario set (tests/data/verdicts/) is well formed, and the verdict core meets
the verdict targets on it, first and final answers (tests/support/verdict_scenarios.py)."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
from tests.support.verdict_scenarios import (
    VERDICTS,
    Replay,
    ScenarioSet,
    format_report,
    load,
    meets_targets,
    replay,
)

HARD_CLASSES = ("hard1-transactional", "hard2-newsletter-tabs", "hard3-spoofed-browser",
                "hard4-sandbox-pace", "hard5-time-of-click")
# Headers every browser navigation of the set must carry (Fetch Metadata since Chrome 76,
# Firefox 90, Safari 16.4) and Chromium's default client hints on https.
FETCH_METADATA = ("sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest")
CLIENT_HINTS = ("sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform")


@pytest.fixture(scope="module")
def data() -> ScenarioSet:
    return load()


@pytest.fixture(scope="module")
def result(data: ScenarioSet) -> Replay:
    return replay(data)


def test_every_scenario_cites_known_sources(data: ScenarioSet) -> None:
    for s in data.scenarios:
        assert s.sources, s.id
        assert set(s.sources) <= set(data.sources), (s.id, set(s.sources) - set(data.sources))
    for c in data.clients.values():
        assert c.sources and set(c.sources) <= set(data.sources), c.name
        assert c.basis in ("specified", "reported", "derived"), c.name
    for n in data.networks:
        assert n.sources and set(n.sources) <= set(data.sources), n.label
    for src in data.sources.values():
        assert src.title and src.url and src.what, src.id


def test_every_hit_has_an_expected_verdict(data: ScenarioSet) -> None:
    for s, h in data.hits():
        assert h.expected in VERDICTS, (s.id, h)
        # `unknown` only where the evidence conflicts, and the scenario says how.
        assert h.expected != "unknown" or h.conflicting, (s.id, h)
        assert h.actor, (s.id, h)
        assert 1 <= h.link <= s.links if h.target == "click" else h.link == 0, (s.id, h)
        assert s.signed < 0 and h.t > s.signed, (s.id, h)  # signed before anything hits


def test_addresses_are_documentation_addresses(data: ScenarioSet) -> None:
    docs = data.documentation
    assert {str(n) for n in docs} == {"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                     "2001:db8::/32"}  # RFC 5737, RFC 3849

    def documented(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        return any(net.version == d.version and net.subnet_of(d)  # type: ignore[arg-type]
                   for d in docs)

    for s, h in data.hits():
        ip = ipaddress.ip_address(h.ip)
        assert documented(ipaddress.ip_network(ip)), (s.id, h.ip)
    for n in data.networks:
        assert all(documented(p) for p in n.prefixes), n.label


def test_browser_profiles_send_what_their_browser_sends(data: ScenarioSet) -> None:
    """The people's profiles are complete: a navigation carries Fetch Metadata and a
    browser's Accept; a Chromium one its three default client hints."""
    people = {h.client.name for _, h in data.hits() if h.human and h.target == "click"}
    assert people
    for name in people:
        c = data.clients[name]
        headers = dict(c.headers)
        assert all(k in headers for k in FETCH_METADATA), name
        assert headers["sec-fetch-mode"] == "navigate" and headers["sec-fetch-dest"] == "document"
        assert headers["sec-fetch-site"] in ("none", "cross-site"), name
        assert headers["accept"].startswith("text/html"), name
        assert "accept-language" in headers and "accept-encoding" in headers, name
        if "Chrome/" in headers["user-agent"]:
            assert all(k in headers for k in CLIENT_HINTS), name


def test_the_set_covers_every_case(data: ScenarioSet) -> None:
    per_class = Counter(s.cls for s, _ in data.hits())
    assert set(per_class) == {"single", *HARD_CLASSES}
    assert per_class["single"] >= 40
    assert all(per_class[c] >= 10 for c in HARD_CLASSES), per_class
    expected = Counter(h.expected for _, h in data.hits())
    total = sum(expected.values())
    assert total >= 150
    assert 0.35 <= expected["human"] / total <= 0.65, expected  # people and machines balanced


def test_the_replay_judges_every_hit(data: ScenarioSet, result: Replay) -> None:
    assert len(result.judged) == sum(len(s.hits) for s in data.scenarios)
    for j in result.judged:
        assert j.first in VERDICTS and j.final in VERDICTS
        assert j.first_reasons and j.final_reasons, j  # every verdict names its reasons
    report = format_report(result)
    assert "ALL" in report and "hard5-time-of-click" in report


@pytest.mark.parametrize("answer", ["first", "final"])
def test_the_verdicts_meet_the_targets(result: Replay, answer: str) -> None:
    """The targets: machine precision >= 0.95, machine recall >= 0.90, people kept >= 0.95."""
    score = result.score("first" if answer == "first" else "final")
    assert meets_targets(score), format_report(result)
