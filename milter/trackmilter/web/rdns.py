"""Optional reverse DNS for the tracker: cached, resolved off the response path, and the
mail-security providers a PTR name gives away."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from trackmilter.web.forwarded import IPAddress

Resolver = Callable[[str], str]


def _gethostbyaddr(address: str) -> str:

    return socket.gethostbyaddr(address)[0]


class ReverseDNS:
    """Cached PTR names, resolved in background threads: `name` never waits, it answers None
    until the name is known (off by default; never let the response path block on DNS)."""

    def __init__(self, resolver: Resolver = _gethostbyaddr, max_entries: int = 65536,
                 workers: int = 2) -> None:
        self._resolver = resolver
        self._max = max_entries
        self._cache: dict[str, str] = {}  # "" = looked up, no name
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rdns")

    def name(self, ip: IPAddress) -> str | None:
        key = str(ip)
        with self._lock:
            if key in self._cache:
                return self._cache[key] or None
            if key in self._pending or len(self._pending) >= self._max:
                return None
            self._pending.add(key)
        self._pool.submit(self._resolve, key)
        return None

    def _resolve(self, key: str) -> None:
        try:
            name = self._resolver(key)
        except (OSError, UnicodeError):
            name = ""
        with self._lock:
            self._pending.discard(key)
            if len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)))  # oldest first: dicts keep order
            self._cache[key] = name.rstrip(".").lower()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# PTR suffixes of mail-security services that fetch links and images on their customers'
# behalf (their published documentation names these hosts); the label is a network label
# the verdict knows ([verdict] scanner_networks).
SCANNER_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".protection.outlook.com", "microsoft"),
    (".pphosted.com", "proofpoint"),
    (".ppe-hosted.com", "proofpoint"),
    (".mimecast.com", "mimecast"),
    (".barracudanetworks.com", "barracuda"),
    (".barracuda.com", "barracuda"),
    (".iphmx.com", "scanner"),  # Cisco Secure Email (IronPort) cloud
    (".messagelabs.com", "scanner"),  # Broadcom / Symantec Email Security.cloud
    (".trendmicro.com", "scanner"),
    (".sophos.com", "scanner"),
)


def label_for_hostname(name: str) -> str | None:
    """The network label a PTR name implies, or None."""
    host = "." + name.lower().rstrip(".")
    for suffix, label in SCANNER_SUFFIXES:
        if host.endswith(suffix):
            return label
    return None
