"""The pymilter callback layer: collects per-connection and per-transaction state, calls pure cores."""

from __future__ import annotations

import functools
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

import Milter

from trackmilter.config import Settings
from trackmilter.keyfile import WatchedSigner
from trackmilter.metrics import Metrics
from trackmilter.model import (
    Direction,
    EndReason,
    LinkRecord,
    MessageRecorded,
    RcptOutcome,
    RecipientRecord,
    SkipReason,
    new_tracking_id,
    utcnow,
)
from trackmilter.mta import policy
from trackmilter.mta.budget import Budget, report_cost, rewrite_cost, tune_malloc
from trackmilter.mta.report_queue import ReportQueue, decode_verp
from trackmilter.rewrite import RewriteOptions, RewriteResult, rewrite_message
from trackmilter.rewrite import SkipReason as PartSkip
from trackmilter.tokens import Signer, UnsignableURL, URLTooLong

F = TypeVar("F", bound=Callable[..., Any])

# pymilter is untyped: give its constants and decorators types once, here.
CONTINUE: int = Milter.CONTINUE


def noreply(func: F) -> F:
    """Tell the MTA not to wait for this callback's reply (Postfix: milter protocol 6)."""
    return cast(F, Milter.noreply(func))


def nocallback(func: F) -> F:
    """Tell the MTA not to call this callback at all."""
    return cast(F, Milter.nocallback(func))


class EventSink(Protocol):
    def submit(self, event: MessageRecorded) -> None: ...


@dataclass(frozen=True)
class Deps:
    """Everything a session needs, built once at start-up and shared read-only by all sessions."""

    settings: Settings
    # None: no base_url configured, nothing is rewritten. The milter's follows its key file
    # (trackmilter.keyfile); tests hand a fixed Signer.
    signer: Signer | WatchedSigner | None
    sink: EventSink
    metrics: Metrics
    log: Any
    clock: Callable[[], datetime] = utcnow
    reports: ReportQueue | None = None  # None: reports passing through are not decoded
    # Built from settings: message bytes in flight, shared by all sessions ([milter]
    # memory_budget); and whether any message gets rewritten at all.
    budget: Budget = field(init=False, compare=False)
    rewriting: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        m, t = self.settings.milter, self.settings.tracking
        object.__setattr__(self, "budget", Budget(m.memory_budget, m.memory_wait,
                                                  metrics=self.metrics))
        if m.memory_budget:
            tune_malloc()  # for RSS to follow the budget (before libmilter's threads start)
        object.__setattr__(self, "rewriting", self.signer is not None and (
            t.rewrite_links or t.text_links or t.open_pixel or t.honeypot))

    @functools.cached_property
    def rewrite_options(self) -> RewriteOptions:
        t = self.settings.tracking
        return RewriteOptions(
            html_links=t.rewrite_links,
            text_links=t.text_links,
            tracker_prefix=t.base_url + "/",
            excluded_domains=frozenset(t.excluded_domains),
            optout_attribute=t.optout_attribute,
        )


def guarded(stage: str) -> Callable[[F], F]:
    """One exception boundary per callback: log, count, mark the transaction, let mail through."""

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def inner(self: Session, *args: Any) -> Any:
            start = time.perf_counter()
            self.log.debug("callback", stage=stage)
            try:
                return func(self, *args)
            except Exception:  # noqa: BLE001 - the boundary: mail must never suffer for our bugs
                self.deps.metrics.errors.labels(stage).inc()
                if self.tx is not None:
                    self.tx.failed = True
                self.log.exception("callback_failed", stage=stage,
                                   tracking_id=self.tx.tracking_id if self.tx else None)
                return CONTINUE
            finally:
                m = self.deps.metrics
                m.child(m.callback_seconds, stage).observe(time.perf_counter() - start)

        return inner  # type: ignore[return-value]

    return wrap


