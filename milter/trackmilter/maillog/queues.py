"""Per-recipient outcomes from log records, with the state the log spreads over lines.

Pure: records in, `DeliveryObserved` (and `Reinjected`) events out; the state
(re-injection chains, deferred recipients, our own queue ids) is bounded and can be dumped
to JSON and restored, so a restarted follower knows what it knew before.
"""

from __future__ import annotations

import ipaddress
import json
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

from trackmilter.maillog.handoff import Unclaimed
from trackmilter.maillog.records import Delivery, LogRecord, MessageExpired, MessageRemoved
from trackmilter.model import DeliveryObserved, DeliveryStatus, Reinjected

__all__ = ["MAX_REMEMBERED", "QueueEvent", "QueueStateError", "Queues", "received_ids"]

# Queue ids remembered for re-injection chains, for deferred recipients and as our own;
# the oldest are forgotten first, so memory (and the state file) stays bounded whatever
# the log holds.
MAX_REMEMBERED = 100_000
STATE_VERSION = 1
# smtpd's `QID: client=HOST[ADDR]` opens every queue file it creates, before cleanup has
# the message and so before the 250 the sending side logs as `queued as QID`.
_RECEIVED = ": client="
V = TypeVar("V")
QueueEvent = DeliveryObserved | Reinjected


class QueueStateError(ValueError):
    """A saved queue state that cannot be restored (another version, damaged)."""


def _loopback(relay: str) -> bool:
    """`127.0.0.1[127.0.0.1]:10025`, `localhost[::1]:10025` -> True."""
    inside = relay.partition("[")[2].partition("]")[0]
    # String tests first: ipaddress costs more than the rest of the line's handling.
    if inside.startswith("127."):
        return True
    if ":" not in inside:
        return False
    try:
        return ipaddress.ip_address(inside).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class _Pending:
    """A recipient whose last attempt was deferred: what its expiry event will say."""

    to: str
    orig_to: str
    relay: str
    dsn: str
    reply: str

    @property
    def key(self) -> tuple[str, str]:
        # One alias may expand to several addresses, and an address may also be a
        # recipient of its own: the pair tells them apart.
        return self.to, self.orig_to


_PENDING_FIELDS = tuple(f.name for f in fields(_Pending))


