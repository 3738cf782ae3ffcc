"""``pesigitg-ctl``: query a running pesigitgd over its status socket."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pesigitg import __version__
from pesigitg.ctl.client import query
from pesigitg.daemon.settings import RUNTIME_DIR

__all__ = ["ctl_main", "ctl_parser"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def ctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pesigitg-ctl", description="Query a running pesigitgd over its status socket.")
    group = p.add_mutually_exclusive_group()
    group.add_argument("-s", "--status-socket", type=Path, help="status socket path")
    group.add_argument("-i", "--interface", help="the daemon's interface: "
                       "/run/pesigitg/pesigitgd-IFACE.sock")
    p.add_argument("what", nargs="?", default="health",
                   help="health (exit 0 while forwarding: ok or degraded; 1 when down), "
                        "stats, config, metrics, or a path like "
                        "/stats; restart (replace the daemon by a new process running the "
                        "installed code, without losing traffic; exit 0 once it runs)")
    p.add_argument("-V", "--version", action="version", version=f"pesigitg-ctl {__version__}")
    return p


def ctl_main(argv: list[str] | None = None) -> int:
    parser = ctl_parser()
    args = parser.parse_args(argv)
    path = args.status_socket or (RUNTIME_DIR / f"pesigitgd-{args.interface}.sock"
                                  if args.interface else only_instance())
    if path is None:
        parser.error("give the status socket (-s PATH) or the daemon's interface "
                     f"(-i IFACE): there is not exactly one {RUNTIME_DIR}/pesigitgd-*.sock")
    request = args.what if args.what.startswith("/") else f"/{args.what}"
    if request == "/restart":
        return _restart(path)
    try:
        answer = query(path, request)
    except OSError as exc:
        print(f"pesigitg-ctl: cannot reach pesigitgd at {path}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_FAIL
    sys.stdout.write(answer)
    if request == "/health":
        # 0 while traffic is forwarded (ok or degraded), 1 when it is not (down).
        try:
            return EXIT_OK if json.loads(answer).get("status") in ("ok", "degraded") \
                else EXIT_FAIL
        except ValueError:
            return EXIT_FAIL
    return EXIT_FAIL if answer.startswith('{"error"') else EXIT_OK


def only_instance() -> Path | None:
    """The status socket of the one pesigitgd on this host, if there is exactly one."""
    sockets = sorted(RUNTIME_DIR.glob("pesigitgd-*.sock"))
    return sockets[0] if len(sockets) == 1 else None


RESTART_TIMEOUT = 150.0     # the daemon bounds each step of a restart at 30 s


def _restart(path: Path) -> int:
    try:
        answer = json.loads(query(path, "/restart", RESTART_TIMEOUT, method="POST"))
    except OSError as exc:
        print(f"pesigitg-ctl: cannot reach pesigitgd at {path}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_FAIL
    except ValueError:
        print("pesigitg-ctl: the daemon's answer is not JSON", file=sys.stderr)
        return EXIT_FAIL
    if not answer.get("restarted"):
        print(f"pesigitg-ctl: {answer.get('error', 'the restart failed')}", file=sys.stderr)
        return EXIT_FAIL
    print(f"restarted: pid {answer['previous_pid']} handed over to pid {answer['pid']}")
    return EXIT_OK
