"""Loading one BPF program with the verifier log, and BPF_PROG_TEST_RUN."""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass

from pesigitg.ebpf import syscall as sc
from pesigitg.ebpf.maps import kernel_name

__all__ = ["BPF_F_TEST_XDP_LIVE_FRAMES", "Program", "TestRun", "VerifierError",
           "load_program", "load_btf"]

BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
BPF_F_SLEEPABLE = 1 << 4
BPF_PROG_TYPE_SYSCALL = 31
LOG_SIZE = 16 << 20
XDP_HEADROOM = 256          # XDP_PACKET_HEADROOM: test_run output may grow into it


class VerifierError(OSError):
    """The kernel refused the program; ``log`` holds the verifier's explanation."""

    def __init__(self, err: int, name: str, log: str) -> None:
        tail = "\n".join(log.strip().splitlines()[-20:])
        super().__init__(err, f"the verifier rejected BPF program {name}: "
                              f"{os.strerror(err)}\n{tail}")
        self.log = log


@dataclass
class TestRun:
    __test__ = False  # not a pytest class
    retval: int
    data: bytes
    duration_ns: int


def load_btf(raw: bytes) -> int:
    """BPF_BTF_LOAD; returns the BTF fd. The kernel's BTF log is in the error."""
    data = ctypes.create_string_buffer(bytes(raw), len(raw))
    log = ctypes.create_string_buffer(1 << 16)
    attr = sc.BtfLoadAttr(btf=sc.addr(data), btf_size=len(raw), btf_log_buf=sc.addr(log),
                          btf_log_size=len(log), btf_log_level=1)
    try:
        return sc.bpf(sc.BPF_BTF_LOAD, attr, "loading the object's BTF")
    except OSError as exc:
        text = log.value.decode(errors="replace").strip()
        if text and exc.errno != errno.EPERM:
            raise OSError(exc.errno, f"{exc.strerror}\n{text}") from None
        raise


class Program:
    """A loaded BPF program (the fd closes with :meth:`close`)."""

    def __init__(self, fd: int, name: str, prog_type: int) -> None:
        self.fd = fd
        self.name = name
        self.prog_type = prog_type

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def id(self) -> int:
        """The kernel's program id (what `ip link` and netlink report)."""
        return int(sc.prog_info(self.fd).id)

    def test_run(self, data: bytes, *, repeat: int = 1, ctx: bytes | None = None,
                 flags: int = 0, batch_size: int = 0) -> TestRun:
        """Run the program on ``data`` in the kernel (BPF_PROG_TEST_RUN)."""
        din = ctypes.create_string_buffer(bytes(data), len(data))
        out_size = 0 if flags & BPF_F_TEST_XDP_LIVE_FRAMES else len(data) + XDP_HEADROOM
        dout = ctypes.create_string_buffer(out_size) if out_size else None
        cin = ctypes.create_string_buffer(bytes(ctx), len(ctx)) if ctx else None
        attr = sc.TestRunAttr(prog_fd=self.fd, data_size_in=len(data), data_in=sc.addr(din),
                              data_size_out=out_size, data_out=sc.addr(dout), repeat=repeat,
                              ctx_size_in=len(ctx) if ctx else 0, ctx_in=sc.addr(cin),
                              flags=flags, batch_size=batch_size)
        sc.bpf(sc.BPF_PROG_TEST_RUN, attr, f"test-running BPF program {self.name}")
        out = dout.raw[:attr.data_size_out] if dout is not None else b""
        return TestRun(int(attr.retval), out, int(attr.duration))

    def call(self, ctx: bytes) -> tuple[int, bytes]:
        """Run a syscall program (BPF_PROG_TEST_RUN with only a context): its return
        value and the context as the program left it."""
        cin = ctypes.create_string_buffer(bytes(ctx), len(ctx))
        attr = sc.TestRunAttr(prog_fd=self.fd, ctx_size_in=len(ctx), ctx_in=sc.addr(cin))
        sc.bpf(sc.BPF_PROG_TEST_RUN, attr, f"running BPF program {self.name}")
        return int(attr.retval), cin.raw[:len(ctx)]


def load_program(prog_type: int, insns: bytes, license: str, name: str,
                 btf_fd: int = 0) -> Program:
    """BPF_PROG_LOAD; a verifier rejection raises :class:`VerifierError` with the log."""
    if len(insns) % 8:
        raise ValueError(f"program {name}: {len(insns)} octets is not whole instructions")
    code = ctypes.create_string_buffer(bytes(insns), len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    # A syscall program is sleepable (it may call what sleeps, as creating a crypto
    # context does): the kernel wants the flag.
    flags = BPF_F_SLEEPABLE if prog_type == BPF_PROG_TYPE_SYSCALL else 0
    attr = sc.ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=sc.addr(code),
                           license=sc.addr(lic), prog_name=kernel_name(name),
                           prog_flags=flags, prog_btf_fd=0)
    doing = f"loading BPF program {name}"
    try:
        fd = sc.bpf(sc.BPF_PROG_LOAD, attr, doing)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EINVAL, errno.E2BIG, errno.ENOSPC):
            raise
        # Load again with the log on: it costs time only when something is wrong.
        log = ctypes.create_string_buffer(LOG_SIZE)
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log), sc.addr(log)
        try:
            fd = sc.bpf(sc.BPF_PROG_LOAD, attr, doing)
        except OSError as again:
            raise VerifierError(again.errno or exc.errno or errno.EINVAL, name,
                                log.value.decode(errors="replace")) from None
    return Program(fd, name, prog_type)
