"""BTF (BPF Type Format) reading and the fix-ups the kernel needs before loading it.

Format: linux/btf.h and Documentation/bpf/btf.rst. We read what the loader needs:
type sizes, the BTF-style ``.maps`` definitions, enums (counter names) and DATASECs,
whose sizes and variable offsets clang leaves for the loader to fill in.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = ["Btf", "BtfError", "BtfType", "Kind", "MapDefinition", "function_ids"]

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")


class Kind:
    """``BTF_KIND_*`` from linux/btf.h."""
    INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
    VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
    FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19


# Octets of kind-specific data after the common header: (fixed, per vlen entry).
_EXTRA = {
    Kind.INT: (4, 0), Kind.ARRAY: (12, 0), Kind.STRUCT: (0, 12), Kind.UNION: (0, 12),
    Kind.ENUM: (0, 8), Kind.FUNC_PROTO: (0, 8), Kind.VAR: (4, 0), Kind.DATASEC: (0, 12),
    Kind.DECL_TAG: (4, 0), Kind.ENUM64: (0, 12),
}
BTF_FUNC_EXTERN = 2            # a FUNC's linkage (its vlen field)
_MODIFIERS = {Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG}


class BtfError(ValueError):
    """The object's BTF is malformed or does not describe what we need."""


@dataclass
class BtfType:
    id: int
    kind: int
    name: str
    vlen: int
    size_or_type: int
    offset: int          # of the common header within the type section
    members: list[tuple[str, int, int]] = field(default_factory=list)
    """STRUCT/UNION: (name, type, bit offset); ENUM: (name, value, 0);
    DATASEC: ("", var type, offset) with the size in a parallel list."""
    sizes: list[int] = field(default_factory=list)
    array: tuple[int, int, int] | None = None  # (elem type, index type, nelems)


@dataclass
class MapDefinition:
    """A BTF-style map from the ``.maps`` section."""
    name: str
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    key_type_id: int
    value_type_id: int


