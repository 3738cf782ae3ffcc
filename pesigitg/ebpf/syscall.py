"""``bpf(2)`` through ctypes: the attribute layouts we use and one checked call.

Layouts follow ``union bpf_attr`` in linux/bpf.h; only the leading fields each
command reads are declared, and the kernel zero-extends shorter attributes.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import platform

from pesigitg.errors import CAP_BPF, CAP_NET_ADMIN, missing_capability_hint, os_error

__all__ = [
    "BPF_BTF_LOAD", "BPF_F_REPLACE", "BPF_LINK_CREATE", "BPF_LINK_DETACH", "BPF_LINK_UPDATE",
    "BPF_MAP_CREATE", "BPF_MAP_DELETE_ELEM", "BPF_MAP_FREEZE", "BPF_MAP_GET_NEXT_KEY",
    "BPF_MAP_LOOKUP_BATCH", "BPF_MAP_LOOKUP_ELEM", "BPF_MAP_UPDATE_ELEM",
    "BPF_OBJ_GET_INFO_BY_FD",
    "BPF_PROG_GET_FD_BY_ID", "BPF_PROG_LOAD", "BPF_PROG_TEST_RUN", "BPF_XDP",
    "BatchAttr", "BtfLoadAttr", "GetIdAttr", "InfoAttr", "LinkCreateAttr", "LinkDetachAttr",
    "LinkInfo", "LinkUpdateAttr", "MapCreateAttr", "MapElemAttr", "MapInfo", "ProgInfo",
    "ProgLoadAttr",
    "TestRunAttr", "addr", "bpf", "link_prog_id", "map_info", "prog_info", "prog_name_by_id",
]

# enum bpf_cmd
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_BTF_LOAD = 18
BPF_MAP_FREEZE = 22
BPF_MAP_LOOKUP_BATCH = 24
BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29
BPF_LINK_DETACH = 34
# enum bpf_attach_type
BPF_XDP = 37
BPF_F_REPLACE = 1 << 2      # link update: only if the link still runs old_prog_fd

_NR_BPF = {"x86_64": 321, "aarch64": 280}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

u32 = ctypes.c_uint32
u64 = ctypes.c_uint64


class MapCreateAttr(ctypes.Structure):
    _fields_ = [("map_type", u32), ("key_size", u32), ("value_size", u32),
                ("max_entries", u32), ("map_flags", u32), ("inner_map_fd", u32),
                ("numa_node", u32), ("map_name", ctypes.c_char * 16), ("map_ifindex", u32),
                ("btf_fd", u32), ("btf_key_type_id", u32), ("btf_value_type_id", u32)]


class MapElemAttr(ctypes.Structure):
    # value doubles as next_key for BPF_MAP_GET_NEXT_KEY
    _fields_ = [("map_fd", u32), ("pad", u32), ("key", u64), ("value", u64), ("flags", u64)]


class BatchAttr(ctypes.Structure):
    # in_batch: the key before the first one wanted (0: from the start); count: in, the
    # room in keys and values; out, how many were copied
    _fields_ = [("in_batch", u64), ("out_batch", u64), ("keys", u64), ("values", u64),
                ("count", u32), ("map_fd", u32), ("elem_flags", u64), ("flags", u64)]


class ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", u32), ("insn_cnt", u32), ("insns", u64), ("license", u64),
                ("log_level", u32), ("log_size", u32), ("log_buf", u64),
                ("kern_version", u32), ("prog_flags", u32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", u32), ("expected_attach_type", u32), ("prog_btf_fd", u32)]


class TestRunAttr(ctypes.Structure):
    __test__ = False  # not a pytest class
    _fields_ = [("prog_fd", u32), ("retval", u32), ("data_size_in", u32),
                ("data_size_out", u32), ("data_in", u64), ("data_out", u64), ("repeat", u32),
                ("duration", u32), ("ctx_size_in", u32), ("ctx_size_out", u32),
                ("ctx_in", u64), ("ctx_out", u64), ("flags", u32), ("cpu", u32),
                ("batch_size", u32), ("pad", u32)]


class BtfLoadAttr(ctypes.Structure):
    _fields_ = [("btf", u64), ("btf_log_buf", u64), ("btf_size", u32), ("btf_log_size", u32),
                ("btf_log_level", u32)]


class LinkCreateAttr(ctypes.Structure):
    _fields_ = [("prog_fd", u32), ("target_ifindex", u32), ("attach_type", u32),
                ("flags", u32)]


class LinkUpdateAttr(ctypes.Structure):
    _fields_ = [("link_fd", u32), ("new_prog_fd", u32), ("flags", u32), ("old_prog_fd", u32)]


class LinkDetachAttr(ctypes.Structure):
    _fields_ = [("link_fd", u32)]


class InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", u32), ("info_len", u32), ("info", u64)]


def addr(obj: ctypes._CData | None) -> int:
    """User-space address of a ctypes object, for the u64 pointer fields."""
    return 0 if obj is None else ctypes.addressof(obj)


def bpf(cmd: int, attr: ctypes.Structure, doing: str) -> int:
    """Call ``bpf(cmd, &attr)``; on failure raise OSError naming ``doing``."""
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise OSError(_errno.ENOSYS, f"{doing}: bpf(2) number unknown on {platform.machine()}")
    rc = _libc.syscall(nr, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if rc < 0:
        err = ctypes.get_errno()
        hint = missing_capability_hint(CAP_BPF, CAP_NET_ADMIN) if err == _errno.EPERM else ""
        raise os_error(err, doing, hint)
    return int(rc)



class ProgInfo(ctypes.Structure):
    """``struct bpf_prog_info`` up to the name."""
    _fields_ = [("type", u32), ("id", u32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", u32), ("xlated_prog_len", u32), ("jited_prog_insns", u64),
                ("xlated_prog_insns", u64), ("load_time", u64), ("created_by_uid", u32),
                ("nr_map_ids", u32), ("map_ids", u64), ("name", ctypes.c_char * 16)]


class MapInfo(ctypes.Structure):
    """``struct bpf_map_info`` up to the name."""
    _fields_ = [("type", u32), ("id", u32), ("key_size", u32), ("value_size", u32),
                ("max_entries", u32), ("map_flags", u32), ("name", ctypes.c_char * 16)]


class LinkInfo(ctypes.Structure):
    """``struct bpf_link_info`` up to the program id."""
    _fields_ = [("type", u32), ("id", u32), ("prog_id", u32)]


class GetIdAttr(ctypes.Structure):
    _fields_ = [("id", u32), ("next_id", u32), ("open_flags", u32)]


def prog_info(fd: int) -> ProgInfo:
    info = ProgInfo()
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=addr(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "reading BPF program info")
    return info


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=addr(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "reading BPF map info")
    return info


def link_prog_id(fd: int) -> int:
    """The id of the program a BPF link runs now."""
    info = LinkInfo()
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=addr(info))
    bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "reading BPF link info")
    return int(info.prog_id)


def prog_name_by_id(prog_id: int) -> str:
    """Name of any loaded program, by id (for telling our program from a foreign one)."""
    fd = bpf(BPF_PROG_GET_FD_BY_ID, GetIdAttr(id=prog_id), f"opening BPF program {prog_id}")
    try:
        return prog_info(fd).name.decode(errors="replace")
    finally:
        os.close(fd)
