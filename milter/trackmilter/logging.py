"""structlog set-up: JSON lines when not on a tty (or when asked), a console renderer on a tty."""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}

# Never let these reach a log line, whatever a caller binds by mistake.
_SECRET_KEYS = frozenset({"secret", "secrets", "key", "password", "token_key", "hmac_key"})


def _drop_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in _SECRET_KEYS.intersection(event):
        event[k] = "[redacted]"
    return event


# Fields that hold an email address (or a list of recipient dicts with an "address").
_ADDRESS_KEYS = ("recipient", "sender", "orig_to", "delivered_to", "auth_user")


def pseudonym(address: str) -> str:
    """A stable stand-in for an address: the same address, the same value in every line
    (so `jq` still follows one recipient), without the address. Pseudonymous, not
    anonymous: whoever has a candidate address can check it."""
    digest = hashlib.sha256(address.strip().lower().encode("utf-8", "replace")).hexdigest()
    return f"sha256:{digest[:16]}"


def _hash_addresses(_: Any, __: str, event: MutableMapping[str, Any]
                    ) -> MutableMapping[str, Any]:
    for k in _ADDRESS_KEYS:
        v = event.get(k)
        if isinstance(v, str) and v:
            event[k] = pseudonym(v)
    rcpts = event.get("recipients")
    if isinstance(rcpts, list):
        event["recipients"] = [
            {**r, "address": pseudonym(str(r["address"]))}
            if isinstance(r, dict) and r.get("address") else r for r in rcpts]
    return event


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None,
              hash_addresses: bool = False) -> None:
    """Configure structlog once per process, from the ``[log]`` settings."""
    out = stream if stream is not None else sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            *([_hash_addresses] if hash_addresses else []),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("trackmilter").bind(**bound)
