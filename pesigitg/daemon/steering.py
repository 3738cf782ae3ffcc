"""pesigitg's steering program: the XDP object shipped in the package, its maps and
settings by role.

Map names and the settings variable come from the contract (``bpf/include/
pesigitg_abi.h``, through the fast path), the verdict counters' names from the
object's BTF enum, compiled from the same header; loading checks the object has every
map. The generic part (loading, attaching, links) is ``pesigitg.ebpf.XdpProgram``.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

from pesigitg._fastpath import MAPS, SETTINGS_VAR
from pesigitg.ebpf.loader import LoadedObject, load_object
from pesigitg.ebpf.xdp import XdpProgram, register_xsk

__all__ = ["OBJECT_VARIABLE", "Steering", "installed_object", "shipped_object"]

REASON_ENUM = "pes_xdp_reason"
REASON_PREFIX = "PES_XDP_"
REASON_COUNT = "PES_XDP_REASONS"
OBJECT_VARIABLE = "PESIGITG_XDP_OBJECT"
# struct pes_xdp_settings (pesigitg_abi.h): its __u32 members, in order.
SETTING_VIP_FILTER, SETTING_TIER_GENERATION = 0, 1


def shipped_object() -> Path:
    """The prebuilt XDP object inside the installed package."""
    return Path(str(resources.files("pesigitg") / "bpf" / "pesigitg.bpf.o"))


def installed_object() -> Path:
    """The object the daemon loads: the shipped one, or the file ``$PESIGITG_XDP_OBJECT``
    names (a developer's build, and the upgrade tests)."""
    override = os.environ.get(OBJECT_VARIABLE)
    return Path(override) if override else shipped_object()


class Steering(XdpProgram):
    """The loaded steering program. Close it (or use ``with``) to release its fds;
    closing does not detach: call :meth:`detach` first (the daemon does on exit)."""

    def __init__(self, loaded: LoadedObject) -> None:
        super().__init__(loaded)
        try:
            self.reasons = {name[len(REASON_PREFIX):].lower(): value
                            for name, value in self.btf_enum(REASON_ENUM).items()
                            if name != REASON_COUNT}
            missing = sorted(set(MAPS.values()) - set(loaded.maps))
            if missing:
                raise ValueError(f"{loaded.path}: no map {', '.join(missing)}: the object was "
                                 "built from another version of pesigitg_abi.h")
            self._settings_offset = self.global_offset(".bss", SETTINGS_VAR)
        except (KeyError, ValueError):
            loaded.close()
            raise

    @classmethod
    def load(cls, path: str | Path | None = None, reuse: Mapping[str, int] | None = None,
             programs: Mapping[str, int] | None = None,
             programs_digest: str | None = None) -> Steering:
        """Load ``path`` (default: :func:`installed_object`); see XdpProgram.load."""
        return cls(load_object(path or installed_object(), reuse, programs, programs_digest))

    # -- what it steers --------------------------------------------------------------------

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
        self._set_setting(SETTING_VIP_FILTER, int(on))

    def tier_generation(self) -> int:
        """The kernel tier's generation the program reads (daemon/tier.py)."""
        return self._setting(SETTING_TIER_GENERATION) & 1

    def set_tier_generation(self, generation: int) -> None:
        self._set_setting(SETTING_TIER_GENERATION, generation & 1)

    def _setting(self, index: int) -> int:
        bss = self.map(".bss")
        value = bss.lookup(bytes(4)) or bytes(bss.value_size)
        return int(struct.unpack_from("<I", value, self._settings_offset + 4 * index)[0])

    def _set_setting(self, index: int, number: int) -> None:
        # One __u32 of struct pes_xdp_settings; the program reads each as a whole word.
        bss = self.map(".bss")
        value = bytearray(bss.lookup(bytes(4)) or bytes(bss.value_size))
        struct.pack_into("<I", value, self._settings_offset + 4 * index, number)
        bss.update(bytes(4), bytes(value))

    def register_socket(self, queue: int, fd: int) -> None:
        """Put the AF_XDP socket ``fd`` into the XSKMAP slot of RX queue ``queue``."""
        register_xsk(self.map(MAPS["XSKS"]), queue, fd)

    def counters(self) -> dict[str, int]:
        """Verdict counters summed over CPUs, by reason name."""
        table = self.map(MAPS["COUNTERS"])
        return {name: table.sum_per_cpu(struct.pack("<I", index))
                for name, index in self.reasons.items()}
