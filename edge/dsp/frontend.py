"""The one definition of the analysis frontend shared by `quantize/` (training) and `edge/` (inference).

It is YAMNet's frontend, so the teacher and the student see the same features: 16 kHz, 25 ms
periodic-Hann frames, 10 ms hop, 512-point FFT magnitude, 64 HTK-mel bands 125-7500 Hz, natural log of
(mel + 0.001). The same STFT feeds the localiser.

Frames are causal: frame k covers samples [k * hop, k * hop + win) of the stream (no centring), so a
stream cut into blocks of any size gives the same frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.errors import InputError, ModelError

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class FrontendSpec:
    sample_rate: int = SAMPLE_RATE
    win: int = 400
    hop: int = 160
    n_fft: int = 512
    n_mels: int = 64
    fmin_hz: float = 125.0
    fmax_hz: float = 7500.0
    log_offset: float = 0.001

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def hop_s(self) -> float:
        return self.hop / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], origin: str) -> FrontendSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ModelError(f"{origin}: unknown frontend key(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def check_matches(self, other: FrontendSpec, origin: str) -> None:
        """Raise ModelError naming every field where `other` (declared by `origin`) differs."""
        diffs = [
            f"{k}={getattr(other, k)!r} (expected {getattr(self, k)!r})"
            for k in self.__dataclass_fields__
            if getattr(self, k) != getattr(other, k)
        ]
        if diffs:
            raise ModelError(f"{origin}: frontend does not match Tympan's: " + ", ".join(diffs))


DEFAULT_FRONTEND = FrontendSpec()


@lru_cache(maxsize=8)
def periodic_hann(win: int) -> npt.NDArray[np.float32]:
    n = np.arange(win)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / win)).astype(np.float32)


def hz_to_mel(f: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """HTK mel scale."""
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


@lru_cache(maxsize=8)
def mel_matrix(spec: FrontendSpec = DEFAULT_FRONTEND) -> npt.NDArray[np.float32]:
    """Triangular HTK-mel weights [n_bins, n_mels], triangles in the mel domain, DC bin zeroed."""
    freqs = np.linspace(0.0, spec.sample_rate / 2.0, spec.n_bins)[1:]
    bins_mel = hz_to_mel(freqs)[:, None]
    edges = np.linspace(hz_to_mel(spec.fmin_hz), hz_to_mel(spec.fmax_hz), spec.n_mels + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rise = (bins_mel - lower) / (centre - lower)
    fall = (upper - bins_mel) / (upper - centre)
    w = np.maximum(0.0, np.minimum(rise, fall))
    return np.vstack([np.zeros((1, spec.n_mels)), w]).astype(np.float32)


def n_frames(n_samples: int, spec: FrontendSpec = DEFAULT_FRONTEND) -> int:
    """Number of complete causal frames in `n_samples` samples."""
    return 0 if n_samples < spec.win else 1 + (n_samples - spec.win) // spec.hop


def stft(x: npt.NDArray[np.floating], spec: FrontendSpec = DEFAULT_FRONTEND) -> npt.NDArray[np.complex64]:
    """Causal STFT. x: [C, N] -> complex64 [C, n_bins, T] with T = n_frames(N)."""
    x = np.asarray(x, dtype=np.float32)
    t = n_frames(x.shape[-1], spec)
    if t == 0:
        return np.zeros((x.shape[0], spec.n_bins, 0), np.complex64)
    frames = np.lib.stride_tricks.sliding_window_view(x, spec.win, axis=-1)[:, :: spec.hop][:, :t]
    spectra = np.fft.rfft(frames * periodic_hann(spec.win), n=spec.n_fft, axis=-1)
    return np.ascontiguousarray(spectra.transpose(0, 2, 1)).astype(np.complex64, copy=False)


def logmel_from_spectra(
    spectra: npt.NDArray[np.complexfloating], spec: FrontendSpec = DEFAULT_FRONTEND
) -> npt.NDArray[np.float32]:
    """[C, n_bins, T] -> log-mel [T, n_mels] of the channel mean (the STFT is linear, so this equals
    the log-mel of the mono downmix)."""
    mono = spectra.mean(axis=0) if spectra.shape[0] > 1 else spectra[0]
    mag = np.abs(mono).T.astype(np.float32)
    return np.log(mag @ mel_matrix(spec) + np.float32(spec.log_offset)).astype(np.float32)


def logmel(x: npt.NDArray[np.floating], spec: FrontendSpec = DEFAULT_FRONTEND) -> npt.NDArray[np.float32]:
    """Log-mel of audio. x: mono [N] or multichannel [C, N] (downmixed) -> [T, n_mels]."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    return logmel_from_spectra(stft(x, spec), spec)


def logmel_batch(x: npt.NDArray[np.floating], spec: FrontendSpec = DEFAULT_FRONTEND) -> npt.NDArray[np.float32]:
    """Batch front end: B recordings [B, C, N] -> log-mel [B, T, n_mels], each the log-mel of its
    channel mean (as `logmel`). One call for many arrays or files; the GPU backend fuses it."""
    return logmel_batch_with(x, spec, stft, logmel_from_spectra)


def logmel_batch_with(
    x: npt.NDArray[np.floating], spec: FrontendSpec, stft_fn: Any, logmel_fn: Any
) -> npt.NDArray[np.float32]:
    """`logmel_batch` through a backend's own `stft` and `logmel_from_spectra`, one recording at a time."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise InputError(f"logmel_batch needs audio shaped [recordings, channels, samples], got {x.shape}")
    out = np.empty((x.shape[0], n_frames(x.shape[2], spec), spec.n_mels), np.float32)
    for b in range(x.shape[0]):
        out[b] = logmel_fn(stft_fn(x[b], spec), spec)
    return out


def silence_floor(spec: FrontendSpec = DEFAULT_FRONTEND) -> float:
    """The log-mel value of digital silence (used to pad the model's first window)."""
    return float(np.log(np.float32(spec.log_offset)))


def fill_lookahead(
    windows: npt.NDArray[np.float32], frames: int, decay_db: float, spec: FrontendSpec = DEFAULT_FRONTEND
) -> npt.NDArray[np.float32]:
    """Log-mel windows [..., T, n_mels] moved on by `frames`: the oldest `frames` dropped and, after the
    newest frame, `frames` frames of it fading by `decay_db` per frame (magnitude dB, not below the
    silence floor), as a sound that stopped at the newest frame would ring out. The streaming pipeline's
    low-latency mode gives its model this look-ahead instead of the model's own zero padding."""
    if frames <= 0:
        return windows
    step = np.float32(decay_db * np.log(10.0) / 20.0)
    fade = step * np.arange(1, frames + 1, dtype=np.float32)[:, None]  # [frames, 1]
    tail = np.maximum(windows[..., -1:, :] - fade, np.float32(silence_floor(spec)))
    return np.concatenate([windows[..., frames:, :], tail.astype(np.float32)], axis=-2)
