"""Integration: twelve 10 MB many-link messages at once through real Postfix and the milter.

The milter's peak RSS (VmHWM) stays under a bound set by [milter] memory_budget, and every
message passes: rewritten, or unmodified with skip reason busy, none lost. Without a
budget (memory_budget = 0) the same load took the milter to ~620 MiB, all twelve rewritten
at once (~850 MiB when all twelve are quoted-printable).

The bound: the milter's RSS before the load (started, one small message rewritten), plus
the budget, plus RSS_MARGIN for what the budget does not cover: the tracking events of the
rewritten messages on their way to the store (a LinkRecord per link, the SQL insert of its
rows), libmilter's threads, malloc's arenas. The reservations themselves are ~1.4-2.3x the
tracemalloc peak of a message (tests/benchmarks/bench_memory.py), which covers malloc's
overhead on the bodies.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests.support import bigmail

from trackmilter_lab import FakeMX, PostfixInstance
from trackmilter_lab.daemon import BASE_URL, milter_process, wait_status, write_config

pytestmark = pytest.mark.integration

MESSAGES = 12
MIB = 1024 * 1024
# HTML sizes whose encoded body is ~9.3-9.5 MiB, under max_message_size (10 MiB).
HTML_SIZE = {"quoted-printable": 9 * MIB, "base64": 7 * MIB, "8bit": 9 * MIB}
GAP = 200  # bytes of text after each link: 24,000 to 30,000 links a message
BUDGET = 256 * MIB  # the default [milter] memory_budget
RSS_MARGIN = 96 * MIB
SENDER = "big@example.com"
ALL = "all@example.net"  # every big message also goes here: `status` finds them all by it


def vm(pid: int, field: str) -> int:
    """A /proc/PID/status memory field (VmHWM, VmRSS) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def send_all(port: int, messages: list[bytes]) -> list[BaseException | dict[str, Any]]:
    """Send every message on its own connection, all at once (one thread each)."""
    results: list[BaseException | dict[str, Any]] = [RuntimeError("not sent")] * len(messages)
    start = threading.Barrier(len(messages))

    def one(i: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
                start.wait(30)
                results[i] = client.sendmail(SENDER, [f"rcpt{i}@example.net", ALL],
                                             messages[i])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(messages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_twelve_big_messages_at_once_stay_within_the_budget(
    fake_mx: FakeMX, postfix_lab: Any, socket_dir: Path, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    sock = socket_dir / "trackmilter.sock"
    cfg = write_config(tmp_path / "tm", sock, extra={"milter": {"memory_wait": 3}})
    milter = milter_process(cfg, sock).start()
    try:
        assert milter.pid is not None
        pid = milter.pid
        postfix: PostfixInstance = postfix_lab(milter=milter.spec, extra_main_cf={
            "message_size_limit": str(50 * 1024 * 1024), "mailbox_size_limit": "0",
            "milter_content_timeout": "120s"})
        # Warm up: the engine, the signer and the store are loaded and used once.
        small = bigmail.message("quoted-printable", 20_000, sender=SENDER, to="warm@example.net")
        assert postfix.send(SENDER, ["warm@example.net"], small) == {}
        fake_mx.wait_for_count(1, timeout=30)
        wait_status(cfg, "warm@example.net")
        baseline = vm(pid, "VmHWM")

        ctes = [bigmail.CTES[i % len(bigmail.CTES)] for i in range(MESSAGES)]
        messages = [bigmail.message(cte, HTML_SIZE[cte], GAP, sender=SENDER,
                                    to=f"rcpt{i}@example.net", subject=f"Big {i}")
                    for i, cte in enumerate(ctes)]
        results = send_all(postfix.smtp_port, messages)
        assert results == [{}] * MESSAGES, results
        received = fake_mx.wait_for_count(MESSAGES + 1, timeout=60)
        records = wait_status(cfg, ALL, lambda v: len(v) >= MESSAGES, timeout=60)
        peak = vm(pid, "VmHWM")
    finally:
        milter.stop()

    # Every message arrived, each rewritten or passed unmodified as busy, with its header.
    by_rcpt = {a: m for m in received for a in m.recipients if a != ALL}
    stored = {a: r for r in records for a in (x["address"] for x in r["recipients"]) if a != ALL}
    assert all(r["end_reason"] == "queued" for r in records)
    outcomes = []
    for i, original in enumerate(messages):
        rcpt = f"rcpt{i}@example.net"
        got, rec = by_rcpt[rcpt], stored[rcpt]
        msg = email.message_from_bytes(got.data, policy=email.policy.compat32)
        assert msg["X-Trackmilter-ID"] == rec["tracking_id"]
        body = got.data.partition(b"\r\n\r\n")[2]
        if rec["rewritten"]:
            html = [p.get_payload(decode=True) for p in msg.walk()
                    if p.get_content_type() == "text/html"]
            assert rec["link_count"] > 20_000 and f"{BASE_URL}/c/".encode() in html[0]
            outcomes.append("rewritten")
        else:
            assert rec["skip_reason"] == "busy", rec
            assert body == original.partition(b"\r\n\r\n")[2]
            outcomes.append("busy")
    bound = baseline + BUDGET + RSS_MARGIN
    print(f"\nbaseline VmHWM {baseline / MIB:.0f} MiB, peak VmHWM {peak / MIB:.0f} MiB, "
          f"bound {bound / MIB:.0f} MiB; {outcomes.count('rewritten')} rewritten, "
          f"{outcomes.count('busy')} busy; {time.monotonic() - t0:.1f} s")
    assert "rewritten" in outcomes  # the budget lets some through
    assert peak <= bound
