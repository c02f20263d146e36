"""Helpers for the tests of what Postfix does when it loses a milter mid-message."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
from collections.abc import Iterable
from pathlib import Path

from trackmilter_lab import PostfixInstance

RAWMILTER = Path(__file__).resolve().parent / "rawmilter.py"

# Every Postfix queue a message can sit in (maildrop: sendmail(1) submissions before
# pickup; corrupt: where qmgr puts a queue file it cannot read).
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")


def _sbin(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin") or name


def queue_files(pf: PostfixInstance, *queues: str) -> dict[str, list[str]]:
    """The queue file names in each queue directory (hashed subdirectories included)."""
    out: dict[str, list[str]] = {}
    for name in queues or QUEUES:
        d = pf.queue_dir / name
        out[name] = sorted(p.name for p in d.rglob("*") if p.is_file()) if d.is_dir() else []
    return out


def submit(port: int, sender: str, recipients: Iterable[str], raw: bytes,
           timeout: float = 30.0) -> tuple[int, str]:
    """One SMTP transaction on a new connection; the reply to the end of DATA (or to the
    command that ended the transaction first) as (code, text).

    A new connection each time, as a client retrying later would: after Postfix loses a
    milter it keeps answering that session with the milter's default action.
    """
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
            client.ehlo("client.example")
            code, text = client.mail(sender)
            if code != 250:
                return code, text.decode(errors="replace")
            for rcpt in recipients:
                code, text = client.rcpt(rcpt)
                if code not in (250, 251):
                    return code, text.decode(errors="replace")
            code, text = client.data(raw)
            return code, text.decode(errors="replace")
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error.decode(errors="replace")
    except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
        return 0, f"disconnected: {exc}"


def sendmail(pf: PostfixInstance, sender: str, recipients: Iterable[str], raw: bytes) -> None:
    """Submit with Postfix's sendmail(1) (postdrop → maildrop → pickup → cleanup)."""
    env = dict(os.environ, MAIL_CONFIG=str(pf.config_dir))
    subprocess.run(
        [_sbin("sendmail"), "-C", str(pf.config_dir), "-f", sender, *recipients],
        input=raw.replace(b"\r\n", b"\n"), env=env, check=True, capture_output=True,
        timeout=30,
    )


def kick_pickup(pf: PostfixInstance) -> None:
    """Make pickup scan the maildrop now rather than at its next wake-up (60 s)."""
    env = dict(os.environ, MAIL_CONFIG=str(pf.config_dir))
    subprocess.run([_sbin("postkick"), "-c", str(pf.config_dir), "public", "pickup", "W"],
                   env=env, check=True, capture_output=True, timeout=30)
