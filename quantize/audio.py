"""Audio file -> float32 mono waveform at the frontend's sample rate; waveform -> fixed windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.dsp.frontend import DEFAULT_FRONTEND, SAMPLE_RATE, FrontendSpec
from edge.errors import InputError
from edge.sources import read_audio as edge_read_audio

F32 = npt.NDArray[np.float32]


def window_samples(frames: int, spec: FrontendSpec = DEFAULT_FRONTEND) -> int:
    """Samples that hold exactly `frames` causal frames."""
    return spec.win + (frames - 1) * spec.hop


def read_audio(path: Path, spec: FrontendSpec = DEFAULT_FRONTEND) -> F32:
    """Read `path` (any format, rate and channel count the edge reads) as float32 mono at
    spec.sample_rate, through the edge's own reader. Raises InputError naming the file."""
    if spec.sample_rate != SAMPLE_RATE:
        raise InputError(f"{path}: the frontend runs at {spec.sample_rate} Hz; sources deliver {SAMPLE_RATE} Hz")
    return edge_read_audio(path).mean(axis=0).astype(np.float32)


def segment(x: F32, start: int, length: int) -> F32:
    """x[start:start+length] with zeros where the range falls outside x (start may be negative)."""
    out = np.zeros(length, np.float32)
    lo, hi = max(start, 0), min(start + length, x.shape[0])
    if hi > lo:
        out[lo - start : hi - start] = x[lo:hi]
    return out


def frame_energy_db(x: F32, spec: FrontendSpec = DEFAULT_FRONTEND) -> F32:
    """Per causal frame RMS level in dBFS, [n_frames(len(x))]."""
    if x.shape[0] < spec.win:
        return np.zeros(0, np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, spec.win)[:: spec.hop]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    return (20.0 * np.log10(rms)).astype(np.float32)


def activity_mask(x: F32, rel_db: float, floor_db: float, spec: FrontendSpec = DEFAULT_FRONTEND) -> F32:
    """Frames of `x` whose level is within `rel_db` of the loudest frame of `x` and above `floor_db`."""
    e = frame_energy_db(x, spec)
    if e.size == 0:
        return e
    return ((e >= e.max() - rel_db) & (e >= floor_db)).astype(np.float32)


def synthetic_rir(rng: np.random.Generator, rt60_s: float, drr_db: float, sample_rate: int) -> F32:
    """A room impulse response [n] (n = 1.2 rt60 at `sample_rate`, at least one sample): a unit direct
    path, then exponentially decaying Gaussian noise (-60 dB after `rt60_s`) whose energy is `drr_db`
    below the direct path's, starting 1-3 ms later. The late reverberation of a diffuse room (Polack's
    model), without early reflections: an augmentation, not a room simulation."""
    n = max(1, round(1.2 * rt60_s * sample_rate))
    h = np.zeros(n, np.float64)
    h[0] = 1.0
    gap = min(n - 1, round(float(rng.uniform(0.001, 0.003)) * sample_rate))
    if n - gap > 1:
        t = np.arange(n - gap) / sample_rate
        tail = rng.standard_normal(n - gap) * np.exp(-3.0 * np.log(10.0) * t / rt60_s)  # -60 dB at rt60
        tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / float(np.sum(tail**2)))
        h[gap:] += tail
    return h.astype(np.float32)


def reverberate(x: F32, start: int, length: int, rir: F32) -> F32:
    """x[start:start+length] heard through `rir`: the window's samples of x convolved with it, the earlier
    samples' tails included (zeros outside x, as `segment`)."""
    from scipy.signal import fftconvolve

    ctx = rir.shape[0] - 1
    src = segment(x, start - ctx, length + ctx)
    return np.asarray(fftconvolve(src, rir, mode="full")[ctx : ctx + length], np.float32)
