"""The int8 ONNX teacher computes the same logits on every x86-64 CPU.

ONNX Runtime's fused int8 convolution saturates 16-bit pairwise sums on x86-64 CPUs without VNNI, so a
QDQ teacher run with its default optimisations gives other logits there than on a VNNI CPU or an Arm
board (the shipped YAMNet: other top classes, a 6-point lower ESC-50 accuracy). `onnx_session` runs a
QDQ graph unfused. Checked on a QDQ convolution whose operands are large enough to saturate: the
session's output under qemu-user emulating a Haswell CPU (AVX2, no VNNI) equals this machine's, and
both are within one quantisation step of exact integer arithmetic. Skipped without qemu-x86_64.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantize.teacher import onnx_session

REPO = Path(__file__).resolve().parents[1]
C, H = 32, 16  # channels, height = width
SX, SW, SO, ZX, ZO = 0.05, 0.01, 20.0, 128, 128  # input / weight / output scales and zero points


def _qdq_conv(path: Path, w: np.ndarray) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, v: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(v, name)

    inits = [const("w_q", w), const("sx", np.array(SX, np.float32)), const("sw", np.array(SW, np.float32)),
             const("zx", np.array(ZX, np.uint8)), const("zw", np.array(0, np.int8)),
             const("so", np.array(SO, np.float32)), const("zo", np.array(ZO, np.uint8))]  # fmt: skip
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w_q", "sw", "zw"], ["wf"]),
        helper.make_node("Conv", ["xf", "wf"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["y", "so", "zo"], ["yq"]),
    ]
    g = helper.make_graph(
        nodes, "qdq_conv", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, C, H, H])],
        [helper.make_tensor_value_info("yq", TensorProto.UINT8, [1, C, H, H])], inits,
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))


def _exact(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Integer convolution, requantised once (the arithmetic the int8 graph stands for)."""
    xp = np.pad(x.astype(np.int64) - ZX, ((0, 0), (0, 0), (1, 1), (1, 1)))
    acc = np.zeros((1, C, H, H), np.int64)
    for i in range(3):
        for j in range(3):
            acc += np.einsum("nchw,oc->nohw", xp[:, :, i : i + H, j : j + H], w[:, :, i, j].astype(np.int64))
    return np.clip(np.round(acc * (SX * SW / SO)) + ZO, 0, 255)


RUN = """
import sys
import numpy as np
from pathlib import Path
from quantize.teacher import onnx_session
x = np.load(sys.argv[2])
np.save(sys.argv[3], onnx_session(Path(sys.argv[1]), sys.argv[4] == "qdq").run(None, {"x": x})[0])
"""


def test_qdq_teacher_arithmetic_is_the_same_on_a_cpu_without_vnni(tmp_path: Path) -> None:
    qemu = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if qemu is None or platform.machine() != "x86_64":
        pytest.skip("needs qemu-x86_64 (Debian qemu-user-static) on an x86-64 machine")
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (C, C, 3, 3)).astype(np.int8)
    x = rng.integers(0, 256, (1, C, H, H)).astype(np.uint8)
    model, xin = tmp_path / "conv.onnx", tmp_path / "x.npy"
    _qdq_conv(model, w)
    np.save(xin, x)
    exact = _exact(x, w)
    here = onnx_session(model, qdq=True).run(None, {"x": x})[0].astype(np.int64)
    script = tmp_path / "run.py"
    script.write_text(RUN)
    out = tmp_path / "haswell.npy"
    subprocess.run(
        [qemu, "-cpu", "Haswell", sys.executable, str(script), str(model), str(xin), str(out), "qdq"],
        check=True, cwd=REPO, capture_output=True, timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    haswell = np.load(out).astype(np.int64)
    np.testing.assert_array_equal(haswell, here)  # the same logits on both CPUs
    assert np.abs(here - exact).max() <= 1  # float32 sums: a rounding tie may land one step away
    assert np.mean(here != exact) < 0.01

