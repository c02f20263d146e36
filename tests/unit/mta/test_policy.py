"""Pure milter decisions: direction, never-modify rules, address and Message-ID handling."""

from __future__ import annotations

import ipaddress

import pytest

from trackmilter.config import MilterSettings
from trackmilter.model import Direction, SkipReason, utcnow
from trackmilter.mta import policy

CFG = MilterSettings(
    outgoing_networks=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")),
    sender_domains=("example.com",),
    mta_name="mx.test",
)


@pytest.mark.parametrize(
    ("addr", "auth", "sender", "expected"),
    [
        pytest.param("127.0.0.1", "", "a@x.org", Direction.OUTGOING, id="loopback"),
        pytest.param("::ffff:127.0.0.5", "", "a@x.org", Direction.OUTGOING, id="v4-mapped"),
        pytest.param("2001:db8::5", "", "a@x.org", Direction.OUTGOING, id="v6-net"),
        pytest.param("192.0.2.1", "alice", "a@x.org", Direction.OUTGOING, id="sasl"),
        pytest.param("192.0.2.1", "", "a@example.com", Direction.OUTGOING, id="sender-domain"),
        pytest.param("192.0.2.1", "", "a@mail.example.com", Direction.OUTGOING, id="subdomain"),
        pytest.param("192.0.2.1", "", "a@notexample.com", Direction.INBOUND, id="lookalike"),
        pytest.param("192.0.2.1", "", "a@x.org", Direction.INBOUND, id="stranger"),
        pytest.param("", "", "", Direction.INBOUND, id="unix-no-addr"),
        pytest.param("garbage", "", "", Direction.INBOUND, id="bad-addr"),
    ],
)
def test_direction(addr: str, auth: str, sender: str, expected: Direction) -> None:
    assert policy.direction_of(addr, auth, sender, CFG) is expected


def _tx(**kw: object) -> policy.Transaction:
    tx = policy.Transaction(tracking_id="a" * 16, sender="s@example.com", started_at=utcnow())
    tx.direction = Direction.OUTGOING
    for k, v in kw.items():
        setattr(tx, k, v)
    return tx


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        pytest.param({}, None, id="plain-outgoing"),
        pytest.param({"direction": Direction.INBOUND}, SkipReason.INBOUND, id="inbound"),
        pytest.param({"sender": ""}, SkipReason.NULL_SENDER, id="null-sender"),
        pytest.param({"dkim_signed": True}, SkipReason.DKIM_SIGNED, id="dkim"),
        pytest.param({"content_type": 'multipart/signed; protocol="application/pgp-signature"'},
                     SkipReason.SIGNED_OR_ENCRYPTED, id="pgp-signed"),
        pytest.param({"content_type": "Multipart/Encrypted; boundary=x"},
                     SkipReason.SIGNED_OR_ENCRYPTED, id="encrypted"),
        pytest.param({"content_type": "application/pkcs7-mime; smime-type=enveloped-data"},
                     SkipReason.SIGNED_OR_ENCRYPTED, id="smime"),
        pytest.param({"opted_out": True}, SkipReason.OPT_OUT, id="opt-out"),
        pytest.param({"content_type": "multipart/alternative; boundary=x"}, None, id="alt"),
    ],
)
def test_skip_reason(kw: dict[str, object], expected: SkipReason | None) -> None:
    assert policy.skip_reason(_tx(**kw), CFG) is expected


def test_too_large() -> None:
    small = MilterSettings(max_message_size=10)
    assert policy.too_large(_tx(size=11), small)
    assert not policy.too_large(_tx(size=10), small)
    assert not policy.too_large(_tx(size=10**9), MilterSettings(max_message_size=0))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("<Bob@Example.NET>", "Bob@example.net", id="brackets-domain-lowered"),
        pytest.param("bob@example.net", "bob@example.net", id="bare"),
        pytest.param("<>", "", id="null"),
        pytest.param("postmaster", "postmaster", id="no-domain"),
    ],
)
def test_normalise_address(raw: str, expected: str) -> None:
    assert policy.normalise_address(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("<abc@host>", "abc@host", id="plain"),
        pytest.param("  <abc@host> (comment)", "abc@host", id="comment"),
        pytest.param("abc@host", "abc@host", id="no-brackets"),
    ],
)
def test_message_id(raw: str, expected: str) -> None:
    assert policy.message_id_of(raw) == expected


def test_finish_all_refused() -> None:
    from trackmilter.model import EndReason, RcptOutcome, RecipientRecord

    tx = _tx(recipients=[RecipientRecord("x@y.z", RcptOutcome.REFUSED, "5.7.1", "no")])
    ev = policy.finish(tx, end=EndReason.ABORTED, finished_at=utcnow(), client_addr="",
                       client_name="", helo="", mta="m")
    assert ev.end is EndReason.ALL_REFUSED
    tx.recipients.append(RecipientRecord("ok@y.z", RcptOutcome.ACCEPTED))
    ev = policy.finish(tx, end=EndReason.ABORTED, finished_at=utcnow(), client_addr="",
                       client_name="", helo="", mta="m")
    assert ev.end is EndReason.ABORTED


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param(("SIZE=100", "ENVID=QQ314159"), "QQ314159", id="plain"),
        pytest.param(("envid=a+2Bb+3Dc",), "a+b=c", id="xtext-lowercase-name"),
        pytest.param(("RET=HDRS",), "", id="absent"),
        pytest.param(("ENVID",), "", id="no-value"),
    ],
)
def test_envelope_id(params: tuple[str, ...], expected: str) -> None:
    assert policy.envelope_id(params) == expected


def test_recorded_headers_first_value_unfolded_and_bounded() -> None:
    from trackmilter.mta.policy import MAX_RECORDED_VALUE, recorded_headers

    headers = [("Subject", "x"), ("X-Campaign", " spring\r\n\t2026 "), ("x-campaign", "later"),
               ("X-Long", "y" * 1000)]
    assert recorded_headers(headers, ("x-campaign", "x-long")) == (
        ("x-campaign", "spring 2026"), ("x-long", "y" * MAX_RECORDED_VALUE))
    assert recorded_headers(headers, ()) == ()