class Queues:
    """Turns log records into per-recipient events, with the state the log spreads over
    several lines: re-injection chains, recipients still waiting for a retry, and the
    queue ids our own MTA has assigned.

    - A content filter hands mail back as a new queue id (`250 2.0.0 Ok: queued as NEW`
      from a loopback relay): deliveries under NEW belong to the queue id the milter saw,
      and the hand-off itself is no outcome. It is told from a next hop that merely
      listens on loopback (a test MX, a relay on the same host) by NEW being one of our
      own queue ids (`received()`): the re-injecting smtpd logs `NEW: client=` before it
      answers 250, so that line comes first in the log.
    - The hand-off may be logged after outcomes under NEW, even after NEW was removed (see
      maillog.handoff): those went out under NEW, and the hand-off gives a `Reinjected`
      event that ties them to the original in the store.
    - Postfix 3.7 logs `status=expired, returned to sender` once per message, not per
      recipient: the recipients whose last attempt was deferred are the expired ones.

    The state survives a restart through `dump()` / `restore()` (saved with the log
    position, so both describe the same line).
    """

    def __init__(self, mta: str, limit: int = MAX_REMEMBERED) -> None:
        self.mta = mta
        self._limit = limit
        self._origin: OrderedDict[str, str] = OrderedDict()
        self._deferred: OrderedDict[str, dict[tuple[str, str], _Pending]] = OrderedDict()
        self._local: OrderedDict[str, None] = OrderedDict()
        self._unclaimed = Unclaimed(limit)
        self._dump: str | None = None  # dump()'s text while nothing changed

    def events(self, record: LogRecord) -> list[QueueEvent]:
        """The events a record gives (a list, not a generator: this runs once per line)."""
        if isinstance(record, Delivery):
            return self._delivery(record)
        if isinstance(record, MessageExpired):
            return self._expired(record)
        if isinstance(record, MessageRemoved):
            # The queue id is free again (Postfix may reuse a short one): every line
            # about it has been logged, so what we kept about it is of no further use.
            qid = record.queue_id
            if qid in self._unclaimed.reported:
                self._unclaimed.removed(qid, int(record.time.timestamp()))
                self._dump = None
            for table in (self._deferred, self._origin, self._local):
                if qid in table:
                    del table[qid]
                    self._dump = None
        return []

    def received(self, queue_ids: Iterable[str]) -> None:
        """Queue ids our own MTA created (its smtpd's `client=` lines)."""
        for qid in queue_ids:
            if qid not in self._local:
                self._remember(self._local, qid, None)

    def origin(self, queue_id: str) -> str:
        return self._origin.get(queue_id, queue_id)

    def _delivery(self, d: Delivery) -> list[QueueEvent]:
        out: list[QueueEvent] = []
        new = d.queued_as
        handed_back = False
        if new is not None and _loopback(d.relay):
            handed_back = self._hand_off(d, new, out)
        waiting = self._deferred.get(d.queue_id)
        orig_to = d.orig_to or ""
        for to in d.recipients:
            key = (to, orig_to)
            if d.status is DeliveryStatus.DEFERRED:
                if waiting is None:
                    waiting = {}
                    self._remember(self._deferred, d.queue_id, waiting)
                waiting[key] = _Pending(to, orig_to, d.relay, d.dsn, d.reply)
                self._dump = None
            elif waiting is not None and waiting.pop(key, None) is not None:
                self._dump = None
            if not handed_back:
                out.append(self._event(d.queue_id, to, orig_to, d.relay, d.status, d.dsn,
                                       d.reply, d.time, d.transport))
        if out and not handed_back:
            self._reported(d.queue_id)
        return out

    def _hand_off(self, d: Delivery, new: str, out: list[QueueEvent]) -> bool:
        """Whether the line hands the message back to our own MTA as `new` (then it is no
        outcome); adds the `Reinjected` event when outcomes under `new` came first."""
        old = self.origin(d.queue_id)
        queued = new in self._local
        late = self._unclaimed.late(new, queued)
        if queued or not late:
            self._remember(self._origin, new, old)
        # A removed queue id is free again: nothing more is logged under it for this message.
        if not (queued or late):
            return False
        if self._unclaimed.handed_back():
            self._dump = None
        if late:
            # Hops after `new` that were chained to it before this line lead back to `old`.
            for qid in [q for q, o in self._origin.items() if o == new]:
                self._origin[qid] = old
            self._dump = None
            rcpts = tuple(dict.fromkeys(r for r in (*d.recipients, d.orig_to or "") if r))
            out.append(Reinjected(queue_id=old, queued_as=new, at=d.time, recipients=rcpts,
                                  mta=self.mta))
        return True

    def _reported(self, qid: str) -> None:
        """Outcomes of `qid` went out under the queue id it leads back to: when that is one
        of ours still queued, a hand-off naming it after this is late (a chain of two
        filters whose first hand-off comes last has its later hops stored under the first)."""
        root = self.origin(qid)
        if root in self._local and self._unclaimed.report(root):
            self._dump = None

    def _expired(self, e: MessageExpired) -> list[QueueEvent]:
        waiting = self._deferred.pop(e.queue_id, {})
        if waiting:
            self._dump = None
            self._reported(e.queue_id)
        # The last deferral's reply is the reason it never went through.
        return [
            self._event(e.queue_id, last.to, last.orig_to, last.relay, DeliveryStatus.EXPIRED,
                        last.dsn, last.reply, e.time)
            for last in waiting.values()
        ]

    def _event(self, queue_id: str, to: str, orig_to: str, relay: str, status: DeliveryStatus,
               dsn: str, text: str, at: datetime, transport: str = "") -> DeliveryObserved:
        # The recipient is the address the client gave, which is what the milter recorded:
        # orig_to when the MTA rewrote it (an alias, virtual_alias_maps), else to.
        return DeliveryObserved(
            queue_id=self.origin(queue_id), recipient=orig_to or to, status=status, at=at,
            dsn=dsn, relay=relay, text=text, orig_to=orig_to, mta=self.mta,
            delivered_to=to if orig_to and to != orig_to else "", transport=transport,
        )  # fmt: skip

    def _remember(self, table: OrderedDict[str, V], key: str, value: V) -> None:
        table[key] = value
        table.move_to_end(key)
        if len(table) > self._limit:
            table.popitem(last=False)
        self._dump = None

    def dump(self) -> str:
        """The state as JSON text (kept while nothing changes: saved after every block)."""
        if self._dump is None:
            self._dump = json.dumps({
                "version": STATE_VERSION,
                "origin": list(self._origin.items()),
                "deferred": [
                    [qid, [asdict(p) for p in waiting.values()]]
                    for qid, waiting in self._deferred.items() if waiting
                ],
                "local": list(self._local),
                **self._unclaimed.dump(),
            }, separators=(",", ":"))  # fmt: skip
        return self._dump

    def restore(self, data: object) -> None:
        """Take the state `dump()` gave (decoded); all or nothing.

        Raises QueueStateError when it is not such a state; the queues are then unchanged.
        """
        try:
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise QueueStateError(f"not a version {STATE_VERSION} queue state")
            origin = OrderedDict(_pairs(_list(data["origin"])))
            deferred: OrderedDict[str, dict[tuple[str, str], _Pending]] = OrderedDict()
            for qid, pendings in _list(data["deferred"]):
                waiting = [_pending(p) for p in _list(pendings)]
                deferred[_str(qid)] = {p.key: p for p in waiting}
            local = OrderedDict.fromkeys(_str(q) for q in _list(data["local"]))
            unclaimed = self._unclaimed.restore(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise QueueStateError(f"damaged queue state: {exc!r}") from exc
        for table in (origin, deferred, local):
            while len(table) > self._limit:
                table.popitem(last=False)
        self._origin, self._deferred, self._local = origin, deferred, local
        self._unclaimed = unclaimed
        self._dump = None


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise QueueStateError(f"expected a list, found {type(value).__name__}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise QueueStateError(f"expected a string, found {value!r}")
    return value


def _pairs(items: list[Any]) -> Iterator[tuple[str, str]]:
    for new, old in items:
        yield _str(new), _str(old)


def _pending(data: Any) -> _Pending:
    if not isinstance(data, dict) or set(data) != set(_PENDING_FIELDS):
        raise QueueStateError(f"not a deferred recipient: {data!r}")
    return _Pending(*(_str(data[name]) for name in _PENDING_FIELDS))


def received_ids(block: str) -> list[str]:
    """The queue ids of smtpd's `QID: client=` lines: a substring search, as in
    `LineParser.scan`, since there is one such line per message received."""
    ids: list[str] = []
    find, rfind = block.find, block.rfind
    pos = find(_RECEIVED)
    while pos >= 0:
        start = rfind(" ", 0, pos) + 1
        qid = block[start:pos]
        if start > 1 and block[start - 2] == ":" and qid.isalnum() and qid != "NOQUEUE":
            ids.append(qid)
        pos = find(_RECEIVED, pos + 1)
    return ids
