"""The end-to-end scenario: HTTP/3 through pesigitgd, with everything real.

A client, pesigitgd and three aioquic backends in namespaces on one bridge, Direct
Server Return, a four-pass QUIC-LB config, health checks on, and the kernel tier as
``xdp_decode`` says (``make demo``: all). The steps prove what
an operator relies on: connections spread over the backends and stay on theirs;
a client that changes port, address and connection ID keeps its backend; a draining
backend keeps its connections and gets no new ones; a dead backend is taken out by
health checks; a reload under live connections breaks none of them.

``python -m pesigitg.demo`` (``make demo``, demo/main.py) runs it and narrates; the
e2e tests run the same steps and assert on their results.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pesigitg.demo.certs import write_self_signed
from pesigitg.demo.h3client import H3Client, client_configuration, connect
from pesigitg.demo.narration import expect
from pesigitg.demo.topology import Host, Network, Topology, version_of
from pesigitg.routing.quiclb import CidConfig
from pesigitg.testing.daemon import RunningDaemon
from pesigitg.testing.netns import inside, receive_xdp_tx

__all__ = ["FAMILIES", "Demo", "demo_environment"]

KEY = "fdf726a9893ec05c0632d3956680baf0"
# The Retry offload's token key, shared by pesigitgd and the backends (lb.toml [retry]).
RETRY_KEY, RETRY_IV = "7c9d1a3b5e6f708192a3b4c5d6e7f801", "a1b2c3d4e5f60718293a4b5c"
CONFIG = CidConfig(2, 3, 4, bytes.fromhex(KEY), encode_length=True)   # four-pass, odd
SERVER_NAME = "quic.demo"
UdpSocket = socket.socket       # (the name "socket" is a method of Demo's)
HEALTH = {"interval_ms": 300, "timeout_ms": 200, "rise": 2, "fall": 2}


def server_id_of(h3: H3Client) -> str:
    return CONFIG.decode(h3.server_cid)[0].hex()


@dataclass
class Demo:
    net: Network
    workdir: Path
    say: Callable[[str], None] = print
    daemon: RunningDaemon | None = None
    backends: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    draining: set[str] = field(default_factory=set)
    health_interval: int = HEALTH["interval_ms"]
    vip: str = ""                   # the VIP the client talks to (default: the first)
    steps: int = 0
    retry: dict[str, object] = field(default_factory=dict)    # lb.toml [retry], if any
    hash_key: str = ""              # lb.toml [fallback] hash_key, if any
    daemon_conf: str = ""           # more pesigitgd.conf lines
    xdp_decode: str = "off"         # the kernel tier (pesigitgd.conf xdp_decode)

    def __post_init__(self) -> None:
        self.vip = self.vip or self.net.vip

    @property
    def family(self) -> int:
        return version_of(self.vip)

    def step(self) -> int:
        self.steps += 1
        return self.steps

    # -- setting up -----------------------------------------------------------------------

    def server_ids(self) -> dict[str, str]:
        return {b.role: f"{n:06x}" for n, b in enumerate(self.net.backends, 1)}

    def write_routes(self) -> None:
        assert self.daemon is not None
        self.daemon.routes.write_text(self.routes_text())

    def routes_text(self) -> str:
        """lb.toml for the backends as they are now."""
        servers = "".join(
            f'\n  [[configs.servers]]\n  id = "{sid}"\n  address = "{self.host(role).address}"\n'
            + ("  draining = true\n" if role in self.draining else "")
            for role, sid in self.server_ids().items())
        health = "".join(f"{k} = {v}\n" for k, v in
                         {**HEALTH, "interval_ms": self.health_interval}.items())
        retry = ""
        if self.retry:
            retry = ("[retry]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                           for k, v in self.retry.items())
                     + f'[[retry.keys]]\nsequence = 1\nkey = "{RETRY_KEY}"\n'
                       f'iv = "{RETRY_IV}"\n\n')
        fallback = f'[fallback]\nhash_key = "{self.hash_key}"\n\n' if self.hash_key else ""
        return (
            f"vips = {json.dumps(list(self.net.vips.values()))}\n\n[health]\n{health}\n"
            f"{retry}{fallback}[[configs]]\n"
            f"config_id = {CONFIG.config_id}\nserver_id_length = {CONFIG.server_id_len}\n"
            f'nonce_length = {CONFIG.nonce_len}\nkey = "{KEY}"\n'
            f"first_octet_encodes_cid_length = true\n{servers}")

    def host(self, role: str) -> Host:
        return next(b for b in self.net.backends if b.role == role)

    def start_backend(self, backend: Host, cert: Path, key: Path) -> None:
        hosts = [*self.net.vips.values(),
                 *(backend.addresses(v)[0] for v in self.net.families)]
        self.backends[backend.role] = self.net.popen(
            backend, sys.executable, "-m", "pesigitg.demo.h3server", "--name", backend.role,
            *(a for h in hosts for a in ("--host", h)), "--cert", str(cert),
            "--private-key", str(key), "--config-id", str(CONFIG.config_id),
            "--server-id-length", str(CONFIG.server_id_len),
            "--nonce-length", str(CONFIG.nonce_len), "--key", KEY,
            "--server-id", self.server_ids()[backend.role],
            *(["--retry-keys", str(self.daemon.routes)] if self.retry and self.daemon else []),
            stdout=subprocess.DEVNULL)

    def start(self) -> None:
        cert, key = write_self_signed(self.workdir, SERVER_NAME, list(self.net.vips.values()))
        assert isinstance(self.net, Topology)
        if self.xdp_decode != "off":
            # The balancer's XDP_TX frames reach the bridge only through an XDP
            # program on its port (a veth's rule; a NIC needs none).
            receive_xdp_tx(self.net.switch, self.net.port(self.net.lb))
        self.daemon = RunningDaemon(self.net.lb.ns, self.workdir, interface=self.net.lb.dev,
                                    extra_conf=f"xdp_decode = {self.xdp_decode}\n"
                                               + self.daemon_conf)
        self.write_routes()             # first: the backends read the Retry keys there
        for backend in self.net.backends:
            self.start_backend(backend, cert, key)
        self.daemon.start()
        self.daemon.wait_until(lambda: len(self.pool()) == len(self.net.backends), 15,
                               "every backend resolved, healthy and in the fallback pool")

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        for proc in self.backends.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)

    def pool(self) -> list[str]:
        assert self.daemon is not None
        return self.daemon.get("/config")["fallback_pool"]

    def role_of(self, address: str) -> str:
        return next(b.role for b in self.net.backends if b.address == address)

    def reload(self) -> str:
        """lb.toml written again and SIGHUP: the daemon's log line saying the outcome."""
        assert self.daemon is not None
        mark = self.daemon.mark()
        self.write_routes()
        self.daemon.signal(signal.SIGHUP)
        return self.daemon.wait_log("reloaded: |reload failed", after=mark)

    # -- the client -----------------------------------------------------------------------

    def socket(self, host: str | None = None, family: int | None = None) -> socket.socket:
        """A client socket in ``family`` (default: the VIP's), from the client's first
        address (or ``host``)."""
        family = family or self.family
        with inside(self.net.client.ns):
            sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                                 socket.SOCK_DGRAM)
        sock.bind((host or self.net.client.addresses(family)[0], 0))
        return sock

    async def connect(self, sock: UdpSocket | None = None, vip: str | None = None
                      ) -> H3Client:
        """A connection to ``vip`` (default: the demo's) from ``sock`` (default: a new
        socket)."""
        vip = vip or self.vip
        # asyncio gives IPv6 peers as 4-tuples; aioquic matches paths on the tuple.
        server = (vip, 443, 0, 0) if version_of(vip) == 6 else (vip, 443)
        sock = sock or self.socket(family=version_of(vip))
        return await connect(sock, server, client_configuration(SERVER_NAME))

    @staticmethod
    async def ask(h3: H3Client) -> str:
        status, body = await h3.get(SERVER_NAME)
        expect(status == 200, f"HTTP status {status}")
        return body.decode().strip().removeprefix("backend ")

    async def served_by(self, requests: int = 1, sock: UdpSocket | None = None,
                        vip: str | None = None) -> str:
        """A new connection (see ``connect``) that asks ``requests`` times, then closes:
        the one backend that answered them all."""
        h3 = await self.connect(sock, vip)
        try:
            answers = {await self.ask(h3) for _ in range(requests)}
        finally:
            h3.close_all()
        expect(len(answers) == 1, f"one connection was answered by {sorted(answers)}")
        return answers.pop()

    async def new_connections(self, count: int, requests: int = 1) -> Counter[str]:
        """Open ``count`` connections; which backend answered each (consistently)."""
        return Counter([await self.served_by(requests) for _ in range(count)])

    # -- the steps ------------------------------------------------------------------------

    async def spread(self, connections: int = 30, requests: int = 3) -> Counter[str]:
        self.say(f"\n{self.step()}. {connections} HTTP/3 connections to {self.vip}, "
                 f"{requests} requests each")
        served = await self.new_connections(connections, requests)
        for role in sorted(served):
            self.say(f"   {role}: {served[role]:3} connections  " + "#" * served[role])
        expect(set(served) == {b.role for b in self.net.backends},
               f"not every backend got connections: {dict(served)}")
        self.say("   every request of a connection was answered by the same backend")
        return served

    async def migration(self) -> list[tuple[str, str, str, str]]:
        self.say(f"\n{self.step()}. Migration: new port, new address, new connection ID")
        h3 = await self.connect()
        steps = []
        try:
            async def record(what: str) -> None:
                backend = await self.ask(h3)
                host, port = h3.local_address
                address = f"{host}:{port}"
                steps.append((what, address, h3.server_cid.hex(), backend))
                self.say(f"   {what:28} from {address:18} DCID {h3.server_cid.hex()} "
                         f"(server ID {server_id_of(h3)}) -> {backend}")
            await record("connected")
            await h3.rebind(self.socket())
            await record("NAT rebinding: new port")
            await h3.rebind(self.socket(self.net.client.addresses(self.family)[1]))
            await record("new address")
            h3.change_cid()
            await record("new connection ID")
        finally:
            h3.close_all()
        expect(len({s[3] for s in steps}) == 1, f"the connection changed backend: {steps}")
        expect(len({s[1] for s in steps}) == 3 and steps[-1][2] != steps[-2][2],
               "the client did not really move")
        self.say("   the connection kept working and stayed on its backend")
        return steps

    async def reload_under_load(self, connections: int = 10) -> tuple[list[str], list[str]]:
        """A reload that changes lb.toml ([health] interval_ms) while ``connections``
        connections are open: the backend answering each, before and after."""
        self.say(f"\n{self.step()}. Reload with {connections} live connections")
        clients = [await self.connect() for _ in range(connections)]
        try:
            before = [await self.ask(h3) for h3 in clients]
            self.health_interval = HEALTH["interval_ms"] + 100
            outcome = self.reload()
            after = [await self.ask(h3) for h3 in clients]
        finally:
            for h3 in clients:
                h3.close_all()
        expect("reloaded: " in outcome, f"the reload failed: {outcome}")
        expect(before == after, "a connection changed backend across the reload")
        self.say(f"   SIGHUP applied; all {connections} connections answered again by the "
                 "same backends")
        return before, after

    async def other_family(self, connections: int = 12) -> Counter[str]:
        """The other family's VIP, served by the same daemon at the same time (the
        backends are known to pesigitgd by their first-family addresses: routing is by
        MAC, whatever the family of the packet)."""
        other = next(v for f, v in self.net.vips.items() if v != self.vip)
        self.say(f"\n{self.step()}. Dual stack: the IPv{version_of(other)} "
                 f"VIP {other}, same daemon, same backends")
        first, self.vip = self.vip, other
        try:
            served = await self.new_connections(connections, requests=2)
            for role in sorted(served):
                self.say(f"   {role}: {served[role]:3} connections  " + "#" * served[role])
            expect(set(served) == {b.role for b in self.net.backends},
                   f"not every backend got connections: {dict(served)}")
            h3 = await self.connect()
            try:
                before = await self.ask(h3)
                await h3.rebind(self.socket(self.net.client.addresses(self.family)[1]))
                after = await self.ask(h3)
            finally:
                h3.close_all()
            expect(before == after, f"a migrating connection moved from {before} to {after}")
            self.say(f"   a client moving to {self.net.client.addresses(self.family)[1]} "
                     f"stayed on {after}")
        finally:
            self.vip = first
        return served

    async def drain(self) -> str:
        self.say(f"\n{self.step()}. Drain a backend")
        h3 = await self.connect()
        try:
            victim = await self.ask(h3)
            self.draining.add(victim)
            self.reload()
            expect(self.host(victim).address not in self.pool(),
                   f"{victim} is still in the fallback pool")
            self.say(f"   marked {victim} draining and reloaded")
            again = await self.ask(h3)
            expect(again == victim, f"the drained connection moved to {again}")
            self.say(f"   its existing connection is still answered by {again}")
            fresh = await self.new_connections(20)
            expect(victim not in fresh, f"{victim} got new connections while draining")
            self.say(f"   20 new connections went to {dict(sorted(fresh.items()))}, none to "
                     f"{victim}")
        finally:
            h3.close_all()
        return victim

    async def failure(self) -> tuple[str, float]:
        self.say(f"\n{self.step()}. A backend fails")
        assert self.daemon is not None
        candidates = [b.role for b in self.net.backends if b.role not in self.draining]
        victim = candidates[-1]
        started = time.monotonic()
        self.backends[victim].terminate()
        self.backends[victim].wait(10)
        address = self.host(victim).address
        self.daemon.wait_until(lambda: address not in self.pool(), 10,
                               f"{victim} out of the pool")
        took = time.monotonic() - started
        self.say(f"   stopped {victim}; health checks took it out after {took:.2f} s "
                 f"(fall {HEALTH['fall']} x interval {self.health_interval} ms)")
        served = await self.new_connections(20)
        expect(victim not in served, f"{victim} answered after it was stopped")
        self.say(f"   20 new connections all succeeded: {dict(sorted(served.items()))}")
        return victim, took

    def counters(self) -> dict[str, Any]:
        assert self.daemon is not None
        stats = self.daemon.get("/stats")
        self.say("\nLoad balancer counters (/stats):")
        for name, value in stats["total"].items():
            if value:
                self.say(f"   {name:28} {value}")
        self.say("   XDP verdicts: " + ", ".join(f"{k}={v}" for k, v in stats["xdp"].items()
                                                  if v))
        tier = self.daemon.get("/health")["xdp"]["kernel_tier"]
        paths = ", ".join(f"config {c}: {t['path']} ({t['why']})"
                          for c, t in tier["configs"].items())
        self.say(f"   kernel tier (xdp_decode = {tier['xdp_decode']}): {paths}; it "
                 f"forwarded {stats['kernel_tier']['forwarded']} of "
                 f"{stats['total']['forwarded']} frames, the workers the rest")
        return stats


FAMILIES = {"4": ((4,), None), "6": ((6,), None), "dual": ((4, 6), None),
            # backends known by IPv6, IPv4, IPv6 addresses: both families probed
            "mixed": ((6, 4), [6, 4, 6])}


@contextlib.contextmanager
def demo_environment(say: Callable[[str], None] = print, family: str = "4",
                     retry: dict[str, object] | None = None, daemon_conf: str = "",
                     xdp_decode: str = "off") -> Iterator[Demo]:
    """The topology (``family``: a key of FAMILIES), the backends and pesigitgd (with
    ``retry`` as lb.toml's [retry], keys added, ``xdp_decode`` and ``daemon_conf`` in
    pesigitgd.conf), torn down whatever happens."""
    families, backend_families = FAMILIES[family]
    with tempfile.TemporaryDirectory(prefix="pesigitg-demo-") as tmp, \
            Topology(families=families, backend_families=backend_families) as net:
        demo = Demo(net, Path(tmp), say, retry=dict(retry or {}), daemon_conf=daemon_conf,
                    xdp_decode=xdp_decode)
        try:
            demo.start()
            yield demo
        finally:
            demo.stop()
