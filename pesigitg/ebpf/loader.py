"""Loading a whole object: BTF, maps (BTF-style and global data), relocations, programs.

A restarted daemon passes what the old process created (by fd): maps that still fit
the object's definitions are reused with their contents, and the programs when the
object is the one they were loaded from.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pesigitg.ebpf.btf import Kind, MapDefinition
from pesigitg.ebpf.kernel_btf import kernel_function
from pesigitg.ebpf.maps import Map, MapType
from pesigitg.ebpf.obj import BpfObject, ObjectError, ProgramSection, read_object
from pesigitg.ebpf.program import Program, load_btf, load_program

__all__ = ["LoadedObject", "load_object"]

BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2
BPF_F_RDONLY_PROG = 1 << 7
LD_IMM64 = 0x18
CALL = 0x85
BPF_PSEUDO_KFUNC_CALL = 2
_INSN = struct.Struct("<BBhi")


@dataclass
class LoadedObject:
    """Kernel objects made from one ELF file; :meth:`close` releases every fd."""
    path: Path
    obj: BpfObject
    maps: dict[str, Map] = field(default_factory=dict)
    programs: dict[str, Program] = field(default_factory=dict)
    btf_fd: int = -1

    def close(self) -> None:
        for prog in self.programs.values():
            prog.close()
        for m in self.maps.values():
            m.close()
        if self.btf_fd >= 0:
            os.close(self.btf_fd)
            self.btf_fd = -1

    def __enter__(self) -> LoadedObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _data_map_name(obj: BpfObject, section: str) -> str:
    # Same convention as libbpf: object-name prefix and the section, e.g. pesigitg.bss
    stem = obj.path.name.split(".")[0][:8]
    return f"{stem}{section}"


def _create_data_map(loaded: LoadedObject, section: str, contents: bytes, size: int,
                     reuse: Map | None) -> Map:
    obj = loaded.obj
    datasec = obj.btf.find(Kind.DATASEC, section) if obj.btf is not None else None
    definition = MapDefinition(_data_map_name(obj, section), MapType.ARRAY, 4, size, 1,
                               BPF_F_RDONLY_PROG if section == ".rodata" else 0,
                               0, datasec.id if datasec is not None else 0)
    initial = contents.ljust(size, b"\0")
    # .bss holds run-time state: keep it. Initialised data only if it is unchanged.
    if reuse is not None and reuse.matches(definition) and (
            section == ".bss" or reuse.lookup(bytes(4)) == initial):
        return reuse
    m = Map.create(definition, loaded.btf_fd if datasec is not None else 0)
    if contents:
        m.update(bytes(4), initial)
    if section == ".rodata":
        m.freeze()
    return m


def _relocate(prog: ProgramSection, loaded: LoadedObject) -> bytes:
    insns = bytearray(prog.insns)
    for rel in prog.relocations:
        off = rel.insn * 8
        code, regs, offset, imm = _INSN.unpack_from(insns, off)
        if code == CALL and rel.section == "":
            # A kernel function: its BTF id in vmlinux (offset 0: not a module's).
            _INSN.pack_into(insns, off, code, (regs & 0x0F) | BPF_PSEUDO_KFUNC_CALL << 4, 0,
                            kernel_function(rel.symbol))
            continue
        if code != LD_IMM64:
            raise ObjectError(f"{prog.section}: relocation for {rel.symbol} at instruction "
                              f"{rel.insn} is not on an ld_imm64")
        if rel.section == ".maps":
            target = loaded.maps.get(rel.symbol)
            if target is None:
                raise ObjectError(f"{prog.section}: map {rel.symbol} is not defined in .maps")
            _INSN.pack_into(insns, off, code, (regs & 0x0F) | BPF_PSEUDO_MAP_FD << 4, offset,
                            target.fd)
        elif rel.section in loaded.maps:
            # Global data: map value address; the second half holds the offset.
            target = loaded.maps[rel.section]
            _INSN.pack_into(insns, off, code, (regs & 0x0F) | BPF_PSEUDO_MAP_VALUE << 4,
                            offset, target.fd)
            c2, r2, o2, _ = _INSN.unpack_from(insns, off + 8)
            _INSN.pack_into(insns, off + 8, c2, r2, o2, rel.value + imm)
        else:
            raise ObjectError(f"{prog.section}: relocation against {rel.symbol} in section "
                              f"{rel.section or '?'} is not supported")
    return bytes(insns)


def load_object(path: str | Path, reuse: Mapping[str, int] | None = None,
                programs: Mapping[str, int] | None = None,
                programs_digest: str | None = None) -> LoadedObject:
    """Load every map and program of ``path`` into the kernel.

    ``reuse`` offers existing maps by name (fds, duplicated here): each is used where it
    fits the object's definition, else a new map is made. ``programs`` offers loaded
    programs by section, used instead of loading when the object read now has
    ``programs_digest`` (the digest of the object they were loaded from; then every map
    must have been reused).
    """
    obj = read_object(path)
    if programs_digest is not None and programs_digest != obj.digest:
        programs = None
    loaded = LoadedObject(Path(path), obj)
    offered: dict[str, Map] = {}
    created: set[str] = set()
    try:
        for name, fd in (reuse or {}).items():
            offered[name] = Map.adopt(fd, name)
        if obj.btf is not None:
            obj.btf.hide_externs()
            loaded.btf_fd = load_btf(bytes(obj.btf.raw))
        for definition in obj.maps:
            old = offered.get(definition.name)
            if old is not None and old.matches(definition):
                loaded.maps[definition.name] = offered.pop(definition.name)
            else:
                loaded.maps[definition.name] = Map.create(definition, loaded.btf_fd
                                                          if loaded.btf_fd >= 0 else 0)
                created.add(definition.name)
        for section, (contents, size) in obj.data.items():
            m = _create_data_map(loaded, section, contents, size, offered.get(section))
            if m is offered.get(section):
                offered.pop(section)
            else:
                created.add(section)
            loaded.maps[section] = m
        if programs and created:
            raise ObjectError(f"{path}: programs can be reused only with all their maps")
        for section, prog in obj.programs.items():
            if programs and section in programs:
                loaded.programs[section] = Program(os.dup(programs[section]), prog.name,
                                                   prog.prog_type)
            else:
                loaded.programs[section] = load_program(prog.prog_type,
                                                        _relocate(prog, loaded), obj.license,
                                                        prog.name)
    except BaseException:
        loaded.close()
        raise
    finally:
        for unused in offered.values():
            unused.close()
    return loaded
