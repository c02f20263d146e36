"""A loopback HTTP server handing every POST to an object's `handle(headers, body) -> status`
(the webhook receivers of the tests), stopped and joined on exit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class PostReceiver(Protocol):
    server: Any

    def handle(self, headers: dict[str, str], body: bytes) -> int: ...


@contextmanager
def serving_posts(rec: PostReceiver, on_stop: Callable[[], None] = lambda: None
                  ) -> Iterator[ThreadingHTTPServer]:
    """Serve on 127.0.0.1 (rec.server is set, for its port); `on_stop` runs before the
    server shuts down (to release a handler that is holding a request)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = rec.handle(dict(self.headers.items()), body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.server = server
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        on_stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
