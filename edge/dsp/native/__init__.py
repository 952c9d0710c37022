"""The native DSP backend: C kernels (`tympan_dsp.c`: AVX2/SSE2 on x86-64, NEON on aarch64, portable C
elsewhere) loaded with ctypes; FFTs through pocketfft (`scipy.fft`, single thread).

Where the library comes from, first match wins:

1. built by the package build: `pip install .` / `pip install -e .` compile `tympan_dsp.c` into
   `_tympan_dsp*.so` next to this file (setup.py; a missing compiler only warns);
2. compiled on first use into a cache directory (`$TYMPAN_CACHE_DIR`, else `$XDG_CACHE_HOME/tympan`,
   else `~/.cache/tympan`), named by a hash of the source, flags and compiler, with `$CC` or the first
   of cc, gcc, clang on PATH (`TYMPAN_NATIVE_BUILD=0` turns this off);
3. nothing: the backend is not registered, a warning says why, and the numpy reference runs.

On x86-64 the AVX2+FMA build is loaded when the CPU has both, else the SSE2 build;
`TYMPAN_NATIVE_SIMD=portable|sse2|avx2|neon` forces a variant (tests use it to check each path).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.dsp.dcblock import check_dc_block, dc_block_state
from edge.dsp.frontend import (
    DEFAULT_FRONTEND,
    FrontendSpec,
    logmel_batch_with,
    mel_matrix,
    n_frames,
    periodic_hann,
)
from edge.dsp.gcc_phat import EPS
from edge.dsp.srp_phat import NB_EPS, SrpGrid, check_cover, check_votes
from edge.errors import ConfigError, InputError

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "tympan_dsp.c"
ABI_VERSION = 19  # TP_ABI_VERSION in tympan_dsp.c
VARIANTS = ("avx2", "sse2", "neon", "portable")
# Compiler flags per variant (the package build in setup.py uses the same).
VARIANT_FLAGS: dict[str, tuple[str, ...]] = {
    "avx2": ("-mavx2", "-mfma"),
    "sse2": (),
    "neon": (),
    "portable": ("-DTP_PORTABLE",),
}
BASE_FLAGS = ("-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno", "-fvisibility=hidden")

_P = ctypes.c_void_p
_I = ctypes.c_int64
_Ints = npt.NDArray[np.int64]
_Floats = npt.NDArray[np.floating]
_F64 = npt.NDArray[np.float64]
_D = ctypes.c_double
_FL = ctypes.c_float
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "tp_abi_version": (ctypes.c_int, []),
    "tp_simd": (ctypes.c_char_p, []),
    "tp_cpu_has_avx2": (ctypes.c_int, []),
    "tp_simd_width": (ctypes.c_int, []),
    "tp_stft_f32": (None, [_P, _I, _I, _I, _I, _P, _I, _I, _P, _P, _P, _P, _P]),
    # x, C, xs, T, hop, win, wlen, M, tw, rot, rev | NM, bstart, blen, wofs, wts, log_offset, work, out
    "tp_logmel_f32": (None, [_P, _I, _I, _I, _I, _P, _I, _I, _P, _P, _P, _I, _P, _P, _P, _P, _FL, _P, _P]),
    "tp_frame_f32": (None, [_P, _I, _I, _I, _I, _P, _I, _I, _P]),
    "tp_frame_i16": (None, [_P, _I, _I, _I, _P, _I, _I, _P]),
    "tp_transpose_c64": (None, [_P, _I, _I, _I, _P]),
    "tp_logmel": (None, [_P, _I, _I, _I, _I, _P, _P, _P, _P, ctypes.c_float, _P, _P]),
    "tp_phat_cross": (ctypes.c_int, [_P, _I, _I, _I, _P, _I, _I, _I, ctypes.c_float, _P, _P, _P]),
    "tp_onset_weights": (None, [_P, _I, _I, _I, _I, _I, _I, ctypes.c_float, _P, _P, _P]),
    "tp_cross_blocks": (
        ctypes.c_int, [_P, _I, _I, _I, _P, _I, _I, _I, ctypes.c_float, _I, ctypes.c_float, _P, _I, _P, _P, _P]
    ),
    "tp_srp_map": (None, [_P, _I, _I, _P, _I, _P]),
    "tp_srp_refine": (None, [_P, _I, _I, _P, *[ctypes.c_double] * 4, _P, _P, _P, _I, ctypes.c_double, _P, _P]),
    # cc, P, L, lag, G, az_start, az_vals, A, grid_az, grid_el, circular, min_rel, max_src, min_sep, diff,
    # c, rate, up, lag0, daz, del, sizes, n_levels, el_min, power, norm, idx, lag scratch, out
    "tp_srp_peaks": (
        _I,
        [_P, _I, _I, _P, _I, _P, _P, _I, _P, _P, _I, _D, _I, _D, _P, *[_D] * 4, _P, _P, _P, _I, _D, *[_P] * 5],
    ),
    "tp_vote_hist": (_I, [_P, _P, _I, _I, _P, _I, _I, _P, _P, _P]),
    "tp_nb_vote": (None, [_P, _I, _I, _I, _P, _P, _I, _I, ctypes.c_float, _P, _P, _P]),
    # x, K, P, B, sr, si, G, cand, N, w, beta, eps, scratch, m, pair
    "tp_cover_scores": (None, [_P, _I, _I, _I, _P, _P, _I, _P, _I, _P, ctypes.c_float, ctypes.c_float, _P, _P, _P]),
    "tp_frame_power": (None, [_P, _I, _I, _I, _P, _P]),
    "tp_ring_accumulate": (None, [_I, _I, _I, _I, _P, _P, _I, _P, _P, _P, _P]),
    "tp_leq_dbfs": (ctypes.c_double, [_P, _I]),
    "tp_dc_block": (None, [_P, _I, _I, _D, _P, _P]),
    # x, C, N, xs, r, state, buf, cap, n0 | T, hop, win, wlen, M, tw, rot, rev, work, out
    "tp_front_block": (_I, [_P, _I, _I, _I, _D, _P, _P, _I, _I, *(_I, _I, _P, _I, _I, _P, _P, _P, _P, _P)]),
    # spec, C, F, T, pw_w, power | b0, b1, K, floor, hist, opw, ow | pairs, P, eps, tmp, cross | first, sub, R,
    # psum, pcount, pframe, ring | M, bstart, blen, wofs, wts, log_offset, mag, feats
    "tp_block_post": (
        ctypes.c_int,
        [
            *(_P, _I, _I, _I, _P, _P),
            *(_I, _I, _I, _FL, _P, _P, _P),
            *(_P, _I, _FL, _P, _P),
            *(_I, _I, _I, _P, _P, _P, _P),
            *(_I, _P, _P, _P, _P, _FL, _P, _P),
        ],
    ),
}
TCHUNK = 32  # frames per chunk in the C kernels (scratch sizes)
LM_TCHUNK = 32  # frames per chunk of tp_logmel (LM_TCHUNK in tympan_dsp.c)


class NativeUnavailable(RuntimeError):
    """The C library could not be found or built (the caller falls back to numpy)."""


def machine_variants() -> tuple[str, ...]:
    """The variants that can run on this machine, best first."""
    m = platform.machine().lower()
    if m in ("x86_64", "amd64"):
        return ("avx2", "sse2", "portable")
    if m in ("aarch64", "arm64"):
        return ("neon", "portable")
    return ("portable",)


def _cache_dir() -> Path:
    root = os.environ.get("TYMPAN_CACHE_DIR")
    if root:
        return Path(root) / "native"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "tympan" / "native"


def find_compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc and shutil.which(cc.split()[0]):
        return cc
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def compile_library(variant: str, out_dir: Path | None = None, cc: str | None = None) -> Path:
    """Compile `tympan_dsp.c` for `variant` into the cache (or `out_dir`); reuses an earlier build."""
    cc = cc or find_compiler()
    if cc is None:
        raise NativeUnavailable("no C compiler (set CC, or install cc/gcc/clang)")
    flags = (*BASE_FLAGS, *VARIANT_FLAGS[variant])
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join((cc, *flags, platform.machine())).encode()).hexdigest()[:16]
    target_dir = out_dir or _cache_dir() / key
    target = target_dir / f"libtympan_dsp_{variant}.so"
    if target.exists():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target_dir)
    os.close(fd)
    cmd = [*cc.split(), *flags, str(SOURCE), "-o", tmp, "-lm"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise NativeUnavailable(f"{' '.join(cmd)} failed: {proc.stderr.strip()[:500]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _packaged(variant: str) -> Path | None:
    stem = "_tympan_dsp_avx2" if variant == "avx2" else "_tympan_dsp"
    if variant in ("portable",):
        return None
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = HERE / f"{stem}{suffix}"
        if p.exists():
            return p
    return None


@dataclass(frozen=True)
class Library:
    """A loaded build of the C kernels."""

    variant: str
    path: str
    lib: ctypes.CDLL


def _open(path: Path, variant: str) -> Library:
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    if lib.tp_abi_version() != ABI_VERSION:
        raise NativeUnavailable(f"{path}: ABI {lib.tp_abi_version()}, expected {ABI_VERSION} (stale build)")
    simd = lib.tp_simd().decode()
    if simd != variant:
        raise NativeUnavailable(f"{path}: built for {simd}, wanted {variant}")
    return Library(variant, str(path), lib)


def load_variant(variant: str) -> Library:
    """Load (building into the cache if needed) one variant; NativeUnavailable if impossible."""
    if variant not in VARIANTS:
        raise ConfigError(f"TYMPAN_NATIVE_SIMD={variant!r}: must be one of {', '.join(VARIANTS)}")
    if variant not in machine_variants():
        raise NativeUnavailable(f"variant {variant!r} cannot run on {platform.machine()}")
    if variant == "avx2" and not _cpu_has_avx2():
        raise NativeUnavailable("this CPU lacks AVX2/FMA")
    errors: list[str] = []
    packaged = _packaged(variant)
    if packaged is not None:
        try:
            return _open(packaged, variant)
        except (OSError, AttributeError, NativeUnavailable) as e:
            errors.append(str(e))
    if os.environ.get("TYMPAN_NATIVE_BUILD", "1") == "0":
        raise NativeUnavailable("; ".join([*errors, "no packaged build and TYMPAN_NATIVE_BUILD=0"]))
    try:
        return _open(compile_library(variant), variant)
    except (OSError, AttributeError, subprocess.SubprocessError) as e:
        raise NativeUnavailable("; ".join([*errors, str(e)])) from None


def _cpu_has_avx2() -> bool:
    try:
        return bool(load_variant("sse2").lib.tp_cpu_has_avx2())
    except NativeUnavailable:
        return False


@lru_cache(maxsize=1)
def library() -> Library:
    """The best build for this machine (or the forced one). Raises NativeUnavailable."""
    forced = os.environ.get("TYMPAN_NATIVE_SIMD")
    if forced:
        return load_variant(forced)
    errors = []
    for v in machine_variants():
        try:
            return load_variant(v)
        except NativeUnavailable as e:
            errors.append(f"{v}: {e}")
    raise NativeUnavailable("; ".join(errors))


# --- kernels --------------------------------------------------------------------------------------
def _ptr(a: np.ndarray) -> int:
    """The data address of a C-contiguous array (`ndarray.ctypes` costs ~10 us a call; this ~2 us)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a.data))
    except (TypeError, ValueError):  # read-only or empty
        return int(a.ctypes.data)


