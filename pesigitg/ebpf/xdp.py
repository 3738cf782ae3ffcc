"""``XdpProgram``: pesigitg's steering program, its maps, and where it is attached.

Map names and the settings variable come from the contract (``bpf/include/
pesigitg_abi.h``, through the fast path), the counter names from the object's BTF
enum, compiled from the same header; loading checks the object has every map.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import struct
from collections.abc import Iterable
from enum import IntEnum
from importlib import resources
from pathlib import Path

from pesigitg._fastpath import MAPS, SETTINGS_VAR
from pesigitg.ebpf import attach as nl
from pesigitg.ebpf.btf import Kind
from pesigitg.ebpf.loader import LoadedObject, load_object
from pesigitg.ebpf.maps import Map
from pesigitg.ebpf.program import Program
from pesigitg.ebpf.syscall import prog_name_by_id
from pesigitg.errors import os_error

__all__ = ["Verdict", "XdpAttachError", "XdpProgram", "register_xsk", "shipped_object"]

log = logging.getLogger("pesigitg.ebpf")

SECTION = "xdp"
REASON_ENUM = "pes_xdp_reason"
REASON_PREFIX = "PES_XDP_"
REASON_COUNT = "PES_XDP_REASONS"
_XDP_MD = struct.Struct("<IIIIII")  # struct xdp_md, as BPF_PROG_TEST_RUN's ctx


class Verdict(IntEnum):
    """``enum xdp_action``."""
    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4


class XdpAttachError(OSError):
    """Attaching would replace a program that is not ours, or the mode is refused."""


def register_xsk(xsks: Map, queue: int, fd: int) -> None:
    """Put the AF_XDP socket ``fd`` into the XSKMAP slot of RX queue ``queue``."""
    if not 0 <= queue < xsks.max_entries:
        raise ValueError(f"queue {queue} is outside 0..{xsks.max_entries - 1}")
    xsks.update(struct.pack("<I", queue), struct.pack("<I", fd))


def shipped_object() -> Path:
    """The prebuilt XDP object inside the installed package."""
    return Path(str(resources.files("pesigitg") / "bpf" / "pesigitg.bpf.o"))


class XdpProgram:
    """The loaded steering program. Close it (or use ``with``) to release its fds.

    Closing does not detach: call :meth:`detach` first (the daemon does on exit).
    """

    def __init__(self, loaded: LoadedObject) -> None:
        self._loaded = loaded
        try:
            self.program: Program = loaded.programs[SECTION]
            btf = loaded.obj.btf
            if btf is None:
                raise ValueError(f"{loaded.path}: no BTF, cannot read the counter names")
            reasons = btf.enum(REASON_ENUM)
            self.reasons = {name[len(REASON_PREFIX):].lower(): value
                            for name, value in reasons.items() if name != REASON_COUNT}
            missing = sorted(set(MAPS.values()) - set(loaded.maps))
            if missing:
                raise ValueError(f"{loaded.path}: no map {', '.join(missing)}: the object was "
                                 "built from another version of pesigitg_abi.h")
            bss = btf.find(Kind.DATASEC, ".bss")
            offsets = {btf.type(var).name: off for _, var, off in (bss.members if bss else [])}
            if SETTINGS_VAR not in offsets:
                raise ValueError(f"{loaded.path}: no {SETTINGS_VAR} variable in .bss")
            self._settings_offset = offsets[SETTINGS_VAR]
        except (KeyError, ValueError):
            loaded.close()
            raise
        self.ifindex: int | None = None
        self.mode: str | None = None

    @classmethod
    def load(cls, path: str | Path | None = None) -> XdpProgram:
        """Load the object at ``path`` (default: the one shipped in the package)."""
        return cls(load_object(path or shipped_object()))

    def close(self) -> None:
        self._loaded.close()

    def __enter__(self) -> XdpProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(self, name: str) -> Map:
        return self._loaded.maps[name]

    @property
    def maps(self) -> dict[str, Map]:
        return dict(self._loaded.maps)

    @property
    def fd(self) -> int:
        return self.program.fd

    # -- configuration -------------------------------------------------------------------

    def set_ports(self, ports: Iterable[int]) -> None:
        """Steer exactly these UDP destination ports (reconciled in place)."""
        wanted = set()
        for port in ports:
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"port {port!r} is not a UDP port number (1..65535)")
            wanted.add(port)
        table = self.map(MAPS["PORTS"])
        if len(wanted) > table.max_entries:
            raise ValueError(f"{len(wanted)} ports given, at most {table.max_entries} "
                             "can be steered")
        for key in list(table.keys()):
            if struct.unpack("<H", key)[0] not in wanted:
                table.delete(key)
        for port in wanted:
            table.update(struct.pack("<H", port), b"\x01")

    def ports(self) -> set[int]:
        return {struct.unpack("<H", key)[0] for key in self.map(MAPS["PORTS"]).keys()}

    def set_vips(self, addrs: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address]
                 ) -> None:
        """Steer only datagrams to these addresses; an empty list means any address."""
        v4: set[bytes] = set()
        v6: set[bytes] = set()
        for addr in addrs:
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                raise ValueError(f"VIP {addr!r} is not an IPv4 or IPv6 address") from None
            (v4 if ip.version == 4 else v6).add(ip.packed)
        maps = ((MAPS["VIPS4"], v4, 4), (MAPS["VIPS6"], v6, 6))
        for name, wanted, family in maps:
            if len(wanted) > self.map(name).max_entries:
                raise ValueError(f"{len(wanted)} IPv{family} VIPs given, at most "
                                 f"{self.map(name).max_entries}")
        if not v4 and not v6:
            # Filter off first, so no datagram is refused while the maps empty.
            self._set_vip_filter(False)
        for name, wanted, _ in maps:
            table = self.map(name)
            for key in list(table.keys()):
                if key not in wanted:
                    table.delete(key)
            for key in wanted:
                table.update(key, b"\x01")
        if v4 or v6:
            self._set_vip_filter(True)

    def vips(self) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return {ipaddress.ip_address(key) for name in (MAPS["VIPS4"], MAPS["VIPS6"])
                for key in self.map(name).keys()}

    def _set_vip_filter(self, on: bool) -> None:
        bss = self.map(".bss")
        value = bytearray(bss.lookup(bytes(4)) or bytes(bss.value_size))
        struct.pack_into("<I", value, self._settings_offset, int(on))
        bss.update(bytes(4), bytes(value))

    @property
    def xsks(self) -> Map:
        """The XSKMAP: one AF_XDP socket per RX queue."""
        return self.map(MAPS["XSKS"])

    def register_socket(self, queue: int, fd: int) -> None:
        """Put the AF_XDP socket ``fd`` into the XSKMAP slot of RX queue ``queue``."""
        register_xsk(self.xsks, queue, fd)

    def counters(self) -> dict[str, int]:
        """Verdict counters summed over CPUs, by reason name."""
        table = self.map(MAPS["COUNTERS"])
        return {name: table.sum_per_cpu(struct.pack("<I", index))
                for name, index in self.reasons.items()}

    # -- attach / detach -----------------------------------------------------------------

    def attach(self, ifname: str, mode: str = "native", force: bool = False) -> str:
        """Attach to ``ifname``; returns the mode used ("native" or "generic").

        Native mode falls back to generic with a warning. A program already there is
        replaced only if it is ours (same program name) or ``force`` is set.
        """
        if mode not in nl.XDP_MODES:
            raise ValueError(f"XDP mode {mode!r} is not one of {', '.join(nl.XDP_MODES)}")
        index = nl.ifindex(ifname)
        current = nl.attached_xdp(index)
        flags = 0
        if current is not None:
            name = prog_name_by_id(current.prog_id)
            if name != self.program.name[:15] and not force:
                raise XdpAttachError(
                    errno.EBUSY, f"interface {ifname} already has XDP program {name!r} "
                    f"(id {current.prog_id}, {current.mode} mode), which is not pesigitg's; "
                    "detach it first or force the replacement")
            log.warning("replacing XDP program %r (id %d) on %s", name, current.prog_id, ifname)
        else:
            flags |= nl.XDP_FLAGS_UPDATE_IF_NOEXIST
        modes = [mode] + (["generic"] if mode == "native" else [])
        for i, attempt in enumerate(modes):
            try:
                nl.set_xdp(index, self.fd, flags | nl.XDP_MODES[attempt],
                           f"attaching XDP to {ifname} in {attempt} mode")
            except OSError as exc:
                if i + 1 < len(modes) and exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                    log.warning("%s: native XDP refused (%s); falling back to generic mode, "
                                "which is much slower", ifname, exc.strerror)
                    continue
                if exc.errno == errno.EEXIST:
                    raise XdpAttachError(exc.errno, f"{exc.strerror} (a program appeared "
                                         "while attaching)") from None
                raise
            self.ifindex, self.mode = index, attempt
            return attempt
        raise AssertionError("unreachable")

    def detach(self) -> None:
        """Remove this program from the interface it was attached to, if it is still there."""
        if self.ifindex is None or self.mode is None:
            return
        index, mode = self.ifindex, self.mode
        self.ifindex = self.mode = None
        current = nl.attached_xdp(index)
        if current is None or current.prog_id != self.program.id:
            log.warning("XDP program on interface %d is no longer ours; leaving it", index)
            return
        # REPLACE with EXPECTED_FD removes exactly our program, never a newer one.
        nl.set_xdp(index, -1, nl.XDP_FLAGS_REPLACE | nl.XDP_MODES[mode],
                   f"detaching XDP from interface {index}", expected_fd=self.fd)

    # -- testing -------------------------------------------------------------------------

    def test_run(self, frame: bytes, *, ifindex: int = 0, queue: int = 0
                 ) -> tuple[Verdict, bytes]:
        """Run the program on ``frame`` (BPF_PROG_TEST_RUN): ``(verdict, frame_out)``.

        ``ifindex``/``queue`` set the frame's ingress interface and RX queue; both
        must exist when given.
        """
        ctx = None
        if ifindex:
            ctx = _XDP_MD.pack(0, len(frame), 0, ifindex, queue, 0)
        elif queue:
            raise os_error(errno.EINVAL, "test-running XDP", " (queue needs an ifindex)")
        result = self.program.test_run(frame, ctx=ctx)
        return Verdict(result.retval), result.data
