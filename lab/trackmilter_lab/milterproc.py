"""Run a milter as a child process on a unix socket that Postfix can connect to."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from trackmilter_lab import child
from trackmilter_lab.postfix import postfix_ids, searchable_by

__all__ = ["MilterProcess", "postfix_can_connect", "unix_socket_accepts"]


def unix_socket_accepts(path: Path) -> bool:
    """True when something listens on the unix socket `path` (checked as ourselves)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def postfix_can_connect(path: Path) -> bool:
    """True when user postfix may connect to `path`, as smtpd and cleanup will.

    Connecting to a unix socket needs write permission on it and search permission on
    every parent directory. Root passes both regardless, so the modes are checked
    against postfix's uid and groups instead of probing as ourselves.
    """
    uid, gid = postfix_ids()
    if searchable_by(path.parent, uid, gid) is not None:
        return False
    groups = set(os.getgrouplist("postfix", gid))
    st = path.stat()
    if st.st_uid == uid:
        return bool(st.st_mode & 0o200)
    if st.st_gid in groups:
        return bool(st.st_mode & 0o020)
    return bool(st.st_mode & 0o002)


class MilterProcess:
    """A milter command started with umask 007, stopped by its pid.

    `argv` must make the milter listen on `socket_path` (a path inside a directory made
    by make_socket_dir, so the socket gets group postfix). start() returns when the socket
    accepts connections from user postfix, or raises with the milter's output.
    """

    def __init__(
        self,
        argv: Sequence[str],
        socket_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.socket_path = socket_path
        self.env = dict(env) if env is not None else None
        self.log_path = log_path or socket_path.with_suffix(".log")
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def spec(self) -> str:
        """The milter address as Postfix wants it in smtpd_milters."""
        return f"unix:{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def output(self) -> str:
        return child.output(self.log_path)

    def start(self, timeout: float = 30.0) -> Self:
        if self.proc is not None:
            raise RuntimeError("milter already started")
        if self.socket_path.exists():
            self.socket_path.unlink()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            umask=0o007,
            start_new_session=True,
        )

        try:
            child.wait_serving(self.proc, lambda: unix_socket_accepts(self.socket_path),
                               timeout, said=self.output, interval=0.05,
                               what=f"milter {self.argv!r} on socket {self.socket_path}")
            if not postfix_can_connect(self.socket_path):
                st = self.socket_path.stat()
                raise RuntimeError(
                    f"user postfix cannot connect to {self.socket_path} (mode "
                    f"{st.st_mode & 0o7777:o}, uid {st.st_uid}, gid {st.st_gid}): put it in "
                    f"a directory from make_socket_dir()"
                )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0, *, graceful: bool = True) -> int | None:
        """End the milter and return its exit code.

        Gracefully: SIGTERM, then SIGKILL after `timeout`. libmilter notices SIGTERM only
        when its listener's poll times out, which takes up to 5 s; graceful=False sends
        SIGKILL at once, for milters that keep no state worth a clean exit.
        """
        proc, self.proc = self.proc, None
        code = child.end(proc, signal.SIGTERM if graceful else signal.SIGKILL, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        # libmilter leaves its socket behind; a stale one would make Postfix log
        # "connection refused" rather than "no such file", which reads as a live milter.
        self.socket_path.unlink(missing_ok=True)
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
