"""What every daemon shares at start-up: the one start-up error, the metrics server, the
signer, the store.

A neutral module, like `trackmilter.lifecycle` (stop handling): the daemons (milter,
maillog, web, edge, webhooks) and the command line use it, it uses none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from trackmilter.config import Settings
from trackmilter.store.base import StoreConfigError, WriteHook
from trackmilter.store.engine import check_sqlite_directory, parse_url, sqlite_path
from trackmilter.store.hits import Reviser
from trackmilter.store.sql import SQLStore

if TYPE_CHECKING:
    from trackmilter.keyfile import WatchedSigner
    from trackmilter.metrics import Metrics

__all__ = ["StartupError", "load_signer", "start_metrics", "store_from"]


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


# Names that can never be a tracker of yours: RFC 2606 §2-3 (the .example, .test, .invalid
# and .localhost top-level names; example.com, .net, .org), RFC 6761 §6.
_RESERVED_TLDS = ("example", "test", "invalid", "localhost")
_RESERVED_DOMAINS = ("example.com", "example.net", "example.org")


def reserved_host(host: str) -> bool:
    """A documentation or test name: mail with links there would point nowhere you own."""
    h = host.lower().rstrip(".")
    return h.rpartition(".")[2] in _RESERVED_TLDS or any(
        h == d or h.endswith("." + d) for d in _RESERVED_DOMAINS)


def load_signer(settings: Settings, log: Any = None) -> WatchedSigner | None:
    """The tracking key set, following its file (trackmilter.keyfile), or None when
    [tracking] base_url is empty (tracking off).

    Refuses (StartupError, naming the key) a base_url on a reserved example domain — the
    milter would rewrite real mail's links to a host nobody owns — unless [tracking]
    allow_reserved_base_url says this is a test lab, and a key file it cannot use."""
    # Here, not above: `trackmilter status` and `report` use this module's store_from, and
    # the signer's modules (tokens, with the native engine) cost them 30 ms to import.
    from trackmilter.keyfile import WatchedSigner
    from trackmilter.tokens import KeyFileError

    t = settings.tracking
    if not t.base_url:
        return None
    host = urlsplit(t.base_url).hostname or ""
    if reserved_host(host) and not t.allow_reserved_base_url:
        raise StartupError(
            f"[tracking] base_url = {t.base_url!r} is a reserved example domain (RFC 2606): "
            "the links in your mail would point to a host nobody owns. Set it to your "
            "tracker's public URL (or leave it empty to record without rewriting)")
    try:
        return WatchedSigner(t.secret_file, log)
    except KeyFileError as exc:
        raise StartupError(f"[tracking] secret_file = {str(t.secret_file)!r}: {exc}") from exc


def store_from(settings: Settings, *, hooks: Sequence[WriteHook] = (),
               reviser: Reviser | None = None,
               statement_timeout: float | None = None,
               existing: bool = False) -> SQLStore:
    """The store of [database] url, as every daemon and command opens it.

    `hooks`: called in each write transaction (the webhook outbox, trackmilter.wiring);
    `reviser`: judges a message's tracker hits again when its delivery time is stored
    (trackmilter.judging.reviser_from); `statement_timeout`: seconds, 0 for none, default
    [database] statement_timeout. Creating it does not connect, but a SQLite file that
    could never be written (no directory, no permission) is refused now, with its path
    (StoreConfigError): that is a configuration error, not an outage to spool through.
    `existing`: the read-only commands' case: a SQLite file must exist (connecting would
    create an empty one and report nothing recorded).
    """
    parsed = parse_url(settings.database.url)
    path = sqlite_path(parsed)
    if existing and path is not None and not path.exists():
        raise StoreConfigError(f"no database at {path} ([database] url): run `trackmilter "
                               "db upgrade` there, or point --config at the right file")
    if not existing:
        check_sqlite_directory(parsed)
    bound = settings.database.statement_timeout if statement_timeout is None \
        else statement_timeout
    return SQLStore(settings.database.url, hooks=hooks, reviser=reviser,
                    statement_timeout=bound)
