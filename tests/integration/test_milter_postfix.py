"""Integration: real Postfix + trackmilter on a unix socket + a fake remote MX.

Asserts on what the MX received, what Postfix logged and what `trackmilter status --json` shows.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import smtplib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from tests.support import HTML_CORPUS

from trackmilter.tokens import Kind, Signer
from trackmilter.webhooks.schema import webhook_outbox
from trackmilter_lab import FakeMX, MilterProcess, PostfixInstance, ReceivedMessage, send
from trackmilter_lab.daemon import BASE_URL, milter_process, wait_status, write_config

REFUSED = "refused@example.net"
ACCESS = {REFUSED: "REJECT 5.7.1 Recipient refused by policy"}
TOKEN_RE = re.compile(re.escape(BASE_URL) + r"/([co])/([A-Za-z0-9_-]+)")


@dataclass
class Rig:
    mx: FakeMX
    postfix: PostfixInstance
    milter: MilterProcess
    config: Path
    signer: Signer

    def send(self, msg: bytes, rcpts: list[str], sender: str = "alice@example.com") -> dict[str, Any]:
        return send("127.0.0.1", self.postfix.smtp_port, sender, rcpts, msg)

    def status(self, ident: str, pred: Callable[[list[dict[str, Any]]], bool] = bool
               ) -> list[dict[str, Any]]:
        return wait_status(self.config, ident, pred)


@pytest.fixture
def rig(fake_mx: FakeMX, postfix_lab: Any, socket_dir: Path, tmp_path: Path) -> Iterator[Rig]:
    sock = socket_dir / "trackmilter.sock"
    cfg = write_config(tmp_path / "tm", sock)
    milter = milter_process(cfg, sock).start()
    try:
        postfix = postfix_lab(milter=milter.spec, recipient_access=ACCESS)
        yield Rig(fake_mx, postfix, milter, cfg, Signer.from_file(cfg.parent / "secret"))
    finally:
        milter.stop()


def html_message(html: str, *, cte: str = "quoted-printable", to: str = "bob@example.net",
                 alternative: bool = True, extra: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.com>"
    msg["To"] = to
    msg["Subject"] = "Integration"
    msg["List-Unsubscribe"] = "<https://example.com/unsubscribe?u=1>"
    for k, v in (extra or {}).items():
        msg[k] = v
    if alternative:
        msg.set_content("Plain part: https://example.com/plain\n")
        msg.add_alternative(html, subtype="html", cte=cte)
    else:
        msg.set_content(html, subtype="html", cte=cte)
    return msg.as_bytes(policy=email.policy.SMTP)


def html_of(received: ReceivedMessage) -> tuple[Message, str]:
    msg = email.message_from_bytes(received.data, policy=email.policy.default)
    part = msg.get_body(preferencelist=("html",))  # type: ignore[attr-defined]
    assert part is not None
    return msg, part.get_content()


def tokens_in(html: str, signer: Signer) -> list[tuple[str, Any]]:
    return [(kind, signer.verify(tok)) for kind, tok in TOKEN_RE.findall(html)]


def test_outgoing_html_is_rewritten_tracked_and_stored(rig: Rig) -> None:
    template = (HTML_CORPUS / "postmark" / "basic-full-example.html").read_text()
    refused = rig.send(html_message(template), ["bob@example.net"])
    assert refused == {}
    [got] = rig.mx.wait_for_count(1, timeout=30)
    msg, html = html_of(got)
    tid = msg["X-Trackmilter-ID"]
    assert re.fullmatch(r"[a-z2-7]{16}", tid)
    # headers are never touched, the plain part neither
    assert msg["List-Unsubscribe"] == "<https://example.com/unsubscribe?u=1>"
    plain = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert plain.replace("\r\n", "\n") == "Plain part: https://example.com/plain\n"
    found = tokens_in(html, rig.signer)
    clicks = [d for k, d in found if k == "c"]
    opens = [d for k, d in found if k == "o"]
    assert clicks and len(opens) == 1
    assert all(d.tracking_id == tid and d.kind is Kind.CLICK for d in clicks)
    # every original http(s) href is gone from the HTML and comes back from its token
    originals = set(re.findall(r'href="(https?://[^"]+)"', template))
    assert originals and not (originals & set(re.findall(r'href="(https?://[^"]+)"', html)))
    assert {d.url for d in clicks} == {u.replace("&amp;", "&") for u in originals}

    [stored] = rig.status(tid)
    assert stored["direction"] == "outgoing" and stored["rewritten"] is True
    assert stored["link_count"] == len(clicks) and stored["pixel"] is True
    assert re.fullmatch(r"[0-9A-Za-z]+", stored["queue_id"])
    assert [(r["address"], r["outcome"]) for r in stored["recipients"]] == [
        ("bob@example.net", "accepted")]
    # Postfix logged the same queue id delivering to the MX; status finds it by queue id too
    rig.postfix.wait_log(rf"{stored['queue_id']}: to=<bob@example.net>.*status=sent", 30)
    assert rig.status(stored["queue_id"])[0]["tracking_id"] == tid


def test_multipart_base64_several_recipients_and_refusals(rig: Rig) -> None:
    html = '<p><a href="https://example.com/a?x=1&amp;y=2">A</a> <a href="mailto:a@b.c">m</a></p>'
    raw = html_message(html, cte="base64", to="bob@example.net, carol@example.net")
    refused = rig.send(raw, ["bob@example.net", "carol@example.net", REFUSED, "reject-me@example.net"])
    assert list(refused) == [REFUSED] and refused[REFUSED][0] == 554
    got = rig.mx.wait_for(lambda ms: [m for m in ms if "bob@example.net" in m.recipients], 30)[0]
    msg, body = html_of(got)
    assert "https://example.com/a" not in body and "mailto:a@b.c" in body
    [(kind, data)] = [t for t in tokens_in(body, rig.signer) if t[0] == "c"]
    assert data.url == "https://example.com/a?x=1&y=2" and data.index == 1
    # the HTML part is still base64 with lines within limits
    part = msg.get_body(preferencelist=("html",))
    assert part is not None and part["Content-Transfer-Encoding"] == "base64"
    assert max(len(line) for line in got.data.split(b"\r\n")) <= 998

    [stored] = rig.status(msg["X-Trackmilter-ID"])
    outcomes = {r["address"]: (r["outcome"], r["status"]) for r in stored["recipients"]}
    assert outcomes == {
        "bob@example.net": ("accepted", ""),
        "carol@example.net": ("accepted", ""),
        "reject-me@example.net": ("accepted", ""),  # our MTA took it; the MX refuses later
        REFUSED: ("refused", "5.7.1"),
    }
    refused_rec = next(r for r in stored["recipients"] if r["address"] == REFUSED)
    assert "Recipient refused by policy" in refused_rec["text"]


def test_transaction_without_message_is_recorded(rig: Rig) -> None:
    """The client gives up after RCPT: recorded as aborted, with each recipient's outcome.

    This is what the milter must not negotiate "no reply" for MAIL/RCPT for: Postfix then
    holds those events back and drops them when the client aborts.
    """
    with smtplib.SMTP("127.0.0.1", rig.postfix.smtp_port, timeout=30) as client:
        client.ehlo("client.example")
        assert client.mail("alice@example.com")[0] == 250
        assert client.rcpt("gone@example.net")[0] == 250
        assert client.rcpt(REFUSED)[0] == 554
        client.rset()
    [stored] = rig.status("gone@example.net", lambda v: bool(v) and v[0]["end_reason"] == "aborted")
    outcomes = {r["address"]: (r["outcome"], r["status"]) for r in stored["recipients"]}
    assert outcomes == {"gone@example.net": ("accepted", ""), REFUSED: ("refused", "5.7.1")}
    assert stored["queue_id"] == "" or stored["queue_id"]  # smtpd may have assigned one
    assert rig.mx.messages == []


def test_all_recipients_refused_transaction_is_recorded(rig: Rig) -> None:
    raw = html_message("<p>x</p>", extra={"Message-ID": "<allrefused@example.com>"})
    refused = rig.send(raw, [REFUSED])
    assert list(refused) == [REFUSED]
    [stored] = rig.status(REFUSED, lambda v: any(m["end_reason"] == "all_recipients_refused"
                                                 for m in v))
    assert (stored["recipients"][0]["outcome"], stored["recipients"][0]["status"]) == (
        "refused", "5.7.1")
    assert rig.mx.messages == []


def test_bounce_passes_through_unmodified_and_is_recorded(rig: Rig) -> None:
    raw = html_message('<a href="https://example.com/b">b</a>', to="reject-x@example.net")
    rig.send(raw, ["reject-x@example.net"])
    # Postfix bounces the MX's 550 to alice@example.com, via the MX (relayhost) again
    bounce = rig.mx.wait_for(lambda ms: [m for m in ms if m.sender == ""], 60)[0]
    assert bounce.recipients == ("alice@example.com",)
    top = email.message_from_bytes(bounce.data, policy=email.policy.default)
    assert top["X-Trackmilter-ID"] is None  # never modified: null sender
    assert TOKEN_RE.search(top.get_body(preferencelist=("plain",)).get_content() or "") is None  # type: ignore[union-attr]
    msgs = rig.status("alice@example.com", lambda v: any(m["sender"] == "" for m in v))
    b = next(m for m in msgs if m["sender"] == "")
    assert b["skip_reason"] == "null_sender" and b["rewritten"] is False
    # The milter decoded Postfix's bounce and tied it to the original message.
    [orig] = rig.status("reject-x@example.net", lambda v: any(
        e["kind"] == "dsn" for m in v for e in m["events"]))
    [dsn] = [e for e in orig["events"] if e["kind"] == "dsn"]
    assert dsn["recipient"] == "reject-x@example.net" and dsn["status"] == "failed"
    assert dsn["code"].startswith("5.") and dsn["data"]["hardbounce"] is True
    assert dsn["data"]["report_queue_id"] == b["queue_id"]
    assert "550" in dsn["text"]


def test_dkim_signed_and_opted_out_pass_byte_identical(rig: Rig) -> None:
    for n, extra in enumerate(({"DKIM-Signature": "v=1; a=rsa-sha256; d=example.com; s=x; b=abc"},
                               {"X-Trackmilter-Opt-Out": "yes"})):
        raw = html_message('<a href="https://example.com/d">d</a>', extra=extra,
                           to=f"dk{n}@example.net")
        rcpt = f"dk{n}@example.net"
        rig.send(raw, [rcpt])
        got = rig.mx.wait_for(
            lambda ms, rcpt=rcpt: [m for m in ms if rcpt in m.recipients], 30)[0]
        assert got.body == raw.partition(b"\r\n\r\n")[2]
        assert b"X-Trackmilter-ID" not in got.data


def test_mail_flows_when_the_milter_is_stopped(rig: Rig) -> None:
    # Only with default_action=accept (the shipped tempfail answers 451 instead; see
    # test_milter_kill.py and docs/postfix-milter-failure.md).
    rig.postfix.set_milter(rig.milter.spec, default_action="accept")
    rig.milter.stop()
    raw = html_message('<a href="https://example.com/e">e</a>', to="down@example.net")
    assert rig.send(raw, ["down@example.net"]) == {}
    got = rig.mx.wait_for(lambda ms: [m for m in ms if "down@example.net" in m.recipients], 30)[0]
    assert got.body == raw.partition(b"\r\n\r\n")[2]
    assert b"X-Trackmilter-ID" not in got.data
    rig.postfix.wait_log(r"connect to Milter service unix:.*trackmilter\.sock", 5)


def test_base64_single_part_roundtrip(rig: Rig) -> None:
    html = "<html><body>" + "".join(
        f'<a href="https://example.com/p/{i}?q=\u00e9">l{i}</a>\n' for i in range(5)) + "</body></html>"
    raw = html_message(html, cte="base64", alternative=False, to="solo@example.net")
    rig.send(raw, ["solo@example.net"])
    got = rig.mx.wait_for(lambda ms: [m for m in ms if "solo@example.net" in m.recipients], 30)[0]
    msg, body = html_of(got)
    clicks = [d for k, d in tokens_in(body, rig.signer) if k == "c"]
    assert [d.url for d in clicks] == [f"https://example.com/p/{i}?q=%C3%A9" for i in range(5)]
    assert base64.b64decode(msg.get_payload())  # still valid base64


def test_inline_refusal_enters_the_webhook_outbox(fake_mx: FakeMX, postfix_lab: Any,
                                                  socket_dir: Path, tmp_path: Path) -> None:
    key = tmp_path / "hook.key"
    key.write_text("s" * 32 + "\n")
    sock = socket_dir / "trackmilter.sock"
    cfg = write_config(tmp_path / "tm", sock, extra={"webhooks": {"endpoints": [
        {"url": "http://127.0.0.1:9/hook", "secret_file": str(key), "events": ["delivery"]}]}})
    milter = milter_process(cfg, sock).start()
    try:
        postfix = postfix_lab(milter=milter.spec, recipient_access=ACCESS)
        raw = html_message("<p>x</p>", extra={"Message-ID": "<hooked@example.com>"})
        refused = send("127.0.0.1", postfix.smtp_port, "alice@example.com",
                       ["bob@example.net", REFUSED], raw)
        assert list(refused) == [REFUSED]
        [stored] = wait_status(cfg, "hooked@example.com")
        engine = create_engine(f"sqlite:///{tmp_path / 'tm' / 'trackmilter.db'}")
        try:
            with engine.connect() as conn:
                rows = conn.execute(select(webhook_outbox.c.event_type,
                                           webhook_outbox.c.payload)).all()
        finally:
            engine.dispose()
    finally:
        milter.stop()
    # One event for the refused recipient; bob's acceptance by our MTA is no news.
    [(etype, payload)] = rows
    data = json.loads(payload)["data"]
    assert etype == "delivery.refused"
    assert (data["recipient"], data["dsn"], data["tracking_id"], data["mta"]) == (
        REFUSED, "5.7.1", stored["tracking_id"], "lab.example")
    assert "Recipient refused by policy" in data["text"]
