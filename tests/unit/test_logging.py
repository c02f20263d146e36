"""Log lines: secrets never, addresses pseudonymous when asked, one line per delivery."""

from __future__ import annotations

import io
import json

from trackmilter import logging as tmlog


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_addresses_hashed_when_asked_and_stable() -> None:
    out = io.StringIO()
    tmlog.configure("json", "info", stream=out, hash_addresses=True)
    log = tmlog.get_logger(component="t")
    log.info("message", sender="Alice@Example.org", queue_id="4Q",
             recipients=[{"address": "bob@example.net", "outcome": "accepted"}])
    log.info("delivery", recipient="BOB@example.net", status="sent", secret="k")
    first, second = lines(out)
    assert first["sender"] == tmlog.pseudonym("alice@example.org")
    assert str(first["sender"]).startswith("sha256:") and "example" not in str(first["sender"])
    assert first["recipients"] == [{"address": tmlog.pseudonym("bob@example.net"),
                                    "outcome": "accepted"}]
    assert second["recipient"] == first["recipients"][0]["address"]  # type: ignore[index]
    assert second["secret"] == "[redacted]" and first["queue_id"] == "4Q"


def test_addresses_kept_by_default() -> None:
    out = io.StringIO()
    tmlog.configure("json", "info", stream=out)
    tmlog.get_logger().info("delivery", recipient="bob@example.net")
    assert lines(out)[0]["recipient"] == "bob@example.net"
