"""The ECMP demo's set-up, the router's view and its steady-state steps: the routes come
up, connections spread over both balancers, a client whose path moves to the other
balancer keeps its connection and backend (see demo/ecmp.py)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from pesigitg.demo import bgp
from pesigitg.demo.certs import write_self_signed
from pesigitg.demo.ecmp_topology import EcmpTopology
from pesigitg.demo.h3client import H3Client
from pesigitg.demo.narration import StepFailed, expect
from pesigitg.demo.scenario import SERVER_NAME, Demo, UdpSocket
from pesigitg.demo.topology import Host, version_of
from pesigitg.testing.daemon import RunningDaemon

__all__ = ["AFTER_CONVERGENCE", "AFTER_JOIN", "DROPPED", "HASH_KEY", "RESTART_WATCH",
           "ROUTE_TIMEOUT", "Balancer", "EcmpSteps", "Requests", "pesigitg_ctl"]

# lb.toml [fallback] hash_key, the same on both balancers.
HASH_KEY = "5b0e6a1f9c2d48e7b3a4f6c8d0e1a2b3"
DROPPED = "dropped_"          # the prefix of the drop counters in /stats, one per reason
ROUTE_TIMEOUT = 20.0        # the routes' coming and going; BGP hold time is 3 s
AFTER_CONVERGENCE = 2.0     # how long live connections go on asking after it
AFTER_JOIN = 1.0            # how long live connections go on asking after a return
RESTART_WATCH = 1.5         # how long the route is watched after a restart: a failed
                            # health check (0.5 s apart) would have withdrawn it by then


@dataclass
class Balancer:
    host: Host
    daemon: RunningDaemon
    speaker: bgp.Speaker

    @property
    def role(self) -> str:
        return self.host.role

    def counter(self, name: str) -> int:
        return int(self.daemon.get("/stats")["total"][name])

    def next_hop(self, vip: str) -> str:
        return self.host.addresses(version_of(vip))[0]


@dataclass
class Requests:
    """What live connections asking again and again got: each request's start and
    whether it was answered, and each connection's answering backends."""
    backends: list[set[str]]                                 # per connection
    log: list[tuple[float, bool]] = field(default_factory=list)

    @property
    def moved(self) -> int:
        """Connections answered by more than one backend."""
        return sum(len(b) > 1 for b in self.backends)

    def count(self) -> Counter[str]:
        return Counter("ok" if ok else "failed" for _, ok in self.log)

    def split(self, cut: float) -> tuple[Counter[str], Counter[str]]:
        """``count()`` of the requests started before ``cut``, and of the rest."""
        before: Counter[str] = Counter()
        after: Counter[str] = Counter()
        for started, ok in self.log:
            (before if started < cut else after)["ok" if ok else "failed"] += 1
        return before, after


