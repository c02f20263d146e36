"""Through the real daemon (miltertest speaking the milter protocol): a message whose only
links are too long to sign (3,500 characters, 5 MB), and one in an unknown charset, pass
unmodified and still get their tracking header and their record, with the reason."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from trackmilter_lab import make_socket_dir
from trackmilter_lab.daemon import milter_process, wait_status, write_config

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).parent / "miltertest" / "left_alone.lua"


@pytest.mark.skipif(shutil.which("miltertest") is None, reason="miltertest not installed")
def test_long_links_and_unknown_charsets_left_alone(tmp_path: Path) -> None:
    sock = make_socket_dir() / "milter.sock"
    cfg = write_config(tmp_path, sock, extra={"tracking": {"open_pixel": False}})
    qid = "LONG" + uuid.uuid4().hex[:8].upper()
    with milter_process(cfg, sock):
        proc = subprocess.run(
            ["miltertest", "-D", f"socket=unix:{sock}", "-D", f"qid={qid}", "-s", str(SCRIPT)],
            capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "left-alone-ok" in proc.stdout
        tid = re.search(r"tracking-id=([a-z2-7]{16})", proc.stdout)
        assert tid, proc.stdout
        [msg] = wait_status(cfg, qid)
        [charset_msg] = wait_status(cfg, qid + "C")
    shutil.rmtree(sock.parent, ignore_errors=True)
    assert msg["tracking_id"] == tid.group(1) and msg["tracking_header"] is True
    assert msg["rewritten"] is False and msg["skip_reason"] == "url_too_long"
    assert msg["links"] == [] and msg["size"] > 5 * 1024 * 1024
    assert charset_msg["skip_reason"] == "charset" and charset_msg["tracking_header"] is True
    assert charset_msg["rewritten"] is False
    lines = [json.loads(line) for line in (cfg.parent / "milter.log").read_text().splitlines()
             if line.startswith("{")]
    by_queue = {e.get("queue_id"): e for e in lines if e.get("event") == "message"}
    assert by_queue[qid]["links_skipped"] == {"url_too_long": 2}
    assert by_queue[qid + "C"]["skip_reason"] == "charset"
    assert not [e for e in lines if e.get("event") in ("rewrite_failed", "callback_failed")]
