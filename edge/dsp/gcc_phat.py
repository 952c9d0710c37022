"""Spectra -> GCC-PHAT: phase-transform cross-spectra of microphone pairs and their cross-correlation.

Sign convention: for a pair (i, j) the cross-spectrum is X_i X_j^*, whose inverse transform peaks at
lag d_i - d_j, the arrival time at mic i minus that at mic j.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.dsp.backends import REFERENCE, register
from edge.errors import InputError

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
    weights: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.complex64]:
    """Per-frame PHAT-normalised cross-spectra. spectra [C, F, T] -> [T, P, B] for the B bins in `bins`.

    Each time-frequency cell is normalised to unit magnitude, so every frame and bin weighs the same,
    then multiplied by its weight when `weights` [T, B] are given (`onset_weights`).
    """
    x = spectra[:, bins, :]
    cross = x[pairs[:, 0]] * np.conj(x[pairs[:, 1]])  # [P, B, T]
    cross /= np.abs(cross) + EPS
    out = np.ascontiguousarray(cross.transpose(2, 0, 1)).astype(np.complex64, copy=False)
    if weights is not None:
        out *= np.asarray(weights, np.float32)[:, None, :]
    return out


def onset_weights_of_power(
    power: npt.NDArray[np.float32], history: npt.NDArray[np.float32], floor: float = 0.0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Onset weights of cells [T, B] from their power and the powers of the K frames before them
    (history [K, B], oldest first; zeros at the start of a stream): the share of each cell's power that
    is new, (power - max(previous K)) / power, clipped to [0, 1] and squared (0 for a cell without
    power), then raised to floor + (1 - floor) * that. Returns (weights [T, B], the history for the next
    frames: the last K frames' powers)."""
    k, t = history.shape[0], power.shape[0]
    full = np.concatenate([history, power]) if t else history
    prev = full[k - 1 : k - 1 + t].copy() if k else np.zeros_like(power)
    for j in range(2, k + 1):
        np.maximum(prev, full[k - j : k - j + t], out=prev)
    w = (power - prev) / np.maximum(power, np.float32(1e-30))
    np.clip(w, 0.0, 1.0, out=w)
    w *= w
    if floor:
        w *= np.float32(1.0 - floor)
        w += np.float32(floor)
    return w.astype(np.float32, copy=False), np.ascontiguousarray(full[len(full) - k :], dtype=np.float32)


@register(REFERENCE, "onset_weights")
def onset_weights(
    spectra: npt.NDArray[np.complexfloating], bins: slice, history: npt.NDArray[np.float32], floor: float = 0.0
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Spectra [C, F, T] -> (onset weights [T, B] of the bins in `bins`, next history [K, B]) from the
    power of each cell summed over the channels (`onset_weights_of_power`)."""
    x = spectra[:, bins, :]
    power = np.sum(x.real * x.real + x.imag * x.imag, axis=0, dtype=np.float32).T  # [T, B]
    return onset_weights_of_power(np.ascontiguousarray(power), np.asarray(history, np.float32), floor)


def block_index(
    frames: npt.ArrayLike, n_frames: int, block: int | npt.ArrayLike
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Selected frames (ascending indices, or a boolean mask over `n_frames`) and their blocks: `block`
    either a block length (consecutive blocks of that many selected frames, the last may hold fewer)
    or each selected frame's block index (non-decreasing, from 0, without gaps). Returns (the frame
    indices [N], each one's block [N]). Raises InputError on indices out of range or not ascending, a
    block length < 1, or block indices that do not fit."""
    f = np.asarray(frames)
    if f.dtype == np.bool_:
        if f.shape != (n_frames,):
            raise InputError(f"frame mask of shape {f.shape}: expected ({n_frames},)")
        idx = np.flatnonzero(f)
    else:
        idx = f.astype(np.intp, copy=False).reshape(-1)
        if idx.size and (idx[0] < 0 or idx[-1] >= n_frames or np.any(np.diff(idx) <= 0)):
            raise InputError(f"frame indices must be ascending, in [0, {n_frames}); got {idx[:8].tolist()}...")
    if np.ndim(block) == 0:
        size = int(block)  # type: ignore[arg-type]
        if size < 1:
            raise InputError(f"block of {size} frames: must be >= 1")
        return idx, np.arange(idx.size) // size
    ids = np.asarray(block)
    if ids.shape != idx.shape or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(
            f"block indices of shape {ids.shape} ({ids.dtype}): expected integers, one per selected frame ({idx.size})"
        )
    if ids.size and (ids[0] != 0 or np.any(np.diff(ids) < 0) or np.any(np.diff(ids) > 1)):
        raise InputError("block indices must start at 0 and go up by 0 or 1 from frame to frame")
    return idx, ids.astype(np.intp, copy=False)


@register(REFERENCE, "cross_blocks")
def cross_blocks(
    spectra: npt.NDArray[np.complexfloating],
    pairs: npt.NDArray[np.intp],
    bins: slice,
    frames: npt.ArrayLike,
    block: int | npt.ArrayLike,
    onset_frames: int = 0,
    floor: float = 0.0,
) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.float64]]:
    """A recording's DOA input: the PHAT cross-spectra (`phat_cross_spectra`) of spectra [C, F, T],
    each cell times its onset weight (`onset_weights` over all T frames from a zero history of
    `onset_frames` frames; no weighting when 0), of the selected `frames` (ascending indices or a
    mask) summed per block: consecutive blocks of `block` of them (the last may hold fewer), or, with
    `block` an array, the block each selected frame belongs to (`block_index`).

    Returns (sums [K, P, B] complex64, each block's weight [K] float64: the sum over its frames of the
    mean of the frame's cell weights, its frame count without weighting), K blocks. The same as summing
    the selected rows of the per-frame cross-spectra, without that [T, P, B] array."""
    b0, b1, _ = bins.indices(spectra.shape[1])
    idx, ids = block_index(frames, spectra.shape[2], block)
    if onset_frames < 0:
        raise InputError(f"cross_blocks: onset_frames={onset_frames} must be >= 0")
    w = None
    if onset_frames:
        w, _ = onset_weights(spectra, bins, np.zeros((onset_frames, max(0, b1 - b0)), np.float32), floor)
    if idx.size == 0:
        return np.zeros((0, len(pairs), max(0, b1 - b0)), np.complex64), np.zeros(0)
    cross = phat_cross_spectra(spectra, pairs, bins, w)[idx]
    starts = np.flatnonzero(np.diff(ids, prepend=-1))  # each block's first frame
    fw = np.ones(idx.size) if w is None else w[idx].mean(axis=1, dtype=np.float64)
    return np.add.reduceat(cross, starts, axis=0), np.add.reduceat(fw, starts)


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
