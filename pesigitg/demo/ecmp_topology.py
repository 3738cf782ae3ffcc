"""The ECMP demo's network: a client behind a router, two balancers the router
spreads the VIPs over, three DSR backends; IPv4 and IPv6.

    client ── router ══ fabric bridge ══ lb1, lb2, b1, b2, b3

The client (10.78.0.10 and .11, fd00:78::10 and ::11) has its own link to the router
(10.78.0.1, fd00:78::1). The router is on the fabric (10.77.0.0/24, fd00:77::/64) as
host 1 with the balancers (hosts 11, 12) and the backends (21-23); it forwards, with
the multipath hash on the 5-tuple (contrib/sysctl/90-pesigitg-router.conf). The VIPs
(10.79.0.100, fd00:79::100) are on no link: the router learns them from the
balancers over BGP, and the backends hold them on their loopback
(contrib/dsr-backend.sh) and answer the client directly through the router.
"""

from __future__ import annotations

from pesigitg.demo.topology import CONTRIB, FABRIC, Host, Network, address
from pesigitg.testing.netns import ip

__all__ = ["CLIENT_NET", "EcmpTopology"]

CLIENT_NET, VIP_NET = 78, 79
ROUTER = 1


class EcmpTopology(Network):
    """``with EcmpTopology() as net:`` builds it; leaving the block removes it."""

    def __init__(self, balancers: int = 2, backends: int = 3,
                 families: tuple[int, ...] = (4, 6)) -> None:
        super().__init__("pe", families, VIP_NET, backends, None)
        first = families[0]
        self.client = Host("client", f"{self.tag}-client", "c0", 10, families, first,
                           extra=[11], subnet=CLIENT_NET)
        self.router = Host("router", f"{self.tag}-router", "r1", ROUTER, families, first)
        self.uplink = Host("router", self.router.ns, "r0", ROUTER, families, first,
                           subnet=CLIENT_NET)       # the router's side of the client link
        self.lbs = [Host(f"lb{n}", f"{self.tag}-lb{n}", "l0", 10 + n, families, first)
                    for n in range(1, balancers + 1)]

    def _build(self) -> None:
        self.fabric([self.router, *self.lbs, *self.backends])
        self.make_netns(self.client.ns)
        ip("link", "add", self.client.dev, "type", "veth", "peer", "name", self.uplink.dev,
           ns=self.client.ns)
        ip("link", "set", self.uplink.dev, "netns", self.router.ns, ns=self.client.ns)
        self.configure(self.client)
        self.configure(self.uplink)
        self.run(self.router, "sysctl", "-q", "-p",
                 str(CONTRIB / "sysctl" / "90-pesigitg-router.conf"), quiet=True)
        for host in (self.client, *self.backends):
            for version in self.families:
                ip(*(["-6"] if version == 6 else []), "route", "add", "default", "via",
                   address(version, ROUTER, host.subnet), "dev", host.dev, ns=host.ns)
        self.dsr_backends()

    def router_address(self, version: int) -> str:
        """The router's address on the fabric: the balancers' BGP peer."""
        return address(version, ROUTER, FABRIC)
