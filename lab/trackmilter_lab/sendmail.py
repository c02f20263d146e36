"""A private Sendmail instance on loopback, for tests: Debian's own binary, never installed.

Debian's sendmail packages conflict with postfix, so `scripts/setup` only downloads and
unpacks them (sendmail-bin, sendmail-cf, libwrap0, m4) under SENDMAIL_HOME. An instance
gets a directory of its own: a sendmail.cf built with m4 from an .mc that includes the
shipped conf/sendmail/trackmilter.mc lines, its own queue, aliases and pid file, and an
SMTP port on 127.0.0.1; it relays everything to a smart host on loopback (the fake MX).

Sendmail only logs through syslog(3) and, on a host whose name has no dot, sleeps a minute
before it starts. So it runs in its own UTS and mount namespaces (`unshare -u -m`): a
dotted host name, and a private /dev whose `log` is a datagram socket that this class
reads into `maillog`. Nothing outside the instance directory changes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

from trackmilter_lab.postfix import free_port, send, wait_until

__all__ = ["SENDMAIL_HOME", "SendmailInstance", "sendmail_available"]

SENDMAIL_HOME = Path(os.environ.get("TRACKMILTER_LAB_SENDMAIL",
                                    "/var/cache/trackmilter/lab-sendmail"))
HOSTNAME = "sendmail-lab.test"
_SNIPPET = Path(__file__).resolve().parents[2] / "conf" / "sendmail" / "trackmilter.mc"

_MC = """\
include(`{root}/usr/share/sendmail/cf/m4/cf.m4')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `{host}')dnl
define(`confSERVICE_SWITCH_FILE', `{d}/service.switch')dnl
define(`confHOSTS_FILE', `{d}/hosts')dnl
define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`QUEUE_DIR', `{d}/queue')dnl
define(`confPID_FILE', `{d}/sendmail.pid')dnl
define(`STATUS_FILE', `{d}/statistics')dnl
define(`ALIAS_FILE', `{d}/aliases')dnl
define(`confCR_FILE', `-o {d}/relay-domains')dnl
define(`HELP_FILE', `{d}/helpfile')dnl
define(`confDEF_USER_ID', `8:8')dnl
define(`confTO_IDENT', `0s')dnl
define(`confLOG_LEVEL', `14')dnl
define(`confDONT_BLAME_SENDMAIL', `TrustStickyBit')dnl
define(`confPRIVACY_FLAGS', `authwarnings')dnl
define(`SMART_HOST', `[127.0.0.1]')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {mx_port}')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {mx_port}')dnl
define(`SMTP_MAILER_ARGS', `TCP $h {mx_port}')dnl
FEATURE(`nocanonify')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`access_db', `hash -T<TMPF> -o {d}/access')dnl
FEATURE(`blocklist_recipients')dnl
DAEMON_OPTIONS(`Port={port}, Addr=127.0.0.1, Name=MTA')dnl
{milter}
MAILER(`local')dnl
MAILER(`smtp')dnl
"""

# Run under `unshare -u -m`: a private /dev (its `log` our syslog socket) and host name;
# exec, so that the PID we hold is Sendmail's.
_START = """\
#!/bin/sh
set -e
D={d}
mount --make-rprivate /
mount --rbind /dev $D/realdev
mount -t tmpfs -o mode=755 labdev /dev
for n in null zero random urandom tty full; do ln -s $D/realdev/$n /dev/$n; done
ln -s /proc/self/fd /dev/fd
ln -s $D/syslog.sock /dev/log
hostname {host}
export LD_LIBRARY_PATH={root}/usr/lib/x86_64-linux-gnu
exec {root}/usr/libexec/sendmail/sendmail -C $D/sendmail.cf -bD -q1m
"""


def sendmail_available(home: Path = SENDMAIL_HOME) -> bool:
    """Whether scripts/setup unpacked Sendmail and this host can make namespaces (root)."""
    return ((home / "root/usr/libexec/sendmail/sendmail").is_file()
            and shutil.which("unshare") is not None and os.geteuid() == 0)


def milter_lines(socket_path: Path) -> str:
    """The shipped conf/sendmail/trackmilter.mc, pointed at `socket_path`."""
    text = _SNIPPET.read_text()
    return text.replace("local:/run/trackmilter/milter.sock", f"local:{socket_path}")


class SendmailInstance:
    """Build with `SendmailInstance(mx_port, milter_socket)`, then `start()` / `stop()`."""

    def __init__(self, mx_port: int, milter_socket: Path | None = None,
                 home: Path = SENDMAIL_HOME, access: dict[str, str] | None = None) -> None:
        """`access`: access-database entries, e.g. {"To:no@example.net": "REJECT"}."""
        self.root = home / "root"
        self.base = Path(tempfile.mkdtemp(prefix="tm-sendmail-"))
        self.smtp_port = free_port()
        self.mx_port = mx_port
        self.log_path = self.base / "maillog"
        self._process: subprocess.Popen[bytes] | None = None
        self._sink: socket.socket | None = None
        self._reader: threading.Thread | None = None
        d = self.base
        (d / "queue").mkdir(mode=0o700)
        (d / "realdev").mkdir()
        (d / "service.switch").write_text("hosts\tfiles\naliases\tfiles\n")
        (d / "hosts").write_text(f"127.0.0.1\tlocalhost {HOSTNAME}\n")
        (d / "aliases").write_text("postmaster: root\nMAILER-DAEMON: postmaster\n")
        (d / "relay-domains").write_text("")
        (d / "statistics").write_text("")
        self.log_path.write_text("")
        milter = milter_lines(milter_socket) if milter_socket is not None else ""
        (d / "sendmail.mc").write_text(_MC.format(root=self.root, d=d, host=HOSTNAME,
                                                  port=self.smtp_port, mx_port=mx_port,
                                                  milter=milter))
        with (d / "sendmail.cf").open("wb") as cf:
            subprocess.run([str(self.root / "usr/bin/m4"), str(d / "sendmail.mc")],
                           stdout=cf, check=True, timeout=60)
        env = {**os.environ, "LD_LIBRARY_PATH": f"{self.root}/usr/lib/x86_64-linux-gnu"}
        entries = "".join(f"{k}\t{v}\n" for k, v in (access or {}).items())
        subprocess.run([str(self.root / "usr/libexec/sendmail/makemap"), "-C",
                        str(d / "sendmail.cf"), "hash", str(d / "access")],
                       input=entries.encode(), env=env, check=True, capture_output=True,
                       timeout=60)
        start = d / "start-sendmail.sh"
        start.write_text(_START.format(d=d, host=HOSTNAME, root=self.root))
        start.chmod(0o755)
        # The aliases database, built in a UTS namespace too (the dotless host name).
        subprocess.run(["unshare", "-u", "sh", "-c", f"hostname {HOSTNAME}; exec "
                        f"{self.root}/usr/libexec/sendmail/sendmail -C {d}/sendmail.cf -bi"],
                       env=env, check=True, capture_output=True, timeout=60)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 30.0) -> SendmailInstance:
        self._sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sink.bind(str(self.base / "syslog.sock"))
        self._reader = threading.Thread(target=self._read_syslog, args=(self._sink,),
                                        daemon=True)
        self._reader.start()
        with (self.base / "sendmail.out").open("wb") as out:
            self._process = subprocess.Popen(
                ["unshare", "-u", "-m", str(self.base / "start-sendmail.sh")],
                stdout=out, stderr=subprocess.STDOUT)

        def listening() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"sendmail exited: {(self.base / 'sendmail.out').read_text()}"
                                   f"\n{self.log_text()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.smtp_port)) == 0

        wait_until(listening, timeout, what=f"sendmail listening on {self.smtp_port}")
        return self

    def _read_syslog(self, sink: socket.socket) -> None:
        with self.log_path.open("ab", buffering=0) as out:
            while True:
                try:
                    data = sink.recv(65536)
                except OSError:
                    return  # closed by stop()
                out.write(data.rstrip(b"\0\n") + b"\n")

    def stop(self) -> None:
        """SIGTERM, then wait (SIGKILL after 10 s); the instance directory is removed."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait(10)
            self._process = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def cleanup(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def send(self, sender: str, recipients: Iterable[str], raw: bytes
             ) -> dict[str, tuple[int, bytes]]:
        """Submit a message (CRLF lines: this Sendmail refuses bare LF); the refused ones."""
        return send("127.0.0.1", self.smtp_port, sender, recipients, raw)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        rx = re.compile(pattern, re.M)
        return wait_until(lambda: rx.search(self.log_text()), timeout,
                          what=f"sendmail log line matching {pattern!r}")

    def __enter__(self) -> SendmailInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()
