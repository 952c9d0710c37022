"""Block -> block without DC: the stream's DC blocker (numpy reference).

A microphone's bias or an ADC's offset puts a constant on every sample. The STFT's window leaks a large
DC into the lowest mel bands (a 0.3 offset over a quiet room raises the bands below 300 Hz by about
10 dB), where a model hears it as rumble. The stream removes it first with the classic one-zero,
one-pole DC blocker

    y[n] = x[n] - x[n-1] + r y[n-1],    r = exp(-2 pi f_c / f_s)

(a zero at DC, a pole just inside it; -3 dB at about f_c, flat above a few times f_c), run per channel in
direct form II transposed with a float64 state carried from block to block, so any cut of the stream
into blocks gives the same samples. The state starts as if the first sample had always been there
(`dc_block_state`): a stream that starts with an offset does not start with a step.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from edge.dsp.backends import REFERENCE, register
from edge.errors import InputError

DEFAULT_DC_BLOCK_HZ = 10.0  # the stream's corner (edge.pipeline.PipelineConfig.dc_block_hz)


def dc_block_pole(cutoff_hz: float, sample_rate: int) -> float:
    """The pole r of a DC blocker with its corner at `cutoff_hz`."""
    if not 0.0 < cutoff_hz < sample_rate / 20.0:
        raise InputError(f"DC blocker cutoff {cutoff_hz!r} Hz: must be in (0, {sample_rate / 20.0:g}) Hz")
    return math.exp(-2.0 * math.pi * cutoff_hz / sample_rate)


def dc_block_state(first: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """The initial state [C] for a stream whose first samples per channel are `first` [C]: the output
    starts at 0 (as if x[-1] = x[0] and y[-1] = 0)."""
    return -np.asarray(first, np.float64).copy()


def check_dc_block(x: npt.NDArray[np.floating], r: float, state: npt.NDArray[np.float64]) -> None:
    if x.ndim != 2:
        raise InputError(f"DC blocker input must be [channels, samples], got shape {x.shape}")
    if state.dtype != np.float64 or state.shape != (x.shape[0],) or not state.flags.c_contiguous:
        raise InputError(f"DC blocker state must be float64 [{x.shape[0]}], got {state.dtype} {state.shape}")
    if not 0.0 < r < 1.0:
        raise InputError(f"DC blocker pole {r!r}: must be in (0, 1)")


@register(REFERENCE, "dc_block")
def dc_block(x: npt.NDArray[np.floating], r: float, state: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """Samples [C, N] -> float32 [C, N] without DC; `state` [C] (float64) is read and updated in place."""
    from scipy.signal import lfilter  # here: importing scipy.signal costs the CLI's start-up ~0.5 s

    check_dc_block(x, r, state)
    y, zf = lfilter([1.0, -1.0], [1.0, -r], np.asarray(x, np.float64), axis=1, zi=state[:, None])
    state[:] = zf[:, 0]
    return np.asarray(y, np.float32)
