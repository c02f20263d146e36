"""`trackmilter demo`: a private Postfix with trackmilter attached, sample mail, then status."""

from __future__ import annotations

import re
import shutil
import subprocess
from contextlib import ExitStack
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, TextIO

from trackmilter_lab import daemon, demo_tracker
from trackmilter_lab.fakemx import FakeMX
from trackmilter_lab.postfix import (
    PostfixError,
    PostfixInstance,
    free_port,
    make_socket_dir,
    postfix_available,
    postfix_ids,
    searchable_by,
)
from trackmilter_lab.webproc import web_process

__all__ = ["run_demo"]

SENDER = "news@shop.example.org"
READERS = ("alice@example.net", "bob@example.net")
REJECTED = "reject-carol@example.net"  # the fake MX answers 550 5.1.1
DEFERRED = "defer-dave@example.net"  # the fake MX answers 450 4.2.0
REFUSED = "refused@example.net"  # our own Postfix refuses it in-line
REFUSED_ACTION = "REJECT 5.7.1 Recipient refused by policy"

NEWSLETTER_HTML = """\
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Spring news</title></head>
<body style="font-family: sans-serif">
<table role="presentation" width="100%"><tr><td>
<h1>Spring news from Example Shop</h1>
<p>Our <a href="https://shop.example.org/spring?utm_source=newsletter">spring collection</a>
is here, and <a href="https://shop.example.org/sale">everything in the sale</a> is 20% off.</p>
<p><a href="https://shop.example.org/blog/gardening" style="color:#3869d4">Read the
gardening guide</a> or <a href="mailto:help@shop.example.org">write to us</a>.</p>
<p style="font-size:small"><a href="https://shop.example.org/unsubscribe?u=8f3a2c">Unsubscribe</a></p>
</td></tr></table>
</body></html>
"""


