"""`trackmilter edge`: hits answered by nginx (conf/nginx/trackmilter.lua), read from its
`trackmilter_hits` access log, verified again, judged and stored.

nginx verifies the token and answers (302 or the pixel) without Python; this daemon does
everything else the tracker does for a hit, with the same code (`TrackerApp.ingest`): the
verdict, [privacy] truncation, metrics, the batched writer with its spool, revisions. The
log is followed like the mail log (rotation, a saved position), and the position is saved
only once the hits read so far are stored or spooled; nginx's $request_id is the hit's id,
so a line read twice after a crash is stored once.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from trackmilter.config import Settings
from trackmilter.daemon import start_metrics
from trackmilter.follow import FileFollower, warn_lost
from trackmilter.keyfile import file_stamp
from trackmilter.lifecycle import Deadline
from trackmilter.logging import get_logger
from trackmilter.metrics import Metrics
from trackmilter.store.base import WriteHook
from trackmilter.tokens import KeyFileError, Signer
from trackmilter.web.networks import NetworkFileError, networks_from
from trackmilter.web.server import build

FORMAT_TAG = "tm2"
# The request headers logged after the user agent, in the log_format's order
# (conf/nginx/trackmilter-edge.conf): the app's evidence headers. Format tm1 (logs written
# with an older configuration) ends after "forwarded"; tm2 adds the client hints.
HEADER_FIELDS_TM1 = (
    "sec-purpose", "purpose", "x-purpose", "x-moz", "sec-fetch-mode", "sec-fetch-site",
    "sec-fetch-dest", "sec-fetch-user", "accept", "accept-language", "via", "from",
    "x-forwarded-for", "forwarded",
)
HEADER_FIELDS = (*HEADER_FIELDS_TM1, "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform",
                 "upgrade-insecure-requests")
_FORMATS = {"tm1": HEADER_FIELDS_TM1, FORMAT_TAG: HEADER_FIELDS}
FIELD_COUNT = 8 + len(HEADER_FIELDS)
ANSWERED = frozenset({200, 302})
_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


class BadLine(ValueError):
    """Not a line of the trackmilter_hits log format."""


@dataclass(frozen=True)
class EdgeHit:
    at: datetime
    request_id: str
    status: int
    method: str
    path: str
    client: str
    peer: str  # the connection's address before nginx's real-IP module
    user_agent: str
    headers: tuple[tuple[str, str], ...]  # only those the request had
    hints: bool = True  # the line's format logs the client hints (tm2)

    @property
    def hit_id(self) -> str:
        """The same for the same line, read twice: nginx's $request_id after the time in
        milliseconds (hex), so that ids grow with time and the store's index on them is
        appended to, not written all over."""
        return f"{int(self.at.timestamp() * 1000):x}{self.request_id}"


def _unescape(value: str) -> str:
    """nginx's default log escaping undone: "-" is an empty value, \\xHH a byte (read as
    Latin-1, as the tracker reads header bytes)."""
    if value == "-":
        return ""
    if "\\x" not in value:
        return value
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value)


def parse_line(line: str) -> EdgeHit | None:
    """One log line; None for a blank one. Raises BadLine for anything else."""
    if not line.strip():
        return None
    fields = line.rstrip("\r\n").split("\t")
    names = _FORMATS.get(fields[0])
    if names is None:
        raise BadLine(f"does not start with {FORMAT_TAG!r}: not the trackmilter_hits format")
    if len(fields) != 9 + len(names):
        raise BadLine(f"{len(fields) - 1} fields, {8 + len(names)} expected")
    _, msec, request_id, status, method, path, client, peer, ua, *rest = fields
    try:
        at = datetime.fromtimestamp(float(msec), UTC)
        code = int(status)
    except (ValueError, OverflowError) as exc:
        raise BadLine(f"bad time or status: {msec!r} {status!r}") from exc
    if not _REQUEST_ID.fullmatch(request_id):
        raise BadLine(f"bad request id {request_id!r}")
    headers = tuple((name, v[:512]) for name, raw in zip(names, rest, strict=True)
                    if (v := _unescape(raw)))
    return EdgeHit(at=at, request_id=request_id, status=code, method=_unescape(method),
                   path=_unescape(path), client=_unescape(client), peer=_unescape(peer),
                   user_agent=_unescape(ua), headers=headers, hints=names is HEADER_FIELDS)


class KeyWatcher:
    """[tracking] secret_file, read again when it changes: after a key rotation nginx
    (reloaded) accepts tokens of the new key, which this reader must verify too."""

    def __init__(self, path: Path, app: Any, log: Any) -> None:
        self._path, self._app, self._log = path, app, log
        self._seen = file_stamp(self._path)

    def reload_if_changed(self) -> bool:
        """True when the file changed and its keys are now the app's."""
        stamp = file_stamp(self._path)
        if stamp == self._seen:
            return False
        try:
            signer = Signer.from_file(self._path)
        except KeyFileError as exc:
            # The stamp is not taken: a file caught half-written is read again next time.
            self._log.error("edge_keys_not_reloaded", error=str(exc))
            return False
        self._seen = stamp
        self._app.set_signer(signer)
        self._log.info("edge_keys_reloaded", key_ids=list(signer.key_ids))
        return True


