"""Fault injection for the milter's mail path and the tracker: a rig, the faults, the counts.

The rig (`FaultRig`): a private Postfix (lab) whose smtpd talks to `trackmilter milter` on a
unix socket with ``milter_default_action = tempfail`` (mail is refused with a 4xx while the
milter is down, never passed unrecorded), a FakeMX on loopback behind it, and the milter's
store in a fresh database on a `PgCluster` the caller started; the milter's spool in a
temporary directory, optionally on a small tmpfs mounted for the run.

`run_fault()` starts a `Sender` (unpaced, N clients, retrying 4xx and connection errors),
injects one fault of `FAULTS` once a share of the messages is accepted, recovers, waits
(deadlines, polling) for the sender, for Postfix's queue to empty and for the store to
settle, then counts: every message Postfix accepted must have reached the MX (by
Message-ID), nothing may be in Postfix's ``corrupt`` queue, and every accepted message must
have its row in ``messages`` (by Message-ID). `Outcome.problems()` says what is wrong, with
counts and the first Message-IDs.

`run_web_kill9()` does the same for `trackmilter web`: click requests with valid signed
links, each with a unique ``n`` in its target URL (stored in ``hits.url``), the tracker
killed with SIGKILL under that stream and started again; every hit answered with a 302
must be stored.

Everything started here is ended by its pid; a fault's pause (how long the milter or the
database stays down) is a deliberate duration, every wait for a state is a poll with a
deadline.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.pgcluster import PgCluster, children_of
from tests.support.smtpload import (
    DEFAULT_TEMPLATE,
    Sender,
    make_messages,
    message_id_of,
    worst,
)

from trackmilter.model import new_tracking_id
from trackmilter.tokens import Signer
from trackmilter_lab import FakeMX, MilterProcess, PostfixInstance, free_port, make_socket_dir
from trackmilter_lab.daemon import command, write_config
from trackmilter_lab.postfix import process_gone, wait_until
from trackmilter_lab.webproc import WebProcess, request

TRACKING_HEADER = b"X-Trackmilter-ID:"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

# Postfix for a load test: intake not tied to delivery, one destination taking as many
# connections as it is given (as in tests/benchmarks/bench_postfix.py), and the milter's
# failure a temporary one.
POSTFIX_MAIN_CF = {
    "milter_default_action": "tempfail",
    "in_flow_delay": "0s",
    "default_destination_concurrency_limit": "50",
    "smtpd_client_connection_count_limit": "0",
}
# The lab's quick writer (tests/…/daemon.write_config); the benchmark uses the defaults.
LAB_STORE = {"flush_interval": 0.05, "retry_interval": 0.5}


# -- processes -------------------------------------------------------------------------


def vm_hwm_kb(pid: int | None) -> int:
    """Peak resident set size of `pid` (VmHWM, kB); 0 when gone or unknown."""
    if pid is None:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children, ...)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = children_of(todo.pop())
        out += kids
        todo += kids
    return out


def kill_tree(pid: int) -> list[int]:
    """SIGKILL `pid` and every process below it (listed first, so that orphans are not
    missed); returns the pids killed. The caller reaps `pid` (its own child)."""
    below = descendants(pid)
    for p in [pid, *below]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return [pid, *below]


def clean_env() -> dict[str, str]:
    """Our environment without TRACKMILTER_* variables (they would override the config)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TRACKMILTER_")}


def hold(seconds: float) -> None:
    """How long a fault lasts: a deliberate duration, not a wait for anything."""
    time.sleep(seconds)


# -- a small tmpfs ---------------------------------------------------------------------


def tmpfs_unavailable_reason() -> str | None:
    """Why this process cannot mount a tmpfs (None: it can)."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount not found"
    probe = Path(tempfile.mkdtemp(prefix="tm-tmpfs-probe-", dir="/tmp"))
    try:
        fs = Tmpfs(probe, "64k")
        try:
            fs.mount()
        except RuntimeError as exc:
            return f"cannot mount a tmpfs here: {exc}"
        fs.umount()
        return None
    finally:
        shutil.rmtree(probe, ignore_errors=True)


class Tmpfs:
    """`mount -t tmpfs -o size=SIZE tmpfs PATH`, a filler file to make it full, umount."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size
        self.mounted = False
        self.filler = path / "filler.bin"

    def mount(self) -> Tmpfs:
        self.path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0750",
                               "tmpfs", str(self.path)], capture_output=True, text=True,
                              timeout=30, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"mount tmpfs on {self.path}: {proc.stderr.strip()}")
        self.mounted = True
        return self

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Write the filler file until the file system refuses (ENOSPC); its size."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (65536, 4096, 512, 1):
                block = b"\0" * chunk
                while True:
                    try:
                        written += os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def umount(self) -> None:
        if not self.mounted:
            return
        proc = subprocess.run(["umount", str(self.path)], capture_output=True, text=True,
                              timeout=30, check=False)
        if proc.returncode != 0:  # something still holds it open: detach it anyway
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30,
                           check=False)
        self.mounted = False


