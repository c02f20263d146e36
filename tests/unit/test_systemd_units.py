"""The shipped systemd units give a stopping daemon the time its configuration promises."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trackmilter.config import StoreSettings

UNITS = sorted((Path(__file__).resolve().parents[2] / "systemd").glob("trackmilter-*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_timeout_stop_sec_covers_the_stop_timeout(unit: Path) -> None:
    text = unit.read_text()
    m = re.search(r"^TimeoutStopSec=(\d+)s$", text, re.M)
    assert m, f"{unit.name}: no TimeoutStopSec"
    # systemd sends SIGKILL after TimeoutStopSec: it must outlast [store] stop_timeout, with
    # room for libmilter's listener to notice the stop (its poll wakes every 5 s).
    assert int(m.group(1)) == StoreSettings().stop_timeout + 10
    assert "KillSignal=" not in text or "KillSignal=SIGTERM" in text


def test_units_found() -> None:
    assert len(UNITS) == 5
