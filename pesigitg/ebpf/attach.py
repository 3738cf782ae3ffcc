"""Attaching and detaching XDP programs over rtnetlink (pyroute2).

Never replaces a program that is not ours unless forced: attach uses
XDP_FLAGS_UPDATE_IF_NOEXIST, detach names the program it expects to remove.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pesigitg.errors import CAP_NET_ADMIN, missing_capability_hint, os_error

__all__ = ["XDP_MODES", "AttachedXdp", "attached_xdp", "ifindex", "set_xdp"]

log = logging.getLogger("pesigitg.ebpf")

# linux/if_link.h
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4
XDP_MODES = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
_ATTACHED_MODES = {1: "native", 2: "generic", 3: "offload", 4: "multi"}


@dataclass
class AttachedXdp:
    prog_id: int
    mode: str


def _netlink_error(exc: NetlinkError, doing: str) -> OSError:
    code = abs(exc.code)
    hint = missing_capability_hint(CAP_NET_ADMIN) if code == errno.EPERM else ""
    return os_error(code, doing, hint)


def ifindex(ifname: str) -> int:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise os_error(errno.ENODEV, f"looking up interface {ifname}", " (no such interface)")
    return int(found[0])


def attached_xdp(index: int) -> AttachedXdp | None:
    """The XDP program on interface ``index``, if any."""
    with IPRoute() as ipr:
        try:
            link = ipr.get_links(index)[0]
        except NetlinkError as exc:
            raise _netlink_error(exc, f"reading interface {index}") from None
    xdp = link.get_attr("IFLA_XDP")
    if xdp is None:
        return None
    prog_id = xdp.get_attr("IFLA_XDP_PROG_ID") or 0
    if not prog_id:
        return None
    mode = xdp.get_attr("IFLA_XDP_ATTACHED")
    return AttachedXdp(prog_id, mode if isinstance(mode, str) else
                       _ATTACHED_MODES.get(mode or 0, "unknown"))


def set_xdp(index: int, fd: int, flags: int, doing: str, expected_fd: int | None = None) -> None:
    """IFLA_XDP on link ``index``: attach ``fd`` (or detach with -1)."""
    attrs: list[tuple[str, int]] = [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]
    if expected_fd is not None:
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    with IPRoute() as ipr:
        try:
            ipr.link("set", index=index, xdp={"attrs": attrs})
        except NetlinkError as exc:
            raise _netlink_error(exc, doing) from None
