"""The read-only JSON API (`/api/v1/...`): what `trackmilter status` and `report` show, for
services that send mail for others. Bearer tokens; database work off the event loop."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

from trackmilter.model import utcnow
from trackmilter.status import annotate
from trackmilter.store.base import StoreReader
from trackmilter.store.views import MessageView
from trackmilter.tally import as_dict, header_filter, parse_since, tally

PREFIX = "/api/v1/"
Response = tuple[int, list[tuple[bytes, bytes]], bytes]
_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
MAX_SINCE_DAYS = 366


class ApiError(Exception):
    """A request the API answers with a 4xx and a JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ReadStore(Protocol):
    def lookup(self, ident: str, *, limit: int = 100) -> list[MessageView]: ...


@dataclass(frozen=True)
class ApiToken:
    """A bearer token and the sender domains it may see (empty: every message)."""

    secret: bytes
    domains: frozenset[str] = frozenset()

    def allows(self, sender: str) -> bool:
        if not self.domains:
            return True
        domain = sender.rpartition("@")[2].lower().rstrip(">")
        return domain in self.domains


def load_tokens(path: Path) -> tuple[ApiToken, ...]:
    """One token per line, optionally followed by the sender domains it may see (a
    service sending for several customers gives each customer a token for its domains);
    blank lines and # comments ignored. Tokens have at least 24 characters."""
    tokens = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        secret, *domains = line.split()
        tokens.append(ApiToken(secret.encode(), frozenset(d.lower() for d in domains)))
    if not tokens:
        raise ValueError(f"{path}: no API token")
    short = [n for n, t in enumerate(tokens, 1) if len(t.secret) < 24]
    if short:
        raise ValueError(f"{path}: token {short[0]} is shorter than 24 characters")
    return tuple(tokens)


def _json(status: int, data: Any) -> Response:
    return status, [_JSON, _NO_STORE], json.dumps(data, indent=1, sort_keys=True).encode()


def _since(value: str) -> timedelta:
    try:
        since = parse_since(value or "7d")
    except ValueError as exc:
        raise ApiError(400, f"since: {exc}") from None
    if not timedelta(minutes=1) <= since <= timedelta(days=MAX_SINCE_DAYS):
        raise ApiError(400, f"since: between 1 minute and {MAX_SINCE_DAYS} days")
    return since


def _no_nul(name: str, value: str) -> str:
    # Nothing recorded holds a NUL (PostgreSQL cannot store one, and would refuse the query).
    if "\x00" in value:
        raise ApiError(400, f"{name}: contains a NUL character")
    return value


class Api:
    """Routes: messages/{ident} (tracking id, Message-ID, queue id or recipient), report,
    openapi.json (the latter without a token)."""

    def __init__(self, store: StoreReader, tokens: Sequence[ApiToken | bytes]) -> None:
        self._store = store
        self._tokens = tuple(t if isinstance(t, ApiToken) else ApiToken(t) for t in tokens)

    def _authorised(self, scope: Any) -> ApiToken | None:
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:].strip()
                found = None
                for token in self._tokens:  # every token compared: no timing on which
                    if hmac.compare_digest(given, token.secret):
                        found = token
                return found
        return None

    async def handle(self, scope: Any, path: str, method: str) -> Response:
        route = path[len(PREFIX):]
        if route == "openapi.json":
            return _json(200, OPENAPI)
        if method not in ("GET", "HEAD"):
            return 405, [(b"allow", b"GET, HEAD"), _JSON], b'{"error": "method not allowed"}'
        token = self._authorised(scope)
        if token is None:
            return (401, [_JSON, (b"www-authenticate", b'Bearer realm="trackmilter"')],
                    b'{"error": "a valid bearer token is required"}')
        try:
            if route.startswith("messages/") and len(route) > len("messages/"):
                ident = _no_nul("ident", unquote(route[len("messages/"):]))
                found = await asyncio.to_thread(self._messages, ident, token)
                if not found:
                    raise ApiError(404, f"nothing recorded for {ident!r}")
                return _json(200, found)
            if route == "report":
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                since = _since(query.get("since", ["7d"])[0])
                sender = _no_nul("sender", query.get("sender", [""])[0])
                try:
                    wanted = header_filter(_no_nul("header", h) for h in query.get("header", []))
                except ValueError as exc:
                    raise ApiError(400, f"header: {exc}") from None
                return _json(200, await asyncio.to_thread(self._report, since, sender, wanted,
                                                          token))
            raise ApiError(404, "no such route")
        except ApiError as e:
            return _json(e.status, {"error": str(e)})

    def _messages(self, ident: str, token: ApiToken) -> list[dict[str, Any]]:
        # Messages of other senders are not there for this token: 404, not 403.
        return annotate([v for v in self._store.lookup(ident) if token.allows(v.sender)])

    def _report(self, since: timedelta, sender: str, wanted: dict[str, str],
                token: ApiToken) -> dict[str, Any]:
        start = utcnow() - since
        counted = tally(self._store, start, sender, wanted, allowed=token.allows)
        return {"since": start.isoformat(), "sender": sender or None, "headers": wanted,
                **as_dict(counted)}


