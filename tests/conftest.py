"""Session-wide checks for the whole test suite."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load_leftovers() -> ModuleType:
    # By path, not `from tests.support import leftovers`: tests/support/__init__.py imports
    # the lab, and this check must not depend on (or fail with) anything but the stdlib.
    path = Path(__file__).with_name("support") / "leftovers.py"
    spec = importlib.util.spec_from_file_location("_trackmilter_test_leftovers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks the module up by name
    spec.loader.exec_module(module)
    return module


leftovers = _load_leftovers()
_SESSION_PID = os.getpid()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Mark every process the tests start (inherited environment), see tests/support/leftovers."""
    leftovers.mark_session(_SESSION_PID)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process the tests started is still running; end the marked ones."""
    found = leftovers.find_leftovers(_SESSION_PID)
    if not found:
        return
    lines = leftovers.report(found)
    survivors = leftovers.kill([p for p in found if p.marked])
    if survivors:
        lines.append("  still running after SIGKILL: "
                     + ", ".join(str(p.pid) for p in survivors))
    lines.append("A test must stop every process it starts (tests/support/leftovers.py).")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "processes left running", red=True, bold=True)
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print("\n".join(lines), file=sys.stderr)
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
