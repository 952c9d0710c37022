"""fp32 `Student` + calibration log-mel windows -> int8 `.tflite` (PT2E) and int8 QDQ `.onnx` files.

TFLite: torch.export -> PT2E prepare with litert-torch's symmetric int8 quantizer (per-channel
weights, histogram-observed activations) -> calibrate -> convert_pt2e(fold_quantize=False) ->
litert_torch.convert. ONNX: the fp32 ONNX (quantize.export) -> onnxruntime quantize_static (QDQ,
int8 activations and per-channel int8 weights) with a CalibrationDataReader over the same windows.
Both keep one float32 input [1, F, M] (raw log-mel) and one float32 output [1, F / hop, K].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.errors import ModelError
from quantize.audio import F32
from quantize.export import INPUT_NAME, quiet
from quantize.student import Student


def quantize_tflite(model: Student, calib: F32, out: Path, per_channel: bool, frames: int | None = None) -> None:
    """PT2E int8 post-training quantisation and TFLite export of `model` (BatchNorm folded).

    `frames`: convert at that many input frames instead, with the quantisation parameters calibrated on
    the full windows `calib` (the time axis is exported dynamic; the streaming model, quantize.stream).

    The int8 graph is that of `model.tflite_view()` (a conv stem as `SpaceToDepthStem`, no pooling over a
    single mel) with the quantisation parameters calibrated on `model` itself: each of the view's
    activation observers takes the state of the model's observer of the same values, so every tensor
    has the scale it would have had and the int8 arithmetic is the same (the view's float sums differ
    from the model's in the last bits, which would move the histogram observers' scales slightly if the
    view were calibrated itself)."""
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    model.eval()
    view = model.tflite_view().eval()
    sample = (torch.from_numpy(np.ascontiguousarray(calib[:1])),)
    dynamic = None
    if frames is not None:
        with torch.no_grad():
            hop = calib.shape[1] // int(model(sample[0]).shape[1])
        dynamic = ({1: hop * torch.export.Dim("t_hops", min=1, max=max(2, calib.shape[1] // hop))},)
    with quiet():
        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=per_channel)
        )

        def prepare(m: torch.nn.Module) -> Any:
            exported = torch.export.export(m, sample, dynamic_shapes=dynamic).module()
            return quantize_pt2e.prepare_pt2e(exported, quantizer)

        prepared = prepare(model)
        with torch.no_grad():
            for i in range(calib.shape[0]):
                prepared(torch.from_numpy(np.ascontiguousarray(calib[i : i + 1])))
        if view is not model:
            calibrated = prepared
            prepared = prepare(view)
            with torch.no_grad():
                prepared(sample[0])  # its weight observers (per channel, from the weights alone)
            _copy_activation_observers(calibrated, prepared)
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        at = sample if frames is None else (torch.from_numpy(np.ascontiguousarray(calib[:1, -frames:])),)
        edge = litert_torch.convert(converted, at, quant_config=QuantConfig(pt2e_quantizer=quantizer))
        edge.export(str(out))


# ops that only move values (or, in eval, pass them through): an observer after them sees what the op
# before them produced; `pad` also adds zeros, which the observed distribution then holds
_VALUE_PRESERVING = {"unsqueeze", "squeeze", "reshape", "view", "_unsafe_view", "permute", "transpose", "flatten",
                     "dropout", "clone", "contiguous"}  # fmt: skip
_PADS = {"pad", "constant_pad_nd"}


def _observed_source(node: Any) -> tuple[str, bool]:
    """(name of the node whose values an observer's input carries, whether a pad op lies on the way): back
    through value-preserving ops, pads and other observers."""
    padded = False
    while True:
        if node.op == "call_module" and "activation_post_process" in str(node.target):
            node = node.args[0]
            continue
        parts = str(node.target).split(".")
        op = parts[1] if node.op == "call_function" and len(parts) > 1 and parts[0] == "aten" else ""
        if op not in _VALUE_PRESERVING and op not in _PADS:
            return str(node.name), padded
        padded = padded or op in _PADS
        node = node.args[0]


def _activation_observers(prepared: Any) -> list[tuple[tuple[str, bool], Any]]:
    """(observed source, observer module) of each activation observer of a PT2E-prepared graph module, in
    graph order; those of parameters and buffers (a `get_attr` input) are left out."""
    out = []
    for node in prepared.graph.nodes:
        if node.op == "call_module" and "activation_post_process" in str(node.target) and node.args:
            if getattr(node.args[0], "op", None) != "get_attr":
                out.append((_observed_source(node.args[0]), getattr(prepared, str(node.target))))
    return out


def _copy_activation_observers(src: Any, dst: Any) -> None:
    """Calibrated activation observers of `src` -> those of `dst` that observe the same values: the same
    source node (by name: the view keeps the student's ops and their order, and adds or drops only
    value-preserving ones), padded or not. A padded tensor of `dst` whose counterpart in `src` is padded
    inside its conv (not observed apart) takes the unpadded tensor's state, whose zero point the conv
    pads with. ModelError when an observer of `dst` has no counterpart."""
    calibrated: dict[tuple[str, bool], Any] = {}
    for key, obs in _activation_observers(src):
        calibrated.setdefault(key, obs)
    for (source, padded), obs in _activation_observers(dst):
        match = calibrated.get((source, padded))
        if match is None:
            match = calibrated.get((source, False))
        if match is None or type(match) is not type(obs):
            raise ModelError(
                f"TFLite export: the TFLite view observes {source!r}, which the student's calibrated graph "
                "does not: cannot carry the calibration over"
            )
        obs.load_state_dict(match.state_dict())


def float_tail(graph: Any) -> list[str]:
    """The names of the nodes of an ONNX graph that stay float: every Sigmoid and every node downstream
    of one.

    An int8 probability (step 1/255) flattens every small probability to 0 or 0.004 and scrambles the
    ranking of the many quiet classes. The sigmoid's input (the logits) is still int8, as in the TFLite
    model, where PT2E leaves LOGISTIC in float too. Downstream matters when the student has learned
    heads: their probabilities and the events' are joined by a Concat, which the quantiser would
    otherwise make a QLinearConcat, putting the int8 step back on every output."""
    nodes = list(graph.node)
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(i)
    seen: set[int] = set()
    todo = [i for i, n in enumerate(nodes) if n.op_type == "Sigmoid"]
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            todo.extend(c for out in nodes[i].output for c in consumers.get(out, []))
    unnamed = [nodes[i].op_type for i in sorted(seen) if not nodes[i].name]
    if unnamed:
        raise ModelError(f"ONNX nodes {unnamed} at or after the sigmoid have no name, so they cannot be kept float")
    return [nodes[i].name for i in sorted(seen)]


def quantize_onnx(fp32_onnx: Path, calib: F32, out: Path, per_channel: bool, reduce_range: bool) -> None:
    """onnxruntime static QDQ int8 quantisation of an fp32 ONNX student.

    `reduce_range` quantises weights to 7 bits. ONNX Runtime's x86 int8 kernels on CPUs without VNNI
    (u8 x s8 via 16-bit pairwise sums) saturate with full-range weights: measured here, the same QDQ
    model agreed with fp32 on 0.97 of top-1 class decisions with graph optimisations off, 0.88 with
    ORT's fused int8 kernels, and 0.96 fused with reduce_range.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._i >= calib.shape[0]:
                return None
            self._i += 1
            return {INPUT_NAME: np.ascontiguousarray(calib[self._i - 1 : self._i], np.float32)}

    keep_float = float_tail(onnx.load(str(fp32_onnx)).graph)
    with quiet():
        quantize_static(
            str(fp32_onnx),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float,
            reduce_range=reduce_range,
        )
