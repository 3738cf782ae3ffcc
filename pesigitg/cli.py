"""Console entry points ``pesigitgd`` and ``pesigitg-ctl``.

The supervisor and the status client arrive with the daemon issue; until then both
commands answer ``--version``, check the CPU and say plainly that they cannot run yet.
"""

from __future__ import annotations

import argparse
import sys

from pesigitg import __version__

NOT_YET = "{prog}: not yet implemented in pesigitg {version} (the daemon is being built)"


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-V", "--version", action="version", version=f"{prog} {__version__}")
    return parser


def daemon_main(argv: list[str] | None = None) -> int:
    _parser("pesigitgd", "QUIC-aware layer-4 load balancer daemon").parse_known_args(argv)
    from pesigitg._fastpath.cid import aesni_supported

    if not aesni_supported():
        print("pesigitgd: this CPU has no AES-NI instructions, which pesigitg needs to "
              "decode encrypted QUIC-LB connection IDs; run it on a CPU with AES-NI",
              file=sys.stderr)
        return 1
    print(NOT_YET.format(prog="pesigitgd", version=__version__), file=sys.stderr)
    return 2


def ctl_main(argv: list[str] | None = None) -> int:
    _parser("pesigitg-ctl", "query a running pesigitgd").parse_known_args(argv)
    print(NOT_YET.format(prog="pesigitg-ctl", version=__version__), file=sys.stderr)
    return 2
