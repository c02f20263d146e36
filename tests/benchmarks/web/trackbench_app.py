"""The tracker's per-request work as a bare ASGI app (plus an RSGI twin), for the server
benchmark in tests/benchmarks/asgi_servers.py.

GET BASE/c/TOKEN: verify the signed token, 302 to its URL. GET BASE/o/TOKEN: a 1x1 GIF.
Anything else, or a bad token: a plain 404. Every hit is appended to an in-process deque
(the stand-in for the background batched writer's queue). No framework, no logging.

The key and base path come from the environment (TRACKBENCH_KEY, TRACKBENCH_BASE) so the
driver and every server process agree; :func:`make_paths` makes the request paths.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

from trackmilter.model import new_tracking_id
from trackmilter.tokens import InvalidToken, Kind, Signer

KEY = os.environ.get("TRACKBENCH_KEY", "k" * 32).encode()
BASE = os.environ.get("TRACKBENCH_BASE", "/t").rstrip("/")
CLICK = BASE + "/c/"
OPEN = BASE + "/o/"
SIGNER = Signer([KEY])
MAX_TOKEN = 4096

PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
# The writer drains this in the real service; bounded here so a long run keeps its memory.
HITS: deque[tuple[Any, ...]] = deque(maxlen=1_000_000)

_NO_STORE = (b"cache-control", b"no-store")
_GIF_HEADERS = [(b"content-type", b"image/gif"), _NO_STORE, (b"content-length", b"43")]
_NOT_FOUND = (404, [(b"content-type", b"text/plain"), _NO_STORE, (b"content-length", b"10")],
              b"not found\n")


def answer(path: str, method: str, client: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body for one request (the whole of the tracker's work)."""
    if path.startswith(CLICK):
        want, token = Kind.CLICK, path[len(CLICK):]
    elif path.startswith(OPEN):
        want, token = Kind.OPEN, path[len(OPEN):]
    else:
        return _NOT_FOUND
    if method not in ("GET", "HEAD") or len(token) > MAX_TOKEN:
        return _NOT_FOUND
    try:
        data = SIGNER.verify(token)
    except InvalidToken:
        return _NOT_FOUND
    if data.kind is not want:
        return _NOT_FOUND
    HITS.append((want, data.tracking_id, data.index, data.url, client, time.time()))
    if want is Kind.CLICK:
        return 302, [(b"location", data.url.encode("ascii")), _NO_STORE,
                     (b"content-length", b"0")], b""
    return 200, _GIF_HEADERS, PIXEL


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI 3."""
    kind = scope["type"]
    if kind == "http":
        client = scope.get("client")
        status, headers, body = answer(scope["path"], scope["method"],
                                       client[0] if client else "")
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


class _RSGI:
    """Granian's own interface (RSGI): str headers, the response in one call."""

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        status, headers, body = answer(scope.path, scope.method, scope.client)
        protocol.response_bytes(status, [(k.decode(), v.decode()) for k, v in headers], body)


rsgi_app = _RSGI()


def make_paths(n: int, *, key: bytes = KEY, base: str = BASE) -> list[tuple[str, str]]:
    """``n`` distinct valid click paths and the URL each must redirect to."""
    signer = Signer([key])
    out = []
    for i in range(n):
        tid = new_tracking_id()
        url = f"https://shop{i % 37}.example.com/products/{i}?utm_source=mail&utm_id={tid[:8]}"
        out.append((f"{base}/c/{signer.sign_click(tid, i % 20, url)}", url))
    return out


def make_open_path(*, key: bytes = KEY, base: str = BASE) -> str:
    return f"{base}/o/{Signer([key]).sign_open(new_tracking_id())}"
