"""Integration: `trackmilter web` as a real process (granian, two workers) over HTTP: every
hit answered is stored, even when the process is stopped at once; with the database gone,
redirects still work and hits wait in the spool until it is back."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackmilter.model import new_tracking_id
from trackmilter.tokens import Signer
from trackmilter_lab import free_port, wait_until
from trackmilter_lab.daemon import command, write_config
from trackmilter_lab.webproc import WebProcess, request, web_process

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[tuple[WebProcess, Path, Signer]]:
    import subprocess

    port = free_port()
    cfg = write_config(tmp_path / "tm", tmp_path / "unused.sock", extra={
        "web": {"listen": f"127.0.0.1:{port}", "workers": 2}})
    subprocess.run(command(cfg, "db", "upgrade"), check=True, capture_output=True, timeout=60)
    web = web_process(cfg, port).start()
    try:
        yield web, cfg, Signer.from_file(cfg.parent / "secret")
    finally:
        web.stop()


def stored(cfg: Path) -> int:
    with sqlite3.connect(cfg.parent / "trackmilter.db") as db:
        return int(db.execute("SELECT count(*) FROM hits").fetchone()[0])


def test_every_answered_hit_is_stored_when_stopped_at_once(
        tracker: tuple[WebProcess, Path, Signer]) -> None:
    web, cfg, signer = tracker
    tid = new_tracking_id()
    answered = 0
    for i in range(1, 201):
        status, headers, _ = request(web.port, f"/c/{signer.sign_click(tid, i, f'https://x.example/{i}')}",
                                     headers={"User-Agent": UA})
        assert status == 302 and headers["location"] == f"https://x.example/{i}"
        answered += 1
    # Two workers answered; whichever answers the scrape reports both (multiprocess mode).
    for _ in range(4):
        status, _, body = request(web.port, "/metrics")
        assert status == 200
        total = sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
                    if line.startswith("trackmilter_tracker_hits_total{"))
        assert total == answered
        assert 'trackmilter_build_info{' in body.decode() and 'version="' in body.decode()
    assert web.stop() == 0
    assert stored(cfg) == answered


def test_database_gone_redirects_still_work_and_hits_are_spooled(
        tracker: tuple[WebProcess, Path, Signer]) -> None:
    web, cfg, signer = tracker
    db = cfg.parent / "trackmilter.db"
    aside = db.with_suffix(".away")
    tid = new_tracking_id()
    wait_until(lambda: request(web.port, "/readyz")[0] == 200, 10, what="ready")
    db.rename(aside)  # the store no longer finds its schema: writes fail, hits go to the spool
    try:
        for i in range(1, 21):
            token = signer.sign_click(tid, i, f"https://x.example/{i}")
            assert request(web.port, f"/c/{token}", headers={"User-Agent": UA})[0] == 302
        wait_until(lambda: request(web.port, "/readyz")[0] == 503, 20, what="not ready")

        def spooled() -> bool:
            # A segment is renamed into place before its first events are written to it.
            return any(p.name.startswith("spool-") and p.stat().st_size > 0
                       for p in (cfg.parent / "spool").glob("web-*/spool-*"))

        wait_until(spooled, 20, what="hits in a spool segment")
    finally:
        # SQLite keeps the file it opened: restore it under a stopped tracker, as an
        # administrator would restore a database, and start a new one.
        web.stop()
        if db.exists():
            db.unlink()
        aside.rename(db)
    assert stored(cfg) == 0
    again = web_process(cfg, web.port).start()
    try:
        wait_until(lambda: stored(cfg) == 20, 30, what="spooled hits replayed")
    finally:
        again.stop()


def test_sighup_reloads_the_key_file_without_losing_a_hit(
        tracker: tuple[WebProcess, Path, Signer]) -> None:
    """A key rotation: the new key goes first in the file, then `systemctl reload`
    (SIGHUP): the workers are replaced one by one, each reading the file again; a link
    signed with the new key answers once they have, and old links still do."""
    import os
    import secrets
    import signal

    web, cfg, old = tracker
    tid = new_tracking_id()
    new_key = secrets.token_hex(32)
    new = Signer([new_key.encode(), *[k.encode() for k in
                                      (cfg.parent / "secret").read_text().split()]])
    path = f"/c/{new.sign_click(tid, 1, 'https://x.example/new')}"
    assert request(web.port, path, headers={"User-Agent": UA})[0] == 404
    secret = cfg.parent / "secret"
    secret.write_text(new_key + "\n" + secret.read_text())
    assert web.pid is not None
    os.kill(web.pid, signal.SIGHUP)
    # Until both workers were replaced, a request may reach one with the old keys (404).
    assert wait_until(lambda: request(web.port, path, headers={"User-Agent": UA})[0] == 302,
                      timeout=60), web.output()
    assert request(web.port, f"/c/{old.sign_click(tid, 2, 'https://x.example/old')}",
                   headers={"User-Agent": UA})[0] == 302
    assert web.stop() == 0
    assert stored(cfg) == 2  # the two answered with a redirect; a 404 is no hit