# -- the mail rig ----------------------------------------------------------------------


@dataclass
class RigOptions:
    messages: int = 300
    clients: int = 10
    links: int = 25
    template: Path | None = DEFAULT_TEMPLATE
    inject_after: float = 0.25  # share of the messages accepted before the fault
    after_share: float = 0.3  # share of the messages held back until recovery is complete
    kill_down: tuple[float, float] = (2.0, 4.0)  # kill -9: restarted after this many s
    pg_down: float = 3.0  # PostgreSQL stopped this long (fast stop, disk full)
    freeze_before: float = 1.0  # PostgreSQL frozen this long before the milter restart
    freeze_after: float = 1.0  # ... and this long after the new milter is up
    stop_timeout: float = 10.0  # SIGTERM, then SIGKILL after this (MilterProcess's default)
    tmpfs_size: str = "1m"  # the spool's file system for the disk-full fault
    store: dict[str, Any] = field(default_factory=lambda: dict(LAB_STORE))
    log_level: str = "info"
    send_deadline: float = 240.0  # the sender gives up on a message after this
    queue_timeout: float = 90.0
    settle_timeout: float = 60.0
    settle_quiet: float = 3.0  # no change this long, and no spool left: settled
    python: str = sys.executable
    seed: int | None = None
    logs_to: Path | None = None  # copy the maillog and the milter's log here at close


@dataclass
class FaultWindow:
    start: float  # time.monotonic() when the fault began
    end: float  # ... when recovery was complete
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.end - self.start


