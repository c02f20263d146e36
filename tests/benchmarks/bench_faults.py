"""Fault injection at full load: what is lost when the milter or its database fails.

    python tests/benchmarks/bench_faults.py [--reps 5] [-m 1000] [-c 10]
                                            [--faults milter-sigterm,...] [--no-web]

The matrix of tests/integration/test_faults.py, unpaced and unthrottled, each fault
--reps times (faults interleaved, a fresh rig per run): a private Postfix (lab, per-milter
failure = tempfail) with trackmilter on a unix socket, relaying to a fake MX on loopback;
the milter's store on a PostgreSQL cluster started here (initdb in /tmp, unix socket only,
removed at the end); -c SMTP clients send -m ~30 KB HTML newsletters (25 links, unique
Message-IDs), retrying on 4xx and connection errors. The last 30 % are held back until
the fault is over, so there is load before, during and after it.

Faults (tests/support/faults.py): milter-sigterm (SIGTERM under load, started again),
milter-kill9 (SIGKILL, restarted after 2-4 s), pg-stop (pg_ctl stop -m fast, started
after --pg-down s), pg-freeze (SIGSTOP of the cluster's processes, milter restarted with
SIGTERM then SIGKILL after --stop-timeout, SIGCONT), spool-full (the spool's 1 MB tmpfs
filled to 100 % while PostgreSQL is stopped; space freed, PostgreSQL started). With the
web row: `trackmilter web` killed with SIGKILL under a stream of clicks and restarted.

Per run: messages sent / accepted (250) / delivered (at the MX, by Message-ID), messages
lost (accepted, never delivered), files in Postfix's corrupt queue, records lost
(accepted, no row in `messages`), the slowest SMTP transaction running during the fault,
and the milter's peak RSS (VmHWM, max over its processes of the run). The store runs with
the shipped [store] settings unless --lab-store. Exit status 1 when anything was lost.
Needs root, Postfix and PostgreSQL's server binaries; the
daemons run as `python -m trackmilter`, so PYTHONPATH=OTHER_TREE/milter measures another
tree of the product (e.g. `git archive HEAD milter | tar -x -C /tmp/head`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))  # tests.support
sys.path.append(str(REPO / "milter"))  # a checkout without installing (PYTHONPATH wins)
sys.path.append(str(REPO / "lab"))  # the test lab (trackmilter_lab), if not installed

from tests.support.faults import (  # noqa: E402
    FAULTS,
    LAB_STORE,
    Outcome,
    RigOptions,
    WebOutcome,
    fault_rig,
    run_fault,
    run_web_kill9,
    tmpfs_unavailable_reason,
)
from tests.support.pgcluster import PgCluster, pg_unavailable_reason  # noqa: E402
from tests.support.smtpload import DEFAULT_TEMPLATE  # noqa: E402

from trackmilter.config import StoreSettings  # noqa: E402
from trackmilter_lab import postfix_available  # noqa: E402

WEB = "web-kill9"


def shipped_store() -> dict[str, object]:
    s = StoreSettings()
    return {"batch_size": s.batch_size, "flush_interval": s.flush_interval,
            "retry_interval": s.retry_interval}


def report(outcomes: list[Outcome], webs: list[WebOutcome], faults: list[str]) -> int:
    by: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by[o.fault].append(o)
    print()
    header = (f"{'fault':<15} {'runs':>4} {'sent':>6} {'accepted':>8} {'delivered':>9} "
              f"{'msgs lost':>9} {'corrupt':>7} {'records lost':>12} {'runs w/ loss':>12} "
              f"{'worst SMTP s':>12} {'peak RSS MB':>11}")
    print(header)
    print("-" * len(header))
    bad = 0
    for name in faults:
        runs = by.get(name, [])
        if not runs:
            continue
        lossy = sum(1 for o in runs if o.problems())
        bad += lossy
        print(f"{name:<15} {len(runs):>4} {sum(o.sent for o in runs):>6} "
              f"{sum(o.accepted for o in runs):>8} {sum(o.delivered for o in runs):>9} "
              f"{sum(len(o.lost_messages) for o in runs):>9} "
              f"{sum(len(o.corrupt) for o in runs):>7} "
              f"{sum(len(o.lost_records) for o in runs):>12} {lossy:>12} "
              f"{max(o.worst_fault_s for o in runs):>12.2f} "
              f"{max(o.peak_rss_kb for o in runs) / 1024:>11.0f}")
    if webs:
        lossy = sum(1 for w in webs if w.problems())
        bad += lossy
        print()
        header = (f"{'tracker':<15} {'runs':>4} {'answered (302)':>14} {'stored':>8} "
                  f"{'hits lost':>9} {'runs w/ loss':>12} {'peak RSS MB':>11}")
        print(header)
        print("-" * len(header))
        print(f"{WEB:<15} {len(webs):>4} {sum(w.answered for w in webs):>14} "
              f"{sum(w.stored for w in webs):>8} {sum(len(w.lost) for w in webs):>9} "
              f"{lossy:>12} {max(w.peak_rss_kb for w in webs) / 1024:>11.0f}")
    print()
    print("Counts are sums over the runs; worst SMTP s (the slowest transaction running "
          "while the fault lasted) and peak RSS (VmHWM: the milter's, for web-kill9 the "
          "tracker's processes') the maximum.")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--reps", type=int, default=5, help="repetitions of each fault")
    p.add_argument("-m", "--messages", type=int, default=1000, help="messages per run")
    p.add_argument("-c", "--clients", type=int, default=10, help="concurrent SMTP clients")
    p.add_argument("--faults", default=",".join([*FAULTS, WEB]),
                   help=f"comma-separated, from {','.join([*FAULTS, WEB])}")
    p.add_argument("--no-web", action="store_true", help=f"leave out {WEB}")
    p.add_argument("--clicks", type=int, default=2000, help=f"{WEB}: clicks before the kill")
    p.add_argument("--pg-down", type=float, default=5.0,
                   help="seconds PostgreSQL stays stopped (pg-stop, spool-full)")
    p.add_argument("--stop-timeout", type=float, default=10.0,
                   help="SIGTERM, then SIGKILL after this many seconds")
    p.add_argument("--lab-store", action="store_true",
                   help="the lab's quick writer (flush 0.05 s, retry 0.5 s), not the defaults")
    p.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help="HTML template")
    p.add_argument("--seed", type=int, default=1, help="random seed (kill -9 downtime, jitter)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the daemons")
    p.add_argument("--logs", type=Path, help="copy each run's maillog and milter log here")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.faults.split(",") if n.strip()]
    unknown = set(names) - {*FAULTS, WEB}
    if unknown:
        p.error(f"unknown faults {sorted(unknown)}; choose from {','.join([*FAULTS, WEB])}")
    if args.no_web and WEB in names:
        names.remove(WEB)
    mail = [n for n in names if n in FAULTS]
    if mail and not postfix_available():
        p.error("postfix is not installed")
    reason = pg_unavailable_reason()
    if reason:
        p.error(reason)
    if any(FAULTS[n].spool_on_tmpfs for n in mail):
        reason = tmpfs_unavailable_reason()
        if reason:
            print(f"leaving out spool-full: {reason}")
            mail = [n for n in mail if not FAULTS[n].spool_on_tmpfs]

    store = dict(LAB_STORE) if args.lab_store else shipped_store()
    retry = float(store["retry_interval"])  # type: ignore[arg-type]
    print(f"{args.messages} messages x {args.reps} reps per fault, {args.clients} clients, "
          f"faults {','.join(mail + ([WEB] if WEB in names else []))}, store {store}")
    outcomes: list[Outcome] = []
    webs: list[WebOutcome] = []
    started = time.monotonic()
    cluster = PgCluster()
    try:
        cluster.start()
        for rep in range(1, args.reps + 1):
            for name in mail:
                fault = FAULTS[name]
                opts = RigOptions(
                    messages=args.messages, clients=args.clients, template=args.template,
                    pg_down=args.pg_down, stop_timeout=args.stop_timeout, store=store,
                    log_level="warning", settle_quiet=retry + 2.0,
                    settle_timeout=max(60.0, 6 * retry), send_deadline=600.0,
                    queue_timeout=300.0, python=args.python, seed=args.seed * 1000 + rep,
                    logs_to=args.logs / f"{name}-{rep}" if args.logs else None,
                )
                with fault_rig(cluster, fault, opts) as rig:
                    outcome = run_fault(rig, fault)
                outcomes.append(outcome)
                print(f"rep {rep} {outcome.summary()}", flush=True)
                for problem in outcome.problems():
                    print(f"      {problem}", flush=True)
            if WEB in names:
                w = run_web_kill9(cluster, before=args.clicks, after=args.clicks // 4,
                                  store=store, python=args.python,
                                  settle_quiet=retry + 2.0, settle_timeout=max(60.0, 6 * retry))
                webs.append(w)
                print(f"rep {rep} {w.summary()}", flush=True)
                for problem in w.problems():
                    print(f"      {problem}", flush=True)
        return report(outcomes, webs, mail)
    finally:
        cluster.close()
        print(f"(total {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
