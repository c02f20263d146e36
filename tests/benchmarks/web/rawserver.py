"""Lower bound of Python's cost per request: the same work as trackbench_app.answer behind
a bare asyncio.Protocol HTTP/1.1 server (keep-alive, pipelining, GET/HEAD only, no request
bodies, no timeouts, no header limits). Not a server to deploy: a yardstick.

Run: python rawserver.py HOST PORT [WORKERS]   (uvloop when installed; N workers share
the port through SO_REUSEPORT)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from email.utils import formatdate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from trackbench_app import answer  # noqa: E402

_REASONS = {200: b"OK", 302: b"Found", 400: b"Bad Request", 404: b"Not Found"}


class _Date:
    value = b""

    @classmethod
    def tick(cls) -> None:
        cls.value = formatdate(usegmt=True).encode()
        asyncio.get_running_loop().call_later(1.0, cls.tick)


class HTTP(asyncio.Protocol):
    __slots__ = ("transport", "buf", "client")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out = []
        close = False
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head, buf = buf[:end], buf[end + 4:]
            line, _, rest = head.partition(b"\r\n")
            parts = line.split(b" ")
            if len(parts) != 3:
                out.append(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                close = True
                break
            method, target, version = parts
            path = target.partition(b"?")[0].decode("latin-1")
            status, headers, body = answer(path, method.decode("latin-1"), self.client)
            if version == b"HTTP/1.0" or b"\r\nconnection: close" in rest.lower():
                close = True
            out.append(b"HTTP/1.1 %d %s\r\ndate: %s\r\n" % (status, _REASONS[status], _Date.value)
                       + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
                       + (b"" if method == b"HEAD" else body))
            if close:
                break
        self.buf = buf
        if out:
            self.transport.write(b"".join(out))  # type: ignore[attr-defined]
        if close:
            self.transport.close()


async def serve(host: str, port: int, reuse_port: bool) -> None:
    loop = asyncio.get_running_loop()
    _Date.tick()
    server = await loop.create_server(HTTP, host, port, reuse_port=reuse_port, backlog=1024)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    async with server:
        await stop


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    children = []
    for _ in range(workers - 1):
        pid = os.fork()
        if pid == 0:
            run(serve(host, port, workers > 1))
            os._exit(0)
        children.append(pid)
    try:
        run(serve(host, port, workers > 1))
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    main()
