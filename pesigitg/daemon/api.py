"""The status socket's endpoints: the only table of them, one row each (method, path,
doc, handler, whether it writes), and the narrow :class:`Control` their handlers see.

A handler reads the daemon through ``control.snapshot()`` and changes it through
``reload``, ``stop``, ``drain`` and ``restart``, never through the supervisor itself.
Adding an endpoint is a row in :data:`ENDPOINTS` and its handler; ``GET /``, the
permission check (``writes``), pesigitgd(8) and pesigitg-ctl's commands are checked
against this table by the suite.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Callable
from typing import Protocol
from urllib.parse import parse_qs

from pesigitg import __version__
from pesigitg._fastpath import aesni_supported, gcm_supported
from pesigitg.daemon.exposition import exposition
from pesigitg.daemon.report import Report, Snapshot
from pesigitg.daemon.status import Endpoint, Refused, Request, Response
from pesigitg.routing.whoami import explain_cid

__all__ = ["ENDPOINTS", "METRICS_ENDPOINTS", "Busy", "Control", "Replaced", "RestartFailed"]

log = logging.getLogger("pesigitg")
PROMETHEUS_TEXT = "text/plain; version=0.0.4"


class Busy(Exception):
    """Asked while a restart or a stop is under way."""


class RestartFailed(Exception):
    """The successor failed; this daemon runs on (the text says why)."""


class Replaced(Exception):
    """A restart replaced this daemon while the request waited: ask again (the new
    daemon answers on the same socket)."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"pid {pid} took over while this request waited: ask again")


class Control(Protocol):
    """What the endpoints may do to the daemon (daemon/supervisor.py implements it)."""

    def snapshot(self) -> Snapshot: ...

    async def reload(self) -> str | None:
        """Re-read both files: None once applied, else why not (Replaced)."""

    def stop(self) -> None: ...

    async def drain(self, address: str, draining: bool, by: str) -> tuple[bool, str | None]:
        """Drain or undrain at run time: (changed, source) once every worker forwards
        accordingly (KeyError, with why: no such backend; Replaced)."""

    async def restart(self) -> tuple[int, Callable[[], None]]:
        """Hand over to a new process: its pid, and what to call once the answer is sent
        (Busy, RestartFailed)."""


def _param(request: Request, name: str) -> str:
    values = parse_qs(request.query).get(name)
    if not values or not values[0]:
        raise Refused(400, f"{request.path} needs ?{name}=...")
    return values[0]


# -- reads --------------------------------------------------------------------------------

async def index(control: Control, request: Request) -> Response:
    return Response({"endpoints": {e.path: e.doc for e in ENDPOINTS}})


async def health(control: Control, request: Request) -> Response:
    return Response(Report(control.snapshot).health())


async def stats(control: Control, request: Request) -> Response:
    return Response(Report(control.snapshot).stats())


async def config(control: Control, request: Request) -> Response:
    return Response(Report(control.snapshot).config())


async def metrics(control: Control, request: Request) -> Response:
    return Response(exposition(control.snapshot()), content_type=PROMETHEUS_TEXT)


async def version(control: Control, request: Request) -> Response:
    s = control.snapshot()
    return Response({"pesigitg": __version__, "python": platform.python_version(),
                     "implementation": sys.implementation.name,
                     "kernel": platform.release(), "machine": platform.machine(),
                     "xdp_mode": s.xdp_mode, "xdp_attach": s.xdp_attach,
                     "aes_ni": aesni_supported(), "pclmulqdq": gcm_supported(),
                     "pid": os.getpid()})


async def whoami(control: Control, request: Request) -> Response:
    text = _param(request, "cid")
    s = control.snapshot()
    assert s.table is not None
    try:
        cid = bytes.fromhex(text)
        return Response(explain_cid(s.table, cid, {b.address: b.health for b in s.backends}))
    except ValueError as exc:
        raise Refused(400, f"not a connection ID: {exc}") from None


# -- writes -------------------------------------------------------------------------------

async def drain(control: Control, request: Request) -> Response:
    return await _drain(control, request, True)


async def undrain(control: Control, request: Request) -> Response:
    return await _drain(control, request, False)


async def _drain(control: Control, request: Request, draining: bool) -> Response:
    address = _param(request, "address")
    try:
        changed, source = await control.drain(address, draining, str(request.peer))
    except KeyError as exc:
        raise Refused(404, str(exc.args[0])) from None
    except Replaced as exc:
        raise Refused(503, str(exc), retry=True) from None
    return Response({"address": address, "draining": draining, "changed": changed,
                     "source": source})


async def reload(control: Control, request: Request) -> Response:
    try:
        failure = await control.reload()
    except Replaced as exc:
        raise Refused(503, str(exc), retry=True) from None
    if failure is not None:
        raise Refused(409, f"reload failed, still running the previous configuration: "
                           f"{failure}")
    return Response({"reloaded": True, "status": Report(control.snapshot).status_line()})


async def stop(control: Control, request: Request) -> Response:
    return Response({"stopping": True, "pid": os.getpid()}, after=control.stop)


async def restart(control: Control, request: Request) -> Response:
    try:
        pid, then = await control.restart()
    except Busy as exc:
        raise Refused(409, str(exc)) from None
    except RestartFailed as exc:
        raise Refused(500, str(exc)) from None
    return Response({"restarted": True, "pid": pid, "previous_pid": os.getpid()}, after=then)


async def dump_stats(control: Control, request: Request) -> Response:
    Report(control.snapshot).log_stats()
    return Response({"logged": "stats"})


async def dump_config(control: Control, request: Request) -> Response:
    Report(control.snapshot).log_config()
    return Response({"logged": "config"})


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/", "this list", index),
    Endpoint("GET", "/health", "ok, degraded or down and why, uptime, workers alive/expected, "
             "how XDP is attached", health),
    Endpoint("GET", "/stats", "counters: summed, per worker, and the XDP program's verdicts",
             stats),
    Endpoint("GET", "/config", "daemon settings, QUIC-LB configs (no keys), servers with "
             "health, fallback pool, steered ports and VIPs, probe source addresses", config),
    Endpoint("GET", "/metrics", "Prometheus text exposition", metrics),
    Endpoint("GET", "/version", "package, Python, kernel, XDP mode, AES-NI", version),
    Endpoint("GET", "/whoami", "?cid=HEX: what the packet path does with that connection ID",
             whoami),
    Endpoint("POST", "/drain", "?address=A: drain a backend (kept across reloads and "
             "restarts)", drain, writes=True),
    Endpoint("POST", "/undrain", "?address=A: undo a drain", undrain, writes=True),
    Endpoint("POST", "/reload", "re-read both files; answers once applied, or why not",
             reload, writes=True),
    Endpoint("POST", "/stop", "stop the daemon", stop, writes=True),
    Endpoint("POST", "/restart", "replace this daemon by a new process running the "
             "installed code, without losing traffic; answers once the new one runs, or "
             "why not", restart, writes=True),
    Endpoint("POST", "/dump-stats", "log the counters (as SIGUSR1)", dump_stats, writes=True),
    Endpoint("POST", "/dump-config", "log the runtime configuration (as SIGUSR2)",
             dump_config, writes=True),
)

# What the metrics listeners (metrics_listen, daemon/metrics_listen.py) serve: reads
# only, to anyone who can reach the port.
METRICS_ENDPOINTS: tuple[Endpoint, ...] = tuple(
    e for e in ENDPOINTS if e.method == "GET" and e.path in ("/metrics", "/health"))
