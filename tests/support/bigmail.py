"""Large HTML messages with many links, for memory measurements (tests and benchmarks)."""

from __future__ import annotations

import binascii
import gc
import socket
import tracemalloc
from dataclasses import dataclass
from typing import Any

BOUNDARY = "=_big_7d1e_="
CONTENT_TYPE = f'multipart/alternative; boundary="{BOUNDARY}"'
CTES = ("quoted-printable", "base64", "8bit")


def html(size: int, gap: int = 40) -> tuple[bytes, int]:
    """An HTML document of about `size` bytes (CRLF lines): one paragraph per link, each
    link followed by `gap` bytes of text. Returns (document, number of links)."""
    filler = b"x" * gap
    parts = [b"<html><body>\r\n"]
    total = n = 0
    while total < size:
        n += 1
        p = (b'<p>Item %d: <a href="https://shop.example.com/product/%d?utm_source=news'
             b'&amp;utm_medium=email&amp;id=%d">Product %d</a> %s</p>\r\n' % (n, n, n, n, filler))
        parts.append(p)
        total += len(p)
    parts.append(b"</body></html>\r\n")
    return b"".join(parts), n


def encode(cte: str, data: bytes) -> bytes:
    if cte == "quoted-printable":
        return binascii.b2a_qp(data, istext=True)
    if cte == "base64":
        enc = binascii.b2a_base64(data, newline=False)
        return b"\r\n".join(enc[i : i + 76] for i in range(0, len(enc), 76)) + b"\r\n"
    return data


def body(cte: str, size: int, gap: int = 40) -> tuple[bytes, int]:
    """The body of a multipart/alternative message (CONTENT_TYPE) whose HTML part, of about
    `size` bytes before encoding, is in `cte`. Returns (body, number of links)."""
    doc, n = html(size, gap)
    b = BOUNDARY.encode()
    out = b"".join([
        b"--" + b + b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the HTML part.\r\n",
        b"--" + b + b"\r\nContent-Type: text/html; charset=utf-8\r\n",
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n",
        encode(cte, doc),
        b"\r\n--" + b + b"--\r\n",
    ])
    return out, n


def message(cte: str, size: int, gap: int = 40, *, sender: str = "alice@example.com",
            to: str = "bob@example.net", subject: str = "Big newsletter") -> bytes:
    """A whole message (CRLF) with the body above."""
    head = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: {CONTENT_TYPE}\r\n\r\n").encode()
    return head + body(cte, size, gap)[0]


CHUNK = 65535  # libmilter's MILTER_CHUNK_SIZE: Postfix sends the body in pieces this large


def chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@dataclass
class Measured:
    body: int  # body bytes
    links: int  # links the message holds
    peak: int  # tracemalloc peak over the whole transaction, above what was there before
    reserved: int  # what the memory budget reserved for it
    rewritten: bool
    skip: str


def transaction_peak(deps: Any, raw_body: bytes, content_type: str = CONTENT_TYPE,
                     links: int = 0) -> Measured:
    """Drive one outgoing transaction through a Session (no libmilter: the context calls
    are stubbed) and measure its memory with tracemalloc. The chunks are made inside the
    measurement: libmilter's pymilter makes them too."""
    from trackmilter.mta.session import Session

    class Bare(Session):  # type: ignore[misc]
        _protocol = 0  # pymilter's no-reply bookkeeping: none negotiated

        def getsymval(self, name: str) -> str:
            return "4QUEUEID" if name == "i" else ""

        def addheader(self, *a: Any, **k: Any) -> None:
            pass

        def chgheader(self, *a: Any, **k: Any) -> None:
            pass

        def replacebody(self, data: bytes) -> None:
            pass

    s = Bare(deps)
    s.connect("client.example", socket.AF_INET, ("127.0.0.1", 1234))
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        s.envfrom("<alice@example.com>")
        s.envrcpt("<bob@example.net>")
        s.header("Content-Type", content_type)
        for piece in chunks(raw_body):
            s.body(piece)
        tx = s.tx
        assert tx is not None and tx.reservation is not None
        reserved = tx.reservation.held
        s.eom()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    s.close()
    event = deps.sink.events[-1]
    return Measured(len(raw_body), links, peak, reserved, event.rewritten, event.skip_reason)
