"""The streaming model: the same int8 student on the shortest window that gives the pipeline's outputs.

The edge pipeline runs the model on its full window (96 frames) every `model_hop_frames` (12) and keeps
only the newest hop's output frames. Those depend on no more input than the student's left receptive
field, so a shorter window ending at the same frame gives the same newest outputs (zero padding at the
far left edge never reaches them). `stream_window` finds the shortest such window in fp32 (random
inputs, a multiple of the output hop); `quantize.ptq.quantize_tflite(..., frames=)` writes the int8
TFLite model for it from the same PT2E calibration as the full model (exported with a dynamic time
axis, calibrated on the full windows, converted at the short length), so its quantisation parameters
are the full model's and its
newest outputs are bit-identical to the full model's: checked against the run's `model_int8.tflite`
before it is shipped (model.json `stream`; `edge.inference.Model.predict_stream`). With the shipped
student, 48 of 96 frames: half the MACs per model call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from quantize.audio import F32


def stream_window(model: Any, window_frames: int, newest_frames: int, hop: int, seed: int = 0) -> int:
    """The shortest window (a multiple of `hop`, at least `newest_frames`) whose newest
    `newest_frames // hop` fp32 logits equal the full window's on random log-mel input.

    Equal to float rounding: torch may pick another conv algorithm for another input length, which
    rounds differently (in a full test run a bit-for-bit search returned 48 frames for a student whose
    receptive field needs 36), while zero padding inside the receptive field moves logits by far more
    than the tolerance. The int8 models that ship are then
    compared bit for bit (`check_stream`)."""
    import torch

    rng = np.random.default_rng(seed)
    shape = (4, window_frames, int(model.mean.shape[0]))
    x = torch.from_numpy((rng.standard_normal(shape) * 2.0 - 5.0).astype(np.float32))
    n = newest_frames // hop
    model.eval()
    with torch.no_grad():
        full = model.logits(x)[:, -n:]
        tol = 1e-5 * (1.0 + float(full.abs().max()))
        for w in range(max(hop, newest_frames), window_frames, hop):
            if float((model.logits(x[:, -w:])[:, -n:] - full).abs().max()) <= tol:
                return w
    return window_frames


def check_stream(full_tflite: Path, stream_tflite: Path, windows: F32, frames: int, newest: int) -> float:
    """Largest |difference| between the newest outputs of the stream model and the full model."""
    from quantize.infer import TfliteRunner

    full = TfliteRunner(full_tflite)(windows)
    short = TfliteRunner(stream_tflite)(np.ascontiguousarray(windows[:, -frames:]))
    n = newest * full.shape[1] // windows.shape[1]
    return float(np.max(np.abs(full[:, -n:] - short[:, -n:])))
