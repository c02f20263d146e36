"""IP networks and whether an address is in one (the milter's outgoing networks, the
webhooks' in-line refusals); imports nothing of ours, so any layer may use it."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def in_networks(addr: str, networks: Sequence[Network]) -> bool:
    """Whether `addr` (an IPv6 zone and the IPv4-mapped form allowed) is in any of them."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)
