"""`trackmilter web`: wire settings, signer, verdicts, store writer and metrics into the
tracker app, and serve it."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trackmilter.config import Settings
from trackmilter.config import load as load_settings
from trackmilter.daemon import StartupError, store_from
from trackmilter.judging import RevisionCounter, request_judge, reviser_from
from trackmilter.lifecycle import Deadline
from trackmilter.logging import configure as configure_logging
from trackmilter.logging import get_logger
from trackmilter.metrics import Metrics
from trackmilter.store.base import WriteHook
from trackmilter.store.writer import BatchWriter
from trackmilter.tokens import Signer
from trackmilter.web.api import Api, load_tokens
from trackmilter.web.app import TrackerApp
from trackmilter.web.forwarded import ClientResolver
from trackmilter.web.networks import networks_from
from trackmilter.web.rdns import ReverseDNS
from trackmilter.web.revisions import NotingStore, RevisionQueue


def claim_spool(base: Path, prefix: str = "web") -> tuple[Path, int]:
    """A spool directory no other live tracker process appends to: web-0, web-1, … each
    held by an flock for the life of the process (a restarted worker takes over, and
    replays, the directory its predecessor left)."""
    base.mkdir(parents=True, exist_ok=True)
    for n in range(1024):
        directory = base / f"{prefix}-{n}"
        directory.mkdir(exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        adopt_orphans(base, prefix, directory)
        return directory, fd  # the fd stays open: the lock lives as long as we do
    raise StartupError(f"no free spool directory under {base}")


def adopt_orphans(base: Path, prefix: str, own: Path) -> int:
    """Move the journal and spool segments of sibling directories no live process holds
    into ``own``, to be replayed by this process: a tracker restarted with fewer workers
    than before, or whose dead worker's directory is taken by nobody, still stores every
    hit its predecessors answered. Returns the number of segments moved."""
    moved = 0
    for directory in sorted(base.glob(f"{prefix}-*")):
        if directory == own or not directory.is_dir():
            continue
        try:
            fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process owns it (and replays it)
            for segment in sorted(directory.glob("spool-*.jsonl")):
                # Same file system: rename(2) is atomic; a segment some process still
                # appends to is flock'ed by it, and such a process would hold .lock too.
                try:
                    segment.rename(own / segment.name)
                    moved += 1
                except OSError:
                    continue
        finally:
            os.close(fd)
    return moved


def build(settings: Settings, metrics: Metrics, *, hooks: Sequence[WriteHook],
          spool_prefix: str = "web") -> tuple[TrackerApp, Any, Any, RevisionQueue]:
    """The app, its writer, store and revisions (the caller closes them); `hooks` go to the
    store (the webhook outbox, see trackmilter.wiring)."""
    t = settings.tracking
    if not t.base_url:
        raise StartupError("[tracking] base_url is empty: the tracker has no URLs to answer")
    signer = Signer.from_file(t.secret_file)
    log = get_logger(component="web")
    store = store_from(settings, hooks=(*hooks, RevisionCounter(metrics)),
                       reviser=reviser_from(settings))
    s = settings.store
    spool, _lock = claim_spool(s.spool_dir, spool_prefix)
    revisions = RevisionQueue(store, metrics, log)
    writer = BatchWriter.configured(NotingStore(store, revisions), spool, metrics, s, logger=log)
    w = settings.web
    api = Api(store, load_tokens(Path(w.api_token_file))) if w.api_token_file else None
    rdns = ReverseDNS() if w.reverse_dns else None
    app = TrackerApp(
        base_url=t.base_url, signer=signer, sink=writer, metrics=metrics,
        judge=request_judge(settings),
        resolver=ClientResolver(w.trusted_proxies, w.forwarded_header),
        networks=networks_from(settings), ready=lambda: bool(writer.healthy),
        ipv4_prefix=settings.privacy.ipv4_prefix, ipv6_prefix=settings.privacy.ipv6_prefix,
        name=w.name, api=api, rdns=rdns,
    )
    return app, writer, store, revisions


def worker_app(hooks: Callable[[Settings], Sequence[WriteHook]]) -> TrackerApp:
    """Granian's factory (through trackmilter.wiring.web_worker_app), called in every worker
    process: settings from the same file and environment as the parent, a writer, spool
    directory and revisions of its own; `hooks` gives the store's write hooks for them."""
    path = os.environ.get(CONFIG_ENV)
    settings = load_settings(Path(path) if path else None)
    configure_logging(settings.log.format, settings.log.level,
                    hash_addresses=settings.log.hash_addresses)
    metrics = Metrics.for_daemon("web")
    app, writer, store, revisions = build(settings, metrics, hooks=hooks(settings))
    log = get_logger(component="web")

    def shutdown() -> None:
        # Every hit answered is in the journal already; what the database takes within
        # the stop timeout is stored, the rest is replayed at the next start.
        deadline = Deadline(settings.store.stop_timeout)
        app.close()
        writer.flush(timeout=min(2.0, deadline.left()))  # a stalled store: close() decides
        revisions.close(timeout=deadline.left())
        counts = writer.close(timeout=deadline.left())
        store.close()
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            # Here: only multiprocess workers load it (it reads the variable when imported).
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
        log.info("web_worker_stopped", pid=os.getpid(), hits=counts.get("submitted", 0),
                 stored=counts.get("written", 0), left_on_disk=counts.get("on_disk", 0),
                 dropped=counts.get("dropped", 0))

    app.on_shutdown = shutdown
    log.info("web_worker_started", pid=os.getpid(), key_ids=list(app.key_ids))
    return app


# The config file path handed to the workers (they load it, and the environment, again):
# the variable `trackmilter --config` reads too.
CONFIG_ENV = "TRACKMILTER_CONFIG"


def run(settings: Settings, *, worker: str) -> int:
    """Serve with granian (ASGI, [web] workers processes) until SIGTERM/SIGINT; each worker
    writes or spools every hit it answered before it exits. `worker`: the workers' app
    factory, "module:function" (trackmilter.wiring.WEB_WORKER)."""
    # Here, not above: `trackmilter edge` builds the same app (build) and serves nothing.
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels

    log = get_logger(component="web")
    # Fail here, with the reason, rather than in every worker: key file, base URL, lists.
    build_check(settings)
    host, _, port = settings.web.listen.rpartition(":")
    if settings.source != "<defaults>":
        os.environ[CONFIG_ENV] = settings.source
    log.info("web_starting", listen=settings.web.listen, base_url=settings.tracking.base_url,
             workers=settings.web.workers,
             trusted_proxies=[str(n) for n in settings.web.trusted_proxies],
             config=settings.source)
    server = Granian(
        worker, factory=True, address=host.strip("[]"),
        port=int(port), interface=Interfaces.ASGI, workers=settings.web.workers,
        loop=Loops.uvloop, http=HTTPModes.http1, websockets=False, backlog=2048,
        log_level=LogLevels.warning, respawn_failed_workers=True,
    )
    server.serve()
    log.info("web_stopped")
    return 0


def build_check(settings: Settings) -> None:
    """What every worker will need, checked once in the parent."""
    if not settings.tracking.base_url:
        raise StartupError("[tracking] base_url is empty: the tracker has no URLs to answer")
    if settings.web.workers < 1:
        raise StartupError(f"[web] workers = {settings.web.workers}: at least 1")
    Signer.from_file(settings.tracking.secret_file)
    networks_from(settings)
    if settings.web.api_token_file:
        try:
            load_tokens(Path(settings.web.api_token_file))
        except (OSError, ValueError) as exc:
            raise StartupError(f"[web] api_token_file: {exc}") from exc
