"""pesigitg-ctl's commands: one table of rows (name, help, what it runs, the status
endpoint it asks, its arguments), as xdp-tools declares its commands with
``DEFINE_COMMAND``. The parser (ctl/main.py), pesigitg-ctl(8) and the daemon's
endpoint table (daemon/api.py) are checked against it by the suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pesigitg.ctl.client import DaemonError, DaemonReplaced, ask, query
from pesigitg.ctl.render import (
    render_config,
    render_drain,
    render_health,
    render_list,
    render_stats,
    render_status_line,
    render_version,
    render_whoami,
)
from pesigitg.ctl.target import Usage, socket_path

__all__ = ["COMMANDS", "EXIT_FAIL", "EXIT_OK", "Argument", "Command"]

EXIT_OK, EXIT_FAIL = 0, 1
RESTART_TIMEOUT = 150.0     # the daemon bounds each step of a restart at 30 s
RELOAD_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
REPLACED_RETRIES = 20       # asking again after a restart replaced the daemon meanwhile
REPLACED_WAIT = 0.1

Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Argument:
    """One argument of a command, as argparse's ``add_argument`` takes it."""
    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def arg(*flags: str, **options: Any) -> Argument:
    return Argument(flags, options)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Run
    asks: tuple[str, str] | None = None     # (method, endpoint) on the status socket
    arguments: tuple[Argument, ...] = ()


def emit(args: argparse.Namespace, answer: Any, text: Callable[[Any], str]) -> None:
    print(json.dumps(answer, indent=2, sort_keys=True) if args.json else text(answer))


# -- reads ------------------------------------------------------------------------------------

def find_instances(runtime_dir: Path) -> list[Any]:
    # Imported here: psutil takes most of the start-up time, and a BGP speaker runs
    # `pesigitg-ctl health` twice a second.
    from pesigitg.ctl.instances import find_instances as find

    return find(runtime_dir)


def cmd_list(args: argparse.Namespace) -> int:
    instances = find_instances(args.runtime_dir)
    emit(args, [i.as_dict() for i in instances], lambda _: render_list(instances))
    return EXIT_OK if instances else EXIT_FAIL


def cmd_status(args: argparse.Namespace) -> int:
    instances = find_instances(args.runtime_dir)
    if args.status_socket or args.interface:
        wanted = socket_path(args)
        instances = [i for i in instances if i.socket == wanted] or []
        if not instances:
            raise DaemonError(f"no pesigitgd answers at {wanted}")
    emit(args, [i.as_dict() for i in instances],
         lambda _: "\n".join(render_status_line(i) for i in instances) or "no pesigitgd")
    ok = all(i.status in ("ok", "degraded") for i in instances)
    return EXIT_OK if instances and ok else EXIT_FAIL


def cmd_health(args: argparse.Namespace) -> int:
    answer = ask(socket_path(args), "/health")
    emit(args, answer, render_health)
    return EXIT_OK if answer.get("status") in ("ok", "degraded") else EXIT_FAIL


def show(name: str, help: str, render: Callable[[Any], str]) -> Command:
    """A command that prints the answer of ``GET /name``."""
    def run(args: argparse.Namespace) -> int:
        emit(args, ask(socket_path(args), f"/{name}"), render)
        return EXIT_OK
    return Command(name, help, run, ("GET", f"/{name}"))


def cmd_metrics(args: argparse.Namespace) -> int:
    path = socket_path(args)
    try:
        sys.stdout.write(query(path, "/metrics"))
    except OSError as exc:
        raise DaemonError(f"cannot reach pesigitgd at {path}: {exc.strerror or exc}") \
            from None
    return EXIT_OK


def cmd_whoami(args: argparse.Namespace) -> int:
    try:
        cid = bytes.fromhex(args.cid.removeprefix("0x"))
    except ValueError:
        raise Usage(f"{args.cid!r} is not hex octets") from None
    if not 1 <= len(cid) <= 20:
        raise Usage(f"a connection ID is 1 to 20 octets, not {len(cid)}")
    if args.route_config:
        from pesigitg.ctl.offline import whoami_offline

        answer = whoami_offline(args.route_config, cid)
    else:
        answer = ask(socket_path(args), "/whoami", {"cid": cid.hex()})
    emit(args, answer, render_whoami)
    return EXIT_OK if answer["verdict"] == "cid" else EXIT_FAIL


def cmd_backend_config(args: argparse.Namespace) -> int:
    from pesigitg.ctl.offline import backend_config_of, render_backend_config

    try:
        server_id = bytes.fromhex(args.server_id.removeprefix("0x"))
    except ValueError:
        raise Usage(f"{args.server_id!r} is not hex octets") from None
    emit(args, backend_config_of(args.route_config, server_id), render_backend_config)
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    from pesigitg.ctl.watch import watch

    if args.interval <= 0:
        raise Usage("the interval must be positive")
    return watch(socket_path(args), args.interval, args.count)


