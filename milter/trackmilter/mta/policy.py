"""Pure decisions: per-transaction state, direction (outgoing or inbound) and why not to modify."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from trackmilter.addresses import in_networks
from trackmilter.config import MilterSettings
from trackmilter.model import (
    Direction,
    EndReason,
    LinkRecord,
    MessageRecorded,
    RcptOutcome,
    RecipientRecord,
    SkipReason,
)
from trackmilter.mta.budget import Reservation

# RFC 1847 security multiparts: any change to the signed part breaks the signature, and
# encrypted content cannot be rewritten at all.
_SECURE_TYPES = ("multipart/signed", "multipart/encrypted", "application/pkcs7-mime",
                 "application/x-pkcs7-mime")
_ANGLE = re.compile(r"<([^<>]*)>")


class Keep(StrEnum):
    """Why a message's body is kept in memory until end of message."""

    REWRITE = "rewrite"
    REPORT = "report"


@dataclass
class Transaction:
    """State of one SMTP transaction, from MAIL FROM to end of message or abort."""

    tracking_id: str
    sender: str
    started_at: datetime
    auth_user: str = ""
    envelope_id: str = ""
    direction: Direction = Direction.INBOUND
    recipients: list[RecipientRecord] = field(default_factory=list)
    queue_id: str = ""
    message_id: str = ""
    content_type: str | None = None
    transfer_encoding: str | None = None
    dkim_signed: bool = False
    opted_out: bool = False
    already_tracked: bool = False
    body: list[bytes] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)  # as received, for reports
    size: int = 0
    failed: bool = False  # an internal error happened: pass the message through untouched
    reservation: Reservation | None = None  # its share of the memory budget
    busy: Keep | None = None  # the body was kept for this, but the budget had no room in time

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.recipients if r.outcome is RcptOutcome.ACCEPTED)


_XTEXT = re.compile(r"\+([0-9A-F]{2})")


def envelope_id(params: tuple[str, ...]) -> str:
    """The ENVID= MAIL FROM parameter (RFC 3461 §4.4), xtext-decoded; "" when absent."""
    for p in params:
        name, eq, value = p.partition("=")
        if eq and name.upper() == "ENVID":
            return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)
    return ""


def normalise_address(addr: str) -> str:
    """``<User@Example.COM>`` → ``User@example.com`` (local parts are case-sensitive, RFC 5321)."""
    a = addr.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1]
    local, at, domain = a.rpartition("@")
    return f"{local}@{domain.lower()}" if at else a


def message_id_of(value: str) -> str:
    """The bare Message-ID (without angle brackets), or the stripped value when malformed."""
    m = _ANGLE.search(value)
    return (m.group(1) if m else value).strip()


def direction_of(client_addr: str, auth_user: str, sender: str, cfg: MilterSettings) -> Direction:
    """Outgoing: SASL-authenticated, from a trusted network, or from a configured sender domain."""
    if auth_user:
        return Direction.OUTGOING
    if client_addr and in_networks(client_addr, cfg.outgoing_networks):
        return Direction.OUTGOING
    if cfg.sender_domains and sender:
        domain = sender.rpartition("@")[2].lower()
        if any(domain == d or domain.endswith("." + d) for d in cfg.sender_domains):
            return Direction.OUTGOING
    return Direction.INBOUND


def is_secure_type(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";", 1)[0].strip().lower() in _SECURE_TYPES  # type: ignore[union-attr]


def skip_reason(tx: Transaction, cfg: MilterSettings) -> SkipReason | None:
    """Why this message must not be modified at all, or None. Checked at end of headers."""
    if tx.direction is Direction.INBOUND:
        return SkipReason.INBOUND
    if tx.sender == "":
        # Bounces and MDNs (RFC 3464/8098) use the null sender; never touch them.
        return SkipReason.NULL_SENDER
    if tx.dkim_signed:
        return SkipReason.DKIM_SIGNED
    if is_secure_type(tx.content_type):
        return SkipReason.SIGNED_OR_ENCRYPTED
    if tx.opted_out:
        return SkipReason.OPT_OUT
    return None


def may_be_report(tx: Transaction) -> bool:
    """Bounces and read receipts come from the null sender (RFC 3464 §2, RFC 8098 §2.1);
    complaints (RFC 5965) and some DSNs do not, but are all multipart/report."""
    return tx.sender == "" or (tx.content_type or "").lstrip().lower().startswith(
        "multipart/report"
    )


def raw_message(tx: Transaction) -> bytes:
    """The message as the milter saw it: header fields as received, then the body."""
    head = b"".join(
        f"{name}: {value}".replace("\r\n", "\n").replace("\n", "\r\n")
        .encode("utf-8", "surrogateescape") + b"\r\n"
        for name, value in tx.headers
    )
    return head + b"\r\n" + b"".join(tx.body)


def too_large(tx: Transaction, cfg: MilterSettings) -> bool:
    return cfg.max_message_size > 0 and tx.size > cfg.max_message_size


def keep_body(tx: Transaction, cfg: MilterSettings, *, rewriting: bool, reports: bool
              ) -> Keep | None:
    """Whether to keep the body (so far): to rewrite its links, or to decode it as a report.

    `rewriting`: links or the pixel are rewritten at all (a tracker URL and a key are
    configured); `reports`: reports passing through are decoded. Checked at each chunk.
    """
    if (rewriting and not tx.failed and not tx.already_tracked
            and skip_reason(tx, cfg) is None and not too_large(tx, cfg)):
        return Keep.REWRITE
    if reports and may_be_report(tx) and tx.size <= cfg.report_max_size:
        return Keep.REPORT
    return None


def finish(
    tx: Transaction,
    *,
    end: EndReason,
    finished_at: datetime,
    client_addr: str,
    client_name: str,
    helo: str,
    mta: str,
    rewritten: bool = False,
    skip: str = "",
    pixel: bool = False,
    links: tuple[LinkRecord, ...] = (),
    tracking_header: bool = False,
    record_headers: tuple[str, ...] = (),
) -> MessageRecorded:
    if end is EndReason.ABORTED and tx.recipients and tx.accepted == 0:
        end = EndReason.ALL_REFUSED
    return MessageRecorded(
        tracking_id=tx.tracking_id,
        direction=tx.direction,
        end=end,
        sender=tx.sender,
        started_at=tx.started_at,
        finished_at=finished_at,
        recipients=tuple(tx.recipients),
        queue_id=tx.queue_id,
        message_id=tx.message_id,
        client_addr=client_addr,
        client_name=client_name,
        auth_user=tx.auth_user,
        envelope_id=tx.envelope_id,
        helo=helo,
        size=tx.size,
        rewritten=rewritten,
        skip_reason=skip,
        pixel=pixel,
        links=links,
        mta=mta,
        tracking_header=tracking_header,
        headers=recorded_headers(tx.headers, record_headers),
    )


MAX_RECORDED_VALUE = 256


def recorded_headers(headers: list[tuple[str, str]], wanted: tuple[str, ...]
                     ) -> tuple[tuple[str, str], ...]:
    """The first value of each wanted header (names lower-cased, values unfolded, bounded)."""
    if not wanted:
        return ()
    found: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in wanted and key not in found:
            found[key] = " ".join(value.split())[:MAX_RECORDED_VALUE]
    return tuple(found.items())
