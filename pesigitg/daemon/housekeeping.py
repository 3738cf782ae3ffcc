"""What the daemon does every second while it runs: watch draining backends, log the
counters' deltas every ``stats_interval``, count the tokens each Retry key seals, and
check the keys' ages every hour. Nothing here may stop the daemon: a failure is
logged and the next round runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pesigitg._fastpath import COUNTER_NAMES, GAUGES
from pesigitg.daemon.kernel import Kernel
from pesigitg.daemon.keyages import check_key_ages
from pesigitg.daemon.model import Balancer
from pesigitg.daemon.report import Report

__all__ = ["INTERVAL_S", "KEY_AGE_CHECK_S", "Housekeeping"]

log = logging.getLogger("pesigitg")

INTERVAL_S = 1.0
KEY_AGE_CHECK_S = 3600.0


class Housekeeping:
    def __init__(self, balancer: Balancer, kernel: Kernel, report: Report,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.balancer, self.kernel, self.report, self.now = balancer, kernel, report, now
        self.last_totals: dict[str, int] | None = None
        self.last_stats_log = self.last_key_check = now()

    async def run(self) -> None:
        self.last_totals = self.report.totals()     # the first deltas start here
        while True:
            await asyncio.sleep(INTERVAL_S)
            try:
                self.tick(self.now(), time.time())
                if self.now() - self.last_key_check >= KEY_AGE_CHECK_S:
                    self.last_key_check = self.now()
                    await asyncio.to_thread(check_key_ages, self.balancer.routes,
                                            self.balancer.state)
            except Exception:           # housekeeping must never stop the daemon
                log.exception("housekeeping failed")

    def tick(self, now: float, wall: float) -> None:
        balancer = self.balancer
        balancer.watch_drains(self.kernel.backend_counts(), now)
        self.log_stats_deltas(now)
        if balancer.count_tokens(self.kernel.retries_sent(), wall):
            balancer.state.save()

    def log_stats_deltas(self, now: float) -> None:
        """Every stats_interval seconds, one line of what the counters did, while
        traffic flows."""
        interval = self.balancer.config.stats_interval
        if not interval or now - self.last_stats_log < interval:
            return
        self.last_stats_log = now
        totals = self.report.totals()
        last, self.last_totals = self.last_totals, totals
        if last is None:
            return
        deltas = {n: totals[n] - last.get(n, 0) for n in COUNTER_NAMES if n not in GAUGES}
        if deltas.get("rx", 0) > 0:
            log.info("stats last %d s: %s", interval,
                     " ".join(f"{k}={v}" for k, v in deltas.items() if v))