# -- writes -----------------------------------------------------------------------------------

def ask_again(path: Path, endpoint: str, params: dict[str, str] | None = None,
              timeout: float = 5.0) -> Any:
    """POST ``endpoint``, asking again when a restart replaced the daemon while the
    request waited (the new daemon answers on the same socket)."""
    for _ in range(REPLACED_RETRIES):
        try:
            return ask(path, endpoint, params, method="POST", timeout=timeout)
        except DaemonReplaced:
            time.sleep(REPLACED_WAIT)
    return ask(path, endpoint, params, method="POST", timeout=timeout)


def drain(name: str, help: str) -> Command:
    """``drain`` or ``undrain`` ADDRESS: ``POST /name?address=ADDRESS``."""
    def run(args: argparse.Namespace) -> int:
        emit(args, ask_again(socket_path(args), f"/{name}", {"address": args.address}),
             render_drain)
        return EXIT_OK
    return Command(name, help, run, ("POST", f"/{name}"), (arg("address"),))


def cmd_reload(args: argparse.Namespace) -> int:
    answer = ask_again(socket_path(args), "/reload", timeout=RELOAD_TIMEOUT)
    emit(args, answer, lambda a: f"reloaded: {a['status']}")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    answer = ask(socket_path(args), "/stop", method="POST")
    pid = int(answer["pid"])
    deadline = time.monotonic() + STOP_TIMEOUT
    while Path(f"/proc/{pid}").exists() and not _zombie(pid):
        if time.monotonic() > deadline:
            raise DaemonError(f"pid {pid} did not stop within {STOP_TIMEOUT:.0f} s")
        time.sleep(0.05)
    emit(args, {"stopped": True, "pid": pid}, lambda a: f"stopped: pid {a['pid']}")
    return EXIT_OK


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def cmd_restart(args: argparse.Namespace) -> int:
    answer = ask(socket_path(args), "/restart", method="POST", timeout=RESTART_TIMEOUT)
    if not answer.get("restarted"):
        raise DaemonError(str(answer.get("error", "the restart failed")))
    emit(args, answer, lambda a: f"restarted: pid {a['previous_pid']} handed over to pid "
                                 f"{a['pid']}")
    return EXIT_OK


def dump(what: str, help: str) -> Command:
    """``dump-stats`` or ``dump-config``: the daemon logs them."""
    def run(args: argparse.Namespace) -> int:
        answer = ask(socket_path(args), f"/dump-{what}", method="POST")
        emit(args, answer, lambda _: f"the {what} went to the daemon's log")
        return EXIT_OK
    return Command(f"dump-{what}", help, run, ("POST", f"/dump-{what}"))


ROUTE_CONFIG = "-r", "--route-config"

COMMANDS: tuple[Command, ...] = (
    Command("list", "every pesigitgd on this host, and where each fact comes from",
            cmd_list),
    Command("status", "one line per daemon", cmd_status),
    Command("health", "ok, degraded or down (exit 0 while it forwards)", cmd_health,
            ("GET", "/health")),
    show("stats", "counters", render_stats),
    show("config", "the running configuration (never keys)", render_config),
    Command("metrics", "Prometheus text", cmd_metrics, ("GET", "/metrics")),
    show("version", "versions: package, Python, kernel; XDP mode, AES-NI", render_version),
    Command("whoami", "what the packet path does with a connection ID", cmd_whoami,
            ("GET", "/whoami"), (arg("cid", metavar="CID_HEX"), arg(
                *ROUTE_CONFIG, type=Path,
                help="decide from this lb.toml instead of asking the daemon"))),
    Command("backend-config", "what a backend needs to issue routable CIDs for a server "
            "ID (prints keys: from the file)", cmd_backend_config, None,
            (arg("server_id", metavar="SERVER_ID_HEX"),
             arg(*ROUTE_CONFIG, type=Path, required=True))),
    drain("drain", "drain a backend at run time (kept across reloads and restarts)"),
    drain("undrain", "undo a drain"),
    Command("watch", "live view of rates, per backend too", cmd_watch, ("GET", "/stats"),
            (arg("-n", "--interval", type=float, default=1.0, metavar="SECONDS"),
             arg("-c", "--count", type=int, help="refreshes before exiting"))),
    Command("reload", "re-read both files; exit 0 once applied", cmd_reload,
            ("POST", "/reload")),
    Command("stop", "stop the daemon; exit 0 once it is gone", cmd_stop, ("POST", "/stop")),
    Command("restart", "replace the daemon by a new process running the installed code, "
            "without losing traffic", cmd_restart, ("POST", "/restart")),
    dump("stats", "log the counters (as SIGUSR1)"),
    dump("config", "log the runtime configuration (as SIGUSR2)"),
)
