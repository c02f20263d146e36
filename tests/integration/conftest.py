"""Fixtures for tests that run real Postfix: a fake remote MX, private Postfix instances, milters."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support import NULLMILTER
from tests.support.lab import NullMilter, PostfixFactory

from trackmilter_lab import (
    FakeMX,
    MilterProcess,
    PostfixInstance,
    make_socket_dir,
    postfix_available,
)

_HERE = Path(__file__).resolve().parent
NO_POSTFIX = "Postfix is not installed (no `postfix` command or user): scripts/setup installs it"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Remember each phase's outcome so teardown can show the maillog of a failed test.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


@pytest.fixture
def fake_mx() -> Iterator[FakeMX]:
    """A started FakeMX with the default rules (reject*@ → 550, defer*@ → 450)."""
    with FakeMX() as mx:
        yield mx


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A directory in /tmp for unix milter sockets, connectable by user postfix."""
    path = make_socket_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def postfix_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PostfixFactory]:
    """Factory: `postfix_lab(milter=None, **opts)` → a started private Postfix instance.

    Relays to the `fake_mx` fixture unless `relay_port` or `relayhost` is given. Every
    instance is stopped at teardown, even on failure; its maillog is copied into tmp_path
    and, when the test failed, its tail is printed.
    """
    if not postfix_available():
        pytest.skip(NO_POSTFIX)
    instances: list[PostfixInstance] = []

    def make(milter: str | None = None, **opts: Any) -> PostfixInstance:
        if "relay_port" not in opts and "relayhost" not in opts:
            opts["relay_port"] = request.getfixturevalue("fake_mx").port
        instance = PostfixInstance(milter=milter, **opts)
        instances.append(instance)
        instance.start()
        return instance

    yield make

    failed = _failed(request)
    for n, instance in enumerate(instances):
        try:
            instance.stop()
        finally:
            if instance.log_path.exists():
                shutil.copy(instance.log_path, tmp_path / f"maillog.{n}")
            if failed:
                print(f"--- maillog of {instance.base} ---\n{instance.log_text()}")
            instance.cleanup()


@pytest.fixture
def null_milter(socket_dir: Path) -> Iterator[NullMilter]:
    """A running nullmilter on a unix socket in `socket_dir`; killed at teardown."""
    sock = socket_dir / "null.sock"
    record = socket_dir / "null.jsonl"
    argv = [sys.executable, str(NULLMILTER), f"unix:{sock}", "--record", str(record)]
    process = MilterProcess(argv, sock).start()
    try:
        yield NullMilter(process, record)
    finally:
        process.stop(graceful=False)
