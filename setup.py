"""Build the packet path: one extension module (x86-64, -O3; AES-NI only inside the AES
headers) from pesigitg/_fastpath/fastpath.pyx and its included parts."""

from Cython.Build import cythonize
from setuptools import Extension, setup

INCLUDE = ["pesigitg/_fastpath/includes", "bpf/include"]   # bpf/include: the shared ABI
CFLAGS = ["-O3", "-fno-strict-aliasing", "-Wno-unused-function"]
# `cdef inline` means inline here: the per-packet calls (parse, decode, decide, rewrite)
# must inline into the loop, which gcc's size heuristics refuse for a function called
# from the loop, the tests' entry and the benchmark's (benchmarks/decide_cost.py).
MACROS = [("CYTHON_INLINE", "inline __attribute__((always_inline, unused))")]

setup(
    ext_modules=cythonize(
        [Extension("pesigitg._fastpath.fastpath", ["pesigitg/_fastpath/fastpath.pyx"],
                   include_dirs=INCLUDE, extra_compile_args=CFLAGS, define_macros=MACROS)],
        include_path=["."],
        compiler_directives={"language_level": "3", "embedsignature": True},
    ),
)