def _message(to: str, subject: str, html: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Example Shop <{SENDER}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="shop.example.org")
    text = "Spring news: https://shop.example.org/spring\n"
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _prepare(workdir: Path) -> None:
    """A fresh run in `workdir`: earlier instance, sockets, database and spool removed."""
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    blocked = searchable_by(workdir, *postfix_ids())
    if blocked is not None:
        raise PostfixError(f"user postfix cannot search {blocked}; choose another --workdir")
    for name in ("postfix", "sock", "spool"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    for name in ("trackmilter.db", "milter.log", "web.log"):
        (workdir / name).unlink(missing_ok=True)


def _outcome(pf: PostfixInstance, rcpt: str, status: str) -> str:
    """Wait for Postfix's delivery log line for `rcpt` with `status`, return its tail."""
    m = pf.wait_log(rf"to=<{re.escape(rcpt)}>, .*status={status}.*$", timeout=30)
    return m.group(0)


def _status(config: Path, python: str, ident: str, out: TextIO) -> bool:
    proc = subprocess.run(
        daemon.command(config, "status", ident, python=python),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out.write(f"\n$ trackmilter status {ident}\n")
    out.write(proc.stdout or "")
    if proc.stderr.strip():
        out.write(proc.stderr)
    # 3: nothing recorded for that identifier, a valid answer.
    return proc.returncode in (0, 3)


def _start_follower(config: Path, log: Path, python: str, output: Path) -> subprocess.Popen[bytes]:
    with open(output, "wb") as fh:
        return subprocess.Popen(daemon.command(config, "maillog", str(log), python=python),
                                stdout=fh, stderr=subprocess.STDOUT)


def _stop_follower(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _has_delivery(view: list[dict[str, Any]]) -> bool:
    return any(e["kind"] == "delivery" for m in view for e in m["events"])


def run_demo(workdir: Path, python: str, out: TextIO) -> int:
    """Run the whole demo, print what happens, stop everything; 0 when it all worked."""
    if not postfix_available():
        out.write("trackmilter demo: Postfix is not installed (apt-get install postfix)\n")
        return 1
    workdir = workdir.resolve()
    ok = True
    try:
        with ExitStack() as stack:
            _prepare(workdir)
            out.write(f"trackmilter demo in {workdir}\n")
            mx = stack.enter_context(FakeMX())
            out.write(f"- fake remote MX on 127.0.0.1:{mx.port} (reject*@ 550, defer*@ 450)\n")

            sock = make_socket_dir(workdir / "sock") / "milter.sock"
            web_port = free_port()
            config = daemon.write_config(workdir, sock, log_level="warning", extra={"maillog": {
                "state_file": str(workdir / "maillog.state"), "metrics_listen": "",
                "mta_name": "lab.example", "poll_interval": 0.2},
                **demo_tracker.settings(workdir, web_port)})
            milter = daemon.milter_process(config, sock, python=python)
            stack.callback(milter.stop)
            milter.start()
            out.write(f"- trackmilter milter on {milter.spec} (log: {milter.log_path})\n")

            pf = PostfixInstance(
                workdir / "postfix",
                relay_port=mx.port,
                milter=milter.spec,
                recipient_access={REFUSED: REFUSED_ACTION},
            )
            stack.callback(pf.stop)
            pf.start()
            out.write(f"- private Postfix on 127.0.0.1:{pf.smtp_port} (log: {pf.log_path})\n")
            follower = _start_follower(config, pf.log_path, python, workdir / "maillog.log")
            stack.callback(_stop_follower, follower)
            out.write(f"- trackmilter maillog following {pf.log_path}\n")
            web = web_process(config, web_port, python=python)
            stack.callback(web.stop)
            web.start()
            out.write(f"- trackmilter web on 127.0.0.1:{web_port} (log: {web.log_path})\n\n")

            sends = [
                (list(READERS), _message(", ".join(READERS), "Spring news", NEWSLETTER_HTML)),
                ([REJECTED], _message(REJECTED, "Your order")),
                ([DEFERRED], _message(DEFERRED, "Your invoice")),
                ([REFUSED], _message(REFUSED, "Hello")),
            ]
            for rcpts, raw in sends:
                refused = pf.send(SENDER, rcpts, raw)
                for rcpt in rcpts:
                    if rcpt in refused:
                        code, text = refused[rcpt]
                        reply = text.decode(errors="replace")
                        out.write(f"sent to {rcpt}: refused in-line: {code} {reply}\n")
                    else:
                        out.write(f"sent to {rcpt}: accepted by our Postfix\n")

            out.write("\nPostfix delivery log:\n")
            expected = [(r, "sent") for r in READERS] + [
                (REJECTED, "bounced"),
                (DEFERRED, "deferred"),
            ]
            for rcpt, status in expected:
                out.write(f"  {_outcome(pf, rcpt, status)}\n")

            delivered = mx.wait_for(lambda ms: [m for m in ms if set(READERS) <= set(m.recipients)])
            body = delivered[0].data
            links = len(re.findall(rb"t\.example/c/", body.replace(b"=\r\n", b"")))
            out.write(
                f"\nThe fake MX received the newsletter for {', '.join(READERS)} "
                f"({len(body)} bytes, {links} tracked links).\n"
            )

            for rcpt in [*READERS, REJECTED, DEFERRED]:
                # The follower and the writer are asynchronous: wait for the log's evidence.
                daemon.wait_status(config, rcpt, _has_delivery, timeout=30, python=python)
            made = demo_tracker.follow(web_port, body, daemon.BASE_URL, out)
            daemon.wait_status(config, READERS[0], demo_tracker.settled(made), timeout=30,
                               python=python)
            for rcpt in [*READERS, REJECTED, DEFERRED, REFUSED]:
                ok = _status(config, python, rcpt, out) and ok
    except (PostfixError, TimeoutError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        out.write(f"\ntrackmilter demo failed: {exc}\n")
        return 1
    out.write("\nEverything stopped (milter, log follower, tracker, Postfix, fake MX).\n")
    return 0 if ok else 1
