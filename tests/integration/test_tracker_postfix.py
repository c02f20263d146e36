"""Integration: real Postfix + the milter + the tracker over real HTTP, both ways it runs:
`trackmilter web`, and nginx's edge (conf/nginx/trackmilter.lua) with `trackmilter edge`.

A message goes through Postfix; its rewritten links and pixel are taken from what the fake
MX received and requested as a person and as the machines that fetch mail links do,
through X-Forwarded-For from a trusted proxy (loopback). `trackmilter status --json` must
show each hit with the right verdict and reasons.
"""

from __future__ import annotations

import email
import email.policy
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from trackmilter_lab import FakeMX, PostfixInstance, edgeproc, free_port, send
from trackmilter_lab.daemon import BASE_URL, command, milter_process, wait_status, write_config
from trackmilter_lab.webproc import WebProcess, request, web_process

DATA = Path(__file__).resolve().parents[1] / "unit" / "web" / "data"
TOKEN_RE = re.compile(re.escape(BASE_URL) + r"(/[co]/[A-Za-z0-9_-]+)")
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
# What Firefox sends when a person follows a link from webmail (W3C Fetch Metadata, MDN's
# default Accept values): the request of a person (trackmilter.navigation).
FIREFOX_NAV = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
               "Accept_Language": "en-US,en;q=0.5", "Sec_Fetch_Dest": "document",
               "Sec_Fetch_Mode": "navigate", "Sec_Fetch_Site": "cross-site",
               "Sec_Fetch_User": "?1"}
HTML = """<html><body><p>Hello Bob,</p>
<p><a href="https://shop.example.org/offer?id=1&amp;src=mail">Our offer</a></p>
<p><a href="https://shop.example.org/account">Your account</a></p>
<p><a href="https://blog.example.org/news">News</a></p>
</body></html>
"""


@dataclass
class Rig:
    postfix: PostfixInstance
    mx: FakeMX
    web: WebProcess | edgeproc.EdgeTracker
    config: Path

    def send(self, to: str = "bob@example.net", html: str = HTML
             ) -> tuple[str, list[str], str]:
        """Send the newsletter; return (tracking id, click paths in order, pixel path)."""
        msg = EmailMessage()
        msg["From"] = "Shop <news@example.com>"
        msg["To"] = to
        msg["Subject"] = "This week"
        msg.set_content("Plain: https://shop.example.org/offer\n")
        msg.add_alternative(html, subtype="html", cte="quoted-printable")
        before = len(self.mx.messages)
        assert send("127.0.0.1", self.postfix.smtp_port, "news@example.com", [to],
                    msg.as_bytes(policy=email.policy.SMTP)) == {}
        got = self.mx.wait_for_count(before + 1, timeout=30)[-1]
        parsed = email.message_from_bytes(got.data, policy=email.policy.default)
        html = parsed.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
        paths = TOKEN_RE.findall(html)
        clicks = [p for p in paths if p.startswith("/c/")]
        opens = [p for p in paths if p.startswith("/o/")]
        assert len(opens) == 1, html
        return parsed["X-Trackmilter-ID"], clicks, opens[0]

    def get(self, path: str, client: str, ua: str | None, method: str = "GET",
            **headers: str) -> tuple[int, dict[str, str], bytes]:
        h = {"X-Forwarded-For": client, **{k.replace("_", "-"): v for k, v in headers.items()}}
        if ua is not None:
            h["User-Agent"] = ua
        return request(self.web.port, path, method=method, headers=h)

    def status(self, tid: str, pred: Callable[[list[dict[str, Any]]], bool]
               ) -> dict[str, Any]:
        return wait_status(self.config, tid, pred, timeout=30)[0]


def _config(tmp_path: Path, sock: Path, port: int, **verdict: Any) -> Path:
    edge_metrics = free_port()
    return write_config(tmp_path / "tm", sock, extra={
        "edge": {"log": str(tmp_path / "hits.log"), "state_file": str(tmp_path / "edge.state"),
                 "metrics_listen": f"127.0.0.1:{edge_metrics}", "poll_interval": 0.1},
        "tracking": {"honeypot": True},
        "web": {"listen": f"127.0.0.1:{port}", "trusted_proxies": ["127.0.0.1/32"],
                "name": "tracker.lab"},
        "networks": {"sources": [
            {"label": "apple-mpp", "format": "apple-csv", "path": str(DATA / "apple-egress.csv")},
            {"label": "scanner", "format": "cidr", "path": str(DATA / "scanners.cidr")},
        ]},
        **({"verdict": verdict} if verdict else {}),
        "maillog": {"state_file": str(tmp_path / "tm" / "maillog.state"), "metrics_listen": "",
                    "mta_name": "lab.example", "poll_interval": 0.1},
    })


