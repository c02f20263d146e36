"""Postfix throughput without a milter, with a do-nothing pymilter, and with trackmilter.

    python tests/benchmarks/bench_postfix.py [--variants none,null,trackmilter] [-m 1000]

smtp-source (20 parallel sessions, one message per session by default) sends N copies of
a realistic HTML newsletter (multipart/alternative, quoted-printable HTML from the shared
corpus, ~25 links, ~30 KB) to a private Postfix instance on loopback, which relays to
smtp-sink. The milter variants talk to Postfix over a unix socket. Variants are
interleaved over several rounds (Postfix is reloaded with the next variant's
smtpd_milters); a run counts only when every message was accepted and delivered, and
when Postfix logged no milter warning (a milter that Postfix cannot reach would look
fast). msg/s is N / wall time of smtp-source; "e2e" adds the time until the last
delivery. Exit status 1 when trackmilter is below 0.9 x the do-nothing milter.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CORPUS_HTML = REPO / "tests" / "corpus" / "html"
DEFAULT_TEMPLATE = CORPUS_HTML / "postmark" / "basic-receipt.html"
NULLMILTER = HERE / "nullmilter.py"

sys.path.insert(0, str(REPO / "milter"))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "lab"))  # the test lab (trackmilter_lab)
from trackmilter.config import StoreSettings  # noqa: E402
from trackmilter_lab import (  # noqa: E402
    MilterProcess,
    PostfixInstance,
    free_port,
    make_socket_dir,
    postfix_available,
    wait_until,
)
from trackmilter_lab import daemon as tmd  # noqa: E402

VARIANTS = ("none", "null", "trackmilter")
# Diagnostic variants (not in the default run): trackmilter with parts of its work turned
# off, to show where its cost goes.
TRACKMILTER_VARIANTS: dict[str, dict[str, dict[str, object]]] = {
    "trackmilter": {},
    # records and adds the tracking header; no body change
    "tm-record": {"tracking": {"base_url": ""}},
    # body replaced with the open pixel only; links not rewritten
    "tm-pixel": {"tracking": {"rewrite_links": False}},
    # everything, but each body is rewritten once and the result reused (ceilingmilter.py):
    # the figure a rewriting engine that cost nothing would reach
    "tm-ceiling": {},
}
CEILINGMILTER = HERE / "ceilingmilter.py"
# The do-nothing milter that also hands the body back with an image tag appended: what a
# body change costs pymilter and Postfix's cleanup, without any of our code (diagnostic).
NULL_VARIANTS = {"null": [], "null-replace": ["--replace"]}
ALL_VARIANTS = ("none", *NULL_VARIANTS, *TRACKMILTER_VARIANTS)
SENDER = "news@shop.example.org"
RCPT = "reader@example.net"  # smtp-source -N prepends a sequence number
THRESHOLD = 0.9


# -- the message ---------------------------------------------------------------------


def newsletter(template: Path, links: int = 25, cte: str = "quoted-printable") -> bytes:
    """A multipart/alternative newsletter built from an HTML template, with `links` links.

    Handlebars placeholders become concrete values, as after an ESP's merge; links are
    added to a footer until there are `links` of them. No Message-ID or Date: Postfix adds
    a fresh one to each copy.
    """
    html = template.read_text(encoding="utf-8")
    n = 0

    def url(m: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return f'href="https://shop.example.org/{m.group(1).replace(".", "/")}?u=8f3a2c&n={n}"'

    html = re.sub(r'href="\{\{\{?\s*([\w.]+)\s*\}?\}\}"', url, html)
    html = re.sub(r"\{\{\{?[^}]*\}?\}\}", "Sample", html)
    have = len(re.findall(r"<a\s[^>]*href=", html, flags=re.IGNORECASE))
    extra = [
        f'<a href="https://shop.example.org/catalog/item-{i}?utm_source=newsletter'
        f'&amp;utm_medium=email&amp;utm_campaign=spring">Item {i}</a><br>'
        for i in range(max(0, links - have))
    ]
    footer = "<p>\n" + "\n".join(extra) + "\n</p>\n"
    html = html.replace("</body>", footer + "</body>") if "</body>" in html else html + footer
    hrefs = re.findall(r'href="(https?://[^"]+)"', html)
    text = "Your receipt and this week's offers\n\n" + "\n".join(
        f"* {h.replace('&amp;', '&')}" for h in hrefs
    )
    msg = EmailMessage()
    msg["From"] = f"Example Shop <{SENDER}>"
    msg["To"] = f"<{RCPT}>"
    msg["Subject"] = "Your receipt and this week's offers"
    msg["List-Unsubscribe"] = "<https://shop.example.org/unsubscribe?u=8f3a2c>"
    msg.set_content(text, cte="quoted-printable")
    msg.add_alternative(html, subtype="html", cte=cte)
    # smtp-source -F appends CRLF to every line and dot-stuffs: give it LF lines.
    return msg.as_bytes().replace(b"\r\n", b"\n")


# -- the runs ------------------------------------------------------------------------


@dataclass
class Run:
    variant: str
    messages: int
    seconds: float
    e2e_seconds: float
    delivered: int
    milter_warnings: int
    ok: bool
    milter_cpu: float = 0.0  # seconds of milter CPU (user + system) during the run
    postfix_cpu: float = 0.0  # seconds of CPU of the Postfix instance (all its daemons)
    machine_cpu: float = 0.0  # seconds of CPU of the whole machine (all cores, not idle)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def e2e_rate(self) -> float:
        return self.messages / self.e2e_seconds

    @property
    def cpu_ms_per_msg(self) -> float:
        return 1000 * self.milter_cpu / self.messages

    @property
    def postfix_ms_per_msg(self) -> float:
        return 1000 * self.postfix_cpu / self.messages

    @property
    def machine_ms_per_msg(self) -> float:
        return 1000 * self.machine_cpu / self.messages


def _stat_fields(pid: int) -> list[str]:
    # Fields after "(comm)": stat(5) field n is index n - 3.
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def cpu_seconds(pid: int | None, children: bool = False) -> float:
    """User + system CPU time of a process (all its threads) so far; with ``children``,
    also that of its exited and reaped children."""
    if pid is None:
        return 0.0
    try:
        f = _stat_fields(pid)
    except OSError:
        return 0.0  # gone since it was listed
    ticks = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time of the machine, all cores, that was not idle or waiting for I/O."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    pf: PostfixInstance
    msg_file: Path
    milters: dict[str, str | None] = field(default_factory=dict)
    pids: dict[str, int | None] = field(default_factory=dict)

    def smtpd_pids(self) -> list[int]:
        pids = []
        for pid in self.pf.instance_pids():
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "smtpd":
                pids.append(pid)
        return pids

    def postfix_cpu(self) -> float:
        """CPU of the instance: the master with its reaped children, and the live daemons."""
        master = self.pf.master_pid
        pids = [p for p in self.pf.instance_pids() if p != master]
        return cpu_seconds(master, children=True) + sum(cpu_seconds(p) for p in pids)

    def select(self, variant: str) -> None:
        spec = self.milters[variant]
        if self.pf.milter != spec:
            self.pf.set_milter(spec)
            # Old smtpd processes keep the old milter list until they exit; they are idle
            # between runs and leave at once after a reload.
            wait_until(lambda: not self.smtpd_pids(), 30, what="old smtpd processes to exit")

    def run(self, variant: str, messages: int) -> Run:
        self.select(variant)
        offset = self.pf.log_size()
        argv = [
            "smtp-source",
            "-s", str(self.args.sessions),
            "-m", str(messages),
            "-F", str(self.msg_file),
            "-f", SENDER,
            "-t", RCPT,
            "-N",
            "-M", "bench-client.example",
        ]  # fmt: skip
        if self.args.reuse:
            argv.append("-d")
        argv.append(f"127.0.0.1:{self.pf.smtp_port}")
        pid = self.pids.get(variant)
        cpu0, pf0, all0 = cpu_seconds(pid), self.postfix_cpu(), machine_cpu_seconds()
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - t0
        if proc.returncode != 0:
            raise SystemExit(f"smtp-source failed ({proc.returncode}): {proc.stderr.strip()}")
        sent = re.compile(r"postfix/smtp\[\d+\]: \w+: to=<\d+reader@example\.net>.*status=sent")

        def delivered() -> int:
            return len(sent.findall(self.pf.log_text(offset)))

        try:
            wait_until(lambda: delivered() >= messages, 300, 0.05, "every message delivered")
        except TimeoutError:
            pass
        e2e = time.monotonic() - t0
        cpu = cpu_seconds(pid) - cpu0
        pf_cpu = self.postfix_cpu() - pf0
        all_cpu = machine_cpu_seconds() - all0
        log = self.pf.log_text(offset)
        count = delivered()
        warnings = len(re.findall(r"warning: .*[Mm]ilter", log))
        rejects = len(re.findall(r"(?:milter-)?reject:", log))
        ok = count == messages and warnings == 0 and rejects == 0
        return Run(variant, messages, seconds, e2e, count, warnings, ok, cpu, pf_cpu, all_cpu)


def start_milters(
    bench: Bench, variants: list[str], sock_dir: Path, python: str, procs: list[MilterProcess]
) -> None:
    """Start the milters of `variants`, appending each to `procs` as soon as it runs."""
    bench.milters["none"] = None
    for name, flags in NULL_VARIANTS.items():
        if name not in variants:
            continue
        sock = sock_dir / f"{name}.sock"
        procs.append(MilterProcess([python, str(NULLMILTER), f"unix:{sock}", *flags], sock))
        procs[-1].start()
        bench.milters[name] = procs[-1].spec
        bench.pids[name] = procs[-1].pid
    for name, overrides in TRACKMILTER_VARIANTS.items():
        if name not in variants:
            continue
        sock = sock_dir / f"{name}.sock"
        # The lab flushes every 50 ms to keep tests quick; benchmark the shipped default.
        extra: dict[str, dict[str, object]] = {
            "store": {"flush_interval": StoreSettings().flush_interval}
        }
        for section, values in overrides.items():
            extra.setdefault(section, {}).update(values)
        cfg = tmd.write_config(
            bench.work / name,
            sock,
            metrics_listen="127.0.0.1:0",
            log_level="warning",
            extra=extra,
        )
        proc = tmd.milter_process(cfg, sock, python=python)
        if name == "tm-ceiling":
            proc = MilterProcess([python, str(CEILINGMILTER), "--config", str(cfg), "milter"],
                                 sock, log_path=cfg.parent / "milter.log")
        procs.append(proc)
        procs[-1].start()
        bench.milters[name] = procs[-1].spec
        bench.pids[name] = procs[-1].pid


def report(runs: list[Run], variants: list[str], args: argparse.Namespace) -> int:
    print()
    header = (
        f"{'variant':<12} {'runs':>4} {'median msg/s':>13} {'min':>8} {'max':>8} "
        f"{'e2e msg/s':>10} {'CPU ms/msg: milter':>19} {'postfix':>8} {'machine':>8} "
        f"{'bad runs':>8}"
    )
    print(header)
    print("-" * len(header))
    medians: dict[str, float] = {}
    for v in variants:
        good = [r for r in runs if r.variant == v and r.ok]
        bad = [r for r in runs if r.variant == v and not r.ok]
        if good:
            rates = [r.rate for r in good]
            medians[v] = statistics.median(rates)
            e2e = statistics.median(r.e2e_rate for r in good)
            cpu = statistics.median(r.cpu_ms_per_msg for r in good)
            pf = statistics.median(r.postfix_ms_per_msg for r in good)
            machine = statistics.median(r.machine_ms_per_msg for r in good)
            print(
                f"{v:<12} {len(good):>4} {medians[v]:>13.1f} {min(rates):>8.1f} "
                f"{max(rates):>8.1f} {e2e:>10.1f} {cpu:>19.2f} {pf:>8.2f} {machine:>8.2f} "
                f"{len(bad):>8}"
            )
        else:
            print(
                f"{v:<12} {0:>4} {'-':>13} {'-':>8} {'-':>8} {'-':>10} {'-':>19} {'-':>8} "
                f"{'-':>8} {len(bad):>8}"
            )
    print()
    if "null" in medians and "none" in medians:
        print(f"null/none        = {medians['null'] / medians['none']:.2f}")
    for v in ("null-replace", *TRACKMILTER_VARIANTS):
        if v != "trackmilter" and v in medians and "null" in medians:
            print(f"{v + '/null':<16} = {medians[v] / medians['null']:.2f}  (diagnostic)")
    if "trackmilter" in variants:
        if "trackmilter" not in medians or "null" not in medians:
            print("trackmilter/null = n/a (no valid run)  -> FAIL")
            return 1
        ratio = medians["trackmilter"] / medians["null"]
        verdict = "PASS" if ratio >= args.threshold else "FAIL"
        print(f"trackmilter/null = {ratio:.2f}  (>= {args.threshold:.2f} required) -> {verdict}")
        return 0 if verdict == "PASS" else 1
    print("trackmilter/null = n/a (trackmilter not among the variants)")
    return 0 if all(r.ok for r in runs) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {','.join(ALL_VARIANTS)}",
    )
    p.add_argument("-m", "--messages", type=int, default=1000, help="messages per run")
    p.add_argument("-s", "--sessions", type=int, default=20, help="parallel SMTP sessions")
    p.add_argument("--rounds", type=int, default=3, help="runs per variant, interleaved")
    p.add_argument("--warmup", type=int, default=200, help="messages per variant before timing")
    p.add_argument(
        "--reuse", action="store_true", help="smtp-source -d: several messages per session"
    )
    p.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help="HTML template")
    p.add_argument("--cte", default="quoted-printable", help="HTML part transfer encoding")
    p.add_argument(
        "--in-flow-delay",
        default="0s",
        help="Postfix in_flow_delay (default 0s: intake not tied to delivery)",
    )
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="required trackmilter/null")
    p.add_argument("--python", default=sys.executable, help="interpreter for the milters")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)  # fmt: skip
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(ALL_VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {','.join(ALL_VARIANTS)}")
    for tool in ("smtp-source", "smtp-sink"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            p.error(f"{tool} not found (Debian: it is in the postfix package)")
    if not postfix_available():
        p.error("postfix is not installed")

    work = Path(tempfile.mkdtemp(prefix="tm-bench-", dir="/tmp"))
    work.chmod(0o755)
    msg_file = work / "newsletter.eml"
    msg_file.write_bytes(newsletter(args.template, cte=args.cte))
    size = msg_file.stat().st_size
    print(
        f"message: {size / 1024:.1f} KB, {args.template.name}, "
        f"{args.messages} msgs x {args.rounds} rounds, {args.sessions} sessions, "
        f"variants {','.join(variants)}"
    )

    sink_port = free_port()
    sink = subprocess.Popen(
        ["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "1024"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pf = PostfixInstance(
        work / "postfix",
        relay_port=sink_port,
        extra_main_cf={
            "in_flow_delay": args.in_flow_delay,
            # One destination (the sink): let it take as many connections as we send.
            "default_destination_concurrency_limit": "50",
            "smtpd_client_connection_count_limit": "0",
        },
    )
    procs: list[MilterProcess] = []
    runs: list[Run] = []
    try:
        pf.start()
        bench = Bench(args, work, pf, msg_file)
        start_milters(bench, variants, make_socket_dir(work / "sock"), args.python, procs)
        if args.warmup:
            for v in variants:
                bench.run(v, args.warmup)
        for rnd in range(1, args.rounds + 1):
            # Rotate the order each round so no variant always follows the same one.
            order = variants[rnd - 1 :] + variants[: rnd - 1]
            for v in order:
                r = bench.run(v, args.messages)
                runs.append(r)
                flag = (
                    ""
                    if r.ok
                    else (
                        f"  INVALID: delivered {r.delivered}/{r.messages}, "
                        f"{r.milter_warnings} milter warnings"
                    )
                )
                print(
                    f"round {rnd} {v:<12} {r.rate:7.1f} msg/s  ({r.seconds:.2f} s; "
                    f"e2e {r.e2e_rate:.1f} msg/s; CPU ms/msg: milter {r.cpu_ms_per_msg:.2f}, "
                    f"postfix {r.postfix_ms_per_msg:.2f}, machine {r.machine_ms_per_msg:.2f})"
                    f"{flag}",
                    flush=True,
                )
        return report(runs, variants, args)
    finally:
        for proc in procs:
            # trackmilter flushes its batched writer on SIGTERM; the null milter has nothing.
            proc.stop(graceful=proc.socket_path.stem in TRACKMILTER_VARIANTS)
        pf.stop()
        sink.terminate()
        sink.wait(10)
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
