"""Build the Cython packet path (x86-64, -O3; AES-NI only inside the AES shim)."""

from Cython.Build import cythonize
from setuptools import Extension, setup

INCLUDE = "pesigitg/_fastpath/includes"
CFLAGS = ["-O3", "-fno-strict-aliasing", "-Wno-unused-function"]


def fastpath(name: str) -> Extension:
    return Extension(f"pesigitg._fastpath.{name}", [f"pesigitg/_fastpath/{name}.pyx"],
                     include_dirs=[INCLUDE], extra_compile_args=CFLAGS)


setup(
    ext_modules=cythonize(
        [fastpath(name) for name in ("cid", "table", "decide", "xsk", "engine")],
        include_path=["."],
        compiler_directives={"language_level": "3", "embedsignature": True},
    ),
)
