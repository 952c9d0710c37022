"""Interleaved int16 PCM [N, C] (a sound card's layout) -> float32 [C, N] and its STFT (numpy reference)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.dsp import frontend
from edge.dsp.backends import REFERENCE, register
from edge.errors import InputError

PCM16_FULL_SCALE = 32768.0


def pcm16_to_float(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
    """int16 [N, C] -> float32 [C, N] in [-1, 1)."""
    if pcm.dtype != np.int16 or pcm.ndim != 2:
        raise InputError(f"int16 PCM must be int16 [N, C], got {pcm.dtype} with shape {pcm.shape}")
    return np.ascontiguousarray(pcm.T, dtype=np.float32) / np.float32(PCM16_FULL_SCALE)


@register(REFERENCE, "stft_int16")
def stft_int16(
    pcm: npt.NDArray[np.int16], spec: frontend.FrontendSpec = frontend.DEFAULT_FRONTEND
) -> npt.NDArray[np.complex64]:
    """int16 [N, C] -> complex64 [C, n_bins, T], the STFT of `pcm16_to_float(pcm)`."""
    return frontend.stft(pcm16_to_float(pcm), spec)
