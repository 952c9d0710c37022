"""The native DSP backend's NEON build as Python loads it: `edge.dsp.native` in an aarch64 CPython under
qemu-user (scripts/aarch64_python_check.sh builds the sysroot from Debian's arm64 Python and PyPI's
aarch64 numpy/scipy wheels, cached; scripts/aarch64_python_check.py compares every kernel with the numpy
reference). Skipped without gcc-aarch64-linux-gnu, qemu-user-static, apt or the package registries."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.dsp import backends
from tests.test_backends import TOL

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "aarch64_python_check.sh"
CHECK = ROOT / "scripts" / "aarch64_python_check.py"
SKIP = 77  # the script's exit status when the toolchain, qemu or the registries are missing


def test_the_check_uses_the_suites_tolerances(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("aarch64_python_check", CHECK)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    assert mod.TOL == TOL["native"]


@pytest.mark.slow
def test_neon_build_in_aarch64_python_equals_reference() -> None:
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    env = {**os.environ, "PYTHON": sys.executable}  # numpy/scipy versions and pip of this interpreter
    try:
        proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=1200, env=env)
    except subprocess.TimeoutExpired as e:  # the first run fetches ~60 MB; a cached run takes ~30 s
        pytest.fail(f"{SCRIPT.name} took over {e.timeout} s")
    if proc.returncode == SKIP:
        pytest.skip(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "skipped")
    assert proc.returncode == 0, f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert f"{len(backends.KERNELS)}/{len(backends.KERNELS)} kernels" in proc.stdout and "all match" in proc.stdout
    assert "neon build (tp_simd neon, 4 lanes" in proc.stdout
