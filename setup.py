"""Builds the native DSP kernels (edge/dsp/native/tympan_dsp.c) with the package; everything else is in
pyproject.toml.

The C library has no Python API: it is built as extension modules only so that setuptools compiles it
for the target (including `pip install -e .`, which builds it in place) and `edge.dsp.native` loads it
with ctypes. x86-64 gets two builds (SSE2 baseline and AVX2+FMA, picked at run time by CPUID); aarch64
gets NEON; anything else portable C. A missing or failing compiler is not an error: the build warns, and
`edge.dsp.native` compiles into a cache on first use if a compiler appears later, else the numpy
reference runs.
"""

from __future__ import annotations

import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SRC = "edge/dsp/native/tympan_dsp.c"
FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fvisibility=hidden"]


def extensions() -> list[Extension]:
    if sys.platform == "win32":
        return []  # MSVC takes other flags; the numpy reference runs there
    exts = [Extension("edge.dsp.native._tympan_dsp", [SRC], extra_compile_args=FLAGS, libraries=["m"])]
    if platform.machine().lower() in ("x86_64", "amd64"):
        exts.append(
            Extension(
                "edge.dsp.native._tympan_dsp_avx2",
                [SRC],
                extra_compile_args=[*FLAGS, "-mavx2", "-mfma"],
                libraries=["m"],
            )
        )
    return exts


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing: the kernels have a numpy fallback."""

    def get_export_symbols(self, ext: Extension) -> list[str]:
        return []  # a ctypes library, not a Python module: no PyInit_ symbol

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler at all (DistutilsPlatformError and friends)
            self.warn(f"native DSP kernels not built ({e}); the numpy reference will run")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # CompileError, LinkError, a missing cc: never fail the install
            self.warn(f"native DSP kernel {ext.name} not built ({e}); the numpy reference will run")


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
