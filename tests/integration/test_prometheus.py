"""Integration: a real Prometheus server scrapes the milter, the log follower, the tracker
(two workers: prometheus-client's multiprocess mode), `trackmilter edge` and the webhook
sender on loopback; after mail has flowed and a link was followed, our series are read back
through Prometheus's HTTP API, and each daemon's exposition passes `promtool check metrics`
and holds its own families only."""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from trackmilter_lab import FakeMX, free_port, send, wait_until
from trackmilter_lab.daemon import BASE_URL, command, milter_process, write_config
from trackmilter_lab.webproc import request, web_process

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus is not installed (scripts/setup installs it)")


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
        data = json.load(resp)
    assert data["status"] == "success", data
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    targets = {"milter": free_port(), "maillog": free_port(), "web": free_port(),
               "edge": free_port(), "webhooks": free_port()}
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                   + "".join(f"  - job_name: trackmilter-{job}\n    static_configs:\n"
                             f"      - targets: ['127.0.0.1:{p}']\n"
                             for job, p in targets.items()))
    (tmp_path / "targets.json").write_text(json.dumps(targets))
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: _ready(port), 30, what="prometheus ready")
        yield port, tmp_path / "targets.json"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False


def test_prometheus_reads_our_series_after_mail_flowed(
        prometheus: tuple[int, Path], fake_mx: FakeMX, postfix_lab: Any, socket_dir: Path,
        tmp_path: Path) -> None:
    prom_port, targets_file = prometheus
    targets = json.loads(targets_file.read_text())
    sock = socket_dir / "trackmilter.sock"
    hook_secret = tmp_path / "hook.secret"
    hook_secret.write_text("0123456789abcdef0123456789abcdef\n")
    (tmp_path / "hits.log").touch()
    cfg = write_config(tmp_path / "tm", sock, metrics_listen=f"127.0.0.1:{targets['milter']}",
                       extra={"web": {"listen": f"127.0.0.1:{targets['web']}", "workers": 2},
                              "maillog": {"metrics_listen": f"127.0.0.1:{targets['maillog']}",
                                          "state_file": str(tmp_path / "tm" / "ml.state"),
                                          "mta_name": "lab.example", "poll_interval": 0.1},
                              "edge": {"log": str(tmp_path / "hits.log"),
                                       "state_file": str(tmp_path / "tm" / "edge.state"),
                                       "metrics_listen": f"127.0.0.1:{targets['edge']}"},
                              # Nobody listens there: every POST is retried.
                              "webhooks": {"metrics_listen": f"127.0.0.1:{targets['webhooks']}",
                                           "endpoints": [{
                                               "url": f"http://127.0.0.1:{free_port()}/hook",
                                               "secret_file": str(hook_secret)}]}})
    milter = milter_process(cfg, sock).start()
    others: list[subprocess.Popen[bytes]] = []
    web = web_process(cfg, targets["web"])
    try:
        postfix = postfix_lab(milter=milter.spec)
        for argv in (("maillog", str(postfix.log_path)), ("edge",), ("webhooks",)):
            others.append(subprocess.Popen(command(cfg, *argv), stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        web.start()
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "a@example.com", "bob@example.net", "hi"
        msg.set_content("plain")
        msg.add_alternative('<p><a href="https://shop.example.org/x">x</a></p>', subtype="html")
        assert send("127.0.0.1", postfix.smtp_port, "a@example.com", ["bob@example.net"],
                    msg.as_bytes(policy=email.policy.SMTP)) == {}
        got = fake_mx.wait_for_count(1, timeout=30)[0]
        html = email.message_from_bytes(got.data, policy=email.policy.default).get_body(
            preferencelist=("html",)).get_content()  # type: ignore[union-attr]
        (path,) = re.findall(re.escape(BASE_URL) + r"(/c/[A-Za-z0-9_-]+)", html)
        assert request(targets["web"], path, headers={"User-Agent": "curl/8"})[0] == 302

        def series(expr: str) -> float:
            result = query(prom_port, expr)
            return float(result[0]["value"][1]) if result else 0.0

        wait_until(lambda: series('sum(trackmilter_milter_messages_total{action="rewritten"})')
                   >= 1, 30, what="milter messages in prometheus")
        wait_until(lambda: series('sum(trackmilter_delivery_outcomes_total{outcome="sent"})')
                   >= 1, 30, what="delivery outcomes in prometheus")
        wait_until(lambda: series('sum(trackmilter_tracker_hits_total{verdict="machine"})')
                   >= 1, 30, what="tracker hits in prometheus")
        wait_until(lambda: len(query(prom_port, "up == 1")) == len(targets), 30,
                   what="every target up")
        up = query(prom_port, "up")
        assert {r["metric"]["job"]: r["value"][1] for r in up} == {
            f"trackmilter-{job}": "1" for job in targets}
        # The dashboard's MTA variable: the milter and the follower name theirs.
        assert series('count(trackmilter_build_info{mta="lab.example"})') == 2
        assert series("count(trackmilter_build_info)") == len(targets)
        # Every running endpoint's exposition passes promtool's lint and holds only the
        # families of its daemon, the process_* series (but the tracker's workers) and no
        # _created series.
        for job, port in targets.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",  # noqa: S310
                                        timeout=5) as resp:
                text = resp.read()
            families = set(re.findall(rb"^# TYPE (trackmilter_[a-z_]+?)(?:_total)? ", text,
                                      re.M))
            assert families, job
            assert not [f for f in families if not f.startswith(OWN[job])], (job, families)
            assert b"_created" not in text, job
            assert (b"process_cpu_seconds_total" in text) is (job != "web"), job
            if shutil.which("promtool"):
                lint = subprocess.run(["promtool", "check", "metrics"], input=text,
                                      capture_output=True, timeout=30)
                assert lint.returncode == 0 and not lint.stdout.strip(), (
                    job, lint.stdout.decode(), lint.stderr.decode())
    finally:
        web.stop()
        for proc in others:
            proc.send_signal(signal.SIGTERM)
        for proc in others:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        milter.stop()


# The prefixes of the families each daemon exports (trackmilter.metrics.DAEMONS).
_STORE = (b"trackmilter_build_info", b"trackmilter_store_")
OWN: dict[str, tuple[bytes, ...]] = {
    "milter": (*_STORE, b"trackmilter_milter_", b"trackmilter_errors", b"trackmilter_reports"),
    "maillog": (*_STORE, b"trackmilter_maillog_", b"trackmilter_delivery_",
                b"trackmilter_tracker_verdict_revisions"),
    "web": (*_STORE, b"trackmilter_tracker_"),
    "edge": (*_STORE, b"trackmilter_tracker_hit", b"trackmilter_tracker_invalid_tokens",
             b"trackmilter_tracker_verdict_revisions", b"trackmilter_edge_"),
    "webhooks": (b"trackmilter_build_info", b"trackmilter_webhook_"),
}
