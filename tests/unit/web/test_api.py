"""The read-only JSON API: bearer tokens, status and report as JSON, an OpenAPI document
whose paths are the ones served."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.unit.web.test_web_app import call, make_app

from trackmilter.store.views import MessageView, RecipientView
from trackmilter.web.api import OPENAPI, Api, load_tokens

TOKEN = b"t" * 32
T0 = datetime(2026, 11, 27, tzinfo=UTC)


class Store:
    def lookup(self, ident: str, *, limit: int = 100) -> list[MessageView]:
        if ident != "4QABC":
            return []
        return [MessageView("abcdefghijklmnop", "outgoing", "queued", "a@example.org", T0, T0,
                            queue_id="4QABC",
                            recipients=(RecipientView("b@example.net", "accepted", "", "", T0),))]

    def scan(self, since: datetime, sender: str = "", chunk: int = 200, *,
             with_hits: bool = True) -> Iterator[list[MessageView]]:
        yield self.lookup("4QABC")

    def hit_counts(self, tracking_ids: Sequence[str]) -> dict[str, dict[tuple[str, str], int]]:
        return {}

    def count_messages(self, since: datetime, sender: str = "") -> int:
        return 1

    def log_progress(self, mtas: Sequence[str]) -> dict[str, datetime | None]:
        return {}


def app_with_api() -> Any:
    app, _, _, _ = make_app(api=Api(Store(), (TOKEN,)))
    return app


def auth(token: bytes = TOKEN) -> list[tuple[str, str]]:
    return [("Authorization", "Bearer " + token.decode())]


def test_messages_with_a_token() -> None:
    status, headers, body = call(app_with_api(), "/api/v1/messages/4QABC", headers=auth())
    assert status == 200 and headers["content-type"] == "application/json"
    (m,) = json.loads(body)
    assert m["queue_id"] == "4QABC"
    assert m["recipients"][0]["state"] == "unknown"
    assert m["engagement"]["summary"].startswith("no open pixel")


@pytest.mark.parametrize("headers", [
    pytest.param([], id="none"),
    pytest.param(auth(b"x" * 32), id="wrong"),
    pytest.param([("Authorization", "Basic " + TOKEN.decode())], id="not-bearer"),
    pytest.param(auth(TOKEN[:-1]), id="prefix"),
])
def test_without_a_valid_token_401(headers: list[tuple[str, str]]) -> None:
    status, h, _ = call(app_with_api(), "/api/v1/messages/4QABC", headers=headers)
    assert status == 401 and "bearer" in h["www-authenticate"].lower()


def test_not_found_report_and_bad_parameters() -> None:
    app = app_with_api()
    assert call(app, "/api/v1/messages/nope", headers=auth())[0] == 404
    status, _, body = call(app, "/api/v1/report", headers=auth())
    assert status == 200 and json.loads(body)["messages"] == 1
    assert "never 'unread'" in " ".join(json.loads(body)["notes"])
    status, _, body = call(app, "/api/v1/report", headers=auth())
    assert call(app, "/api/v1/nothing", headers=auth())[0] == 404
    assert call(app, "/api/v1/messages/4QABC", headers=auth(), method="POST")[0] == 405


def test_report_since_is_validated() -> None:
    from trackmilter.web.api import ApiError, _since

    with pytest.raises(ApiError):
        _since("yesterday")
    with pytest.raises(ApiError):
        _since("9999d")
    for overflowing in ("infd", "1e400d", "-infh"):
        with pytest.raises(ApiError):
            _since(overflowing)
    assert _since("12h").total_seconds() == 43200


@pytest.mark.parametrize("path", [
    pytest.param("/api/v1/messages/a%00b", id="ident"),
    pytest.param("/api/v1/report?sender=a%00b", id="sender"),
    pytest.param("/api/v1/report?header=X-Campaign%3Da%00b", id="header"),
])
def test_nul_is_a_bad_request_not_a_store_error(path: str) -> None:
    route, _, query = path.partition("?")
    status, _, body = call(app_with_api(), route, headers=auth(), query=query)
    assert status == 400 and b"NUL" in body


def test_openapi_describes_the_served_paths() -> None:
    status, _, body = call(app_with_api(), "/api/v1/openapi.json")
    assert status == 200
    doc = json.loads(body)
    assert doc == json.loads(json.dumps(OPENAPI))
    assert set(doc["paths"]) == {"/api/v1/messages/{ident}", "/api/v1/report"}


def test_no_token_file_no_api() -> None:
    app, _, _, _ = make_app()
    assert call(app, "/api/v1/openapi.json")[0] == 404


def test_token_file(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text("# comment\n" + "a" * 30 + "\n" + "b" * 30 + " Example.ORG shop.example\n")
    all_, scoped = load_tokens(f)
    assert (all_.secret, all_.domains) == (b"a" * 30, frozenset())
    assert scoped.domains == {"example.org", "shop.example"}
    f.write_text("short\n")
    with pytest.raises(ValueError, match="shorter than 24"):
        load_tokens(f)


def test_a_token_sees_only_its_senders_domains() -> None:
    from trackmilter.web.api import ApiToken

    mine, other = ApiToken(b"m" * 30, frozenset({"example.org"})), ApiToken(b"o" * 30,
                                                                           frozenset({"x.test"}))
    app, _, _, _ = make_app(api=Api(Store(), (mine, other)))
    status, _, body = call(app, "/api/v1/messages/4QABC", headers=auth(mine.secret))
    assert status == 200 and json.loads(body)[0]["sender"] == "a@example.org"
    assert call(app, "/api/v1/messages/4QABC", headers=auth(other.secret))[0] == 404
    status, _, body = call(app, "/api/v1/report", headers=auth(other.secret))
    assert status == 200 and json.loads(body)["messages"] == 0
