"""The shipped systemd units: a stopping daemon gets the time its configuration promises;
the daily jobs have timers and are as sandboxed as the daemons; scripts/install installs
every unit."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

import pytest

from trackmilter.config import StoreSettings

REPO = Path(__file__).resolve().parents[2]
SERVICES = sorted((REPO / "systemd").glob("trackmilter-*.service"))
TIMERS = sorted((REPO / "systemd").glob("trackmilter-*.timer"))
# The daemons run until stopped; a timer's service runs once and exits.
DAEMONS = [u for u in SERVICES if "Type=oneshot" not in u.read_text()]
JOBS = [u for u in SERVICES if "Type=oneshot" in u.read_text()]


def settings(unit: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of every setting, in order."""
    out, section = [], ""
    for line in unit.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key, value))
    return out


@pytest.mark.parametrize("unit", DAEMONS, ids=lambda p: p.name)
def test_timeout_stop_sec_covers_the_stop_timeout(unit: Path) -> None:
    text = unit.read_text()
    m = re.search(r"^TimeoutStopSec=(\d+)s$", text, re.M)
    assert m, f"{unit.name}: no TimeoutStopSec"
    # systemd sends SIGKILL after TimeoutStopSec: it must outlast [store] stop_timeout, with
    # room for libmilter's listener to notice the stop (its poll wakes every 5 s).
    assert int(m.group(1)) == StoreSettings().stop_timeout + 10
    assert "KillSignal=" not in text or "KillSignal=SIGTERM" in text


def test_units_found() -> None:
    assert len(DAEMONS) == 5
    assert {u.name for u in JOBS} == {"trackmilter-purge.service",
                                      "trackmilter-networks-refresh.service"}
    assert {u.stem for u in TIMERS} == {u.stem for u in JOBS}


@pytest.mark.parametrize("timer", TIMERS, ids=lambda p: p.name)
def test_timer_runs_its_job_daily_spread_and_catching_up(timer: Path) -> None:
    s = settings(timer)
    got = {(sec, k): v for sec, k, v in s}
    assert got[("Timer", "OnCalendar")] == "daily"
    assert re.fullmatch(r"\d+h", got[("Timer", "RandomizedDelaySec")])
    assert got[("Timer", "Persistent")] == "true"  # a run missed while off happens at boot
    assert got[("Install", "WantedBy")] == "timers.target"
    # No Unit=: it starts the service of its own name, which must exist.
    assert ("Timer", "Unit") not in got
    assert (timer.parent / f"{timer.stem}.service").exists()


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.name)
def test_jobs_are_sandboxed_like_the_daemons(job: Path) -> None:
    # Every hardening setting the daemons share, with the same values.
    shared = set.intersection(*(
        {(k, v) for sec, k, v in settings(d) if sec == "Service"} for d in DAEMONS))
    hardening = {(k, v) for k, v in shared
                 if k.startswith(("Protect", "Restrict", "Private", "SystemCall", "NoNew",
                                  "Capability", "Ambient", "Lock", "User", "Group", "UMask"))}
    assert ("ProtectSystem", "strict") in hardening and ("User", "trackmilter") in hardening
    mine = {(k, v) for sec, k, v in settings(job) if sec == "Service"}
    assert hardening <= mine, hardening - mine
    assert any(k == "ExecStart" and v.startswith("/opt/trackmilter/bin/trackmilter ")
               for k, v in mine)
    # A job never uses the daemons' Restart=: a failure waits for tomorrow's run, visibly.
    assert not any(k == "Restart" for k, _ in mine)


def test_scripts_install_installs_every_unit() -> None:
    text = (REPO / "scripts" / "install").read_text()
    loop = re.search(r"^\s*for unit in ([^;]+); do$", text, re.M)
    assert loop, "scripts/install: the loop over systemd/ units not found"
    patterns = loop.group(1).split()
    for unit in (REPO / "systemd").iterdir():
        assert any(fnmatch(f"systemd/{unit.name}", p) for p in patterns), unit.name
    # ... with PREFIX put in place of /opt/trackmilter in every one of them.
    assert 'sed "s#/opt/trackmilter/#${PREFIX%/}/#g" "$unit"' in text


def test_reload_is_sighup_for_the_trackers_and_absent_from_the_milter() -> None:
    """`trackmilter web` and `trackmilter edge` read the key file and the network lists
    again on SIGHUP; libmilter takes SIGHUP as "stop", so the milter must have no reload
    (it follows its key file by itself)."""
    by_name = {u.name: settings(u) for u in SERVICES}
    reloads = {name for name, s in by_name.items() if any(k == "ExecReload" for _, k, _ in s)}
    assert reloads == {"trackmilter-web.service", "trackmilter-edge.service"}
    for name in reloads:
        assert ("Service", "ExecReload", "/bin/kill -HUP $MAINPID") in by_name[name]
    # A networks refresh that succeeded makes the running trackers read the new lists.
    post = [v for sec, k, v in by_name["trackmilter-networks-refresh.service"]
            if k == "ExecStartPost"]
    assert len(post) == 1 and post[0].startswith("+/usr/bin/systemctl try-reload-or-restart ")
    assert set(post[0].split()[2:]) == reloads
