"""Decode reports (DSN, MDN, ARF) seen by the milter on a worker thread, off the callback path."""

from __future__ import annotations

import dataclasses
import queue
import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from trackmilter.metrics import Metrics
from trackmilter.model import Event, ReportReceived, ReportRecipient, utcnow
from trackmilter.reports import decode

# raw message -> the report it holds (without the milter's own fields), or None.
Decoder = Callable[[bytes], ReportReceived | None]


DEFAULT_HEADER = "X-Trackmilter-ID"


def _tracking_id_in(raw: bytes, header: str) -> str:
    """Our tracking id under a configured header name, in the returned original (the
    decoder itself knows only the default name)."""
    pattern = re.compile(rb"^" + re.escape(header.encode("ascii")) + rb":[ \t]*([a-z2-7]{16})[ \t]*\r?$",
                         re.IGNORECASE | re.MULTILINE)
    m = pattern.search(raw)
    return m.group(1).decode("ascii").lower() if m else ""


def decode_report(raw: bytes, header: str = DEFAULT_HEADER) -> ReportReceived | None:
    """The project's decoder (trackmilter.reports), in the store's vocabulary."""
    report = decode(raw)
    if report is None or not report.recipients:
        return None
    return ReportReceived(
        report=report.kind,
        at=utcnow(),  # replaced by the time the milter saw it
        recipients=tuple(
            ReportRecipient(
                recipient=r.recipient or r.original_recipient,
                # What the report says happened: DSN Action, MDN disposition type, ARF type.
                action=r.feedback_type if report.kind == "arf" else r.action,
                status=r.status,
                replycode=r.replycode,
                reason=r.reason if report.kind == "dsn" else "",
                hardbounce=r.hardbounce if report.kind == "dsn" else False,
                # An MDN's whole Disposition (action and sending modes, modifiers) verbatim.
                text=r.disposition if report.kind == "mdn" else r.diagnostic,
                remote_mta=r.remote_mta,
                last_attempt=r.last_attempt_date,
                retry_until=r.will_retry_until,
            )
            for r in report.recipients
        ),
        tracking_id=report.tracking_id or (
            _tracking_id_in(raw, header) if header.lower() != DEFAULT_HEADER.lower() else ""),
        original_queue_id=report.postfix_queue_id,
        original_message_id=report.original_message_id,
        envelope_id=report.original_envelope_id,
        reporting_mta=report.reporting_mta,
    )


class Sink(Protocol):
    def submit(self, event: Event) -> None: ...


def decode_verp(address: str, delimiters: str) -> tuple[str, str] | None:
    """`owner+bob=example.net@lists.example.org` -> (owner@lists.example.org, bob@example.net).

    Postfix's XVERP splits at the first `+` and the last `=` of the local part; anything
    else (no delimiters configured, an ordinary address) is None.
    """
    if len(delimiters) != 2:
        return None
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at:
        return None
    plus, eq = delimiters[0], delimiters[1]
    prefix, sep, rest = local.partition(plus)
    rcpt_local, sep2, rcpt_domain = rest.rpartition(eq)
    if not (sep and sep2 and prefix and rcpt_local and rcpt_domain and domain):
        return None
    return f"{prefix}@{domain.lower()}", f"{rcpt_local}@{rcpt_domain.lower()}"


@dataclasses.dataclass(frozen=True)
class _Job:
    raw: bytes
    queue_id: str
    message_id: str
    at: datetime
    mta: str
    verp: tuple[str, str] | None


class ReportQueue:
    """A bounded queue and one worker: a callback only enqueues; when the worker falls
    behind, reports are counted and dropped rather than delaying mail."""

    def __init__(self, decode: Decoder, sink: Sink, metrics: Metrics, log: Any,
                 maxsize: int = 1000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._decode, self._sink, self._metrics, self._log = decode, sink, metrics, log
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize)
        # Memory is bounded by bytes too: a thousand reports of 1 MiB would be a gigabyte.
        self._max_bytes = max_bytes
        self._bytes = 0
        self._bytes_lock = threading.Lock()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="trackmilter-reports",
                                        daemon=True)
        self._thread.start()

    def submit(self, raw: bytes, *, queue_id: str, message_id: str, at: datetime,
               mta: str, verp: tuple[str, str] | None = None) -> None:
        with self._bytes_lock:
            if self._bytes + len(raw) > self._max_bytes:
                self._metrics.child(self._metrics.reports_skipped, "queue_full").inc()
                return
            self._bytes += len(raw)
        try:
            self._jobs.put_nowait(_Job(raw, queue_id, message_id, at, mta, verp))
        except queue.Full:
            self._release(len(raw))
            self._metrics.child(self._metrics.reports_skipped, "queue_full").inc()

    def close(self, timeout: float = 10.0) -> None:
        """Decode what is queued (up to ``timeout``), then stop the worker; what is left
        undecoded is counted and logged (the messages themselves were delivered)."""
        try:
            self._jobs.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._closing = True
        left = 0
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                left += 1
        if left:
            self._metrics.child(self._metrics.reports_skipped, "shutdown").inc(left)
            self._log.warning("reports_abandoned", count=left, reason="shutdown timeout")

    def _release(self, n: int) -> None:
        with self._bytes_lock:
            self._bytes -= n

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._closing:
                return
            try:
                self._handle(job)
            finally:
                self._release(len(job.raw))

    def _handle(self, job: _Job) -> None:
        m = self._metrics
        try:
            report = self._decode(job.raw)
        except Exception:  # noqa: BLE001 - a decoder bug must not stop the worker
            m.child(m.errors, "report").inc()
            m.child(m.reports_skipped, "error").inc()
            self._log.exception("report_decode_failed", queue_id=job.queue_id)
            return
        if report is None:
            m.child(m.reports_skipped, "not_a_report").inc()
            return
        sender, recipient = job.verp or ("", "")
        event = dataclasses.replace(report, report_queue_id=job.queue_id,
                                    report_message_id=job.message_id, at=job.at, mta=job.mta,
                                    verp_sender=sender, verp_recipient=recipient)
        self._sink.submit(event)
        m.child(m.reports, event.report).inc()
        for r in event.recipients:
            # The action (a DSN's Action, an MDN's disposition type, an ARF report's
            # feedback type) is from outside: Metrics.child counts a value outside its
            # RFC's set as "other".
            m.child(m.report_recipients, event.report, r.action or "none",
                    r.reason or "none").inc()
        # Named and valued as the JSON API has them: Message-IDs without <>, "" when absent.
        self._log.info(
            "report", kind=event.report, queue_id=job.queue_id, mta=event.mta,
            tracking_id=event.tracking_id,
            original_queue_id=event.original_queue_id,
            original_message_id=event.original_message_id.strip().strip("<>"),
            recipients=[{"address": r.recipient, "action": r.action, "status": r.status,
                         "reason": r.reason} for r in event.recipients],
        )