class Ingest:
    """What a block of log lines becomes: hits handed to the app (and so to its writer)."""

    def __init__(self, app: Any, metrics: Metrics, log: Any,
                 clock: Callable[[], float] = time.time, keys: KeyWatcher | None = None
                 ) -> None:
        self._app = app
        self._metrics = metrics
        self._log = log
        self._clock = clock
        self._keys = keys
        self._said: dict[str, float] = {}  # event -> when last logged
        self._unsaid: dict[str, int] = {}  # event -> occurrences since

    def _say(self, event: str, **kw: Any) -> None:
        """Log `event` at most once a minute, with how many were not logged meanwhile."""
        now = self._clock()
        if now - self._said.get(event, -1e18) < 60.0:
            self._unsaid[event] = self._unsaid.get(event, 0) + 1
            return
        self._said[event] = now
        self._log.error(event, also_since_last=self._unsaid.pop(event, 0), **kw)

    def consume(self, block: str) -> int:
        """Hits stored from `block` (every line is counted in trackmilter_edge_lines_total)."""
        m = self._metrics
        stored = 0
        last: datetime | None = None
        for line in block.splitlines():
            try:
                hit = parse_line(line)
            except BadLine as exc:
                m.child(m.edge_lines, "unreadable").inc()
                self._say("edge_line_unreadable", error=str(exc), line=line[:200])
                continue
            if hit is None:
                continue
            if hit.status not in ANSWERED:
                m.child(m.edge_lines, "refused").inc()
                continue
            try:
                ok = self._ingest(hit)
            except Exception as exc:  # noqa: BLE001 - one line never stops the reader
                m.child(m.edge_lines, "error").inc()
                self._say("edge_line_failed", error=repr(exc), line=line[:200])
                continue
            if ok:
                m.child(m.edge_lines, "hit").inc()
                stored += 1
                last = hit.at
            else:
                m.child(m.edge_lines, "invalid").inc()
                self._say("edge_token_refused", path=hit.path[:120],
                          hint="nginx answered a URL trackmilter does not accept: do both "
                               "read the same key file, and do nginx's locations match "
                               "[tracking] base_url's path? (the hit is not stored)")
        if last is not None:
            m.edge_lag.set(max(0.0, self._clock() - last.timestamp()))
        return stored

    def _ingest(self, hit: EdgeHit) -> bool:
        def once() -> bool:
            return bool(self._app.ingest(hit.path, hit.method, self._headers(hit),
                                         hit.client or None, hit.at, hit.hit_id,
                                         hints=hit.hints))

        # Refused: a key nginx knows and we do not? The key file may have been rotated.
        return once() or bool(self._keys and self._keys.reload_if_changed() and once())

    @staticmethod
    def _headers(hit: EdgeHit) -> Sequence[tuple[bytes, bytes]]:
        out = [(b"user-agent", hit.user_agent.encode("latin-1"))] if hit.user_agent else []
        out.extend((k.encode("ascii"), v.encode("latin-1")) for k, v in hit.headers)
        return out


