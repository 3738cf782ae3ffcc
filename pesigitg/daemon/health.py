"""Backend health: a QUIC version-negotiation probe, rise/fall, back-off.

The probe is a >= 1200-octet long-header datagram with a reserved version
(0x?a?a?a?a, RFC 9000 §15); any QUIC server must answer it with a Version
Negotiation packet (RFC 9000 §6.1, §17.2.1) echoing our connection IDs, which proves
the QUIC stack on the backend is alive, not just the host.

:class:`HealthState` is the sans-I/O part (results in, state changes out);
:class:`HealthChecker` runs probes on asyncio.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pesigitg.routing.route_config import HealthSpec

__all__ = ["MAX_BACKOFF", "HealthChecker", "HealthState", "Probed", "build_probe",
           "is_version_negotiation"]

log = logging.getLogger("pesigitg.daemon.health")

PROBE_SIZE = 1200
CID_LEN = 8
MAX_BACKOFF = 8         # a down backend is probed at most every 8 intervals


def build_probe(dcid: bytes, scid: bytes, version: int | None = None) -> bytes:
    """A client-Initial-shaped datagram with a reserved version, padded to 1200."""
    if version is None:
        version = (int.from_bytes(os.urandom(4), "big") & 0xF0F0F0F0) | 0x0A0A0A0A
    head = (bytes([0xC0]) + struct.pack("!I", version) + bytes([len(dcid)]) + dcid
            + bytes([len(scid)]) + scid)
    return head + bytes(PROBE_SIZE - len(head))


def is_version_negotiation(reply: bytes, dcid: bytes, scid: bytes) -> bool:
    """RFC 9000 §17.2.1: version 0, our SCID as its DCID, our DCID as its SCID."""
    if len(reply) < 7 or not reply[0] & 0x80 or reply[1:5] != b"\0\0\0\0":
        return False
    pos = 5
    their_dcid_len = reply[pos]
    their_dcid = reply[pos + 1:pos + 1 + their_dcid_len]
    pos += 1 + their_dcid_len
    if pos >= len(reply):
        return False
    their_scid = reply[pos + 1:pos + 1 + reply[pos]]
    versions = reply[pos + 1 + reply[pos]:]
    return their_dcid == scid and their_scid == dcid and len(versions) >= 4


@dataclass
class HealthState:
    """Consecutive results of one backend. Until its first probe it is only assumed
    up, and gets no traffic while health checks are on: the first result decides,
    rise and fall apply from then on."""
    up: bool = True
    successes: int = 0
    failures: int = 0
    backoff: int = 1
    checks: int = 0
    last_result: str = "not checked yet"
    last_change: float = 0.0
    probed: bool = False
    transitions: int = 0        # up <-> down changes since the daemon started (restarts too)

    def record(self, success: bool, spec: HealthSpec, detail: str, now: float) -> bool:
        """Count one probe result; True when the up/down state changed."""
        self.checks += 1
        self.last_result = detail
        if not self.probed:
            self.probed, was = True, self.up
            self.up, self.last_change = success, now
            self.successes, self.failures = int(success), int(not success)
            self.transitions += self.up != was
            return self.up != was
        if success:
            self.successes += 1
            self.failures = 0
            self.backoff = 1
            if not self.up and self.successes >= spec.rise:
                self.up, self.last_change = True, now
                self.transitions += 1
                return True
            return False
        self.failures += 1
        self.successes = 0
        if self.up and self.failures >= spec.fall:
            self.up, self.last_change = False, now
            self.transitions += 1
            return True
        if not self.up:
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
        return False

    def usable(self, spec: HealthSpec) -> bool:
        """Whether traffic may go there: up, and probed unless checks are off."""
        return self.up and (self.probed or not spec.enabled)

    def describe(self, spec: HealthSpec) -> str:
        """``up (probed)``, ``down (probed)``, or what is assumed and why."""
        if not spec.enabled:
            return "up (assumed: health checks off)"
        if not self.probed:
            return "down (not probed yet)"
        return f"{'up' if self.up else 'down'} (probed)"

    def delay(self, spec: HealthSpec) -> float:
        """Seconds until the next probe: the interval, stretched while down."""
        return spec.interval_ms / 1000 * (self.backoff if not self.up else 1)


class _Probe(asyncio.DatagramProtocol):
    """Waits for the version negotiation echoing our CIDs. An ICMP error proves
    nothing (anyone can forge one, and a backend may answer after it), so it is only
    remembered for the report."""

    def __init__(self, done: asyncio.Future[str], dcid: bytes, scid: bytes) -> None:
        self.done, self.dcid, self.scid = done, dcid, scid
        self.icmp: str | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.done.done() and is_version_negotiation(data, self.dcid, self.scid):
            self.done.set_result("version negotiation received")

    def error_received(self, exc: Exception) -> None:
        self.icmp = exc.strerror if isinstance(exc, OSError) else str(exc)


async def probe(address: str, port: int, timeout: float, source: str | None = None
                ) -> tuple[bool, str]:
    """One probe from ``source`` (never left to the kernel in the daemon: see
    daemon/sources.py); ``(up, what happened)``."""
    loop = asyncio.get_running_loop()
    dcid, scid = os.urandom(CID_LEN), os.urandom(CID_LEN)
    done: asyncio.Future[str] = loop.create_future()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Probe(done, dcid, scid), remote_addr=(address, port),
            local_addr=(source, 0) if source else None)
    except OSError as exc:
        return False, f"cannot send{f' from {source}' if source else ''}: {exc.strerror}"
    try:
        transport.sendto(build_probe(dcid, scid))
        result = await asyncio.wait_for(done, timeout)
    except TimeoutError:
        icmp = f" (ICMP: {protocol.icmp})" if protocol.icmp else ""
        return False, f"no version negotiation within {timeout * 1000:.0f} ms{icmp}"
    finally:
        transport.close()
    return True, result


class Probed(Protocol):
    """What to probe, where results go and delays come from (daemon/model.py's
    Balancer)."""

    def expect_probes(self) -> tuple[list[str], list[str]]: ...

    def probe_target(self) -> tuple[int, float, Callable[[str], str | None]]: ...

    def record_probe(self, address: str, up: bool, detail: str, now: float) -> bool: ...

    def probe_delay(self, address: str) -> float: ...


class HealthChecker:
    """One probing task per backend: each result is recorded in ``model``; one that
    decides something is told to ``on_change``."""

    def __init__(self, model: Probed, on_change: Callable[[str], None]) -> None:
        self.model = model
        self.on_change = on_change
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.port = 443
        self.timeout = 0.5
        self.source: Callable[[str], str | None] = lambda address: None

    async def configure(self) -> None:
        """(Re)start probing what the model expects (``expect_probes``), to the port, with
        the timeout and from the source address it gives (``probe_target``); a backend
        never probed is probed once before this returns (bounded by the timeout, and not
        told to ``on_change``: the caller compiles next), so no traffic goes to one that
        is not there."""
        self.stop()
        addresses, fresh = self.model.expect_probes()
        self.port, self.timeout, self.source = self.model.probe_target()
        await asyncio.gather(*(self._check(a, report=False) for a in fresh))
        for address in dict.fromkeys(addresses):
            self._tasks[address] = asyncio.get_running_loop().create_task(
                self._run(address, wait_first=address in fresh), name=f"health {address}")

    def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    async def _check(self, address: str, report: bool = True) -> None:
        up, detail = await probe(address, self.port, self.timeout, self.source(address))
        if self.model.record_probe(address, up, detail, time.time()) and report:
            self.on_change(address)

    async def _run(self, address: str, wait_first: bool) -> None:
        if wait_first:
            await asyncio.sleep(self.model.probe_delay(address))
        while True:
            await self._check(address)
            await asyncio.sleep(self.model.probe_delay(address))
