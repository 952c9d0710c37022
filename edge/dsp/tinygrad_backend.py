"""The tinygrad DSP backend: the frontend and SRP-PHAT kernels as tinygrad tensor programs.

For a GPU (CUDA on a Jetson or a workstation) and for batch work: many arrays or files stacked along
the channel axis go through one kernel launch. Its CPU path runs too (tinygrad compiles kernels with
clang), mainly so the backend can be tested without a GPU; on a CPU the native backend is faster.

tinygrad has no FFT and no complex dtype, so transforms are matrix products with cached DFT bases
(the window folded in) and complex values travel as (real, imaginary) pairs; inputs and outputs are
numpy arrays with the same shapes, dtypes and meaning as the numpy reference kernels.

Device: `$TYMPAN_TINYGRAD_DEVICE` (e.g. `CPU`, `CUDA`), else tinygrad's default (its `DEV`
environment variable or the first device it finds). The CUDA path is checked by
`benchmarks/gpu_check.py` on a machine with a GPU (results in `benchmarks/results/gpu_check.md`):
`logmel_batch`, fused on the device, is the kernel that beats a CPU core; the per-kernel path, whose
outputs cross back to the host after each kernel, does not.

The numpy side does what tinygrad has no primitive for (framing, the fftshift index arithmetic);
tinygrad is imported on first use only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge.dsp.frontend import DEFAULT_FRONTEND, FrontendSpec, mel_matrix, n_frames, periodic_hann
from edge.dsp.gcc_phat import EPS
from edge.dsp.pcm import pcm16_to_float
from edge.errors import ConfigError, InputError

if TYPE_CHECKING:
    from tinygrad import Tensor

DEVICE_ENV = "TYMPAN_TINYGRAD_DEVICE"


@lru_cache(maxsize=1)
def device() -> str:
    """The tinygrad device the kernels run on."""
    try:
        from tinygrad import Device
    except ImportError as e:
        raise ConfigError(f"the tinygrad DSP backend needs tinygrad (pip install 'tympan[gpu]'): {e}") from None
    name = os.environ.get(DEVICE_ENV) or Device.DEFAULT
    try:
        Device[name]
    except Exception as e:  # tinygrad raises several types for a device it cannot open
        raise ConfigError(f"{DEVICE_ENV}={name!r}: tinygrad cannot open this device: {e}") from None
    return str(name)


def _t(a: npt.NDArray[Any]) -> Tensor:
    from tinygrad import Tensor

    return Tensor(np.ascontiguousarray(a), device=device())


@lru_cache(maxsize=8)
def _dft_basis(spec: FrontendSpec) -> tuple[Tensor, Tensor]:
    """Windowed forward real-DFT bases [win, n_bins] (cos and -sin), so frames @ basis = rfft(frames * w)."""
    n = np.arange(spec.win, dtype=np.float64)[:, None]
    k = np.arange(spec.n_bins, dtype=np.float64)[None, :]
    ang = 2.0 * np.pi * n * k / spec.n_fft
    w = periodic_hann(spec.win).astype(np.float64)[:, None]
    return (_t((w * np.cos(ang)).astype(np.float32)).realize(), _t((-w * np.sin(ang)).astype(np.float32)).realize())


@lru_cache(maxsize=8)
def _mel(spec: FrontendSpec) -> Tensor:
    return _t(mel_matrix(spec)).realize()


@lru_cache(maxsize=16)
def _idft_basis(b0: int, b1: int, n_fft: int, upsample: int) -> tuple[Tensor, Tensor]:
    """Bases [B, L] with cc = re @ C + im @ S equal to fftshift(irfft(X, L) * upsample) for bins b0..b1."""
    length = n_fft * upsample
    b = np.arange(b0, b1, dtype=np.float64)[:, None]
    k = np.arange(length, dtype=np.float64)[None, :] - length // 2  # fftshift: output index k is lag k - L/2
    ang = 2.0 * np.pi * b * k / length
    weight = np.where((b == 0) | (2 * b == length), 1.0, 2.0) * upsample / length
    cos = weight * np.cos(ang)
    sin = np.where((b == 0) | (2 * b == length), 0.0, -weight * np.sin(ang))  # irfft ignores DC/Nyquist imag
    return _t(cos.astype(np.float32)).realize(), _t(sin.astype(np.float32)).realize()


def _split(z: npt.NDArray[np.complexfloating]) -> tuple[Tensor, Tensor]:
    z = np.asarray(z, dtype=np.complex64)
    return _t(z.real.astype(np.float32)), _t(z.imag.astype(np.float32))


def _join(re: Tensor, im: Tensor) -> npt.NDArray[np.complex64]:
    out = np.empty(re.shape, np.complex64)
    out.real = re.numpy()
    out.imag = im.numpy()
    return out


def stft(x: npt.NDArray[np.floating], spec: FrontendSpec = DEFAULT_FRONTEND) -> npt.NDArray[np.complex64]:
    """As `edge.dsp.frontend.stft`: [C, N] -> complex64 [C, n_bins, T] (a DFT as one matrix product;
    stack many arrays or files along C to batch them)."""
    x = np.asarray(x, dtype=np.float32)
    c, n = x.shape
    t = n_frames(n, spec)
    if t == 0:
        return np.zeros((c, spec.n_bins, 0), np.complex64)
    frames = np.lib.stride_tricks.sliding_window_view(x, spec.win, axis=-1)[:, :: spec.hop][:, :t]
    cos, sin = _dft_basis(spec)
    f = _t(frames.reshape(c * t, spec.win))
    re = (f @ cos).reshape(c, t, spec.n_bins).permute(0, 2, 1)
    im = (f @ sin).reshape(c, t, spec.n_bins).permute(0, 2, 1)
    return _join(re, im)


def stft_int16(pcm: npt.NDArray[np.int16], spec: FrontendSpec = DEFAULT_FRONTEND) -> npt.NDArray[np.complex64]:
    """As `edge.dsp.pcm.stft_int16`: int16 [N, C] -> complex64 [C, n_bins, T]."""
    return stft(pcm16_to_float(pcm), spec)


def logmel_from_spectra(
    spectra: npt.NDArray[np.complexfloating], spec: FrontendSpec = DEFAULT_FRONTEND
) -> npt.NDArray[np.float32]:
    """As `edge.dsp.frontend.logmel_from_spectra`: [C, n_bins, T] -> [T, n_mels] of the channel mean."""
    if spectra.shape[2] == 0:
        return np.zeros((0, spec.n_mels), np.float32)
    re, im = _split(spectra)
    mr, mi = re.mean(axis=0), im.mean(axis=0)
    mag = (mr * mr + mi * mi).sqrt().permute(1, 0)  # [T, F]
    out: npt.NDArray[np.float32] = (mag @ _mel(spec) + spec.log_offset).log().numpy().astype(np.float32)
    return out


@lru_cache(maxsize=8)
def _chunk_dft_basis(spec: FrontendSpec) -> tuple[Tensor, Tensor, int]:
    """The windowed DFT bases of `_dft_basis` padded with zero rows to k whole hops (k = ceil(win / hop)),
    so a frame can be k consecutive hop-sized chunks; returns (cos, sin, k)."""
    k = -(-spec.win // spec.hop)
    n = np.arange(k * spec.hop, dtype=np.float64)[:, None]
    ang = 2.0 * np.pi * n * np.arange(spec.n_bins, dtype=np.float64)[None, :] / spec.n_fft
    w = np.zeros((k * spec.hop, 1))
    w[: spec.win, 0] = periodic_hann(spec.win)
    return _t((w * np.cos(ang)).astype(np.float32)).realize(), _t((-w * np.sin(ang)).astype(np.float32)).realize(), k


def logmel_batch(x: npt.NDArray[np.floating], spec: FrontendSpec = DEFAULT_FRONTEND) -> npt.NDArray[np.float32]:
    """As `edge.dsp.frontend.logmel_batch`: [B, C, N] -> [B, T, n_mels], fused on the device: the audio goes
    up once, only the log-mel comes back. The STFT is linear, so the channel mean is taken of the audio
    first; frames are built on the device from hop-sized chunks."""
    from tinygrad import Tensor

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise InputError(f"logmel_batch needs audio shaped [recordings, channels, samples], got {x.shape}")
    b, _, n = x.shape
    t = n_frames(n, spec)
    if t == 0 or b == 0:
        return np.zeros((b, t, spec.n_mels), np.float32)
    cos, sin, k = _chunk_dft_basis(spec)
    need = (t - 1 + k) * spec.hop  # samples the chunks cover; past the last frame only zero basis rows
    a = x[:, :, :need] if n >= need else np.pad(x, ((0, 0), (0, 0), (0, need - n)))
    chunks = _t(a).mean(axis=1).reshape(b, t - 1 + k, spec.hop)
    frames = Tensor.cat(*[chunks[:, j : j + t] for j in range(k)], dim=2)  # [B, T, k * hop]
    re, im = frames @ cos, frames @ sin
    out = ((re * re + im * im).sqrt() @ _mel(spec) + spec.log_offset).log()
    return np.asarray(out.numpy(), dtype=np.float32)


def phat_cross_spectra(
    spectra: npt.NDArray[np.complexfloating],
    pairs: npt.NDArray[np.intp],
    bins: slice,
    weights: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.complex64]:
    """As `edge.dsp.gcc_phat.phat_cross_spectra`: [C, F, T] -> [T, P, B], times `weights` [T, B]."""
    x = np.asarray(spectra)[:, bins, :]
    pr = np.asarray(pairs)
    if x.shape[2] == 0 or len(pr) == 0:
        return np.zeros((x.shape[2], len(pr), x.shape[1]), np.complex64)
    re, im = _split(x)
    ii, jj = pr[:, 0].tolist(), pr[:, 1].tolist()
    ar, ai, br, bi = re[ii], im[ii], re[jj], im[jj]  # [P, B, T]
    cr = ar * br + ai * bi
    ci = ai * br - ar * bi
    den = (cr * cr + ci * ci).sqrt() + EPS
    out = _join((cr / den).permute(2, 0, 1), (ci / den).permute(2, 0, 1))
    if weights is not None:
        out *= np.asarray(weights, np.float32)[:, None, :]
    return out


def gcc(cross: npt.NDArray[np.complexfloating], bins: slice, n_fft: int, upsample: int) -> npt.NDArray[np.float32]:
    """As `edge.dsp.gcc_phat.gcc`: [P, B] -> [P, n_fft * upsample] (an inverse DFT as a matrix product)."""
    b0, b1, step = bins.indices(n_fft // 2 + 1)
    if step != 1:
        raise ConfigError(f"tinygrad gcc needs a contiguous bin range, got {bins!r}")
    cos, sin = _idft_basis(b0, b1, n_fft, upsample)
    re, im = _split(cross)
    out: npt.NDArray[np.float32] = (re @ cos + im @ sin).numpy().astype(np.float32)
    return out


def srp_map(cc: npt.NDArray[np.floating], lag_index: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """As `edge.dsp.srp_phat.srp_map`: cc [P, L], lag_index [G, P] -> power [G] (a gather on the device)."""
    from tinygrad import dtypes

    c = np.asarray(cc, dtype=np.float32)
    p, length = c.shape
    lag = np.asarray(lag_index, dtype=np.float64)
    if lag.ndim != 2 or lag.shape[1] != p:
        raise InputError(f"lag_index shape {lag.shape} does not match {p} pairs")
    k = np.clip(lag, 0.0, length - 1.000001)
    k0 = np.floor(k)
    frac = _t((k - k0).astype(np.float32).T)  # [P, G]
    idx = _t(k0.astype(np.int32).T).cast(dtypes.int32)
    ct = _t(c)
    v0 = ct.gather(1, idx)
    v1 = ct.gather(1, idx + 1)
    out: npt.NDArray[np.float32] = (v0 * (1.0 - frac) + v1 * frac).sum(axis=0).numpy().astype(np.float32)
    return out


def frame_power(spectra: npt.NDArray[np.complexfloating], weights: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """As `edge.dsp.level.frame_power`: [C, F, T], weights [F] -> [T] (float32 on the device)."""
    re, im = _split(spectra)
    w = _t(np.asarray(weights, dtype=np.float32))
    p = ((re * re + im * im).sum(axis=0).permute(1, 0) @ w) / spectra.shape[0]
    return np.asarray(p.numpy(), dtype=np.float64)


KERNELS: dict[str, Callable[..., Any]] = {
    "stft": stft,
    "stft_int16": stft_int16,
    "logmel_from_spectra": logmel_from_spectra,
    "logmel_batch": logmel_batch,
    "phat_cross_spectra": phat_cross_spectra,
    "gcc": gcc,
    "srp_map": srp_map,
    "frame_power": frame_power,
}
