"""Console entry points: ``pesigitgd`` (the daemon) and ``pesigitg-ctl`` (its client)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from pathlib import Path

from pesigitg import __version__
from pesigitg.config import DaemonConfig, load_daemon_config, merge, parse_value
from pesigitg.daemonize import PidFile, PidFileBusy, daemonize
from pesigitg.errors import ConfigError
from pesigitg.lbconfig import RouteConfig, load_route_config
from pesigitg.sdnotify import Notifier

__all__ = ["ctl_main", "daemon_main"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _setting(key: str):  # type: ignore[no-untyped-def]
    """argparse type that checks a flag with the config file's rules."""
    def convert(raw: str) -> object:
        try:
            return parse_value(key, raw)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.reason) from None
    convert.__name__ = key
    return convert


def daemon_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pesigitgd", description="QUIC-aware layer-4 load balancer (XDP + AF_XDP, "
        "QUIC-LB connection-ID routing, Maglev fallback, Direct Server Return).")
    p.add_argument("-c", "--config", type=Path, help="daemon config file (key = value)")
    p.add_argument("-i", "--interface", type=_setting("interface"), help="data-plane NIC")
    p.add_argument("-p", "--port", type=_setting("port"), action="append", dest="port",
                   help="UDP port to steer (repeatable; default 443)")
    p.add_argument("-q", "--queues", type=_setting("queues"),
                   help="worker processes, one per RX queue (default: the NIC's RX queues)")
    p.add_argument("-r", "--route-config", type=_setting("route_config"),
                   dest="route_config", help="route config (lb.toml)")
    p.add_argument("-s", "--status-socket", type=_setting("status_socket"),
                   dest="status_socket", help="status socket (default /run/pesigitgd-IFACE.sock)")
    p.add_argument("--pidfile", type=_setting("pidfile"),
                   help="pidfile (default /run/pesigitgd-IFACE.pid)")
    p.add_argument("--xdp-mode", type=_setting("xdp_mode"), dest="xdp_mode",
                   help="native (default; falls back to generic) or generic")
    p.add_argument("--syslog-socket", type=_setting("syslog_socket"), dest="syslog_socket",
                   help="syslog socket for daemon mode (default /dev/log)")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground and log to stderr")
    p.add_argument("--check", action="store_true",
                   help="validate the configuration and exit 0 (valid) or 1, touching nothing")
    p.add_argument("-V", "--version", action="version", version=f"pesigitgd {__version__}")
    return p


def load_configuration(args: argparse.Namespace) -> tuple[DaemonConfig, RouteConfig,
                                                          dict[str, object]]:
    cli = {key: getattr(args, key) for key in ("interface", "port", "queues", "route_config",
                                               "status_socket", "pidfile", "xdp_mode",
                                               "syslog_socket")}
    file_config = load_daemon_config(args.config) if args.config else None
    config = merge(file_config, cli)
    assert config.route_config is not None
    routes = load_route_config(config.route_config)
    return config, routes, cli


def daemon_main(argv: list[str] | None = None) -> int:
    args = daemon_parser().parse_args(argv)
    from pesigitg.supervisor import check_runnable

    try:
        config, routes, cli = load_configuration(args)
        check_runnable(routes)
    except (ConfigError, ValueError) as exc:
        print(f"pesigitgd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if args.check:
        print(f"pesigitgd: configuration OK: interface {config.interface}, ports "
              f"{', '.join(map(str, config.effective_ports))}, {len(routes.configs)} QUIC-LB "
              f"config(s), {len(routes.servers)} server(s) on {len(routes.addresses)} "
              f"backend(s)")
        return EXIT_OK

    from pesigitg.logs import setup_logging
    from pesigitg.supervisor import Supervisor

    notifier = Notifier()
    foreground = args.foreground or notifier.enabled
    pidfile = PidFile(config.effective_pidfile)
    try:
        pidfile.acquire()
    except (PidFileBusy, OSError) as exc:
        print(f"pesigitgd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if not foreground and not config.syslog_socket.exists():
        print(f"pesigitgd: no syslog socket at {config.syslog_socket}; logging to "
              f"/var/log/pesigitgd-{config.interface}.log", file=sys.stderr)
    ready_fd = -1
    if not foreground:
        ready_fd = daemonize()
        pidfile.write()
    assert config.interface is not None
    setup_logging(foreground=foreground, interface=config.interface,
                  syslog_socket=config.syslog_socket)
    if pidfile.stale_pid:
        logging.getLogger("pesigitg").info("took over the stale pidfile %s of pid %d",
                                           pidfile.path, pidfile.stale_pid)

    def started(error: str | None) -> None:
        nonlocal ready_fd
        if ready_fd >= 0:
            os.write(ready_fd, (error or "ok").replace("\n", " ").encode() + b"\n")
            os.close(ready_fd)
            ready_fd = -1
        elif error:
            print(error, file=sys.stderr)

    try:
        code = asyncio.run(Supervisor(config, routes, cli, notifier).run(started))
    finally:
        if ready_fd >= 0:
            os.write(ready_fd, b"pesigitgd: the daemon failed during start-up\n")
            os.close(ready_fd)
        pidfile.release()
    return code


# -- pesigitg-ctl -------------------------------------------------------------------------

def ctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pesigitg-ctl", description="Query a running pesigitgd over its status socket.")
    group = p.add_mutually_exclusive_group()
    group.add_argument("-s", "--status-socket", type=Path, help="status socket path")
    group.add_argument("-i", "--interface", help="the daemon's interface: "
                       "/run/pesigitgd-IFACE.sock")
    p.add_argument("what", nargs="?", default="health",
                   help="health (exit 0 when ok), stats, config, metrics, or a path like /stats")
    p.add_argument("-V", "--version", action="version", version=f"pesigitg-ctl {__version__}")
    return p


def query(path: Path, request: str, timeout: float = 5.0) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(f"GET {request}\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def ctl_main(argv: list[str] | None = None) -> int:
    parser = ctl_parser()
    args = parser.parse_args(argv)
    if args.status_socket is None and args.interface is None:
        parser.error("give the status socket (-s PATH) or the daemon's interface (-i IFACE)")
    path = args.status_socket or Path(f"/run/pesigitgd-{args.interface}.sock")
    request = args.what if args.what.startswith("/") else f"/{args.what}"
    try:
        answer = query(path, request)
    except OSError as exc:
        print(f"pesigitg-ctl: cannot reach pesigitgd at {path}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_FAIL
    sys.stdout.write(answer)
    if request == "/health":
        try:
            return EXIT_OK if json.loads(answer).get("status") == "ok" else EXIT_FAIL
        except ValueError:
            return EXIT_FAIL
    return EXIT_FAIL if answer.startswith('{"error"') else EXIT_OK
