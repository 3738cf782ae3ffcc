"""What an operator asks of a running daemon through its status socket (the answers
behind ``pesigitg-ctl``): version, a connection ID explained, drains at run time,
reload and stop with their outcome, dumps to the log; and the daemon's housekeeping:
fully-drained backends, periodic counter deltas, key ages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from pesigitg import __version__
from pesigitg._fastpath import COUNTER_NAMES, GAUGES, aesni_supported, gcm_supported
from pesigitg.daemon.keyages import check_key_ages
from pesigitg.daemon.status import Refused, Request, Response
from pesigitg.routing.whoami import explain_cid

if TYPE_CHECKING:
    from pesigitg.daemon.supervisor import Supervisor

__all__ = ["ENDPOINTS", "Operations"]

log = logging.getLogger("pesigitg")

ENDPOINTS = {
    "/version": "package, Python, kernel, XDP mode, AES-NI",
    "/whoami": "?cid=HEX: what the packet path does with that connection ID",
    "/drain": "POST ?address=A: drain a backend (kept across reloads and restarts)",
    "/undrain": "POST ?address=A: undo a drain",
    "/reload": "POST: re-read both files; answers once applied, or why not",
    "/stop": "POST: stop the daemon",
    "/dump-stats": "POST: log the counters (as SIGUSR1)",
    "/dump-config": "POST: log the runtime configuration (as SIGUSR2)",
}
HOUSEKEEPING_S = 1.0
KEY_AGE_CHECK_S = 3600.0

Handler = Callable[[Request], Awaitable[Response]]


def _param(request: Request, name: str) -> str:
    values = parse_qs(request.query).get(name)
    if not values or not values[0]:
        raise Refused(400, f"{request.path} needs ?{name}=...")
    return values[0]


class Operations:
    def __init__(self, supervisor: Supervisor) -> None:
        self.s = supervisor
        self._last_totals: dict[str, int] | None = None
        self._last_stats_log = time.monotonic()
        self._last_key_check = time.monotonic()

    def routes(self) -> dict[tuple[str, str], Handler]:
        return {("GET", "/version"): self.version, ("GET", "/whoami"): self.whoami,
                ("POST", "/drain"): self.drain, ("POST", "/undrain"): self.undrain,
                ("POST", "/reload"): self.reload, ("POST", "/stop"): self.stop,
                ("POST", "/dump-stats"): self.dump_stats,
                ("POST", "/dump-config"): self.dump_config}

    # -- the answers ----------------------------------------------------------------------

    async def version(self, request: Request) -> Response:
        return Response({"pesigitg": __version__, "python": platform.python_version(),
                         "implementation": sys.implementation.name,
                         "kernel": platform.release(), "machine": platform.machine(),
                         "xdp_mode": self.s.xdp_mode,
                         "xdp_attach": self.s.xdp.attach_kind if self.s.xdp else None,
                         "aes_ni": aesni_supported(), "pclmulqdq": gcm_supported(),
                         "pid": os.getpid()})

    async def whoami(self, request: Request) -> Response:
        text = _param(request, "cid")
        try:
            cid = bytes.fromhex(text)
            assert self.s.compiled is not None
            health = {b.address: b.health for b in self.s.snapshot().backends}
            return Response(explain_cid(self.s.compiled, cid, health))
        except ValueError as exc:
            raise Refused(400, f"not a connection ID: {exc}") from None

    async def drain(self, request: Request) -> Response:
        return await self._drain(request, True)

    async def undrain(self, request: Request) -> Response:
        return await self._drain(request, False)

    async def _not_replaced(self) -> None:
        successor = await self.s.after_restart()
        if successor is not None:
            raise Refused(503, f"pid {successor} took over while this request waited: "
                               "ask again", retry=True)

    async def _drain(self, request: Request, draining: bool) -> Response:
        address = _param(request, "address")
        # A drain accepted during a restart could be lost: wait for its outcome.
        await self._not_replaced()
        routes = self.s.routes
        if address not in routes.addresses:
            raise Refused(404, f"no backend {address} in {routes.path}")
        in_file = routes.backend_draining(address)
        changed = self.s.drains.change(address, draining, in_file)
        if changed:
            log.info("backend %s %s at run time (%s)", address,
                     "draining" if draining else "no longer draining", request.peer)
            self.s.rebuild(f"{'drain' if draining else 'undrain'} {address}")
            await self.s.tables_applied()
        return Response({"address": address, "draining": draining, "changed": changed,
                         "source": self.s.drains.source(address, in_file)})

    async def reload(self, request: Request) -> Response:
        failure = await self.s._reload()
        await self._not_replaced()
        if failure is not None:
            raise Refused(409, f"reload failed, still running the previous configuration: "
                               f"{failure}")
        return Response({"reloaded": True, "status": self.s.report.status_line()})

    async def stop(self, request: Request) -> Response:
        return Response({"stopping": True, "pid": os.getpid()}, after=self.s.stop)

    async def dump_stats(self, request: Request) -> Response:
        self.s.log_stats()
        return Response({"logged": "stats"})

    async def dump_config(self, request: Request) -> Response:
        self.s.log_config()
        return Response({"logged": "config"})

    # -- housekeeping ---------------------------------------------------------------------

    async def housekeeping(self) -> None:
        self._last_totals = self.s.report.totals()      # the first deltas start here
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                self.watch_drains()
                self.log_stats_deltas()
                self.s.count_tokens()
                if time.monotonic() - self._last_key_check >= KEY_AGE_CHECK_S:
                    self._last_key_check = time.monotonic()
                    await asyncio.to_thread(check_key_ages, self.s.routes, self.s.state)
            except Exception:           # housekeeping must never stop the daemon
                log.exception("housekeeping failed")

    def watch_drains(self) -> None:
        counts = self.s.counters.backend_counts() if self.s.counters is not None else {}
        draining = {}
        for address in self.s.routes.addresses:
            if self.s.drains.draining(address, self.s.routes.backend_draining(address)):
                slot = self.s.slots.get(address)
                draining[address] = counts.get(slot, (0, 0))[1] if slot is not None else 0
        self.s.drain_watch.update(draining)

    def log_stats_deltas(self) -> None:
        """Every stats_interval seconds, one line of what the counters did, while
        traffic flows."""
        interval = self.s.config.stats_interval
        if not interval or time.monotonic() - self._last_stats_log < interval:
            return
        self._last_stats_log = time.monotonic()
        totals = self.s.report.totals()
        last, self._last_totals = self._last_totals, totals
        if last is None:
            return
        deltas = {n: totals[n] - last.get(n, 0) for n in COUNTER_NAMES if n not in GAUGES}
        if deltas.get("rx", 0) > 0:
            log.info("stats last %d s: %s", interval,
                     " ".join(f"{k}={v}" for k, v in deltas.items() if v))

    def describe(self) -> dict[str, Any]:
        """For the report: each backend's drain source and fully-drained time."""
        out = {}
        for address in self.s.routes.addresses:
            in_file = self.s.routes.backend_draining(address)
            out[address] = {"draining_source": self.s.drains.source(address, in_file),
                            "drained_since": self.s.drain_watch.drained_since(address)}
        return out
