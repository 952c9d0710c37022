"""Model file (.tflite / .onnx) + log-mel windows [N, F, M] -> frame probabilities [N, F / hop, K].

Evaluation runs the exported files through the very runtimes the edge uses (`edge.inference`), so the
report measures what a device will run. `linear_softmax_np` is the edge's linear-softmax pooling (the
peak scores of `quantize.evaluate`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge.inference import LiteRTRuntime, OnnxRuntime, Runtime, pool_clip
from quantize.audio import F32


class Runner:
    """Batch wrapper around one edge runtime: windows [N, F, M] -> frame probabilities [N, T', K]."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def __call__(self, windows: F32) -> F32:
        return np.concatenate([self.runtime.run(windows[i : i + 1]) for i in range(windows.shape[0])])

    def latency_s(self, window: F32, repeats: int) -> float:
        """Median seconds per window."""
        self.runtime.run(window)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            self.runtime.run(window)
            times.append(time.perf_counter() - t)
        return float(np.median(times))


class TfliteRunner(Runner):
    def __init__(self, path: Path, threads: int = 1) -> None:
        super().__init__(LiteRTRuntime(str(path), threads))


class OnnxRunner(Runner):
    def __init__(self, path: Path, threads: int = 1) -> None:
        super().__init__(OnnxRuntime(str(path), threads))


def linear_softmax_np(p: F32, axis: int = 0) -> F32:
    """Clip score from frame probabilities: sum p^2 / sum p (the edge runtime's pooling)."""
    return pool_clip(p, axis=axis)
