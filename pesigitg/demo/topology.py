"""The demo's network: client, load balancer and backends on one bridge, DSR.

Every host is a network namespace with one veth into a bridge (itself in a
namespace). The VIP is on the load balancer's interface and on each backend's
loopback, with contrib/dsr-backend.sh's ARP settings so only the load balancer
answers ARP for it. Everything is removed on close, also after a failure.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pesigitg.testing.netns import ip, mac_of, unique_name

__all__ = ["Host", "Topology"]

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
SUBNET = "10.77.0"
VIP = f"{SUBNET}.100"


@dataclass
class Host:
    role: str
    ns: str
    dev: str
    address: str
    mac: bytes = b""
    extra: list[str] = field(default_factory=list)


class Topology:
    """``with Topology(backends=3) as net:`` builds it; leaving the block removes it."""

    def __init__(self, backends: int = 3) -> None:
        self.tag = unique_name("pq")
        self.vip = VIP
        self.switch = f"{self.tag}-sw"
        self.client = Host("client", f"{self.tag}-client", "c0", f"{SUBNET}.10",
                           extra=[f"{SUBNET}.11"])
        self.lb = Host("lb", f"{self.tag}-lb", "l0", f"{SUBNET}.2")
        self.backends = [Host(f"b{n}", f"{self.tag}-b{n}", f"b{n}0", f"{SUBNET}.{20 + n}")
                         for n in range(1, backends + 1)]
        self._stack = contextlib.ExitStack()

    @property
    def hosts(self) -> list[Host]:
        return [self.client, self.lb, *self.backends]

    def __enter__(self) -> Topology:
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

    def _netns(self, name: str) -> None:
        ip("netns", "add", name)
        self._stack.callback(ip, "netns", "del", name, check=False)
        ip("link", "set", "lo", "up", ns=name)

    def _build(self) -> None:
        self._netns(self.switch)
        ip("link", "add", "br0", "type", "bridge", ns=self.switch)
        ip("link", "set", "br0", "up", ns=self.switch)
        for host in self.hosts:
            self._netns(host.ns)
            port = f"p-{host.role}"
            ip("link", "add", host.dev, "type", "veth", "peer", "name", port, ns=host.ns)
            ip("link", "set", port, "netns", self.switch, ns=host.ns)
            ip("link", "set", port, "master", "br0", "up", ns=self.switch)
            ip("link", "set", host.dev, "up", ns=host.ns)
            for address in [host.address, *host.extra]:
                ip("addr", "add", f"{address}/24", "dev", host.dev, ns=host.ns)
            # Real NICs fill in UDP checksums; veth leaves them to the receiver's
            # stack, which frames forwarded by AF_XDP never pass through.
            self.run(host, "ethtool", "-K", host.dev, "tx", "off", quiet=True)
            host.mac = mac_of(host.ns, host.dev)
        ip("addr", "add", f"{self.vip}/32", "dev", self.lb.dev, ns=self.lb.ns)
        if not (CONTRIB / "dsr-backend.sh").exists():
            raise FileNotFoundError(f"{CONTRIB / 'dsr-backend.sh'} is missing: the demo runs "
                                    "from a source checkout (make demo)")
        for backend in self.backends:
            self.run(backend, str(CONTRIB / "dsr-backend.sh"), self.vip)

    def run(self, host: Host, *command: str, quiet: bool = False
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", host.ns, *command], check=True,
                              text=True, capture_output=quiet)

    def popen(self, host: Host, *command: str, **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", host.ns, *command], text=True,
                                **kwargs)  # type: ignore[call-overload]
