"""Build the packet path: one extension module (x86-64, -O3; AES-NI only inside the AES
headers) from pesigitg/_fastpath/fastpath.pyx and its included parts.

PESIGITG_SANITIZE=address builds it under AddressSanitizer (make fuzz, into build/)."""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

INCLUDE = ["pesigitg/_fastpath/includes", "bpf/include"]   # bpf/include: the shared ABI
CFLAGS = ["-O3", "-fno-strict-aliasing", "-Wno-unused-function"]
LDFLAGS: list[str] = []
if os.environ.get("PESIGITG_SANITIZE") == "address":
    CFLAGS = ["-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer",
              "-fno-strict-aliasing", "-Wno-unused-function"]
    LDFLAGS = ["-fsanitize=address"]
# `cdef inline` means inline here: the per-packet calls (parse, decode, decide, rewrite)
# must inline into the loop, which gcc's size heuristics refuse for a function called
# from the loop, the tests' entry and the benchmark's (benchmarks/decide_cost.py).
MACROS = [("CYTHON_INLINE", "inline __attribute__((always_inline, unused))")]

setup(
    ext_modules=cythonize(
        [Extension("pesigitg._fastpath.fastpath", ["pesigitg/_fastpath/fastpath.pyx"],
                   include_dirs=INCLUDE, extra_compile_args=CFLAGS, extra_link_args=LDFLAGS,
                   define_macros=MACROS)],
        include_path=["."],
        compiler_directives={"language_level": "3", "embedsignature": True},
    ),
)
