"""Every Prometheus metric trackmilter exports, defined once; each daemon's registry holds
only the families it counts (``Metrics.for_daemon``), and every label value is from a
closed set (``Metrics.child`` maps anything else to ``other``)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from trackmilter import __version__
from trackmilter.model import DeliveryStatus, SkipReason
from trackmilter.verdict import TEXTS, Verdict

# A counter's `_created` series doubles the series count for a value nobody graphs (the
# process start is in process_start_time_seconds). Process-wide, as prometheus-client has it.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Milter callbacks should take well under a millisecond; Postfix's default
# milter_command_timeout is 30 s, so the top buckets show trouble long before that.
CALLBACK_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5)
# Delivery delays: from a local hand-off (ms) to a message retried for days.
DELAY_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 5 * 86400)
# Stages of trackmilter_errors_total: the milter callbacks, link rewriting, report decoding.
ERROR_STAGES = ("connect", "helo", "envfrom", "envrcpt", "header", "body", "eom", "abort",
                "close", "rewrite", "report")
# Why a link was left as written though it is an http(s) link the milter would track:
# its token would be longer than the trackers accept (tokens.MAX_TOKEN_CHARS), or it is
# not a URL a browser would fetch as we would sign it (an internationalised host...).
LINK_SKIP_REASONS = ("url_too_long", "unsignable")
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

# -- label vocabularies -------------------------------------------------------------------
# A label value that comes from outside (a remote server's reply, an inbound report, a
# request) is counted under its own name only when it is in one of these closed sets, else
# under OTHER: a remote sender must never be able to create series.

OTHER = "other"
# RFC 3464 §2.3.3: a DSN's Action field.
DSN_ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
# RFC 8098 §3.2.6.2: an MDN's disposition type.
MDN_DISPOSITIONS = frozenset({"displayed", "deleted", "dispatched", "processed"})
# RFC 5965 §7.3 and RFC 6591 §3: an ARF report's Feedback-Type.
ARF_FEEDBACK_TYPES = frozenset({"abuse", "fraud", "virus", "other", "not-spam",
                                "auth-failure"})
REPORT_KINDS = frozenset({"dsn", "mdn", "arf"})
REPORT_ACTIONS: Mapping[str, frozenset[str]] = {
    "dsn": DSN_ACTIONS, "mdn": MDN_DISPOSITIONS, "arf": ARF_FEEDBACK_TYPES}
# sisimai's bounce reasons (the vocabulary of trackmilter.reports.reason), and "none".
BOUNCE_REASONS = frozenset({
    "authfailure", "badreputation", "blocked", "contenterror", "delivered", "exceedlimit",
    "expired", "failedstarttls", "feedback", "filtered", "hasmoved", "hostunknown",
    "mailboxfull", "mailererror", "mesgtoobig", "networkerror", "norelaying", "notaccept",
    "notcompliantrfc", "onhold", "policyviolation", "ratelimited", "rejected", "requireptr",
    "securityerror", "spamdetected", "speeding", "suppressed", "suspend", "syntaxerror",
    "systemerror", "systemfull", "toomanyconn", "undefined", "userunknown", "vacation",
    "virusdetected", "none"})
# IANA's registry of SMTP enhanced status codes (RFC 3463, 3886, 4468, 4954, 5248, 6531,
# 6710, 7293, 7372, 7505, 8689...): subject.detail, under class 2, 4 or 5. A code outside
# it (a provider's own, such as 5.7.606) is counted as "other"; its text is in the log.
_REGISTERED_DETAILS = {0: 0, 1: 10, 2: 4, 3: 6, 4: 7, 5: 6, 6: 10, 7: 30}
ENHANCED_CODES = frozenset(
    f"{cls}.{subject}.{detail}"
    for cls in (2, 4, 5)
    for subject, last in _REGISTERED_DETAILS.items()
    for detail in range(last + 1)
) | {""}  # "": no code (an accepted recipient, a log line without dsn=)
VERDICT_REASONS = frozenset(TEXTS)
TARGETS = frozenset({"click", "open"})
VERDICTS = frozenset(str(v) for v in Verdict)
DELIVERY_OUTCOMES = frozenset(str(s) for s in DeliveryStatus)


def _closed(allowed: Iterable[str]) -> Callable[[str], str]:
    closed = frozenset(allowed)

    def bound(value: str) -> str:
        return value if value in closed else OTHER

    return bound


def _report_labels(values: tuple[str, ...]) -> tuple[str, ...]:
    """(kind, action, reason) of trackmilter_reports_recipients_total: the action in its
    kind's closed set (DSN action, MDN disposition, ARF feedback type), "none" when the
    report stated none."""
    kind, action, reason = values
    kind = kind if kind in REPORT_KINDS else OTHER
    action = action.strip().lower()
    if action != "none" and action not in REPORT_ACTIONS.get(kind, ()):
        action = OTHER
    return kind, action, reason if reason in BOUNCE_REASONS else OTHER


# -- families -------------------------------------------------------------------------------
# Which metrics each daemon exports (besides trackmilter_build_info and the process_* /
# python_* collectors). A family not asked for is still an attribute (code shared between
# daemons may count into it) but on a registry nobody scrapes.
FAMILIES = ("milter", "reports", "maillog", "tracker", "tracker_requests", "edge",
            "revisions", "store", "webhooks")
DAEMONS: Mapping[str, frozenset[str]] = {
    "milter": frozenset({"milter", "reports", "store"}),
    "maillog": frozenset({"maillog", "revisions", "store"}),
    "web": frozenset({"tracker", "tracker_requests", "revisions", "store"}),
    "edge": frozenset({"tracker", "edge", "revisions", "store"}),
    "webhooks": frozenset({"webhooks"}),
}


class FollowerLag(Collector):
    """trackmilter_<reader>_unread_seconds and _unread_bytes (reader: maillog, edge), read
    at each scrape from the log file and the position the reader saved (its `log`/`path`
    and `state_file`): how far behind the log it is, whatever it is doing (stuck, slow, or
    waiting for the database).

    A reader saves its position after each block it handed to the store, so while the log
    holds lines after that position, the seconds since the save are how long it has gone
    without catching up. No samples while there is no saved position (first start,
    standard input)."""

    # The position's fields at the start of the state file (trackmilter.follow.save_position
    # writes them first; the consumer's state after them may be large, so it is not read).
    _FIELD = {k: re.compile(rb'"%s": (\d+)' % k.encode()) for k in ("device", "inode", "offset")}

    def __init__(self, reader: str, log_file: str | Path | None, state_file: str | Path | None,
                 clock: Callable[[], float] = time.time) -> None:
        self._reader = reader
        self._log = Path(log_file) if log_file not in (None, "", "-") else None
        self._state = Path(state_file) if state_file else None
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        who = {"maillog": "the maillog follower", "edge": "trackmilter edge"}[self._reader]
        seconds = GaugeMetricFamily(
            f"trackmilter_{self._reader}_unread_seconds",
            f"Seconds since {who} last saved its position while its log holds lines after "
            "it (0: it has read the whole log)")
        unread = GaugeMetricFamily(
            f"trackmilter_{self._reader}_unread_bytes",
            f"Bytes of its log after the position {who} saved")
        measured = self.measure()
        if measured is not None:
            seconds.add_metric([], measured[0])
            unread.add_metric([], measured[1])
        yield seconds
        yield unread

    def measure(self) -> tuple[float, int] | None:
        if self._log is None or self._state is None:
            return None
        try:
            with self._state.open("rb") as f:
                head = f.read(512)
                saved_at = os.fstat(f.fileno()).st_mtime
            log = self._log.stat()
        except OSError:
            return None
        fields = {k: m.group(1) for k, r in self._FIELD.items() if (m := r.search(head))}
        if len(fields) != len(self._FIELD):
            return None
        offset = int(fields["offset"])
        if (log.st_dev, log.st_ino) == (int(fields["device"]), int(fields["inode"])) \
                and log.st_size >= offset:
            behind = log.st_size - offset
        else:  # rotated or truncated: all of the file at the path is still to read
            behind = log.st_size
        if behind == 0:
            return 0.0, 0
        return max(0.0, self._clock() - saved_at), behind


_M = TypeVar("_M", Counter, Gauge, Histogram)


class _Unexported:
    """A metric of a family this process does not export: every call (labels, inc, set,
    observe...) does nothing, and labels() is itself."""

    def labels(self, *args: Any, **kwargs: Any) -> _Unexported:
        return self

    def __getattr__(self, name: str) -> Callable[..., None]:
        return _nothing


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class Metrics:
    """The metrics of one process. Tests build one per test on a fresh ``CollectorRegistry``
    (every family); the daemons use ``Metrics.for_daemon``."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 families: Iterable[str] = FAMILIES, standard: bool = False,
                 maillog_file: tuple[str | Path, str | Path] | None = None,
                 edge_file: tuple[str | Path, str | Path] | None = None,
                 mta: str = "", engine: str = "") -> None:
        """`families`: those this registry exports (FAMILIES); `standard`: add the process_*
        and python_* collectors; `maillog_file`, `edge_file`: ([maillog] path, state_file),
        ([edge] log, state_file), for how far behind their logs the readers are; `mta`: the MTA this process serves ([milter] / [maillog] mta_name),
        a label of trackmilter_build_info (dashboards choose instances by it); `engine`: the
        milter's rewriting engine (native|python), a label of it too."""
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        wanted = frozenset(families)
        if unknown := wanted - set(FAMILIES):
            raise ValueError(f"unknown metric families: {sorted(unknown)}")
        self.families = wanted
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._bounds: dict[int, Callable[[tuple[str, ...]], tuple[str, ...]]] = {}

        def reg(family: str) -> CollectorRegistry | None:
            """None: a family not asked for, whose metrics count nothing (`_new`)."""
            return self.registry if family in wanted else None

        if standard:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        # A gauge, not an Info: the same exposition, and it works in multiprocess mode too.
        # The tracker, edge and the webhook sender serve no MTA: no mta label.
        info = {"version": __version__, **({"mta": mta} if mta else {}),
                **({"engine": engine} if engine else {})}
        self.build_info = Gauge(
            "trackmilter_build_info",
            "trackmilter version, and the MTA the process serves ([milter] / [maillog] "
            "mta_name) for the milter and the log follower",
            list(info), registry=self.registry, multiprocess_mode="max")
        self.build_info.labels(**info).set(1)

        # milter
        r = reg("milter")
        self.messages = self._new(
            Counter,
            "trackmilter_milter_messages_total",
            "SMTP transactions seen by the milter, by direction and what was done to them",
            ["direction", "action"],
            registry=r,
        )
        self.recipients = self._new(
            Counter,
            "trackmilter_milter_recipients_total",
            "Recipients by in-line outcome at our MTA (accepted, refused) and enhanced status "
            "code of a refusal (IANA's registered codes, else other)",
            ["outcome", "enhanced_code"],
            registry=r,
        )
        self._bound(self.recipients, None, _closed(ENHANCED_CODES))
        self.links_rewritten = self._new(
            Counter,
            "trackmilter_milter_links_rewritten_total",
            "Links replaced by signed tracking links",
            registry=r,
        )
        self.links_skipped = self._new(
            Counter,
            "trackmilter_milter_links_skipped_total",
            "Links left as written in messages that were tracked, by reason: url_too_long "
            "(the token would be longer than the trackers accept), unsignable (e.g. an "
            "internationalised host)",
            ["reason"],
            registry=r,
        )
        self._bound(self.links_skipped, _closed(LINK_SKIP_REASONS))
        self.pixels = self._new(
            Counter,
            "trackmilter_milter_pixels_added_total", "Open pixels added", registry=r
        )
        self.skips = self._new(
            Counter,
            "trackmilter_milter_skipped_total",
            "Outgoing or inbound messages left unmodified, by reason",
            ["reason"],
            registry=r,
        )
        self._bound(self.skips, _closed(str(s) for s in SkipReason))
        self.callback_seconds = self._new(
            Histogram,
            "trackmilter_milter_callback_duration_seconds",
            "Time spent inside each milter callback",
            ["callback"],
            buckets=CALLBACK_BUCKETS,
            registry=r,
        )
        self.errors = self._new(
            Counter,
            "trackmilter_errors_total",
            "Internal errors caught at an exception boundary; mail passed through unmodified",
            ["stage"],
            registry=r,
        )
        self._bound(self.errors, _closed(ERROR_STAGES))
        self.link_growth = self._new(
            Counter,
            "trackmilter_milter_link_growth_bytes_total",
            "Bytes tracking links added over the original URLs (divide by links rewritten "
            "for the mean overhead per link)",
            registry=r,
        )
        # [milter] memory_budget: what buffered bodies and their rewriting may cost
        self.memory_budget = self._new(
            Gauge,
            "trackmilter_milter_memory_budget_bytes",
            "The milter's budget for message bytes in flight ([milter] memory_budget; 0: "
            "no limit)",
            registry=r,
        )
        self.memory_reserved = self._new(
            Gauge,
            "trackmilter_milter_memory_reserved_bytes",
            "Bytes reserved now by messages in flight (their buffered bodies and what "
            "rewriting them will cost)",
            registry=r,
        )
        self.memory_waits = self._new(
            Counter,
            "trackmilter_milter_memory_waits_total",
            "Times a message waited for room in the memory budget (those that got none in "
            "time are skipped with reason busy)",
            registry=r,
        )

        # reports (DSN, MDN, ARF) seen by the milter
        r = reg("reports")
        self.reports = self._new(
            Counter,
            "trackmilter_reports_total",
            "Reports (dsn, mdn, arf) decoded from mail passing through the milter",
            ["kind"],
            registry=r,
        )
        self._bound(self.reports, _closed(REPORT_KINDS))
        self.reports_skipped = self._new(
            Counter,
            "trackmilter_reports_skipped_total",
            "Possible reports not decoded, by reason (not_a_report, too_large, queue_full, "
            "error, shutdown, busy: no room in the memory budget)",
            ["reason"],
            registry=r,
        )
        self.report_recipients = self._new(
            Counter,
            "trackmilter_reports_recipients_total",
            "Recipients named by decoded reports, by kind (dsn, mdn, arf), action (RFC 3464 "
            "DSN action, RFC 8098 MDN disposition, ARF feedback type; other: anything else, "
            "none: not stated) and bounce reason (sisimai's vocabulary)",
            ["kind", "action", "reason"],
            registry=r,
        )
        self._bounds[id(self.report_recipients)] = _report_labels

        # maillog follower
        r = reg("maillog")
        self.maillog_lines = self._new(
            Counter, "trackmilter_maillog_lines_total", "Log lines read by the maillog follower",
            registry=r,
        )
        self.maillog_unparsed = self._new(
            Counter,
            "trackmilter_maillog_unparsed_lines_total",
            "Lines that look like delivery outcomes (status= / stat=) but could not be parsed",
            registry=r,
        )
        self.maillog_deliveries = self._new(
            Counter,
            "trackmilter_maillog_deliveries_total",
            "Per-recipient delivery outcomes read from the MTA log (also for mail the milter "
            "never saw), by outcome (sent, deferred, bounced, expired)",
            ["outcome"],
            registry=r,
        )
        self._bound(self.maillog_deliveries, _closed(DELIVERY_OUTCOMES))
        # delivery (what the next hop answered, from the MTA's log)
        self.delivery_outcomes = self._new(
            Counter,
            "trackmilter_delivery_outcomes_total",
            "Per-recipient delivery outcomes by outcome (Postfix's status=: sent, deferred, "
            "bounced, expired), enhanced status code (Postfix's dsn=; IANA's registered "
            "codes, else other) and recipient provider ([metrics] providers, else other)",
            ["outcome", "enhanced_code", "provider"],
            registry=r,
        )
        self._bound(self.delivery_outcomes, _closed(DELIVERY_OUTCOMES),
                    _closed(ENHANCED_CODES), None)
        self.delivery_delay = self._new(
            Histogram,
            "trackmilter_delivery_delay_seconds",
            "Time from arrival to this delivery attempt's outcome (Postfix's delay=), by "
            "outcome",
            ["outcome"],
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self._bound(self.delivery_delay, _closed(DELIVERY_OUTCOMES))
        if r is not None:  # without a log file: the families are known, with no samples
            r.register(FollowerLag("maillog", *(maillog_file or (None, None))))

        # webhooks (endpoint labels: the configured URLs without credentials or query)
        r = reg("webhooks")
        self.webhook_deliveries = self._new(
            Counter,
            "trackmilter_webhook_deliveries_total",
            "Webhook POSTs by endpoint and outcome (delivered, retry, gave_up)",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.webhook_queue = self._new(
            Gauge,
            "trackmilter_webhook_queue_events",
            "Events waiting in the webhook outbox, by endpoint",
            ["endpoint"],
            registry=r,
            multiprocess_mode="max",
        )

        # tracker (the tracker's app, also in `trackmilter edge`)
        r = reg("tracker")
        self.hits = self._new(
            Counter,
            "trackmilter_tracker_hits_total",
            "Clicks and opens answered by the tracker, by the verdict given when answering (the "
            "first answer; later changes: trackmilter_tracker_verdict_revisions_total)",
            ["target", "verdict"],
            registry=r,
        )
        self._bound(self.hits, _closed(TARGETS), _closed(VERDICTS))
        self.hit_reasons = self._new(
            Counter,
            "trackmilter_tracker_hit_reasons_total",
            "Reasons behind the tracker's verdicts (a hit may have several; the reason codes "
            "of trackmilter.verdict, else other)",
            ["target", "reason"],
            registry=r,
        )
        self._bound(self.hit_reasons, _closed(TARGETS), _closed(VERDICT_REASONS))
        self.invalid_tokens = self._new(
            Counter,
            "trackmilter_tracker_invalid_tokens_total",
            "Requests for tracking URLs whose token did not verify (answered 404)",
            ["target"],
            registry=r,
        )
        self._bound(self.invalid_tokens, _closed(TARGETS))
        self.request_seconds = self._new(
            Histogram,
            "trackmilter_tracker_request_duration_seconds",
            "Time to answer a tracking URL inside the application (verify, judge, queue the "
            "hit), by target",
            ["target"],
            buckets=CALLBACK_BUCKETS,
            registry=reg("tracker_requests"),
        )
        self._bound(self.request_seconds, _closed(TARGETS))
        r = reg("edge")
        self.edge_lines = self._new(
            Counter,
            "trackmilter_edge_lines_total",
            "Lines of nginx's hit log read by `trackmilter edge`, by outcome: hit (verified, "
            "judged and queued for the store writer; trackmilter_store_events_written_total "
            "counts what reached the database), refused (nginx answered 404/405, nothing to "
            "store), invalid (the token did not verify here, even with the key file read "
            "again: keys differ between nginx and trackmilter), unreadable (not the "
            "trackmilter_hits log format), error (the hit could not be judged or queued; "
            "logged)",
            ["outcome"],
            registry=r,
        )
        self.edge_lag = self._new(
            Gauge,
            "trackmilter_edge_lag_seconds",
            "Age of the last hit `trackmilter edge` queued for the store, when it was queued "
            "(the time nginx logged it to the time edge read it)",
            registry=r,
        )
        if r is not None:
            r.register(FollowerLag("edge", *(edge_file or (None, None))))
        self.verdict_revisions = self._new(
            Counter,
            "trackmilter_tracker_verdict_revisions_total",
            "Stored verdicts changed by later evidence (the delivery time, the message's other "
            "hits and links), by target and the verdict given now; "
            "trackmilter_tracker_hits_total counts the first answers",
            ["target", "verdict"],
            registry=reg("revisions"),
        )
        self._bound(self.verdict_revisions, _closed(TARGETS), _closed(VERDICTS))

        # store
        r = reg("store")
        self.store_queue = self._new(
            Gauge,
            "trackmilter_store_queue_events",
            "Events waiting in memory for the background writer",
            registry=r,
        )
        self.store_batch_seconds = self._new(
            Histogram,
            "trackmilter_store_batch_duration_seconds",
            "Time to write one batch to the database",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.store_written = self._new(
            Counter,
            "trackmilter_store_events_written_total",
            "Events written to the database",
            registry=r,
        )
        self.store_failures = self._new(
            Counter,
            "trackmilter_store_write_failures_total",
            "Batches the database refused or could not take (they went to the spool)",
            registry=r,
        )
        self.spool_events = self._new(
            Gauge,
            "trackmilter_store_spool_events",
            "Events waiting in the on-disk spool for the database to come back",
            registry=r,
        )
        self.spool_replayed = self._new(
            Counter,
            "trackmilter_store_spool_replayed_total",
            "Events replayed from the spool into the database",
            registry=r,
        )
        self.store_stalls = self._new(
            Counter,
            "trackmilter_store_stalls_total",
            "Database writes that outlived [store] write_timeout (interrupted; events waited "
            "in the journal)",
            registry=r,
        )
        self.journal_failures = self._new(
            Counter,
            "trackmilter_store_journal_failures_total",
            "Events the on-disk journal could not take (full disk): they waited in memory",
            registry=r,
        )
        self.store_dropped = self._new(
            Counter,
            "trackmilter_store_events_dropped_total",
            "Events lost because neither the database nor the spool could take them",
            registry=r,
        )
        self._zero()

    @classmethod
    def for_daemon(cls, daemon: str, *, mta: str = "",
                   maillog_file: tuple[str | Path, str | Path] | None = None,
                   edge_file: tuple[str | Path, str | Path] | None = None) -> Metrics:
        """The registry a daemon serves (DAEMONS: milter, maillog, web, edge, webhooks): its
        own families, build info, process_* and python_*. `mta`: its mta_name (milter,
        maillog); `maillog_file` / `edge_file`: the reader's (log, state_file)."""
        engine = ""
        if daemon == "milter":  # the one that rewrites: which engine does it (native|python)
            from trackmilter.rewrite import native  # here: only the milter rewrites

            engine = native.ENGINE
        return cls(families=DAEMONS[daemon], standard=True, maillog_file=maillog_file,
                   edge_file=edge_file, mta=mta, engine=engine)

    @staticmethod
    def _new(cls: type[_M], *args: Any, registry: CollectorRegistry | None, **kwargs: Any
             ) -> _M:
        """The metric on `registry`, or for a family not asked for (None) one that counts
        nothing: in prometheus-client's multiprocess mode every metric made writes to the
        shared files, whatever registry it is on, and the scrape would show it."""
        if registry is None:
            return cast(_M, _Unexported())
        return cast(_M, cast(Any, cls)(*args, registry=registry, **kwargs))

    def _bound(self, metric: Any, *per_label: Callable[[str], str] | None) -> None:
        """Map each label value through its closed set (None: the value is ours or
        already bounded, e.g. [metrics] providers) before a child is made."""
        def bound(values: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(v if f is None else f(v) for f, v in zip(per_label, values, strict=True))

        self._bounds[id(metric)] = bound

    def _zero(self) -> None:
        """Known label values exist from the start at 0: a series that first appears at 1 is
        a first event `increase()` never sees (an alert on the first error would miss it)."""
        for stage in ERROR_STAGES:
            self.errors.labels(stage)
        for reason in ("not_a_report", "too_large", "queue_full", "error", "shutdown", "busy"):
            self.reports_skipped.labels(reason)
        self.skips.labels("busy")  # an alert on the first message the budget turned away
        for target in ("click", "open"):
            self.invalid_tokens.labels(target)
        for reason in LINK_SKIP_REASONS:
            self.links_skipped.labels(reason)

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, each value in its label's closed set (else "other"),
        remembered: prometheus-client validates and locks on every ``labels`` call, which
        the milter would pay several times per callback."""
        bound = self._bounds.get(id(metric))
        if bound is not None:
            values = bound(values)
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            # A race here creates the same child twice; prometheus-client returns one object.
            found = self._children[key] = metric.labels(*values)
        return found
