"""Integration: nginx's edge (conf/nginx/trackmilter.lua) and `trackmilter edge`.

The Lua verifier is a second implementation of tokens.py's checks, so it is tested against
the first: a corpus of valid, rotated, forged, mutated and signed-but-malformed tokens is
requested from a real nginx and every answer must be what the Python signer decides. Then
the reader: every answered hit stored once, across a restart of the reader, a log
rotation, a re-read of the whole log and lines that are not ours.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from trackmilter import config as cfgmod
from trackmilter.model import new_tracking_id, tracking_id_to_bytes
from trackmilter.tokens import MAX_TOKEN_CHARS, InvalidToken, KeyFileError, Kind, Signer, TokenData
from trackmilter_lab import edgeproc, free_port
from trackmilter_lab.daemon import command, write_config
from trackmilter_lab.postfix import wait_until
from trackmilter_lab.webproc import request

pytestmark = pytest.mark.skipif(edgeproc.available() is not None,
                                reason=f"{edgeproc.available()}: scripts/setup installs it")

KEY = b"edge-test-key-0123456789abcdef"
OLD = b"edge-old-key-0123456789abcdef"
OTHER = b"someone-elses-key-0123456789"
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


def kid(key: bytes) -> int:
    return hashlib.sha256(b"trackmilter key id\0" + key).digest()[0]


def raw_token(body: bytes, key: bytes = KEY) -> str:
    """A token with a valid MAC over whatever payload: what only a key holder can make."""
    mac = hmac.new(key, body, hashlib.sha256).digest()[:10]
    return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode()


def head(kind: int, https: int = 1, version: int = 1, key: bytes = KEY) -> bytes:
    return bytes(((version << 4) | (kind << 1) | https, kid(key)))


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def corpus() -> list[tuple[str, str]]:
    """(path, what it is) pairs."""
    tid = new_tracking_id()
    tidb = tracking_id_to_bytes(tid)
    signer = Signer([KEY, OLD])
    m = signer.for_message(tid)
    out: list[tuple[str, str]] = []
    urls = ["https://shop.example.org/p?id=1&src=mail", "http://example.com/",
            "https://user@x.example:8443/p;x?q=a\\b#frag",
            "https://example.com/" + "!#$%25&'()*+,-./:;=?@[]_~" * 3,
            "https://example.com/" + "x" * 2000]
    for n, url in enumerate(urls):
        for index in (0, 1, 127, 128, 300, 70000):
            out.append((f"/c/{m.click(index, url)}", f"click {n} index {index}"))
    out.append((f"/o/{m.open()}", "open"))
    old = Signer([OLD]).for_message(tid)
    out += [(f"/c/{old.click(2, urls[0])}", "old key click"), (f"/o/{old.open()}", "old key open")]
    other = Signer([OTHER]).for_message(tid)
    out += [(f"/c/{other.click(2, urls[0])}", "unknown key"), (f"/o/{other.open()}", "unknown key")]
    tok = m.click(3, urls[0])
    raw = base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))
    for i in range(len(raw)):
        for bit in range(8):
            b = bytearray(raw)
            b[i] ^= 1 << bit
            out.append((f"/c/{b64(bytes(b))}", f"bit {bit} of byte {i} flipped"))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    out += [(f"/c/{tok[:-1]}{c}", "last character changed") for c in alphabet if c != tok[-1]]
    out += [(f"/c/{t}", "truncated or extended")
            for t in (tok[:-1], tok[:-4], tok + "A", tok + "AA", tok[4:], tok[:20], "x", "")]
    out += [(f"/c/{tok}{c}", "foreign character") for c in (".", "%2e", "=", "==", "%0d%0a")]
    out += [(f"/o/{tok}", "click token on the pixel path"), (f"/c/{m.open()}", "open on click"),
            ("/c//evil.example/", "protocol-relative"), ("/c/https://evil.example/", "absolute"),
            (f"/c/%EF%BD%81{tok}", "fullwidth prefix"), (f"/c/x/{tok}", "extra segment")]
    # The longest token the signer writes fits nginx's default request line (8k)...
    longest = m.click(1, "https://example.com/" + "y" * 3037)
    assert len(longest) == MAX_TOKEN_CHARS
    out.append((f"/c/{longest}", "exactly MAX_TOKEN_CHARS"))
    # ...one longer, though validly signed (the signer refuses to make it): refused by both.
    toolong = raw_token(head(0) + tidb + bytes((1,)) + b"example.com/" + b"y" * 3038)
    assert len(toolong) == MAX_TOKEN_CHARS + 2  # (+1 is no base64 length)
    out.append((f"/c/{toolong}", "longer than MAX_TOKEN_CHARS"))
    # Signed with our key, but not what the signer ever writes.
    idx = bytes((5,))
    crafted: list[tuple[str, bytes, str]] = [
        ("c", head(0, version=2) + tidb + idx + b"example.com/", "version 2"),
        ("c", head(2) + tidb + idx + b"example.com/", "kind 2"),
        ("o", head(7) + tidb + idx, "kind 7"),
        ("c", head(0) + tidb + idx, "click without a URL"),
        ("c", head(0) + tidb + idx + b"evil.example/a b", "space in URL"),
        ("c", head(0) + tidb + idx + b"evil.example/\r\nSet-Cookie: x=1", "CRLF"),
        ("c", head(0) + tidb + idx + b"evil.example/<script>", "angle brackets"),
        ("c", head(0) + tidb + idx + b'evil.example/"', "quote"),
        ("c", head(0) + tidb + idx + "bücher.example/".encode(), "non-ASCII"),
        ("o", head(1) + tidb + idx + b"x", "open with a URL"),
        ("c", head(0) + tidb + b"\x80" * 5 + b"\x01example.com/", "varint too long"),
        ("c", head(0) + tidb + b"\x80", "varint cut short"),
        ("c", head(0) + tidb[:5], "too short"),
        ("c", head(0, https=0) + tidb + idx + b"example.com/ok", "valid, http"),
        ("c", head(0) + tidb + idx + b"example.com/ok", "valid, made by hand"),
        ("o", head(1) + tidb + idx, "valid open made by hand"),
    ]
    out += [(f"/{k}/{raw_token(body)}", what) for k, body, what in crafted]
    return out


def python_answer(signer: Signer, path: str) -> tuple[int, str | None]:
    """What trackmilter web answers: tokens.py decides."""
    kind, _, token = path[1:].partition("/")
    want = {"c": Kind.CLICK, "o": Kind.OPEN}[kind]
    try:
        if len(token) > MAX_TOKEN_CHARS or "/" in token or "%" in token:
            raise InvalidToken("not a token")
        data: TokenData = signer.verify(token)
    except InvalidToken:
        return 404, None
    if data.kind is not want:
        return 404, None
    return (302, data.url) if want is Kind.CLICK else (200, None)


@pytest.fixture
def keyfile(tmp_path: Path) -> Path:
    p = tmp_path / "secret"
    p.write_text(f"# current key first\n{KEY.decode()}\n\n{OLD.decode()}\n")
    p.chmod(0o600)
    return p


@pytest.fixture
def nginx(tmp_path: Path, keyfile: Path) -> Iterator[edgeproc.EdgeNginx]:
    with edgeproc.EdgeNginx(tmp_path / "nginx", free_port(), keyfile,
                            tmp_path / "hits.log") as ng:
        yield ng.start()


def test_nginx_answers_every_token_as_the_python_signer_does(
        nginx: edgeproc.EdgeNginx, keyfile: Path) -> None:
    signer = Signer.from_file(keyfile)
    cases = corpus()
    assert len(cases) > 400
    wrong = []
    answered = 0
    for path, what in cases:
        want_status, want_url = python_answer(signer, path)
        status, headers, body = request(nginx.port, path)
        got = (status, headers.get("location"))
        if status == 200:
            got = (200, None) if body == PIXEL and headers["content-type"] == "image/gif" \
                else (200, "wrong body")
        if got != (want_status, want_url):
            wrong.append((what, path[:80], got, (want_status, want_url)))
        if status in (200, 302):
            answered += 1
            assert "no-store" in headers["cache-control"]
        else:
            assert "location" not in headers
    assert wrong == []
    # The corpus holds both kinds of answer, in numbers.
    assert answered >= 35
    assert sum(python_answer(signer, p)[0] == 404 for p, _ in cases) >= 350
    # HEAD answers like GET without a body; other methods are refused.
    path = next(p for p, w in cases if w == "click 0 index 1")
    assert request(nginx.port, path, method="HEAD")[0] == 302
    status, headers, _ = request(nginx.port, path, method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_a_bad_key_file_stops_nginx_with_the_reason(tmp_path: Path) -> None:
    """init_by_lua runs when nginx starts (not under `nginx -t`): it refuses to start, for
    the same files tokens.py refuses, with the same reason."""
    cases: dict[str, bytes | None] = {
        "missing": None, "empty": b"# nothing\n\n", "short": b"short-key\n",
        "nbsp": b"k" * 20 + "\u00a0".encode() + b"\n",
        "formfeed-inside": b"a" * 20 + b"\f" + b"b" * 20 + b"\n",
        "control": b"c" * 20 + b"\x1e\n"}
    reasons = {"missing": "cannot read key file", "empty": "holds no key",
               "short": "key 1 is 9 bytes; at least 16 needed"}
    for name, data in cases.items():
        keys = tmp_path / f"{name}.keys"
        if data is not None:
            keys.write_bytes(data)
        with pytest.raises(KeyFileError) as python_said:
            Signer.from_file(keys)
        ng = edgeproc.EdgeNginx(tmp_path / f"ng-{name}", free_port(), keys, tmp_path / "h.log")
        with pytest.raises(RuntimeError) as failed:
            ng.start(timeout=10)
        said = str(failed.value) + ng.errors()
        assert str(keys) in said, (name, said)
        reason = reasons.get(name, "not printable ASCII")
        assert reason in said and reason in str(python_said.value), (name, said)


def test_both_sides_read_the_same_keys_from_an_untidy_file(tmp_path: Path) -> None:
    keys = tmp_path / "untidy.keys"
    keys.write_bytes(b"  # comment\r\n\t" + KEY + b" \r\n\r\n\v" + OLD + b"\f\r\n")
    signer = Signer.from_file(keys)
    assert len(signer.key_ids) == 2
    tid = new_tracking_id()
    with edgeproc.EdgeNginx(tmp_path / "ng", free_port(), keys, tmp_path / "h.log") as ng:
        ng.start()
        for key in (KEY, OLD):
            path = f"/c/{Signer([key]).sign_click(tid, 1, 'https://example.org/x')}"
            status, headers, _ = request(ng.port, path)
            assert (status, headers.get("location")) == (302, "https://example.org/x")


# ------------------------------------------------------------------ the reader


def stored(db: Path) -> list[tuple[str, str, int, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT hit_id, target, idx, client, verdict FROM hits ORDER BY hit_id").fetchall()


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[tuple[edgeproc.EdgeTracker, Path]]:
    metrics = free_port()
    cfg = write_config(tmp_path / "tm", tmp_path / "unused.sock", extra={
        "edge": {"log": str(tmp_path / "hits.log"), "state_file": str(tmp_path / "edge.state"),
                 "metrics_listen": f"127.0.0.1:{metrics}", "poll_interval": 0.05},
        "privacy": {"ipv4_prefix": 24},
        "web": {"name": "edge.lab"}})
    subprocess.run(command(cfg, "db", "upgrade"), check=True, capture_output=True, timeout=60)
    settings = cfgmod.load(cfg)
    ng = edgeproc.EdgeNginx(tmp_path / "nginx", free_port(), settings.tracking.secret_file,
                            settings.edge.log, real_ip_from=("127.0.0.1",), buffered=False)
    with edgeproc.EdgeTracker(cfg, ng, metrics) as tracker:
        yield tracker.start(), cfg.parent / "trackmilter.db"


def test_every_answered_hit_is_stored_once_through_restarts_and_rotation(
        edge: tuple[edgeproc.EdgeTracker, Path], tmp_path: Path) -> None:
    tracker, db = edge
    signer = Signer.from_file(tracker.config.parent / "secret")
    m = signer.for_message(new_tracking_id())
    clicks = [f"/c/{m.click(i, f'https://shop.example.org/{i}')}" for i in range(1, 6)]
    answered = 0

    def hit(path: str, client: str, ua: str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
            ) -> None:
        nonlocal answered
        status = request(tracker.port, path, headers={"X-Forwarded-For": client,
                                                      "User-Agent": ua})[0]
        assert status in (200, 302)
        answered += 1

    def all_stored() -> list[tuple[str, str, int, str, str]]:
        wait_until(lambda: len(stored(db)) >= answered, 30, interval=0.1,
                   what=f"{answered} hits stored")
        rows = stored(db)
        assert len(rows) == answered  # none twice
        return rows

    hit(clicks[0], "203.0.113.9")
    hit(f"/o/{m.open()}", "172.224.226.5", ua="Mozilla/5.0")
    rows = all_stored()
    assert {(r[1], r[2], r[3]) for r in rows} == {("click", 1, "203.0.113.0/24"),
                                                  ("open", 0, "172.224.226.0/24")}

    # The reader stops; nginx keeps answering; the reader catches up when it is back.
    assert tracker.stop_reader() == 0
    for path in clicks[1:]:
        hit(path, "198.51.100.20", ua="")
    # logrotate's way: rename, then tell nginx to reopen its logs (USR1).
    log = tmp_path / "hits.log"
    log.rename(tmp_path / "hits.log.1")
    assert tracker.nginx.pid is not None
    os.kill(tracker.nginx.pid, signal.SIGUSR1)
    wait_until(log.exists, 10, interval=0.05, what="nginx reopening its log")
    hit(clicks[0], "192.0.2.7")
    tracker.start_reader()
    rows = all_stored()
    assert sum(r[3] == "198.51.100.0/24" for r in rows) == 4
    assert {r[4] for r in rows if r[3] == "198.51.100.0/24"} == {"machine"}  # no user agent

    # A line that is not ours is counted, and what follows it is still read; a forgery is
    # answered 404 by nginx, logged, and not stored.
    # A MAC character changed (never to itself: a token may well end in "AA").
    mac_char = clicks[0][-6]
    forged = clicks[0][:-6] + ("B" if mac_char != "B" else "C") + clicks[0][-5:]
    assert request(tracker.port, forged)[0] == 404
    with log.open("a") as f:
        f.write("127.0.0.1 - - [27/Nov/2026:10:00:00 +0000] \"GET / HTTP/1.1\" 404 0\n")
    hit(clicks[1], "192.0.2.8")
    all_stored()
    metrics = request(int(tracker.metrics_port), "/metrics")[2].decode()
    assert 'trackmilter_edge_lines_total{outcome="unreadable"} 1.0' in metrics
    assert 'trackmilter_edge_lines_total{outcome="refused"} 1.0' in metrics

    # Reading the whole log again (the position lost) stores nothing twice.
    assert tracker.stop_reader() == 0
    (tmp_path / "edge.state").unlink()
    tracker.start_reader()
    hit(clicks[2], "192.0.2.9")
    all_stored()


def test_rotation_while_nginx_buffers_and_the_reader_runs(tmp_path: Path) -> None:
    """logrotate with `create`: the new file exists before nginx reopens its log, and nginx
    writes its buffered lines to the renamed one when it does; none may be lost."""
    import threading

    metrics = free_port()
    cfg = write_config(tmp_path / "tm", tmp_path / "unused.sock", extra={
        "edge": {"log": str(tmp_path / "hits.log"), "state_file": str(tmp_path / "edge.state"),
                 "metrics_listen": f"127.0.0.1:{metrics}", "poll_interval": 0.05}})
    subprocess.run(command(cfg, "db", "upgrade"), check=True, capture_output=True, timeout=60)
    settings = cfgmod.load(cfg)
    ng = edgeproc.EdgeNginx(tmp_path / "nginx", free_port(), settings.tracking.secret_file,
                            settings.edge.log, buffered=True)
    signer = Signer.from_file(settings.tracking.secret_file)
    paths = [f"/c/{signer.sign_click(new_tracking_id(), 1, 'https://example.org/')}"
             for _ in range(20)]
    answered = [0]
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            if request(ng.port, paths[n % len(paths)])[0] == 302:
                answered[0] += 1
            n += 1

    db = cfg.parent / "trackmilter.db"
    with edgeproc.EdgeTracker(cfg, ng, metrics) as tracker:
        tracker.start()
        worker = threading.Thread(target=load)
        worker.start()
        try:
            log = tmp_path / "hits.log"
            wait_until(lambda: answered[0] > 200, 30, interval=0.05, what="some hits")
            for n in (1, 2):
                rotated = tmp_path / f"hits.log.{n}"
                if n == 2:
                    (tmp_path / "hits.log.1").rename(rotated)
                    rotated = tmp_path / "hits.log.1"
                log.rename(rotated)
                log.touch()  # create
                goal = 400 * n + 200
                wait_until(lambda: answered[0] > goal, 30,  # noqa: B023 - used at once
                           interval=0.05, what="hits between rename and reopen")
                assert ng.pid is not None
                os.kill(ng.pid, signal.SIGUSR1)  # postrotate: nginx -s reopen
                wait_until(lambda: log.stat().st_size > 0, 30, interval=0.05,
                           what="nginx writing the new log")
        finally:
            stop.set()
            worker.join(30)
        ng.stop()  # writes what it buffered
        wait_until(lambda: len(stored(db)) >= answered[0], 60, interval=0.2,
                   what=f"{answered[0]} hits stored")
        assert len(stored(db)) == answered[0]


def test_a_reload_with_a_bad_key_file_keeps_the_old_keys(tmp_path: Path, keyfile: Path,
                                                           nginx: edgeproc.EdgeNginx) -> None:
    path = f"/c/{Signer([KEY]).sign_click(new_tracking_id(), 1, 'https://example.org/')}"
    assert request(nginx.port, path)[0] == 302
    keyfile.write_text("short-key\n")
    nginx.reload()
    wait_until(lambda: "key 1 is 9 bytes; at least 16 needed" in nginx.errors(), 15,
               interval=0.05, what="nginx refusing the new key file")
    assert nginx.proc is not None and nginx.proc.poll() is None
    assert request(nginx.port, path)[0] == 302
