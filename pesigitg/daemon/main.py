"""``pesigitgd``: the command line, configuration loading, daemonizing and the supervisor's
run, with exit codes (0 ok, 1 failed, 2 usage)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pesigitg import __version__
from pesigitg.daemon.configuration import read_configuration
from pesigitg.daemon.daemonize import PidFile, PidFileBusy, daemonize
from pesigitg.daemon.sdnotify import Notifier
from pesigitg.daemon.settings import SETTINGS, DaemonConfig, parse_value, to_argv
from pesigitg.errors import CAP_NAMES, CAP_SYS_ADMIN, ConfigError, has_capability
from pesigitg.paths import RUNTIME_DIR
from pesigitg.routing.route_config import RouteConfig
from pesigitg.routing.routes import check_runnable

__all__ = ["daemon_main", "daemon_parser", "load_configuration"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _setting(key: str):  # type: ignore[no-untyped-def]
    """argparse type that checks a flag with the config file's rules; a relative path is
    made absolute now, before anything changes directory."""
    def convert(raw: str) -> object:
        try:
            return parse_value(key, raw, base=Path.cwd())
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.reason) from None
    convert.__name__ = key
    return convert


def daemon_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pesigitgd", description="QUIC-aware layer-4 load balancer (XDP + AF_XDP, "
        "QUIC-LB connection-ID routing, Maglev fallback, Direct Server Return).")
    p.add_argument("-c", "--config", type=lambda raw: Path(raw).absolute(),
                   help="daemon config file (key = value)")
    for s in SETTINGS:
        p.add_argument(*s.flags, type=_setting(s.key), dest=s.key, help=s.help,
                       metavar=s.metavar, action="append" if s.repeat else "store")
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
    cli = {s.key: getattr(args, s.key) for s in SETTINGS}
    config, routes = read_configuration(args.config, cli)
    return config, routes, cli


def successor_argv(args: argparse.Namespace, cli: dict[str, object]) -> list[str]:
    """The command line a successor starts with: this one, every path absolute."""
    return [*(["-c", str(args.config)] if args.config else []), *to_argv(cli)]


def daemon_main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = daemon_parser().parse_args(argv)
    if args.takeover_fd is not None:
        return _take_over(args)
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
    return _run(args, config, routes, cli)


class ReadyPipe:
    """How a daemonized process tells the command that started it whether it came up
    (daemonize.py); in the foreground, a failure goes to stderr."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def say(self, error: str | None) -> None:
        if self.fd >= 0:
            os.write(self.fd, (error or "ok").replace("\n", " ").encode() + b"\n")
            os.close(self.fd)
            self.fd = -1
        elif error:
            print(error, file=sys.stderr)

    def close(self) -> None:
        if self.fd >= 0:
            self.say("pesigitgd: the daemon failed during start-up")


