"""Content-filter hand-offs logged after the re-injected copy's own outcomes.

With an after-queue content filter (Postfix's FILTER_README, "Advanced content filter"),
the smtp(8) client hands the queue file OLD to the filter, which re-injects it through a
second smtpd(8) as NEW; the filter answers OLD's end of data only once its re-injection's
end of data was answered ("The simplest content filter just copies SMTP commands and data
between its inputs and outputs"). So NEW exists before the client logs the hand-off
`OLD: ... status=sent (250 2.0.0 Ok: queued as NEW)`; and NEW is a queue file of its own,
which qmgr(8) may schedule and a delivery agent (LMTP to a local mailbox store is quick)
may deliver and log, and qmgr remove, before that line. Those outcomes went out under NEW,
tied to no message; this remembers which of our queue ids that happened to, so that the
hand-off, when it comes, can say so (`model.Reinjected`) and is still told from a next hop.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["HAND_OFF_WINDOW", "MAX_FINISHED", "MAX_FINISHED_UNFILTERED", "Unclaimed"]

# How long after a queue file is removed a hand-off may still name it, in log seconds:
# smtp(8) waits at most smtp_data_done_timeout (600s by default, postconf(5)) for the
# filter's answer to the end of data, and NEW was created while it waited.
HAND_OFF_WINDOW = 600
# And at most this many removed queue ids: the state file is rewritten after every block.
MAX_FINISHED = 10_000
# Before any hand-off to our own MTA was seen (a site without a content filter, or a first
# start): enough for the first late hand-off at a site with one (few of its queue ids are
# reported under their own id), little to rewrite at a site without.
MAX_FINISHED_UNFILTERED = 256


class Unclaimed:
    """Our queue ids whose outcomes were reported under their own id: no hand-off had named
    them (yet). `reported` holds those still queued; `finished` those removed since, with
    the log time (epoch seconds) of the removal, kept for HAND_OFF_WINDOW.

    `finished` keeps MAX_FINISHED_UNFILTERED until a hand-off to our own MTA has been seen
    (`filtering`, saved with the rest): a site without a content filter would otherwise
    rewrite every queue id of the last ten minutes with each block's state.

    Methods return whether anything changed (the queues' dump is kept until it does).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._finished_limit = min(limit, MAX_FINISHED)
        self.reported: OrderedDict[str, None] = OrderedDict()
        self.finished: OrderedDict[str, int] = OrderedDict()
        self.filtering = False

    def handed_back(self) -> bool:
        """A content filter handed a message back to our MTA."""
        if self.filtering:
            return False
        self.filtering = True
        return True

    def report(self, qid: str) -> bool:
        if qid in self.reported:
            return False
        self.reported[qid] = None
        if len(self.reported) > self._limit:
            self.reported.popitem(last=False)
        return True

    def removed(self, qid: str, at: int) -> bool:
        """The queue file is gone; a late hand-off may still name it for a while."""
        if qid not in self.reported:
            return False
        del self.reported[qid]
        self.finished[qid] = at
        self.finished.move_to_end(qid)
        horizon = at - HAND_OFF_WINDOW
        most = self._finished_limit if self.filtering else MAX_FINISHED_UNFILTERED
        while self.finished and (len(self.finished) > most
                                 or next(iter(self.finished.values())) < horizon):
            self.finished.popitem(last=False)
        return True

    def late(self, new: str, queued: bool) -> bool:
        """Whether a hand-off naming `new` comes after outcomes reported under it; `queued`:
        `new` is in the queue now (a reused short queue id is not the removed one)."""
        return new in self.reported if queued else new in self.finished

    def dump(self) -> dict[str, Any]:
        return {"reported": list(self.reported), "finished": list(self.finished.items()),
                "filtering": self.filtering}

    def restore(self, data: dict[str, Any]) -> Unclaimed:
        """A new instance from `dump()`'s tables (absent in states saved before them).

        Raises TypeError or ValueError when they are not such tables."""
        fresh = Unclaimed(self._limit)
        reported = data.get("reported", [])
        finished = data.get("finished", [])
        fresh.filtering = data.get("filtering", False)
        if not isinstance(reported, list) or not isinstance(finished, list):
            raise TypeError("unclaimed queue ids: expected lists")
        if not isinstance(fresh.filtering, bool):
            raise TypeError(f"filtering: expected a boolean, found {fresh.filtering!r}")
        for qid in reported[-self._limit:]:
            if not isinstance(qid, str):
                raise TypeError(f"expected a queue id, found {qid!r}")
            fresh.reported[qid] = None
        for item in finished[-fresh._finished_limit:]:
            qid, at = item
            if not isinstance(qid, str) or type(at) is not int:
                raise TypeError(f"expected [queue id, time], found {item!r}")
            fresh.finished[qid] = at
        return fresh
