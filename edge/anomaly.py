"""Normal recordings -> AnomalyModel -> anomaly score of new audio (the "condition" state: normal/abnormal).

A per-device model of "normal" for one chosen source, learned from normal recordings only (no faulty
examples needed). Audio is cut into 1 s windows (hop 0.5 s); each window gives a feature vector that
sees the faults machines actually develop:

    log-mel shape [64] and std [64]       spectral balance (level removed: gains drift), added energy
    fine spectrum [151]                   1/24-octave Welch spectrum 50 Hz-4 kHz: harmonic shifts
    envelope modulation [5 bands x 12]    amplitude modulation (imbalance, looseness) in half-octave
                                          bands 1.4-64 Hz, and how far its 4-40 Hz peak stands out
    band kurtosis [3]                     impulsiveness at 1-2, 2-4, 4-8 kHz (bearing defects)

The model is one Gaussian per feature group on standardised features, each with a shrunk covariance
(`(1 - a) S + a I` with `a = D / (D + n)`: a handful of recordings give far fewer windows than
dimensions). A window's group score is its squared Mahalanobis distance over D, in logs, standardised
by the same group's scores on held-out normal windows (k-fold over the training windows), so that the
groups are comparable; a recording's score is the largest group mean over its windows. The threshold
is the 99th percentile of the held-out windows' scores: `score - threshold > 0` is abnormal.

Stored as a directory: `anomaly.json` (source, threshold, feature layout, provenance) and
`anomaly.npz` (mean, scale, precision, group_mu, group_sd). Every problem with a stored model is a `ModelError`
naming the file and key.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.dsp.frontend import DEFAULT_FRONTEND, logmel
from edge.errors import InputError, ModelError
from edge.messages import StateEstimate

F64 = npt.NDArray[np.float64]

FORMAT = "tympan-anomaly"
FORMAT_VERSION = 1
WINDOW_S = 1.0
HOP_S = 0.5
ENV_BANDS_HZ = ((50.0, 7900.0), (250.0, 1000.0), (1000.0, 2000.0), (2000.0, 4000.0), (4000.0, 7900.0))
MOD_EDGES_HZ = (1.4, 2.0, 2.8, 4.0, 5.6, 8.0, 11.0, 16.0, 22.0, 32.0, 45.0, 64.0)  # half-octave bands
ENV_RATE_HZ = 200
PEAK_MOD_HZ = (4.0, 40.0)  # a periodic modulation (shaft rate) stands out of its neighbours here
KURT_BANDS_HZ = ((1000.0, 2000.0), (2000.0, 4000.0), (4000.0, 7900.0))
FINE_FFT = 4096  # 3.9 Hz resolution: sees a few per cent shift of engine harmonics
FINE_BINS_PER_OCTAVE = 24
FINE_FMIN_HZ = 50.0
FINE_FMAX_HZ = 4000.0
THRESHOLD_QUANTILE = 0.99
MIN_WINDOWS = 4
JSON_NAME = "anomaly.json"
NPZ_NAME = "anomaly.npz"


def _n_fine() -> int:
    return int(np.log2(FINE_FMAX_HZ / FINE_FMIN_HZ) * FINE_BINS_PER_OCTAVE)


def feature_groups(n_mels: int = DEFAULT_FRONTEND.n_mels) -> dict[str, slice]:
    """Name -> columns of each feature group in a `window_features` row."""
    sizes = {"mel_mean": n_mels, "mel_std": n_mels, "fine_spectrum": _n_fine(),
             "modulation": len(ENV_BANDS_HZ) * len(MOD_EDGES_HZ), "kurtosis": len(KURT_BANDS_HZ)}  # fmt: skip
    out, i = {}, 0
    for k, n in sizes.items():
        out[k] = slice(i, i + n)
        i += n
    return out


def _n_features(n_mels: int) -> int:
    return max(g.stop for g in feature_groups(n_mels).values())


def _modulation(seg: F64, sample_rate: int) -> F64:
    """Envelope modulation spectrum per band: log of the envelope's spectral magnitude in half-octave
    modulation bands (1.4-64 Hz), relative to the envelope's mean: amplitude modulation at shaft rates."""
    n = len(seg)
    fx = np.fft.rfft(seg)
    ff = np.fft.rfftfreq(n, 1.0 / sample_rate)
    step = max(1, sample_rate // ENV_RATE_HZ)
    out = []
    for lo, hi in ENV_BANDS_HZ:
        # analytic signal of the band: positive frequencies doubled, negative ones zero
        spec = np.zeros(n, complex)
        sel = np.flatnonzero((ff >= lo) & (ff < hi))
        spec[sel] = 2.0 * fx[sel]
        env = np.abs(np.fft.ifft(spec))
        env = env[: len(env) // step * step].reshape(-1, step).mean(axis=1)
        m = env.mean() + 1e-12
        k = len(env)
        mag = np.abs(np.fft.rfft((env - m) * np.hanning(k))) / (m * k)
        mf = np.fft.rfftfreq(k, step / sample_rate)
        peak_band = (mf >= PEAK_MOD_HZ[0]) & (mf <= PEAK_MOD_HZ[1])
        out.append(math.log(float(mag[peak_band].max()) / (float(np.median(mag[peak_band])) + 1e-9) + 1e-6))
        for a, b in itertools.pairwise(MOD_EDGES_HZ):
            band = (mf >= a) & (mf < b)
            out.append(math.log(float(np.sqrt(np.mean(mag[band] ** 2))) + 1e-6) if band.any() else math.log(1e-6))
    return np.array(out)


def _fine_spectrum(seg: F64, sample_rate: int) -> F64:
    """Welch log power on a 1/24-octave grid, 50 Hz - 4 kHz, relative to its own mean (level-free)."""
    n = FINE_FFT
    if len(seg) < n:
        seg = np.pad(seg, (0, n - len(seg)))
    hop = n // 2
    idx = np.arange(n)[None, :] + hop * np.arange(1 + (len(seg) - n) // hop)[:, None]
    p = np.mean(np.abs(np.fft.rfft(seg[idx] * np.hanning(n), axis=1)) ** 2, axis=0)
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    grid = FINE_FMIN_HZ * 2.0 ** (np.arange(_n_fine()) / FINE_BINS_PER_OCTAVE)
    lp = np.log(np.interp(grid, freqs, p) + 1e-12)
    return np.asarray(lp - lp.mean(), np.float64)


def window_features(x: npt.NDArray[np.floating], sample_rate: int = DEFAULT_FRONTEND.sample_rate) -> F64:
    """Mono audio -> one feature row per 1 s window (hop 0.5 s): [W, D]. A recording shorter than one
    window gives one row from what there is (at least 0.25 s is needed)."""
    spec = DEFAULT_FRONTEND
    if sample_rate != spec.sample_rate:
        raise InputError(f"anomaly: audio at {sample_rate} Hz; the features need {spec.sample_rate} Hz")
    a = np.asarray(x, np.float64)
    if a.ndim != 1:
        raise InputError(f"anomaly: expected mono audio [n], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError("anomaly: audio holds NaN or Inf samples")
    if len(a) < 0.25 * sample_rate:
        raise InputError(f"anomaly: {len(a) / sample_rate:.2f} s of audio is too short (at least 0.25 s)")
    lm = logmel(a.astype(np.float32), spec).astype(np.float64)  # [T, n_mels] at 100 frames/s
    fps = spec.sample_rate / spec.hop
    wf = round(WINDOW_S * fps)
    hf = round(HOP_S * fps)
    starts = list(range(0, max(1, len(lm) - wf + 1), hf))
    ws = round(WINDOW_S * sample_rate)
    rows = []
    for s in starts:
        w = lm[s : s + wf]
        feats = [w.mean(axis=0) - w.mean(), w.std(axis=0)]  # spectral shape, not level: gains drift
        seg = a[s * spec.hop : s * spec.hop + ws]
        feats.append(_fine_spectrum(seg, sample_rate))
        feats.append(_modulation(seg, sample_rate))
        # band kurtosis of the waveform (impulses raise it; Gaussian noise gives 3)
        fx = np.fft.rfft(seg)
        ff = np.fft.rfftfreq(len(seg), 1.0 / sample_rate)
        kurt = []
        for lo, hi in KURT_BANDS_HZ:
            y = np.fft.irfft(np.where((ff >= lo) & (ff < hi), fx, 0), n=len(seg))
            v = float(np.mean(y**2))
            kurt.append(math.log(float(np.mean(y**4)) / (v * v) + 1e-6) if v > 1e-20 else math.log(3.0))
        feats.append(np.array(kurt))
        rows.append(np.concatenate(feats))
    return np.stack(rows)


@dataclass(frozen=True)
class AnomalyModel:
    """A fitted model of normal. `score(x)` is >= 0; above `threshold` is abnormal.

    `precision` is block-diagonal (one block per feature group); `group_mu`/`group_sd` [G] standardise
    each group's log score by its held-out normal distribution, so the groups are comparable."""

    source: str
    mean: F64
    scale: F64
    precision: F64
    group_mu: F64
    group_sd: F64
    threshold: float
    n_windows: int
    files: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def group_scores(self, feats: F64) -> F64:
        """[W, D] features -> [W, G] per-group standardised log scores (held-out normal: mean 0, sd 1)."""
        return (
            np.log(_group_scores(feats, self.mean, self.scale, self.precision) + 1e-9) - self.group_mu
        ) / self.group_sd

    def score(self, x: npt.NDArray[np.floating], sample_rate: int = DEFAULT_FRONTEND.sample_rate) -> float:
        """The recording's anomaly score: the largest, over feature groups, of the group's mean window score."""
        return float(self.group_scores(window_features(x, sample_rate)).mean(axis=0).max())

    def state(self, x: npt.NDArray[np.floating], sample_rate: int = DEFAULT_FRONTEND.sample_rate) -> StateEstimate:
        """normal / abnormal with a confidence: a logistic of score - threshold (standard deviations)."""
        r = self.score(x, sample_rate) - self.threshold
        p_abn = 1.0 / (1.0 + math.exp(-3.0 * r))
        if r > 0.0:
            return StateEstimate("abnormal", round(p_abn, 3), "condition")
        return StateEstimate("normal", round(1.0 - p_abn, 3), "condition")

    # --- storage --------------------------------------------------------------------------------------
    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "source": self.source,
            "threshold": self.threshold,
            "threshold_quantile": THRESHOLD_QUANTILE,
            "n_windows": self.n_windows,
            "dim": self.dim,
            "window_s": WINDOW_S,
            "hop_s": HOP_S,
            "files": list(self.files),
        }
        np.savez(os.path.join(directory, NPZ_NAME), mean=self.mean, scale=self.scale, precision=self.precision,
                 group_mu=self.group_mu, group_sd=self.group_sd)  # fmt: skip
        with open(os.path.join(directory, JSON_NAME), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)

    @classmethod
    def load(cls, directory: str) -> AnomalyModel:
        jp, zp = os.path.join(directory, JSON_NAME), os.path.join(directory, NPZ_NAME)
        if not os.path.isdir(directory):
            raise ModelError(f"{directory}: no such anomaly model directory (make one with `tympan anomaly fit`)")
        try:
            with open(jp, encoding="utf-8") as f:
                meta = json.load(f)
        except OSError as e:
            raise ModelError(f"{jp}: cannot read the anomaly model ({e.strerror})") from None
        except ValueError as e:
            raise ModelError(f"{jp}: not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else meta
            raise ModelError(f"{jp}: key 'format': expected {FORMAT!r}, got {got!r}")
        if meta.get("version") != FORMAT_VERSION:
            raise ModelError(
                f"{jp}: key 'version': unsupported {meta.get('version')!r} (this reader reads {FORMAT_VERSION})"
            )
        src, thr, dim = meta.get("source"), meta.get("threshold"), meta.get("dim")
        if not isinstance(src, str) or not src:
            raise ModelError(f"{jp}: key 'source': expected a non-empty string, got {src!r}")
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr):
            raise ModelError(f"{jp}: key 'threshold': expected a finite number, got {thr!r}")
        if dim != _n_features(DEFAULT_FRONTEND.n_mels):
            want = _n_features(DEFAULT_FRONTEND.n_mels)
            raise ModelError(f"{jp}: key 'dim': {dim!r} does not match this version's {want} features")
        try:
            with np.load(zp) as z:
                keys = ("mean", "scale", "precision", "group_mu", "group_sd")
                mean, scale, prec, gmu, gsd = (np.asarray(z[k], np.float64) for k in keys)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"{zp}: not a readable anomaly model array file ({e})") from None
        if mean.shape != (dim,) or scale.shape != (dim,) or prec.shape != (dim, dim):
            raise ModelError(f"{zp}: array shapes {mean.shape}, {scale.shape}, {prec.shape} do not match dim {dim}")
        if gmu.shape != (len(feature_groups()),) or gsd.shape != gmu.shape:
            raise ModelError(
                f"{zp}: group_mu/group_sd have shapes {gmu.shape}/{gsd.shape}, expected ({len(feature_groups())},)"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(prec)) and np.all(scale > 0) and np.all(gsd > 0)):
            raise ModelError(f"{zp}: arrays hold NaN/Inf or non-positive scales")
        files = tuple(str(f) for f in meta.get("files", []))
        return cls(src, mean, scale, prec, gmu, gsd, float(thr), int(meta.get("n_windows", 0)), files)


def _group_scores(feats: F64, mean: F64, scale: F64, precision: F64) -> F64:
    z = (feats - mean) / scale
    out = []
    for g in feature_groups().values():
        zg = z[:, g]
        out.append(np.einsum("wi,ij,wj->w", zg, precision[g, g], zg) / zg.shape[1])
    return np.stack(out, axis=1)


def _gaussian(feats: F64) -> tuple[F64, F64, F64]:
    """Mean, scale and block-diagonal shrunk precision (one block per feature group)."""
    mean = feats.mean(axis=0)
    scale = feats.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1e-6) + 0.05 * np.median(scale)
    z = (feats - mean) / scale
    n = len(z)
    prec = np.zeros((z.shape[1], z.shape[1]))
    for g in feature_groups().values():
        zg = z[:, g]
        d = zg.shape[1]
        s = (zg.T @ zg) / max(1, n - 1)
        a = min(0.99, max(0.05, d / (d + n)))
        prec[g, g] = np.linalg.inv((1.0 - a) * s + a * np.eye(d))
    return mean, scale, prec