def pesigitg_ctl() -> str:
    found = shutil.which("pesigitg-ctl", path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError(f"no pesigitg-ctl beside {sys.executable}")
    return found


@dataclass
class EcmpSteps(Demo):
    """The ECMP demo's network and balancers, the router's view, and its steady-state
    steps (demo/ecmp_lifecycle.py adds restarts, failures and returns)."""
    balancers: dict[str, Balancer] = field(default_factory=dict)
    router: bgp.Speaker | None = None

    @property
    def topology(self) -> EcmpTopology:
        assert isinstance(self.net, EcmpTopology)
        return self.net

    # -- setting up -----------------------------------------------------------------------

    def write_routes(self) -> None:
        """The same lb.toml on every balancer host."""
        for balancer in self.balancers.values():
            balancer.daemon.routes.write_text(self.routes_text())

    def start(self) -> None:
        net = self.topology
        missing = bgp.missing_tools()
        if missing:
            raise FileNotFoundError(f"the ECMP demo needs BIRD 2 and ExaBGP: {missing}")
        v4, v6 = net.vips[4], net.vips[6]
        cert, key = write_self_signed(self.workdir, SERVER_NAME, [v4, v6])
        ctl = pesigitg_ctl()
        for lb in net.lbs:
            home = self.workdir / lb.role
            home.mkdir()
            daemon = RunningDaemon(lb.ns, home, interface=lb.dev)
            speaker = bgp.exabgp(lb, self.workdir, SELF=lb.addresses(4)[0],
                                 SELF6=lb.addresses(6)[0], ROUTER=net.router_address(4),
                                 LOCAL_AS=bgp.BALANCER_AS, PEER_AS=bgp.ROUTER_AS, VIP=v4,
                                 VIP6=v6, CTL=f"{ctl} -s {daemon.status_socket}")
            self.balancers[lb.role] = Balancer(lb, daemon, speaker)
        self.daemon = self.balancers[net.lbs[0].role].daemon
        self.write_routes()
        for backend in net.backends:
            self.start_backend(backend, cert, key)
        for balancer in self.balancers.values():
            self.start_daemon(balancer)
        self.router = bgp.bird(net.router, self.workdir, ROUTER_ID=net.router_address(4),
                               ROUTER=net.router_address(4), LOCAL_AS=bgp.ROUTER_AS,
                               PEER_AS=bgp.BALANCER_AS, VIP=v4, VIP6=v6,
                               LB1=net.lbs[0].addresses(4)[0],
                               LB2=net.lbs[1].addresses(4)[0]).start()
        for balancer in self.balancers.values():
            balancer.speaker.start()

    def start_daemon(self, balancer: Balancer) -> None:
        balancer.daemon.start()
        balancer.daemon.wait_until(
            lambda: len(balancer.daemon.get("/config")["fallback_pool"])
            == len(self.net.backends), 15, f"every backend in {balancer.role}'s pool")

    def stop(self) -> None:
        for balancer in self.balancers.values():
            balancer.speaker.stop()
        if self.router is not None:
            self.router.stop()
        for balancer in self.balancers.values():
            balancer.daemon.stop()
        self.daemon = None
        super().stop()

    # -- the router's view ----------------------------------------------------------------

    def next_hops(self, vip: str) -> list[str]:
        return bgp.next_hops(self.topology.router, vip)

    def sessions(self) -> dict[str, str]:
        """The router's BGP session with each balancer: its state."""
        return bgp.bird_sessions(self.topology.router, self.workdir)

    def balancer_of(self, sock: UdpSocket, vip: str) -> str:
        """Which balancer the router sends this socket's flow to, asked of the network:
        a one-octet datagram, which the balancer that gets it drops (not QUIC) and
        counts; nothing else the demo sends is dropped. (`ip route get` cannot tell: an
        IPv6 sender's flow hash travels with its packets, and the router uses it, as it
        would a NIC's RSS hash.)"""
        before = self.probes()
        sock.sendto(b"\0", (vip, 443))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            now = self.probes()
            moved = [role for role in now if now[role] > before[role]]
            if len(moved) == 1:
                return moved[0]
            expect(not moved, f"one datagram reached {moved}")
            time.sleep(0.005)
        raise StepFailed(f"a datagram to {vip} reached no balancer")

    def socket_via(self, role: str, vip: str, host: str | None = None) -> UdpSocket:
        """A client socket whose flow the router hashes to balancer ``role``."""
        for _ in range(256):
            sock = self.socket(host, family=version_of(vip))
            if self.balancer_of(sock, vip) == role:
                return sock
            sock.close()
        raise StepFailed(f"no source port of 256 hashes to {role}")

    async def wait_hops(self, vip: str, hops: set[str], since: float) -> float:
        """Seconds from ``since`` until the router's route to ``vip`` has exactly these
        next hops (polled every 20 ms, off the event loop)."""
        deadline = since + ROUTE_TIMEOUT
        while set(await asyncio.to_thread(self.next_hops, vip)) != hops:
            if time.monotonic() > deadline:
                raise StepFailed(f"the router's next hops for {vip} did not become "
                                 f"{sorted(hops)} within {ROUTE_TIMEOUT:.0f} s: "
                                 f"{self.next_hops(vip)}")
            for balancer in self.balancers.values():
                balancer.speaker.check()
            assert self.router is not None
            self.router.check()
            await asyncio.sleep(0.02)
        return time.monotonic() - since

    def forwarded(self) -> dict[str, int]:
        return {role: b.counter("forwarded") for role, b in self.balancers.items()}

    def probes(self) -> dict[str, int]:
        """Frames each balancer dropped, whatever the reason."""
        return {role: sum(v for k, v in b.daemon.get("/stats")["total"].items()
                          if k.startswith(DROPPED))
                for role, b in self.balancers.items()}

    def say_share(self, what: Counter[str], frames: dict[str, int], unit: str) -> None:
        for role in sorted(self.balancers):
            self.say(f"   {role}: {what[role]:3} {unit}, "
                     f"{frames[role]:5} frames forwarded  " + "#" * what[role])

    # -- the steps ------------------------------------------------------------------------

    async def announce(self) -> dict[str, float]:
        self.say(f"\n{self.step()}. BGP: each balancer's ExaBGP announces the VIPs while "
                 "`pesigitg-ctl health` says it forwards")
        started = time.monotonic()
        took = {vip: await self.wait_hops(vip, {b.next_hop(vip)
                                                for b in self.balancers.values()}, started)
                for vip in self.net.vips.values()}
        for vip, hops in ((v, self.next_hops(v)) for v in self.net.vips.values()):
            self.say(f"   router: {vip} via {' and '.join(hops)} (multipath, "
                     f"after {took[vip]:.2f} s)")
        digests = {role: b.daemon.get("/config")["route_table"]["digest"]
                   for role, b in self.balancers.items()}
        expect(len(set(digests.values())) == 1,
               f"the balancers' route tables differ: {digests}")
        self.say(f"   the same lb.toml (fallback hash_key set) on both: route tables "
                 f"identical (sha256 {next(iter(digests.values()))[:16]}…)")
        return took

    async def spread(self, connections: int = 24, requests: int = 2) -> Counter[str]:
        """``connections`` per family; which balancer carried how many (each one's path
        found by a probe datagram, checked against their counters). Each source port is
        hashed anew: all of 24 on one balancer has odds of 2**-23."""
        total: Counter[str] = Counter()
        for vip in self.net.vips.values():
            self.say(f"\n{self.step()}. {connections} HTTP/3 connections to {vip}, "
                     f"{requests} requests each, each from a new source port")
            before = self.forwarded()
            paths: Counter[str] = Counter()
            served: Counter[str] = Counter()
            for _ in range(connections):
                sock = self.socket(family=version_of(vip))
                paths[self.balancer_of(sock, vip)] += 1
                served[await self.served_by(requests, sock, vip)] += 1
            frames = {r: n - before[r] for r, n in self.forwarded().items()}
            self.say_share(paths, frames, "connections")
            self.say("   backends: " + ", ".join(f"{r} {n}" for r, n in sorted(served.items())))
            # (Which backend is the DCID's hash: random, the main demo's business.)
            for role in self.balancers:
                expect(paths[role] > 0 and frames[role] > 0,
                       f"{role} carried nothing: {dict(paths)}, frames {frames}")
            total += paths
        return total

    async def move(self) -> list[tuple[str, str, str, str]]:
        """A connection whose new source port hashes to the other balancer."""
        moves = []
        for vip in self.net.vips.values():
            self.say(f"\n{self.step()}. A client's path moves to the other balancer "
                     f"({vip})")
            first = sorted(self.balancers)[0]
            h3 = await self.connect(self.socket_via(first, vip), vip)
            try:
                backend = await self.ask(h3)
                self.say(f"   from port {h3.local_address[1]:5} via {first}: answered by "
                         f"{backend}")
                other = next(r for r in sorted(self.balancers) if r != first)
                before = self.forwarded()
                await h3.rebind(self.socket_via(other, vip))
                again = await self.ask(h3)
                frames = {r: n - before[r] for r, n in self.forwarded().items()}
                self.say(f"   NAT rebinding to port {h3.local_address[1]:5}, which the router "
                         f"hashes to {other}: answered by {again} ({other} forwarded "
                         f"{frames[other]} frame{'s' if frames[other] != 1 else ''}, by the "
                 "connection ID)")
            finally:
                h3.close_all()
            expect(again == backend, f"the connection moved from {backend} to {again}")
            expect(frames[other] > 0, f"{other} forwarded nothing: {frames}")
            moves.append((vip, first, other, again))
        self.say("   the connection kept working and kept its backend")
        return moves

    async def live_connections(self, per_balancer: int) -> list[tuple[str, H3Client]]:
        """``per_balancer`` connections through each balancer, in each family."""
        clients = []
        for vip in self.net.vips.values():
            for role in sorted(self.balancers):
                for _ in range(per_balancer):
                    clients.append((vip, await self.connect(self.socket_via(role, vip), vip)))
        return clients

    @contextlib.asynccontextmanager
    async def asking(self, clients: list[tuple[str, H3Client]]
                     ) -> AsyncIterator[Requests]:
        """Every connection of ``clients`` asks again and again (every 50 ms) while the
        block runs; then they are closed."""
        requests = Requests([set() for _ in clients])
        asking = True

        async def keep_asking(h3: H3Client, backends: set[str]) -> None:
            while asking:
                started = time.monotonic()
                try:
                    backends.add(await self.ask(h3))
                    ok = True
                except Exception:   # a timeout, a reset: a failed request, counted
                    ok = False
                requests.log.append((started, ok))
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(keep_asking(h3, backends))
                 for (_, h3), backends in zip(clients, requests.backends, strict=True)]
        try:
            yield requests
        finally:
            asking = False
            await asyncio.gather(*tasks)
            for _, h3 in clients:
                h3.close_all()

    def say_requests(self, requests: Requests, clients: int, cut: float, what: str) -> None:
        before, after = requests.split(cut)
        self.say(f"   requests on the live connections: before {what} {before['ok']} ok, "
                 f"{before['failed']} failed; after it {after['ok']} ok, "
                 f"{after['failed']} failed")
        self.say(f"   {clients - requests.moved} of {clients} live connections answered by "
                 "one backend throughout")

    def totals(self) -> dict[str, dict[str, int]]:
        """Each balancer's counters, side by side (those that are not zero)."""
        roles = sorted(self.balancers)
        totals = {r: self.balancers[r].daemon.get("/stats")["total"] for r in roles}
        self.say("\nBalancer counters (/stats, since each one's last start):")
        self.say("   " + " " * 28 + "".join(f"{r:>10}" for r in roles))
        for name in totals[roles[0]]:
            if any(totals[r][name] for r in roles):
                self.say(f"   {name:28}" + "".join(f"{totals[r][name]:10}" for r in roles))
        return totals