class FaultRig:
    """Postfix → trackmilter (PostgreSQL store, spool) → FakeMX; see the module docstring."""

    def __init__(self, pg: PgCluster, name: str, opts: RigOptions | None = None, *,
                 spool_on_tmpfs: bool = False) -> None:
        self.pg = pg
        self.name = name
        self.opts = opts or RigOptions()
        self.spool_on_tmpfs = spool_on_tmpfs
        self.run_id = f"{re.sub(r'[^a-z0-9]', '', name.lower())[:12]}{secrets.token_hex(3)}"
        self.database = f"tm_{self.run_id}"
        self.random = random.Random(self.opts.seed)
        self.peak_rss_kb = 0
        self.milter_pids: list[int] = []
        self.notes: list[str] = []
        self._stack = contextlib.ExitStack()
        self._sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self.tmpfs: Tmpfs | None = None
        self.env = clean_env()

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> FaultRig:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        es, o = self._stack, self.opts
        self.work = Path(tempfile.mkdtemp(prefix="tm-fault-", dir="/tmp"))
        self.work.chmod(0o755)
        es.callback(shutil.rmtree, self.work, ignore_errors=True)
        es.callback(self._copy_log, self.work / "tm" / "milter.log", "milter.log")
        self.url = self.pg.create_database(self.database)
        es.callback(self._drop_database)
        # Whatever a fault did to the shared cluster, the next user finds it running (and
        # the database can be dropped).
        es.callback(self._restore_pg)
        self.spool = self.work / "spool"
        self.spool.mkdir()
        if self.spool_on_tmpfs:
            self.tmpfs = Tmpfs(self.spool, o.tmpfs_size).mount()
            es.callback(self.tmpfs.umount)
        sock = make_socket_dir(self.work / "sock") / "tm.sock"
        self.config = write_config(self.work / "tm", sock, log_level=o.log_level, extra={
            "database": {"url": self.url},
            "store": {"spool_dir": str(self.spool), **o.store},
        })
        proc = subprocess.run(command(self.config, "db", "upgrade", python=o.python),
                              capture_output=True, text=True, timeout=120, env=self.env,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"trackmilter db upgrade failed: {proc.stderr}")
        self.signer = Signer.from_file(self.config.parent / "secret")
        self.milter = MilterProcess(command(self.config, "milter", python=o.python), sock,
                                    env=self.env, log_path=self.config.parent / "milter.log")
        es.callback(self._final_milter_stop)
        self.start_milter()
        self.mx = FakeMX().start()
        es.callback(self.mx.stop)
        self.postfix = PostfixInstance(relay_port=self.mx.port, milter=self.milter.spec,
                                       extra_main_cf=POSTFIX_MAIN_CF)
        es.callback(self.postfix.cleanup)
        es.callback(self._copy_log, self.postfix.log_path, "maillog")
        es.callback(self.postfix.stop)
        self.postfix.start()
        self._sampler = threading.Thread(target=self._sample_loop, name="rss-sampler",
                                         daemon=True)
        self._sampler.start()
        es.callback(self._stop_sampler)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> FaultRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _copy_log(self, path: Path, name: str) -> None:
        if self.opts.logs_to is not None and path.exists():
            self.opts.logs_to.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.opts.logs_to / f"{self.name}.{name}")

    def _restore_pg(self) -> None:
        self.pg.thaw()
        if not self.pg.running:
            self.pg.start()

    def _drop_database(self) -> None:
        with contextlib.suppress(Exception):
            self.pg.drop_database(self.database)

    def _final_milter_stop(self) -> None:
        self.sample_rss()
        self.milter.stop(timeout=self.opts.stop_timeout)

    # -- the milter ------------------------------------------------------------------

    def start_milter(self) -> None:
        self.milter.start(timeout=60)
        assert self.milter.pid is not None
        self.milter_pids.append(self.milter.pid)

    def stop_milter(self, *, graceful: bool) -> int | None:
        """SIGTERM (SIGKILL after stop_timeout) or SIGKILL at once; the exit code."""
        self.sample_rss()
        started = time.monotonic()
        code = self.milter.stop(timeout=self.opts.stop_timeout, graceful=graceful)
        took = time.monotonic() - started
        if graceful:
            how = (f"killed (SIGKILL) after the {self.opts.stop_timeout:g}s stop timeout"
                   if code == -signal.SIGKILL else f"exited {code} after {took:.1f}s")
            self.notes.append(f"milter SIGTERM: {how}")
        return code

    def sample_rss(self) -> None:
        self.peak_rss_kb = max(self.peak_rss_kb, vm_hwm_kb(self.milter.pid))

    def _sample_loop(self) -> None:
        while not self._sampling.wait(0.2):
            with contextlib.suppress(Exception):
                self.sample_rss()

    def _stop_sampler(self) -> None:
        self._sampling.set()
        if self._sampler is not None:
            self._sampler.join(5)

    # -- what happened ---------------------------------------------------------------

    def delivered(self) -> Counter[str]:
        """Message-IDs of this run received by the MX, with how often each arrived."""
        prefix = self.run_id + "-"
        ids = (message_id_of(m.data) for m in self.mx.messages)
        return Counter(i for i in ids if i is not None and i.startswith(prefix))

    def untracked(self) -> int:
        """This run's messages that reached the MX without the tracking header."""
        prefix = self.run_id + "-"
        return sum(1 for m in self.mx.messages
                   if (message_id_of(m.data) or "").startswith(prefix)
                   and TRACKING_HEADER.lower() not in m.data.split(b"\r\n\r\n", 1)[0].lower())

    def stored_ids(self) -> set[str]:
        """Message-IDs of this run with a row in `messages` for the queued message."""
        rows = self.pg.query(self.database, "SELECT DISTINCT message_id FROM messages "
                             "WHERE end_reason = 'queued' AND message_id LIKE %s",
                             (self.run_id + "-%",))
        return {r[0] for r in rows}

    def corrupt_files(self) -> list[str]:
        d = self.postfix.queue_dir / "corrupt"
        return sorted(p.name for p in d.rglob("*") if p.is_file()) if d.exists() else []

    def spool_pending(self) -> list[str]:
        """Spool segments still holding events (a replay deletes them once written)."""
        out = []
        for p in self.spool.glob("spool-*.jsonl"):
            with contextlib.suppress(OSError):
                if p.stat().st_size > 0:
                    out.append(p.name)
        return out

    def spool_bad(self) -> list[str]:
        return sorted(p.name for p in self.spool.glob("*.bad"))

    def wait_settled(self, expected: set[str]) -> tuple[set[str], bool]:
        """Poll the store until it holds every expected Message-ID, or until nothing is
        left to replay and its count has not changed for `settle_quiet` seconds (records
        missing then stay missing). Returns (stored, settled before the deadline)."""
        o = self.opts
        state: dict[str, Any] = {"stored": set(), "count": -1, "since": time.monotonic()}

        def settled() -> bool:
            try:
                stored = self.stored_ids()
            except Exception:  # noqa: BLE001 - the database may still be coming back
                state["since"] = time.monotonic()
                return False
            state["stored"] = stored
            if expected <= stored:
                return True
            now = time.monotonic()
            if len(stored) != state["count"] or self.spool_pending():
                state["count"], state["since"] = len(stored), now
                return False
            return bool(now - state["since"] >= o.settle_quiet)

        try:
            wait_until(settled, o.settle_timeout, 0.25, "the store to settle")
        except TimeoutError:
            return state["stored"], False
        return state["stored"], True


