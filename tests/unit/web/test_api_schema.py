"""The JSON API against its own OpenAPI document, driven by schemathesis: generated requests
(odd identifiers, parameters, query strings) never get a server error, and every answer is
one the document describes (status, content type, body schema)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from tests.unit.store.store_helpers import make_message
from tests.unit.web.test_web_app import make_app

from trackmilter.store import SQLStore, upgrade
from trackmilter.web.api import Api

TOKEN = "s" * 32


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('api') / 't.db'}"
    upgrade(url)
    store = SQLStore(url)
    store.write([make_message(n, rcpts=("bob@example.net",), refused=("no@example.net",),
                              links_=("https://a.example/1", "https://a.example/2"))
                 for n in range(3)])
    app, _, _, _ = make_app(api=Api(store, (TOKEN.encode(),)))
    try:
        yield app
    finally:
        store.close()


@pytest.fixture(scope="module")
def api_schema(api_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/api/v1/openapi.json", api_app)


PATHS = ["/api/v1/messages/{ident}", "/api/v1/report"]


@pytest.mark.parametrize("path", PATHS)
def test_api_answers_as_documented(api_schema: Any, path: str) -> None:
    # Plain hypothesis over schemathesis's strategy (its pytest plugin does not load under
    # this pytest); every generated request must pass every default check.
    operation = api_schema[path]["GET"]
    calls = []

    @given(case=operation.as_strategy())
    @settings(max_examples=80, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
        calls.append(response.status_code)

    run()
    assert calls and 200 in calls or 404 in calls
