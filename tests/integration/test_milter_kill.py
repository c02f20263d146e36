"""Integration: trackmilter killed (SIGKILL) again and again while it rewrites mail, with
real Postfix configured as shipped (conf/postfix/main.cf.snippet: `{ milter,
default_action=tempfail }`).

Every message Postfix answered 250 must reach the fake MX once, with either the fully
rewritten or the original body, never a cut-off one; nothing may land in the `corrupt`
queue; a client told 4xx sends again, as a real client would, until it gets 250.

The big newsletter (about 1 MB, 5000 links) makes libmilter send the new body in some
twenty SMFIR_REPLBODY packets. Most rounds kill the milter while it is sending them,
each after a different number of bytes (tests/support/milterkill.py watches the milter's
write counter); the others kill it at a random moment after the end of DATA, or between
messages. A second client sends small newsletters all the while, so kills also land on
other stages of other transactions. About 20 s.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support import poll
from tests.support.milter_failure import queue_files
from tests.support.milterkill import (
    DELAY,
    IDLE,
    PACKET,
    REPLACING,
    Attempt,
    Killer,
    Ledger,
    attempt,
    send_until_accepted,
)

from trackmilter.tokens import Signer
from trackmilter_lab import FakeMX, MilterProcess, PostfixInstance, ReceivedMessage
from trackmilter_lab.daemon import milter_process, write_config

pytestmark = pytest.mark.integration

SENDER = "alice@example.com"
RCPT = "bob@example.net"
BIG_LINKS = 5000
SMALL_LINKS = 20


CLICK = re.compile(rb'href="https://t\.example/c/([A-Za-z0-9_-]+)"')
PIXEL = re.compile(rb'<img src="https://t\.example/o/[A-Za-z0-9_-]+"[^>]*/>')
ORIGINAL_LINK = re.compile(rb'href="https://shop\.example\.org/[^"]*"')
MESSAGE_ID = re.compile(rb"^Message-ID: <([^>]+)@example\.com>", re.MULTILINE | re.IGNORECASE)


def newsletter(tag: str, links: int, filler: int) -> bytes:
    parts = ["<html><body>\r\n"]
    for i in range(links):
        parts.append(f"<p>Paragraph {i} {'lorem ipsum dolor sit amet ' * filler}"
                     f'<a href="https://shop.example.org/item/{i}?src=mail&amp;m={tag}">'
                     f"item {i}</a></p>\r\n")
    parts.append("<p>END-OF-BODY</p></body></html>\r\n")
    head = (f"From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@example.com>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n")
    return (head + "".join(parts)).encode()


def body_of(raw: bytes) -> bytes:
    return raw.partition(b"\r\n\r\n")[2]


@dataclass
class Rig:
    mx: FakeMX
    postfix: PostfixInstance
    killer: Killer
    signer: Signer


@pytest.fixture
def make_rig(fake_mx: FakeMX, postfix_lab: Any, socket_dir: Path,
             tmp_path: Path) -> Iterator[Any]:
    milters: list[MilterProcess] = []

    def make(**postfix_opts: Any) -> Rig:
        sock = socket_dir / "trackmilter.sock"
        cfg = write_config(tmp_path / "tm", sock, log_level="warning")
        milter = milter_process(cfg, sock).start()
        milters.append(milter)
        postfix = postfix_lab(milter=milter.spec, **postfix_opts)
        return Rig(fake_mx, postfix, Killer(milter), Signer.from_file(cfg.parent / "secret"))

    yield make
    for milter in milters:
        milter.stop(graceful=False)


class Books:
    """The messages sent (tag -> raw, links) and what became of them."""

    def __init__(self) -> None:
        self.sent: dict[str, tuple[bytes, int]] = {}
        self.ledger = Ledger()

    @staticmethod
    def delivered(messages: list[ReceivedMessage]) -> dict[str, list[ReceivedMessage]]:
        """The messages the MX received, by the tag in their Message-ID."""
        out: dict[str, list[ReceivedMessage]] = {}
        for m in messages:
            found = MESSAGE_ID.search(m.data.partition(b"\r\n\r\n")[0])
            if found:
                out.setdefault(found.group(1).decode(), []).append(m)
        return out


def verdict(rig: Rig, raw: bytes, links: int, got: ReceivedMessage) -> str:
    """What the MX got: "rewritten" (every link and the pixel, the rest byte for byte),
    "original", or what is wrong with it."""
    original, body = body_of(raw), got.body
    if body == original:
        return "original"
    tokens = CLICK.findall(body)
    if len(tokens) != links or len(PIXEL.findall(body)) != 1:
        return f"cut off or mixed: {len(tokens)} of {links} links, {len(body)} bytes"
    same = PIXEL.sub(b"", CLICK.sub(b'href="LINK"', body)) == ORIGINAL_LINK.sub(
        b'href="LINK"', original)
    if not same:
        return "text differs from the original apart from the links"
    for index in (0, links - 1):
        data = rig.signer.verify(tokens[index].decode())
        if not data.url.startswith(f"https://shop.example.org/item/{index}?"):
            return f"link {index} leads to {data.url}"
    return "rewritten"


def run_rounds(rig: Rig, books: Books, rounds: int, seed: int, *, weights: tuple[int, int, int],
               background: bool) -> int:
    """Calibrate, then `rounds` big newsletters, each with one kill; returns the size of
    the rewritten big body (about what the milter writes while replacing it)."""
    rng = random.Random(seed)
    port, killer = rig.postfix.smtp_port, rig.killer

    def register(tag: str, links: int, filler: int) -> bytes:
        raw = newsletter(tag, links, filler)
        books.sent[tag] = (raw, links)
        return raw

    # Calibration: one big newsletter, no kill. Its rewritten size aims the kills.
    raw = register("big-0", BIG_LINKS, 4)
    send_until_accepted(port, SENDER, [RCPT], raw, "big-0", books.ledger)
    [first] = rig.mx.wait_for(lambda ms: [m for m in ms if b"<big-0@" in m.data], 30)
    replaced = len(first.body)
    assert replaced > 10 * PACKET

    stop = threading.Event()
    errors: list[BaseException] = []

    def background_sender() -> None:
        n = 0
        try:
            while not stop.is_set():
                n += 1
                tag = f"small-{n}"
                small = register(tag, SMALL_LINKS, 1)
                send_until_accepted(port, SENDER, [RCPT], small, tag, books.ledger,
                                    ready=lambda: killer.up)
                stop.wait(0.1)  # pace: a steady trickle, not a flood
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=background_sender, daemon=True)
    if background:
        worker.start()
    try:
        for i in range(1, rounds + 1):
            tag = f"big-{i}"
            raw = register(tag, BIG_LINKS, 4)
            how = rng.choices((REPLACING, DELAY, IDLE), weights=weights)[0]
            target = rng.randint(PACKET, replaced)

            def first(raw: bytes = raw, tag: str = tag, how: str = how,
                      target: int = target) -> Any:
                return attempt(port, SENDER, [RCPT], raw, tag, how, killer, rng, target=target)

            send_until_accepted(port, SENDER, [RCPT], raw, tag, books.ledger, first=first,
                                ready=lambda: killer.up)
    finally:
        stop.set()
        if background:
            worker.join(120)
    assert not errors, errors
    return replaced


def cut_off(books: Books, replaced: int) -> list[Attempt]:
    """The attempts whose kill landed while the body was being replaced: at least one
    packet out, and (at the last look before the kill) a few still to go, the kill taking
    a moment to land. Postfix had part of the new body and no final reply."""
    return [a for a in books.ledger.attempts if a.killed and a.how == REPLACING
            and PACKET <= a.written_at_kill < replaced - 3 * PACKET]


def summary(books: Books, replaced: int) -> dict[str, int]:
    attempts = books.ledger.attempts
    return {
        "kills": sum(1 for a in attempts if a.killed),
        "cut_off": len(cut_off(books, replaced)),
        "killed_but_250": sum(1 for a in attempts if a.killed and a.code == 250),
        "tempfailed": sum(1 for a in attempts if 400 <= a.code < 500),
        "dropped": sum(1 for a in attempts if a.code == 0),
        "accepted": len(books.ledger.accepted),
        "retried": sum(1 for n in books.ledger.accepted.values() if n > 1),
    }


def test_killed_while_replacing_bodies_no_accepted_message_is_lost_or_cut(make_rig: Any) -> None:
    rig: Rig = make_rig()  # the lab's default: { milter, default_action=tempfail }
    assert "default_action=tempfail" in rig.postfix.postconf("-h", "smtpd_milters")
    books = Books()
    replaced = run_rounds(rig, books, rounds=30, seed=20240607, weights=(6, 3, 1),
                          background=True)
    stats = summary(books, replaced)
    print(f"kill rounds: {stats}")

    accepted = set(books.ledger.accepted)
    assert accepted == set(books.sent)  # every client got its 250 in the end

    def all_delivered(ms: list[ReceivedMessage]) -> dict[str, list[ReceivedMessage]] | None:
        by_tag = books.delivered(ms)
        return by_tag if accepted <= set(by_tag) else None

    delivered = rig.mx.wait_for(all_delivered, 60)
    poll(lambda: not any(queue_files(rig.postfix).values()), 30,
         what="every queue empty, the corrupt queue included")

    assert set(delivered) == accepted
    twice = {tag: len(ms) for tag, ms in delivered.items() if len(ms) != 1}
    assert not twice, f"delivered more than once: {twice}"
    verdicts = {tag: verdict(rig, *books.sent[tag], ms[0]) for tag, ms in delivered.items()}
    bad = {tag: v for tag, v in verdicts.items() if v not in ("rewritten", "original")}
    assert not bad, bad
    print(f"delivered: {Counter(verdicts.values())}")
    assert "corrupt" not in rig.postfix.log_text()
    # The test did what it says: kills landed mid-replacement, and each of those clients
    # was told to try again later.
    assert stats["cut_off"] >= 5, stats
    assert all(400 <= a.code < 500 for a in cut_off(books, replaced)), cut_off(books, replaced)


def test_with_accept_the_same_kills_leave_corrupt_queue_files(make_rig: Any) -> None:
    """The contrast: the old setting, milter_default_action = accept. Kills while the body
    is being replaced leave messages that were answered 250 in the corrupt queue."""
    # The bounce daemon exits (fatal) on each corrupt file; the master would hold the
    # service back for a minute after such a failure, and qmgr with it.
    rig: Rig = make_rig(milter_default_action="accept",
                        extra_main_cf={"service_throttle_time": "1s"})
    books = Books()
    replaced = run_rounds(rig, books, rounds=8, seed=7, weights=(1, 0, 0), background=False)
    stats = summary(books, replaced)
    qid = {m.group(2): m.group(1) for m in re.finditer(
        r"cleanup\[\d+\]: (\w+): message-id=<([^>]+)@example\.com>", rig.postfix.log_text())}

    def settled() -> dict[str, str] | None:
        corrupt = set(queue_files(rig.postfix, "corrupt")["corrupt"])
        delivered = books.delivered(rig.mx.messages)
        fate = {tag: "delivered" if tag in delivered else "corrupt" if qid[tag] in corrupt
                else "" for tag in books.ledger.accepted}
        return fate if all(fate.values()) else None

    fate = poll(settled, 60, what="every accepted message delivered or in the corrupt queue")
    delivered = books.delivered(rig.mx.messages)
    for tag, f in fate.items():
        if f == "delivered":
            fate[tag] = verdict(rig, *books.sent[tag], delivered[tag][0])
    lost = sorted(tag for tag, f in fate.items() if f == "corrupt")
    print(f"accept: kill rounds {stats}; answered 250 but corrupt: {lost}; {fate}")
    assert lost, stats
    # Every cut-off replacement was answered 250 and then lost (corrupt), or delivered
    # damaged (the rest of the old body read on from where the new one stopped).
    damaged = {tag for tag, f in fate.items() if f not in ("rewritten", "original")}
    assert {a.tag for a in cut_off(books, replaced)} <= damaged, fate
    # The client will not send those again, and no bounce tells the sender either.
    assert "bad record type" in rig.postfix.log_text()
