"""Several balancers behind ECMP with BGP, end to end: ``python -m pesigitg.demo.ecmp``
(``make demo-ecmp``); tests/e2e/test_ecmp.py runs the same steps and asserts on them.

A client behind a router running BIRD 2, two balancer hosts each running pesigitgd
and ExaBGP, three aioquic backends answering by Direct Server Return, over IPv4 and
IPv6 (ecmp_topology.py). Each ExaBGP announces the VIPs while ``pesigitg-ctl health``
says the balancer forwards; the router installs one multipath route per VIP and
spreads flows over the balancers by their 5-tuple. Both balancers read the same
lb.toml (with a fallback ``hash_key``), so they decide alike. The steps: the routes
come up; connections spread over both balancers; a client whose path moves to the
other balancer keeps its connection and backend; a hitless restart of a balancer is
never withdrawn; a balancer stopped (SIGTERM), then another killed (``kill -9``),
withdraws its routes while live connections go on through the survivor, each with
its backend; each comes back and takes traffic again. The BGP daemons run
from the contrib/bgp files, filled in by contrib/bgp/render.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pesigitg.demo import bgp
from pesigitg.demo.certs import write_self_signed
from pesigitg.demo.ecmp_topology import EcmpTopology
from pesigitg.demo.h3client import H3Client
from pesigitg.demo.scenario import (
    SERVER_NAME,
    Demo,
    StepFailed,
    UdpSocket,
    expect,
    narrate,
)
from pesigitg.demo.topology import Host, version_of
from pesigitg.testing.daemon import RunningDaemon

__all__ = ["Balancer", "ComeBack", "EcmpDemo", "Failover", "Requests", "Restart",
           "ecmp_environment", "main"]

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


@dataclass
class Restart:
    """What a hitless restart of one balancer did."""
    role: str
    previous_pid: int
    pid: int
    took: float                                 # seconds `pesigitg-ctl restart` took
    fewest_hops: dict[str, int]                 # VIP -> fewest next hops seen meanwhile
    requests: Requests


@dataclass
class Failover:
    """What one balancer's failure did to the live connections."""
    victim: str
    how: str
    convergence: dict[str, float]               # VIP -> seconds until one next hop
    sessions: dict[str, str]                    # the router's BGP sessions just then
    before: Counter[str] = field(default_factory=Counter)  # requests before convergence
    after: Counter[str] = field(default_factory=Counter)   # and after: "ok", "failed"
    moved: int = 0              # live connections answered by more than one backend
    new_connections: Counter[str] = field(default_factory=Counter)


@dataclass
class ComeBack:
    """What a balancer's return did."""
    role: str
    ready: float                    # seconds until pesigitgd was ready
    took: float                     # seconds until the router had both next hops again
    requests: Requests              # on the connections that were live meanwhile
    rehashed: int                   # of those, how many the router moved to it
    paths: Counter[str] = field(default_factory=Counter)   # new connections' balancers