@lru_cache(maxsize=8)
def _window(win: int) -> tuple[npt.NDArray[np.float32], int]:
    """The analysis window and its address (the tuple keeps the array alive)."""
    w = np.array(periodic_hann(win), dtype=np.float32)
    return w, _ptr(w)


@lru_cache(maxsize=8)
def _mel_ptrs(spec: FrontendSpec) -> tuple[SparseMel, tuple[int, int, int, int]]:
    m = sparse_mel(spec)
    return m, (_ptr(m.start), _ptr(m.length), _ptr(m.offset), _ptr(m.weights))


@lru_cache(maxsize=4)
def _fft_ptrs(n_fft: int) -> tuple[FftTables, tuple[int, int, int]] | None:
    t = fft_tables(n_fft)
    return None if t is None else (t, (_ptr(t.tw), _ptr(t.rot), _ptr(t.rev)))


def _check_level_rings(where: str, psum: _F64, pcount: _Ints, pframe: _Ints) -> None:
    """The per-output-frame level rings the C code writes in place: writeable, contiguous, one length."""
    n = len(psum)
    for name, a, dt in (("psum", psum, np.float64), ("pcount", pcount, np.int64), ("pframe", pframe, np.int64)):
        if a.dtype != dt or a.shape != (n,) or not a.flags.c_contiguous or not a.flags.writeable:
            raise InputError(f"{where}: {name} must be a writeable contiguous {dt.__name__} [{n}]")


