"""The metrics listeners: ``metrics_listen = ADDRESS:PORT`` (repeatable), plain HTTP on
TCP for Prometheus.

Each serves ``GET /metrics`` and ``GET /health`` only (api.METRICS_ENDPOINTS): read
only, never a way to change the daemon's state, and never key material (the same
answers as the status socket's, which show none). A request must be HTTP/1.x; it has
one deadline for the whole request and one for the answer (status.IO_TIMEOUT), and
at most MAX_CONNECTIONS are served at once per listener.

A reload binds the addresses it adds before anything else changes (a port that is
taken fails the reload, and what ran goes on), then serves them and closes the ones it
removed; an address kept is not touched. A hitless restart hands every listening
socket over like the status socket (``metrics:ADDRESS`` in the hand-over's fds).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterable
from typing import Any

from pesigitg.daemon.api import METRICS_ENDPOINTS
from pesigitg.daemon.status import RequestServer

__all__ = ["FD_PREFIX", "MAX_CONNECTIONS", "MetricsListener", "MetricsListeners",
           "split_listen"]

log = logging.getLogger("pesigitg")

MAX_CONNECTIONS = 16        # per listener: a scrape is one short request
FD_PREFIX = "metrics:"      # the hand-over's fd names


def split_listen(address: str) -> tuple[str, int]:
    """``"10.0.0.1:9464"`` or ``"[::1]:9464"`` (as settings._listen normalises them)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsListener(RequestServer):
    """One ``metrics_listen`` address."""

    http_only = True
    max_connections = MAX_CONNECTIONS

    def __init__(self, address: str, control: Any) -> None:
        super().__init__(METRICS_ENDPOINTS, control)
        self.address = address

    def bind(self) -> None:
        host, port = split_listen(self.address)
        ipv6 = ipaddress.ip_address(host).version == 6
        sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if ipv6:        # [::] is IPv6 only: 0.0.0.0 is its own setting
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"metrics_listen {self.address}: cannot listen: "
                                     f"{exc.strerror}") from None
        self._listener = sock


class MetricsListeners:
    """Every address the daemon serves metrics on, by address."""

    def __init__(self, control: Any) -> None:
        self.control = control
        self.serving: dict[str, MetricsListener] = {}

    def bind_new(self, addresses: Iterable[str]) -> dict[str, MetricsListener]:
        """Bind those of ``addresses`` not served yet (not serving them yet); OSError
        (saying which address and why) with none of them left bound."""
        fresh: dict[str, MetricsListener] = {}
        try:
            for address in addresses:
                if address not in self.serving:
                    fresh[address] = listener = MetricsListener(address, self.control)
                    listener.bind()
        except OSError:
            self.discard(fresh)
            raise
        return fresh

    @staticmethod
    def discard(fresh: dict[str, MetricsListener]) -> None:
        """Close what :meth:`bind_new` bound (what it was for did not happen)."""
        for listener in fresh.values():
            if listener.listener is not None:
                listener.listener.close()

    def open(self, addresses: Iterable[str], inherited: dict[str, int] | None = None
             ) -> None:
        """Bind ``addresses`` (not serving them yet). After a restart, ``inherited`` (the
        hand-over's fds) has the predecessor's sockets: those still configured are
        taken over as they are, the others are closed with the hand-over's fds."""
        fds = inherited or {}
        wanted = list(addresses)
        for address in wanted:
            fd = fds.get(FD_PREFIX + address)
            if fd is not None:
                self.serving[address] = listener = MetricsListener(address, self.control)
                listener.adopt(fd)
        self.serving.update(self.bind_new(wanted))

    async def switch(self, addresses: Iterable[str], fresh: dict[str, MetricsListener]
                     ) -> None:
        """Serve ``fresh`` (from :meth:`bind_new`) and stop serving what is no longer in
        ``addresses``."""
        wanted = set(addresses)
        self.serving.update(fresh)
        await self.serve(fresh)
        for address in [a for a in self.serving if a not in wanted]:
            await self.serving.pop(address).close()
            log.info("no longer serving metrics on %s", address)

    async def serve(self, listeners: dict[str, MetricsListener] | None = None) -> None:
        """Start serving ``listeners`` (default: every bound one, after a start or a
        take-over)."""
        for address, listener in (self.serving if listeners is None else listeners).items():
            await listener.serve()
            log.info("serving metrics on %s", address)

    def fds(self) -> dict[str, int]:
        """The listening sockets for a successor, by hand-over name."""
        return {FD_PREFIX + address: listener.listener.fileno()
                for address, listener in self.serving.items()
                if listener.listener is not None}

    async def close(self) -> None:
        for listener in self.serving.values():
            with contextlib.suppress(OSError):
                await listener.close()
        self.serving.clear()
