"""Loading a whole object: BTF, maps (BTF-style and global data), relocations, programs."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from pesigitg.ebpf.btf import Kind, MapDefinition
from pesigitg.ebpf.maps import Map, MapType
from pesigitg.ebpf.obj import BpfObject, ObjectError, ProgramSection, read_object
from pesigitg.ebpf.program import Program, load_btf, load_program

__all__ = ["LoadedObject", "load_object"]

BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2
BPF_F_RDONLY_PROG = 1 << 7
LD_IMM64 = 0x18
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


def _create_data_map(loaded: LoadedObject, section: str, contents: bytes, size: int) -> Map:
    obj = loaded.obj
    datasec = obj.btf.find(Kind.DATASEC, section) if obj.btf is not None else None
    definition = MapDefinition(_data_map_name(obj, section), MapType.ARRAY, 4, size, 1,
                               BPF_F_RDONLY_PROG if section == ".rodata" else 0,
                               0, datasec.id if datasec is not None else 0)
    m = Map.create(definition, loaded.btf_fd if datasec is not None else 0)
    if contents:
        m.update(bytes(4), contents.ljust(size, b"\0"))
    if section == ".rodata":
        m.freeze()
    return m


def _relocate(prog: ProgramSection, loaded: LoadedObject) -> bytes:
    insns = bytearray(prog.insns)
    for rel in prog.relocations:
        off = rel.insn * 8
        code, regs, offset, imm = _INSN.unpack_from(insns, off)
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


def load_object(path: str | Path) -> LoadedObject:
    """Load every map and program of ``path`` into the kernel."""
    obj = read_object(path)
    loaded = LoadedObject(Path(path), obj)
    try:
        if obj.btf is not None:
            loaded.btf_fd = load_btf(bytes(obj.btf.raw))
        for definition in obj.maps:
            loaded.maps[definition.name] = Map.create(definition, loaded.btf_fd
                                                      if loaded.btf_fd >= 0 else 0)
        for section, (contents, size) in obj.data.items():
            loaded.maps[section] = _create_data_map(loaded, section, contents, size)
        for section, prog in obj.programs.items():
            loaded.programs[section] = load_program(prog.prog_type, _relocate(prog, loaded),
                                                    obj.license, prog.name)
    except BaseException:
        loaded.close()
        raise
    return loaded
