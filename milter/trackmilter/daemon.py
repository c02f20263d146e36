"""What every daemon shares at start-up: the one start-up error, the metrics server, the
signer.

A neutral module, like `trackmilter.lifecycle` (stop handling): the daemons (milter,
maillog, web, edge, webhooks) and the command line use it, it uses none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trackmilter.config import Settings
from trackmilter.tokens import Signer

if TYPE_CHECKING:
    from trackmilter.metrics import Metrics

__all__ = ["StartupError", "load_signer", "start_metrics"]


class StartupError(Exception):
    """A daemon cannot start; the message says what to fix (the command exits 78,
    EX_CONFIG)."""


def start_metrics(listen: str, metrics: Metrics) -> None:
    """Serve ``/metrics`` on HOST:PORT in a daemon thread (empty string: disabled)."""
    if not listen:
        return
    # Imported here, not above: the command line imports this module before `trackmilter
    # web` chooses prometheus-client's multiprocess mode, which must precede its import.
    from prometheus_client import start_http_server

    host, _, port = listen.rpartition(":")
    try:
        start_http_server(int(port), addr=host.strip("[]"), registry=metrics.registry)
    except OSError as exc:
        raise StartupError(f"[metrics] listen = {listen!r}: {exc.strerror}") from exc


def load_signer(settings: Settings) -> Signer | None:
    """The tracking key set, or None when [tracking] base_url is empty (tracking off)."""
    t = settings.tracking
    if not t.base_url:
        return None
    return Signer.from_file(t.secret_file)
