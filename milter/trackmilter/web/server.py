"""`trackmilter web`: wire settings, signer, verdicts, store writer and metrics into the
tracker app, and serve it."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from trackmilter.config import Settings
from trackmilter.logging import get_logger
from trackmilter.metrics import Metrics
from trackmilter.tokens import Signer
from trackmilter.web.app import TrackerApp
from trackmilter.web.forwarded import ClientResolver
from trackmilter.web.revisor import Revisor


class StartupError(Exception):
    """The tracker cannot start; the message says what to fix."""


def claim_spool(base: Path) -> tuple[Path, int]:
    """A spool directory no other live tracker process appends to: web-0, web-1, … each
    held by an flock for the life of the process (a restarted worker takes over, and
    replays, the directory its predecessor left)."""
    base.mkdir(parents=True, exist_ok=True)
    for n in range(1024):
        directory = base / f"web-{n}"
        directory.mkdir(exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return directory, fd  # the fd stays open: the lock lives as long as we do
    raise StartupError(f"no free spool directory under {base}")


def build(settings: Settings, metrics: Metrics) -> tuple[TrackerApp, Any, Any, Revisor]:
    """The app, its writer, store and revisor (the caller closes them)."""
    from trackmilter.store import SQLStore
    from trackmilter.store.writer import BatchWriter
    from trackmilter.web.judging import networks_from, request_judge, reviser_from

    t = settings.tracking
    if not t.base_url:
        raise StartupError("[tracking] base_url is empty: the tracker has no URLs to answer")
    signer = Signer.from_file(t.secret_file)
    log = get_logger(component="web")
    store = SQLStore(settings.database.url, reviser=reviser_from(settings))
    s = settings.store
    spool, _lock = claim_spool(s.spool_dir)
    writer = BatchWriter(store, spool, metrics, max_batch=s.batch_size,
                         flush_interval=s.flush_interval, retry_interval=s.retry_interval,
                         logger=log)
    revisor = Revisor(store, metrics, log)
    w = settings.web
    app = TrackerApp(
        base_url=t.base_url, signer=signer, sink=writer, metrics=metrics,
        judge=request_judge(settings), resolver=ClientResolver(w.trusted_proxies),
        networks=networks_from(settings), ready=lambda: bool(writer.healthy),
        ipv4_prefix=settings.privacy.ipv4_prefix, ipv6_prefix=settings.privacy.ipv6_prefix,
        name=w.name, note=revisor.note,
    )
    return app, writer, store, revisor


def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; then write (or spool) every hit answered."""
    import uvicorn

    log = get_logger(component="web")
    metrics = Metrics()
    app, writer, store, revisor = build(settings, metrics)
    host, _, port = settings.web.listen.rpartition(":")
    config = uvicorn.Config(
        app, host=host.strip("[]"), port=int(port), lifespan="on", access_log=False,
        log_config=None, proxy_headers=False, server_header=False, date_header=True,
        loop="auto", http="auto",
    )
    log.info("web_starting", listen=settings.web.listen, base_url=settings.tracking.base_url,
             trusted_proxies=[str(n) for n in settings.web.trusted_proxies],
             key_ids=list(app.key_ids), config=settings.source)
    try:
        uvicorn.Server(config).run()
    finally:
        writer.flush(timeout=10.0)
        revisor.close(timeout=10.0)
        writer.close(timeout=10.0)
        store.close()
        log.info("web_stopped")
    return 0
