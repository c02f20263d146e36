"""`trackmilter maillog -`: a log on standard input is read to its end, every outcome stored."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import create_engine, text

from trackmilter_lab.daemon import command, write_config

# Real Postfix 3.7 lines: pickup, aliases (orig_to), the error transport, retries.
LAB_LOG = Path(__file__).parents[1] / "unit" / "maillog" / "data" / "postfix-3.7-pickup.log"


def test_stdin_to_the_end_then_exit(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, tmp_path / "unused.sock", extra={"maillog": {
        "metrics_listen": "", "state_file": str(tmp_path / "state")}})
    subprocess.run(command(cfg, "db", "upgrade"), check=True, capture_output=True, timeout=60)
    proc = subprocess.run(command(cfg, "maillog", "-"), input=LAB_LOG.read_bytes(),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    engine = create_engine(f"sqlite:///{tmp_path / 'trackmilter.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM events WHERE kind = 'delivery' "
                                 "GROUP BY status")).all()
    engine.dispose()
    log = LAB_LOG.read_text()
    assert dict(rows) == {status: log.count(f"status={status}")
                          for status in ("sent", "bounced", "deferred")}
    # Read again (a restart without saved position): the same lines are the same events.
    subprocess.run(command(cfg, "maillog", "-"), input=LAB_LOG.read_bytes(),
                   capture_output=True, timeout=60, check=True)
    engine = create_engine(f"sqlite:///{tmp_path / 'trackmilter.db'}")
    with engine.connect() as conn:
        again = conn.execute(text("SELECT count(*) FROM events")).scalar_one()
    engine.dispose()
    assert again == sum(log.count(f"status={s}") for s in ("sent", "bounced", "deferred"))


def test_sigterm_while_waiting_on_stdin_flushes_and_exits(tmp_path: Path) -> None:
    import signal

    from tests.support import poll

    cfg = write_config(tmp_path, tmp_path / "unused.sock", extra={"maillog": {
        "metrics_listen": "", "state_file": str(tmp_path / "state")}})
    subprocess.run(command(cfg, "db", "upgrade"), check=True, capture_output=True, timeout=60)
    engine = create_engine(f"sqlite:///{tmp_path / 'trackmilter.db'}")

    def stored() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM events")).scalar_one())

    first = next(line for line in LAB_LOG.read_text().splitlines(keepends=True)
                 if "status=sent" in line)
    with subprocess.Popen(command(cfg, "maillog", "-"), stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdin is not None
        proc.stdin.write(first.encode())
        proc.stdin.flush()  # the pipe stays open: the follower waits for more
        poll(stored, timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert stored() == 1
    engine.dispose()
