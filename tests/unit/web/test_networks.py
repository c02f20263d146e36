"""Range files in each provider's format: parsed, looked up, refused with file and line when
malformed, refreshed atomically through an injected fetcher (no network in tests)."""

from __future__ import annotations

import ipaddress
import random
import threading
from pathlib import Path

import pytest

from trackmilter.web.networks import (
    Format,
    NetworkFileError,
    NetworkSet,
    NetworkSource,
    ReverseDNS,
    parse,
    refresh,
)

DATA = Path(__file__).parent / "data"

SOURCES = (
    NetworkSource("apple-mpp", "apple-csv", DATA / "apple-egress.csv"),
    NetworkSource("google", "google-json", DATA / "goog.json"),
    NetworkSource("microsoft", "microsoft-json", DATA / "servicetags.json",
                  names=("AzureCloud.*",)),
    NetworkSource("o365", "o365-json", DATA / "o365.json", names=("Exchange",)),
    NetworkSource("scanner", "cidr", DATA / "scanners.cidr"),
)


@pytest.fixture(scope="module")
def nets() -> NetworkSet:
    return NetworkSet.load(SOURCES)


@pytest.mark.parametrize("address, label", [
    pytest.param("172.224.226.1", "apple-mpp", id="apple-first-range"),
    pytest.param("172.224.226.63", "apple-mpp", id="apple-adjacent-range-end"),
    pytest.param("172.224.226.64", None, id="apple-just-after"),
    pytest.param("2a02:26f7:b3c0:4000::17", "apple-mpp", id="apple-v6"),
    pytest.param("66.249.84.33", "google", id="google-image-proxy-range"),
    pytest.param("2001:4860:4801::1", "google", id="google-v6"),
    pytest.param("20.42.1.1", "microsoft", id="azure-region-by-name-filter"),
    pytest.param("2603:1030:210::5", "microsoft", id="azure-v6"),
    pytest.param("13.107.246.10", None, id="azure-value-filtered-out"),
    pytest.param("40.93.255.255", "o365", id="o365-exchange"),
    pytest.param("20.190.130.1", None, id="o365-other-service-area-filtered-out"),
    pytest.param("198.51.100.200", "scanner", id="cidr-prefix"),
    pytest.param("203.0.113.7", "scanner", id="cidr-bare-address"),
    pytest.param("203.0.113.8", None, id="cidr-next-address"),
    pytest.param("192.0.2.129", "scanner", id="cidr-host-bits-set"),
    pytest.param("192.0.2.127", None, id="cidr-below-host-bits-network"),
    pytest.param("2001:db8:5:ffff::1", "scanner", id="cidr-v6"),
    pytest.param("::ffff:66.249.80.1", "google", id="ipv4-mapped-v6"),
    pytest.param("0.0.0.0", None, id="below-everything"),
    pytest.param("255.255.255.255", None, id="above-everything"),
    pytest.param("::", None, id="v6-below-everything"),
])
def test_lookup(nets: NetworkSet, address: str, label: str | None) -> None:
    assert nets.lookup(ipaddress.ip_address(address)) == label


def test_earlier_source_wins_where_ranges_overlap(tmp_path: Path) -> None:
    wide = tmp_path / "wide.cidr"
    wide.write_text("10.0.0.0/8\n")
    narrow = tmp_path / "narrow.cidr"
    narrow.write_text("10.1.0.0/16\n10.1.0.0/24\n")
    first = NetworkSet.load([NetworkSource("narrow", "cidr", narrow),
                             NetworkSource("wide", "cidr", wide)])
    assert [first.lookup(ipaddress.ip_address(a)) for a in
            ("10.0.255.255", "10.1.0.1", "10.1.255.255", "10.2.0.0")] == [
        "wide", "narrow", "narrow", "wide"]
    assert len(first) == 3  # wide, narrow, wide: the two /24 and /16 merged
    second = NetworkSet.load([NetworkSource("wide", "cidr", wide),
                              NetworkSource("narrow", "cidr", narrow)])
    assert second.lookup(ipaddress.ip_address("10.1.0.1")) == "wide"
    assert len(second) == 1


def test_empty_set() -> None:
    assert NetworkSet().lookup(ipaddress.ip_address("192.0.2.1")) is None
    assert NetworkSet().lookup(ipaddress.ip_address("2001:db8::1")) is None


@pytest.mark.parametrize("fmt, name, where", [
    pytest.param("apple-csv", "apple-egress-bad.csv", "apple-egress-bad.csv:2", id="apple-csv"),
    pytest.param("cidr", "scanners-bad.cidr", "scanners-bad.cidr:3", id="cidr"),
    pytest.param("google-json", "goog-bad-prefix.json", "goog-bad-prefix.json:6",
                 id="google-bad-prefix"),
    pytest.param("google-json", "goog-truncated.json", "goog-truncated.json:6",
                 id="google-truncated-json"),
    pytest.param("microsoft-json", "servicetags-bad.json", "servicetags-bad.json:9",
                 id="microsoft-bad-prefix"),
    pytest.param("microsoft-json", "goog.json", "goog.json", id="google-file-as-microsoft"),
    pytest.param("o365-json", "servicetags.json", "servicetags.json", id="tags-file-as-o365"),
    pytest.param("google-json", "o365.json", "o365.json", id="o365-file-as-google"),
])
def test_malformed_files_name_file_and_line(fmt: Format, name: str, where: str) -> None:
    with pytest.raises(NetworkFileError) as info:
        NetworkSet.load([NetworkSource("x", fmt, DATA / name)])
    assert str(info.value).startswith(str(DATA / where) + ":"), str(info.value)