def _c64(a: npt.NDArray[np.complexfloating]) -> npt.NDArray[np.complex64]:
    return np.ascontiguousarray(a, dtype=np.complex64)


@dataclass(frozen=True)
class SparseMel:
    """The mel matrix [F, M] as one run of nonzero weights per band."""

    start: npt.NDArray[np.int32]
    length: npt.NDArray[np.int32]
    offset: npt.NDArray[np.int32]
    weights: npt.NDArray[np.float32]


@lru_cache(maxsize=8)
def sparse_mel(spec: FrontendSpec) -> SparseMel:
    w = mel_matrix(spec)
    starts, lengths, offsets, chunks = [], [], [], []
    off = 0
    for m in range(w.shape[1]):
        nz = np.flatnonzero(w[:, m])
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 0)
        starts.append(lo)
        lengths.append(hi - lo)
        offsets.append(off)
        chunks.append(w[lo:hi, m])
        off += hi - lo
    return SparseMel(
        np.asarray(starts, np.int32),
        np.asarray(lengths, np.int32),
        np.asarray(offsets, np.int32),
        np.ascontiguousarray(np.concatenate([*chunks, np.zeros(1, np.float32)]), dtype=np.float32),
    )


@dataclass(frozen=True)
class FftTables:
    """Twiddles for the fused STFT's real FFT of n_fft = 2M points."""

    tw: npt.NDArray[np.complex64]  # [M / 2] exp(-2 pi i k / M)
    rot: npt.NDArray[np.complex64]  # [M + 1] exp(-2 pi i k / 2M)
    rev: npt.NDArray[np.int32]  # [M] bit reversal of log2(M) bits


def _exp(k: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.complex64]:
    z = np.exp(-2j * np.pi * k / n)
    z.real[np.abs(z.real) < 1e-12] = 0.0  # exact zeros at the quarter turns
    z.imag[np.abs(z.imag) < 1e-12] = 0.0
    return z.astype(np.complex64)


