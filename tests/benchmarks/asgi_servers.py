"""Pick the tracker's ASGI server by measurement: each candidate against nginx, same run.

Run: python tests/benchmarks/asgi_servers.py [--rounds 2] [--duration 10] [--only NAMES]

Needs wrk and nginx (Debian: apt-get install -y wrk nginx) and, in the Python running
this script, the candidates (pip install 'uvicorn[standard]' granian hypercorn); a missing
candidate is skipped and said so.

What it does, all on 127.0.0.1 ports it picks:
- writes 1000 distinct, valid click paths (BASE/c/TOKEN signed with a throw-away key) for
  tests/benchmarks/web/rotate.lua, which wrk rotates through;
- starts nginx from tests/benchmarks/web/nginx.conf.template (one worker, ``return 302``)
  and each server running tests/benchmarks/web/trackbench_app.py (the tracker's work: parse
  the path, verify the token, 302 with Location, append the hit to a deque), checks that
  a click answers 302 with the token's URL, an open answers the GIF and a forged token 404;
- per configuration: a short warm-up, then ``wrk -t1 -c50 -d10s --latency`` (full load),
  then, where the server's peak allows, the same at a paced load of half of nginx's
  requests/s in that round and at a common rate (--rate) for every server (wrk 4 has no
  ``-R``: rotate.lua pauses each connection between requests, calibrated by a short run,
  so this is closed-loop pacing and its p99 is a lower bound of what wrk2 would report);
  nginx is also run on one URL without the Lua script, for wrk's own overhead;
- runs the configurations in turn, nginx first, round after round (interleaved), then
  prints the medians side by side. The issue's target: at least 0.5x nginx's requests/s,
  with p99 <= 10 ms at that load.

Every process it starts runs in a session of its own and is ended by that PID (SIGTERM to
the group, then SIGKILL to any process left in the session). wrk and the server share the
machine's cores: the CPU columns show who used what.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
WEB = HERE / "web"
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(WEB))

KEY = "benchmark-key-" + "k" * 18
BASE = "/t"
os.environ["TRACKBENCH_KEY"] = KEY
os.environ["TRACKBENCH_BASE"] = BASE

import trackbench_app  # noqa: E402

TARGET_RATIO = 0.5
NGINX_ONE = "nginx, 1 URL, no Lua (ref)"
TARGET_P99_MS = 10.0
PY = sys.executable
CLK = os.sysconf("SC_CLK_TCK")


@dataclass
class Config:
    name: str
    argv: list[str]  # "{port}" replaced
    needs: str = ""  # module that must import (skip the config otherwise)
    workers: int = 1
    note: str = ""
    extended: bool = False  # only with --extended


def configs() -> list[Config]:
    web = str(WEB)
    out = [Config("nginx", ["nginx"], workers=1, note="return 302, 1 worker")]
    for w in (1, 2):
        out.append(Config(
            f"raw-asyncio w{w}", [PY, f"{web}/rawserver.py", "127.0.0.1", "{port}", str(w)],
            needs="uvloop", workers=w, note="asyncio.Protocol + uvloop, lower bound"))
    for w in (1, 2):
        out.append(Config(
            f"uvicorn w{w}",
            [PY, "-m", "uvicorn", "trackbench_app:app", "--app-dir", web, "--host", "127.0.0.1",
             "--port", "{port}", "--workers", str(w), "--loop", "uvloop", "--http", "httptools",
             "--lifespan", "on", "--no-access-log", "--log-level", "warning",
             "--no-server-header", "--backlog", "2048"],
            needs="uvicorn", workers=w, note="httptools + uvloop"))
    granian = [PY, "-m", "granian", "--host", "127.0.0.1", "--port", "{port}", "--http", "1",
               "--no-ws", "--loop", "uvloop", "--log-level", "warning", "--backlog", "2048",
               "--working-dir", web]
    for w in (1, 2):
        out.append(Config(f"granian asgi w{w}",
                          [*granian, "--interface", "asgi", "--workers", str(w),
                           "trackbench_app:app"],
                          needs="granian", workers=w, note="1 runtime thread"))
    for w in (1, 2):
        out.append(Config(f"granian rsgi w{w}",
                          [*granian, "--interface", "rsgi", "--workers", str(w),
                           "trackbench_app:rsgi_app"],
                          needs="granian", workers=w, note="RSGI: granian only"))
    out += [
        Config("granian asgi w1 rt2",
               [*granian, "--interface", "asgi", "--workers", "1", "--runtime-mode", "mt",
                "--runtime-threads", "2", "trackbench_app:app"],
               needs="granian", note="2 runtime threads (mt)", extended=True),
        Config("granian asgi w1 rust-tasks",
               [*granian, "--interface", "asgi", "--workers", "1", "--task-impl", "rust",
                "trackbench_app:app"],
               needs="granian", note="--task-impl rust", extended=True),
        Config("granian asginl w1",
               [*granian, "--interface", "asginl", "--workers", "1", "trackbench_app:app"],
               needs="granian", note="ASGI without lifespan", extended=True),
    ]
    for w in (1, 2):
        out.append(Config(
            f"hypercorn w{w}",
            [PY, "-m", "hypercorn", "--bind", "127.0.0.1:{port}", "--workers", str(w),
             "--worker-class", "uvloop", "--backlog", "2048", "--log-level", "warning",
             "trackbench_app:app"],
            needs="hypercorn", workers=w, note="uvloop worker class"))
    return out


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """PIDs of the live processes in session ``sid`` (ours: we made it with setsid)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def session_cpu(sid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of session ``sid``."""
    total = 0
    for pid in session_pids(sid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK


class Server:
    def __init__(self, cfg: Config, tmp: Path) -> None:
        self.cfg = cfg
        self.port = free_port()
        self.log = tmp / f"{cfg.name.replace(' ', '_')}.log"
        if cfg.name == "nginx":
            prefix = tmp / "nginx"
            prefix.mkdir(exist_ok=True)
            conf = prefix / "nginx.conf"
            conf.write_text(string.Template((WEB / "nginx.conf.template").read_text())
                            .substitute(PREFIX=str(prefix), PORT=self.port))
            argv = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        else:
            argv = [a.replace("{port}", str(self.port)) for a in cfg.argv]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(WEB), str(REPO_ROOT / "milter"), os.environ.get("PYTHONPATH", "")]))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cfg.name} exited {self.proc.returncode}:\n"
                                   + self.log.read_text()[-2000:])
            try:
                status, _, _ = get(self.port, "/")
                if status:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.cfg.name} not answering on port {self.port}")

    def stop(self) -> None:
        """SIGTERM to the group we started, then SIGKILL to what is left of the session."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while (left := session_pids(self.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in session_pids(self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        del left
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def check_answers(port: int, paths: list[tuple[str, str]]) -> None:
    """The app does the real work: 302 to the signed URL, the GIF, 404 for a forgery."""
    for path, url in paths[:5]:
        status, headers, _ = get(port, path)
        if status != 302 or headers.get("location") != url:
            raise RuntimeError(f"click {path}: {status} {headers.get('location')!r}, want {url}")
    status, headers, body = get(port, trackbench_app.make_open_path())
    if status != 200 or body != trackbench_app.PIXEL:
        raise RuntimeError(f"open pixel: {status} {len(body)} bytes")
    forged = paths[0][0][:-3] + ("AAA" if not paths[0][0].endswith("AAA") else "BBB")
    if get(port, forged)[0] != 404:
        raise RuntimeError("forged token not refused")


# ---------------------------------------------------------------- wrk


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu: float  # cores used by the server's processes during the run
    wrk_cpu: float  # cores used by wrk
    requests: int = 0  # responses wrk completed


def wrk(port: int, paths_file: Path, *, duration: float, connections: int,
        rate: float | None = None, sid: int, one_url: str | None = None) -> Run:
    """One wrk run. ``one_url``: hammer that one path without the Lua script (wrk's own
    ceiling: the per-request Lua call of rotate.lua costs wrk about half its speed)."""
    env = dict(os.environ, WRK_PATHS=str(paths_file), WRK_THREADS="1",
               WRK_CONNS_PER_THREAD=str(connections))
    if rate:
        env["WRK_RATE"] = f"{rate:.1f}"
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency",
            "-s", str(WEB / "rotate.lua" if one_url is None else WEB / "summary.lua"),
            f"http://127.0.0.1:{port}{one_url or '/'}"]
    cpu0, ru0 = session_cpu(sid), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60)
    wall = time.monotonic() - t0
    cpu1, ru1 = session_cpu(sid), resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk said:\n{out.stdout}\n{out.stderr}")
    d = json.loads(line[len("WRKJSON "):])
    errors = sum(d[k] for k in ("connect", "read", "write", "status", "timeout"))
    wrk_cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / wall
    return Run(rps=d["requests"] / (d["duration_us"] / 1e6), p50_ms=d["p50_us"] / 1000,
               p99_ms=d["p99_us"] / 1000, errors=errors, server_cpu=(cpu1 - cpu0) / wall,
               wrk_cpu=wrk_cpu, requests=int(d["requests"]))