def fit(
    recordings: Sequence[npt.NDArray[np.floating]],
    source: str,
    sample_rate: int = DEFAULT_FRONTEND.sample_rate,
    files: tuple[str, ...] = (),
    folds: int = 5,
) -> AnomalyModel:
    """A model of normal from normal recordings only. InputError if they give too few windows."""
    if not source.strip():
        raise InputError("anomaly: the source name is empty")
    if not recordings:
        raise InputError("anomaly: no normal recordings to learn from")
    per = [window_features(x, sample_rate) for x in recordings]
    feats = np.concatenate(per)
    if len(feats) < MIN_WINDOWS:
        raise InputError(
            f"anomaly: {len(feats)} window(s) of normal audio; at least {MIN_WINDOWS} "
            f"({(MIN_WINDOWS + 1) * HOP_S:.1f} s) are needed"
        )
    # held-out normal scores for the thresholds: k-fold over contiguous blocks of windows
    k = max(2, min(folds, len(feats) // 2))
    held: list[F64] = []
    for b in np.array_split(np.arange(len(feats)), k):
        m, s, p = _gaussian(feats[np.setdiff1d(np.arange(len(feats)), b)])
        held.append(_group_scores(feats[b], m, s, p))
    h = np.log(np.concatenate(held) + 1e-9)
    gmu = h.mean(axis=0)
    gsd = np.maximum(h.std(axis=0), 0.1)
    threshold = float(np.quantile(((h - gmu) / gsd).max(axis=1), THRESHOLD_QUANTILE))
    mean, scale, prec = _gaussian(feats)
    return AnomalyModel(source, mean, scale, prec, gmu, gsd, threshold, len(feats), files)
