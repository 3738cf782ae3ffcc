"""The running kernel's BTF (``/sys/kernel/btf/vmlinux``): what a program's kfunc calls
are relocated against. Read once per process, when a program first needs it."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pesigitg.ebpf.btf import Btf, Kind
from pesigitg.ebpf.obj import ObjectError

__all__ = ["VMLINUX", "MissingKernelFunction", "kernel_function"]

VMLINUX = Path("/sys/kernel/btf/vmlinux")


class MissingKernelFunction(ObjectError):
    """A program calls a kernel function (kfunc) this kernel does not have."""


@cache
def _vmlinux() -> Btf:
    try:
        return Btf(VMLINUX.read_bytes())
    except OSError as exc:
        raise ObjectError(f"cannot read the kernel's BTF ({VMLINUX}): {exc.strerror}; "
                          "kernel functions need CONFIG_DEBUG_INFO_BTF") from None


def kernel_function(name: str) -> int:
    """The BTF id of kernel function ``name`` (MissingKernelFunction if it has none)."""
    found = _vmlinux().find(Kind.FUNC, name)
    if found is None:
        raise MissingKernelFunction(f"this kernel has no function {name} (kfunc) for BPF "
                                    "programs")
    return found.id
