"""Fault injection: nothing Postfix accepted may be lost, and nothing may go unrecorded.

Real Postfix (lab) → trackmilter (unix socket, per-milter failure = tempfail) → FakeMX, the
store on a PostgreSQL cluster this module starts itself (initdb in /tmp, unix socket only),
a few hundred ~30 KB HTML newsletters sent unpaced by 10 retrying clients. Each test
injects one fault mid-run and recovers from it, then checks: every message Postfix
accepted reached the MX (by Message-ID), nothing is in the `corrupt` queue, and the store
has a `messages` row for every one of them. The tracker test kills `trackmilter web` with
SIGKILL under a stream of clicks: every hit answered with a 302 must be stored.

Some of these fail on a milter without a durable journal (records lost on SIGTERM, kill -9,
frozen PostgreSQL): the failure says how many records were lost and which Message-IDs.
The harness is tests/support/faults.py; tests/benchmarks/bench_faults.py runs the same
matrix at full load.

    .venv/bin/pytest tests/integration/test_faults.py -s     # -s prints each run's counts

Needs root (Postfix lab, tmpfs), Postfix, and PostgreSQL's server binaries (initdb,
postgres, pg_ctl; $TRACKMILTER_PG_BINDIR or /usr/lib/postgresql/N/bin). The daemons run
as `python -m trackmilter`: PYTHONPATH=OTHER_TREE/milter runs them from another tree of
the product, e.g. `git archive HEAD milter | tar -x -C /tmp/head` (add OTHER_TREE/lab for
that tree's test lab too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.faults import (
    FAULTS,
    RigOptions,
    fault_rig,
    run_fault,
    run_web_kill9,
    tmpfs_unavailable_reason,
)
from tests.support.pgcluster import PgCluster, pg_unavailable_reason

from trackmilter_lab import postfix_available

NO_POSTFIX = "Postfix is not installed (no `postfix` command or user): scripts/setup installs it"
MESSAGES = 400


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    """One throw-away cluster for the module (each test gets a database of its own)."""
    reason = pg_unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = PgCluster()
    try:
        yield cluster.start()
    finally:
        cluster.close()


@pytest.mark.parametrize("name", list(FAULTS))
def test_mail_survives_fault(name: str, pg: PgCluster, tmp_path: Path) -> None:
    if not postfix_available():
        pytest.skip(NO_POSTFIX)
    fault = FAULTS[name]
    if fault.spool_on_tmpfs:
        reason = tmpfs_unavailable_reason()
        if reason:
            pytest.skip(reason)
    opts = RigOptions(messages=MESSAGES, logs_to=tmp_path / "logs")
    with fault_rig(pg, fault, opts) as rig:
        outcome = run_fault(rig, fault)
    print(outcome.summary())
    problems = outcome.problems()
    assert not problems, f"{fault.title}:\n" + "\n".join(problems) + (
        f"\n{outcome.summary()}\n(logs in {tmp_path / 'logs'})")


def test_tracker_kill9_keeps_every_answered_hit(pg: PgCluster, tmp_path: Path) -> None:
    outcome = run_web_kill9(pg, before=300, after=100, logs_to=tmp_path / "logs")
    print(outcome.summary())
    problems = outcome.problems()
    assert not problems, "\n".join(problems) + f"\n{outcome.summary()}"
