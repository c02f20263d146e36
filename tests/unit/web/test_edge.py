"""`trackmilter edge`'s pure parts: reading nginx's trackmilter_hits lines, and what a block
of them becomes (hits handed to the tracker app, every line counted)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from trackmilter.tokens import Signer
from trackmilter.web.edge import (
    FIELD_COUNT,
    HEADER_FIELDS,
    BadLine,
    Ingest,
    KeyWatcher,
    parse_line,
)

from .test_web_app import TID, click_token, make_app

RID = "d469cfca3f8d1f5a7120d66b91f8cd7b"


def line(path: str = "/c/TOKEN", *, status: str = "302", method: str = "GET",
         client: str = "203.0.113.9", peer: str = "127.0.0.1", ua: str = "Mozilla/5.0 (X11)",
         msec: str = "1795756601.229", rid: str = RID, **headers: str) -> str:
    values = [headers.get(h.replace("-", "_"), "-") for h in HEADER_FIELDS]
    return "\t".join(["tm2", msec, rid, status, method, path, client, peer, ua, *values])


def test_a_line_as_nginx_writes_it() -> None:
    hit = parse_line(line(sec_purpose="prefetch", x_forwarded_for="198.51.100.1") + "\n")
    assert hit is not None
    assert hit.at == datetime(2026, 11, 27, 5, 16, 41, 229000, tzinfo=UTC)
    assert (hit.request_id, hit.status, hit.method, hit.path) == (RID, 302, "GET", "/c/TOKEN")
    assert (hit.client, hit.peer, hit.user_agent) == ("203.0.113.9", "127.0.0.1",
                                                      "Mozilla/5.0 (X11)")
    # Only the headers the request had; "-" is nginx's empty value.
    assert hit.headers == (("sec-purpose", "prefetch"), ("x-forwarded-for", "198.51.100.1"))


def test_escapes_are_undone_as_latin1_bytes() -> None:
    # nginx's default escaping: tab, quote, backslash, non-ASCII bytes as \xHH.
    hit = parse_line(line(ua="a\\x09b\\x22c\\x5Cd\\xC3\\xA9", accept="text/html\\x0D\\x0AX: y"))
    assert hit is not None
    assert hit.user_agent == 'a\tb"c\\dÃ©'
    assert dict(hit.headers)["accept"] == "text/html\r\nX: y"


def test_the_hit_id_is_stable_and_grows_with_time() -> None:
    a, b = parse_line(line()), parse_line(line())
    later = parse_line(line(msec="1795756602.001", rid="0" * 32))
    assert a is not None and b is not None and later is not None
    assert a.hit_id == b.hit_id and a.hit_id.endswith(RID) and len(a.hit_id) <= 64
    assert later.hit_id > a.hit_id


@pytest.mark.parametrize("text", [
    pytest.param("127.0.0.1 - - [27/Nov/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 404 0",
                 id="combined-format"),
    pytest.param(line().replace("tm2", "tm3", 1), id="other-version"),
    pytest.param(line().replace("tm2", "tm1", 1), id="tm1-with-tm2-fields"),
    pytest.param(line() + "\textra", id="too-many-fields"),
    pytest.param(line().rsplit("\t", 1)[0], id="too-few-fields"),
    pytest.param(line(msec="yesterday"), id="bad-time"),
    pytest.param(line(status="ok"), id="bad-status"),
    pytest.param(line(rid="not-an-id"), id="bad-request-id"),
])
def test_anything_else_is_a_bad_line(text: str) -> None:
    with pytest.raises(BadLine):
        parse_line(text)


def test_blank_lines_are_nothing() -> None:
    assert parse_line("") is None and parse_line("  \n") is None
    assert FIELD_COUNT == len(line().split("\t")) - 1


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    warning = info = error


def test_a_block_becomes_hits_and_every_line_is_counted() -> None:
    app, sink, _, metrics = make_app()
    log = Log()
    token = click_token()
    other = click_token().replace(click_token()[-3:], "AAA")
    block = "\n".join([
        # The client nginx logged is taken as it is: the peer 127.0.0.1 is a trusted proxy
        # for `trackmilter web`, but the reader never re-reads X-Forwarded-For.
        line(f"/c/{token}", x_forwarded_for="192.0.2.66"),
        line(f"/c/{token}", status="404"),          # nginx refused it: nothing to store
        line(f"/c/{other}", status="302"),          # nginx accepted, we do not: other keys
        line(f"/o/{token}", status="200"),          # a click token on the pixel path
        "garbage",
        "",
        line(f"/c/{token}", method="HEAD", ua="-", msec="1795756700.5",
             rid="1" * 32),
    ]) + "\n"
    now = datetime(2026, 11, 27, 5, 20, tzinfo=UTC).timestamp()
    ingest = Ingest(app, metrics, log, clock=lambda: now)  # noqa: B023 - read when called
    assert ingest.consume(block) == 2
    first, head = sink.events
    assert (first.tracking_id, first.index, first.client) == (TID, 3, "203.0.113.9")
    assert first.at == datetime(2026, 11, 27, 5, 16, 41, 229000, tzinfo=UTC)
    assert dict(first.headers)["x-forwarded-for"] == "192.0.2.66"
    assert first.hit_id.endswith(RID) and first.tracker == "t1"
    assert (head.method, head.user_agent, head.verdict) == ("HEAD", "", "machine")

    def count(outcome: str) -> float | None:
        return metrics.registry.get_sample_value("trackmilter_edge_lines_total",
                                                 {"outcome": outcome})
    assert (count("hit"), count("refused"), count("invalid"), count("unreadable")) == (
        2, 1, 2, 1)
    assert metrics.registry.get_sample_value("trackmilter_edge_lag_seconds") == pytest.approx(
        now - 1795756700.5)
    # Each kind of trouble is said once a minute, not once per line.
    assert [e for e, _ in log.events] == ["edge_token_refused", "edge_line_unreadable"]
    ingest.consume("garbage\n")
    assert [e for e, _ in log.events].count("edge_line_unreadable") == 1
    now += 61
    ingest.consume("garbage\n")
    assert log.events[-1] == ("edge_line_unreadable", {
        "also_since_last": 1, "error": log.events[-1][1]["error"], "line": "garbage"})


def test_after_a_key_rotation_the_key_file_is_read_again(tmp_path: Any) -> None:
    keyfile = tmp_path / "secret"
    keyfile.write_text("k" * 32 + "\n")
    app, sink, _, metrics = make_app()
    log = Log()
    ingest = Ingest(app, metrics, log, keys=KeyWatcher(keyfile, app, log))
    new_key = "n" * 32
    token = Signer([new_key.encode()]).sign_click(TID, 2, "https://example.org/")
    assert ingest.consume(line(f"/c/{token}") + "\n") == 0  # the file has not changed
    keyfile.write_text(f"{new_key}\n{'k' * 32}\n")  # rotated: new key first
    assert ingest.consume(line(f"/c/{token}", rid="2" * 32) + "\n") == 1
    assert sink.events[-1].index == 2
    assert [e for e, _ in log.events] == ["edge_token_refused", "edge_keys_reloaded"]


def test_a_line_that_fails_is_counted_and_the_rest_is_read() -> None:
    app, sink, _, metrics = make_app()
    log = Log()

    class Failing:
        calls = 0

        def ingest(self, *args: Any, **kw: Any) -> bool:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("judge failed")
            return bool(app.ingest(*args, **kw))

    ingest = Ingest(Failing(), metrics, log)
    token = click_token()
    block = line(f"/c/{token}") + "\n" + line(f"/c/{token}", rid="3" * 32) + "\n"
    assert ingest.consume(block) == 1
    assert metrics.registry.get_sample_value("trackmilter_edge_lines_total",
                                             {"outcome": "error"}) == 1
    assert log.events[0][0] == "edge_line_failed" and "judge failed" in log.events[0][1]["error"]


def test_a_line_of_the_older_format_still_reads_without_client_hints() -> None:
    """Logs written with the tm1 configuration (no client hints) are read, and their hits
    are marked as recorded without the hints, so no verdict blames them for lacking any."""
    from trackmilter.web.edge import HEADER_FIELDS_TM1

    new = line(sec_fetch_mode="navigate")
    old_fields = new.split("\t")[: 9 + len(HEADER_FIELDS_TM1)]
    old = "\t".join(["tm1", *old_fields[1:]])
    hit = parse_line(old)
    assert hit is not None and not hit.hints
    assert ("sec-fetch-mode", "navigate") in hit.headers
    fresh = parse_line(new)
    assert fresh is not None and fresh.hints
