"""The addresses health probes and neighbour solicitations leave from.

Left to the kernel, the source of a datagram to an IPv6 backend is the local address
with the longest prefix in common with it, and a /128 VIP on the interface beats the
balancer's own /64 address: the backend, which holds the VIP on its loopback, answers
itself, and every backend looks dead. So pesigitgd chooses, per address family, an
address of the data-plane interface that is not a VIP (the one whose prefix holds the
most backends; a host address, /32 or /128, covering none is taken for an unlisted VIP
and never chosen), or takes the one the operator gives (``source_address``), and binds
every probe and solicitation to it. A family with backends to probe or resolve and no
such address is a start-up (or reload) error that says what to add.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pesigitg.errors import os_error

__all__ = ["Candidate", "Sources", "SourceError", "choose_sources", "interface_candidates"]

# linux/if_addr.h
IFA_F_SECONDARY, IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x01, 0x08, 0x40
RT_SCOPE_UNIVERSE = 0

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class SourceError(ValueError):
    """No address to probe a family's backends from, or a configured one unusable."""


@dataclass(frozen=True)
class Candidate:
    """One address of the interface, as the kernel lists it."""
    interface: IPInterface
    secondary: bool = False         # IPv4: another address in the same prefix is first
    tentative: bool = False         # IPv6 duplicate address detection not finished (or failed)

    @property
    def address(self) -> str:
        return str(self.interface.ip)


@dataclass(frozen=True)
class Sources:
    """The chosen address per family (4, 6) and how it was chosen."""
    addresses: dict[int, str]
    how: dict[int, str]             # "configured" or "automatic"

    def for_backend(self, backend: str) -> str | None:
        return self.addresses.get(ipaddress.ip_address(backend).version)

    def describe(self) -> dict[str, dict[str, str] | None]:
        return {f"ipv{v}": ({"address": self.addresses[v], "chosen": self.how[v]}
                            if v in self.addresses else None) for v in (4, 6)}


def interface_candidates(ifname: str) -> list[Candidate]:
    """The interface's global-scope addresses, in the kernel's order."""
    try:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                raise os_error(errno.ENODEV, f"listing the addresses of {ifname}",
                               " (no such interface)")
            messages = ipr.get_addr(index=found[0])
    except NetlinkError as exc:
        raise os_error(abs(exc.code), f"listing the addresses of {ifname}") from None
    out = []
    for m in messages:
        if m["scope"] != RT_SCOPE_UNIVERSE:
            continue
        address = m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")
        flags = m.get_attr("IFA_FLAGS") or m["flags"]
        out.append(Candidate(ipaddress.ip_interface(f"{address}/{m['prefixlen']}"),
                             secondary=bool(flags & IFA_F_SECONDARY),
                             tentative=bool(flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED))))
    return out


def choose_sources(ifname: str, candidates: Iterable[Candidate], vips: Iterable[str],
                   backends: Iterable[str], configured: Iterable[str] = ()) -> Sources:
    """A source for every family of ``backends`` (those that need one): the configured
    address of that family, else the interface address, not a VIP, whose prefix holds
    the most of them (then: a primary address, a shorter prefix, the kernel's order)."""
    listed = list(candidates)
    vip_set = {ipaddress.ip_address(v) for v in vips}
    wanted = [ipaddress.ip_address(b) for b in backends]
    given = {ipaddress.ip_address(a).version: ipaddress.ip_address(a) for a in configured}
    addresses: dict[int, str] = {}
    how: dict[int, str] = {}
    for version in sorted({b.version for b in wanted} | set(given)):
        family = [c for c in listed if c.interface.version == version]
        if version in given:
            address = given[version]
            if address in vip_set:
                raise SourceError(f"source_address {address} is a VIP: backends holding the "
                                  "VIP on their loopback would answer themselves")
            if not any(c.interface.ip == address for c in family):
                raise SourceError(f"source_address {address} is not an address of {ifname}")
            addresses[version], how[version] = str(address), "configured"
            continue
        mine = [b for b in wanted if b.version == version]
        usable = [c for c in family if c.interface.ip not in vip_set and not c.tentative]
        best = max(usable, default=None, key=lambda c: (
            _covered(c, mine), not c.secondary, -c.interface.network.prefixlen,
            -usable.index(c)))
        # A host address (/32, /128) that covers no backend is what a VIP looks like
        # when vips is not set: never guess that it is the balancer's own.
        if best is None or (not _covered(best, mine) and _host(best)):
            raise SourceError(_nothing_usable(ifname, version, family, vip_set, mine))
        addresses[version], how[version] = best.address, "automatic"
    return Sources(addresses, how)


def _covered(candidate: Candidate,
             backends: list[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> int:
    return sum(b in candidate.interface.network for b in backends)


def _host(candidate: Candidate) -> bool:
    return candidate.interface.network.prefixlen == candidate.interface.max_prefixlen


def _nothing_usable(ifname: str, version: int, family: list[Candidate],
                    vips: set[ipaddress.IPv4Address | ipaddress.IPv6Address],
                    backends: list[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> str:
    why = [f"{c.address} is a VIP" for c in family if c.interface.ip in vips] + \
          [f"{c.address} is still tentative (duplicate address detection)"
           for c in family if c.tentative and c.interface.ip not in vips] + \
          [f"{c.interface} covers none of them and may be a VIP" for c in family
           if _host(c) and not c.tentative and c.interface.ip not in vips
           and not _covered(c, backends)]
    have = f" ({'; '.join(why)})" if why else ""
    prefix = 24 if version == 4 else 64
    return (f"no IPv{version} address on {ifname} to probe and resolve the IPv{version} "
            f"backends ({', '.join(map(str, backends))}) from{have}: add one in their prefix "
            f"(ip -{version} addr add ADDRESS/{prefix} dev {ifname}) or set source_address")
