"""Metrics: labelled children are remembered and still count in the registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from trackmilter.metrics import Metrics


def test_child_is_remembered_and_counts() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    first = m.child(m.messages, "outgoing", "rewritten")
    assert m.child(m.messages, "outgoing", "rewritten") is first
    assert m.child(m.messages, "inbound", "recorded") is not first
    first.inc()
    m.child(m.messages, "outgoing", "rewritten").inc()
    m.child(m.callback_seconds, "eom").observe(0.002)
    value = registry.get_sample_value(
        "trackmilter_milter_messages_total", {"direction": "outgoing", "action": "rewritten"})
    assert value == 2.0
    count = registry.get_sample_value(
        "trackmilter_milter_callback_duration_seconds_count", {"callback": "eom"})
    assert count == 1.0
