"""The device install stays light: no torch in the core dependencies, and no edge module imports it."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import edge

ROOT = Path(__file__).resolve().parents[1]


def test_core_dependencies_do_not_pull_torch() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    core = " ".join(meta["project"]["dependencies"]).lower()
    assert "torch" not in core
    extras = meta["project"]["optional-dependencies"]
    assert any(d.replace(" ", "") == "torch==2.13.0" for d in extras["quantize"]), "torch must be pinned"


def test_importing_every_edge_module_leaves_torch_unloaded() -> None:
    # the native DSP libraries are C shared objects loaded with ctypes, not Python extension modules
    mods = [
        m.name
        for m in pkgutil.walk_packages(edge.__path__, "edge.")
        if not m.name.endswith("__main__") and not m.name.startswith("edge.dsp.native._")
    ]
    assert "edge.pipeline" in mods and "edge.cli" in mods
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "import boards.profiles, boards.cli, quantize.cli\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'litert_torch', 'cloud'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"imported: {out.stdout.strip()}"


def test_edge_never_imports_quantize_or_cloud() -> None:
    for path in (ROOT / "edge").rglob("*.py"):
        text = path.read_text()
        for bad in ("import quantize", "from quantize", "import cloud", "from cloud", "import torch"):
            assert bad not in text, f"{path.relative_to(ROOT)} contains {bad!r}"
