"""Exchange ``IPRange`` notations (receive connector ``RemoteIPRanges``) as integer intervals.

Exchange accepts and displays four forms: a single address (``192.168.5.10``), CIDR
(``10.0.0.0/8``, ``fe80::/10``), a start-end range (``192.168.1.1-192.168.1.50``,
``::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff``) and, in older versions, address/netmask
(``10.0.0.0(255.0.0.0)``). Everything is parsed with :mod:`ipaddress`; the relay analysis then only
needs interval arithmetic: which addresses of a connector's ranges lie outside the trusted networks.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_NETMASK = re.compile(r"^\s*([^()\s]+)\s*\(\s*([^()\s]+)\s*\)\s*$")

#: Networks that are not the internet: RFC 1918, loopback, link-local, CGNAT, IPv6 ULA/link-local.
PRIVATE_NETWORKS: tuple[str, ...] = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)


@dataclass(frozen=True, order=True)
class AddressRange:
    """An inclusive interval of addresses of one IP version."""

    version: int
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        make = ipaddress.IPv4Address if self.version == 4 else ipaddress.IPv6Address
        if self.first == self.last:
            return str(make(self.first))
        return f"{make(self.first)}-{make(self.last)}"


def parse_ip_range(text: str) -> AddressRange:
    """One Exchange IPRange display string to an interval; raises ValueError naming the input."""
    raw = text.strip()
    try:
        masked = _NETMASK.match(raw)
        if masked:
            net = ipaddress.ip_network(f"{masked.group(1)}/{masked.group(2)}", strict=False)
            return AddressRange(net.version, int(net.network_address), int(net.broadcast_address))
        if "/" in raw:
            net = ipaddress.ip_network(raw, strict=False)
            return AddressRange(net.version, int(net.network_address), int(net.broadcast_address))
        if "-" in raw:
            start_text, end_text = (part.strip() for part in raw.split("-", 1))
            start, end = ipaddress.ip_address(start_text), ipaddress.ip_address(end_text)
            if start.version != end.version:
                raise ValueError("mixed IP versions")
            low, high = sorted((int(start), int(end)))
            return AddressRange(start.version, low, high)
        addr = ipaddress.ip_address(raw)
        return AddressRange(addr.version, int(addr), int(addr))
    except ValueError as err:
        raise ValueError(f"not an IP range: {text!r} ({err})") from None


def parse_ip_ranges(texts: Iterable[str]) -> list[AddressRange]:
    """Every parseable range; unparseable entries raise ValueError (a connector must not look safe
    because one of its ranges could not be read)."""
    return [parse_ip_range(t) for t in texts if str(t).strip()]


def merge(ranges: Iterable[AddressRange]) -> list[AddressRange]:
    """Sorted, non-overlapping, non-adjacent intervals covering exactly the same addresses."""
    out: list[AddressRange] = []
    for r in sorted(ranges):
        if out and out[-1].version == r.version and r.first <= out[-1].last + 1:
            prev = out[-1]
            out[-1] = AddressRange(r.version, prev.first, max(prev.last, r.last))
        else:
            out.append(r)
    return out


def subtract(ranges: Sequence[AddressRange], remove: Sequence[AddressRange]) -> list[AddressRange]:
    """The addresses of ``ranges`` that are not in ``remove``."""
    left = merge(ranges)
    for cut in merge(remove):
        nxt: list[AddressRange] = []
        for r in left:
            if r.version != cut.version or cut.last < r.first or cut.first > r.last:
                nxt.append(r)
                continue
            if r.first < cut.first:
                nxt.append(AddressRange(r.version, r.first, cut.first - 1))
            if r.last > cut.last:
                nxt.append(AddressRange(r.version, cut.last + 1, r.last))
        left = nxt
    return left


def outside(ranges: Sequence[AddressRange], trusted: Sequence[AddressRange]) -> int:
    """How many addresses of ``ranges`` lie outside ``trusted`` (0: all of them are trusted)."""
    return sum(r.size for r in subtract(ranges, trusted))


def same_addresses(a: Sequence[AddressRange], b: Sequence[AddressRange]) -> bool:
    """True if both lists cover exactly the same addresses, whatever notation each used."""
    return merge(a) == merge(b)
