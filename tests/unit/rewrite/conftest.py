"""Every rewrite test runs both engines: the native engine's pieces are checked against the
Python engine's on every call the test makes (native_support.differential)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from tests.unit.rewrite import native_support


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if native_support.NATIVE is None and os.environ.get("TRACKMILTER_REQUIRE_NATIVE") == "1":
        # scripts/test sets it where the extension was built: a silent Python-only run
        # would prove nothing about the native engine.
        raise pytest.UsageError(
            "TRACKMILTER_REQUIRE_NATIVE=1 but trackmilter.rewrite._native does not import"
        )


@pytest.fixture(autouse=True)
def both_engines() -> Iterator[None]:
    """While a rewrite test runs, rewrite_message runs the shared MIME walk with pieces that
    call the Python and the native implementation and fail the test when they differ."""
    with native_support.differential():
        yield
