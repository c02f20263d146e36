"""Start the milter daemon: wire settings, signer, store writer and metrics, then hand over to libmilter."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import Milter

from trackmilter.config import Settings
from trackmilter.daemon import StartupError, load_signer, start_metrics, store_from
from trackmilter.judging import reviser_from
from trackmilter.lifecycle import Deadline, InFlight, block_stop_signals
from trackmilter.logging import get_logger
from trackmilter.metrics import Metrics
from trackmilter.mta.report_queue import ReportQueue, decode_report
from trackmilter.mta.session import Deps, Session
from trackmilter.rewrite import native as rewrite_engine
from trackmilter.store.base import WriteHook
from trackmilter.store.writer import BatchWriter


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


# libmilter's listener checks for a stop every MI_CHK_TIME seconds (listener.c).
_LISTENER_POLL = 5.0

# The callbacks a stop waits for (pymilter's *_bytes variants call these). Header and
# body callbacks are left out: they are no-reply and quick, ten or more a message, and one
# cut short costs nothing — the transaction is then tempfailed and sent again.
_CALLBACKS = ("connect", "hello", "envfrom", "envrcpt", "eom", "abort", "close")


def counted_session(inflight: InFlight) -> type[Session]:
    """Session whose callbacks count in ``inflight`` while they run, so that a stop waits
    for a callback in flight (an end of message replacing a body) before the process exits.

    libmilter, once stopped, ends each connection's thread at its next command without
    another callback: a transaction still open then is cut short, and Postfix applies the
    milter's default_action to it (tempfail: the client sends it again). A callback already
    running is not interrupted; it is what this waits for.
    """

    def counting(func: Any) -> Any:
        @functools.wraps(func)  # keeps pymilter's milter_protocol (noreply) attributes
        def inner(self: Session, *args: Any) -> Any:
            inflight.enter()
            try:
                return func(self, *args)
            finally:
                inflight.leave()

        return inner

    return type("CountedSession", (Session,),
                {name: counting(getattr(Session, name)) for name in _CALLBACKS})


def run(settings: Settings, *, hooks: Sequence[WriteHook]) -> int:
    """Run until SIGTERM/SIGINT; then let transactions in flight finish and store what was
    recorded, within [store] stop_timeout, and exit 0."""
    # First: every thread started below inherits the block, so SIGTERM reaches libmilter's
    # signal thread and never kills the process by its default action.
    block_stop_signals()

    log = get_logger(component="milter")
    metrics = Metrics.for_daemon("milter", mta=settings.milter.mta_name)
    signer = load_signer(settings, log)
    if signer is None:
        log.warning("tracking_disabled", reason="[tracking] base_url is empty: "
                    "messages are recorded and get a tracking header, links are not rewritten")
    prepare_socket(settings.milter.socket)
    # `hooks` (the webhook outbox, trackmilter.wiring): in the transaction storing the events.
    # The reviser: a message stored after its delivery lines (replayed from the journal)
    # ties them to it, and its tracker hits, stored meanwhile, are judged again with the
    # delivery time and the link count only this record brings (store/backfill.py).
    store = store_from(settings, hooks=hooks, reviser=reviser_from(settings))
    writer = BatchWriter.configured(store, settings.store.spool_dir, metrics, settings.store,
                                    logger=log)
    start_metrics(settings.metrics.listen, metrics)
    # The tracking header's configured name ties a returned original back to its message.
    decoder = functools.partial(decode_report, header=settings.tracking.header)
    reports = ReportQueue(decoder, writer, metrics, log)
    deps = Deps(settings=settings, signer=signer, sink=writer, metrics=metrics, log=log,
                reports=reports)
    inflight = InFlight()
    Milter.factory = functools.partial(counted_session(inflight), deps)
    log.info("milter_starting", socket=settings.milter.socket, database=_redact(
        settings.database.url), metrics=settings.metrics.listen or None,
        key_ids=list(signer.key_ids) if signer else [], config=settings.source,
        stop_timeout=settings.store.stop_timeout, engine=rewrite_engine.ENGINE,
        engine_note=rewrite_engine.NOTE)
    try:
        Milter.runmilter("trackmilter", settings.milter.socket, settings.milter.timeout)
    finally:
        stop_stats = _stop(settings, inflight, reports, writer, log)
        store.close()
        log.info("milter_stopped", **stop_stats)
    return 0


def _stop(settings: Settings, inflight: InFlight, reports: Any, writer: Any, log: Any
          ) -> dict[str, Any]:
    """libmilter has stopped listening and ends each connection at its next command. Let
    the callbacks in flight finish, then decode queued reports and store what was recorded;
    what the database does not take in time stays on disk (the journal) for the next start."""
    # libmilter's listener notices the stop only when its poll wakes (MI_CHK_TIME, 5 s):
    # count that time in, so that the process is gone within stop_timeout of the signal.
    deadline = Deadline(settings.store.stop_timeout - _LISTENER_POLL)
    in_flight = inflight.count
    log.info("milter_stopping", callbacks_in_flight=in_flight,
             timeout=settings.store.stop_timeout)
    idle = inflight.wait_idle(deadline.left(0.0))
    # Its events go to the writer: close it first. Its close may take twice the timeout
    # given (a put, then a join), hence half of what is left.
    reports.close(timeout=deadline.left() / 2)
    counts = writer.close(timeout=deadline.left())
    return {"callbacks": inflight.finished, "cut_short": 0 if idle else inflight.count,
            "events": counts.get("submitted", 0), "stored": counts.get("written", 0),
            "left_on_disk": counts.get("on_disk", 0), "dropped": counts.get("dropped", 0)}


def _redact(url: str) -> str:
    """Hide a password in a database URL before logging it."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url
