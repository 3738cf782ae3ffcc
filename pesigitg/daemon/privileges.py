"""Least privilege: the supervisor as a dedicated user with five capabilities, the
workers with none, under a seccomp allow-list.

The supervisor needs CAP_NET_ADMIN (XDP, links, netlink changes), CAP_BPF (programs,
maps, BTF), CAP_PERFMON (the verifier lets only such a program move a packet pointer
by a variable amount, as IPv4 options and IPv6 extension headers need: Spectre v1
mitigations), CAP_NET_RAW (AF_XDP sockets, SO_BINDTODEVICE) and CAP_IPC_LOCK (a UMEM is
locked memory, 8 MiB a queue, beyond common RLIMIT_MEMLOCK settings) for as long as it
runs: a restart may load an upgraded program and make sockets, and its successor must
inherit them, so they are kept ambient. A worker, once it holds its socket and its
queue, needs nothing but its rings, its pipe and memory: it drops every capability,
sets no_new_privs and confines itself to the system calls of its loop, so a frame
that subverted the parser could do little more than forward frames.

Raw system calls through ctypes (capset(2), prctl(2), seccomp(2)); the allow-list
holds x86-64 numbers, as the packet path is x86-64 only.
"""

from __future__ import annotations

import ctypes
import errno
import grp
import os
import platform
import pwd
import struct
from dataclasses import dataclass

from pesigitg.errors import (
    CAP_BPF,
    CAP_IPC_LOCK,
    CAP_NET_ADMIN,
    CAP_NET_RAW,
    CAP_PERFMON,
    os_error,
)

__all__ = ["SUPERVISOR_CAPS", "Account", "apply_filter", "capability_sets", "confine_worker",
           "lose_privileges", "prctl", "resolve_account", "switch_user", "system_call_filter"]

SUPERVISOR_CAPS = (CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON, CAP_IPC_LOCK)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# linux/prctl.h, linux/capability.h, linux/seccomp.h, linux/filter.h, linux/audit.h
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAPABILITY_VERSION_3 = 0x20080522
SYS_CAPSET = 126
SYS_SECCOMP = 317
SYS_SOCKET = 41
SECCOMP_DATA_ARG0 = 16          # offsetof(struct seccomp_data, args[0]), low half
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x06

# What a worker's loop, its pipe and the interpreter under them call (x86-64 numbers):
# reading and writing its pipe and eventfd, poll, sendto (the TX kick), memory, threads'
# futexes, signals, clocks, and exit. No open, socket, exec, fork, kill or bpf.
WORKER_SYSCALLS = {
    "read": 0, "write": 1, "close": 3, "fstat": 5, "poll": 7, "lseek": 8, "mmap": 9,
    "mprotect": 10, "munmap": 11, "brk": 12, "rt_sigaction": 13, "rt_sigprocmask": 14,
    "rt_sigreturn": 15, "pread64": 17, "readv": 19, "writev": 20, "select": 23,
    "sched_yield": 24, "mremap": 25, "madvise": 28, "nanosleep": 35, "getpid": 39,
    "sendto": 44, "recvfrom": 45, "sendmsg": 46, "recvmsg": 47, "exit": 60, "fcntl": 72,
    "sigaltstack": 131, "gettid": 186, "futex": 202, "restart_syscall": 219,
    "clock_gettime": 228, "clock_getres": 229, "clock_nanosleep": 230, "exit_group": 231,
    "tgkill": 234, "newfstatat": 262, "pselect6": 270, "ppoll": 271,
    "set_robust_list": 273, "getrandom": 318, "statx": 332, "rseq": 334,
}


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _check(rc: int, doing: str) -> None:
    if rc < 0:
        raise os_error(ctypes.get_errno(), doing)


def prctl(option: int, arg: int, doing: str, arg3: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(arg3), 0, 0), doing)


