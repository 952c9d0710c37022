"""Spectra -> GCC-PHAT: phase-transform cross-spectra of microphone pairs and their cross-correlation.

Sign convention: for a pair (i, j) the cross-spectrum is X_i X_j^*, whose inverse transform peaks at
lag d_i - d_j, the arrival time at mic i minus that at mic j.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.dsp.backends import REFERENCE, register

EPS = 1e-12


def mic_pairs(n_mics: int) -> npt.NDArray[np.intp]:
    """All unordered pairs (i < j) of `n_mics` microphones: [P, 2]."""
    i, j = np.triu_indices(n_mics, k=1)
    return np.stack([i, j], axis=1)


@register(REFERENCE, "phat_cross_spectra")
def phat_cross_spectra(
    spectra: npt.NDArray[np.complexfloating],
    pairs: npt.NDArray[np.intp],
    bins: slice,
) -> npt.NDArray[np.complex64]:
    """Per-frame PHAT-normalised cross-spectra. spectra [C, F, T] -> [T, P, B] for the B bins in `bins`.

    Each time-frequency cell is normalised to unit magnitude, so every frame and bin weighs the same.
    """
    x = spectra[:, bins, :]
    cross = x[pairs[:, 0]] * np.conj(x[pairs[:, 1]])  # [P, B, T]
    cross /= np.abs(cross) + EPS
    return np.ascontiguousarray(cross.transpose(2, 0, 1)).astype(np.complex64, copy=False)


@register(REFERENCE, "gcc")
def gcc(cross: npt.NDArray[np.complexfloating], bins: slice, n_fft: int, upsample: int) -> npt.NDArray[np.float32]:
    """Cross-spectra [P, B] (bins `bins` of an n_fft-point spectrum) -> cross-correlation [P, L].

    L = n_fft * upsample; lag index k is the delay (k - L // 2) / (sample_rate * upsample) seconds.
    """
    n_bins = n_fft // 2 + 1
    full = np.zeros((cross.shape[0], n_bins), np.complex64)
    full[:, bins] = cross
    length = n_fft * upsample
    cc = np.fft.irfft(full, n=length, axis=-1) * upsample
    return np.fft.fftshift(cc, axes=-1).astype(np.float32)
