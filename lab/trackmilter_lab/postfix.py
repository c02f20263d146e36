"""A private, throw-away Postfix instance on loopback, driven with `postfix -c DIR`.

Facts this relies on (Debian 12, Postfix 3.7, run as root):

- Nothing in /etc/postfix is read or changed: every command gets `-c DIR`. As root,
  `postfix`, `postqueue` and `postsuper` accept any `-c DIR`; only an unprivileged user of
  the set-gid `postqueue`/`postdrop` needs DIR in `alternate_config_directories` of the
  default main.cf (Postfix skips that check when the real uid is 0, see mail_conf.c).
- The instance directory and every parent must be searchable by user postfix: the master
  opens `data_directory/master.lock` with the postfix uid, and smtpd connects to a unix
  milter socket as postfix. pytest's tmp_path lives under a 0700 directory, so instances
  default to a fresh directory in /tmp (mode 0755).
- `data_directory` must be owned by postfix (`postfix check` warns otherwise); `postfix
  check` creates the missing queue directories with their owners. `postfix set-permissions`
  is not used: it also re-applies modes to the system binaries listed in postfix-files.
- master.cf has `n` in the chroot column everywhere, so a unix milter socket is named by
  its real path, and `maillog_file` (written by the `postlog` service) replaces syslog.
- A Postfix daemon started by `postfix start` is re-parented to PID 1, which here may leave
  it a zombie for a while after it exits: "gone" means absent or in state Z.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = [
    "PostfixError",
    "PostfixInstance",
    "free_port",
    "make_socket_dir",
    "postfix_available",
    "postfix_ids",
    "process_gone",
    "searchable_by",
    "send",
    "wait_until",
]

T = TypeVar("T")

POSTFIX = "postfix"
POSTQUEUE = "postqueue"
POSTSUPER = "postsuper"
POSTCONF = "postconf"
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class PostfixError(RuntimeError):
    """A Postfix command failed, or the instance did not reach the expected state."""


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN_DIRS:
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def postfix_available() -> bool:
    """True when the `postfix` command and a `postfix` user exist on this machine."""
    if _which(POSTFIX) is None:
        return False
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    fn: Callable[[], T | None], timeout: float, interval: float = 0.05, what: str = ""
) -> T:
    """Call `fn` until it returns a truthy value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or fn!r}: {value!r}")
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    # Field 3 is the state; the command name in field 2 may hold spaces and parentheses.
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def postfix_ids() -> tuple[int, int]:
    """uid and gid of user postfix, as which Postfix daemons run."""
    entry = pwd.getpwnam("postfix")
    return entry.pw_uid, entry.pw_gid


def make_socket_dir(path: Path | None = None) -> Path:
    """A directory for unix milter sockets that Postfix (user postfix) can connect into.

    Owned by root, group postfix, mode 2750: the set-gid bit gives a socket created there
    group postfix, so a milter running with umask 007 makes it connectable by smtpd and
    cleanup and by nobody else. Without `path`, a new short directory in /tmp (unix socket
    names are limited to 107 bytes).
    """
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="tm-sock-", dir="/tmp"))
    path.mkdir(parents=True, exist_ok=True)
    _, gid = postfix_ids()
    os.chown(path, 0 if os.geteuid() == 0 else -1, gid)
    path.chmod(0o2750)
    return path