def edge_tracker(cfg: Path, tmp_path: Path, port: int) -> edgeproc.EdgeTracker:
    """nginx (the shipped edge locations, X-Forwarded-For believed from loopback as the
    web tracker's trusted_proxies says) and `trackmilter edge` on its log."""
    why = edgeproc.available()
    if why:
        pytest.skip(f"{why}: scripts/setup installs it")
    from trackmilter import config as cfgmod

    settings = cfgmod.load(cfg)
    nginx = edgeproc.EdgeNginx(tmp_path / "nginx", port, settings.tracking.secret_file,
                               settings.edge.log, real_ip_from=("127.0.0.1",))
    metrics_port = int(settings.edge.metrics_listen.rpartition(":")[2])
    return edgeproc.EdgeTracker(cfg, nginx, metrics_port).start()


@pytest.fixture(params=["web", "edge"])
def rig_factory(request: pytest.FixtureRequest, fake_mx: FakeMX, postfix_lab: Any,
                socket_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    stops: list[Callable[[], Any]] = []

    def make(**verdict: Any) -> Rig:
        sock = socket_dir / "trackmilter.sock"
        port = free_port()
        cfg = _config(tmp_path, sock, port, **verdict)
        milter = milter_process(cfg, sock).start()
        stops.append(milter.stop)
        postfix = postfix_lab(milter=milter.spec)
        if request.param == "web":
            web: WebProcess | edgeproc.EdgeTracker = web_process(cfg, port).start()
        else:
            web = edge_tracker(cfg, tmp_path, port)
        stops.append(web.stop)
        return Rig(postfix, fake_mx, web, cfg)

    yield make
    for stop in reversed(stops):
        stop()


def by_client(view: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for h in view["hits"]:
        out.setdefault(h["client"], []).append(h)
    return out


def codes(h: dict[str, Any]) -> set[str]:
    return {r["code"] for r in h["reasons"]}


def test_people_and_machines_get_the_right_verdicts(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory()
    tid, clicks, pixel = rig.send()
    assert len(clicks) == 4  # three links and the hidden one (index 0, placed with the pixel)

    # The hidden honeypot link is not displayed; real links in order follow it.
    honeypot, offer, account, news = clicks[-1], clicks[0], clicks[1], clicks[2]
    status, headers, _ = rig.get(offer, "203.0.113.50", FIREFOX, **FIREFOX_NAV)
    assert status == 302
    assert headers["location"] == "https://shop.example.org/offer?id=1&src=mail"

    assert rig.get(pixel, "172.224.226.5", "Mozilla/5.0")[0] == 200  # Apple MPP prefetch
    status, headers, body = rig.get(pixel, "66.249.84.10", GMAIL)
    assert status == 200 and headers["content-type"] == "image/gif" and body[:6] == b"GIF89a"

    # A link scanner in a listed scanner network follows every link, the hidden one too.
    for path in (offer, account, news, honeypot):
        assert rig.get(path, "198.51.100.20", CHROME)[0] == 302
    # A link checker asks with HEAD.
    assert rig.get(news, "192.0.2.77", "curl/8.5.0", method="HEAD")[0] == 302
    # Forged or mutated tokens get a plain 404 and are not recorded.
    forged = offer[:-4] + ("AAAA" if not offer.endswith("AAAA") else "BBBB")
    assert rig.get(forged, "203.0.113.50", FIREFOX)[0] == 404
    assert rig.get("/c/%0d%0aLocation:%20https://evil.example/", "203.0.113.50",
                   FIREFOX)[0] == 404

    expected_hits = 1 + 2 + 4 + 1

    def settled(views: list[dict[str, Any]]) -> bool:
        if not views or len(views[0]["hits"]) != expected_hits:
            return False
        sweep = [h for h in views[0]["hits"] if h["client"] == "198.51.100.20"]
        return all(len(h["history"]) >= 1 for h in views[0]["hits"]) and all(
            "burst" in codes(h) for h in sweep)

    view = rig.status(tid, settled)
    hits = by_client(view)

    (person,) = hits["203.0.113.50"]
    assert (person["target"], person["index"], person["verdict"]) == ("click", 1, "human")
    assert "browser_navigation" in codes(person)
    assert person["url"] == "https://shop.example.org/offer?id=1&src=mail"

    (mpp,) = hits["172.224.226.5"]
    assert (mpp["target"], mpp["verdict"], mpp["network"]) == ("open", "machine", "apple-mpp")
    assert "apple_mpp_prefetch" in codes(mpp)

    (gmail,) = hits["66.249.84.10"]
    assert (gmail["target"], gmail["verdict"]) == ("open", "human")
    assert "gmail_image_proxy" in codes(gmail)

    sweep = hits["198.51.100.20"]
    assert sorted(h["index"] for h in sweep) == [0, 1, 2, 3]
    assert {h["verdict"] for h in sweep} == {"machine"}
    assert all({"scanner_network", "burst"} <= codes(h) for h in sweep)
    assert all("honeypot_client" in codes(h) for h in sweep if h["index"] != 0)
    assert "honeypot" in codes(next(h for h in sweep if h["index"] == 0))

    (checker,) = hits["192.0.2.77"]
    assert checker["verdict"] == "machine" and checker["method"] == "HEAD"
    assert {"head_request", "library_user_agent"} <= codes(checker)

    eng = view["engagement"]
    assert eng["attributed_to"] == "bob@example.net"
    assert eng["clicks"] == {"human": 1, "machine": 5, "unknown": 0}
    assert eng["opens"] == {"human": 1, "machine": 1, "unknown": 0}
    assert "clicked — human" in eng["summary"]
    text = subprocess.run(command(rig.config, "status", "--explain", tid), capture_output=True, text=True,
                          check=True, timeout=60).stdout
    assert "opened — machine (Apple Mail Privacy Protection prefetch" in text
    assert "attributed to bob@example.net" in text


def test_every_link_followed_like_a_person_is_revised_to_machine(
        rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(soon_after_delivery=30)
    follower_log = rig.config.parent / "maillog-follower.log"
    with open(follower_log, "wb") as out:
        follower = subprocess.Popen(command(rig.config, "maillog", str(rig.postfix.log_path)),
                                    stdout=out, stderr=subprocess.STDOUT)
    try:
        # A newsletter with its footer: five links.
        five = HTML.replace("</body>", '<p><a href="https://shop.example.org/privacy">Privacy'
                            '</a> <a href="https://shop.example.org/unsubscribe">Unsubscribe'
                            "</a></p></body>")
        tid, clicks, _ = rig.send(html=five)
        assert len(clicks) == 6  # five links and the hidden one

        def delivered(views: list[dict[str, Any]]) -> bool:
            return bool(views) and any(e["kind"] == "delivery" and e["status"] == "sent"
                                       for e in views[0]["events"])

        rig.status(tid, delivered)
        # A sandbox that renders the message and clicks each of its five links: every
        # request is a person's Firefox navigation, so each is answered as a person's.
        # Only the message's whole story tells: once the hits are stored, the tracker's
        # revision knows the message has five links, all followed by one client — the
        # unsubscribe and privacy links too, which no reader does all of.
        for path in clicks[:5]:
            assert rig.get(path, "203.0.113.60", FIREFOX, **FIREFOX_NAV)[0] == 302

        def revised(views: list[dict[str, Any]]) -> bool:
            return bool(views) and len(views[0]["hits"]) == 5 and all(
                h["verdict"] == "machine" for h in views[0]["hits"])

        hits = sorted(rig.status(tid, revised)["hits"], key=lambda h: h["index"])
        assert all({"every_link", "browser_navigation"} <= codes(h) for h in hits)
        # Sent seconds ago: the remote server's acceptance (maillog) is in the evidence too.
        assert all("soon_after_delivery" in codes(h) for h in hits)
        first = hits[0]
        assert first["history"][0]["verdict"] == "human"
        assert [v["cause"] for v in first["history"]][-1] == "revision"
        decided = [r["code"] for r in first["reasons"] if r["decided"]]
        assert decided == ["every_link"]
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(30)
