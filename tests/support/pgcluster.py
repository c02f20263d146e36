"""A throw-away PostgreSQL cluster for fault tests: initdb into a temporary directory,
listening on a unix socket in that directory only (no TCP), as our own child process.

Run as root, initdb and the server run as user `postgres` (initdb refuses root): the
server is started with ``subprocess.Popen(user=...)``, so the postmaster is our child and
is reaped by its pid. Faults act on this cluster's processes only: the postmaster (our
child) and the processes whose parent it is (backends, checkpointer, ...), by pid.

The data directory is written with ``fsync = off``: no fault here crashes the machine,
and a clean or fast shutdown writes everything anyway.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from trackmilter_lab import child
from trackmilter_lab.postfix import process_gone, wait_until

PG_USER = "postgres"
BINDIR_ENV = "TRACKMILTER_PG_BINDIR"


def pg_bindir() -> Path | None:
    """Where initdb, postgres and pg_ctl are: $TRACKMILTER_PG_BINDIR, else the newest
    /usr/lib/postgresql/N/bin (Debian), else the directory of an initdb on PATH."""
    candidates: list[Path] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name  # /usr/lib/postgresql/15/bin -> 15
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version,
                                           reverse=True)]
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    for d in candidates:
        if all((d / tool).is_file() for tool in ("initdb", "postgres", "pg_ctl")):
            return d
    return None


def pg_unavailable_reason() -> str | None:
    """Why a test cluster cannot be made here (None: it can)."""
    if pg_bindir() is None:
        return ("PostgreSQL server binaries not found (initdb, postgres, pg_ctl; Debian: "
                f"postgresql-15 in /usr/lib/postgresql/15/bin, or set ${BINDIR_ENV})")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root and there is no user {PG_USER!r} to run initdb as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    return None


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field n of stat(5) is index n - 3)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is `pid`."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def process_state(pid: int) -> str:
    """The state letter of `pid` (R, S, T, Z...), "" when gone."""
    fields = _stat(pid)
    return fields[0] if fields else ""


class PgCluster:
    """initdb + postgres on a unix socket in a fresh directory under /tmp.

    ``start()`` initialises the cluster on first use and waits until it accepts
    connections; ``stop()`` is ``pg_ctl stop -m fast``; ``freeze()``/``thaw()`` SIGSTOP
    and SIGCONT the postmaster and its children; ``close()`` ends everything and removes
    the directory (idempotent, safe after any failure).
    """

    def __init__(self, bindir: Path | None = None, base: Path | None = None) -> None:
        found = bindir or pg_bindir()
        if found is None:
            raise RuntimeError(pg_unavailable_reason() or "no PostgreSQL binaries")
        self.bindir = found
        self.base = base or Path(tempfile.mkdtemp(prefix="tm-pg-", dir="/tmp"))
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._frozen: list[int] = []
        self._initialised = False
        self._as_root = os.geteuid() == 0
        if self._as_root:
            entry = pwd.getpwnam(PG_USER)
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
            os.chown(self.base, self._uid, self._gid)
        self.base.chmod(0o700)

    # -- naming ----------------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        return self.base

    def url(self, database: str) -> str:
        """A SQLAlchemy URL for the milter and the CLI (superuser, trust auth, socket)."""
        return f"postgresql+psycopg://{PG_USER}@/{database}?host={self.socket_dir}"

    def connect(self, database: str = "postgres", timeout: int = 5) -> Any:
        import psycopg

        return psycopg.connect(host=str(self.socket_dir), dbname=database, user=PG_USER,
                               connect_timeout=timeout, autocommit=True)

    def query(self, database: str, sql: str, params: Sequence[Any] = (),
              timeout: int = 5) -> list[tuple[Any, ...]]:
        with self.connect(database, timeout) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- running commands as postgres -----------------------------------------------------

    def _as_pg(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"cwd": self.base, "env": {
            "PATH": f"{self.bindir}:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C",
            "HOME": str(self.base), "PGDATA": str(self.data)}}
        if self._as_root:
            kw.update(user=self._uid, group=self._gid, extra_groups=[])
        return kw

    def _run(self, *argv: str, timeout: float = 120.0) -> str:
        proc = subprocess.run([str(self.bindir / argv[0]), *argv[1:]], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False,
                              **self._as_pg())
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}"
                               f"{proc.stderr}\n--- server log ---\n{self.log_tail()}")
        return str(proc.stdout)

    def initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", PG_USER, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as f:
            f.write(
                "\n# trackmilter fault tests: unix socket only, in the cluster's directory\n"
                "listen_addresses = ''\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\n"
                "full_page_writes = off\n"
                "max_connections = 100\n"
                "shared_buffers = 64MB\n"
                "log_min_messages = warning\n"
                "log_line_prefix = '%m [%p] '\n"
            )
        self._initialised = True

    # -- life cycle ------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    def accepts(self) -> bool:
        try:
            with self.connect(timeout=2) as conn:
                conn.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            return False
        return True

    def start(self, timeout: float = 60.0) -> PgCluster:
        if not self._initialised:
            self.initdb()
        if self.running:
            raise RuntimeError("cluster already running")
        self._reap()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.data)], stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, **self._as_pg())
        child.wait_serving(self.proc, self.accepts, timeout, what=f"postgres in {self.base}",
                           said=self.log_tail, interval=0.1)
        return self

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """`pg_ctl stop -m MODE` and reap the postmaster; SIGKILL if that fails."""
        pid = self.pid
        if pid is None:
            self._reap()
            return
        self.thaw()
        kids = children_of(pid)
        try:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t",
                      str(int(timeout)), timeout=timeout + 10)
        except (RuntimeError, subprocess.TimeoutExpired):
            self._kill(pid, kids)
        self._reap(timeout)
        # Backends leave when the postmaster does; any that did not are killed by pid.
        for k in kids:
            if not process_gone(k):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(k, signal.SIGKILL)

    def _kill(self, pid: int, kids: list[int]) -> None:
        for p in [pid, *kids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)

    def _reap(self, timeout: float = 60.0) -> None:
        proc = self.proc
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def cluster_pids(self) -> list[int]:
        """The postmaster and its children (backends and auxiliary processes)."""
        pid = self.pid
        return [pid, *children_of(pid)] if pid is not None else []

    def freeze(self) -> list[int]:
        """SIGSTOP the postmaster, then each of its children; returns the pids stopped."""
        pid = self.pid
        if pid is None:
            raise RuntimeError("cluster is not running")
        os.kill(pid, signal.SIGSTOP)  # first: it forks no new backend while stopped
        self._frozen = [pid]
        wait_until(lambda: process_state(pid) in ("T", "t", ""), 10, 0.01, "postmaster stopped")
        for k in children_of(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(k, signal.SIGSTOP)
                self._frozen.append(k)
        wait_until(lambda: all(process_state(p) in ("T", "t", "") for p in self._frozen), 10,
                   0.01, "cluster processes stopped")
        return list(self._frozen)

    def thaw(self) -> None:
        """SIGCONT every process freeze() stopped (children first)."""
        frozen, self._frozen = self._frozen, []
        for p in reversed(frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)

    @property
    def frozen(self) -> bool:
        return bool(self._frozen)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(child.output(self.log_path).splitlines()[-lines:])

    def close(self) -> None:
        """Thaw, stop (immediate: nothing here needs a clean shutdown) and remove."""
        try:
            self.thaw()
            if self.running:
                self.stop("immediate", timeout=30)
            self._reap()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def pg_cluster() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        yield cluster.start()
    finally:
        cluster.close()
