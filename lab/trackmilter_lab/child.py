"""What every lab process wrapper does with its child: wait until it serves, read what it
said, end it by its pid."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from trackmilter_lab.postfix import wait_until

Child = subprocess.Popen[bytes]


def output(path: Path) -> str:
    """What the child wrote to its log file ("" before it wrote anything)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_serving(proc: Child, probe: Callable[[], bool], timeout: float, *, what: str,
                 said: Callable[[], str], interval: float = 0.1) -> None:
    """Poll `probe` until it is true; raise with the child's output if it exits first."""

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode} before serving:\n{said()}")
        return probe()

    wait_until(ready, timeout, interval=interval, what=what)


def end(proc: Child | None, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
    """Send `sig` to our child (by its pid), SIGKILL after `timeout`; its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    return proc.returncode
