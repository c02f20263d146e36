"""Run `trackmilter milter` as a child process with a throwaway configuration (tests, demo, benchmarks)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trackmilter_lab.milterproc import MilterProcess
from trackmilter_lab.postfix import wait_until

BASE_URL = "https://t.example"


def write_config(
    workdir: Path,
    socket_path: Path,
    *,
    base_url: str = BASE_URL,
    metrics_listen: str = "",
    log_level: str = "info",
    extra: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A TOML config with a fresh HMAC key, a SQLite store and a spool inside ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    secret = workdir / "secret"
    if not secret.exists():
        secret.write_text(secrets.token_hex(32) + "\n")
        secret.chmod(0o600)
    sections: dict[str, dict[str, Any]] = {
        "milter": {"socket": f"unix:{socket_path}", "mta_name": "lab.example"},
        # A lab: its mail goes to a fake MX, so links to a reserved domain harm nobody.
        "tracking": {"base_url": base_url, "secret_file": str(secret),
                     "allow_reserved_base_url": True},
        "database": {"url": f"sqlite:///{workdir / 'trackmilter.db'}"},
        "store": {
            "spool_dir": str(workdir / "spool"),
            "flush_interval": 0.05,
            "retry_interval": 0.5,
        },
        "metrics": {"listen": metrics_listen},
        "log": {"format": "json", "level": log_level},
    }
    for name, values in (extra or {}).items():
        sections.setdefault(name, {}).update(values)
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml(v)}" for k, v in values.items())
        lines.append("")
    path = workdir / "trackmilter.toml"
    path.write_text("\n".join(lines))
    return path


def _toml(value: Any) -> str:
    """A TOML literal: JSON's strings, numbers, booleans and arrays are valid TOML; tables
    are written inline."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def command(config: Path, *args: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", "trackmilter", "--config", str(config), *args]


def milter_process(config: Path, socket_path: Path, python: str = sys.executable) -> MilterProcess:
    """The daemon, not started; upgrade the schema first so it starts on a ready store."""
    subprocess.run(
        command(config, "db", "upgrade", python=python), check=True, capture_output=True, timeout=60
    )
    return MilterProcess(
        command(config, "milter", python=python), socket_path, log_path=config.parent / "milter.log"
    )


def status(config: Path, ident: str, python: str = sys.executable) -> list[dict[str, Any]]:
    """``trackmilter status --json IDENT`` (empty list when nothing matches)."""
    proc = subprocess.run(
        command(config, "status", "--json", ident, python=python),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"trackmilter status failed ({proc.returncode}): {proc.stderr}")
    result: list[dict[str, Any]] = json.loads(proc.stdout) if proc.stdout.strip() else []
    return result


def wait_status(
    config: Path,
    ident: str,
    predicate: Callable[[list[dict[str, Any]]], bool] = bool,
    timeout: float = 20.0,
    python: str = sys.executable,
) -> list[dict[str, Any]]:
    """Poll ``status`` until ``predicate`` holds for what it shows (the writer is asynchronous)."""
    last: list[list[dict[str, Any]]] = [[]]

    def check() -> list[dict[str, Any]] | None:
        last[0] = status(config, ident, python)
        return last[0] if predicate(last[0]) else None

    try:
        return wait_until(check, timeout, interval=0.2, what=f"status of {ident}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; last status: {json.dumps(last[0], indent=1)}") from None
