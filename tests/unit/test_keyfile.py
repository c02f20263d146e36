"""The milter's signer follows its key file (trackmilter.keyfile)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trackmilter.keyfile import WatchedSigner
from trackmilter.model import new_tracking_id
from trackmilter.tokens import Signer

OLD, NEW = "o" * 32, "n" * 32


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    info = error


def test_a_rotated_key_signs_within_the_check_interval(tmp_path: Path) -> None:
    key = tmp_path / "secret"
    key.write_text(OLD + "\n")
    now = [0.0]
    log = Log()
    signer = WatchedSigner(key, log, clock=lambda: now[0], check_every=1.0)
    tid = new_tracking_id()
    token = signer.for_message(tid).open()
    assert Signer([OLD.encode()]).verify(token).tracking_id == tid
    key.write_text(NEW + "\n" + OLD + "\n")  # rotation: the new key first, the old verifies
    os.utime(key, ns=(1, 10**18))  # a stamp of its own, whatever the file system's clock
    now[0] = 0.5
    assert signer.key_ids == Signer([OLD.encode()]).key_ids  # not looked at yet
    now[0] = 1.5
    token = signer.for_message(tid).open()
    assert Signer([NEW.encode()]).verify(token).tracking_id == tid
    assert log.events == [("keys_reloaded", {"key_ids": list(Signer(
        [NEW.encode(), OLD.encode()]).key_ids)})]


def test_a_file_that_does_not_read_keeps_the_keys_in_use(tmp_path: Path) -> None:
    key = tmp_path / "secret"
    key.write_text(OLD + "\n")
    now = [0.0]
    log = Log()
    signer = WatchedSigner(key, log, clock=lambda: now[0], check_every=1.0)
    key.write_text("short\n")  # half an edit: a key too short
    os.utime(key, ns=(1, 10**18))
    for t in (2.0, 3.0, 4.0):
        now[0] = t
        assert signer.key_ids == Signer([OLD.encode()]).key_ids
    assert [e for e, _ in log.events] == ["keys_not_reloaded"]  # said once, not per check
    key.write_text(NEW + "\n")
    os.utime(key, ns=(2, 2 * 10**18))
    now[0] = 5.0
    assert signer.key_ids == Signer([NEW.encode()]).key_ids
