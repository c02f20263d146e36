"""Integration (real Postfix, the milter daemon, a fake MX): a message with links too long to
sign (3,500 characters and 5 MB) between ordinary ones. The long links arrive exactly as
written, the others as tracking links that verify, and the record says what was done."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.test_milter_postfix import (  # noqa: F401 - rig: the fixture
    Rig,
    html_message,
    html_of,
    rig,
    tokens_in,
)

SHORT_1 = "https://example.com/first?a=1"
SHORT_2 = "https://example.org/second"
LONG = "https://example.com/long?" + "q" * (3500 - len("https://example.com/long?"))
HUGE = "https://example.com/huge?" + "h" * (5 * 1024 * 1024)


def test_links_too_long_arrive_as_written_the_others_tracked(rig: Rig) -> None:  # noqa: F811
    links = "".join(f'<p><a href="{u}">link {n}</a></p>\n'
                    for n, u in enumerate((SHORT_1, LONG, HUGE, SHORT_2), 1))
    refused = rig.send(html_message(f"<html><body>\n{links}</body></html>\n"),
                       ["bob@example.net"])
    assert refused == {}
    [got] = rig.mx.wait_for_count(1, timeout=60)
    msg, html = html_of(got)
    tid = msg["X-Trackmilter-ID"]
    assert f'<a href="{LONG}">link 2</a>' in html
    assert f'<a href="{HUGE}">link 3</a>' in html
    found: list[tuple[str, Any]] = tokens_in(html, rig.signer)
    clicks = [(d.index, d.url) for k, d in found if k == "c"]
    assert clicks == [(1, SHORT_1), (2, SHORT_2)]
    assert [k for k, _ in found].count("o") == 1  # the pixel
    assert all(d.tracking_id == tid for _, d in found)
    [stored] = rig.status(tid)
    assert stored["rewritten"] is True and stored["skip_reason"] == ""
    assert [(lk["index"], lk["url"]) for lk in stored["links"]] == clicks
    log = (rig.config.parent / "milter.log").read_text().splitlines()
    [line] = [e for e in map(json.loads, filter(lambda s: s.startswith("{"), log))
              if e.get("event") == "message" and e.get("tracking_id") == tid]
    assert line["links_skipped"] == {"url_too_long": 2}
    assert all(len(d.url) < len(LONG) for _, d in found)
