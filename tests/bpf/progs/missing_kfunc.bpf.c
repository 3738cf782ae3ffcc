// SPDX-License-Identifier: GPL-2.0
/* A program calling a kernel function (kfunc) that no kernel has. */
#include "bpf_defs.h"

char LICENSE[] SEC("license") = "GPL";

extern int bpf_pesigitg_no_such_kfunc(void) __attribute__((section(".ksyms")));

SEC("syscall")
int missing(void *args)
{
    return bpf_pesigitg_no_such_kfunc();
}
