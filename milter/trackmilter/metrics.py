"""Every Prometheus metric trackmilter exports, defined once, on an injectable registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from trackmilter import __version__

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


class Metrics:
    """All metrics of one process. Tests build one per test on a fresh ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        # A gauge, not an Info: the same exposition, and it works in multiprocess mode too.
        self.build_info = Gauge("trackmilter_build_info", "trackmilter version", ["version"],
                                registry=r, multiprocess_mode="max")
        self.build_info.labels(__version__).set(1)

        # milter
        self.messages = Counter(
            "trackmilter_milter_messages_total",
            "SMTP transactions seen by the milter, by direction and what was done to them",
            ["direction", "action"],
            registry=r,
        )
        self.recipients = Counter(
            "trackmilter_milter_recipients_total",
            "Recipients by in-line outcome at our MTA and enhanced status code (refusals)",
            ["outcome", "status"],
            registry=r,
        )
        self.links_rewritten = Counter(
            "trackmilter_milter_links_rewritten_total",
            "Links replaced by signed tracking links",
            registry=r,
        )
        self.links_skipped = Counter(
            "trackmilter_milter_links_skipped_total",
            "Links left as written in messages that were tracked, by reason: url_too_long "
            "(the token would be longer than the trackers accept), unsignable (e.g. an "
            "internationalised host)",
            ["reason"],
            registry=r,
        )
        self.pixels = Counter(
            "trackmilter_milter_pixels_added_total", "Open pixels added", registry=r
        )
        self.skips = Counter(
            "trackmilter_milter_skipped_total",
            "Outgoing or inbound messages left unmodified, by reason",
            ["reason"],
            registry=r,
        )
        self.callback_seconds = Histogram(
            "trackmilter_milter_callback_duration_seconds",
            "Time spent inside each milter callback",
            ["callback"],
            buckets=CALLBACK_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "trackmilter_errors_total",
            "Internal errors caught at an exception boundary; mail passed through unmodified",
            ["stage"],
            registry=r,
        )
        self.link_growth = Counter(
            "trackmilter_milter_link_growth_bytes_total",
            "Bytes tracking links added over the original URLs (divide by links rewritten "
            "for the mean overhead per link)",
            registry=r,
        )
        # [milter] memory_budget: what buffered bodies and their rewriting may cost
        self.memory_budget = Gauge(
            "trackmilter_milter_memory_budget_bytes",
            "The milter's budget for message bytes in flight ([milter] memory_budget; 0: "
            "no limit)",
            registry=r,
        )
        self.memory_reserved = Gauge(
            "trackmilter_milter_memory_reserved_bytes",
            "Bytes reserved now by messages in flight (their buffered bodies and what "
            "rewriting them will cost)",
            registry=r,
        )
        self.memory_waits = Counter(
            "trackmilter_milter_memory_waits_total",
            "Times a message waited for room in the memory budget (those that got none in "
            "time are skipped with reason busy)",
            registry=r,
        )

        # reports (DSN, MDN, ARF) seen by the milter
        self.reports = Counter(
            "trackmilter_reports_total",
            "Reports (dsn, mdn, arf) decoded from mail passing through the milter",
            ["kind"],
            registry=r,
        )
        self.reports_skipped = Counter(
            "trackmilter_reports_skipped_total",
            "Possible reports not decoded, by reason (not_a_report, too_large, queue_full, "
            "error, shutdown, busy: no room in the memory budget)",
            ["reason"],
            registry=r,
        )

        # maillog follower
        self.maillog_lines = Counter(
            "trackmilter_maillog_lines_total", "Log lines read by the maillog follower",
            registry=r,
        )
        self.maillog_unparsed = Counter(
            "trackmilter_maillog_unparsed_lines_total",
            "Lines that look like delivery outcomes (status= / stat=) but could not be parsed",
            registry=r,
        )
        self.maillog_deliveries = Counter(
            "trackmilter_maillog_deliveries_total",
            "Per-recipient delivery outcomes read from the MTA log (also for mail the milter "
            "never saw)",
            ["status"],
            registry=r,
        )

        self.report_recipients = Counter(
            "trackmilter_reports_recipients_total",
            "Recipients named by decoded reports, by kind (dsn, mdn, arf), action (DSN Action, "
            "MDN disposition, ARF feedback type) and bounce reason (sisimai's vocabulary)",
            ["kind", "action", "reason"],
            registry=r,
        )

        # delivery (what the next hop answered, from the MTA's log)
        self.delivery_outcomes = Counter(
            "trackmilter_delivery_outcomes_total",
            "Per-recipient delivery outcomes by status (Postfix's vocabulary: sent, deferred, "
            "bounced, expired), enhanced status code and recipient provider ([metrics] "
            "providers; every other domain is 'other')",
            ["status", "dsn", "provider"],
            registry=r,
        )
        self.delivery_delay = Histogram(
            "trackmilter_delivery_delay_seconds",
            "Time from arrival to this delivery attempt's outcome (Postfix's delay=), by status",
            ["status"],
            buckets=DELAY_BUCKETS,
            registry=r,
        )

        # webhooks (endpoint labels: the configured URLs without credentials or query)
        self.webhook_deliveries = Counter(
            "trackmilter_webhook_deliveries_total",
            "Webhook POSTs by endpoint and result (delivered, retry, gave_up)",
            ["endpoint", "result"],
            registry=r,
        )
        self.webhook_queue = Gauge(
            "trackmilter_webhook_queue_events",
            "Events waiting in the webhook outbox, by endpoint",
            ["endpoint"],
            registry=r,
            multiprocess_mode="max",
        )

        # tracker
        self.hits = Counter(
            "trackmilter_tracker_hits_total",
            "Clicks and opens answered by the tracker, by the verdict given when answering (the "
            "first answer; later changes: trackmilter_tracker_verdict_revisions_total)",
            ["target", "verdict"],
            registry=r,
        )
        self.hit_reasons = Counter(
            "trackmilter_tracker_hit_reasons_total",
            "Reasons behind the tracker's verdicts (a hit may have several)",
            ["target", "reason"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "trackmilter_tracker_request_duration_seconds",
            "Time to answer a tracking URL inside the application (verify, judge, queue the "
            "hit), by target",
            ["target"],
            buckets=CALLBACK_BUCKETS,
            registry=r,
        )
        self.invalid_tokens = Counter(
            "trackmilter_tracker_invalid_tokens_total",
            "Requests for tracking URLs whose token did not verify (answered 404)",
            ["target"],
            registry=r,
        )
        self.edge_lines = Counter(
            "trackmilter_edge_lines_total",
            "Lines of nginx's hit log read by `trackmilter edge`, by outcome: hit (stored), "
            "refused (nginx answered 404/405, nothing to store), invalid (the token did not "
            "verify here, even with the key file read again: keys differ between nginx and "
            "trackmilter), unreadable (not the trackmilter_hits log format), error (the hit "
            "could not be judged or queued; logged)",
            ["outcome"],
            registry=r,
        )
        self.edge_lag = Gauge(
            "trackmilter_edge_lag_seconds",
            "Age of the last hit `trackmilter edge` handed to the store, when it was handed",
            registry=r,
        )
        self.verdict_revisions = Counter(
            "trackmilter_tracker_verdict_revisions_total",
            "Stored verdicts changed by later evidence (the delivery time, the message's other "
            "hits and links), by target and the verdict given now; "
            "trackmilter_tracker_hits_total counts the first answers",
            ["target", "verdict"],
            registry=r,
        )

        # store
        self.store_queue = Gauge(
            "trackmilter_store_queue_events",
            "Events waiting in memory for the background writer",
            registry=r,
        )
        self.store_batch_seconds = Histogram(
            "trackmilter_store_batch_duration_seconds",
            "Time to write one batch to the database",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.store_written = Counter(
            "trackmilter_store_events_written_total",
            "Events written to the database",
            registry=r,
        )
        self.store_failures = Counter(
            "trackmilter_store_write_failures_total",
            "Batches the database refused or could not take (they went to the spool)",
            registry=r,
        )
        self.spool_events = Gauge(
            "trackmilter_store_spool_events",
            "Events waiting in the on-disk spool for the database to come back",
            registry=r,
        )
        self.spool_replayed = Counter(
            "trackmilter_store_spool_replayed_total",
            "Events replayed from the spool into the database",
            registry=r,
        )
        self.store_stalls = Counter(
            "trackmilter_store_stalls_total",
            "Database writes that outlived [store] write_timeout (interrupted; events waited "
            "in the journal)",
            registry=r,
        )
        self.journal_failures = Counter(
            "trackmilter_store_journal_failures_total",
            "Events the on-disk journal could not take (full disk): they waited in memory",
            registry=r,
        )
        self.store_dropped = Counter(
            "trackmilter_store_events_dropped_total",
            "Events lost because neither the database nor the spool could take them",
            registry=r,
        )
        self._zero()

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
        """``metric.labels(*values)``, remembered: prometheus-client validates and locks on
        every ``labels`` call, which the milter would pay several times per callback."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            # A race here creates the same child twice; prometheus-client returns one object.
            found = self._children[key] = metric.labels(*values)
        return found
