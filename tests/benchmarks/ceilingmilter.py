"""`trackmilter milter` with rewriting memoised by body: what the milter would cost if
rewriting cost nothing (a native engine's ceiling). A bench_postfix diagnostic only:
every copy of a body gets the first copy's links and tokens, so never run it on real mail.

Usage: python ceilingmilter.py --config FILE milter
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "milter"))
from trackmilter.cli import main  # noqa: E402
from trackmilter.mta import session  # noqa: E402
from trackmilter.rewrite import RewriteResult  # noqa: E402

_real = session.rewrite_message
_memo: dict[tuple[Any, ...], RewriteResult] = {}


def _memoised(content_type: str | None, transfer_encoding: str | None, body: bytes,
              *args: Any) -> RewriteResult:
    key = (content_type, transfer_encoding, body)
    found = _memo.get(key)
    if found is None:
        found = _memo[key] = _real(content_type, transfer_encoding, body, *args)
    return found


session.rewrite_message = _memoised  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main())