def pesigitg_ctl() -> str:
    found = shutil.which("pesigitg-ctl", path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError(f"no pesigitg-ctl beside {sys.executable}")
    return found


@dataclass
class EcmpDemo(Demo):
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

    async def restart(self, role: str, per_balancer: int = 2) -> Restart:
        """A hitless restart (``pesigitg-ctl restart``) of one balancer under live
        connections: its announcement stays, nothing fails."""
        balancer = self.balancers[role]
        clients = await self.live_connections(per_balancer)
        self.say(f"\n{self.step()}. {role} restarts hitlessly (`pesigitg-ctl restart`) under "
                 f"{len(clients)} live connections")
        previous = balancer.daemon.pid
        everyone = {vip: len(self.balancers) for vip in self.net.vips.values()}
        fewest = dict(everyone)
        async with self.asking(clients) as requests:
            await asyncio.sleep(0.3)
            started = time.monotonic()
            restart = asyncio.create_task(asyncio.to_thread(
                subprocess.run, [pesigitg_ctl(), "-s", str(balancer.daemon.status_socket),
                                 "restart"], capture_output=True, text=True))
            # Long enough for the health check to have seen a failure and withdrawn.
            watch_until = None
            while watch_until is None or time.monotonic() < watch_until:
                for vip in fewest:
                    hops = len(await asyncio.to_thread(self.next_hops, vip))
                    fewest[vip] = min(fewest[vip], hops)
                if watch_until is None and restart.done():
                    took = time.monotonic() - started
                    watch_until = time.monotonic() + RESTART_WATCH
                expect(watch_until is not None or time.monotonic() - started < ROUTE_TIMEOUT,
                       f"pesigitg-ctl restart took over {ROUTE_TIMEOUT:.0f} s")
                await asyncio.sleep(0.02)
            done = restart.result()
        expect(done.returncode == 0, f"pesigitg-ctl restart failed: {done.stdout}{done.stderr}")
        result = Restart(role, previous, balancer.daemon.pid, took, fewest, requests)
        self.say(f"   {done.stdout.strip()} ({took:.2f} s)")
        self.say("   router, polled every 20 ms until "
                 f"{RESTART_WATCH:.1f} s after: fewest next hops "
                 + ", ".join(f"{vip} {n}" for vip, n in fewest.items())
                 + (" (never withdrawn)" if fewest == everyone else ""))
        self.say_requests(requests, len(clients), started, "the restart")
        expect(fewest == everyone, f"the route lost {role} during its restart: {fewest}")
        expect(requests.count()["failed"] == 0 and requests.moved == 0,
               f"requests failed or moved during the restart: {dict(requests.count())}, "
               f"{requests.moved} moved")
        return result

    async def failover(self, victim: str, how: signal.Signals,
                       per_balancer: int = 3) -> Failover:
        name = "SIGTERM" if how == signal.SIGTERM else "kill -9"
        balancer = self.balancers[victim]
        survivors = {r: b for r, b in self.balancers.items() if r != victim}
        clients = await self.live_connections(per_balancer)
        self.say(f"\n{self.step()}. {victim} fails ({name}) under {len(clients)} live "
                 f"connections, {per_balancer} through each balancer in each family, each "
                 "asking again and again")
        async with self.asking(clients) as requests:
            await asyncio.sleep(0.5)
            killed = time.monotonic()
            os.kill(balancer.daemon.pid, how)
            convergence = {}
            for vip in self.net.vips.values():
                convergence[vip] = await self.wait_hops(
                    vip, {b.next_hop(vip) for b in survivors.values()}, killed)
            converged = killed + max(convergence.values())
            sessions = self.sessions()
            await asyncio.sleep(AFTER_CONVERGENCE)
        before, after = requests.split(converged)
        result = Failover(victim, name, convergence, sessions, before, after, requests.moved)
        for vip, took in convergence.items():
            self.say(f"   router: {vip} via {' and '.join(self.next_hops(vip))} only, "
                     f"{took:.2f} s after the {name}")
        self.say(f"   BGP sessions {', '.join(f'{r} {st}' for r, st in sorted(sessions.items()))}"
                 f": withdrawn by the health check, not the session's hold time")
        self.say_requests(requests, len(clients), converged, "convergence")
        expect(result.after["ok"] > 0 and result.after["failed"] == 0,
               f"requests failed after convergence: {dict(result.after)}")
        expect(result.moved == 0, f"{result.moved} live connections changed backend")
        for vip in self.net.vips.values():
            for _ in range(5):
                result.new_connections[await self.served_by(vip=vip)] += 1
        self.say(f"   10 new connections (both families) all succeeded: "
                 f"{dict(sorted(result.new_connections.items()))}")
        balancer.daemon.stop()
        return result

    async def come_back(self, role: str, connections: int = 20, live: int = 4) -> ComeBack:
        """``role`` starts again under ``live`` connections per family (all through the
        other balancer until then); the router rehashes some of them to it, and they
        go on, each with its backend. Then ``connections`` new ones."""
        balancer = self.balancers[role]
        clients, sockets = [], []
        for vip in self.net.vips.values():
            for _ in range(live):
                sock = self.socket(family=version_of(vip))
                sockets.append((sock, vip))
                clients.append((vip, await self.connect(sock, vip)))
        self.say(f"\n{self.step()}. {role} comes back, under {len(clients)} live connections")
        async with self.asking(clients) as requests:
            started = time.monotonic()
            await asyncio.to_thread(self.start_daemon, balancer)
            ready = time.monotonic() - started
            took = max([await self.wait_hops(vip, {b.next_hop(vip) for b in
                                                   self.balancers.values()}, started)
                        for vip in self.net.vips.values()])
            await asyncio.sleep(AFTER_JOIN)
            # Where the router sends each live connection's flow now.
            rehashed = sum([await asyncio.to_thread(self.balancer_of, sock, vip) == role
                            for sock, vip in sockets])
        result = ComeBack(role, ready, took, requests, rehashed)
        self.say(f"   pesigitgd ready after {ready:.2f} s; both VIPs routed via both "
                 f"balancers again after {took:.2f} s")
        count = requests.count()
        self.say(f"   the router rehashed {rehashed} of the {len(clients)} live connections to "
                 f"{role}: {count['ok']} requests ok, {count['failed']} failed; "
                 f"{len(clients) - requests.moved} answered by one backend throughout")
        expect(count["failed"] == 0 and requests.moved == 0,
               f"live connections failed or moved when {role} joined: {dict(count)}, "
               f"{requests.moved} moved")
        before = self.forwarded()
        for _ in range(connections):
            sock = self.socket()
            result.paths[self.balancer_of(sock, self.vip)] += 1
            await self.served_by(sock=sock)
        frames = {r: n - before[r] for r, n in self.forwarded().items()}
        self.say_share(result.paths, frames, "of " + f"{connections} new connections")
        expect(result.paths[role] > 0 and frames[role] > 0,
               f"{role} took no traffic after coming back: {dict(result.paths)}, "
               f"frames {frames}")
        return result

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


@contextlib.contextmanager
def ecmp_environment(say: Callable[[str], None] = print) -> Iterator[EcmpDemo]:
    """The network, the backends, both balancers and the BGP daemons, torn down
    whatever happens."""
    with tempfile.TemporaryDirectory(prefix="pesigitg-ecmp-") as tmp, \
            EcmpTopology() as net:
        demo = EcmpDemo(net, Path(tmp), say, hash_key=HASH_KEY)
        try:
            demo.start()
            yield demo
        finally:
            demo.stop()


async def run_all(demo: EcmpDemo) -> list[Failover]:
    await demo.announce()
    await demo.spread()
    await demo.move()
    await demo.restart("lb1")
    results = [await demo.failover("lb1", signal.SIGTERM)]
    await demo.come_back("lb1")
    results.append(await demo.failover("lb2", signal.SIGKILL))
    await demo.come_back("lb2")
    demo.totals()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pesigitg.demo.ecmp",
        description="two pesigitgd balancers behind a BGP/ECMP router, end to end")
    parser.parse_args(argv)

    def steps() -> None:
        with ecmp_environment() as demo:
            print(f"VIPs {', '.join(demo.net.vips.values())}; balancers " + ", ".join(
                f"{b.role}={b.host.address}" for b in demo.balancers.values())
                + "; backends " + ", ".join(f"{b.role}={b.address}" for b in demo.net.backends))
            results = asyncio.run(run_all(demo))
        print("\nFailover: " + "; ".join(
            f"{r.how} of {r.victim}: routes withdrawn after "
            + "/".join(f"{t:.2f}" for t in r.convergence.values()) + " s (IPv4/IPv6), "
            f"{r.after['failed']} failed requests after convergence" for r in results))

    return narrate("pesigitg ECMP demo: a client behind a router (BIRD 2, ECMP on the "
                   "5-tuple), two balancers each\nrunning pesigitgd and ExaBGP, three HTTP/3 "
                   "backends (aioquic), Direct Server Return, IPv4 and IPv6.", steps)


if __name__ == "__main__":
    sys.exit(main())