def paced(port: int, paths_file: Path, target: float, *, duration: float, connections: int,
          sid: int) -> Run:
    """wrk at about ``target`` requests/s: calibrate the pacing with a short run, then run."""
    rate = target
    for _ in range(2):
        probe = wrk(port, paths_file, duration=3, connections=connections, rate=rate, sid=sid)
        if abs(probe.rps - target) / target < 0.03:
            break
        rate = min(rate * target / max(probe.rps, 1.0), target * 4)
    return wrk(port, paths_file, duration=duration, connections=connections, rate=rate, sid=sid)


# ---------------------------------------------------------------- main


@dataclass
class Result:
    cfg: Config
    full: list[Run] = field(default_factory=list)
    half: list[Run | None] = field(default_factory=list)  # at 0.5x nginx; None: out of reach
    common: list[Run | None] = field(default_factory=list)  # at --rate; None: out of reach
    targets: list[float] = field(default_factory=list)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--paths", type=int, default=1000, help="distinct click URLs")
    ap.add_argument("--rate", type=float, default=5000.0,
                    help="also pace every server at this req/s, to compare latency (0: off)")
    ap.add_argument("--only", help="comma-separated substrings of config names (nginx always)")
    ap.add_argument("--extended", action="store_true", help="granian's other threading options")
    ap.add_argument("--no-paced", action="store_true", help="skip the paced runs")
    ap.add_argument("--json", type=Path, help="write every run here")
    args = ap.parse_args()

    missing = [t for t in ("wrk", "nginx") if not shutil.which(t)]
    if missing:
        print(f"needs {' and '.join(missing)}: apt-get install -y wrk nginx", file=sys.stderr)
        return 2
    cfgs = []
    for c in configs():
        if c.extended and not args.extended:
            continue
        if args.only and c.name != "nginx" and not any(
                s.strip() in c.name for s in args.only.split(",")):
            continue
        if c.needs:
            try:
                __import__(c.needs)
            except ImportError:
                print(f"skipped {c.name}: {c.needs} not installed "
                      "(pip install 'uvicorn[standard]' granian hypercorn)")
                continue
        cfgs.append(c)
    results: dict[str, Result] = {}
    for c in cfgs:
        results[c.name] = Result(c)
        if c.name == "nginx":
            results[NGINX_ONE] = Result(Config(NGINX_ONE, [], note="one URL, no Lua"))

    tmp = Path(tempfile.mkdtemp(prefix="asgi-bench-"))
    paths = trackbench_app.make_paths(args.paths, key=KEY.encode(), base=BASE)
    paths_file = tmp / "paths.txt"
    paths_file.write_text("".join(p + "\n" for p, _ in paths))
    print(f"{len(cfgs)} configurations x {args.rounds} rounds; wrk -t1 -c{args.connections} "
          f"-d{args.duration:g}s; {os.cpu_count()} CPUs; work dir {tmp}", flush=True)

    def line(rnd: int, name: str, r: Run, what: str = "") -> str:
        return (f"round {rnd} {name:28s} {what:>10s} {r.rps:9.0f} req/s  p50 {r.p50_ms:6.2f} ms"
                f"  p99 {r.p99_ms:6.2f} ms  cpu server {r.server_cpu:4.2f} wrk {r.wrk_cpu:4.2f}"
                + (f"  errors {r.errors}" if r.errors else ""))

    servers: list[Server] = []
    kw = {"duration": args.duration, "connections": args.connections}
    try:
        for rnd in range(1, args.rounds + 1):
            nginx_rps = None
            for cfg in cfgs:
                srv = Server(cfg, tmp)
                servers.append(srv)
                res = results[cfg.name]
                try:
                    srv.wait_ready()
                    if cfg.name != "nginx":
                        check_answers(srv.port, paths)
                    if args.warmup:
                        wrk(srv.port, paths_file, duration=args.warmup,
                            connections=args.connections, sid=srv.pid)
                    full = wrk(srv.port, paths_file, sid=srv.pid, **kw)
                    res.full.append(full)
                    print(line(rnd, cfg.name, full, "full"), flush=True)
                    if cfg.name == "nginx":
                        nginx_rps = full.rps
                        one = wrk(srv.port, paths_file, sid=srv.pid, one_url=paths[0][0], **kw)
                        results[NGINX_ONE].full.append(one)
                        print(line(rnd, NGINX_ONE, one, "full"), flush=True)
                        continue
                    if args.no_paced:
                        continue
                    if nginx_rps:
                        target = TARGET_RATIO * nginx_rps
                        res.targets.append(target)
                        if full.rps >= 0.95 * target:
                            p = paced(srv.port, paths_file, target, sid=srv.pid, **kw)
                            res.half.append(p)
                            print(line(rnd, cfg.name, p, f"@{target:.0f}"), flush=True)
                        else:
                            res.half.append(None)
                            print(f"round {rnd} {cfg.name:28s} {'@' + format(target, '.0f'):>10s}"
                                  "  out of reach (peak below 0.5x nginx)", flush=True)
                    if args.rate:
                        if full.rps >= 0.95 * args.rate:
                            p = paced(srv.port, paths_file, args.rate, sid=srv.pid, **kw)
                            res.common.append(p)
                            print(line(rnd, cfg.name, p, f"@{args.rate:.0f}"), flush=True)
                        else:
                            res.common.append(None)
                except Exception as e:  # noqa: BLE001 - report and go on with the others
                    print(f"round {rnd} {cfg.name}: FAILED {e}", flush=True)
                finally:
                    srv.stop()
                    servers.remove(srv)
    finally:
        for srv in servers:
            srv.stop()

    report(results, args)
    if args.json:
        def runs(xs: list[Run | None]) -> list[dict[str, float] | None]:
            return [x.__dict__ if x else None for x in xs]
        args.json.write_text(json.dumps({
            name: {"full": runs(list(res.full)), "half_nginx": runs(res.half),
                   "common_rate": runs(res.common), "targets": res.targets}
            for name, res in results.items()}, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _paced_cols(runs: list[Run | None]) -> str:
    got = [r for r in runs if r]
    if not runs:
        return f"{'':>7s} {'':>7s} {'':>7s}"
    if len(got) * 2 <= len(runs):  # out of reach in most rounds
        return f"{'(peak too low)':>23s}"
    return (f"{med([r.rps for r in got]):7.0f} {med([r.p50_ms for r in got]):7.2f} "
            f"{med([r.p99_ms for r in got]):7.2f}")


def report(results: dict[str, Result], args: argparse.Namespace) -> None:
    base = results.get("nginx")
    nginx_rps = med([r.rps for r in base.full]) if base and base.full else float("nan")
    print()
    print(f"medians of {args.rounds} rounds; full load: wrk -t1 -c{args.connections} "
          f"-d{args.duration:g}s over {args.paths} click URLs; paced: wrk with per-connection "
          "pauses (closed loop)")
    head = (f"{'config':28s} {'req/s':>8s} {'x nginx':>7s} {'p50 ms':>7s} {'p99 ms':>7s} "
            f"{'cpu srv':>7s} {'cpu wrk':>7s} | {'@0.5x':>7s} {'p50 ms':>7s} {'p99 ms':>7s} | "
            f"{'@' + format(args.rate, '.0f'):>7s} {'p50 ms':>7s} {'p99 ms':>7s} | target")
    print(head)
    print("-" * len(head))
    for name, res in results.items():
        if not res.full:
            print(f"{name:28s} (no result)")
            continue
        rps = med([r.rps for r in res.full])
        out = (f"{name:28s} {rps:8.0f} {rps / nginx_rps:7.2f} "
               f"{med([r.p50_ms for r in res.full]):7.2f} {med([r.p99_ms for r in res.full]):7.2f} "
               f"{med([r.server_cpu for r in res.full]):7.2f} "
               f"{med([r.wrk_cpu for r in res.full]):7.2f} | {_paced_cols(res.half)} | "
               f"{_paced_cols(res.common)} |")
        if res.targets:
            got = [r for r in res.half if r]
            ok = (rps >= TARGET_RATIO * nginx_rps and len(got) * 2 > len(res.half)
                  and med([r.p99_ms for r in got]) <= TARGET_P99_MS
                  and med([r.rps for r in got]) >= 0.95 * med(res.targets))
            out += " MET" if ok else " missed"
        print(out)
    print(f"\ntarget: >= {TARGET_RATIO}x nginx's req/s at full load (nginx row, same run), and "
          f"p99 <= {TARGET_P99_MS:g} ms at {TARGET_RATIO}x nginx's req/s (@0.5x columns)")
    print("cpu srv / cpu wrk: cores used by the server's processes and by wrk during the run "
          f"(of {os.cpu_count()}: they share the machine)")


if __name__ == "__main__":
    sys.exit(main())
