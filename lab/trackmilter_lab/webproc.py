"""Run `trackmilter web` as a child process on a loopback port (tests, demo, benchmarks)."""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Self

from trackmilter_lab import child


def request(port: int, path: str, *, method: str = "GET",
            headers: Mapping[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to 127.0.0.1:port: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        # skip_accept_encoding: send exactly the headers given (scanner traces depend on it).
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class WebProcess:
    """`trackmilter --config FILE web`, ready once /healthz answers; stopped by its pid."""

    def __init__(self, argv: Sequence[str], port: int, *, log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.port = port
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def output(self) -> str:
        return child.output(self.log_path)

    def start(self, timeout: float = 30.0) -> Self:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)

        def answers() -> bool:
            try:
                return request(self.port, "/healthz", timeout=1.0)[0] == 200
            except OSError:
                return False

        try:
            child.wait_serving(self.proc, answers, timeout, said=self.output,
                               what=f"tracker {self.argv!r} on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the tracker writes what it holds, then exits), SIGKILL after timeout."""
        proc, self.proc = self.proc, None
        code = child.end(proc, signal.SIGTERM, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def web_process(config: Path, port: int, python: str = sys.executable) -> WebProcess:
    return WebProcess([python, "-m", "trackmilter", "--config", str(config), "web"], port,
                      log_path=config.parent / "web.log")
