"""Each tracker process claims a spool directory of its own and adopts what dead ones left."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from trackmilter.web.server import claim_spool


def _dir_with_segment(base: Path, name: str) -> Path:
    d = base / name
    d.mkdir(parents=True)
    (d / f"spool-0000000000000000000{name[-1]}-1-1.jsonl").write_text('{"kind":"x"}\n')
    return d


def test_claim_takes_a_free_directory_and_adopts_orphaned_segments(tmp_path: Path) -> None:
    live = _dir_with_segment(tmp_path, "web-0")
    _dir_with_segment(tmp_path, "web-1")
    orphan = _dir_with_segment(tmp_path, "web-2")
    # web-0 belongs to a live worker: it holds the directory's lock.
    held = os.open(live / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        own, fd = claim_spool(tmp_path)
        try:
            assert own == tmp_path / "web-1"
            # The orphan's segment is now ours to replay; the live worker's is left alone.
            assert sorted(p.name for p in own.glob("spool-*.jsonl")) == [
                "spool-00000000000000000001-1-1.jsonl", "spool-00000000000000000002-1-1.jsonl"]
            assert list(orphan.glob("spool-*.jsonl")) == []
            assert len(list(live.glob("spool-*.jsonl"))) == 1
        finally:
            os.close(fd)
    finally:
        os.close(held)
