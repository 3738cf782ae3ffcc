"""``pesigitgd``: the command line, configuration loading, daemonizing and the supervisor's
run, with exit codes (0 ok, 1 failed, 2 usage)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pesigitg import __version__
from pesigitg.daemon.daemonize import PidFile, PidFileBusy, daemonize
from pesigitg.daemon.sdnotify import Notifier
from pesigitg.daemon.settings import DaemonConfig, load_daemon_config, merge, parse_value
from pesigitg.errors import ConfigError
from pesigitg.routing.route_config import RouteConfig, load_route_config

__all__ = ["daemon_main", "daemon_parser", "load_configuration"]

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
    # Set by a running daemon when it starts its successor (POST /restart).
    p.add_argument("--takeover-fd", type=int, help=argparse.SUPPRESS)
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
    argv = sys.argv[1:] if argv is None else argv
    args = daemon_parser().parse_args(argv)
    if args.takeover_fd is not None:
        return _take_over(args, argv)
    from pesigitg.daemon.supervisor import check_runnable

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

    from pesigitg.daemon.logs import setup_logging
    from pesigitg.daemon.supervisor import Supervisor

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
    log_setup: dict[str, Any] = {"foreground": foreground, "interface": config.interface,
                                 "syslog_socket": str(config.syslog_socket)}
    setup_logging(**log_setup)
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

    supervisor = Supervisor(config, routes, cli, argv=argv, notifier=notifier,
                            pidfile=pidfile, log_setup=log_setup)
    try:
        code = asyncio.run(supervisor.run(started))
    finally:
        if ready_fd >= 0:
            os.write(ready_fd, b"pesigitgd: the daemon failed during start-up\n")
            os.close(ready_fd)
        pidfile.release()
    return code


def _take_over(args: argparse.Namespace, argv: list[str]) -> int:
    """Started by a running daemon to replace it (see daemon/handover.py): validate the
    configuration, receive what the old daemon hands over, run. Anything that goes
    wrong is told to the old daemon, which then carries on."""
    from pesigitg.daemon.handover import Channel, HandoverError, Inheritance
    from pesigitg.daemon.logs import setup_logging
    from pesigitg.daemon.supervisor import Supervisor, check_runnable

    channel = Channel.from_fd(args.takeover_fd)
    try:
        try:
            config, routes, cli = load_configuration(args)
            check_runnable(routes)
        except (ConfigError, ValueError) as exc:
            channel.send("failed", {"reason": f"the new configuration is invalid: {exc}"})
            return EXIT_FAIL
        channel.send("hello", {"pid": os.getpid(), "version": __version__})
        inheritance = Inheritance.receive(channel)
    except (HandoverError, OSError) as exc:
        print(f"pesigitgd: taking over failed: {exc}", file=sys.stderr)
        return EXIT_FAIL
    setup_logging(**inheritance.facts["log"])
    pidfile = PidFile.adopt(inheritance.fds["pidfile"], config.effective_pidfile)
    notifier = Notifier()
    original = [a for i, a in enumerate(argv) if a != "--takeover-fd" and
                (i == 0 or argv[i - 1] != "--takeover-fd")]
    supervisor = Supervisor(config, routes, cli, argv=original, notifier=notifier,
                            pidfile=pidfile, log_setup=inheritance.facts["log"])
    try:
        return asyncio.run(supervisor.run(lambda error: None, (channel, inheritance)))
    finally:
        pidfile.release()       # removes the file only if it names this process
