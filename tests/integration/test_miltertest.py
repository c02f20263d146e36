"""Protocol: Debian's miltertest speaks the milter protocol to the running daemon."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from trackmilter_lab import make_socket_dir
from trackmilter_lab.daemon import milter_process, wait_status, write_config

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).parent / "miltertest" / "protocol.lua"


@pytest.mark.skipif(shutil.which("miltertest") is None, reason="miltertest not installed")
def test_protocol_with_miltertest(tmp_path: Path) -> None:
    sock = make_socket_dir() / "milter.sock"
    cfg = write_config(tmp_path, sock)
    qid = "PROTO" + uuid.uuid4().hex[:8].upper()
    with milter_process(cfg, sock):
        proc = subprocess.run(
            ["miltertest", "-D", f"socket=unix:{sock}", "-D", f"qid={qid}", "-s", str(SCRIPT)],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "protocol-ok" in proc.stdout
        tid = re.search(r"tracking-id=([a-z2-7]{16})", proc.stdout)
        assert tid, proc.stdout
        [msg] = wait_status(cfg, qid)
    shutil.rmtree(sock.parent, ignore_errors=True)
    assert msg["tracking_id"] == tid.group(1)
    assert msg["rewritten"] is True and msg["link_count"] == 1
    rcpts = {r["address"]: r for r in msg["recipients"]}
    assert rcpts["rcpt@example.net"]["outcome"] == "accepted"
    assert (rcpts["refused@example.net"]["outcome"], rcpts["refused@example.net"]["status"]) == (
        "refused", "5.7.1")
