"""Throwaway network namespaces for tests, benchmarks and the demo.

Names carry the pid and random octets so parallel runs cannot collide; the context
managers delete what they created on every exit path, failures included. Every
namespace made here is remembered by its identity (the inode behind
``/proc/PID/ns/net``), so a test run can find the processes it left in them
(:func:`processes_in_ours`) without looking at any other process on the host.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import subprocess
from collections.abc import Iterator

from pesigitg.ebpf.attach import XDP_FLAGS_DRV_MODE, ifindex, set_xdp
from pesigitg.ebpf.obj import BPF_PROG_TYPES
from pesigitg.ebpf.program import load_program
from pesigitg.errors import os_error

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# The namespaces this process made: their inodes outlive their names.
_CREATED: set[int] = set()


def unique_name(prefix: str = "pesi") -> str:
    """A namespace name no parallel run can pick: prefix, pid, random octets."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")
    return result.stdout


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise os_error(ctypes.get_errno(), "entering a network namespace")


def add_namespace(name: str) -> None:
    """``ip netns add name``, remembered as one of ours (see :func:`processes_in_ours`)."""
    ip("netns", "add", name)
    _CREATED.add(os.stat(f"/var/run/netns/{name}").st_ino)


def processes_in_ours() -> set[int]:
    """Processes in a network namespace this process made, named or deleted since: what
    a test started there (daemons, their workers and successors, BGP speakers), and
    nothing else on the host."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino in _CREATED:
                    found.add(int(entry))
            except OSError:
                continue            # gone, or a kernel thread
    return found


@contextlib.contextmanager
def namespace(prefix: str = "pesi") -> Iterator[str]:
    """A new network namespace, deleted afterwards (with everything inside it)."""
    name = unique_name(prefix)
    add_namespace(name)
    try:
        ip("link", "set", "lo", "up", ns=name)
        yield name
    finally:
        ip("netns", "del", name, check=False)


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the calling thread inside ``ns`` (netlink, sockets, BPF attach) and come back."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)


def veth_pair(ns: str, a: str, b: str, peer_ns: str | None = None) -> None:
    """veth ``a`` in ``ns`` and ``b`` in ``peer_ns`` (default: the same), both up."""
    ip("link", "add", a, "type", "veth", "peer", "name", b, ns=ns)
    if peer_ns and peer_ns != ns:
        ip("link", "set", b, "netns", peer_ns, ns=ns)
    ip("link", "set", a, "up", ns=ns)
    ip("link", "set", b, "up", ns=peer_ns or ns)


def mac_of(ns: str, dev: str) -> bytes:
    """The MAC of ``dev`` in ``ns`` (sysfs shows the caller's namespace, so ask ip)."""
    link = json.loads(ip("-j", "link", "show", "dev", dev, ns=ns))[0]
    return bytes.fromhex(link["address"].replace(":", ""))


# r0 = XDP_PASS; exit
_XDP_PASS = bytes([0xB7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])


def receive_xdp_tx(ns: str, dev: str) -> None:
    """Let veth ``dev`` in ``ns`` receive what its peer sends with XDP_TX: a veth
    takes such frames only if it runs an XDP program itself, so attach one that
    passes everything on. It stays attached while the device lives (the
    namespace's removal takes both)."""
    program = load_program(BPF_PROG_TYPES["xdp"], _XDP_PASS, "GPL", "pass")
    try:
        with inside(ns):
            set_xdp(ifindex(dev), program.fd, XDP_FLAGS_DRV_MODE,
                    f"attaching an XDP_PASS program to {dev}")
    finally:
        program.close()
