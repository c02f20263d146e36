"""The tracker's ASGI app, called directly: verified redirects only, 404 for anything
forged, hits recorded with the client a trusted proxy names."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from trackmilter.metrics import Metrics
from trackmilter.model import HitReason, HitRecorded
from trackmilter.tokens import Signer
from trackmilter.web.app import PIXEL, TrackerApp
from trackmilter.web.forwarded import ClientResolver, truncate

KEY = b"k" * 32
TID = "abcdefghijklmnop"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Sink:
    def __init__(self) -> None:
        self.events: list[HitRecorded] = []

    def submit(self, event: HitRecorded) -> None:
        self.events.append(event)


class Judge:
    def __init__(self) -> None:
        self.seen: list[tuple[HitRecorded, int]] = []

    def __call__(self, hit: HitRecorded, client: Any = None) -> tuple[str, tuple[HitReason, ...]]:
        self.seen.append((hit, len(self.seen)))
        if not hit.user_agent:
            return "machine", (HitReason("empty_user_agent", "", "machine"),)
        return "unknown", ()


class Networks:
    def lookup(self, ip: Any) -> str | None:
        return "apple" if ip in ipaddress.ip_network("17.0.0.0/8") else None


def make_app(**kw: Any) -> tuple[TrackerApp, Sink, Judge, Metrics]:
    sink, judge, metrics = Sink(), Judge(), Metrics(CollectorRegistry())
    app = TrackerApp(
        base_url=kw.pop("base_url", "https://t.example.com"), signer=Signer([KEY]), sink=sink,
        metrics=metrics, judge=judge,
        resolver=ClientResolver([ipaddress.ip_network("127.0.0.0/8")]), networks=Networks(),
        clock=lambda: NOW, name="t1", **kw,
    )
    return app, sink, judge, metrics


def call(app: TrackerApp, path: str, *, method: str = "GET", peer: str = "198.51.100.4",
         headers: Sequence[tuple[str, str]] = (), query: str = ""
         ) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": method, "path": path, "client": (peer, 5555),
             "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers],
             "query_string": query.encode("latin-1")}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(app(scope, receive, send))
    start, body = sent[0], sent[1]
    hdrs = {k.decode(): v.decode("latin-1") for k, v in start["headers"]}
    return start["status"], hdrs, body["body"]


def click_token(url: str = "https://shop.example.org/a?b=1", index: int = 3) -> str:
    return Signer([KEY]).sign_click(TID, index, url)


def test_click_redirects_to_the_signed_url_and_records_the_hit() -> None:
    app, sink, judge, metrics = make_app()
    status, headers, body = call(app, f"/c/{click_token()}",
                                 headers=[("User-Agent", "Mozilla/5.0 Firefox/128.0"),
                                          ("Accept", "text/html"), ("Cookie", "secret")])
    assert status == 302
    assert headers["location"] == "https://shop.example.org/a?b=1"
    assert "no-store" in headers["cache-control"]
    assert body == b""
    (ev,) = sink.events
    assert (ev.target, ev.tracking_id, ev.index, ev.url) == ("click", TID, 3,
                                                             "https://shop.example.org/a?b=1")
    assert ev.client == "198.51.100.4" and ev.user_agent == "Mozilla/5.0 Firefox/128.0"
    # Cookies are not evidence; the hit says which header set was kept (with client hints).
    assert dict(ev.headers) == {"accept": "text/html", "x-trackmilter-kept": "2"}
    assert ev.at == NOW and ev.tracker == "t1" and ev.verdict == "unknown"
    assert metrics.registry.get_sample_value(
        "trackmilter_tracker_hits_total", {"target": "click", "verdict": "unknown"}) == 1
    assert metrics.registry.get_sample_value(
        "trackmilter_tracker_request_duration_seconds_count", {"target": "click"}) == 1


def test_pixel_is_a_gif_that_is_never_cached() -> None:
    app, sink, _, _ = make_app()
    status, headers, body = call(app, f"/o/{Signer([KEY]).sign_open(TID)}")
    assert status == 200 and body == PIXEL and headers["content-type"] == "image/gif"
    assert "no-store" in headers["cache-control"]
    assert body[:6] == b"GIF89a" and len(body) == 43
    assert sink.events[0].target == "open" and sink.events[0].verdict == "machine"


def test_base_url_path_prefix() -> None:
    app, sink, _, _ = make_app(base_url="https://example.com/track")
    assert call(app, f"/track/c/{click_token()}")[0] == 302
    assert call(app, f"/c/{click_token()}")[0] == 404
    assert len(sink.events) == 1


def _mutations(token: str) -> list[str]:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    out = []
    for i in (0, 1, 2, 12, len(raw) // 2, len(raw) - 11, len(raw) - 1):
        b = bytearray(raw)
        b[i] ^= 0x01
        out.append(base64.urlsafe_b64encode(bytes(b)).rstrip(b"=").decode())
    return out


FORGED = [
    pytest.param("", id="empty"),
    pytest.param("x", id="one-char"),
    pytest.param(click_token()[:-1], id="truncated-by-one"),
    pytest.param(click_token()[:20], id="truncated"),
    pytest.param(click_token() + "A", id="extended"),
    pytest.param(click_token() + "%0d%0aLocation:%20https://evil.example", id="crlf-suffix"),
    pytest.param(Signer([b"z" * 32]).sign_click(TID, 3, "https://evil.example/"),
                 id="unknown-key"),
    pytest.param(Signer([KEY]).sign_open(TID), id="open-token-on-click-path"),
    pytest.param("//evil.example/", id="protocol-relative"),
    pytest.param("https://evil.example/", id="absolute-url"),
    pytest.param("ａｂｃ" + click_token(), id="fullwidth-prefix"),
    *(pytest.param(t, id=f"bitflip-{n}") for n, t in enumerate(_mutations(click_token()))),
]


@pytest.mark.parametrize("token", FORGED)
def test_forged_tokens_get_a_plain_404_and_record_nothing(token: str) -> None:
    app, sink, judge, metrics = make_app()
    status, headers, body = call(app, "/c/" + token)
    assert status == 404, token
    assert "location" not in headers
    assert body == b"not found\n"
    assert sink.events == [] and judge.seen == []
    assert metrics.registry.get_sample_value(
        "trackmilter_tracker_invalid_tokens_total", {"target": "click"}) == 1


def test_click_token_on_pixel_path_is_404() -> None:
    app, sink, _, _ = make_app()
    assert call(app, f"/o/{click_token()}")[0] == 404
    assert sink.events == []


def test_head_is_answered_and_recorded_with_its_method() -> None:
    app, sink, _, _ = make_app()
    status, headers, body = call(app, f"/c/{click_token()}", method="HEAD",
                                 headers=[("User-Agent", "x")])
    assert status == 302 and body == b"" and headers["location"].startswith("https://shop.")
    assert sink.events[0].method == "HEAD"


def test_other_methods_are_refused_and_not_recorded() -> None:
    app, sink, _, _ = make_app()
    status, headers, _ = call(app, f"/c/{click_token()}", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert sink.events == []


@pytest.mark.parametrize(("peer", "headers", "client"), [
    pytest.param("198.51.100.4", [("X-Forwarded-For", "203.0.113.9")], "198.51.100.4",
                 id="untrusted-peer-xff-ignored"),
    pytest.param("127.0.0.1", [("X-Forwarded-For", "203.0.113.9")], "203.0.113.9",
                 id="trusted-proxy-xff"),
    pytest.param("127.0.0.1", [("X-Forwarded-For", "1.1.1.1, 203.0.113.9")], "203.0.113.9",
                 id="client-spoofed-left-part-ignored"),
    pytest.param("127.0.0.1", [("X-Forwarded-For", "203.0.113.9, 127.0.0.2")], "203.0.113.9",
                 id="two-trusted-hops"),
    pytest.param("127.0.0.1", [("Forwarded", 'for="[2001:db8::7]:4711";proto=https')],
                 "127.0.0.1", id="forwarded-not-read-by-default"),
    pytest.param("127.0.0.1", [("X-Forwarded-For", "198.51.100.77"),
                               ("Forwarded", "for=17.58.1.2")], "198.51.100.77",
                 id="client-forwarded-header-passed-through-is-ignored"),
    pytest.param("127.0.0.1", [("X-Forwarded-For", "203.0.113.9"),
                               ("X-Forwarded-For", "127.0.0.3")], "203.0.113.9",
                 id="repeated-header-lines-are-one-list"),
    pytest.param("127.0.0.1", [], "127.0.0.1", id="proxy-without-header"),
    pytest.param("127.0.0.1", [("X-Forwarded-For", "17.58.1.2")], "17.58.1.2",
                 id="apple-range-through-proxy"),
])
def test_client_address(peer: str, headers: list[tuple[str, str]], client: str) -> None:
    app, sink, _, _ = make_app()
    call(app, f"/c/{click_token()}", peer=peer, headers=headers)
    assert sink.events[0].client == client
    assert sink.events[0].network == ("apple" if client.startswith("17.") else "")


def test_truncation_applies_to_storage_not_to_the_verdict() -> None:
    app, sink, judge, _ = make_app(ipv4_prefix=24, ipv6_prefix=48)
    call(app, f"/c/{click_token()}", peer="127.0.0.1",
         headers=[("User-Agent", "x"), ("X-Forwarded-For", "198.51.100.4"), ("Accept", "*/*")])
    assert judge.seen[0][0].client == "198.51.100.4"
    assert sink.events[0].client == "198.51.100.0/24"
    # Nothing else stored carries the whole address.
    assert dict(sink.events[0].headers) == {"accept": "*/*", "x-trackmilter-kept": "2"}
    app, sink, _, _ = make_app()
    call(app, f"/c/{click_token()}", peer="127.0.0.1", headers=[("X-Forwarded-For", "198.51.100.4")])
    assert dict(sink.events[0].headers) == {"x-forwarded-for": "198.51.100.4",
                                            "x-trackmilter-kept": "2"}
    assert truncate(ipaddress.ip_address("2001:db8:1:2::5"), 24, 48) == "2001:db8:1::/48"


def test_health_and_metrics() -> None:
    app, _, _, _ = make_app(ready=lambda: False)
    assert call(app, "/healthz")[0] == 200
    assert call(app, "/readyz")[0] == 503
    status, headers, body = call(app, "/metrics")
    assert status == 200 and b"trackmilter_tracker_hits_total" in body
    assert call(app, "/nothing")[0] == 404


def test_recording_failure_still_redirects() -> None:
    app, sink, _, _ = make_app()

    def boom(event: HitRecorded) -> None:
        raise RuntimeError("store on fire")

    sink.submit = boom  # type: ignore[method-assign]
    assert call(app, f"/c/{click_token()}")[0] == 302


def test_resolver_ipv4_mapped_peer_is_trusted() -> None:
    r = ClientResolver([ipaddress.ip_network("127.0.0.0/8")])
    assert str(r.client("::ffff:127.0.0.1", None, "203.0.113.1")) == "203.0.113.1"


@pytest.mark.parametrize(("headers", "client"), [
    pytest.param([("Forwarded", 'for="[2001:db8::7]:4711";proto=https')], "2001:db8::7",
                 id="ipv6"),
    pytest.param([("Forwarded", "for=unknown")], "127.0.0.1", id="unknown"),
    pytest.param([("Forwarded", "for=203.0.113.5"), ("X-Forwarded-For", "17.58.1.2")],
                 "203.0.113.5", id="x-forwarded-for-ignored"),
])
def test_forwarded_header_when_configured(headers: list[tuple[str, str]], client: str) -> None:
    app, sink, _, _ = make_app()
    app._resolver = ClientResolver([ipaddress.ip_network("127.0.0.0/8")], "forwarded")  # noqa: SLF001
    call(app, f"/c/{click_token()}", peer="127.0.0.1", headers=headers)
    assert sink.events[0].client == client


def test_mapped_ipv4_is_truncated_as_ipv4() -> None:
    mapped = ipaddress.ip_address("::ffff:203.0.113.7")
    assert truncate(mapped, 24, 48) == "203.0.113.0/24"
    assert truncate(mapped, 32, 48) == "203.0.113.7"


def test_head_pixel_gives_the_get_length_and_evidence_headers_are_bounded() -> None:
    app, sink, _, _ = make_app()
    status, headers, body = call(app, f"/o/{Signer([KEY]).sign_open(TID)}", method="HEAD",
                                 headers=[("Accept", "x" * 5000), ("Accept", "y" * 5000)])
    assert status == 200 and body == b"" and headers["content-length"] == "43"
    assert dict(sink.events[0].headers) == {"accept": "x" * 512, "x-trackmilter-kept": "2"}


def test_percent_encoded_base_path() -> None:
    app, sink, _, _ = make_app(base_url="https://example.com/a%20b")
    assert call(app, f"/a b/c/{click_token()}")[0] == 302


def test_reverse_dns_labels_a_scanner_from_its_second_hit() -> None:
    from trackmilter.web.rdns import ReverseDNS, label_for_hostname

    assert label_for_hostname("mail-eopbgr.protection.outlook.com.") == "microsoft"
    assert label_for_hostname("mx0a-001.pphosted.com") == "proofpoint"
    assert label_for_hostname("host.example.net") is None
    looked_up: list[str] = []

    def resolver(addr: str) -> str:
        looked_up.append(addr)
        return "scan-1.eu.pphosted.com."

    rdns = ReverseDNS(resolver)
    app, sink, _, _ = make_app(rdns=rdns)
    call(app, f"/c/{click_token()}", peer="198.51.100.9", headers=[("User-Agent", "x")])
    first = sink.events[0]
    assert first.network == "" and "reverse-dns" not in dict(first.headers)  # never waited on
    rdns.close()  # waits for the background lookup
    call(app, f"/c/{click_token()}", peer="198.51.100.9", headers=[("User-Agent", "x")])
    second = sink.events[1]
    assert dict(second.headers)["reverse-dns"] == "scan-1.eu.pphosted.com"
    assert second.network == "proofpoint" and looked_up == ["198.51.100.9"]
