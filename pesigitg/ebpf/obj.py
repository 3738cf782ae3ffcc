"""Reading a BPF ELF object (clang -target bpf) with pyelftools.

Produces what the loader needs and nothing more: program sections with their
instructions and ``ld_imm64`` relocations, the BTF, map definitions from ``.maps``,
global-data sections (.data, .rodata, .bss) and the license.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from pesigitg.ebpf.btf import Btf, MapDefinition

__all__ = ["BPF_PROG_TYPES", "BpfObject", "ObjectError", "ProgramSection", "Relocation",
           "read_object"]

EM_BPF = 247
R_BPF_64_64 = 1        # ld_imm64 of a map or global
R_BPF_64_32 = 10       # a call; here only of an extern: a kernel function (kfunc)
BPF_INSN_SIZE = 8
DATA_SECTIONS = (".data", ".rodata", ".bss")

# Section name (up to the first '/') → enum bpf_prog_type.
BPF_PROG_TYPES = {"xdp": 6, "socket": 1, "tc": 3, "classifier": 3, "syscall": 31}


class ObjectError(ValueError):
    """The object file is not one this loader can load, with the reason."""


@dataclass
class Relocation:
    insn: int          # index of the ld_imm64 (or, for a kfunc, call) instruction
    symbol: str
    section: str       # section the symbol lives in (.maps, .data, ...; "": an extern)
    value: int         # symbol value: offset within that section


@dataclass
class ProgramSection:
    section: str
    name: str          # the function symbol, used as the kernel's prog_name
    prog_type: int
    insns: bytes
    relocations: list[Relocation] = field(default_factory=list)


@dataclass
class BpfObject:
    path: Path
    license: str
    programs: dict[str, ProgramSection]
    maps: list[MapDefinition]
    data: dict[str, tuple[bytes, int]]   # section → (initial contents, size)
    btf: Btf | None
    digest: str = ""                     # SHA-256 of the file as it was read


def read_object(path: str | Path) -> BpfObject:
    """The object at ``path``, read once: ``digest`` is the SHA-256 of exactly the octets
    parsed (a file replaced afterwards changes nothing here)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        elf = ELFFile(io.BytesIO(data))
    except Exception as exc:  # pyelftools raises its own ELFError and struct errors
        raise ObjectError(f"{path}: not an ELF file ({exc})") from exc
    if elf["e_machine"] not in ("EM_BPF", EM_BPF):
        raise ObjectError(f"{path}: ELF machine is {elf['e_machine']}, not BPF")
    obj = _read(path, elf)
    obj.digest = hashlib.sha256(data).hexdigest()
    return obj


def _read(path: Path, elf: ELFFile) -> BpfObject:
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        raise ObjectError(f"{path}: no symbol table")
    license_sec = elf.get_section_by_name("license")
    if license_sec is None:
        raise ObjectError(f"{path}: no license section (SEC(\"license\"))")
    license = license_sec.data().split(b"\0")[0].decode()

    btf_sec = elf.get_section_by_name(".BTF")
    btf = Btf(btf_sec.data()) if btf_sec is not None else None
    data: dict[str, tuple[bytes, int]] = {}
    for name in DATA_SECTIONS:
        sec = elf.get_section_by_name(name)
        if sec is not None and sec["sh_size"]:
            contents = b"" if sec["sh_type"] == "SHT_NOBITS" else sec.data()
            data[name] = (contents, sec["sh_size"])
    if btf is not None:
        symbols = {s.name: s["st_value"] for s in symtab.iter_symbols()
                   if s["st_info"]["type"] == "STT_OBJECT"}
        for name in (".maps", *DATA_SECTIONS, "license"):
            sec = elf.get_section_by_name(name)
            if sec is not None:
                btf.fixup_datasec(name, sec["sh_size"], symbols)
    programs = _programs(path, elf, symtab)
    _relocations(path, elf, symtab, programs)
    if not programs:
        raise ObjectError(f"{path}: no program sections")
    maps = btf.map_definitions() if btf is not None else []
    return BpfObject(path, license, programs, maps, data, btf)


def _programs(path: Path, elf: ELFFile, symtab: SymbolTableSection
              ) -> dict[str, ProgramSection]:
    """Every executable section with code: one program each, of a known type."""
    programs: dict[str, ProgramSection] = {}
    for index, sec in enumerate(elf.iter_sections()):
        if sec["sh_type"] != "SHT_PROGBITS" or not sec["sh_flags"] & 0x4 or not sec["sh_size"]:
            continue
        prog_type = BPF_PROG_TYPES.get(sec.name.split("/")[0])
        if prog_type is None:
            if sec.name == ".text":
                raise ObjectError(f"{path}: .text holds BPF-to-BPF functions, which this "
                                  "loader does not link; mark helpers __always_inline")
            raise ObjectError(f"{path}: section {sec.name} is not a known program type")
        funcs = [s.name for s in symtab.iter_symbols()
                 if s["st_shndx"] == index and s["st_info"]["type"] == "STT_FUNC"]
        if len(funcs) != 1:
            raise ObjectError(f"{path}: section {sec.name} holds {len(funcs)} functions, "
                              "expected exactly one")
        programs[sec.name] = ProgramSection(sec.name, funcs[0], prog_type, sec.data())
    return programs


def _relocations(path: Path, elf: ELFFile, symtab: SymbolTableSection,
                 programs: dict[str, ProgramSection]) -> None:
    """The map and data references of each program (R_BPF_64_64 only)."""
    sections = {i: s.name for i, s in enumerate(elf.iter_sections())}
    for rel_sec in elf.iter_sections():
        if not isinstance(rel_sec, RelocationSection):
            continue
        target = sections.get(rel_sec["sh_info"])
        if target not in programs:
            continue
        for rel in rel_sec.iter_relocations():
            sym = symtab.get_symbol(rel["r_info_sym"])
            if rel["r_info_type"] == R_BPF_64_32 and sym["st_shndx"] == "SHN_UNDEF":
                programs[target].relocations.append(Relocation(
                    rel["r_offset"] // BPF_INSN_SIZE, sym.name, "", 0))
                continue
            if rel["r_info_type"] != R_BPF_64_64:
                raise ObjectError(f"{path}: relocation type {rel['r_info_type']} against "
                                  f"{sym.name} in {target} is not supported")
            programs[target].relocations.append(Relocation(
                rel["r_offset"] // BPF_INSN_SIZE, sym.name,
                sections.get(sym["st_shndx"], ""), sym["st_value"]))