@Milter.rejected_recipients
class Session(Milter.Base):  # type: ignore[misc]
    """One instance per SMTP connection; libmilter may call it from different threads in turn."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.conn_id = Milter.uniqueID()
        self.log = deps.log.bind(conn_id=self.conn_id)
        self.client_addr = ""
        self.client_name = ""
        self.helo = ""
        self.tx: policy.Transaction | None = None

    # --- connection ---
    # No @noreply before end of headers: Postfix 3.7 holds back events the milter need not
    # answer until one that needs a reply, and drops them when the client aborts first,
    # so a transaction abandoned after RCPT would never be seen (checked with a probe
    # milter). A reply costs one round trip on a unix socket.

    @guarded("connect")
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.client_name = hostname or ""
        if isinstance(hostaddr, tuple) and hostaddr:  # (ip, port[, flow, scope])
            self.client_addr = str(hostaddr[0])
        elif isinstance(hostaddr, str) and family in (socket.AF_INET, socket.AF_INET6):
            self.client_addr = hostaddr  # pymilter's TestCtx passes the bare address
        return CONTINUE

    @guarded("helo")
    def hello(self, hostname: str) -> int:
        self.helo = hostname or ""
        return CONTINUE

    # --- transaction ---

    @guarded("envfrom")
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._end_open_transaction(EndReason.ABORTED)
        sender = policy.normalise_address(mailfrom)
        auth = self.getsymval("{auth_authen}") or ""
        tx = policy.Transaction(tracking_id=new_tracking_id(), sender=sender,
                                started_at=self.deps.clock(), auth_user=auth,
                                envelope_id=policy.envelope_id(params),
                                reservation=self.deps.budget.reservation())
        tx.direction = policy.direction_of(self.client_addr, auth, sender,
                                           self.deps.settings.milter)
        self.tx = tx
        return CONTINUE

    @guarded("envrcpt")
    def envrcpt(self, to: str, *params: str) -> int:
        if self.tx is None:
            return CONTINUE
        address = policy.normalise_address(to)
        if self.getsymval("{rcpt_mailer}") == "error":
            # Postfix passes refusals to milters that ask (P_RCPT_REJ): the enhanced code in
            # {rcpt_host}, the reply text in {rcpt_addr}; the 3-digit code is not passed.
            rec = RecipientRecord(address, RcptOutcome.REFUSED,
                                  status=self.getsymval("{rcpt_host}") or "",
                                  text=self.getsymval("{rcpt_addr}") or "",
                                  at=self.deps.clock())
        else:
            rec = RecipientRecord(address, RcptOutcome.ACCEPTED, at=self.deps.clock())
        self.tx.recipients.append(rec)
        return CONTINUE

    @noreply
    @guarded("header")
    def header(self, name: str, value: str) -> int:
        tx = self.tx
        if tx is None:
            return CONTINUE
        key = name.lower()
        if key == "content-type":
            tx.content_type = value
        elif key == "content-transfer-encoding":
            tx.transfer_encoding = value
        elif key == "message-id":
            tx.message_id = policy.message_id_of(value)
        elif key == "dkim-signature":
            tx.dkim_signed = True
        elif key == self.deps.settings.milter.optout_header.lower():
            tx.opted_out = True
        elif key == self.deps.settings.tracking.header.lower():
            tx.already_tracked = True
        tx.headers.append((name, value))
        tx.size += len(name) + len(value) + 4
        return CONTINUE

    @noreply
    @guarded("body")
    def body(self, chunk: bytes) -> int:
        tx = self.tx
        if tx is None:
            return CONTINUE
        tx.size += len(chunk)
        keep = policy.keep_body(tx, self.deps.settings.milter, rewriting=self.deps.rewriting,
                                reports=self.deps.reports is not None)
        reservation = tx.reservation
        if keep is not None and tx.busy is None and reservation is not None:
            # Reserved as it arrives, for what it will cost up to end of message; waits
            # (libmilter's thread) when the budget is short, up to [milter] memory_wait.
            cost = rewrite_cost(chunk) if keep is policy.Keep.REWRITE else report_cost(chunk)
            if reservation.take(cost):
                tx.body.append(chunk)
                return CONTINUE
            tx.busy = keep
            self.log.warning("memory_busy", tracking_id=tx.tracking_id, keep=str(keep),
                             size=tx.size, waited=round(reservation.waited, 3),
                             in_flight=self.deps.budget.in_flight)
        tx.body.clear()
        if reservation is not None:
            reservation.release()
        return CONTINUE

    @guarded("eom")
    def eom(self) -> int:
        tx = self.tx
        if tx is None:
            return CONTINUE
        self.tx = None
        tx.queue_id = self.getsymval("i") or ""
        try:
            self._finish_message(tx)
            self._queue_report(tx)
        finally:
            tx.body.clear()
            if tx.reservation is not None:
                tx.reservation.release()
        return CONTINUE

    @guarded("abort")
    def abort(self) -> int:
        self._end_open_transaction(EndReason.ABORTED)
        return CONTINUE

    @guarded("close")
    def close(self) -> int:
        self._end_open_transaction(EndReason.ABORTED)
        return CONTINUE

    @nocallback
    def data(self) -> int:
        return CONTINUE

    @nocallback
    def unknown(self, cmd: str) -> int:
        return CONTINUE

    # --- internals ---

    def _queue_report(self, tx: policy.Transaction) -> None:
        """Hand a possible report to the decoder thread: decoding never delays the MTA."""
        reports, cfg = self.deps.reports, self.deps.settings.milter
        if reports is None or not policy.may_be_report(tx):
            return
        if tx.size > cfg.report_max_size:
            m = self.deps.metrics
            m.child(m.reports_skipped, "too_large").inc()
            return
        if tx.busy is not None:  # no room in the memory budget: not kept
            m = self.deps.metrics
            m.child(m.reports_skipped, "busy").inc()
            return
        # A bounce goes to one address: when it is a VERP address, it names the original
        # sender and recipient.
        verp = next((v for r in tx.recipients
                     if (v := decode_verp(r.address, cfg.verp_delimiters)) is not None), None)
        reports.submit(policy.raw_message(tx), queue_id=tx.queue_id, message_id=tx.message_id,
                       at=self.deps.clock(), mta=cfg.mta_name, verp=verp)

    def _finish_message(self, tx: policy.Transaction) -> None:
        start = time.perf_counter()
        cfg = self.deps.settings
        skip = policy.skip_reason(tx, cfg.milter)
        if skip is None and tx.failed:
            skip = SkipReason.ERROR
        if skip is None and policy.too_large(tx, cfg.milter):
            skip = SkipReason.TOO_LARGE
        if skip is None and tx.busy is policy.Keep.REWRITE:
            skip = SkipReason.BUSY  # not kept: passes unmodified, still gets the header
        result: RewriteResult | None = None
        declined: Counter[str] = Counter()  # links left as written, by reason
        header_added = False
        if tx.direction is Direction.OUTGOING and skip not in _NEVER_TOUCH:
            if skip is None and not tx.already_tracked:
                try:
                    result = self._rewrite(tx, declined)
                except Exception:  # noqa: BLE001 - pass the message through unmodified
                    self.deps.metrics.errors.labels("rewrite").inc()
                    self.log.exception("rewrite_failed", tracking_id=tx.tracking_id,
                                       queue_id=tx.queue_id)
                    skip = SkipReason.ERROR
                    declined.clear()
                else:
                    if result is None:
                        skip = SkipReason.DISABLED
                    elif result.body is None and not result.links:
                        skip = _unchanged_reason(result, declined)
            if not tx.already_tracked and skip is not SkipReason.ERROR:
                self.addheader(cfg.tracking.header, tx.tracking_id)
                header_added = True
                if cfg.tracking.read_receipts and tx.sender:
                    self.addheader("Disposition-Notification-To", f"<{tx.sender}>")
        rewritten = result is not None and result.body is not None
        links = tuple(LinkRecord(link.index, link.url) for link in result.links) if result else ()
        event = policy.finish(
            tx, end=EndReason.QUEUED, finished_at=self.deps.clock(),
            client_addr=self.client_addr, client_name=self.client_name, helo=self.helo,
            mta=cfg.milter.mta_name, rewritten=rewritten, skip=str(skip or ""),
            pixel=bool(result and result.pixel_added and cfg.tracking.open_pixel), links=links, tracking_header=header_added,
            record_headers=cfg.milter.record_headers,
        )
        self._record(event, time.perf_counter() - start, declined)

    def _rewrite(self, tx: policy.Transaction, declined: Counter[str]) -> RewriteResult | None:
        """Rewrite the body (and replace it); links the signer refuses are left as written
        and counted in `declined` by reason (metrics.LINK_SKIP_REASONS)."""
        signer = self.deps.signer
        t = self.deps.settings.tracking
        if signer is None or not self.deps.rewriting:
            return None
        prefix = t.base_url + "/c/"
        sign = signer.for_message(tx.tracking_id)
        growth = 0

        def linker(index: int, url: str) -> str:
            nonlocal growth
            try:
                new = prefix + sign.click(index, url)
            except URLTooLong:
                # The trackers would refuse its token (tokens.MAX_TOKEN_CHARS): a link that
                # answers 404 is worse than an untracked one. Declined, as below.
                declined["url_too_long"] += 1
                return url
            except UnsignableURL:
                # Not something a browser would fetch as http(s): returning the URL
                # unchanged declines it, and the engine leaves the link as written.
                declined["unsignable"] += 1
                return url
            growth += len(new) - len(url)
            return new

        pixel = f"{t.base_url}/o/{sign.open()}" if t.open_pixel else None
        # Link index 0 is the honeypot's (rewritten links count from 1); its target is the
        # tracker itself, so following it leads nowhere.
        honeypot = f"{prefix}{sign.click(0, t.base_url + '/')}" if t.honeypot else None
        result = rewrite_message(tx.content_type, tx.transfer_encoding, b"".join(tx.body),
                                 linker, pixel, self.deps.rewrite_options, honeypot)
        if result.body is not None:
            # Apply header change first: if replacebody fails, the MTA discards all changes.
            if result.top_cte is not None:
                self.chgheader("Content-Transfer-Encoding", 1, result.top_cte)
            self.replacebody(result.body)
            self.deps.metrics.link_growth.inc(max(0, growth))
        return result

    def _end_open_transaction(self, end: EndReason) -> None:
        tx, self.tx = self.tx, None
        if tx is None:
            return
        tx.body.clear()
        if tx.reservation is not None:
            tx.reservation.release()
        event = policy.finish(tx, end=end, finished_at=self.deps.clock(),
                              client_addr=self.client_addr, client_name=self.client_name,
                              helo=self.helo, mta=self.deps.settings.milter.mta_name,
                              record_headers=self.deps.settings.milter.record_headers)
        self._record(event, 0.0)

    def _record(self, event: MessageRecorded, seconds: float,
                links_skipped: Mapping[str, int] | None = None) -> None:
        m = self.deps.metrics
        action = ("rewritten" if event.rewritten else "tracked" if event.tracking_header
                  else "recorded") if event.end is EndReason.QUEUED else str(event.end)
        m.child(m.messages, str(event.direction), action).inc()
        for r in event.recipients:
            m.child(m.recipients, str(r.outcome), r.status).inc()
        if event.skip_reason:
            m.child(m.skips, event.skip_reason).inc()
        m.links_rewritten.inc(len(event.links))
        for reason, n in (links_skipped or {}).items():
            m.child(m.links_skipped, reason).inc(n)
        if event.pixel:
            m.pixels.inc()
        self.deps.sink.submit(event)
        # Fields named and valued as in the JSON API (end_reason; "" for an absent text).
        self.log.info(
            "message", mta=event.mta,
            queue_id=event.queue_id, tracking_id=event.tracking_id,
            message_id=event.message_id, direction=str(event.direction),
            end_reason=str(event.end),
            sender=event.sender, client_addr=event.client_addr, auth_user=event.auth_user,
            size=event.size,
            recipients=[{"address": r.address, "outcome": str(r.outcome),
                         **({"status": r.status, "text": r.text} if r.status or r.text else {})}
                        for r in event.recipients],
            links=len(event.links), pixel=event.pixel, rewritten=event.rewritten,
            skip_reason=str(event.skip_reason), ms=round(seconds * 1000, 3),
            links_skipped=dict(links_skipped or {}),
        )


def _unchanged_reason(result: RewriteResult, declined: Mapping[str, int]) -> SkipReason:
    """Why the engine left a message as it was: a part it could not read (charset), a link
    whose token would be too long, or no link to track."""
    if any(reason in PartSkip.CHARSET for _, reason in result.skipped):
        return SkipReason.CHARSET
    if declined.get("url_too_long"):
        return SkipReason.URL_TOO_LONG
    return SkipReason.NO_LINKS


# Categories where even a header would be a modification the sender or a signature forbids.
_NEVER_TOUCH = frozenset({SkipReason.NULL_SENDER, SkipReason.DKIM_SIGNED, SkipReason.ERROR,
                          SkipReason.SIGNED_OR_ENCRYPTED, SkipReason.OPT_OUT, SkipReason.INBOUND})
