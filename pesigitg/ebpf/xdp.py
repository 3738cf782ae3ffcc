"""``XdpProgram``: an XDP program loaded from an object, its maps, and where it is
attached (through a BPF link, or netlink where the kernel has none).

Generic: what a program's maps and variables mean is its user's business (pesigitg's
steering program is ``pesigitg.daemon.steering.Steering``). Nothing here imports
anything of pesigitg but the loader and the error model.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from collections.abc import Mapping
from enum import IntEnum
from pathlib import Path
from typing import Self

from pesigitg.ebpf import attach as nl
from pesigitg.ebpf import syscall as sc
from pesigitg.ebpf.btf import Kind
from pesigitg.ebpf.loader import LoadedObject, load_object
from pesigitg.ebpf.maps import Map
from pesigitg.ebpf.program import Program
from pesigitg.ebpf.syscall import prog_name_by_id
from pesigitg.errors import os_error

__all__ = ["Verdict", "XdpAttachError", "XdpProgram", "register_xsk"]

log = logging.getLogger("pesigitg.ebpf")

SECTION = "xdp"
_XDP_MD = struct.Struct("<IIIIII")  # struct xdp_md, as BPF_PROG_TEST_RUN's ctx
ENOTSUPP = 524                      # the kernel's own "not supported" (include/linux/errno.h)


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


class XdpProgram:
    """The loaded steering program. Close it (or use ``with``) to release its fds.

    Closing does not detach: call :meth:`detach` first (the daemon does on exit).
    """

    def __init__(self, loaded: LoadedObject, section: str = SECTION) -> None:
        self._loaded = loaded
        try:
            self.program: Program = loaded.programs[section]
        except KeyError:
            loaded.close()
            raise ValueError(f"{loaded.path}: no program in section {section!r}") from None
        self.ifindex: int | None = None
        self.mode: str | None = None
        self.attach_kind: str | None = None     # "link" or "netlink"
        self.link_fd = -1

    @classmethod
    def load(cls, path: str | Path, reuse: Mapping[str, int] | None = None,
             programs: Mapping[str, int] | None = None,
             programs_digest: str | None = None) -> XdpProgram:
        """Load the object at ``path``; ``reuse`` and ``programs`` offer a previous
        process's maps and programs by fd, the programs only if the object read now is
        the one they came from (``programs_digest``; see
        :func:`pesigitg.ebpf.load_object`)."""
        return cls(load_object(path, reuse, programs, programs_digest))

    @property
    def object_path(self) -> Path:
        return self._loaded.path

    @property
    def programs(self) -> dict[str, Program]:
        """Every program of the object, by section (the XDP one is ``program``)."""
        return self._loaded.programs

    @property
    def digest(self) -> str:
        """SHA-256 of the object as it was read when this program was loaded."""
        return self._loaded.obj.digest

    def btf_enum(self, name: str) -> dict[str, int]:
        """An enum of the object's BTF (ValueError when it has no BTF)."""
        btf = self._loaded.obj.btf
        if btf is None:
            raise ValueError(f"{self._loaded.path}: no BTF")
        return btf.enum(name)

    def global_offset(self, section: str, name: str) -> int:
        """Where global ``name`` lies in its data section's map value (from BTF, not an
        assumed declaration order)."""
        btf = self._loaded.obj.btf
        datasec = btf.find(Kind.DATASEC, section) if btf is not None else None
        offsets = {btf.type(var).name: off for _, var, off in datasec.members} \
            if btf is not None and datasec is not None else {}
        if name not in offsets:
            raise ValueError(f"{self._loaded.path}: no variable {name} in {section}")
        return offsets[name]

    def close(self) -> None:
        """Release every fd; a link this process alone holds then detaches."""
        if self.link_fd >= 0:
            os.close(self.link_fd)
            self.link_fd = -1
        self._loaded.close()

    def __enter__(self) -> Self:
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

    # -- attach / detach -----------------------------------------------------------------

    def attach(self, ifname: str, mode: str = "native", force: bool = False,
               kind: str = "link") -> str:
        """Attach to ``ifname``; returns the mode used ("native" or "generic").

        ``kind`` "link" attaches through a BPF link (kernel >= 5.9) held by this
        process and the processes it hands the fd to, so the program detaches on its
        own when the last of them exits; where the kernel has no XDP links it falls
        back to "netlink", an attachment that outlives the process. ``attach_kind``
        tells which was used. Native mode falls back to generic with a warning. A
        program already there is replaced only if it is ours (same program name,
        attached through netlink: a leftover) or ``force`` is set.
        """
        if mode not in nl.XDP_MODES:
            raise ValueError(f"XDP mode {mode!r} is not one of {', '.join(nl.XDP_MODES)}")
        if kind not in ("link", "netlink"):
            raise ValueError(f"attach kind {kind!r} is not link or netlink")
        index = nl.ifindex(ifname)
        current = nl.attached_xdp(index)
        if current is not None:
            name = prog_name_by_id(current.prog_id)
            if name != self.program.name[:15] and not force:
                raise XdpAttachError(
                    errno.EBUSY, f"interface {ifname} already has XDP program {name!r} "
                    f"(id {current.prog_id}, {current.mode} mode), which is not pesigitg's; "
                    "detach it first or force the replacement")
        modes = [mode] + (["generic"] if mode == "native" else [])
        if kind == "link":
            if current is not None:
                self._remove_leftover(ifname, index, current)
            for i, attempt in enumerate(modes):
                try:
                    self.link_fd = sc.bpf(sc.BPF_LINK_CREATE, sc.LinkCreateAttr(
                        prog_fd=self.fd, target_ifindex=index, attach_type=sc.BPF_XDP,
                        flags=nl.XDP_MODES[attempt]),
                        f"attaching XDP to {ifname} in {attempt} mode through a BPF link")
                except OSError as exc:
                    if exc.errno == errno.EBUSY:
                        raise XdpAttachError(exc.errno, f"{exc.strerror} (another process "
                                             "holds an XDP link on the interface)") from None
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, ENOTSUPP):
                        raise
                    if i + 1 < len(modes):
                        log.warning("%s: native XDP refused through a link (%s); trying "
                                    "generic mode, which is much slower", ifname, exc.strerror)
                        continue
                    log.warning("%s: XDP links refused (%s): attaching through netlink; a "
                                "crash would then leave the program attached", ifname,
                                exc.strerror)
                    break
                self.ifindex, self.mode, self.attach_kind = index, attempt, "link"
                return attempt
        return self._attach_netlink(ifname, index, modes, current is not None)

    def _remove_leftover(self, ifname: str, index: int, current: nl.AttachedXdp) -> None:
        """Our program left attached through netlink (a crash of a netlink-mode daemon):
        remove it, so the link can be made. One held by a link is another process's."""
        fd = sc.bpf(sc.BPF_PROG_GET_FD_BY_ID, sc.GetIdAttr(id=current.prog_id),
                    f"opening XDP program {current.prog_id} on {ifname}")
        try:
            nl.set_xdp(index, -1, nl.XDP_FLAGS_REPLACE | nl.XDP_MODES.get(current.mode, 0),
                       f"removing the XDP program left on {ifname}", expected_fd=fd)
        except OSError as exc:
            raise XdpAttachError(exc.errno or errno.EBUSY,
                                 f"{ifname} runs pesigitg's XDP program (id {current.prog_id})"
                                 " through a BPF link another process holds: is another "
                                 "pesigitgd running there?") from None
        finally:
            os.close(fd)
        log.warning("removed the XDP program (id %d) a previous pesigitgd left on %s",
                    current.prog_id, ifname)

    def _attach_netlink(self, ifname: str, index: int, modes: list[str], replace: bool) -> str:
        flags = 0 if replace else nl.XDP_FLAGS_UPDATE_IF_NOEXIST
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
            if replace:
                log.warning("replaced the XDP program on %s", ifname)
            self.ifindex, self.mode, self.attach_kind = index, attempt, "netlink"
            return attempt
        raise AssertionError("unreachable")

    def detach(self) -> None:
        """Remove this program from the interface it was attached to, if it is still there."""
        if self.ifindex is None or self.mode is None:
            return
        index, mode = self.ifindex, self.mode
        self.ifindex = self.mode = self.attach_kind = None
        if self.link_fd >= 0:
            # Detach even while other processes still hold the link (a worker, say).
            try:
                sc.bpf(sc.BPF_LINK_DETACH, sc.LinkDetachAttr(link_fd=self.link_fd),
                       f"detaching the XDP link from interface {index}")
            finally:
                os.close(self.link_fd)
                self.link_fd = -1
            return
        current = nl.attached_xdp(index)
        if current is None or current.prog_id != self.program.id:
            log.warning("XDP program on interface %d is no longer ours; leaving it", index)
            return
        # REPLACE with EXPECTED_FD removes exactly our program, never a newer one.
        nl.set_xdp(index, -1, nl.XDP_FLAGS_REPLACE | nl.XDP_MODES[mode],
                   f"detaching XDP from interface {index}", expected_fd=self.fd)

    def adopt_attachment(self, ifindex: int, mode: str, kind: str, link_fd: int,
                         old_prog_fd: int) -> None:
        """Take over where another process attached (a restart hands its fds over).
        When this object's program is not the running one (an upgrade), it replaces it
        atomically: a link update, or a netlink replace of exactly the old program."""
        if kind == "link":
            self.link_fd = os.dup(link_fd)
        self.ifindex, self.mode, self.attach_kind = ifindex, mode, kind
        if self.program.id == sc.prog_info(old_prog_fd).id:
            return
        if kind == "link":
            sc.bpf(sc.BPF_LINK_UPDATE, sc.LinkUpdateAttr(
                link_fd=self.link_fd, new_prog_fd=self.fd, flags=sc.BPF_F_REPLACE,
                old_prog_fd=old_prog_fd), f"replacing the XDP program on interface {ifindex}")
        else:
            nl.set_xdp(ifindex, self.fd, nl.XDP_FLAGS_REPLACE | nl.XDP_MODES[mode],
                       f"replacing the XDP program on interface {ifindex}",
                       expected_fd=old_prog_fd)

    def restore(self) -> None:
        """Put this program back on its attachment if another replaced it meanwhile (a
        successor that updated the link, then died)."""
        if self.ifindex is None or self.mode is None:
            return
        if self.link_fd >= 0:
            if sc.link_prog_id(self.link_fd) != self.program.id:
                sc.bpf(sc.BPF_LINK_UPDATE, sc.LinkUpdateAttr(
                    link_fd=self.link_fd, new_prog_fd=self.fd, flags=0, old_prog_fd=0),
                    f"putting the XDP program back on interface {self.ifindex}")
                log.warning("put this daemon's XDP program back on interface %d",
                            self.ifindex)
            return
        current = nl.attached_xdp(self.ifindex)
        if current is None or current.prog_id != self.program.id:
            nl.set_xdp(self.ifindex, self.fd, nl.XDP_MODES[self.mode],
                       f"putting the XDP program back on interface {self.ifindex}")
            log.warning("put this daemon's XDP program back on interface %d", self.ifindex)

    def release(self) -> None:
        """Forget the attachment without detaching (another process has taken it over)."""
        if self.link_fd >= 0:
            os.close(self.link_fd)
            self.link_fd = -1
        self.ifindex = self.mode = self.attach_kind = None

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