@lru_cache(maxsize=4)
def fft_tables(n_fft: int) -> FftTables | None:
    """Tables for a power-of-two n_fft >= 8, None otherwise (the STFT then uses scipy.fft)."""
    m = n_fft // 2
    if n_fft < 8 or n_fft & (n_fft - 1):
        return None
    bits = m.bit_length() - 1
    rev = np.array([int(format(k, f"0{bits}b")[::-1], 2) for k in range(m)], np.int32)
    return FftTables(_exp(np.arange(m // 2, dtype=np.float64), m), _exp(np.arange(m + 1, dtype=np.float64), n_fft), rev)


def _bin_range(bins: slice, n_bins: int, kernel: str) -> tuple[int, int]:
    """(b0, b1) of a bin slice over `n_bins`; the C kernels read contiguous ranges only."""
    b0, b1, step = bins.indices(n_bins)
    if step != 1:
        raise ConfigError(f"native {kernel} needs a contiguous bin range, got {bins!r}")
    return b0, b1


def _pairs_error(pairs: _Ints, channels: int) -> InputError:
    return InputError(f"microphone pairs {pairs.tolist()} do not fit {channels} channels")


class Kernels:
    """The native kernels of one loaded build; each method matches its numpy reference."""

    def __init__(self, lib: Library) -> None:
        self.variant = lib.variant
        self.lib = lib.lib
        self._local = threading.local()  # per-thread scratch, reused between calls
        # srp_peaks: per grid, its scratch and the addresses of its tables (dropped with the grid)
        self._grids: weakref.WeakKeyDictionary[SrpGrid, Any] = weakref.WeakKeyDictionary()
        self._grid_lock = threading.Lock()
        # The fused STFT (own FFT, SIMD across frames) beats pocketfft only with SIMD lanes to fill.
        self.fused_fft = lib.lib.tp_simd_width() > 1

    def _scratch(self, shape: tuple[int, ...]) -> tuple[npt.NDArray[np.float32], int]:
        """A float32 work array of `shape` and its address, reused between calls of this thread (a fresh
        multi-MB array per call costs page faults)."""
        n = math.prod(shape)
        buf: npt.NDArray[np.float32] | None = getattr(self._local, "buf", None)
        if buf is None or buf.size < n:
            buf = np.empty(max(n, 4096), np.float32)
            self._local.buf, self._local.ptr = buf, _ptr(buf)
        return buf[:n].reshape(shape), int(self._local.ptr)

    def as_dict(self) -> dict[str, Callable[..., Any]]:
        from edge.dsp.backends import KERNELS  # the registry's list (imported here: it imports this module)

        return {name: getattr(self, name) for name in KERNELS}

    def _spectra_from_frames(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.complex64]:
        """Sample-major frames [C, n_fft, T] -> spectra [C, n_bins, T] (FFT along axis 1: no transpose)."""
        import scipy.fft

        return np.asarray(scipy.fft.rfft(frames, axis=1, workers=1, overwrite_x=True), dtype=np.complex64)

    def stft(self, x: npt.NDArray[np.floating], spec: FrontendSpec = DEFAULT_FRONTEND) -> npt.NDArray[np.complex64]:
        """Causal STFT as `edge.dsp.frontend.stft`: [C, N] -> complex64 [C, n_bins, T]. Rows of float32
        samples with unit stride are read in place (a column slice of a longer buffer needs no copy)."""
        sp = spec
        x = np.asarray(x)
        if x.ndim != 2 or x.dtype != np.float32 or x.strides[1] != 4 or x.strides[0] % 4 or x.strides[0] < 0:
            x = np.ascontiguousarray(x, dtype=np.float32)
        c, n = x.shape
        xs = x.strides[0] // 4  # row stride in samples
        t = n_frames(n, sp)
        if t == 0:
            return np.zeros((c, sp.n_bins, 0), np.complex64)
        px = _ptr(x)  # a strided view falls back to its first element's address
        _, pwin = _window(sp.win)
        tables = _fft_ptrs(sp.n_fft) if self.fused_fft else None
        if tables is not None:
            m = sp.n_fft // 2
            out = np.empty((c, m + 1, t), np.complex64)
            _, pwork = self._scratch((2 * m * 8 + 16,))
            ptw, prot, prev = tables[1]
            self.lib.tp_stft_f32(px, c, xs, t, sp.hop, pwin, sp.win, m, ptw, prot, prev, pwork, _ptr(out))
            return out
        frames, pframes = self._scratch((c, sp.n_fft, t))
        self.lib.tp_frame_f32(px, c, xs, t, sp.hop, pwin, sp.win, sp.n_fft, pframes)
        return self._spectra_from_frames(frames)

    def stft_int16(
        self, pcm: npt.NDArray[np.int16], spec: FrontendSpec = DEFAULT_FRONTEND
    ) -> npt.NDArray[np.complex64]:
        """STFT of interleaved int16 PCM [N, C] (a sound card's layout): conversion, de-interleaving and
        windowing in one C pass."""
        sp = spec
        if pcm.dtype != np.int16 or pcm.ndim != 2:
            raise InputError(f"int16 PCM must be int16 [N, C], got {pcm.dtype} with shape {pcm.shape}")
        pcm = np.ascontiguousarray(pcm)
        n, c = pcm.shape
        t = n_frames(n, sp)
        if t == 0:
            return np.zeros((c, sp.n_bins, 0), np.complex64)
        frames, pframes = self._scratch((c, sp.n_fft, t))
        self.lib.tp_frame_i16(_ptr(pcm), c, t, sp.hop, _window(sp.win)[1], sp.win, sp.n_fft, pframes)
        return self._spectra_from_frames(frames)

    def logmel_from_spectra(
        self, spectra: npt.NDArray[np.complexfloating], spec: FrontendSpec = DEFAULT_FRONTEND
    ) -> npt.NDArray[np.float32]:
        """As `edge.dsp.frontend.logmel_from_spectra`: [C, n_bins, T] -> [T, n_mels] (channel mean)."""
        sp = spec
        s = _c64(spectra)
        c, f, t = s.shape
        _, (pstart, plen, pofs, pw) = _mel_ptrs(sp)
        out = np.empty((t, sp.n_mels), np.float32)
        if t == 0:
            return out
        _, pscratch = self._scratch((f * LM_TCHUNK,))
        self.lib.tp_logmel(
            _ptr(s), c, f, t, sp.n_mels, pstart, plen, pofs, pw, sp.log_offset, pscratch, _ptr(out)
        )  # fmt: skip
        return out

    def logmel_batch(
        self, x: npt.NDArray[np.floating], spec: FrontendSpec = DEFAULT_FRONTEND
    ) -> npt.NDArray[np.float32]:
        """As `edge.dsp.frontend.logmel_batch`: [B, C, N] -> [B, T, n_mels]. Mono recordings (C = 1) go
        through one fused C call (`tp_logmel_f32`: STFT, magnitude, mel and log per SIMD group of frames,
        the spectra never written out; the same values as `stft` then `logmel_from_spectra`, bit for bit);
        several channels through this build's STFT and log-mel of their mean, one recording at a time."""
        a = np.asarray(x)
        tables = _fft_ptrs(spec.n_fft) if self.fused_fft else None
        if a.ndim != 3 or a.shape[1] != 1 or tables is None:
            return logmel_batch_with(x, spec, self.stft, self.logmel_from_spectra)
        mono = a[:, 0, :]
        if mono.dtype != np.float32 or mono.strides[1] != 4 or mono.strides[0] % 4 or mono.strides[0] < 0:
            mono = np.ascontiguousarray(mono, dtype=np.float32)
        b, n = mono.shape
        t = n_frames(n, spec)
        out = np.empty((b, t, spec.n_mels), np.float32)
        if out.size == 0:
            return out
        m = spec.n_fft // 2
        _, pwin = _window(spec.win)
        ptw, prot, prev = tables[1]
        _, (pstart, plen, pofs, pw) = _mel_ptrs(spec)
        _, pwork = self._scratch((2 * m * 8 + (m + 1) * 8 + 16,))
        self.lib.tp_logmel_f32(
            _ptr(mono), b, mono.strides[0] // 4 if b > 1 else n, t, spec.hop, pwin, spec.win, m, ptw, prot, prev,
            spec.n_mels, pstart, plen, pofs, pw, spec.log_offset, pwork, _ptr(out),
        )  # fmt: skip
        return out

    def phat_cross_spectra(
        self,
        spectra: npt.NDArray[np.complexfloating],
        pairs: npt.NDArray[np.intp],
        bins: slice,
        weights: npt.NDArray[np.float32] | None = None,
    ) -> npt.NDArray[np.complex64]:
        """As `edge.dsp.gcc_phat.phat_cross_spectra`: [C, F, T] -> [T, P, B], times `weights` [T, B]."""
        s = _c64(spectra)
        c, f, t = s.shape
        b0, b1 = _bin_range(bins, f, "phat_cross_spectra")
        pr = np.ascontiguousarray(pairs, dtype=np.int64)
        out = np.empty((t, len(pr), max(0, b1 - b0)), np.complex64)
        if out.size == 0:
            if pr.size and (pr.min() < 0 or pr.max() >= c):
                raise _pairs_error(pr, c)
            return out
        _, pscratch = self._scratch((2 * TCHUNK,))
        # the kernel checks the pairs against the channel count (-1: nothing written)
        wp = None
        if weights is not None:
            if np.shape(weights) != (t, b1 - b0):
                raise InputError(f"cell weights of shape {np.shape(weights)}: expected {(t, b1 - b0)} (frames, bins)")
            w = np.ascontiguousarray(np.asarray(weights, dtype=np.float32).T)  # [B, T]: the kernel's layout
            wp = _ptr(w)
        if self.lib.tp_phat_cross(_ptr(s), c, f, t, _ptr(pr), len(pr), b0, b1, EPS, wp, pscratch, _ptr(out)):
            raise _pairs_error(pr, c)
        return out

    def onset_weights(
        self,
        spectra: npt.NDArray[np.complexfloating],
        bins: slice,
        history: npt.NDArray[np.float32],
        floor: float = 0.0,
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """As `edge.dsp.gcc_phat.onset_weights`: ([T, B] weights, next history [K, B])."""
        s = _c64(spectra)
        c, f, t = s.shape
        b0, b1 = _bin_range(bins, f, "onset_weights")
        hist = np.array(history, dtype=np.float32, order="C")  # a copy: updated in place by the kernel
        if hist.ndim != 2 or hist.shape[1] != b1 - b0:
            raise InputError(f"onset history of shape {hist.shape}: expected (K, {b1 - b0})")
        out = np.empty((b1 - b0, t), np.float32)  # bin-major; returned as its [T, B] transpose, which the
        pw = np.empty(hist.shape[0] + t, np.float32)  # weighted phat_cross_spectra then reads without a copy
        self.lib.tp_onset_weights(
            _ptr(s), c, f, t, b0, b1, hist.shape[0], float(np.float32(floor)), _ptr(hist), _ptr(pw), _ptr(out)
        )
        return out.T, hist

    def cross_blocks(
        self,
        spectra: npt.NDArray[np.complexfloating],
        pairs: npt.NDArray[np.intp],
        bins: slice,
        frames: npt.ArrayLike,
        block: int | npt.ArrayLike,
        onset_frames: int = 0,
        floor: float = 0.0,
    ) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.float64]]:
        """As `edge.dsp.gcc_phat.cross_blocks`, in one C call: per bin, its onset weights, then its
        weighted PHAT cross-spectra summed per block."""
        from edge.dsp.gcc_phat import block_index

        s = _c64(spectra)
        c, f, t = s.shape
        b0, b1 = _bin_range(bins, f, "cross_blocks")
        pr = np.ascontiguousarray(pairs, dtype=np.int64)
        if pr.size and (pr.min() < 0 or pr.max() >= c):
            raise _pairs_error(pr, c)
        if onset_frames < 0:
            raise InputError(f"cross_blocks: onset_frames={onset_frames} must be >= 0")
        idx, ids = block_index(frames, t, block)
        n_blocks = int(ids[-1]) + 1 if ids.size else 0
        out = np.empty((n_blocks, len(pr), max(0, b1 - b0)), np.complex64)
        if idx.size == 0:
            return out, np.zeros(0)
        blk = np.full(t, -1, np.int64)
        blk[idx] = ids
        fw = np.empty(t, np.float64)  # the kernel writes every frame's weight (0 for frames not used)
        _, pwork = self._scratch((4 * t + onset_frames,))
        if self.lib.tp_cross_blocks(
            _ptr(s), c, f, t, _ptr(pr), len(pr), b0, b1, EPS, onset_frames, float(np.float32(floor)), _ptr(blk),
            n_blocks, pwork, _ptr(fw), _ptr(out),
        ):  # fmt: skip
            raise _pairs_error(pr, c)
        weights = np.add.reduceat(fw[idx], np.flatnonzero(np.diff(ids, prepend=-1)))
        return out, weights

    def gcc(
        self, cross: npt.NDArray[np.complexfloating], bins: slice, n_fft: int, upsample: int
    ) -> npt.NDArray[np.float32]:
        """As `edge.dsp.gcc_phat.gcc` (pocketfft through scipy.fft in single precision, one thread)."""
        import scipy.fft

        n_bins = n_fft // 2 + 1
        full = np.zeros((cross.shape[0], n_bins), np.complex64)
        full[:, bins] = cross
        length = n_fft * upsample
        cc = scipy.fft.irfft(full, n=length, axis=-1, workers=1, overwrite_x=True)
        half = length // 2
        out = np.empty(cc.shape, np.float32)
        out[:, : length - half] = cc[:, half:]  # fftshift
        out[:, length - half :] = cc[:, :half]
        out *= np.float32(upsample)
        return out

    def srp_map(self, cc: npt.NDArray[np.floating], lag_index: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """As `edge.dsp.srp_phat.srp_map`: cc [P, L], lag_index [G, P] -> power [G]."""
        c = np.ascontiguousarray(cc, dtype=np.float32)
        lag = np.ascontiguousarray(lag_index, dtype=np.float64)
        p, length = c.shape
        if lag.ndim != 2 or lag.shape[1] != p:
            raise InputError(f"lag_index shape {lag.shape} does not match {p} pairs")
        if length < 2:
            raise InputError(f"cross-correlation length {length}: need at least 2 lags")
        out = np.empty(lag.shape[0], np.float32)
        self.lib.tp_srp_map(_ptr(c), p, length, _ptr(lag), lag.shape[0], _ptr(out))
        return out

    def srp_refine(
        self,
        cc: npt.NDArray[np.floating],
        diff_t: npt.NDArray[np.float64],
        scale: tuple[float, float, float, float],
        daz: npt.NDArray[np.float64],
        del_: npt.NDArray[np.float64],
        sizes: npt.NDArray[np.int64],
        az: float,
        el: float,
        el_min: float,
    ) -> tuple[float, float]:
        """As `edge.dsp.srp_phat.srp_refine`: the whole coarse-to-fine search in one C call."""
        c = np.ascontiguousarray(cc, dtype=np.float32)
        d = np.ascontiguousarray(diff_t, dtype=np.float64)
        da = np.ascontiguousarray(daz, dtype=np.float64)
        de = np.ascontiguousarray(del_, dtype=np.float64)
        sz = np.ascontiguousarray(sizes, dtype=np.int64)
        p, length = c.shape
        if d.shape != (3, p) or da.shape != de.shape or da.ndim != 1 or sz.ndim != 1:
            raise InputError(f"srp_refine: diff {d.shape}, offsets {da.shape}/{de.shape} do not match {p} pairs")
        if length < 2:
            raise InputError(f"cross-correlation length {length}: need at least 2 lags")
        if sz.size and (sz.min() < 1 or int(sz.sum()) != da.size):
            raise InputError(f"srp_refine: level sizes {sz.tolist()} do not add up to {da.size} offsets")
        io = np.array([az, el], np.float64)
        lag = np.empty(p, np.float64)
        self.lib.tp_srp_refine(
            _ptr(c), p, length, _ptr(d), *map(float, scale), _ptr(da), _ptr(de), _ptr(sz), sz.size,
            float(el_min), _ptr(io), _ptr(lag),
        )  # fmt: skip
        return float(io[0]), float(io[1])

    def srp_peaks(
        self,
        cc: npt.NDArray[np.floating],
        grid: SrpGrid,
        min_rel_power: float,
        max_sources: int,
        min_separation_deg: float,
    ) -> npt.NDArray[np.float64]:
        """As `edge.dsp.srp_phat.srp_peaks`: the map, its profile peaks and their refinement in one C call
        (the grid's read-only tables were checked when it was made; their addresses are kept per grid)."""
        c = np.ascontiguousarray(cc, dtype=np.float32)
        g, p = grid.lag_index.shape
        if c.ndim != 2 or c.shape[0] != p or c.shape[1] < 2:
            raise InputError(f"srp_peaks: cc of shape {c.shape} does not fit {p} pairs (and at least 2 lags)")
        plan = self._grids.get(grid)
        if plan is None:
            a = len(grid.az_start)
            scratch = (np.empty(g, np.float32), np.empty(a, np.float64), np.empty(a, np.int64), np.empty(p))
            ptrs = tuple(
                _ptr(x)
                for x in (grid.lag_index, grid.az_start, grid.az_vals, grid.grid_az, grid.grid_el, grid.diff_t,
                          grid.daz, grid.del_, grid.sizes, *scratch)
            )  # fmt: skip
            plan = (scratch, ptrs, a)
            self._grids[grid] = plan
        _, (plag, pst, pvals, pgaz, pgel, pdiff, pdaz, pdel, psz, ppow, pnorm, pidx, plb), a = plan
        n_max = max(0, int(max_sources))
        out = np.empty((max(n_max, 1), 4), np.float64)
        with self._grid_lock:  # the plan's scratch is shared by the threads using this grid
            n = self.lib.tp_srp_peaks(
                _ptr(c), p, c.shape[1], plag, g, pst, pvals, a, pgaz, pgel, int(grid.circular),
                float(min_rel_power), n_max, float(min_separation_deg), pdiff, *grid.scale, pdaz, pdel, psz,
                grid.sizes.size, grid.el_min, ppow, pnorm, pidx, plb, _ptr(out),
            )  # fmt: skip
        return out[:n].copy()

    def nb_vote(
        self,
        blocks: npt.NDArray[np.complexfloating],
        steer_re: npt.NDArray[np.floating],
        steer_im: npt.NDArray[np.floating],
        mirror: bool = False,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """As `edge.dsp.srp_phat.nb_vote`: blocks [K, P, B], steering [B, P, G] -> vote, weight [B, K];
        with `mirror` (G even) only the first G / 2 directions' products are computed."""
        x = _c64(blocks)
        sr = np.ascontiguousarray(steer_re, dtype=np.float32)
        si = np.ascontiguousarray(steer_im, dtype=np.float32)
        k, p, b = x.shape
        if sr.ndim != 3 or sr.shape[:2] != (b, p) or sr.shape[2] < 1 or si.shape != sr.shape:
            raise InputError(f"steering of shapes {sr.shape}, {si.shape} does not match blocks of shape {x.shape}")
        g = sr.shape[2]
        vote = np.empty((b, k), np.int64)
        weight = np.empty((b, k), np.float32)
        if vote.size == 0:
            return vote, weight
        _, pscratch = self._scratch((2 * k * p + 16,))
        if mirror and g % 2:
            raise InputError(f"nb_vote: mirrored steering needs an even number of directions, got {g}")
        self.lib.tp_nb_vote(
            _ptr(x), k, p, b, _ptr(sr), _ptr(si), g, int(bool(mirror)), NB_EPS, pscratch, _ptr(vote), _ptr(weight)
        )
        return vote, weight

    def cover_scores(
        self,
        blocks: npt.NDArray[np.complexfloating],
        steer_re: npt.NDArray[np.floating],
        steer_im: npt.NDArray[np.floating],
        cand: npt.ArrayLike,
        weight: npt.NDArray[np.floating],
        sharpness: float,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
        """As `edge.dsp.srp_phat.cover_scores`, in one pass over the cells (no [B, K, N] temporaries)."""
        x, sr, si, c, w = check_cover(blocks, steer_re, steer_im, cand, weight)
        k, p, b = x.shape
        n = len(c)
        pair = np.zeros((n, n), np.float64)
        m = np.zeros((n, b * k), np.float32)
        if n == 0 or k == 0 or b == 0:
            return pair, m
        _, pscratch = self._scratch((2 * p + 16,))
        self.lib.tp_cover_scores(
            _ptr(x), k, p, b, _ptr(sr), _ptr(si), sr.shape[2], _ptr(c), n, _ptr(w), float(sharpness), NB_EPS,
            pscratch, _ptr(m), _ptr(pair),
        )  # fmt: skip
        return pair, m

    def vote_hist(
        self, vote: _Ints, weight: _Floats, n_dirs: int, taps: _Floats, circular: bool
    ) -> tuple[_F64, list[int]]:
        """As `edge.dsp.srp_phat.vote_hist`: histogram, smoothing and its sorted peaks in one C call."""
        n = int(n_dirs)
        v, w = check_votes(vote, weight, n, taps)
        k = np.ascontiguousarray(taps, dtype=np.float64)
        hist = np.empty(n, np.float64)
        raw, peaks = np.empty(n + len(k) - 1, np.float64), np.empty(n, np.int64)
        m = self.lib.tp_vote_hist(
            _ptr(v), _ptr(w), v.size, n, _ptr(k), len(k), int(bool(circular)), _ptr(raw), _ptr(hist), _ptr(peaks)
        )
        if m < 0:
            raise InputError(f"vote_hist: votes span {int(v.min())}..{int(v.max())}, outside 0..{n - 1}")
        found: list[int] = peaks[:m].tolist()
        return hist, found

    def frame_power(
        self, spectra: npt.NDArray[np.complexfloating], weights: npt.NDArray[np.floating]
    ) -> npt.NDArray[np.float64]:
        """As `edge.dsp.level.frame_power`: [C, F, T], weights [F] -> mean power per frame [T]."""
        s = _c64(spectra)
        c, f, t = s.shape
        w = np.ascontiguousarray(weights, dtype=np.float64)
        if w.shape != (f,):
            raise InputError(f"level weights of shape {w.shape} do not match {f} bins")
        out = np.empty(t, np.float64)
        self.lib.tp_frame_power(_ptr(s), c, f, t, _ptr(w), _ptr(out))
        return out

    def ring_accumulate(
        self,
        first: int,
        sub: int,
        power: npt.NDArray[np.float64],
        cross: npt.NDArray[np.complex64] | None,
        psum: npt.NDArray[np.float64],
        pcount: npt.NDArray[np.int64],
        pframe: npt.NDArray[np.int64],
        ring: npt.NDArray[np.complex64] | None,
    ) -> None:
        """As `edge.dsp.rings.ring_accumulate` (in place; the rings must be C-contiguous of their dtypes)."""
        pw = np.ascontiguousarray(power, dtype=np.float64)
        t, n_slots = len(pw), len(psum)
        if t > (n_slots - 1) * sub or sub < 1 or first < 0:
            raise InputError(f"ring_accumulate: {t} frames overrun a ring of {n_slots} slots of {sub} frames")
        _check_level_rings("ring_accumulate", psum, pcount, pframe)
        if (cross is None) != (ring is None):
            raise InputError("ring_accumulate: cross-spectra and their ring must come together, one row per frame")
        n, pc, pr = 0, 0, 0
        if cross is not None and ring is not None:
            c = _c64(cross)
            n = math.prod(ring.shape[1:])
            fits = ring.dtype == np.complex64 and len(ring) == n_slots
            if not (fits and ring.flags.c_contiguous and ring.flags.writeable):
                raise InputError(f"ring_accumulate: ring must be a writeable contiguous complex64 [{n_slots}, ...]")
            if len(c) != t or c.shape[1:] != ring.shape[1:]:
                raise InputError(f"ring_accumulate: cross-spectra {c.shape} do not fit the ring {ring.shape}")
            pc, pr = (_ptr(c) if c.size else 0), _ptr(ring)
            cross = c  # keep alive
        if t == 0:
            return
        self.lib.tp_ring_accumulate(
            int(first), t, int(sub), n_slots, _ptr(pw), pc, n, _ptr(psum), _ptr(pcount), _ptr(pframe), pr
        )  # fmt: skip

    def leq_dbfs(self, x: npt.NDArray[np.floating]) -> float:
        """As `edge.dsp.level.leq_dbfs`: equivalent level of samples (all channels), dBFS."""
        a = np.ascontiguousarray(x, dtype=np.float32)
        if a.size == 0:
            raise InputError("Leq of no samples")
        return float(self.lib.tp_leq_dbfs(_ptr(a), a.size))

    def dc_block(self, x: _Floats, r: float, state: _F64) -> npt.NDArray[np.float32]:
        """As `edge.dsp.dcblock.dc_block`: samples [C, N] -> float32 without DC; `state` updated in place."""
        check_dc_block(x, r, state)
        a = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty(a.shape, np.float32)
        self.lib.tp_dc_block(_ptr(a), a.shape[0], a.shape[1], float(r), _ptr(state), _ptr(out))
        return out


@lru_cache(maxsize=1)
def kernels() -> Kernels:
    """The kernels of the best build for this machine. Raises NativeUnavailable."""
    return Kernels(library())


class StreamFront:
    """`edge.stft.StftStage`'s work on a block in one C call (`tp_front_block`): the DC blocker (pole `r`;
    0: none) into the buffer of samples not yet covered by a whole frame, the fused STFT of its whole
    frames, and the rest kept for the next block. The same C code as `dc_block` then `stft` on the joined
    samples, so the same spectra bit for bit; what it saves is their wrappers, checks and the joining
    copies per block. Only where the fused STFT runs (`Kernels.fused_fft`: a power-of-two n_fft and SIMD
    lanes); the stage uses the kernels one by one otherwise."""

    def __init__(self, k: Kernels, spec: FrontendSpec, r: float = 0.0) -> None:
        tables = _fft_ptrs(spec.n_fft) if k.fused_fft else None
        if tables is None:
            raise NativeUnavailable(f"no fused STFT for n_fft={spec.n_fft} in the {k.variant} build")
        if not (r == 0.0 or 0.0 < r < 1.0):
            raise InputError(f"DC blocker pole {r!r}: must be in (0, 1), or 0 for none")
        self._k, self.spec, self.r = k, spec, float(r)
        self._tables = tables  # kept alive with their addresses
        self._win = _window(spec.win)
        self._work = np.empty(2 * (spec.n_fft // 2) * 8 + 16, np.float32)
        self.state: _F64 | None = None  # the DC blocker's, from the stream's first samples
        self.channels = 0
        self.carried = 0  # samples in the buffer not yet covered by a whole frame
        self._buf = np.zeros((0, 0), np.float32)

    def _grow(self, channels: int, need: int) -> None:
        buf = np.zeros((channels, max(need, 2 * self._buf.shape[1], 4096)), np.float32)
        if self._buf.size:
            buf[:, : self.carried] = self._buf[:, : self.carried]
        self._buf = buf

    def __call__(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.complex64] | None:
        """Samples [C, N] -> spectra [C, n_bins, T] of the frames they complete; None (nothing kept from
        this block, the DC blocker restarting at the next one) when they hold NaN or infinite samples."""
        sp = self.spec
        if x.ndim != 2 or x.dtype != np.float32 or x.strides[1] != 4 or x.strides[0] % 4 or x.strides[0] < 0:
            x = np.ascontiguousarray(x, dtype=np.float32)
        c, n = x.shape
        if self.channels == 0:
            self.channels = c
        elif c != self.channels:
            raise InputError(f"channel count changed mid-stream: {self.channels} -> {c}")
        if n == 0:  # the carried samples never hold a whole frame
            return np.zeros((c, sp.n_bins, 0), np.complex64)
        if self.r and self.state is None:
            self.state = dc_block_state(x[:, 0])
        need = self.carried + n
        if self._buf.shape[0] != c or self._buf.shape[1] < need:
            self._grow(c, need)
        t = n_frames(need, sp)
        out = np.empty((c, sp.n_bins, t), np.complex64)
        ptw, prot, prev = self._tables[1]
        kept = self._k.lib.tp_front_block(
            _ptr(x), c, n, x.strides[0] // 4, self.r, 0 if self.state is None else _ptr(self.state),
            _ptr(self._buf), self._buf.shape[1], self.carried,
            t, sp.hop, self._win[1], sp.win, sp.n_fft // 2, ptw, prot, prev, _ptr(self._work), _ptr(out),
        )  # fmt: skip
        if kept < 0:
            self.state = None
            return None
        self.carried = int(kept)
        return out


class BlockPost:
    """The streaming pipeline's kernels after the STFT in one C call per block (`tp_block_post`): frame
    power into the level rings, onset weights and the weighted PHAT cross-spectra into the cross ring,
    and the log-mel features. The same C code as `frame_power`, `onset_weights`, `phat_cross_spectra`,
    `ring_accumulate` and `logmel_from_spectra` called one by one, so the same results bit for bit;
    what it saves is their five Python wrappers and argument checks per block (each wrapper costs 15-30 us
    whatever the block's size on x86-64; the pipeline on 100 ms blocks measured 5-10 % less CPU). The
    rings are the caller's arrays, written in place; the onset history (`history`) is kept here, from
    zeros at the stream's start."""

    def __init__(
        self,
        k: Kernels,
        spec: FrontendSpec,
        parseval: _Floats,
        sub: int,
        psum: _F64,
        pcount: _Ints,
        pframe: _Ints,
        ring: npt.NDArray[np.complex64] | None = None,
        pairs: npt.NDArray[np.intp] | None = None,
        bins: slice | None = None,
        onset_frames: int = 0,
        onset_floor: float = 0.0,
    ) -> None:
        self._k = k
        self.spec = spec
        r = len(psum)
        _check_level_rings("block_post", psum, pcount, pframe)
        if sub < 1 or r < 2:
            raise InputError(f"block_post: output hop of {sub} frames, {r} ring slots")
        self._w = np.ascontiguousarray(parseval, dtype=np.float64)
        if self._w.shape != (spec.n_bins,):
            raise InputError(f"block_post: Parseval weights of shape {self._w.shape}, expected ({spec.n_bins},)")
        self.sub, self.slots = int(sub), r
        self._rings = (psum, pcount, pframe, ring)  # kept alive: their addresses are passed on every call
        self._ring_ptrs = (_ptr(psum), _ptr(pcount), _ptr(pframe))
        self.b0 = self.b1 = 0
        self.n_pairs, self.onset_frames, self.onset_floor = 0, 0, 0.0
        self._pairs = np.zeros((0, 2), np.int64)
        self._ring_ptr: int | None = None
        if ring is not None:
            if pairs is None or bins is None:
                raise InputError("block_post: a cross ring needs its microphone pairs and bins")
            b0, b1, step = bins.indices(spec.n_bins)
            if step != 1 or b1 <= b0:
                raise ConfigError(f"block_post needs a contiguous, non-empty bin range, got {bins!r}")
            self._pairs = np.ascontiguousarray(pairs, dtype=np.int64).reshape(-1, 2)
            shape = (r, len(self._pairs), b1 - b0)
            if ring.dtype != np.complex64 or ring.shape != shape or not ring.flags.c_contiguous:
                raise InputError(f"block_post: the cross ring must be a contiguous complex64 {shape}")
            if not ring.flags.writeable:
                raise InputError("block_post: the cross ring is read-only")
            if onset_frames < 0:
                raise InputError(f"block_post: onset_frames={onset_frames} must be >= 0")
            self.b0, self.b1, self.n_pairs = b0, b1, len(self._pairs)
            self.onset_frames, self.onset_floor = int(onset_frames), float(np.float32(onset_floor))
            self._ring_ptr = _ptr(ring)
        self.history = np.zeros((self.onset_frames, self.b1 - self.b0), np.float32)
        self._mel = _mel_ptrs(spec)  # kept alive with its addresses
        self._tmp = np.empty(2 * TCHUNK, np.float32)
        self._mag = np.empty(spec.n_bins * LM_TCHUNK, np.float32)
        self._fixed = (_ptr(self._w), _ptr(self.history) if self.history.size else 0, _ptr(self._pairs))
        self._cap = 0
        self._grow(16)

    def _grow(self, t: int) -> None:
        """Scratch for blocks of up to `t` frames."""
        b = self.b1 - self.b0
        self._power = np.empty(t, np.float64)
        self._opw = np.empty(self.onset_frames + t, np.float32)
        self._ow = np.empty(max(1, b * t), np.float32)
        self._cross = np.empty(max(1, t * self.n_pairs * b), np.complex64)
        scratch = (self._power, self._opw, self._ow, self._tmp, self._cross, self._mag)
        self._scratch_ptrs = tuple(_ptr(a) for a in scratch)
        self._cap = t

    def __call__(self, spectra: npt.NDArray[np.complexfloating], first: int) -> npt.NDArray[np.float32]:
        """Spectra [C, n_bins, T] of consecutive frames, the first being the stream's frame `first` ->
        their log-mel features [T, n_mels]; the rings and the onset history are updated."""
        s = _c64(spectra)
        if s.ndim != 3 or s.shape[1] != self.spec.n_bins:
            raise InputError(f"block_post: spectra of shape {s.shape}, expected (channels, {self.spec.n_bins}, frames)")
        c, f, t = s.shape
        if t > (self.slots - 1) * self.sub:
            raise InputError(f"block_post: {t} frames overrun a ring of {self.slots} slots of {self.sub} frames")
        if first < 0:
            raise InputError(f"block_post: first frame {first} < 0")
        feats = np.empty((t, self.spec.n_mels), np.float32)
        if t == 0:
            return feats
        if t > self._cap:
            self._grow(max(t, 2 * self._cap))
        pw, ph, pp = self._fixed
        ppow, popw, pow_, ptmp, pcross, pmag = self._scratch_ptrs
        psum, pcount, pframe = self._ring_ptrs
        _, (pstart, plen, pofs, pwts) = self._mel
        rc = self._k.lib.tp_block_post(
            _ptr(s), c, f, t, pw, ppow,
            self.b0, self.b1, self.onset_frames, self.onset_floor, ph, popw, pow_,
            pp, self.n_pairs, EPS, ptmp, pcross,
            int(first), self.sub, self.slots, psum, pcount, pframe, self._ring_ptr,
            self.spec.n_mels, pstart, plen, pofs, pwts, self.spec.log_offset, pmag, _ptr(feats),
        )  # fmt: skip
        if rc:
            raise InputError(f"block_post: microphone pairs {self._pairs.tolist()} do not fit {c} channels")
        return feats
