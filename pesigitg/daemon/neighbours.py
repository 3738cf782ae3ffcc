"""Backend MAC addresses from the kernel's neighbour table (ARP / NDP), via pyroute2.

A backend without an entry is not waited for: we send it a datagram on the data
interface, which makes the kernel resolve it, and look again on the next round.
A static ``mac`` in the route config always wins over what the table says.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pesigitg.errors import os_error

__all__ = ["NeighbourTable", "interface_mac"]

log = logging.getLogger("pesigitg.daemon.neighbours")

# linux/neighbour.h: states with a usable link-layer address
NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE = 0x02, 0x04, 0x08, 0x10
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
USABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT
DISCARD_PORT = 9     # RFC 863: anything sent there is thrown away
SO_BINDTODEVICE = 25


def interface_mac(ifname: str) -> bytes:
    with IPRoute() as ipr:
        links = ipr.get_links(ifname=ifname)
    if not links:
        raise os_error(errno.ENODEV, f"reading the MAC of {ifname}", " (no such interface)")
    address = links[0].get_attr("IFLA_ADDRESS")
    return bytes.fromhex(address.replace(":", ""))


class NeighbourTable:
    """Looks up (and solicits) backend MACs on one interface."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise os_error(errno.ENODEV, f"looking up interface {ifname}",
                           " (no such interface)")
        self.ifindex = found[0]

    def lookup(self, addresses: Iterable[str]) -> dict[str, bytes | None]:
        """MAC of every address (None where the table has no usable entry)."""
        wanted = {str(ipaddress.ip_address(a)): None for a in addresses}
        result: dict[str, bytes | None] = dict(wanted)
        try:
            with IPRoute() as ipr:
                entries = ipr.get_neighbours(ifindex=self.ifindex)
        except NetlinkError as exc:
            raise os_error(abs(exc.code),
                           f"reading the neighbour table of {self.ifname}") from None
        for entry in entries:
            dst, lladdr = entry.get_attr("NDA_DST"), entry.get_attr("NDA_LLADDR")
            if dst is None or lladdr is None or not entry["state"] & USABLE:
                continue
            key = str(ipaddress.ip_address(dst))
            if key in result:
                result[key] = bytes.fromhex(lladdr.replace(":", ""))
        return result

    def solicit(self, address: str, source: str | None) -> None:
        """Make the kernel resolve ``address`` now (an ARP request or NDP solicitation).
        The solicitation leaves from the triggering datagram's source, so that must be
        ``source``, never a VIP: a backend holding the VIP would answer itself."""
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.ifname.encode())
                if source is not None:
                    sock.bind((source, 0))
                sock.setblocking(False)
                sock.sendto(b"", (address, DISCARD_PORT))
        except OSError as exc:
            # Unreachable or no route: the neighbour stays unresolved and is retried.
            log.debug("soliciting %s on %s: %s", address, self.ifname, exc.strerror)
