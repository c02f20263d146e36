"""A do-nothing pymilter: every callback answers CONTINUE; the baseline cost of a milter.

Usage: python nullmilter.py unix:/path/to/sock [--record FILE] [--replace]

It asks for every protocol step a body-reading milter needs (connect, helo, envelope,
headers, body, end of message) and negotiates nothing extra: no reply skipping, no
rejected recipients. With --record, one JSON line per message is appended to FILE at end
of message (queue id, envelope, header and body sizes), so a test can see what it saw.

Postfix connects to the socket as user postfix: start it with umask 007 in a directory
of group postfix with the set-gid bit (trackmilter_lab.postfix.make_socket_dir).

With --replace it also keeps the body and, at end of message, hands it back with a 1x1
image tag appended (no parsing, one bytes concatenation): what a body change costs in
pymilter and in Postfix's cleanup, apart from the milter's own work. A benchmark diagnostic.
"""

from __future__ import annotations

import argparse
import json
import threading
from typing import Any

import Milter

CONTINUE = Milter.CONTINUE
PIXEL = b'<img src="https://t.example/o/AAAAAAAAAAAAAAAAAAAAAAAAAAAA" width="1" height="1" alt="">\r\n'


class NullMilter(Milter.Base):  # type: ignore[misc]
    """One instance per SMTP connection (pymilter's factory calls the class)."""

    record_path: str | None = None
    replace = False
    record_lock = threading.Lock()

    def __init__(self) -> None:
        self.sender = ""
        self.recipients: list[str] = []
        self.headers = 0
        self.body_bytes = 0
        self.chunks: list[bytes] = []

    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        return CONTINUE

    def hello(self, hostname: str) -> int:
        return CONTINUE

    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.sender = mailfrom
        self.recipients = []
        self.headers = 0
        self.body_bytes = 0
        self.chunks = []
        return CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        self.recipients.append(to)
        return CONTINUE

    def data(self) -> int:
        return CONTINUE

    def header(self, field: str, value: str) -> int:
        self.headers += 1
        return CONTINUE

    def eoh(self) -> int:
        return CONTINUE

    def body(self, chunk: bytes) -> int:
        self.body_bytes += len(chunk)
        if self.replace:
            self.chunks.append(chunk)
        return CONTINUE

    def eom(self) -> int:
        if self.replace:
            self.replacebody(b"".join(self.chunks) + PIXEL)
            self.chunks = []
        if self.record_path is not None:
            line = json.dumps(
                {
                    "queue_id": self.getsymval("i"),
                    "sender": self.sender,
                    "recipients": self.recipients,
                    "headers": self.headers,
                    "body_bytes": self.body_bytes,
                }
            )
            with self.record_lock, open(self.record_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        return CONTINUE

    def abort(self) -> int:
        return CONTINUE

    def close(self) -> int:
        return CONTINUE


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="milter socket, e.g. unix:/run/nullmilter/sock")
    parser.add_argument("--record", help="append one JSON line per message to this file")
    parser.add_argument("--replace", action="store_true",
                        help="hand the body back with an image tag appended")
    parser.add_argument("--timeout", type=int, default=600, help="MTA I/O timeout (s)")
    args = parser.parse_args(argv)
    NullMilter.record_path = args.record
    NullMilter.replace = args.replace
    Milter.factory = NullMilter
    Milter.runmilter("nullmilter", args.socket, args.timeout)


if __name__ == "__main__":
    main()
