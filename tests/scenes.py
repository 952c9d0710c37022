"""Synthetic multichannel scenes with exactly known physics, for tests."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FS = 16000
C = 343.0


def unit(az_deg: float, el_deg: float = 0.0) -> npt.NDArray[np.float64]:
    a, e = np.radians(az_deg), np.radians(el_deg)
    return np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])


def plane_wave(
    sig: npt.NDArray[np.float64], mics: npt.ArrayLike, az_deg: float, el_deg: float = 0.0, fs: int = FS
) -> npt.NDArray[np.float64]:
    """[M, N]: `sig` arriving as a plane wave from (az, el), with exact fractional delays (mics nearer the
    source hear it earlier; the array centre hears it at delay 0). Circular: pad `sig` with silence."""
    m = np.asarray(mics, dtype=np.float64)
    m = m - m.mean(axis=0)
    delays = -(m @ unit(az_deg, el_deg)) / C
    n = len(sig)
    spec = np.fft.rfft(sig)
    f = np.fft.rfftfreq(n, 1 / fs)
    return np.stack([np.fft.irfft(spec * np.exp(-2j * np.pi * f * d), n) for d in delays])


def noise_burst(n: int, seed: int = 0) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.1, n)


def ang_err(a: float, b: float) -> float:
    return float(abs((a - b + 180.0) % 360.0 - 180.0))
