"""``pesigitg-ctl``: the operator's tool for running pesigitgd daemons.

    pesigitg-ctl [-i IFACE | -s SOCKET] [--json] COMMAND ...

Output is for people by default, JSON with ``--json``. Exit status: 0 when the
command did what it says (for ``health``: the daemon forwards; for ``whoami``: the
CID routes to a server), 1 when it did not or the daemon could not be asked (the
reason on stderr), 2 for a usage error. The commands are rows of one table
(ctl/commands.py); the parser is built from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pesigitg import __version__
from pesigitg.ctl.client import DaemonError
from pesigitg.ctl.commands import COMMANDS, EXIT_FAIL
from pesigitg.ctl.target import Usage
from pesigitg.paths import RUNTIME_DIR

__all__ = ["ctl_main", "ctl_parser"]

EXIT_USAGE = 2
DEFAULT_COMMAND = "health"


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
    for command in COMMANDS:
        parser = sub.add_parser(command.name, parents=[common], help=command.help,
                                description=command.help)
        for argument in command.arguments:
            parser.add_argument(*argument.flags, **argument.options)
    return p


def ctl_main(argv: list[str] | None = None) -> int:
    parser = ctl_parser()
    args = parser.parse_args(argv)
    name = args.command or DEFAULT_COMMAND
    try:
        return next(c for c in COMMANDS if c.name == name).run(args)
    except Usage as exc:
        parser.print_usage(sys.stderr)
        print(f"pesigitg-ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DaemonError as exc:
        print(f"pesigitg-ctl: {exc}", file=sys.stderr)
        return EXIT_FAIL
