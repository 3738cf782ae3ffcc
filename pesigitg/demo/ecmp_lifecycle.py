"""The ECMP demo's lifecycle steps: a hitless restart of a balancer is never withdrawn;
a balancer stopped (SIGTERM) or killed (``kill -9``) withdraws its routes while live
connections go on through the survivor, each with its backend; it comes back and takes
traffic again (see demo/ecmp.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field

from pesigitg.demo.ecmp_steps import (
    AFTER_CONVERGENCE,
    AFTER_JOIN,
    RESTART_WATCH,
    ROUTE_TIMEOUT,
    EcmpSteps,
    Requests,
    pesigitg_ctl,
)
from pesigitg.demo.narration import expect
from pesigitg.demo.topology import version_of

__all__ = ["ComeBack", "EcmpDemo", "Failover", "Restart"]


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


@dataclass
class EcmpDemo(EcmpSteps):
    """The whole ECMP demo: the steady-state steps and these."""

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
