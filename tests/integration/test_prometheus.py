"""Integration: a real Prometheus server scrapes the milter, the log follower and the
tracker on loopback; after mail has flowed and a link was followed, our series are read
back through Prometheus's HTTP API."""

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
    targets = {"milter": free_port(), "maillog": free_port(), "web": free_port()}
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
    cfg = write_config(tmp_path / "tm", sock, metrics_listen=f"127.0.0.1:{targets['milter']}",
                       extra={"web": {"listen": f"127.0.0.1:{targets['web']}"},
                              "maillog": {"metrics_listen": f"127.0.0.1:{targets['maillog']}",
                                          "state_file": str(tmp_path / "tm" / "ml.state"),
                                          "mta_name": "lab.example", "poll_interval": 0.1}})
    milter = milter_process(cfg, sock).start()
    follower = None
    web = web_process(cfg, targets["web"])
    try:
        postfix = postfix_lab(milter=milter.spec)
        follower = subprocess.Popen(command(cfg, "maillog", str(postfix.log_path)),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        wait_until(lambda: series('sum(trackmilter_delivery_outcomes_total{status="sent"})')
                   >= 1, 30, what="delivery outcomes in prometheus")
        wait_until(lambda: series('sum(trackmilter_tracker_hits_total{verdict="machine"})')
                   >= 1, 30, what="tracker hits in prometheus")
        up = query(prom_port, "up")
        assert {r["metric"]["job"]: r["value"][1] for r in up} == {
            "trackmilter-milter": "1", "trackmilter-maillog": "1", "trackmilter-web": "1"}
        assert series("sum(trackmilter_build_info)") >= 3
        # Every running endpoint's exposition passes promtool's lint.
        if shutil.which("promtool"):
            for job, port in targets.items():
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",  # noqa: S310
                                            timeout=5) as resp:
                    text = resp.read()
                lint = subprocess.run(["promtool", "check", "metrics"], input=text,
                                      capture_output=True, timeout=30)
                assert lint.returncode == 0 and not lint.stdout.strip(), (
                    job, lint.stdout.decode(), lint.stderr.decode())
    finally:
        web.stop()
        if follower is not None:
            follower.send_signal(signal.SIGTERM)
            follower.wait(30)
        milter.stop()
