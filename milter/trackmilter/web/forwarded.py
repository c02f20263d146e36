"""Who made a request: the peer, or the client a trusted reverse proxy says it forwarded."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from trackmilter.addresses import Network

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> IPAddress | None:
    """An address from a header element: `192.0.2.1`, `[2001:db8::1]:443`, `"[::1]"`,
    `192.0.2.1:8080`; None for `unknown`, obfuscated identifiers and garbage."""
    s = text.strip().strip('"').strip()
    if s.startswith("["):
        s = s[1:].partition("]")[0]
    elif s.count(":") == 1:
        s = s.partition(":")[0]  # IPv4 with a port
    try:
        return ipaddress.ip_address(s)
    except ValueError:
        return None


def _forwarded_for(value: str) -> list[str]:
    """The `for=` values of an RFC 7239 Forwarded header, in order."""
    out = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, _, val = pair.strip().partition("=")
            if name.strip().lower() == "for":
                out.append(val)
    return out


class ClientResolver:
    """Believes X-Forwarded-For / Forwarded only from trusted peers, and walks the chain
    from the right: each hop appends the address it received from, so the rightmost
    address that is not one of our proxies is the client. Leftmost values are whatever
    the client chose to send and prove nothing."""

    def __init__(self, trusted: Sequence[Network], header: str = "x-forwarded-for") -> None:
        self._v4 = tuple(n for n in trusted if n.version == 4)
        self._v6 = tuple(n for n in trusted if n.version == 6)
        # Only the one header the proxy sets: a proxy that replaces X-Forwarded-For passes a
        # client's own Forwarded header through, and reading it would let clients choose.
        self.header = header

    @lru_cache(maxsize=4096)  # noqa: B019 - one resolver per process, bounded cache
    def trusted(self, ip: IPAddress) -> bool:
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        nets = self._v4 if ip.version == 4 else self._v6
        return any(ip in n for n in nets)

    def client(self, peer: str | None, forwarded: str | None,
               x_forwarded_for: str | None) -> IPAddress | None:
        ip = parse_ip(peer) if peer else None
        if ip is None or not self.trusted(ip):
            return ip
        if self.header == "forwarded":
            chain = _forwarded_for(forwarded) if forwarded else []
        else:
            chain = x_forwarded_for.split(",") if x_forwarded_for else []
        if not chain:
            return ip
        for item in reversed(chain):
            hop = parse_ip(item)
            if hop is None:
                # An obfuscated or unknown hop: nothing to the left of it can be checked.
                return ip
            ip = hop
            if not self.trusted(hop):
                return hop
        return ip


def truncate(ip: IPAddress | None, v4_prefix: int, v6_prefix: int) -> str:
    """The address as stored: whole, or its network (`192.0.2.0/24`) under [privacy]."""
    if ip is None:
        return ""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # an IPv4 client on a dual-stack socket is an IPv4 client
    prefix = v4_prefix if ip.version == 4 else v6_prefix
    if prefix >= ip.max_prefixlen:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
