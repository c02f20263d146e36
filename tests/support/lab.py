"""Types shared by the lab fixtures and the tests that use them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trackmilter_lab import MilterProcess, PostfixInstance

# postfix_lab(milter=None, **PostfixInstance options) -> a started instance
PostfixFactory = Callable[..., PostfixInstance]


@dataclass
class NullMilter:
    """The do-nothing milter of tests/benchmarks, recording one JSON line per message."""

    process: MilterProcess
    record: Path

    @property
    def spec(self) -> str:
        return self.process.spec

    def records(self) -> list[dict[str, Any]]:
        try:
            text = self.record.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
