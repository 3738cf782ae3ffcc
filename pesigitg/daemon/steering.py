"""pesigitg's steering program: the XDP object shipped in the package, its maps and
settings by role.

Map names and the settings variable come from the contract (``bpf/include/
pesigitg_abi.h``, through the fast path), the verdict counters' names from the
object's BTF enum, compiled from the same header; loading checks the object has every
map. The generic part (loading, attaching, links) is ``pesigitg.ebpf.XdpProgram``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import struct
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

from pesigitg._fastpath import MAPS, SETTINGS_VAR
from pesigitg.ebpf.kernel_btf import kernel_functions
from pesigitg.ebpf.loader import LoadedObject, load_object
from pesigitg.ebpf.obj import ObjectError
from pesigitg.ebpf.xdp import XdpProgram, register_xsk

__all__ = ["OBJECT_VARIABLE", "Steering", "crypto_object", "installed_object",
           "kernel_has_crypto", "shipped_object"]

log = logging.getLogger("pesigitg")

REASON_ENUM = "pes_xdp_reason"
REASON_PREFIX = "PES_XDP_"
REASON_COUNT = "PES_XDP_REASONS"
OBJECT_VARIABLE = "PESIGITG_XDP_OBJECT"
# The crypto variant's keys' map, its syscall program, and the kfuncs it calls
# (bpf/pesigitg.bpf.c, PES_TIER_CRYPTO).
TIER_KEYS, TIER_KEY_PROGRAM = "tier_keys", "syscall"
CRYPTO_KFUNCS = ("bpf_crypto_ctx_create", "bpf_crypto_ctx_release", "bpf_crypto_decrypt",
                 "bpf_crypto_encrypt", "bpf_dynptr_from_xdp", "bpf_dynptr_adjust")
# struct pes_xdp_settings (pesigitg_abi.h): its __u32 members, in order.
SETTING_VIP_FILTER, SETTING_TIER_GENERATION = 0, 1


def shipped_object() -> Path:
    """The prebuilt XDP object inside the installed package."""
    return Path(str(resources.files("pesigitg") / "bpf" / "pesigitg.bpf.o"))


def crypto_object() -> Path:
    """The shipped object's variant with keyed configs in the kernel tier (the
    bpf_crypto kfuncs; built with clang-19)."""
    return shipped_object().with_name("pesigitg-crypto.bpf.o")


def kernel_has_crypto() -> bool:
    """Whether this kernel has every kfunc the crypto variant calls."""
    try:
        return kernel_functions(CRYPTO_KFUNCS)
    except ObjectError:
        return False


def installed_object() -> Path:
    """The object the daemon loads: the file ``$PESIGITG_XDP_OBJECT`` names (a developer's
    build, and the upgrade tests), else the crypto variant when the kernel has its
    kfuncs, else the shipped one (a kernel without them loads and runs, keyed configs
    then stay with the workers)."""
    override = os.environ.get(OBJECT_VARIABLE)
    if override:
        return Path(override)
    return crypto_object() if crypto_object().exists() and kernel_has_crypto() \
        else shipped_object()


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
        """Load ``path`` (default: :func:`installed_object`); see XdpProgram.load. Should
        the crypto variant not load (a kernel that has the kfuncs but refuses the
        program), the shipped one is loaded instead, and the log says why: keyed configs
        then stay with the workers, the daemon runs."""
        chosen = path or installed_object()
        try:
            return cls(load_object(chosen, reuse, programs, programs_digest))
        except (ObjectError, OSError) as exc:
            if path is not None or chosen != crypto_object():
                raise
            log.warning("the XDP program's crypto variant did not load (%s): keyed "
                        "QUIC-LB configs stay with the workers", str(exc).splitlines()[0])
            return cls(load_object(shipped_object(), reuse, programs, programs_digest))

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

    # -- the kernel tier's keys (the crypto variant: daemon/tier.py) ---------------------

    @property
    def crypto(self) -> bool:
        """Whether this program can decrypt (the object built with the bpf_crypto kfuncs)."""
        return TIER_KEYS in self.maps and TIER_KEY_PROGRAM in self.programs

    def set_tier_key(self, index: int, key: bytes | None) -> None:
        """A context for AES-128 ``key`` in slot ``index`` of the keys' map (None: empty
        the slot), made in the kernel by the syscall program: the key passes through
        its argument, and is in no map."""
        args = struct.pack("<16sIIi", key or bytes(16), index, int(key is None), 0)
        _, out = self.programs[TIER_KEY_PROGRAM].call(args)
        err = struct.unpack_from("<i", out, 24)[0]
        if err:
            raise OSError(-err, f"creating the kernel tier's AES context {index}: "
                                f"{os.strerror(-err)}")

    def register_socket(self, queue: int, fd: int) -> None:
        """Put the AF_XDP socket ``fd`` into the XSKMAP slot of RX queue ``queue``."""
        register_xsk(self.map(MAPS["XSKS"]), queue, fd)

    def counters(self) -> dict[str, int]:
        """Verdict counters summed over CPUs, by reason name."""
        table = self.map(MAPS["COUNTERS"])
        return {name: table.sum_per_cpu(struct.pack("<I", index))
                for name, index in self.reasons.items()}
