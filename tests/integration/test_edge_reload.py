"""`trackmilter edge` as a real process: SIGHUP reads the network lists (and the key file)
again, so `systemctl reload trackmilter-edge` after `networks refresh` changes the verdicts
of the hits that follow, without a restart and without losing a line."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from trackmilter.model import new_tracking_id
from trackmilter.tokens import Signer
from trackmilter.web.edge import HEADER_FIELDS
from trackmilter_lab import wait_until
from trackmilter_lab.daemon import command, write_config

UA = "curl/8.5.0"


def _line(path: str, client: str, rid: str) -> str:
    values = ["-"] * len(HEADER_FIELDS)
    return "\t".join(["tm2", f"{time.time():.3f}", rid, "302", "GET", path, client,
                      "127.0.0.1", UA, *values]) + "\n"


def _hits(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT client, network FROM hits").fetchall())


def test_sighup_reads_the_network_lists_again(tmp_path: Path) -> None:
    lists = tmp_path / "scanners.cidr"
    lists.write_text("198.51.100.0/24\n")
    log = tmp_path / "hits.log"
    log.write_text("")
    cfg = write_config(tmp_path / "tm", tmp_path / "unused.sock", extra={
        "edge": {"log": str(log), "state_file": str(tmp_path / "edge.state"),
                 "metrics_listen": "", "poll_interval": 0.05},
        "networks": {"sources": [{"label": "scanner", "format": "cidr", "path": str(lists)}]},
    })
    subprocess.run(command(cfg, "db", "upgrade"), check=True, capture_output=True, timeout=60)
    signer = Signer.from_file(cfg.parent / "secret")
    tid = new_tracking_id()
    out = open(tmp_path / "edge.out", "wb")
    proc = subprocess.Popen(command(cfg, "edge", python=sys.executable), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    db = cfg.parent / "trackmilter.db"
    try:
        def said(event: str) -> bool:
            text = (tmp_path / "edge.out").read_text(errors="replace")
            return any(json.loads(ln).get("event") == event
                       for ln in text.splitlines() if ln.startswith("{"))

        assert wait_until(lambda: said("edge_starting"), timeout=30)
        path = f"/c/{signer.sign_click(tid, 1, 'https://x.example/a')}"
        with open(log, "a") as f:
            f.write(_line(path, "203.0.113.7", "1" * 32))
        assert wait_until(lambda: db.exists() and "203.0.113.7" in _hits(db), timeout=30)
        assert _hits(db)["203.0.113.7"] == ""  # in no list yet
        lists.write_text("198.51.100.0/24\n203.0.113.0/24\n")  # a refresh adds a range
        os.kill(proc.pid, signal.SIGHUP)
        assert wait_until(lambda: said("edge_reloaded"), timeout=30)
        with open(log, "a") as f:
            f.write(_line(path, "203.0.113.8", "2" * 32))
        assert wait_until(lambda: "203.0.113.8" in _hits(db), timeout=30)
        assert _hits(db)["203.0.113.8"] == "scanner"
        assert proc.poll() is None  # a reload, not a stop
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        out.close()
    assert proc.returncode == 0
    assert len(_hits(db)) == 2  # every line read, each stored once