def _run(args: argparse.Namespace, config: DaemonConfig, routes: RouteConfig,
         cli: dict[str, object]) -> int:
    from pesigitg.daemon.logs import log_destination, open_log_file, setup_logging
    from pesigitg.daemon.supervisor import Invocation, Supervisor

    notifier = Notifier()
    foreground = args.foreground or notifier.enabled
    assert config.interface is not None
    log_setup: dict[str, Any] = {"foreground": foreground, "interface": config.interface,
                                 "syslog_socket": str(config.syslog_socket),
                                 "log_file": str(config.log_file) if config.log_file else None,
                                 "log_format": config.log_format}
    kind, target = log_destination(**log_setup)
    log_fd: int | None = None
    pidfile = PidFile(config.effective_pidfile)
    try:
        become(config, target if kind == "file" else None)
        if kind == "file":
            assert target is not None
            try:
                log_fd = open_log_file(target)
            except OSError as exc:
                raise OSError(exc.errno, f"no syslog at {config.syslog_socket}, and the log "
                              f"file cannot be used: {exc.strerror}") from None
        pidfile.acquire()
    except (PidFileBusy, OSError, ValueError) as exc:
        print(f"pesigitgd: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if kind == "file":
        print(f"pesigitgd: no syslog at {config.syslog_socket}; logging to {target}",
              file=sys.stderr)
    ready = ReadyPipe(-1 if foreground else daemonize())
    if not foreground:
        pidfile.write()
    setup_logging(**log_setup, log_fd=log_fd)
    if pidfile.stale_pid:
        logging.getLogger("pesigitg").info("took over the stale pidfile %s of pid %d",
                                           pidfile.path, pidfile.stale_pid)
    supervisor = Supervisor(config, routes, Invocation(cli, successor_argv(args, cli),
                                                       pidfile, log_setup, notifier))
    try:
        return asyncio.run(supervisor.run(ready.say))
    finally:
        ready.close()
        pidfile.release()


def become(config: DaemonConfig, log_file: Path | None) -> None:
    """Make the default runtime directory, owned by the user the daemon runs as; as root
    with ``user`` set, switch to it (creating the log file for it when missing: it is
    opened after the switch); then check the capabilities the daemon needs are there."""
    from pesigitg.daemon.logs import create_log_file
    from pesigitg.daemon.privileges import (
        SUPERVISOR_CAPS,
        resolve_account,
        switch_user,
    )

    account = resolve_account(config.user) if config.user else None
    switching = account is not None and os.geteuid() != account.uid
    owner = (account.uid, account.gid) if account is not None and switching \
        else (os.geteuid(), os.getegid())
    for path in (config.effective_pidfile, config.effective_status_socket):
        if path.parent == RUNTIME_DIR:
            if not RUNTIME_DIR.exists():
                RUNTIME_DIR.mkdir(mode=0o755)
                os.chown(RUNTIME_DIR, *owner)
            elif switching and RUNTIME_DIR.stat().st_uid == 0:
                os.chown(RUNTIME_DIR, *owner, follow_symlinks=False)
    if account is not None and switching:
        if log_file is not None:
            create_log_file(log_file, *owner)
        switch_user(account)
    if not has_capability(CAP_SYS_ADMIN):
        missing = [CAP_NAMES[cap] for cap in SUPERVISOR_CAPS if not has_capability(cap)]
        if missing:
            raise OSError(errno.EPERM, f"pesigitgd needs {', '.join(missing)}, which this "
                          "process lacks: start it as root (with --user to drop to a "
                          "dedicated user) or give it those capabilities")


def _take_over(args: argparse.Namespace) -> int:
    """Started by a running daemon to replace it (see daemon/handover.py): validate the
    configuration, receive what the old daemon hands over, run. Anything that goes
    wrong is told to the old daemon, which then carries on."""
    from pesigitg.daemon.faults import fault
    from pesigitg.daemon.handover_wire import Channel, HandoverError, Inheritance, Message
    from pesigitg.daemon.logs import setup_logging
    from pesigitg.daemon.supervisor import Invocation, Supervisor

    fault("takeover-start")
    channel = Channel.from_fd(args.takeover_fd)
    try:
        try:
            config, routes, cli = load_configuration(args)
            check_runnable(routes)
        except (ConfigError, ValueError) as exc:
            channel.send(Message.FAILED, {"reason": f"the new configuration is invalid: {exc}"})
            return EXIT_FAIL
        channel.send(Message.HELLO, {"pid": os.getpid(), "version": __version__})
        inheritance = Inheritance.receive(channel)
    except (HandoverError, OSError) as exc:
        print(f"pesigitgd: taking over failed: {exc}", file=sys.stderr)
        return EXIT_FAIL
    setup_logging(**inheritance.facts["log"])
    pidfile = PidFile.adopt(inheritance.fds["pidfile"], config.effective_pidfile)
    supervisor = Supervisor(config, routes, Invocation(
        cli, successor_argv(args, cli), pidfile, inheritance.facts["log"], Notifier()))
    try:
        return asyncio.run(supervisor.run(lambda error: None, (channel, inheritance)))
    finally:
        pidfile.release()       # removes the file only if it names this process
