"""The demo's tracker part: follow the newsletter's links as a person and as machines do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TextIO

from trackmilter_lab.webproc import request

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
# What Firefox sends when a person follows a link (W3C Fetch Metadata; MDN's default Accept
# values): a person's request, as trackmilter.navigation expects it.
FIREFOX_NAV = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
               "Accept-Language": "en-US,en;q=0.5", "Sec-Fetch-Dest": "document",
               "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "cross-site",
               "Sec-Fetch-User": "?1"}
APPLE = "17.58.100.1"  # in the demo's stand-in for Apple's egress list
SCANNER = "198.51.100.20"  # in the demo's hand-kept list of a mail gateway's scanners
PERSON = "203.0.113.50"


def settings(workdir: Path, port: int) -> dict[str, dict[str, Any]]:
    """Configuration for the tracker in the demo: small stand-ins for the network lists
    (`trackmilter networks refresh` fetches the real ones). The demo's person clicks
    seconds after delivery, as people do with a message they were waiting for: "soon after
    delivery" is weak evidence, outweighed by a person's exact browser request."""
    nets = workdir / "networks"
    nets.mkdir(exist_ok=True)
    (nets / "apple.csv").write_text("17.0.0.0/8,US,US-CA,Cupertino,\n")
    (nets / "scanners.cidr").write_text("# a mail gateway's scanning farm\n198.51.100.0/24\n")
    return {
        "web": {"listen": f"127.0.0.1:{port}", "trusted_proxies": ["127.0.0.1/32"]},
        "networks": {"sources": [
            {"label": "apple-mpp", "format": "apple-csv", "path": str(nets / "apple.csv")},
            {"label": "scanner", "format": "cidr", "path": str(nets / "scanners.cidr")},
        ]},
    }


def follow(port: int, body: bytes, base_url: str, out: TextIO) -> int:
    """Request the pixel and links found in `body`; return how many hits were made."""
    flat = body.replace(b"=\r\n", b"").replace(b"=3D", b"=").decode("ascii", "replace")
    paths = re.findall(re.escape(base_url) + r"(/[co]/[A-Za-z0-9_-]+)", flat)
    clicks = [p for p in paths if p.startswith("/c/")]
    pixel = next(p for p in paths if p.startswith("/o/"))
    visits = [
        ("Apple Mail Privacy Protection loads the pixel", APPLE, "Mozilla/5.0", [pixel], {}),
        ("a person clicks the first link in a browser", PERSON, FIREFOX, clicks[:1],
         FIREFOX_NAV),
        ("a link scanner follows every link", SCANNER, CHROME, clicks, {}),
    ]
    made = 0
    out.write(f"\nThe tracker (trackmilter web on 127.0.0.1:{port}) answers the links:\n")
    for what, client, ua, targets, extra in visits:
        answers = []
        for path in targets:
            status, headers, _ = request(port, path, headers={
                "User-Agent": ua, "X-Forwarded-For": client, **extra})
            answers.append(f"{status} {headers.get('location', headers.get('content-type'))}")
            made += 1
        out.write(f"  {what} (from {client}): {'; '.join(answers)}\n")
    return made


def settled(made: int) -> Any:
    """A status predicate: every hit stored and the scanner's sweep marked a burst."""
    def check(view: list[dict[str, Any]]) -> bool:
        hits = [h for m in view for h in m.get("hits", ())]
        sweep = [h for h in hits if h.get("client") == SCANNER]
        return len(hits) == made and bool(sweep) and all(
            any(r["code"] == "burst" for r in h["reasons"]) for h in sweep)
    return check


__all__ = ["follow", "settings", "settled"]
