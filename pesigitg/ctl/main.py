"""``pesigitg-ctl``: the operator's tool for running pesigitgd daemons.

    pesigitg-ctl [-i IFACE | -s SOCKET] [--json] COMMAND ...

Output is for people by default, JSON with ``--json``. Exit status: 0 when the
command did what it says (for ``health``: the daemon forwards; for ``whoami``: the
CID routes to a server), 1 when it did not or the daemon could not be asked (the
reason on stderr), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pesigitg import __version__
from pesigitg.ctl.client import DaemonError, DaemonReplaced, ask, query
from pesigitg.ctl.render import (
    render_config,
    render_health,
    render_list,
    render_stats,
    render_status_line,
    render_version,
    render_whoami,
)
from pesigitg.daemon.state import read_status_socket
from pesigitg.paths import RUNTIME_DIR

__all__ = ["ctl_main", "ctl_parser"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
RESTART_TIMEOUT = 150.0     # the daemon bounds each step of a restart at 30 s
RELOAD_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
REPLACED_RETRIES = 20       # asking again after a restart replaced the daemon meanwhile
REPLACED_WAIT = 0.1


class Usage(Exception):
    """A usage error: the message, exit status 2."""


def ctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pesigitg-ctl", description="The operator's tool for running pesigitgd "
        "daemons (see pesigitg-ctl(8)).")
    group = p.add_mutually_exclusive_group()
    group.add_argument("-s", "--status-socket", type=Path, help="the daemon's status socket")
    group.add_argument("-i", "--interface", help="the daemon's interface: "
                       f"{RUNTIME_DIR}/pesigitgd-IFACE.sock (may be left out when only one "
                       "daemon runs)")
    p.add_argument("--json", action="store_true", help="JSON output, for scripts")
    p.add_argument("--runtime-dir", type=Path, default=RUNTIME_DIR,
                   help=f"where daemons keep pidfiles and sockets (default {RUNTIME_DIR})")
    p.add_argument("-V", "--version", action="version", version=f"pesigitg-ctl {__version__}")
    # --json before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="JSON output, for scripts")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    for name, text in (("list", "every pesigitgd on this host, and where each fact comes "
                                "from"),
                       ("status", "one line per daemon"),
                       ("health", "ok, degraded or down (exit 0 while it forwards)"),
                       ("stats", "counters"), ("config", "the running configuration "
                                                         "(never keys)"),
                       ("metrics", "Prometheus text"),
                       ("version", "versions: package, Python, kernel; XDP mode, AES-NI"),
                       ("reload", "re-read both files; exit 0 once applied"),
                       ("stop", "stop the daemon; exit 0 once it is gone"),
                       ("restart", "replace the daemon by a new process running the "
                                   "installed code, without losing traffic"),
                       ("dump-stats", "log the counters (as SIGUSR1)"),
                       ("dump-config", "log the runtime configuration (as SIGUSR2)")):
        command(name, help=text, description=text)
    who = command("whoami", help="what the packet path does with a connection ID")
    who.add_argument("cid", metavar="CID_HEX")
    who.add_argument("-r", "--route-config", type=Path,
                     help="decide from this lb.toml instead of asking the daemon")
    backend = command("backend-config", help="what a backend needs to issue "
                             "routable CIDs for a server ID (prints keys: from the file)")
    backend.add_argument("server_id", metavar="SERVER_ID_HEX")
    backend.add_argument("-r", "--route-config", type=Path, required=True)
    for name, text in (("drain", "drain a backend at run time (kept across reloads and "
                                 "restarts)"), ("undrain", "undo a drain")):
        cmd = command(name, help=text, description=text)
        cmd.add_argument("address")
    watch = command("watch", help="live view of rates, per backend too")
    watch.add_argument("-n", "--interval", type=float, default=1.0, metavar="SECONDS")
    watch.add_argument("-c", "--count", type=int, help="refreshes before exiting")
    return p


def ctl_main(argv: list[str] | None = None) -> int:
    parser = ctl_parser()
    args = parser.parse_args(argv)
    command = args.command or "health"
    try:
        return COMMANDS[command](args)
    except Usage as exc:
        parser.print_usage(sys.stderr)
        print(f"pesigitg-ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DaemonError as exc:
        print(f"pesigitg-ctl: {exc}", file=sys.stderr)
        return EXIT_FAIL


def socket_path(args: argparse.Namespace) -> Path:
    if args.status_socket:
        return Path(args.status_socket)
    if args.interface:
        return interface_socket(args.runtime_dir, args.interface)
    found = only_instance(args.runtime_dir)
    if found is None:
        raise Usage("give the daemon's interface (-i IFACE) or status socket (-s PATH): "
                    f"there is not exactly one pesigitgd with its files in "
                    f"{args.runtime_dir}")
    return found


def interface_socket(runtime_dir: Path, interface: str) -> Path:
    """The status socket of the daemon on ``interface``: in the runtime directory, or
    where its state file says (a status_socket configured elsewhere)."""
    default = runtime_dir / f"pesigitgd-{interface}.sock"
    if default.exists():
        return default
    return read_status_socket(runtime_dir / f"pesigitgd-{interface}.pid") or default


def only_instance(runtime_dir: Path = RUNTIME_DIR) -> Path | None:
    """The status socket of the one pesigitgd on this host, if there is exactly one."""
    sockets = set(runtime_dir.glob("pesigitgd-*.sock"))
    for pidfile in runtime_dir.glob("pesigitgd-*.pid"):
        if not pidfile.with_suffix(".sock").exists():
            recorded = read_status_socket(pidfile)
            if recorded is not None:
                sockets.add(recorded)
    return sockets.pop() if len(sockets) == 1 else None


def emit(args: argparse.Namespace, answer: Any, text: Callable[[Any], str]) -> None:
    print(json.dumps(answer, indent=2, sort_keys=True) if args.json else text(answer))


# -- the commands -----------------------------------------------------------------------------

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


def _show(endpoint: str, render: Callable[[Any], str]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        emit(args, ask(socket_path(args), endpoint), render)
        return EXIT_OK
    return command


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
        answer = _whoami_offline(args.route_config, cid)
    else:
        answer = ask(socket_path(args), "/whoami", {"cid": cid.hex()})
    emit(args, answer, render_whoami)
    return EXIT_OK if answer["verdict"] == "cid" else EXIT_FAIL


def _whoami_offline(path: Path, cid: bytes) -> dict[str, Any]:
    from pesigitg.errors import ConfigError
    from pesigitg.routing.route_config import load_route_config
    from pesigitg.routing.routes import Backend, check_runnable
    from pesigitg.routing.whoami import explain_cid

    try:
        routes = load_route_config(path)
        compiled = check_runnable(routes, bytes(6), lambda a: Backend(
            a, bytes(6), True, routes.backend_draining(a)))
    except (ConfigError, ValueError) as exc:
        raise DaemonError(str(exc)) from None
    answer = explain_cid(compiled, cid, {a: "up (assumed)" for a in routes.addresses})
    answer["offline"] = True
    return answer


def cmd_backend_config(args: argparse.Namespace) -> int:
    from pesigitg.ctl.backend_config import backend_config, render_backend_config
    from pesigitg.errors import ConfigError
    from pesigitg.routing.route_config import load_route_config

    try:
        server_id = bytes.fromhex(args.server_id.removeprefix("0x"))
    except ValueError:
        raise Usage(f"{args.server_id!r} is not hex octets") from None
    try:
        routes = load_route_config(args.route_config)
    except (ConfigError, OSError) as exc:
        raise DaemonError(str(exc)) from None
    config = backend_config(routes, server_id)
    if not config["configs"]:
        raise DaemonError(f"no config in {args.route_config} lists server ID {server_id.hex()}")
    emit(args, config, render_backend_config)
    return EXIT_OK


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


def _drain(draining: bool) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        answer = ask_again(socket_path(args), "/drain" if draining else "/undrain",
                           {"address": args.address})
        emit(args, answer, lambda a: (
            f"{a['address']}: {'draining' if a['draining'] else 'not draining'}"
            + (f" ({a['source']})" if a.get("source") else "")
            + ("" if a["changed"] else ", as it already was")))
        return EXIT_OK
    return command


def cmd_watch(args: argparse.Namespace) -> int:
    from pesigitg.ctl.watch import watch

    if args.interval <= 0:
        raise Usage("the interval must be positive")
    return watch(socket_path(args), args.interval, args.count)


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


def _dump(what: str) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        answer = ask(socket_path(args), f"/dump-{what}", method="POST")
        emit(args, answer, lambda _: f"the {what} went to the daemon's log")
        return EXIT_OK
    return command


def cmd_restart(args: argparse.Namespace) -> int:
    answer = ask(socket_path(args), "/restart", method="POST", timeout=RESTART_TIMEOUT)
    if not answer.get("restarted"):
        raise DaemonError(str(answer.get("error", "the restart failed")))
    emit(args, answer, lambda a: f"restarted: pid {a['previous_pid']} handed over to pid "
                                 f"{a['pid']}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": cmd_list, "status": cmd_status, "health": cmd_health,
    "stats": _show("/stats", render_stats), "config": _show("/config", render_config),
    "metrics": cmd_metrics, "version": _show("/version", render_version),
    "whoami": cmd_whoami, "backend-config": cmd_backend_config,
    "drain": _drain(True), "undrain": _drain(False), "watch": cmd_watch,
    "reload": cmd_reload, "stop": cmd_stop, "dump-stats": _dump("stats"),
    "dump-config": _dump("config"), "restart": cmd_restart,
}