@pytest.mark.parametrize("text, fmt, message", [
    pytest.param('{"prefixes": [{"ipv4Prefix": 7}]}', "google-json", "7 is not a string",
                 id="google-number"),
    pytest.param('{"prefixes": [{"service": "x"}]}', "google-json", "no ipv4Prefix",
                 id="google-no-prefix-key"),
    pytest.param('{"values": [{"name": "A", "properties": 1}]}', "microsoft-json",
                 "has no properties", id="microsoft-properties"),
    pytest.param('{"values": [{"name": "A", "properties": {"addressPrefixes": "1.2.3.0/24"}}]}',
                 "microsoft-json", "is not a list", id="microsoft-prefixes-not-list"),
    pytest.param('[{"id": 3, "ips": ["300.0.0.0/8"]}]', "o365-json", "not an IP prefix",
                 id="o365-bad-ip"),
    pytest.param("1.2.3.0/24", "geojson", "unknown format", id="unknown-format"),
])
def test_malformed_text(text: str, fmt: Format, message: str) -> None:
    with pytest.raises(NetworkFileError, match=message):
        parse(text, fmt, "t")


def test_cidr_comments_blank_lines_and_crlf() -> None:
    assert parse("# only a comment\r\n\r\n  192.0.2.0/24  # trailing\r\n", "cidr") == [
        (4, int(ipaddress.ip_address("192.0.2.0")), int(ipaddress.ip_address("192.0.2.255")))]


def test_missing_file(tmp_path: Path) -> None:
    src = NetworkSource("apple-mpp", "apple-csv", tmp_path / "absent.csv")
    with pytest.raises(NetworkFileError, match=r"absent\.csv: missing \(source 'apple-mpp'\)"):
        NetworkSet.load([src])
    assert len(NetworkSet.load([src], missing_ok=True)) == 0


# --- refresh --------------------------------------------------------------------------------
class Fetcher:
    def __init__(self, answers: dict[str, bytes | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, float]] = []

    def __call__(self, url: str, timeout: float) -> bytes:
        self.calls.append((url, timeout))
        answer = self.answers[url]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_refresh_replaces_only_good_downloads(tmp_path: Path) -> None:
    good = (DATA / "goog.json").read_bytes()
    old = b"192.0.2.0/24\n"
    for name in ("bad.json", "empty.json", "down.cidr"):
        (tmp_path / name).write_bytes(old)
    sources = [
        NetworkSource("google", "google-json", tmp_path / "sub" / "goog.json", "https://g/goog"),
        NetworkSource("bad", "google-json", tmp_path / "bad.json", "https://g/bad"),
        NetworkSource("empty", "google-json", tmp_path / "empty.json", "https://g/empty"),
        NetworkSource("down", "cidr", tmp_path / "down.cidr", "https://down/list"),
        NetworkSource("hand", "cidr", tmp_path / "hand.cidr"),
    ]
    fetch = Fetcher({
        "https://g/goog": good,
        "https://g/bad": (DATA / "goog-bad-prefix.json").read_bytes(),
        "https://g/empty": b'{"prefixes": []}',
        "https://down/list": OSError("network unreachable"),
    })
    results = refresh(sources, fetch=fetch, timeout=5)
    assert [(r.label, r.status, r.prefixes) for r in results] == [
        ("google", "updated", 3), ("bad", "failed", 0), ("empty", "failed", 0),
        ("down", "failed", 0), ("hand", "skipped", 0)]
    assert "https://g/bad:6" in results[1].error
    assert "no prefixes" in results[2].error
    assert "network unreachable" in results[3].error
    assert {t for _, t in fetch.calls} == {5}
    assert (tmp_path / "sub" / "goog.json").read_bytes() == good
    for name in ("bad.json", "empty.json", "down.cidr"):
        assert (tmp_path / name).read_bytes() == old  # a failed download keeps the old list
    assert not list(tmp_path.rglob("*.tmp"))
    again = refresh(sources[:1], fetch=fetch)
    assert again[0].status == "unchanged"
    loaded = NetworkSet.load(sources[:1])
    assert loaded.lookup(ipaddress.ip_address("74.125.1.1")) == "google"


# --- reverse DNS ----------------------------------------------------------------------------
def test_reverse_dns_answers_from_cache_only() -> None:
    release = threading.Event()
    asked: list[str] = []

    def resolver(address: str) -> str:
        asked.append(address)
        release.wait(5)
        if address == "192.0.2.9":
            raise OSError("NXDOMAIN")
        return "Mail-Scanner.example.NET."

    rdns = ReverseDNS(resolver)
    a, b = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.9")
    assert rdns.name(a) is None  # never waits
    assert rdns.name(a) is None
    assert rdns.name(b) is None
    release.set()
    rdns.close()
    assert rdns.name(a) == "mail-scanner.example.net"
    assert rdns.name(b) is None
    assert sorted(asked) == ["192.0.2.1", "192.0.2.9"]  # pending lookups are not repeated


def test_overlapping_sources_match_a_brute_force_scan() -> None:
    rnd = random.Random(7)
    ranges = []
    for _ in range(300):
        first = rnd.randrange(0, 5000)
        ranges.append((rnd.choice("abcd"), (4, first, first + rnd.randrange(0, 200))))
    nets = NetworkSet(ranges)
    # A label's priority is where it first appears: the source order of the configuration.
    order = list(dict.fromkeys(label for label, _ in ranges))
    for n in range(0, 5300):
        want = next((lab for lab in order for label, (_, f, last) in ranges
                     if label == lab and f <= n <= last), None)
        assert nets.lookup(ipaddress.IPv4Address(n)) == want, n
