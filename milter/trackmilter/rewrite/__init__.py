"""Pure link rewriting: message body bytes in, rewritten bytes and the tracked links out.

The milter layer calls :func:`rewrite_message` once per message with the top-level
Content-Type / Content-Transfer-Encoding values and the body; nothing here does I/O.
"""

from __future__ import annotations

from trackmilter.rewrite.engine import Linker, rewrite_message
from trackmilter.rewrite.model import Link, RewriteOptions, RewriteResult, SkipReason

__all__ = [
    "Link",
    "Linker",
    "RewriteOptions",
    "RewriteResult",
    "SkipReason",
    "rewrite_message",
]
