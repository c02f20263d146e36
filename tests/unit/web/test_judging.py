"""Settings into verdicts: [verdict] thresholds, [networks] sources, the request-time judge
and the store's reviser."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trackmilter.config import ConfigError, load
from trackmilter.judging import request_judge, reviser_from, thresholds_from
from trackmilter.model import HitRecorded
from trackmilter.web.networks import networks_from

DATA = Path(__file__).parent / "data"
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"


def settings(tmp_path: Path, text: str) -> object:
    p = tmp_path / "tm.toml"
    p.write_text(text)
    return load(p, environ={})


# Firefox's navigation when a person follows a link (W3C Fetch Metadata; MDN Accept
# defaults), as the tracker keeps it.
FIREFOX_NAV = (("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
               ("accept-language", "en-US,en;q=0.5"), ("sec-fetch-dest", "document"),
               ("sec-fetch-mode", "navigate"), ("sec-fetch-site", "cross-site"),
               ("sec-fetch-user", "?1"), ("x-trackmilter-kept", "2"))


def hit(n: int, seconds: float, *, ua: str = FIREFOX, client: str = "203.0.113.9",
        target: str = "click", network: str = "",
        headers: tuple[tuple[str, str], ...] = FIREFOX_NAV) -> HitRecorded:
    return HitRecorded(hit_id=f"h{n}", target=target, tracking_id="abcdefghijklmnop",
                       at=T0 + timedelta(seconds=seconds), index=n, client=client,
                       network=network, user_agent=ua, headers=headers)


def test_thresholds_and_sources_from_toml(tmp_path: Path) -> None:
    s = settings(tmp_path, f"""
[verdict]
burst_window = 5
burst_links = 4
scanner_networks = ["scanner"]
[networks]
sources = [
  {{ label = "apple-mpp", format = "apple-csv", path = "{DATA / 'apple-egress.csv'}" }},
  {{ label = "scanner", format = "cidr", path = "{DATA / 'scanners.cidr'}" }},
  {{ label = "later", format = "cidr", path = "{tmp_path / 'later.cidr'}", url = "https://x.example/l" }},
]
""")
    th = thresholds_from(s)  # type: ignore[arg-type]
    assert th.burst_window == timedelta(seconds=5) and th.burst_links == 4
    assert th.scanner_networks == frozenset({"scanner"})
    nets = networks_from(s)  # type: ignore[arg-type]
    assert nets is not None
    assert nets.lookup(ipaddress.ip_address("172.224.226.5")) == "apple-mpp"
    assert nets.lookup(ipaddress.ip_address("198.51.100.77")) == "scanner"
    assert nets.lookup(ipaddress.ip_address("192.0.2.1")) is None


@pytest.mark.parametrize(("text", "needle"), [
    pytest.param('[networks]\nsources = [{ label = "x", format = "csv", path = "/x" }]',
                 "[networks] sources: source 1: format must be one of", id="bad-format"),
    pytest.param('[networks]\nsources = [{ label = "x", format = "cidr" }]',
                 "source 1: path is required", id="no-path"),
    pytest.param('[networks]\nsources = [{ label = "x", format = "cidr", path = "/x", y = 1 }]',
                 "unknown key(s) y", id="unknown-key"),
    pytest.param("[verdict]\ngroup_prefix_v4 = 33", "[verdict] group_prefix_v4", id="prefix"),
    pytest.param("[verdict]\nburst_lnks = 3", "unknown key 'burst_lnks' in [verdict]",
                 id="typo"),
])
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, text)
    assert needle in str(info.value) and "tm.toml" in str(info.value)


def test_sources_from_environment_as_json(tmp_path: Path) -> None:
    env = {"TRACKMILTER_NETWORKS_SOURCES":
           f'[{{"label": "scanner", "format": "cidr", "path": "{DATA / "scanners.cidr"}"}}]'}
    s = load(None, environ=env)
    assert [src.label for src in s.networks.sources] == ["scanner"]


def test_malformed_list_stops_the_tracker(tmp_path: Path) -> None:
    from trackmilter.web.networks import NetworkFileError

    s = settings(tmp_path, f"""
[networks]
sources = [{{ label = "scanner", format = "cidr", path = "{DATA / 'scanners-bad.cidr'}" }}]
""")
    with pytest.raises(NetworkFileError, match="scanners-bad.cidr"):
        networks_from(s)  # type: ignore[arg-type]


def test_request_judge_and_reviser(tmp_path: Path) -> None:
    s = load(None, environ={})
    judge = request_judge(s)
    verdict, reasons = judge(hit(1, 3600))
    assert verdict == "human" and "browser_navigation" in [r.code for r in reasons]
    mpp = hit(0, 5, ua="Mozilla/5.0", client="172.224.226.5", target="open",
              network="apple-mpp")
    verdict, reasons = judge(mpp)
    assert verdict == "machine" and reasons[0].code == "apple_mpp_prefetch"
    # A sandbox driving Firefox through three links within a second, without a person's
    # click (no Sec-Fetch-User): machine from the first answer; the third is a burst
    # already when answered (this process saw the other two); the reviser adds the burst
    # to all three, the delivery time its own reason, and, the message having three
    # links, that every one was followed in order.
    robot = tuple((k, v) for k, v in FIREFOX_NAV if k != "sec-fetch-user")
    sweep = [hit(1, 100, headers=robot), hit(2, 100.4, headers=robot),
             hit(3, 100.8, headers=robot)]
    fresh = request_judge(s)
    answers = [fresh(h) for h in sweep]
    assert [v for v, _ in answers] == ["machine"] * 3
    assert "burst" in [r.code for r in answers[2][1]]
    revised = reviser_from(s)(sweep, T0 + timedelta(seconds=95), 3)
    assert [v for v, _ in revised] == ["machine"] * 3
    codes = {r.code for _, rs in revised for r in rs}
    assert {"burst", "soon_after_delivery", "every_link", "programmatic_navigation"} <= codes
    # People opening the same three links in tabs: the burst is noted, the verdict stays.
    people = reviser_from(s)([hit(1, 100), hit(2, 100.4), hit(3, 100.8)], None, 10)
    assert [v for v, _ in people] == ["human"] * 3


def test_revisions_are_counted_by_target_and_new_verdict() -> None:
    import dataclasses

    from trackmilter.judging import RevisionCounter
    from trackmilter.metrics import Metrics

    metrics = Metrics()
    counter = RevisionCounter(metrics)
    first = hit(1, 10)
    revised = dataclasses.replace(first, verdict="machine", revision=2)
    counter.written(None, [first, revised, dataclasses.replace(revised, hit_id="h9")], T0)
    get = metrics.registry.get_sample_value
    assert get("trackmilter_tracker_verdict_revisions_total",
               {"target": "click", "verdict": "machine"}) == 2
    assert get("trackmilter_tracker_verdict_revisions_total",
               {"target": "click", "verdict": "human"}) is None