def searchable_by(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to `path` that uid/gid cannot search, if any."""
    groups = set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    for d in [*reversed(path.parents), path]:
        st = d.stat()
        if uid == 0:
            ok = True
        elif st.st_uid == uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            return d
    return None


def send(
    host: str,
    port: int,
    sender: str,
    recipients: Iterable[str],
    raw: bytes,
    *,
    timeout: float = 30.0,
) -> dict[str, tuple[int, bytes]]:
    """Submit one message over SMTP; return the recipients refused in-line (empty when none).

    When every recipient is refused the transaction ends before DATA and all of them are
    returned, rather than raised, so callers assert on one shape.
    """
    rcpts = list(recipients)
    with smtplib.SMTP(host, port, timeout=timeout) as client:
        try:
            refused = client.sendmail(sender, rcpts, raw)
        except smtplib.SMTPRecipientsRefused as exc:
            return dict(exc.recipients)
        return dict(refused)


class PostfixInstance:
    """A private Postfix: own config, queue, data directory and log file, smtpd on loopback.

    Mail for any domain is relayed to `relay_port` on 127.0.0.1 (a FakeMX or smtp-sink).
    Recipients listed in `recipient_access` (`address -> action`, e.g. `REJECT 5.7.1 ...`)
    are refused in-line by smtpd itself. When `milter` is set, smtpd, sendmail(1) and
    Postfix's own bounces (`internal_mail_filter_classes = bounce`) go through it, written
    as conf/postfix/main.cf.snippet does: `{ MILTER, default_action=ACTION }`.
    `milter_default_action` is what Postfix does when it loses the milter: "tempfail" (as
    shipped: 451, the client retries), "accept" (mail flows on unmodified; a milter dying
    mid-replacement leaves a corrupt queue file, docs/postfix-milter-failure.md), "reject",
    "quarantine"; None writes `milter` as given (the global setting decides).
    """

    def __init__(
        self,
        directory: Path | str | None = None,
        *,
        relay_port: int | None = None,
        relayhost: str | None = None,
        milter: str | None = None,
        milter_default_action: str | None = "tempfail",
        smtp_port: int = 0,
        recipient_access: Mapping[str, str] | None = None,
        maximal_queue_lifetime: str = "1d",
        bounce_queue_lifetime: str = "1d",
        myhostname: str = "lab.example.test",
        extra_main_cf: Mapping[str, str] | None = None,
        extra_master_cf: Iterable[str] = (),
    ) -> None:
        if directory is None:
            self.base = Path(tempfile.mkdtemp(prefix="tm-postfix-", dir="/tmp"))
            self.base.chmod(0o755)
            self._owns_base = True
        else:
            self.base = Path(directory).resolve()
            self.base.mkdir(parents=True, exist_ok=True)
            self._owns_base = False
        if relayhost is None and relay_port is not None:
            relayhost = f"[127.0.0.1]:{relay_port}"
        self.relayhost = relayhost
        self.milter = milter
        self.milter_default_action = milter_default_action
        self.smtp_port = smtp_port or free_port()
        self.recipient_access: dict[str, str] = dict(recipient_access or {})
        self.maximal_queue_lifetime = maximal_queue_lifetime
        self.bounce_queue_lifetime = bounce_queue_lifetime
        self.myhostname = myhostname
        self.extra_main_cf: dict[str, str] = dict(extra_main_cf or {})
        self.extra_master_cf = list(extra_master_cf)
        self._master_pid: int | None = None

    # -- layout ----------------------------------------------------------------------

    @property
    def config_dir(self) -> Path:
        return self.base / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.base / "spool"

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_dir(self) -> Path:
        return self.base / "log"

    @property
    def log_path(self) -> Path:
        return self.log_dir / "maillog"

    @property
    def access_path(self) -> Path:
        return self.config_dir / "recipient_access"

    # -- configuration ---------------------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        """The main.cf settings, in file order (extra_main_cf last, overriding)."""
        cf: dict[str, str] = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.log_path),
            "maillog_file_prefixes": str(self.log_dir),
            "myhostname": self.myhostname,
            "mydomain": self.myhostname.partition(".")[2] or self.myhostname,
            "myorigin": "$myhostname",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": self.relayhost or "",
            "smtpd_banner": "$myhostname ESMTP",
            "biff": "no",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": (
                f"check_recipient_access texthash:{self.access_path}, "
                "permit_mynetworks, reject_unauth_destination"
            ),
            # Retry fast, so a test sees a deferred recipient tried again within seconds.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "maximal_queue_lifetime": self.maximal_queue_lifetime,
            "bounce_queue_lifetime": self.bounce_queue_lifetime,
            "delay_warning_time": "0h",
            "smtp_connect_timeout": "5s",
            "smtp_helo_timeout": "10s",
            "smtp_data_done_timeout": "30s",
        }
        if not self.relayhost:
            cf["default_transport"] = "error:5.3.0 lab instance has no relayhost"
        cf.update(self._milter_cf(self.milter, self.milter_default_action))
        cf.update(self.extra_main_cf)
        return cf

    @staticmethod
    def _milter_cf(milter: str | None, default_action: str | None = "tempfail") -> dict[str, str]:
        if not milter:
            return {"smtpd_milters": "", "non_smtpd_milters": ""}
        if default_action is not None:
            # Per-milter form: no space around "=" (Postfix's smtpd dies on "a = b" here).
            milter = f"{{ {milter}, default_action={default_action} }}"
        return {
            "smtpd_milters": milter,
            "non_smtpd_milters": milter,
            # Postfix's own bounces go through the milter too (they carry
            # X-Postfix-Queue-ID of the original message and a null sender).
            "internal_mail_filter_classes": "bounce",
            "milter_protocol": "6",
            "milter_connect_timeout": "5s",
            "milter_command_timeout": "10s",
            "milter_content_timeout": "30s",
            # Postfix's defaults already include these; spelled out because the milter
            # relies on them ({i} is set from DATA on, not at MAIL).
            "milter_connect_macros": "j {daemon_name} {daemon_addr} v _",
            "milter_mail_macros": (
                "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}"
            ),
            "milter_rcpt_macros": "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
            "milter_end_of_data_macros": "i",
        }

    def master_cf(self) -> str:
        """master.cf: smtpd on the loopback port, the usual services, nothing chrooted."""
        # service type private unpriv chroot wakeup maxproc command
        lines = [
            f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd",
            "pickup     unix  n - n 60   1 pickup",
            "cleanup    unix  n - n -    0 cleanup",
            "qmgr       unix  n - n 300  1 qmgr",
            "rewrite    unix  - - n -    - trivial-rewrite",
            "bounce     unix  - - n -    0 bounce",
            "defer      unix  - - n -    0 bounce",
            "trace      unix  - - n -    0 bounce",
            "verify     unix  - - n -    1 verify",
            "flush      unix  n - n 1000? 0 flush",
            "proxymap   unix  - - n -    - proxymap",
            "proxywrite unix  - - n -    1 proxymap",
            "smtp       unix  - - n -    - smtp",
            "relay      unix  - - n -    - smtp",
            "showq      unix  n - n -    - showq",
            "error      unix  - - n -    - error",
            "retry      unix  - - n -    - error",
            "discard    unix  - - n -    - discard",
            "local      unix  - n n -    - local",
            "virtual    unix  - n n -    - virtual",
            "lmtp       unix  - - n -    - lmtp",
            "anvil      unix  - - n -    1 anvil",
            "scache     unix  - - n -    1 scache",
            "postlog    unix-dgram n - n - 1 postlogd",
            *self.extra_master_cf,
        ]
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        """Create the directories and write main.cf, master.cf and the access table."""
        uid, gid = postfix_ids()
        for d in (self.config_dir, self.queue_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.data_dir, uid, gid)
        self.data_dir.chmod(0o700)
        main = "".join(f"{k} = {v}\n" for k, v in self.main_cf().items())
        (self.config_dir / "main.cf").write_text(main)
        (self.config_dir / "master.cf").write_text(self.master_cf())
        self._write_access()

    def _write_access(self) -> None:
        text = "".join(f"{k} {v}\n" for k, v in self.recipient_access.items())
        self.access_path.write_text(text)

    # -- commands --------------------------------------------------------------------

    def _run(self, argv: list[str], timeout: float = 60.0, check: bool = True) -> str:
        exe = _which(argv[0])
        if exe is None:
            raise PostfixError(f"{argv[0]} not found (is Postfix installed?)")
        env = dict(os.environ, MAIL_CONFIG=str(self.config_dir))
        # stdin/stdout/stderr are never inherited by the daemonised master: it would keep
        # a capture pipe open and the call would never see EOF.
        proc = subprocess.run(
            [exe, *argv[1:]],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and proc.returncode != 0:
            raise PostfixError(
                f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}\n"
                f"--- log tail ---\n{self.log_tail()}"
            )
        return proc.stdout + proc.stderr if not check else proc.stdout

    def postfix(self, *args: str, timeout: float = 60.0) -> str:
        return self._run([POSTFIX, "-c", str(self.config_dir), *args], timeout)

    def postconf(self, *args: str) -> str:
        """Run `postconf -c DIR ARGS` and return its output."""
        return self._run([POSTCONF, "-c", str(self.config_dir), *args])

    def postqueue(self, *args: str) -> str:
        return self._run([POSTQUEUE, "-c", str(self.config_dir), *args])

    def postsuper(self, *args: str) -> str:
        return self._run([POSTSUPER, "-c", str(self.config_dir), *args])

    # -- life cycle ------------------------------------------------------------------

    @property
    def master_pid(self) -> int | None:
        """The running master's pid from the queue's pid file, or None."""
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return None if process_gone(pid) else pid

    @property
    def running(self) -> bool:
        return self.master_pid is not None

    def start(self, timeout: float = 30.0) -> Self:
        """Write the configuration, check it, start the master, wait for the smtpd port."""
        if self.running:
            raise PostfixError(f"instance in {self.base} is already running")
        blocked = searchable_by(self.base, *postfix_ids())
        if blocked is not None:
            raise PostfixError(
                f"user postfix cannot search {blocked}: a Postfix instance directory and "
                f"its parents must be searchable (o+x); use a directory in /tmp"
            )
        self.write_config()
        warnings = self._run([POSTFIX, "-c", str(self.config_dir), "check"], check=False)
        if "fatal" in warnings:
            raise PostfixError(f"postfix check failed for {self.config_dir}: {warnings}")
        try:
            self.postfix("start", timeout=timeout)
            self._master_pid = wait_until(
                lambda: self.master_pid, timeout, what=f"master pid in {self.queue_dir}/pid"
            )
            wait_until(self._smtpd_listening, timeout, what=f"smtpd on 127.0.0.1:{self.smtp_port}")
        except BaseException:
            self.stop()  # a half-started master must not outlive the failure
            raise
        return self

    def _smtpd_listening(self) -> bool:
        # Read the kernel's table rather than connect: a probe connection would put
        # "lost connection after CONNECT" into the log that tests read.
        want = f"0100007F:{self.smtp_port:04X}"
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":  # 0A = LISTEN
                return True
        return False

    def instance_pids(self) -> list[int]:
        """Pids of processes working in this instance's queue directory (its daemons)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd == str(self.queue_dir) and not process_gone(int(entry.name)):
                pids.append(int(entry.name))
        return pids

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the master and wait until it and every daemon of this instance are gone."""
        pid = self.master_pid or self._master_pid
        if pid is not None and not process_gone(pid):
            try:
                self.postfix("stop", timeout=timeout)
            except PostfixError:
                os.kill(pid, signal.SIGTERM)
            try:
                wait_until(lambda: process_gone(pid), timeout, what=f"master {pid} to exit")
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda: process_gone(pid), 10, what=f"master {pid} to die")
        # Children notice the master's exit on their status pipe and leave on their own.
        try:
            wait_until(lambda: not self.instance_pids(), timeout, what="daemons to exit")
        except TimeoutError:
            for child in self.instance_pids():
                os.kill(child, signal.SIGKILL)
        self._master_pid = None

    def reload(self) -> None:
        """Re-read main.cf/master.cf; new smtpd processes use the new settings."""
        offset = self.log_size()
        self.postfix("reload")
        self.wait_log(r"master\[\d+\]: reload ", timeout=30, since=offset)

    def set_main(self, settings: Mapping[str, str]) -> None:
        """Change main.cf settings (kept across restarts) and reload when running."""
        self.extra_main_cf.update(settings)
        self.write_config()
        if self.running:
            self.reload()

    def set_milter(self, milter: str | None, *, default_action: str | None = None) -> None:
        """Attach (or detach, with None) a milter for smtpd and Postfix's own bounces;
        `default_action` replaces milter_default_action (kept when None)."""
        self.milter = milter
        if default_action is not None:
            self.milter_default_action = default_action
        self.write_config()
        if self.running:
            self.reload()

    def set_recipient_access(self, table: Mapping[str, str]) -> None:
        """Replace the in-line recipient access table (texthash: read at process start)."""
        self.recipient_access = dict(table)
        self._write_access()
        if self.running:
            self.reload()

    def cleanup(self) -> None:
        """Remove the instance directory when this object created it (after stop())."""
        if self.running:
            raise PostfixError(f"instance in {self.base} is still running")
        if self._owns_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()

    # -- queue -----------------------------------------------------------------------

    def flush(self) -> None:
        """Ask the queue manager to retry every deferred message now."""
        self.postqueue("-f")

    def queue(self) -> list[dict[str, Any]]:
        """The queue as `postqueue -j` reports it: one dict per message."""
        out = self.postqueue("-j")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def queue_ids(self) -> list[str]:
        return [str(entry["queue_id"]) for entry in self.queue()]

    def wait_queue_empty(self, timeout: float = 30.0) -> None:
        wait_until(lambda: not self.queue_ids(), timeout, interval=0.1, what="an empty queue")

    def delete_queue(self) -> None:
        """Delete every queued message (`postsuper -d ALL`)."""
        self.postsuper("-d", "ALL")

    # -- log -------------------------------------------------------------------------

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        """The maillog from byte offset `since` (all of it by default)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_log(
        self, pattern: str | re.Pattern[str], timeout: float = 30.0, since: int = 0
    ) -> re.Match[str]:
        """Wait until `pattern` matches a line of the maillog (from offset `since`)."""
        rx = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern

        def search() -> re.Match[str] | None:
            return rx.search(self.log_text(since))

        try:
            return wait_until(search, timeout, what=rx.pattern)
        except TimeoutError as exc:
            raise TimeoutError(
                f"no log line matched {rx.pattern!r} within {timeout}s in {self.log_path}\n"
                f"--- log tail ---\n{self.log_tail()}"
            ) from exc

    def send(
        self, sender: str, recipients: Iterable[str], raw: bytes
    ) -> dict[str, tuple[int, bytes]]:
        """Submit a message to this instance's smtpd; return the refused recipients."""
        return send("127.0.0.1", self.smtp_port, sender, recipients, raw)
