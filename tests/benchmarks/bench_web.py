"""Benchmark: `trackmilter web` (every hit verified, judged and stored) against nginx
(`return 302`, one worker), same machine, same run.

Run: python tests/benchmarks/bench_web.py [--rounds 3] [--duration 10] [--workers 2]

Needs wrk and nginx (Debian packages). On 127.0.0.1 ports of its own it starts nginx from
tests/benchmarks/web/nginx.conf.template and `trackmilter web` with a throwaway
configuration (SQLite store, granian with --workers processes), writes 1000 valid click
paths (100 messages x 10 links), and per round runs `wrk -t1 -c50 -d10s --latency` against
each, nginx first (the helpers are those of asgi_servers.py, which chose the server).
After the last round it stops the tracker (SIGTERM: each worker writes what it holds) and
checks that the hits stored equal the responses wrk counted: nothing lost. Prints both
figures, the ratio, p99 and CPU per request. Target (issue 4): at least 0.5x nginx's
requests/s, p99 <= 10 ms at that load. Exit 1 when a hit is missing or the target is not
met.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from asgi_servers import (  # noqa: E402
    TARGET_P99_MS,
    TARGET_RATIO,
    Config,
    Run,
    Server,
    free_port,
    med,
    wrk,
)

from trackmilter.lab.daemon import command, write_config  # noqa: E402
from trackmilter.model import new_tracking_id  # noqa: E402
from trackmilter.tokens import Signer  # noqa: E402


def stored_hits(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM hits").fetchone()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    runs: dict[str, list[Run]] = {"nginx": [], "trackmilter web": []}
    answered = 0
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmpdir:
        tmp = Path(tmpdir)
        port = free_port()
        cfg = write_config(tmp / "tm", tmp / "unused.sock", log_level="warning", extra={
            "web": {"listen": f"127.0.0.1:{port}", "workers": args.workers}})
        subprocess.run(command(cfg, "db", "upgrade"), check=True, capture_output=True)
        signer = Signer.from_file(cfg.parent / "secret")
        paths = []
        for _ in range(100):
            sign = signer.for_message(new_tracking_id())
            paths.extend(f"/c/{sign.click(i, f'https://shop.example.org/p/{i}?utm=x')}"
                         for i in range(1, 11))
        paths_file = tmp / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        servers = [Server(Config("nginx", []), tmp)]
        try:
            ours = Server(Config("trackmilter web", command(cfg, "web")), tmp)
            servers.append(ours)
            ours.port = port  # the config's port, not the one Server picked
            for s in servers:
                s.wait_ready()
            answered += 1  # wait_ready's request
            for s in servers:  # warm-up, not in the figures (its hits are counted)
                warm = wrk(s.port, paths_file, duration=2, connections=args.connections,
                           sid=s.pid)
                if s is ours:
                    answered += warm.requests
            for r in range(1, args.rounds + 1):
                for s in servers:
                    run = wrk(s.port, paths_file, duration=args.duration,
                              connections=args.connections, sid=s.pid)
                    runs[s.cfg.name].append(run)
                    if s is ours:
                        answered += run.requests
                    print(f"round {r} {s.cfg.name:16} {run.rps:9.0f} req/s  p50 "
                          f"{run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms  errors {run.errors}"
                          f"  CPU: server {run.server_cpu:.2f} cores, wrk {run.wrk_cpu:.2f}",
                          flush=True)
            ours.stop()  # SIGTERM: every worker writes (or spools) what it holds
            stored = stored_hits(cfg.parent / "trackmilter.db")
        finally:
            for s in servers:
                s.stop()

    n, t = runs["nginx"], runs["trackmilter web"]
    print()
    print(f"{'':20}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'server CPU µs/req':>19}")
    for name, rs in (("nginx (return 302)", n), ("trackmilter web", t)):
        print(f"{name:20}{med([r.rps for r in rs]):10.0f}{med([r.p50_ms for r in rs]):9.2f}"
              f"{med([r.p99_ms for r in rs]):9.2f}"
              f"{med([r.server_cpu / r.rps * 1e6 for r in rs]):19.1f}")
    ratio = med([r.rps for r in t]) / med([r.rps for r in n])
    p99 = med([r.p99_ms for r in t])
    lost = answered - stored
    print()
    print(f"hits stored {stored}, responses (health check, warm-up, rounds) {answered}: "
          f"{'nothing lost' if lost <= 0 else f'{lost} MISSING'}")
    print(f"trackmilter web / nginx = {ratio:.2f}  (>= {TARGET_RATIO} required) -> "
          f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'}")
    print(f"p99 at that load = {p99:.2f} ms  (<= {TARGET_P99_MS} ms required) -> "
          f"{'PASS' if p99 <= TARGET_P99_MS else 'FAIL'}")
    return 0 if lost <= 0 and ratio >= TARGET_RATIO and p99 <= TARGET_P99_MS else 1


if __name__ == "__main__":
    sys.exit(main())
