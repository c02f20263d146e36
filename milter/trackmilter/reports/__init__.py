"""Pure decoding of bounces (RFC 3464 and prose), read receipts (RFC 8098) and complaints (RFC 5965)."""

from __future__ import annotations

from trackmilter.reports.decode import decode
from trackmilter.reports.model import RecipientReport, Report, ReportKind

__all__ = ["RecipientReport", "Report", "ReportKind", "decode"]
