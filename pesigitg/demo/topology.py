"""The demo's network: client, load balancer and backends on one bridge, DSR, over
IPv4, IPv6 or both.

Every host is a network namespace with one veth into a bridge (itself in a
namespace). Each family has a subnet (10.77.0.0/24, fd00:77::/64) and a VIP in it,
held by the load balancer's interface as a /32 or /128 and by each backend's loopback
(contrib/dsr-backend.sh, which also sets the ARP sysctls so only the load balancer
answers ARP for it; IPv6 needs none: Linux answers neighbour solicitations only for
addresses of the interface they arrive on). The IPv6 VIP in the backends' own /64 is
the case where a kernel left alone would send health probes from the VIP. Everything
is removed on close, also after a failure.

``Network`` holds what this and the ECMP demo's network (ecmp_topology.py) share.
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from pesigitg.testing.netns import add_namespace, ip, mac_of, unique_name

__all__ = ["Host", "Network", "Topology", "address", "version_of"]

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
PREFIX = {4: 24, 6: 64}
VIP_HOST = 100
FABRIC = 77             # the subnets 10.77.0.0/24 and fd00:77::/64


def version_of(address: str) -> int:
    """4 or 6: the family of an address (a VIP, a host's)."""
    return ipaddress.ip_address(address).version


def address(version: int, host: int, subnet: int = FABRIC) -> str:
    """Host number ``host`` of the family's demo subnet number ``subnet``."""
    return f"10.{subnet}.0.{host}" if version == 4 else f"fd00:{subnet}::{host}"


@dataclass
class Host:
    role: str
    ns: str
    dev: str
    number: int                             # its host number in every subnet
    families: tuple[int, ...]
    family: int                             # of the address pesigitgd knows it by
    mac: bytes = b""
    extra: list[int] = field(default_factory=list)   # more host numbers (the client)
    subnet: int = FABRIC

    @property
    def address(self) -> str:
        return address(self.family, self.number, self.subnet)

    def addresses(self, version: int) -> list[str]:
        return [address(version, n, self.subnet) for n in (self.number, *self.extra)]


class Network:
    """What the demo's networks share: namespaces removed on close (also after a
    failure), the bridge (``fabric``), backends prepared for Direct Server Return, and
    VIPs in subnet ``vip_subnet``. ``backend_families`` says by which family's address
    pesigitgd knows each backend (default: the first family)."""

    client: Host            # the subclass places it

    def __init__(self, prefix: str, families: tuple[int, ...], vip_subnet: int,
                 backends: int, backend_families: list[int] | None) -> None:
        self.tag = unique_name(prefix)
        self.families = families
        self.vips = {v: address(v, VIP_HOST, vip_subnet) for v in families}
        self.switch = f"{self.tag}-sw"
        chosen = backend_families or [families[0]] * backends
        self.backends = [Host(f"b{n}", f"{self.tag}-b{n}", f"b{n}0", 20 + n, families,
                              chosen[n - 1]) for n in range(1, backends + 1)]
        self._stack = contextlib.ExitStack()

    @property
    def vip(self) -> str:
        return self.vips[self.families[0]]

    def __enter__(self) -> Self:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def _build(self) -> None:
        raise NotImplementedError

    def make_netns(self, name: str) -> None:
        add_namespace(name)
        self._stack.callback(ip, "netns", "del", name, check=False)
        ip("link", "set", "lo", "up", ns=name)

    def fabric(self, hosts: list[Host]) -> None:
        """The bridge, and ``hosts`` on it."""
        self.make_netns(self.switch)
        ip("link", "add", "br0", "type", "bridge", ns=self.switch)
        ip("link", "set", "br0", "up", ns=self.switch)
        for host in hosts:
            self.plug(host)

    @staticmethod
    def port(host: Host) -> str:
        """The name of ``host``'s port on the bridge (in the namespace ``switch``)."""
        return f"p-{host.role}"

    def plug(self, host: Host) -> None:
        """``host`` in its own namespace, on the bridge (also after the build: removed
        with the rest)."""
        self.make_netns(host.ns)
        port = self.port(host)
        ip("link", "add", host.dev, "type", "veth", "peer", "name", port, ns=host.ns)
        ip("link", "set", port, "netns", self.switch, ns=host.ns)
        ip("link", "set", port, "master", "br0", "up", ns=self.switch)
        self.configure(host)

    def configure(self, host: Host) -> None:
        """Up, addressed in every family, checksums filled in by the sender."""
        ip("link", "set", host.dev, "up", ns=host.ns)
        for version in self.families:
            for a in host.addresses(version):
                # nodad: usable at once (duplicate address detection takes a second)
                ip("addr", "add", f"{a}/{PREFIX[version]}", "dev", host.dev,
                   *(["nodad"] if version == 6 else []), ns=host.ns)
        # Real NICs fill in UDP checksums; veth leaves them to the receiver's
        # stack, which frames forwarded by AF_XDP never pass through.
        self.run(host, "ethtool", "-K", host.dev, "tx", "off", quiet=True)
        host.mac = mac_of(host.ns, host.dev)

    def dsr_backends(self) -> None:
        if not (CONTRIB / "dsr-backend.sh").exists():
            raise FileNotFoundError(f"{CONTRIB / 'dsr-backend.sh'} is missing: the demo runs "
                                    "from a source checkout (make demo)")
        for backend in self.backends:
            self.run(backend, str(CONTRIB / "dsr-backend.sh"), *self.vips.values(), quiet=True)

    def run(self, host: Host, *command: str, quiet: bool = False
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", host.ns, *command], check=True,
                              text=True, capture_output=quiet)

    def popen(self, host: Host, *command: str, **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", host.ns, *command], text=True,
                                **kwargs)  # type: ignore[call-overload]


class Topology(Network):
    """Client, load balancer and backends on one bridge, the VIPs in the backends'
    subnet. ``with Topology(backends=3, families=(4, 6)) as net:`` builds it; leaving
    the block removes it."""

    def __init__(self, backends: int = 3, families: tuple[int, ...] = (4,),
                 backend_families: list[int] | None = None) -> None:
        super().__init__("pq", families, FABRIC, backends, backend_families)
        first = families[0]
        self.client = Host("client", f"{self.tag}-client", "c0", 10, families, first,
                           extra=[11])
        self.lb = Host("lb", f"{self.tag}-lb", "l0", 2, families, first)

    def _build(self) -> None:
        self.fabric([self.client, self.lb, *self.backends])
        for version, vip in self.vips.items():
            ip("addr", "add", f"{vip}/{32 if version == 4 else 128}", "dev", self.lb.dev,
               *(["nodad"] if version == 6 else []), ns=self.lb.ns)
        self.dsr_backends()
