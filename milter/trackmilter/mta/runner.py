"""Start the milter daemon: wire settings, signer, store writer and metrics, then hand over to libmilter."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import Milter
from prometheus_client import start_http_server

from trackmilter.config import Settings
from trackmilter.logging import get_logger
from trackmilter.metrics import Metrics
from trackmilter.mta.session import Deps, Session
from trackmilter.tokens import Signer


class StartupError(Exception):
    """The daemon cannot start; the message says what to fix."""


def start_metrics(listen: str, metrics: Metrics) -> None:
    """Serve ``/metrics`` on HOST:PORT in a daemon thread (empty string: disabled)."""
    if not listen:
        return
    host, _, port = listen.rpartition(":")
    try:
        start_http_server(int(port), addr=host.strip("[]"), registry=metrics.registry)
    except OSError as exc:
        raise StartupError(f"[metrics] listen = {listen!r}: {exc.strerror}") from exc


def load_signer(settings: Settings) -> Signer | None:
    t = settings.tracking
    if not t.base_url:
        return None
    return Signer.from_file(t.secret_file)


def prepare_socket(spec: str) -> None:
    """Check a unix socket's directory; the MTA (group postfix) must be able to connect."""
    if not (spec.startswith("unix:") or spec.startswith("local:")):
        return
    path = Path(spec.split(":", 1)[1])
    if not path.parent.is_dir():
        raise StartupError(
            f"[milter] socket = {spec!r}: directory {path.parent} does not exist "
            "(create it owned by trackmilter, group postfix, mode 0750)")
    # libmilter creates the socket with the process umask; 0007 lets the group connect.
    os.umask(0o007)


def run(settings: Settings) -> int:
    """Run until libmilter returns (SIGTERM/SIGINT); flush the writer before exiting."""
    from trackmilter.mta.reports import ReportQueue, decode_report
    from trackmilter.store import SQLStore
    from trackmilter.store.writer import BatchWriter

    log = get_logger(component="milter")
    metrics = Metrics()
    signer = load_signer(settings)
    if signer is None:
        log.warning("tracking_disabled", reason="[tracking] base_url is empty: "
                    "messages are recorded and get a tracking header, links are not rewritten")
    prepare_socket(settings.milter.socket)
    store = SQLStore(settings.database.url, webhooks=settings.webhooks.endpoints,
                     outgoing_networks=settings.milter.outgoing_networks,
                     statement_timeout=settings.database.statement_timeout)
    s = settings.store
    writer = BatchWriter(store, s.spool_dir, metrics, max_batch=s.batch_size,
                         flush_interval=s.flush_interval, retry_interval=s.retry_interval,
                         logger=log)
    start_metrics(settings.metrics.listen, metrics)
    # The tracking header's configured name ties a returned original back to its message.
    decoder = functools.partial(decode_report, header=settings.tracking.header)
    reports = ReportQueue(decoder, writer, metrics, log)
    deps = Deps(settings=settings, signer=signer, sink=writer, metrics=metrics, log=log,
                reports=reports)
    Milter.factory = functools.partial(Session, deps)
    log.info("milter_starting", socket=settings.milter.socket, database=_redact(
        settings.database.url), metrics=settings.metrics.listen or None,
        key_ids=list(signer.key_ids) if signer else [], config=settings.source)
    try:
        Milter.runmilter("trackmilter", settings.milter.socket, settings.milter.timeout)
    finally:
        reports.close(timeout=10.0)  # its events go to the writer: close it first
        writer.close(timeout=10.0)
        store.close()
        log.info("milter_stopped")
    return 0


def _redact(url: str) -> str:
    """Hide a password in a database URL before logging it."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url
