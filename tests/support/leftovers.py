"""Processes a test session started that are still running when it ends.

At session start :func:`mark_session` puts the pytest process's pid in the environment
(``TRACKMILTER_TEST_SESSION``), so every process the tests start inherits it — including
daemons started with ``start_new_session=True``, which are re-parented to init once their
parent dies and so are no longer found by walking parent pids. At session end
:func:`find_leftovers` lists every live process that descends from pytest (the ppid chains
of /proc/*/stat) or carries the marker, and :func:`kill` ends the marked ones.

A nested session (a test that runs pytest, or pytest-xdist workers) appends its own pid to
the marker (``outer:inner``), so the outer session still recognises what the inner one
leaves behind. A process started with an explicit ``env=`` that drops the marker is only
found while it still descends from pytest. Processes started outside pytest (the
PostgreSQL that scripts/test starts, system services) have no marker and are not pytest's
descendants, so they are never reported. Postfix's master sanitises its environment, so a
Postfix instance a test forgets to stop is not found here (the lab stops it).

Cheap: one read of /proc/PID/stat per process, and /proc/PID/environ only for processes
started after the session began (none earlier can carry the marker).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

MARKER = "TRACKMILTER_TEST_SESSION"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Leftover:
    pid: int
    starttime: int  # clock ticks since boot (field 22 of /proc/PID/stat)
    age: float  # seconds
    cmdline: str
    marked: bool  # carries our marker (else only found as pytest's descendant)


def mark_session(pid: int | None = None) -> int:
    """Put `pid` (default: this process) in the environment marker; returns it."""
    pid = os.getpid() if pid is None else pid
    outer = os.environ.get(MARKER, "")
    os.environ[MARKER] = f"{outer}:{pid}" if outer else str(pid)
    return pid


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of `pid`, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) is in parentheses and may itself hold spaces or parentheses.
    fields = data[data.rfind(b")") + 2:].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def _marked(pid: int, session: int) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return False
    prefix = MARKER.encode() + b"="
    for entry in env.split(b"\0"):
        if entry.startswith(prefix):
            return str(session).encode() in entry[len(prefix):].split(b":")
    return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return "?"
    if not raw:  # exiting, or a kernel thread
        return "[no cmdline]"
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def _uptime_ticks() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) * _CLK_TCK


def find_leftovers(session: int) -> list[Leftover]:
    """Live processes (not zombies) other than `session` itself that descend from it or
    carry its marker."""
    own = _stat(session)
    since = own[2] if own is not None else 0
    procs: dict[int, tuple[str, int, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None:
                procs[int(name)] = stat
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    descendants: set[int] = set()
    todo = list(children.get(session, ()))
    while todo:
        pid = todo.pop()
        if pid not in descendants:
            descendants.add(pid)
            todo.extend(children.get(pid, ()))
    now = _uptime_ticks()
    found = []
    for pid, (state, _, starttime) in sorted(procs.items()):
        if pid == session or state in ("Z", "X") or starttime < since:
            continue
        marked = _marked(pid, session)
        if marked or pid in descendants:
            found.append(Leftover(pid, starttime, max(0.0, (now - starttime) / _CLK_TCK),
                                  _cmdline(pid), marked))
    return found


def _same(proc: Leftover) -> bool:
    """`proc` is still that process (not gone, not a zombie, pid not reused)."""
    stat = _stat(proc.pid)
    return stat is not None and stat[2] == proc.starttime and stat[0] not in ("Z", "X")


def _signal(proc: Leftover, sig: int) -> None:
    # A pidfd pins the process, so a pid reused since the check is never signalled.
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:
        return
    try:
        if _same(proc):
            signal.pidfd_send_signal(fd, sig)
    except OSError:
        pass
    finally:
        os.close(fd)


def kill(procs: list[Leftover], grace: float = 3.0) -> list[Leftover]:
    """SIGTERM each of `procs`, SIGKILL those still running `grace` seconds later (each by
    its pid). Returns those still running after that."""
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = [p for p in procs if _same(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _same(p)]
    for proc in alive:
        _signal(proc, signal.SIGKILL)
    deadline = time.monotonic() + 1.0
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _same(p)]
    return alive


def report(procs: list[Leftover]) -> list[str]:
    lines = [f"{len(procs)} process(es) started by this test session outlived it:"]
    for p in procs:
        how = "marked" if p.marked else "descendant, unmarked: not killed"
        lines.append(f"  pid {p.pid}  age {p.age:.1f}s  ({how})  {p.cmdline}")
    return lines
