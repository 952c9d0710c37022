"""Spectra -> per-frame power and samples -> Leq: the level meter's kernels (numpy reference).

Levels are dBFS with a full-scale sine at 0 dBFS (mean square 1/2). The frame power is taken from the
STFT the pipeline already has (Parseval), so the level meter costs no second pass over the audio.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.dsp.backends import REFERENCE, register
from edge.dsp.frontend import DEFAULT_FRONTEND, FrontendSpec, periodic_hann
from edge.errors import InputError


def parseval_weights(spec: FrontendSpec = DEFAULT_FRONTEND) -> npt.NDArray[np.float64]:
    """[n_bins] weights w such that sum_f |X_f|^2 w_f is the mean square of the windowed frame's
    samples, normalised by the window's energy (one-sided spectrum: the DC and Nyquist bins once)."""
    wsum = float(np.sum(periodic_hann(spec.win).astype(np.float64) ** 2))
    w = np.full(spec.n_bins, 2.0)
    w[0] = 1.0
    if spec.n_fft % 2 == 0:
        w[-1] = 1.0
    return w / (spec.n_fft * wsum)


@register(REFERENCE, "frame_power")
def frame_power(spectra: npt.NDArray[np.complexfloating], weights: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Spectra [C, F, T] and weights [F] -> mean over channels of sum_f |X|^2 w_f, per frame: [T]."""
    if spectra.shape[0] == 0:
        raise InputError("frame power of spectra with no channel")
    power = np.einsum("cft,f->t", (np.abs(spectra) ** 2).astype(np.float64), np.asarray(weights, np.float64))
    return np.asarray(power / spectra.shape[0], dtype=np.float64)


@register(REFERENCE, "leq_dbfs")
def leq_dbfs(x: npt.NDArray[np.floating]) -> float:
    """Equivalent continuous level of samples (any shape, all channels together), dBFS."""
    a = np.asarray(x, dtype=np.float32)
    if a.size == 0:
        raise InputError("Leq of no samples")
    ms = float(np.mean(np.square(a, dtype=np.float64)))
    return float(10.0 * np.log10(2.0 * ms + 1e-20))