_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}
# What _since accepts, written out exactly: 1-366 days, 1-8784 hours, 1-527040 minutes.
_SINCE_PATTERN = (
    "^(([1-9]|[1-9][0-9]|[12][0-9]{2}|3[0-5][0-9]|36[0-6])d"
    "|([1-9][0-9]{0,2}|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-7][0-9]|878[0-4])h"
    "|([1-9][0-9]{0,4}|[1-4][0-9]{5}|5[01][0-9]{4}|52[0-6][0-9]{3}|5270[0-3][0-9]|527040)m)$"
)
# NAME=VALUE with a name that is not blank (by Python's idea of whitespace, a superset of
# JSON Schema's). No value may hold a NUL: nothing recorded does.
_HEADER_PATTERN = r"^[^=\x00]*[^=\s\x1c-\x1f\x85\x00][^=\x00]*=[^\x00]*$"
_NO_NUL = {"type": "string", "pattern": r"^[^\x00]*$"}
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "trackmilter", "version": "1",
             "description": "What happened to an email, and how sure we can be. Read-only."},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                   "schemas": {"Error": _ERROR}},
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/messages/{ident}": {"get": {
            "summary": "Messages matching a tracking id, Message-ID, queue id or recipient, "
                       "newest first, with recipients (state, now), timeline events, hits "
                       "(verdict, reasons, history) and engagement — as `trackmilter status "
                       "--json`.",
            "parameters": [{"name": "ident", "in": "path", "required": True,
                            "schema": _NO_NUL}],
            "responses": {
                "200": {"description": "the messages",
                        "content": {"application/json": {"schema": {"type": "array",
                                                                    "items": {"type": "object"}}}}},
                "401": {"description": "no or a wrong bearer token"},
                "404": {"description": "nothing recorded",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            }}},
        "/api/v1/report": {"get": {
            "summary": "Counts and rates over a period, each with its denominator and notes "
                       "on what it cannot mean — as `trackmilter report --json`.",
            "parameters": [
                {"name": "since", "in": "query",
                 "schema": {"type": "string", "default": "7d", "pattern": _SINCE_PATTERN},
                 "description": "7d, 12h, 30m: from 1 minute to 366 days"},
                {"name": "sender", "in": "query", "schema": _NO_NUL},
                {"name": "header", "in": "query",
                 "schema": {"type": "array", "items": {"type": "string",
                                                       "pattern": _HEADER_PATTERN}},
                 "description": "NAME=VALUE, repeatable: messages with these recorded headers"},
            ],
            "responses": {
                "200": {"description": "the report",
                        "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": {"description": "a bad parameter"},
                "401": {"description": "no or a wrong bearer token"},
            }}},
    },
}
