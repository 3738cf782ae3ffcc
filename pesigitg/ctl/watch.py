"""``pesigitg-ctl watch``: the counters as rates, redrawn in place like ``top`` (curses),
or one line per refresh when stdout is not a terminal. ``q`` or Ctrl-C quits."""

from __future__ import annotations

import curses
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pesigitg._fastpath import CNT_FORWARDED, COUNTER_NAMES, GAUGES
from pesigitg.ctl.client import DaemonError, ask
from pesigitg.ctl.render import duration

__all__ = ["Rates", "watch"]

TIER_ROW = "kernel_tier_forwarded"     # of forwarded, what the XDP program sent itself

class Rates:
    """Per-second rates between two samples of the daemon's counters."""

    def __init__(self) -> None:
        self.last: tuple[float, dict[str, int], dict[str, dict[str, int]]] | None = None

    def update(self, stats: dict[str, Any]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        now = time.monotonic()
        total, backends = {**stats["total"], TIER_ROW: _tier(stats)}, stats.get("backends", {})
        rates: dict[str, float] = {}
        per_backend: dict[str, dict[str, float]] = {}
        if self.last is not None:
            then, last_total, last_backends = self.last
            dt = max(now - then, 1e-3)
            rates = {k: (v - last_total.get(k, 0)) / dt for k, v in total.items()}
            per_backend = {a: {k: (v - last_backends.get(a, {}).get(k, 0)) / dt
                               for k, v in b.items()} for a, b in backends.items()}
        self.last = (now, dict(total), {a: dict(b) for a, b in backends.items()})
        return rates, per_backend


def rows(stats: dict[str, Any], rates: dict[str, float]) -> list[tuple[str, float, int]]:
    """The counters worth a line, in the contract's order: the first two (frames taken,
    frames forwarded) always, every other one once it has counted something (each
    route, drop and unroutable reason, the Retry offload's counters)."""
    total = stats["total"]
    names = [n for i, n in enumerate(COUNTER_NAMES)
             if n not in GAUGES and (i < 2 or total.get(n))]
    out = [(n, rates.get(n, 0.0), total.get(n, 0)) for n in names]
    if _tier(stats):        # of the frames forwarded, those the kernel tier sent itself
        out.insert(2, (TIER_ROW, rates.get(TIER_ROW, 0.0), _tier(stats)))
    return out


def _tier(stats: dict[str, Any]) -> int:
    return int(stats.get("kernel_tier", {}).get(CNT_FORWARDED, 0))


def _lines(health: dict[str, Any], config: dict[str, Any], stats: dict[str, Any],
           rates: dict[str, float], per_backend: dict[str, dict[str, float]],
           interval: float) -> list[str]:
    out = [f"pesigitgd {health['interface']} - {health['status']} - up "
           f"{duration(health.get('uptime_s'))} - workers {health['workers']['alive']}/"
           f"{health['workers']['expected']} - every {interval:g} s  (q quits)", ""]
    out.append(f"{'':28}{'per second':>14}{'total':>18}")
    for name, rate, total in rows(stats, rates):
        out.append(f"{name:28}{rate:>14,.1f}{total:>18,}")
    out += ["", f"{'BACKEND':20}{'HEALTH':18}{'DRAIN':10}{'MAC':19}{'PKT/S':>10}{'CID/S':>10}"]
    for s in {s["address"]: s for s in config["servers"]}.values():
        r = per_backend.get(s["address"], {})
        out.append(f"{s['address']:20}{s['health'][:17]:18}"
                   f"{('yes' if s['draining'] else '-'):10}{(s['mac'] or '-'):19}"
                   f"{r.get('forwarded', 0.0):>10,.1f}{r.get('cid_routed', 0.0):>10,.1f}")
    return out


def _sample(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    return ask(path, "/health"), ask(path, "/config"), ask(path, "/stats")


def watch(path: Path, interval: float = 1.0, count: int | None = None,
          out: TextIO = sys.stdout) -> int:
    if out.isatty():
        return curses.wrapper(_screen, path, interval, count)
    return _plain(path, interval, count, out)


def _plain(path: Path, interval: float, count: int | None, out: TextIO) -> int:
    rates_of = Rates()
    n = 0
    try:
        while count is None or n < count:
            health, _, stats = _sample(path)
            rates, _ = rates_of.update(stats)
            if n:
                line = " ".join(f"{name}={rate:.1f}/s" for name, rate, _ in rows(stats, rates))
                print(f"{time.strftime('%H:%M:%S')} {health['status']} {line}", file=out,
                      flush=True)
            n += 1
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    except DaemonError as exc:
        print(f"pesigitg-ctl: {exc}", file=sys.stderr)
        return 1
    return 0


def _screen(screen: Any, path: Path, interval: float, count: int | None) -> int:
    curses.curs_set(0)
    screen.timeout(int(interval * 1000))
    rates_of = Rates()
    n = 0
    try:
        while count is None or n < count:
            try:
                health, config, stats = _sample(path)
                rates, per_backend = rates_of.update(stats)
                lines = _lines(health, config, stats, rates, per_backend, interval)
            except DaemonError as exc:
                lines = [f"pesigitg-ctl: {exc}", "", "retrying; q quits"]
            screen.erase()
            height, width = screen.getmaxyx()
            for y, line in enumerate(lines[:height]):
                screen.addnstr(y, 0, line, width - 1)
            screen.refresh()
            n += 1
            key = screen.getch()            # waits up to the interval
            if key in (ord("q"), ord("Q")):
                break
    except KeyboardInterrupt:
        pass
    return 0