# -- the faults ------------------------------------------------------------------------


def milter_sigterm(rig: FaultRig) -> FaultWindow:
    """SIGTERM to the milter under load (SIGKILL after the stop timeout), started again."""
    w = FaultWindow(time.monotonic(), 0.0)
    rig.stop_milter(graceful=True)
    rig.start_milter()
    w.end = time.monotonic()
    return w


def milter_kill9(rig: FaultRig) -> FaultWindow:
    """SIGKILL to the milter under load, started again 2-4 s later."""
    w = FaultWindow(time.monotonic(), 0.0)
    rig.stop_milter(graceful=False)
    down = rig.random.uniform(*rig.opts.kill_down)
    hold(down)
    rig.start_milter()
    w.end = time.monotonic()
    w.notes.append(f"milter down {down:.1f}s")
    return w


def pg_stop(rig: FaultRig) -> FaultWindow:
    """`pg_ctl stop -m fast`, started again after pg_down seconds."""
    w = FaultWindow(time.monotonic(), 0.0)
    rig.pg.stop("fast")
    hold(rig.opts.pg_down)
    rig.pg.start()
    w.end = time.monotonic()
    return w


def pg_freeze(rig: FaultRig) -> FaultWindow:
    """SIGSTOP the cluster's processes; restart the milter (SIGTERM, SIGKILL after the stop
    timeout) while it is frozen; SIGCONT."""
    w = FaultWindow(time.monotonic(), 0.0)
    frozen = rig.pg.freeze()
    w.notes.append(f"{len(frozen)} PostgreSQL processes stopped")
    hold(rig.opts.freeze_before)
    rig.stop_milter(graceful=True)
    rig.start_milter()
    hold(rig.opts.freeze_after)
    rig.pg.thaw()
    w.end = time.monotonic()
    return w


def spool_disk_full(rig: FaultRig) -> FaultWindow:
    """The spool's tmpfs filled to 100 % and PostgreSQL stopped; then space freed and
    PostgreSQL started."""
    assert rig.tmpfs is not None, "the disk-full fault needs the rig's spool on a tmpfs"
    w = FaultWindow(time.monotonic(), 0.0)
    filled = rig.tmpfs.fill()
    w.notes.append(f"filler {filled // 1024} KB, {rig.tmpfs.free_bytes()} bytes left")
    rig.pg.stop("fast")
    hold(rig.opts.pg_down)
    rig.tmpfs.free()
    rig.pg.start()
    w.end = time.monotonic()
    return w


@dataclass(frozen=True)
class Fault:
    name: str
    title: str
    inject: Callable[[FaultRig], FaultWindow]
    spool_on_tmpfs: bool = False


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("milter-sigterm", "milter SIGTERM under load", milter_sigterm),
    Fault("milter-kill9", "milter kill -9, restart after 2-4 s", milter_kill9),
    Fault("pg-stop", "PostgreSQL stopped (fast), started", pg_stop),
    Fault("pg-freeze", "PostgreSQL SIGSTOP, milter restarted, SIGCONT", pg_freeze),
    Fault("spool-full", "spool disk full + PostgreSQL stopped", spool_disk_full,
          spool_on_tmpfs=True),
)}


# -- a run and its counts --------------------------------------------------------------