def _capset(caps: tuple[int, ...], doing: str) -> None:
    bits = 0
    for cap in caps:
        bits |= 1 << cap
    data = (_CapData * 2)()
    for i in range(2):
        word = (bits >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = data[i].inheritable = word
    header = _CapHeader(CAPABILITY_VERSION_3, 0)
    _check(_libc.syscall(SYS_CAPSET, ctypes.byref(header), data), doing)


def capability_sets(pid: int | str = "self") -> dict[str, int]:
    """CapEff, CapPrm, CapInh, CapBnd, CapAmb, NoNewPrivs and Seccomp of a process."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name.startswith("Cap"):
                out[name] = int(value.strip(), 16)
            elif name in ("NoNewPrivs", "Seccomp"):
                out[name] = int(value.strip())
    return out


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def resolve_account(user: str) -> Account:
    """A user by name or number (ValueError naming it when there is none)."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"no user {user!r} on this host") from None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def resolve_group(group: str) -> int:
    try:
        return grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no group {group!r} on this host") from None


def switch_user(account: Account, keep: tuple[int, ...] = SUPERVISOR_CAPS) -> None:
    """As root: become ``account`` with only ``keep`` (effective, permitted, inheritable
    and ambient, so a daemon started for a restart has them too) and a bounding set
    that allows nothing else."""
    if os.geteuid() != 0:
        raise OSError(errno.EPERM, f"switching to user {account.name} needs pesigitgd to "
                      "start as root")
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in keep:
            prctl(PR_CAPBSET_DROP, cap, f"dropping capability {cap} from the bounding set")
    prctl(PR_SET_KEEPCAPS, 1, "keeping capabilities across the user switch")
    os.initgroups(account.name, account.gid)
    os.setresgid(account.gid, account.gid, account.gid)
    os.setresuid(account.uid, account.uid, account.uid)
    _capset(keep, f"keeping {len(keep)} capabilities as user {account.name}")
    for cap in keep:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, "raising an ambient capability", cap)
    prctl(PR_SET_KEEPCAPS, 0, "resetting keep-capabilities")


def lose_privileges() -> None:
    """Every capability gone, for good (no_new_privs: no exec can give one back). Per
    thread: call it in the thread that starts the others."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, "clearing ambient capabilities")
    _capset((), "dropping every capability")
    prctl(PR_SET_NO_NEW_PRIVS, 1, "setting no_new_privs")


def system_call_filter(allowed: set[int], otherwise: int,
                       socket_families: set[int] | None = None) -> bytes:
    """A classic BPF seccomp program: x86-64 only (anything else is killed), the
    ``allowed`` call numbers pass, the rest get ``otherwise``. With ``socket_families``,
    socket(2) passes only for those families (others fail with EAFNOSUPPORT), as
    systemd's RestrictAddressFamilies= does. Every jump is short (a conditional jump
    reaches 255 instructions at most): each match is followed by its own return."""
    allow, kill = (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW), (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS)
    program = [(BPF_LD_W_ABS, 0, 0, 4), (BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64), kill,
               (BPF_LD_W_ABS, 0, 0, 0), (BPF_JGE_K, 0, 1, X32_SYSCALL_BIT), kill]
    if socket_families is not None:
        families = sorted(socket_families)
        program += [(BPF_JEQ_K, 0, 2 * len(families) + 2, SYS_SOCKET),
                    (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARG0)]
        for family in families:
            program += [(BPF_JEQ_K, 0, 1, family), allow]
        program.append((BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EAFNOSUPPORT))
    for number in sorted(allowed):
        program += [(BPF_JEQ_K, 0, 1, number), allow]
    program.append((BPF_RET_K, 0, 0, otherwise))
    ins = struct.Struct("<HBBI")
    return b"".join(ins.pack(*instruction) for instruction in program)


def apply_filter(program: bytes, doing: str) -> None:
    """Install a seccomp program on every thread of this process (needs no_new_privs
    or CAP_SYS_ADMIN)."""
    if platform.machine() != "x86_64":
        raise OSError(errno.ENOSYS, "the system-call filters are for x86-64")
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    _check(_libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC,
                         ctypes.byref(fprog)), doing)


def confine_worker(allowed: dict[str, int] = WORKER_SYSCALLS) -> None:
    """Apply the worker's allow-list to every thread of this process; anything else
    fails with EPERM."""
    apply_filter(system_call_filter(set(allowed.values()), SECCOMP_RET_ERRNO | errno.EPERM),
                 "applying the worker's system-call filter")
