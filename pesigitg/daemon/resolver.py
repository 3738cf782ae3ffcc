"""Keeping the backends' MACs current: solicited at start (ARP/NDP gets a moment, so
the fallback pool is not empty when traffic starts), then read every second; a backend
still unresolved joins the table when it resolves. Static MACs from lb.toml are never
looked up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pesigitg.daemon.model import Balancer
from pesigitg.daemon.neighbours import NeighbourTable

__all__ = ["INTERVAL_S", "START_WAIT_S", "Resolver"]

log = logging.getLogger("pesigitg")

INTERVAL_S = 1.0
START_WAIT_S = 1.0          # for backend MACs before XDP is attached


class Resolver:
    def __init__(self, model: Balancer, table: NeighbourTable) -> None:
        self.model, self.table = model, table

    async def refresh(self) -> bool:
        """Read the neighbour table, solicit what is missing; True if a MAC changed."""
        dynamic = self.model.dynamic()
        found = await asyncio.to_thread(self.table.lookup, dynamic) if dynamic else {}
        for address, mac in found.items():
            if mac is None:
                self.table.solicit(address, self.model.sources.for_backend(address))
        return self.model.learn_macs(found)

    async def settle(self) -> None:
        """Solicit every backend and wait up to START_WAIT_S for their answers."""
        await self.refresh()
        deadline = time.monotonic() + START_WAIT_S
        while self.model.unresolved() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            await self.refresh()
        if self.model.unresolved():
            log.warning("no MAC yet for %s: not routable until ARP/NDP resolves them",
                        ", ".join(self.model.unresolved()))

    async def run(self, changed: Callable[[str], object]) -> None:
        """Every INTERVAL_S, :meth:`refresh`; ``changed(why)`` when a MAC changed."""
        while True:
            await asyncio.sleep(INTERVAL_S)
            try:
                if await self.refresh():
                    changed("neighbour table changed")
            except OSError as exc:
                log.error("neighbour refresh: %s", exc)
