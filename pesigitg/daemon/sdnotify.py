"""The systemd notify protocol in pure Python (sd_notify(3), no libsystemd).

Messages are newline-separated assignments sent as one datagram to the AF_UNIX
socket named by $NOTIFY_SOCKET (``@`` means the abstract namespace).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

__all__ = ["Notifier"]

log = logging.getLogger("pesigitg.daemon.sdnotify")


class Notifier:
    """Talks to systemd when started by it; every method is a no-op otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if path.startswith("@"):
            self.address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self.address = path
        self.muted = False      # a daemon handing over says nothing: its successor speaks
        self.watchdog_usec = 0
        if env.get("WATCHDOG_USEC", "").isdigit():
            pid = env.get("WATCHDOG_PID", "")
            if not pid or pid == str(os.getpid()):
                self.watchdog_usec = int(env["WATCHDOG_USEC"])

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half the timeout systemd set."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, **fields: object) -> None:
        if self.address is None or self.muted:
            return
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(message, self.address)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.address, exc.strerror)

    def ready(self, status: str) -> None:
        self.send(ready=1, status=status, mainpid=os.getpid())

    def main_pid(self) -> None:
        """This process is the service's main process now (a successor, before its
        predecessor exits)."""
        self.send(mainpid=os.getpid())

    def reloading(self) -> None:
        self.send(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                  // 1000)

    def stopping(self) -> None:
        self.send(stopping=1)

    def watchdog(self) -> None:
        self.send(watchdog=1)

    async def keep_alive(self) -> None:
        """WATCHDOG=1 every half WATCHDOG_USEC, for as long as the event loop runs."""
        interval = self.watchdog_interval
        assert interval is not None
        while True:
            self.watchdog()
            await asyncio.sleep(interval)
