"""Run a command under the restrictions a systemd service unit puts on its process, for
the tests of contrib/systemd/ on a machine whose init is not systemd.

What is applied, with the same kernel mechanisms systemd uses: ``User=`` (with
``--user`` to stand in for a user this host lacks) and its primary group,
``CapabilityBoundingSet=``, ``AmbientCapabilities=``, ``NoNewPrivileges=``,
``SystemCallFilter=`` (groups expanded by ``systemd-analyze syscall-filter``, numbers
from the kernel's x86-64 table), ``SystemCallErrorNumber=`` and
``RestrictAddressFamilies=``. Mount namespaces (``ProtectSystem=`` and the like) are
not: they restrict files, which the tests give the daemon explicitly.

    python -m pesigitg.testing.systemd_unit [--user NAME] UNIT COMMAND...
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import subprocess
import sys
from pathlib import Path

from pesigitg.daemon.privileges import (
    PR_SET_NO_NEW_PRIVS,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
    apply_filter,
    prctl,
    resolve_account,
    switch_user,
    system_call_filter,
)

__all__ = ["confine_as", "service_settings", "system_calls"]

UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
CAPABILITY_H = Path("/usr/include/linux/capability.h")
SOCKET_H = Path("/usr/include/x86_64-linux-gnu/bits/socket.h")


def service_settings(unit: Path) -> dict[str, list[str]]:
    """Every ``Key=Value`` of the unit's [Service] section, repeated keys in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _numbers() -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+) (\d+)", UNISTD.read_text())}


def _expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        out |= _expand(groups[name], groups) if name.startswith("@") else {name}
    return out


def _groups() -> dict[str, list[str]]:
    listing = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True,
                             text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in listing.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def system_calls(lines: list[str]) -> set[int]:
    """The x86-64 numbers a unit's ``SystemCallFilter=`` lines allow (an allow-list
    first, then ``~`` lines taking calls out of it)."""
    groups, numbers = _groups(), _numbers()
    allowed: set[str] = set()
    denied: set[str] = set()
    for line in lines:
        deny = line.startswith("~")
        (denied if deny else allowed).update(_expand(line.lstrip("~").split(), groups))
    if not allowed:
        raise ValueError("only an allow-list SystemCallFilter= is emulated")
    return {numbers[name] for name in allowed - denied if name in numbers}


def _capabilities(names: list[str]) -> tuple[int, ...]:
    known = {m[1]: int(m[2]) for m in re.finditer(r"#define (CAP_\w+)\s+(\d+)\s*$",
                                                  CAPABILITY_H.read_text(), re.M)}
    return tuple(sorted({known[name] for line in names for name in line.split()}))


def confine_as(unit: Path, user: str | None) -> None:
    """Apply the unit's restrictions to this process (as root)."""
    settings = service_settings(unit)
    ambient = _capabilities(settings.get("AmbientCapabilities", []))
    bounding = _capabilities(settings.get("CapabilityBoundingSet", []))
    if set(ambient) - set(bounding):
        raise ValueError("AmbientCapabilities= outside CapabilityBoundingSet=")
    name = user or settings["User"][-1]
    switch_user(resolve_account(name), keep=ambient)
    if settings.get("NoNewPrivileges", ["no"])[-1] == "yes":
        prctl(PR_SET_NO_NEW_PRIVS, 1, "setting no_new_privs")
    if "SystemCallFilter" in settings:
        code = settings.get("SystemCallErrorNumber", [""])[-1]
        otherwise = (SECCOMP_RET_ERRNO | getattr(errno, code)) if code else \
            SECCOMP_RET_KILL_PROCESS
        families = None
        if "RestrictAddressFamilies" in settings:
            defined = dict(re.findall(r"#define (PF_\w+)\s+(\w+)", SOCKET_H.read_text()))
            known = {"AF" + name[2:]: int(value if value.isdigit() else defined[value])
                     for name, value in defined.items()}
            families = {known[name] for line in settings["RestrictAddressFamilies"]
                        for name in line.split()}
        apply_filter(system_call_filter(system_calls(settings["SystemCallFilter"]),
                                        otherwise, families), "applying the unit's filter")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="systemd_unit")
    parser.add_argument("unit", type=Path)
    parser.add_argument("--user", help="run as this user instead of the unit's User=")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    confine_as(args.unit, args.user)
    os.execvp(args.command[0], args.command)


if __name__ == "__main__":
    sys.exit(main())