def _first(ids: set[str] | list[str], n: int = 10) -> str:
    items = sorted(ids)
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


@dataclass
class Outcome:
    fault: str
    sent: int
    accepted: int
    refused: int  # 5xx
    unaccepted: list[str]  # neither accepted nor refused by the sender's deadline
    delivered: int  # distinct accepted Message-IDs at the MX
    lost_messages: list[str]  # accepted, never at the MX
    duplicates: int  # extra copies at the MX
    untracked: int  # at the MX without the tracking header
    corrupt: list[str]
    queue_left: int  # messages still in Postfix's queue after the deadline
    expected_records: int
    stored_records: int
    lost_records: list[str]
    settled: bool
    worst_fault_s: float  # the slowest SMTP transaction running during the fault
    worst_s: float  # ... during the whole run
    retries: int  # attempts beyond one per message
    accepted_in_fault: int  # messages accepted while the fault lasted
    peak_rss_kb: int
    fault_s: float
    seconds: float  # the whole run, sender start to settled
    notes: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        if self.lost_records:
            out.append(f"RECORDS LOST: {len(self.lost_records)} of {self.expected_records} "
                       "messages Postfix accepted have no row in `messages` "
                       f"(SELECT message_id FROM messages): {_first(self.lost_records)}")
        if self.lost_messages:
            out.append(f"MESSAGES LOST: {len(self.lost_messages)} of {self.accepted} messages "
                       "accepted by Postfix (250) never reached the MX: "
                       f"{_first(self.lost_messages)}")
        if self.corrupt:
            out.append(f"{len(self.corrupt)} file(s) in Postfix's corrupt queue: "
                       f"{_first(self.corrupt)}")
        if self.queue_left:
            out.append(f"{self.queue_left} message(s) still in Postfix's queue")
        if self.unaccepted:
            out.append(f"{len(self.unaccepted)} of {self.sent} messages never accepted "
                       f"(the client gave up): {_first(self.unaccepted)}")
        if self.untracked:
            out.append(f"{self.untracked} message(s) reached the MX without the tracking "
                       "header (passed without the milter)")
        return out

    def summary(self) -> str:
        return (f"{self.fault}: sent {self.sent}, accepted {self.accepted}, delivered "
                f"{self.delivered}, messages lost {len(self.lost_messages)}, corrupt "
                f"{len(self.corrupt)}, records {self.stored_records}/{self.expected_records} "
                f"(lost {len(self.lost_records)}), worst SMTP transaction during the fault "
                f"{self.worst_fault_s:.2f}s (run {self.worst_s:.2f}s), accepted during the "
                f"fault {self.accepted_in_fault}, retries {self.retries}, "
                f"milter peak RSS {self.peak_rss_kb / 1024:.0f} MB, fault {self.fault_s:.1f}s, "
                f"run {self.seconds:.1f}s" + (f"; {'; '.join(self.notes)}" if self.notes else ""))


def run_fault(rig: FaultRig, fault: Fault) -> Outcome:
    """Send the rig's messages, inject `fault` under that load, recover, count."""
    o = rig.opts
    msgs = make_messages(o.messages, rig.run_id, links=o.links, template=o.template)
    # The last `after_share` of the messages are sent once the fault is over: there is
    # load before, during (the first part, retried while the milter is down) and after it.
    gate = o.messages - int(o.messages * o.after_share)
    sender = Sender("127.0.0.1", rig.postfix.smtp_port, msgs, clients=o.clients,
                    deadline=o.send_deadline, seed=o.seed, gate_at=gate)
    t0 = time.monotonic()
    with sender:
        sender.wait_accepted(max(1, min(gate, int(o.messages * o.inject_after))),
                             o.send_deadline)
        window = fault.inject(rig)
        sender.release()
        sender.join(o.send_deadline + 30)
    notes = [*window.notes, *rig.notes]
    if not sender.done:
        notes.append("sender did not finish")
    queue_left = 0
    try:
        rig.postfix.wait_queue_empty(o.queue_timeout)
    except TimeoutError:
        queue_left = len(rig.postfix.queue_ids())
    accepted = {r.message.message_id for r in sender.results if r.accepted}
    at_mx = rig.delivered()
    expected = accepted | set(at_mx)
    stored, settled = rig.wait_settled(expected)
    if not settled:
        notes.append(f"store not settled after {o.settle_timeout:g}s")
    bad = rig.spool_bad()
    if bad:
        notes.append(f"spool .bad files: {', '.join(bad)}")
    rig.sample_rss()
    return Outcome(
        fault=fault.name,
        sent=len(msgs),
        accepted=len(accepted),
        refused=sum(1 for r in sender.results if r.refused),
        unaccepted=[r.message.message_id for r in sender.results
                    if not r.accepted and not r.refused],
        delivered=len(accepted & set(at_mx)),
        lost_messages=sorted(accepted - set(at_mx)),
        duplicates=sum(at_mx.values()) - len(at_mx),
        untracked=rig.untracked(),
        corrupt=rig.corrupt_files(),
        queue_left=queue_left,
        expected_records=len(expected),
        stored_records=len(expected & stored),
        lost_records=sorted(expected - stored),
        settled=settled,
        worst_fault_s=worst(sender.attempts_between(window.start, window.end)),
        worst_s=worst(sender.attempts),
        retries=len(sender.attempts) - len(msgs),
        accepted_in_fault=sum(1 for r in sender.results if r.accepted_at is not None
                              and window.start <= r.accepted_at <= window.end),
        peak_rss_kb=rig.peak_rss_kb,
        fault_s=window.seconds,
        seconds=time.monotonic() - t0,
        notes=notes,
    )


