"""Configuration: [milter] memory_budget and memory_wait."""

from __future__ import annotations

from pathlib import Path

import pytest

from trackmilter.config import ConfigError, load


def test_defaults() -> None:
    m = load(None, environ={}).milter
    assert m.memory_budget == 256 * 1024 * 1024 and m.memory_wait == 5.0


def test_file_and_environment(tmp_path: Path) -> None:
    p = tmp_path / "tm.toml"
    p.write_text("[milter]\nmemory_budget = 134217728\nmemory_wait = 0\n")
    m = load(p, environ={}).milter
    assert (m.memory_budget, m.memory_wait) == (134217728, 0.0)
    m = load(p, environ={"TRACKMILTER_MILTER_MEMORY_BUDGET": "0",
                         "TRACKMILTER_MILTER_MEMORY_WAIT": "2.5"}).milter
    assert (m.memory_budget, m.memory_wait) == (0, 2.5)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("memory_budget = 1000", r"\[milter\] memory_budget: expected 0 \(no limit\) or at least"),
        ("memory_budget = -1", r"\[milter\] memory_budget: must not be negative"),
        ('memory_budget = "lots"', r"\[milter\] memory_budget"),
        ("memory_wait = -1", r"\[milter\] memory_wait: must be 0 \(no wait\) or a number of seconds up to 60"),
        ("memory_wait = 600", r"\[milter\] memory_wait: must be 0 \(no wait\) or a number of seconds up to 60"),
        ("memory_wait = true", r"\[milter\] memory_wait: expected a number of seconds"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "tm.toml"
    p.write_text(f"[milter]\n{text}\n")
    with pytest.raises(ConfigError, match=match):
        load(p, environ={})