def follow(follower: FileFollower, ingest: Ingest, writer: Any, log: Any,
           should_stop: Callable[[], bool], *, flush_timeout: float = 30.0,
           commit_interval: float = 1.0, max_pending: int = 5000,
           clock: Callable[[], float] = time.monotonic,
           tick: Callable[[], None] = lambda: None) -> None:
    """Read blocks until `should_stop()`. The position is saved only once the writer has
    stored or spooled every hit read before it (a crash re-reads from there; the hit ids
    make that harmless): when the log is caught up, and every `commit_interval` seconds
    while it is not, so reading and writing overlap in a backlog, and after `max_pending`
    hits, so reading never runs ahead of the writer by more than that."""
    last_commit = clock()
    pending = False
    hits = 0

    def commit() -> None:
        nonlocal last_commit, pending, hits
        if not writer.flush(timeout=flush_timeout):
            log.warning("edge_flush_incomplete", timeout=flush_timeout)
            return
        try:
            follower.commit()
        except OSError as exc:
            log.warning("edge_state_not_saved", error=str(exc))
        last_commit, pending, hits = clock(), False, 0

    try:
        while not should_stop():
            tick()
            block = follower.poll()
            if block:
                hits += ingest.consume(block)
                pending = True
                if hits >= max_pending or clock() - last_commit >= commit_interval:
                    commit()
                continue
            if pending:
                commit()
            follower.sleep(follower.poll_interval)
        if pending:
            commit()
    finally:
        follower.close()


def run(settings: Settings, *, hooks: Sequence[WriteHook]) -> int:
    """Follow [edge] log until SIGTERM/SIGINT; what was read is stored before exiting."""

    stop = [False]

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop[0] = True

    hup = [False]

    def _hup(signum: int, frame: FrameType | None) -> None:
        hup[0] = True

    # Before any thread starts: a stop asked for during start-up is a stop, not a kill.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _hup)
    log = get_logger(component="edge")
    metrics = Metrics.for_daemon("edge", edge_file=(settings.edge.log, settings.edge.state_file))
    e = settings.edge
    # nginx decided who the client is (its real-IP module): TrackerApp.ingest takes the
    # logged address as it is and never looks at forwarding headers again.
    app, writer, store, revisions = build(settings, metrics, hooks=hooks, spool_prefix="edge")
    start_metrics(e.metrics_listen, metrics)
    log.info("edge_starting", log=str(e.log), state_file=str(e.state_file),
             base_url=settings.tracking.base_url, key_ids=list(app.key_ids))
    follower = FileFollower(e.log, state_path=e.state_file, poll_interval=e.poll_interval,
                            on_lost=warn_lost(log, "edge_position_lost", e.log))
    try:
        keys = KeyWatcher(settings.tracking.secret_file, app, log)

        def reload() -> None:
            """SIGHUP: the key file and the network lists read again; a file that does not
            read keeps what is in use (logged)."""
            if not hup[0]:
                return
            hup[0] = False
            keys_changed = keys.reload_if_changed()
            try:
                app.set_networks(networks_from(settings))
            except (NetworkFileError, OSError) as exc:
                log.error("edge_networks_not_reloaded", error=str(exc))
                return
            log.info("edge_reloaded", networks=True, keys_changed=keys_changed,
                     key_ids=list(app.key_ids))

        follow(follower, Ingest(app, metrics, log, keys=keys), writer, log, lambda: stop[0],
               tick=reload)
    finally:
        deadline = Deadline(settings.store.stop_timeout)
        app.close()
        writer.flush(timeout=min(2.0, deadline.left()))  # a stalled store: close() decides
        revisions.close(timeout=deadline.left())
        counts = writer.close(timeout=deadline.left())
        store.close()
        log.info("edge_stopped", hits=counts.get("submitted", 0), stored=counts.get("written", 0),
                 left_on_disk=counts.get("on_disk", 0),
                 dropped=counts.get("dropped", 0))
    return 0