@contextlib.contextmanager
def fault_rig(pg: PgCluster, fault: Fault, opts: RigOptions | None = None
              ) -> Iterator[FaultRig]:
    rig = FaultRig(pg, fault.name, opts, spool_on_tmpfs=fault.spool_on_tmpfs)
    with rig:
        yield rig


# -- the tracker ---------------------------------------------------------------------


_N_RE = re.compile(r"[?&]n=(\d+)")


class ClickStream:
    """Client threads requesting click URLs back to back, each for a new target URL
    ``https://x.example/r?n=N``; records which N got a 302 to that URL."""

    def __init__(self, port: int, signer: Signer, tracking_id: str, clients: int = 4,
                 timeout: float = 5.0) -> None:
        self.port = port
        self.signer = signer
        self.tracking_id = tracking_id
        self.clients = clients
        self.timeout = timeout
        self.answered: set[int] = set()
        self.failed = 0
        self.other: Counter[int] = Counter()
        self._n = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def start(self) -> ClickStream:
        for i in range(self.clients):
            t = threading.Thread(target=self._run, name=f"clicks-{i}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        if self._errors:
            raise RuntimeError(f"click client failed: {self._errors[0]!r}") from self._errors[0]

    def answered_count(self) -> int:
        with self._lock:
            return len(self.answered)

    def wait_answered(self, count: int, timeout: float) -> int:
        end = time.monotonic() + timeout
        with self._cond:
            while len(self.answered) < count:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self.answered)} of {count} clicks answered "
                                       f"after {timeout}s ({self.failed} failed)")
                self._cond.wait(min(remaining, 0.5))
            return len(self.answered)

    def _run(self) -> None:
        signer = self.signer.for_message(self.tracking_id)
        try:
            while not self._stop.is_set():
                with self._lock:
                    self._n += 1
                    n = self._n
                url = f"https://x.example/r?n={n}"
                path = f"/c/{signer.click(n, url)}"
                try:
                    status, headers, _ = request(self.port, path, headers={"User-Agent": UA},
                                                 timeout=self.timeout)
                except OSError:
                    with self._lock:
                        self.failed += 1
                    self._stop.wait(0.01)  # the tracker is down: do not spin
                    continue
                with self._cond:
                    if status == 302 and headers.get("location") == url:
                        self.answered.add(n)
                        self._cond.notify_all()
                    else:
                        self.other[status] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._errors.append(exc)


@dataclass
class WebOutcome:
    answered: int
    answered_before_kill: int
    stored: int
    lost: list[int]  # n of hits answered with a 302 and not stored
    failed_requests: int
    settled: bool
    killed: list[int]
    peak_rss_kb: int
    seconds: float

    def problems(self) -> list[str]:
        if not self.lost:
            return []
        first = ", ".join(f"n={n}" for n in self.lost[:10])
        more = f" ... (+{len(self.lost) - 10} more)" if len(self.lost) > 10 else ""
        return [f"HITS LOST: {len(self.lost)} of {self.answered} clicks answered with a 302 "
                f"are not in `hits` after the restart: {first}{more}"]

    def summary(self) -> str:
        return (f"web-kill9: answered {self.answered} ({self.answered_before_kill} before the "
                f"kill), stored {self.stored}, lost {len(self.lost)}, failed requests "
                f"{self.failed_requests}, killed pids {self.killed}, peak RSS "
                f"{self.peak_rss_kb / 1024:.0f} MB, run {self.seconds:.1f}s")


