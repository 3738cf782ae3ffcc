"""The running kernel's BTF (``/sys/kernel/btf/vmlinux``): what a program's kfunc calls
are relocated against. Read once per process, and only the few functions asked for are
looked up (the file has some 150 000 types)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pesigitg.ebpf.btf import BtfError, function_ids
from pesigitg.ebpf.obj import ObjectError

__all__ = ["VMLINUX", "MissingKernelFunction", "kernel_function", "kernel_functions"]

VMLINUX = Path("/sys/kernel/btf/vmlinux")


class MissingKernelFunction(ObjectError):
    """A program calls a kernel function (kfunc) this kernel does not have."""


@cache
def _vmlinux() -> bytes:
    try:
        return VMLINUX.read_bytes()
    except OSError as exc:
        raise ObjectError(f"cannot read the kernel's BTF ({VMLINUX}): {exc.strerror}; "
                          "kernel functions need CONFIG_DEBUG_INFO_BTF") from None


_ids: dict[str, int | None] = {}         # looked up already (None: the kernel has none)


def _lookup(names: tuple[str, ...]) -> None:
    """Find every name not looked up yet, in one walk of the kernel's types."""
    missing = {n for n in names if n not in _ids}
    if not missing:
        return
    try:
        found = function_ids(_vmlinux(), missing)
    except BtfError as exc:
        raise ObjectError(f"{VMLINUX}: {exc}") from None
    _ids.update({n: found.get(n) for n in missing})


def kernel_functions(names: tuple[str, ...]) -> bool:
    """Whether the kernel has every one of these functions for BPF programs."""
    _lookup(names)
    return all(_ids[name] is not None for name in names)


def kernel_function(name: str) -> int:
    """The BTF id of kernel function ``name`` (MissingKernelFunction if it has none)."""
    _lookup((name,))
    found = _ids[name]
    if found is None:
        raise MissingKernelFunction(f"this kernel has no function {name} (kfunc) for BPF "
                                    "programs")
    return found
