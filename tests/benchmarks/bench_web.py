"""Benchmark: the tracker (every hit verified, judged and stored) against nginx
(`return 302`, one worker), same machine, same run.

Run: python tests/benchmarks/bench_web.py [--rounds 3] [--duration 10] [--edge-workers 2]
                                          [--with-web] [--web-workers 2]

Needs wrk, nginx and libnginx-mod-http-lua (Debian packages, installed by scripts/setup).
On 127.0.0.1 ports of its own it starts:
- nginx from tests/benchmarks/web/nginx.conf.template: the reference;
- the edge deployment (README, "The tracker at nginx speed"): a private nginx with the
  shipped conf/nginx/trackmilter-edge.conf locations, answering from conf/nginx/trackmilter.lua
  with --edge-workers worker processes and writing the shipped hit log, and beside it
  `trackmilter edge` (SCHED_IDLE, as systemd/trackmilter-edge.service runs it) reading that log,
  verifying, judging and storing every hit in SQLite while the load runs;
- with --with-web, `trackmilter web` too (granian, --web-workers processes).
It writes 1000 valid click paths (100 messages x 10 links) and per round runs
`wrk -t1 -c50 -d10s --latency` against each (nginx first; the reader is stopped with SIGSTOP
while nginx runs, so that our background work never slows the reference), the edge a
second time with the reader stopped too (a diagnostic: answering alone), then the edge at
a paced load of half of that round's nginx requests/s, for the p99 "at that load". After the last
round nginx is stopped (it writes its buffered log lines), the reader is given the time it
needs to store the backlog, and the hits stored must equal the responses wrk counted:
nothing lost. Prints the figures side by side, the ratio and p99, CPU per request, and how
fast the reader stores. Target: at least 0.5x nginx's requests/s, p99 <= 10 ms at
that load. Exit 1 when a hit is missing or the target is not met.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
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
    paced,
    session_cpu,
    wrk,
)

from trackmilter.model import new_tracking_id  # noqa: E402
from trackmilter.tokens import Signer  # noqa: E402
from trackmilter_lab import edgeproc  # noqa: E402
from trackmilter_lab.daemon import command, write_config  # noqa: E402

EDGE = "trackmilter edge"
EDGE_PAUSED = "edge, reader paused"
WEB = "trackmilter web"


def stored_hits(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM hits").fetchone()[0])


def line(r: int, name: str, run: Run, extra: str = "") -> str:
    return (f"round {r} {name:24} {run.rps:9.0f} req/s  p50 {run.p50_ms:6.2f} ms  p99 "
            f"{run.p99_ms:6.2f} ms  errors {run.errors}  CPU: server {run.server_cpu:.2f} "
            f"cores, wrk {run.wrk_cpu:.2f}{extra}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--edge-workers", type=int, default=2)
    ap.add_argument("--with-web", action="store_true", help="measure `trackmilter web` too")
    ap.add_argument("--web-workers", type=int, default=2)
    ap.add_argument("--drain-timeout", type=float, default=1800.0,
                    help="seconds the reader may take to store the backlog after the runs")
    args = ap.parse_args()
    why = edgeproc.available()
    if why:
        print(f"bench_web: {why} (scripts/setup installs it)", file=sys.stderr)
        return 2

    runs: dict[str, list[Run]] = {"nginx": [], EDGE: [], EDGE_PAUSED: [], WEB: []}
    half: list[Run] = []
    answered = {EDGE: 0, WEB: 0}
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmpdir:
        tmp = Path(tmpdir)
        web_port, edge_port, edge_metrics = free_port(), free_port(), free_port()
        hits_log = tmp / "hits.log"
        edge_cfg = write_config(tmp / "edge", tmp / "unused.sock", log_level="warning", extra={
            "edge": {"log": str(hits_log), "state_file": str(tmp / "edge.state"),
                     "metrics_listen": f"127.0.0.1:{edge_metrics}"}})
        web_cfg = write_config(tmp / "web", tmp / "unused.sock", log_level="warning", extra={
            "web": {"listen": f"127.0.0.1:{web_port}", "workers": args.web_workers}})
        (web_cfg.parent / "secret").write_text((edge_cfg.parent / "secret").read_text())
        for cfg in (edge_cfg, web_cfg):
            subprocess.run(command(cfg, "db", "upgrade"), check=True, capture_output=True)
        signer = Signer.from_file(edge_cfg.parent / "secret")
        paths = []
        for _ in range(100):
            sign = signer.for_message(new_tracking_id())
            paths.extend(f"/c/{sign.click(i, f'https://shop.example.org/p/{i}?utm=x')}"
                         for i in range(1, 11))
        paths_file = tmp / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")

        ref = Server(Config("nginx", []), tmp)
        nginx = edgeproc.EdgeNginx(tmp / "edge-nginx", edge_port, edge_cfg.parent / "secret",
                                   hits_log, workers=args.edge_workers)
        edge = edgeproc.EdgeTracker(edge_cfg, nginx, edge_metrics)
        edge.argv = ["chrt", "--idle", "0", *edge.argv]
        web: Server | None = None
        try:
            edge.start()
            targets: list[tuple[str, int, int]] = [("nginx", ref.port, ref.pid),
                                                   (EDGE, edge_port, nginx.pid or 0),
                                                   (EDGE_PAUSED, edge_port, nginx.pid or 0)]
            if args.with_web:
                web = Server(Config(WEB, command(web_cfg, "web")), tmp)
                web.port = web_port  # the config's port, not the one Server picked
                targets.append((WEB, web_port, web.pid))
            ref.wait_ready()
            if web is not None:
                web.wait_ready()
                answered[WEB] += 1  # wait_ready's request
            for name, port, sid in targets:  # warm-up, not in the figures (its hits count)
                warm = wrk(port, paths_file, duration=2, connections=args.connections, sid=sid)
                if name in answered:
                    answered[name] += warm.requests
            for r in range(1, args.rounds + 1):
                for name, port, sid in targets:
                    reader0 = session_cpu(edge.proc.pid) if edge.proc else 0.0
                    # Our reader is stopped while the reference runs (it is not part of
                    # it), and for the diagnostic "reader paused" run (answering alone).
                    pause = name in ("nginx", EDGE_PAUSED) and edge.proc is not None
                    if pause:
                        os.kill(edge.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
                    try:
                        run = wrk(port, paths_file, duration=args.duration,
                                  connections=args.connections, sid=sid)
                    finally:
                        if pause:
                            os.kill(edge.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
                    runs[name].append(run)
                    if name in answered:
                        answered[name] += run.requests
                    if name == EDGE_PAUSED:
                        answered[EDGE] += run.requests
                    extra = ""
                    if name == EDGE and edge.proc is not None:
                        used = (session_cpu(edge.proc.pid) - reader0) / args.duration
                        extra = f", reader {used:.2f}"
                    print(line(r, name, run, extra), flush=True)
                # p99 at half of this round's nginx rate.
                target = TARGET_RATIO * runs["nginx"][-1].rps
                run = paced(edge_port, paths_file, target, duration=args.duration,
                            connections=args.connections, sid=nginx.pid or 0)
                half.append(run)
                answered[EDGE] += run.requests  # the calibration runs are counted below
                print(line(r, f"{EDGE} @ {target:.0f}/s", run), flush=True)
            nginx.stop()  # SIGQUIT: nginx writes its buffered log lines, then exits
            logged = sum(1 for _ in hits_log.open()) if hits_log.exists() else 0
            t0 = time.monotonic()
            at_stop = stored_hits(edge_cfg.parent / "trackmilter.db")
            deadline = t0 + args.drain_timeout
            while stored_hits(edge_cfg.parent / "trackmilter.db") < logged:
                if time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            drain = time.monotonic() - t0
            edge.stop_reader()
            stored_edge = stored_hits(edge_cfg.parent / "trackmilter.db")
            stored_web = 0
            if web is not None:
                web.stop()  # SIGTERM: every worker writes (or spools) what it holds
                stored_web = stored_hits(web_cfg.parent / "trackmilter.db")
        finally:
            edge.stop()
            ref.stop()
            if web is not None:
                web.stop()

    print()
    print(f"{'':24}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'server CPU µs/req':>19}")
    shown = [("nginx (return 302)", runs["nginx"]), (EDGE, runs[EDGE]),
             (EDGE_PAUSED, runs[EDGE_PAUSED])]
    if runs[WEB]:
        shown.append((WEB, runs[WEB]))
    for name, rs in shown:
        print(f"{name:24}{med([r.rps for r in rs]):10.0f}{med([r.p50_ms for r in rs]):9.2f}"
              f"{med([r.p99_ms for r in rs]):9.2f}"
              f"{med([r.server_cpu / r.rps * 1e6 for r in rs]):19.1f}")
    ratio = med([r.rps for r in runs[EDGE]]) / med([r.rps for r in runs["nginx"]])
    answering = med([r.rps for r in runs[EDGE_PAUSED]]) / med([r.rps for r in runs["nginx"]])
    p99 = med([r.p99_ms for r in half])
    rate = med([r.rps for r in half])
    wanted = TARGET_RATIO * med([r.rps for r in runs["nginx"]])
    reached = rate >= 0.97 * wanted
    print()
    # The paced runs' calibration probes are hits too: the log has them all, so what must
    # be stored is every line nginx logged, and at least every response wrk counted.
    lost = max(answered[EDGE], logged) - stored_edge
    print(f"{EDGE}: hits logged by nginx {logged}, responses counted by wrk (full-load, "
          f"paced and warm-up runs) {answered[EDGE]}, stored {stored_edge}: "
          f"{'nothing lost' if lost <= 0 else f'{lost} MISSING'}")
    print(f"{EDGE}: when the load stopped the reader had stored {at_stop} hits; it stored "
          f"the other {stored_edge - at_stop} in {drain:.0f} s "
          f"({(stored_edge - at_stop) / max(drain, 1e-9):.0f} hits/s alone on the machine)")
    if web is not None:
        lost_web = answered[WEB] - stored_web
        print(f"{WEB}: hits stored {stored_web}, responses {answered[WEB]}: "
              f"{'nothing lost' if lost_web <= 0 else f'{lost_web} MISSING'}; "
              f"ratio {med([r.rps for r in runs[WEB]]) / med([r.rps for r in runs['nginx']]):.2f}")
        lost = max(lost, lost_web)
    print(f"{EDGE_PAUSED} / nginx = {answering:.2f}  (diagnostic: answering alone, the hits "
          f"stored afterwards)")
    print(f"{EDGE} / nginx = {ratio:.2f}  (>= {TARGET_RATIO} required) -> "
          f"{'PASS' if ratio >= TARGET_RATIO else 'FAIL'}")
    verdict = ("PASS" if p99 <= TARGET_P99_MS else "FAIL") if reached else \
        f"FAIL (the paced load reached {rate:.0f} of {wanted:.0f} req/s)"
    print(f"p99 at {rate:.0f} req/s (0.5x nginx = {wanted:.0f}) = {p99:.2f} ms  "
          f"(<= {TARGET_P99_MS} ms required) -> {verdict}")
    ok = lost <= 0 and ratio >= TARGET_RATIO and reached and p99 <= TARGET_P99_MS
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