def run_web_kill9(pg: PgCluster, *, before: int = 300, after: int = 100, workers: int = 1,
                  clients: int = 4, store: dict[str, Any] | None = None,
                  python: str = sys.executable, settle_timeout: float = 60.0,
                  settle_quiet: float = 3.0, logs_to: Path | None = None) -> WebOutcome:
    """`trackmilter web` on the cluster: `before` clicks answered, SIGKILL to it and its
    workers, started again, `after` more answered; then every answered hit must be stored."""
    t0 = time.monotonic()
    env = clean_env()
    run_id = secrets.token_hex(3)
    database = f"tm_web_{run_id}"
    work = Path(tempfile.mkdtemp(prefix="tm-fault-web-", dir="/tmp"))
    url = pg.create_database(database)
    webs: list[WebProcess] = []
    try:
        port = free_port()
        cfg = write_config(work / "tm", work / "unused.sock", extra={
            "web": {"listen": f"127.0.0.1:{port}", "workers": workers},
            "database": {"url": url},
            "store": {"spool_dir": str(work / "spool"), **(store or LAB_STORE)},
        })
        subprocess.run(command(cfg, "db", "upgrade", python=python), check=True,
                       capture_output=True, timeout=120, env=env)
        signer = Signer.from_file(cfg.parent / "secret")
        tid = new_tracking_id()

        def web() -> WebProcess:
            w = WebProcess(command(cfg, "web", python=python), port, env=env,
                           log_path=cfg.parent / "web.log")
            webs.append(w)
            return w.start()

        first = web()
        stream = ClickStream(port, signer, tid, clients=clients).start()
        try:
            stream.wait_answered(before, 120)
            assert first.pid is not None
            peak = max([vm_hwm_kb(p) for p in [first.pid, *descendants(first.pid)]])
            killed = kill_tree(first.pid)
            answered_before = stream.answered_count()
            first.stop()  # reaps it (already dead)
            wait_until(lambda: all(process_gone(p) for p in killed), 30, 0.05,
                       f"killed tracker processes {killed} gone")
            web()
            stream.wait_answered(answered_before + after, 120)
        finally:
            stream.stop()
        answered = set(stream.answered)

        def stored_ns() -> set[int]:
            rows = pg.query(database, "SELECT url FROM hits WHERE tracking_id = %s", (tid,))
            return {int(m.group(1)) for (u,) in rows if (m := _N_RE.search(u))}

        state: dict[str, Any] = {"stored": set(), "count": -1, "since": time.monotonic()}

        def settled() -> bool:
            stored = stored_ns()
            state["stored"] = stored
            if answered <= stored:
                return True
            pending = [p for p in (work / "spool").glob("web-*/spool-*.jsonl")
                       if p.stat().st_size > 0]
            if len(stored) != state["count"] or pending:
                state["count"], state["since"] = len(stored), time.monotonic()
                return False
            return bool(time.monotonic() - state["since"] >= settle_quiet)

        try:
            wait_until(settled, settle_timeout, 0.25, "hits stored")
            ok = True
        except TimeoutError:
            ok = False
        stored = state["stored"]
        last = webs[-1]
        if last.pid is not None:
            peak = max(peak, *[vm_hwm_kb(p) for p in [last.pid, *descendants(last.pid)]])
        return WebOutcome(
            answered=len(answered), answered_before_kill=answered_before,
            stored=len(answered & stored), lost=sorted(answered - stored),
            failed_requests=stream.failed, settled=ok, killed=killed, peak_rss_kb=peak,
            seconds=time.monotonic() - t0)
    finally:
        for w in webs:
            w.stop()
        if logs_to is not None and (work / "tm" / "web.log").exists():
            logs_to.mkdir(parents=True, exist_ok=True)
            shutil.copy(work / "tm" / "web.log", logs_to / "web.log")
        with contextlib.suppress(Exception):
            pg.drop_database(database)
        shutil.rmtree(work, ignore_errors=True)