class Btf:
    """Parsed ``.BTF`` section, kept as raw octets too so it can be patched and loaded."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) < _HEADER.size:
            raise BtfError("BTF section is shorter than its header")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
            _HEADER.unpack_from(raw)
        if magic != BTF_MAGIC:
            raise BtfError(f"BTF magic is {magic:#x}, expected {BTF_MAGIC:#x} (little endian)")
        if version != 1:
            raise BtfError(f"BTF version {version} is not supported")
        self.raw = bytearray(raw)
        self._types_start = hdr_len + type_off
        self._types_end = self._types_start + type_len
        self._strings = bytes(raw[hdr_len + str_off: hdr_len + str_off + str_len])
        if self._types_end > len(raw) or hdr_len + str_off + str_len > len(raw):
            raise BtfError("BTF type or string section runs past the end of .BTF")
        self.types: list[BtfType | None] = [None]  # id 0 is void
        self._parse_types()

    def string(self, offset: int) -> str:
        end = self._strings.find(b"\0", offset)
        if offset >= len(self._strings) or end < 0:
            raise BtfError(f"BTF string offset {offset} is out of range")
        return self._strings[offset:end].decode()

    def _parse_types(self) -> None:
        pos = self._types_start
        while pos < self._types_end:
            name_off, info, size_or_type = _TYPE.unpack_from(self.raw, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            t = BtfType(len(self.types), kind, self.string(name_off), vlen, size_or_type, pos)
            data = pos + _TYPE.size
            fixed, per = _EXTRA.get(kind, (0, 0))
            if kind == Kind.ARRAY:
                t.array = struct.unpack_from("<III", self.raw, data)
            elif kind in (Kind.STRUCT, Kind.UNION, Kind.DATASEC):
                for i in range(vlen):
                    a, b, c = struct.unpack_from("<III", self.raw, data + 12 * i)
                    if kind == Kind.DATASEC:
                        t.members.append(("", a, b))
                        t.sizes.append(c)
                    else:
                        t.members.append((self.string(a), b, c))
            elif kind == Kind.ENUM:
                for i in range(vlen):
                    name_off_m, value = struct.unpack_from("<Ii", self.raw, data + 8 * i)
                    t.members.append((self.string(name_off_m), value, 0))
            elif kind > Kind.ENUM64:
                raise BtfError(f"BTF type {t.id} has unknown kind {kind}")
            self.types.append(t)
            pos = data + fixed + per * vlen
        if pos != self._types_end:
            raise BtfError("BTF type section ends inside a type")

    # -- queries -------------------------------------------------------------------------

    def type(self, type_id: int) -> BtfType:
        if not 0 < type_id < len(self.types):
            raise BtfError(f"BTF type id {type_id} is out of range")
        t = self.types[type_id]
        assert t is not None
        return t

    def find(self, kind: int, name: str) -> BtfType | None:
        for t in self.types[1:]:
            if t is not None and t.kind == kind and t.name == name:
                return t
        return None

    def strip_modifiers(self, type_id: int) -> int:
        while type_id and self.type(type_id).kind in _MODIFIERS:
            type_id = self.type(type_id).size_or_type
        return type_id

    def size(self, type_id: int) -> int:
        """Size in octets of a type (through typedefs, modifiers and arrays)."""
        t = self.type(self.strip_modifiers(type_id))
        if t.kind in (Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.DATASEC,
                      Kind.FLOAT, Kind.ENUM64):
            return t.size_or_type
        if t.kind == Kind.PTR:
            return 8
        if t.kind == Kind.ARRAY:
            assert t.array is not None
            return self.size(t.array[0]) * t.array[2]
        if t.kind == Kind.VAR:
            return self.size(t.size_or_type)
        raise BtfError(f"BTF type {t.id} ({t.name or 'anonymous'}) has no size")

    def enum(self, name: str) -> dict[str, int]:
        t = self.find(Kind.ENUM, name)
        if t is None:
            raise BtfError(f"enum {name} is not in the object's BTF")
        return {member: value for member, value, _ in t.members}

    def map_definitions(self) -> list[MapDefinition]:
        """Maps declared BTF-style in the ``.maps`` DATASEC, in declaration order."""
        sec = self.find(Kind.DATASEC, ".maps")
        if sec is None:
            return []
        return [self._map_definition(self.type(var_id)) for _, var_id, _ in sec.members]

    def _map_definition(self, var: BtfType) -> MapDefinition:
        if var.kind != Kind.VAR:
            raise BtfError(f".maps entry {var.id} is not a variable")
        struct_t = self.type(self.strip_modifiers(var.size_or_type))
        if struct_t.kind != Kind.STRUCT:
            raise BtfError(f"map {var.name}: definition is not a struct")
        values = {"type": 0, "max_entries": 0, "map_flags": 0}
        sizes = {"key": 0, "value": 0}
        type_ids = {"key": 0, "value": 0}
        for member, member_type, _ in struct_t.members:
            ptr = self.type(self.strip_modifiers(member_type))
            if ptr.kind != Kind.PTR:
                raise BtfError(f"map {var.name}: member {member} is not a pointer")
            target = self.strip_modifiers(ptr.size_or_type)
            if member in values:
                # __uint(name, N) is `int (*name)[N]`: the value is the array length.
                arr = self.type(target)
                if arr.kind != Kind.ARRAY or arr.array is None:
                    raise BtfError(f"map {var.name}: {member} is not declared with __uint")
                values[member] = arr.array[2]
            elif member in sizes:
                sizes[member] = self.size(target)
                type_ids[member] = ptr.size_or_type
            elif member in ("key_size", "value_size"):
                arr = self.type(target)
                assert arr.array is not None
                sizes[member[:-5]] = arr.array[2]
            else:
                raise BtfError(f"map {var.name}: unsupported member {member}")
        return MapDefinition(var.name, values["type"], sizes["key"], sizes["value"],
                             values["max_entries"], values["map_flags"],
                             type_ids["key"], type_ids["value"])

    # -- fix-ups before BPF_BTF_LOAD ----------------------------------------------------

    def fixup_datasec(self, section: str, size: int, symbols: dict[str, int]) -> None:
        """Write a DATASEC's size and its variables' offsets (from the ELF symbols)."""
        sec = self.find(Kind.DATASEC, section)
        if sec is None:
            return
        struct.pack_into("<I", self.raw, sec.offset + 8, size)
        sec.size_or_type = size
        for i, (_, var_id, _) in enumerate(sec.members):
            var = self.type(var_id)
            if var.name not in symbols:
                raise BtfError(f"{section}: variable {var.name} has no symbol")
            offset = symbols[var.name]
            struct.pack_into("<I", self.raw, sec.offset + 12 + 12 * i + 4, offset)
            sec.members[i] = ("", var_id, offset)

    def hide_externs(self) -> None:
        """What the kernel refuses in a program's BTF, made inert in place (the same
        record sizes, so no type id moves): each extern function (``__ksym``, linkage
        extern) becomes a pointer to void, and the ``.ksyms`` DATASEC listing them an
        anonymous struct of those pointers. The calls are relocated against the
        kernel's own BTF, not against these."""
        for t in self.types[1:]:
            if t is not None and t.kind == Kind.FUNC and t.vlen == BTF_FUNC_EXTERN:
                _TYPE.pack_into(self.raw, t.offset, 0, Kind.PTR << 24, 0)
        sec = self.find(Kind.DATASEC, ".ksyms")
        if sec is not None:
            _TYPE.pack_into(self.raw, sec.offset, 0, Kind.STRUCT << 24 | sec.vlen,
                            8 * sec.vlen)
            for i, (_, member, _) in enumerate(sec.members):
                struct.pack_into("<III", self.raw, sec.offset + 12 + 12 * i, 0, member, 64 * i)


def function_ids(raw: bytes, names: set[str]) -> dict[str, int]:
    """The BTF ids of the FUNCs named ``names`` in ``raw`` (a kernel's BTF), found by
    walking the type records without building them: the kernel's BTF has some 150 000
    types, and a daemon looks up a handful at each start."""
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
        _HEADER.unpack_from(raw)
    if magic != BTF_MAGIC or version != 1:
        raise BtfError("not BTF version 1 (little endian)")
    strings = raw[hdr_len + str_off: hdr_len + str_off + str_len]
    wanted: dict[int, str] = {}
    for name in names:
        start = 0
        while (at := strings.find(b"\0" + name.encode() + b"\0", start)) >= 0:
            wanted[at + 1] = name
            start = at + 1
    found: dict[str, int] = {}
    pos, end, type_id = hdr_len + type_off, hdr_len + type_off + type_len, 1
    while pos < end and len(found) < len(names):
        name_off, info, _ = _TYPE.unpack_from(raw, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == Kind.FUNC and name_off in wanted:
            found.setdefault(wanted[name_off], type_id)
        fixed, per = _EXTRA.get(kind, (0, 0))
        pos += _TYPE.size + fixed + per * vlen
        type_id += 1
    return found
