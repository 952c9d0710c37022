"""Event audio (+ azimuth track) -> DSP-derived states, each with a confidence (ontology groups).

    speed     accelerating / decelerating / steady   harmonic-spectrum shift over time (engine order)
    motion    approaching / receding / passing         level slope, and the Doppler drop of a pass-by
    lateral   left-to-right / right-to-left            the azimuth track (y = sin az, front = +x)
    temporal  impulsive / continuous                   envelope crest factor and duty

Speed. Every partial of an engine (firing rate and its orders) scales with its speed, so a speed change
is a shift of the harmonic spectrum along a log-frequency axis, whatever the fundamental. Frames of
`SPEED_FFT` samples are mapped to a log-frequency grid (`BINS_PER_OCTAVE`), their spectral envelope is
removed (what remains is the harmonic fine structure, which moves with speed; resonances of the body do
not) and each frame is cross-correlated with the frame `SPEED_LAG_S` later. The peak's shift (with
parabolic interpolation) is the speed ratio over that lag; the correlation-weighted median of those
rates (octaves per second) decides the state against `SpeedConfig.rate_oct_s`. Unlike a pitch tracker,
this has no octave errors to make: it never picks a fundamental.

Motion. The level (dB, 50 ms frames) of the loud part of the event is fitted by a line; a rise is
"approaching", a fall "receding". A level peak inside the event with a rise before and a fall after is
a pass-by ("passing"), more confident when the harmonic spectrum drops across the peak (Doppler:
f' = f c / (c - v cos theta) goes from above to below f as the source passes).

Lateral. The azimuth track's y = sin(az) (the array's +y is the listener's left when facing +x) is
fitted by a line: y falling is left-to-right. Linear arrays (front/back mirror) give no lateral state.

Temporal. 10 ms envelope in dB: impulsive when its peak stands well above its median (crest) and few
frames are near the peak (duty); continuous otherwise.

All functions are pure: mono float32 audio at `sample_rate` in, `StateEstimate` (or None where the
signal cannot tell: no speed state under `MIN_SPEED_S` or without harmonic structure, no motion state
under `MIN_MOTION_S` or for an impulsive sound) out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError, InputError
from edge.messages import StateEstimate

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

SPEED_FFT = 4096  # 256 ms at 16 kHz: resolves engine harmonics 4 Hz apart
SPEED_HOP_S = 0.05
SPEED_LAG_S = 0.5
BINS_PER_OCTAVE = 96
SPEED_FMIN_HZ = 40.0
SPEED_FMAX_HZ = 4000.0
ENVELOPE_OCTAVES = 0.5  # spectral-envelope smoothing width removed before correlation
LEVEL_HOP_S = 0.05
MIN_SPEED_S = 1.0  # less audio than this gives no speed state
MIN_MOTION_S = 1.5  # nor a motion state: shorter level changes are the sound's own envelope
ENV_HOP_S = 0.01


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


@dataclass(frozen=True)
class SpeedConfig:
    rate_oct_s: float = 0.04  # |speed trend| above this (octaves/s, 2.8 %/s) is accelerating/decelerating
    max_ratio_per_lag: float = 0.25  # largest speed change searched within one lag (25 %)
    min_tonality: float = 0.15  # mean peak correlation below this: no harmonic structure, no speed state

    def __post_init__(self) -> None:
        if not 0.0 < self.rate_oct_s <= 2.0:
            raise ConfigError(f"speed rate_oct_s={self.rate_oct_s!r}: must be in (0, 2] octaves per second")
        if not 0.0 < self.max_ratio_per_lag <= 1.0:
            raise ConfigError(f"speed max_ratio_per_lag={self.max_ratio_per_lag!r}: must be in (0, 1]")


@dataclass(frozen=True)
class SpeedTrack:
    """Speed trend of an event. `t` [N] frame-pair centres (s), `rate` [N] octaves/s, `weight` [N] peak
    correlations; `trend` the weighted-median rate; `tonality` the mean peak correlation."""

    t: F64
    rate: F64
    weight: F64
    trend: float
    tonality: float


def _check_audio(x: npt.NDArray[np.floating], sample_rate: int) -> F64:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise InputError(f"states: expected mono audio [n], got shape {a.shape}")
    if sample_rate <= 0:
        raise InputError(f"states: sample_rate={sample_rate!r} must be > 0")
    if not np.all(np.isfinite(a)):
        raise InputError("states: audio holds NaN or Inf samples")
    return a


def _log_spectrogram(x: F64, sr: int) -> tuple[F64, F64]:
    """Whitened log-frequency magnitude frames [T, B] and each frame's level (dB) [T]."""
    n_fft = SPEED_FFT
    hop = max(1, round(SPEED_HOP_S * sr))
    if len(x) < n_fft:
        x = np.pad(x, (0, n_fft - len(x)))
    n = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    win = np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(x[idx] * win, axis=1))
    level = 10.0 * np.log10(np.mean(mag**2, axis=1) + 1e-20)
    fmax = min(SPEED_FMAX_HZ, 0.45 * sr)
    n_oct = math.log2(fmax / SPEED_FMIN_HZ)
    freqs = SPEED_FMIN_HZ * 2.0 ** (np.arange(int(n_oct * BINS_PER_OCTAVE)) / BINS_PER_OCTAVE)
    lin = np.arange(mag.shape[1]) * sr / n_fft
    logspec = np.log(np.stack([np.interp(freqs, lin, m) for m in mag]) + 1e-9)
    # remove the spectral envelope: subtract a moving average over ENVELOPE_OCTAVES
    w = max(3, int(ENVELOPE_OCTAVES * BINS_PER_OCTAVE) | 1)
    kernel = np.ones(w) / w
    env = np.stack([np.convolve(np.pad(r, w // 2, mode="edge"), kernel, mode="valid") for r in logspec])
    white = logspec - env
    white -= white.mean(axis=1, keepdims=True)
    white /= np.linalg.norm(white, axis=1, keepdims=True) + 1e-12
    return white, level


def speed_track(x: npt.NDArray[np.floating], sample_rate: int, config: SpeedConfig | None = None) -> SpeedTrack:
    """The event's speed trend from the shift of its harmonic spectrum between frames `SPEED_LAG_S` apart."""
    cfg = config or SpeedConfig()
    a = _check_audio(x, sample_rate)
    white, level = _log_spectrogram(a, sample_rate)
    hop_s = max(1, round(SPEED_HOP_S * sample_rate)) / sample_rate
    lag = max(1, round(SPEED_LAG_S / hop_s))
    if len(white) <= lag:
        lag = max(1, len(white) - 1)
    max_shift = math.ceil(math.log2(1.0 + cfg.max_ratio_per_lag) * BINS_PER_OCTAVE)
    loud = level >= level.max() - 30.0
    ts: list[float] = []
    rates: list[float] = []
    weights: list[float] = []
    nb = white.shape[1]
    for i in range(len(white) - lag):
        if not (loud[i] and loud[i + lag]):
            continue
        a0, a1 = white[i], white[i + lag]
        # correlation at shifts -S..S: a1[k] ~ a0[k - s] when the spectrum moved up by s bins
        cc = np.array([float(np.dot(a0[max(0, -s) : nb - max(0, s)], a1[max(0, s) : nb - max(0, -s)]))
                       for s in range(-max_shift, max_shift + 1)])  # fmt: skip
        k = int(np.argmax(cc))
        shift = float(k - max_shift)
        if 0 < k < len(cc) - 1:
            den = cc[k - 1] - 2 * cc[k] + cc[k + 1]
            if den < 0:
                shift += 0.5 * (cc[k - 1] - cc[k + 1]) / den
        ts.append((i + lag / 2) * hop_s + SPEED_FFT / 2 / sample_rate)
        rates.append(shift / BINS_PER_OCTAVE / (lag * hop_s))
        weights.append(max(0.0, float(cc[k])))
    t, r, w = np.array(ts), np.array(rates), np.array(weights)
    if len(r) == 0 or w.sum() <= 0:
        return SpeedTrack(t, r, w, 0.0, 0.0)
    order = np.argsort(r)
    cw = np.cumsum(w[order])
    trend = float(r[order][np.searchsorted(cw, cw[-1] / 2)])
    return SpeedTrack(t, r, w, trend, float(w.mean()))


def speed_state(
    x: npt.NDArray[np.floating], sample_rate: int, config: SpeedConfig | None = None
) -> StateEstimate | None:
    """accelerating / decelerating / steady; None when the sound has no harmonic structure to follow."""
    cfg = config or SpeedConfig()
    if len(_check_audio(x, sample_rate)) < MIN_SPEED_S * sample_rate:
        return None
    tr = speed_track(x, sample_rate, cfg)
    if len(tr.rate) == 0 or tr.tonality < cfg.min_tonality:
        return None
    thr = cfg.rate_oct_s
    width = thr / 3.0
    # agreement: the weight share of frame pairs on the decided side
    if tr.trend > thr:
        name, p = "accelerating", _sigmoid((tr.trend - thr) / width)
        agree = float(tr.weight[tr.rate > thr / 2].sum() / tr.weight.sum())
    elif tr.trend < -thr:
        name, p = "decelerating", _sigmoid((-thr - tr.trend) / width)
        agree = float(tr.weight[tr.rate < -thr / 2].sum() / tr.weight.sum())
    else:
        name, p = "steady", _sigmoid((thr - abs(tr.trend)) / width)
        agree = float(tr.weight[np.abs(tr.rate) <= thr].sum() / tr.weight.sum())
    conf = p * (0.5 + 0.5 * agree) * min(1.0, tr.tonality / (2 * cfg.min_tonality))
    return StateEstimate(name, round(conf, 3), "speed")


# --- motion: level slope and Doppler ------------------------------------------------------------------
@dataclass(frozen=True)
class MotionConfig:
    slope_db_s: float = 1.5  # |level slope| above this is approaching/receding
    pass_db: float = 4.0  # a pass-by rises and falls at least this much around an inner peak
    range_db: float = 30.0  # frames quieter than the loudest by more than this are ignored

    def __post_init__(self) -> None:
        if not 0.0 < self.slope_db_s <= 60.0 or not 0.0 < self.pass_db <= 60.0:
            raise ConfigError(f"motion slope_db_s={self.slope_db_s!r}, pass_db={self.pass_db!r}: must be in (0, 60]")


def level_track(x: npt.NDArray[np.floating], sample_rate: int) -> tuple[F64, F64]:
    """Frame times (s) and levels (dB re full scale power) over `LEVEL_HOP_S` frames."""
    a = _check_audio(x, sample_rate)
    hop = max(1, round(LEVEL_HOP_S * sample_rate))
    n = len(a) // hop
    if n == 0:
        return np.zeros(0), np.zeros(0)
    frames = a[: n * hop].reshape(n, hop)
    lv = 10.0 * np.log10(2.0 * np.mean(frames**2, axis=1) + 1e-12)
    return (np.arange(n) + 0.5) * hop / sample_rate, lv


def motion_state(
    x: npt.NDArray[np.floating], sample_rate: int, config: MotionConfig | None = None
) -> StateEstimate | None:
    """approaching / receding / passing from the level trajectory (and the Doppler drop of a pass-by)."""
    cfg = config or MotionConfig()
    t, lv = level_track(x, sample_rate)
    if len(t) < 6:
        return None
    # smooth over 0.25 s: the slope is about range, not about the source's own fluctuation
    k = max(1, round(0.25 / LEVEL_HOP_S))
    sm = np.convolve(np.pad(lv, k // 2, mode="edge"), np.ones(k) / k, mode="valid")[: len(lv)]
    loud = sm >= sm.max() - cfg.range_db
    tt, ll = t[loud], sm[loud]
    if len(tt) < 6 or tt[-1] - tt[0] < MIN_MOTION_S - 2 * LEVEL_HOP_S:
        return None
    i = int(np.argmax(ll))
    span = len(ll)
    rise = ll[i] - ll[: max(1, i)].min() if i > 0 else 0.0
    fall = ll[i] - ll[i:].min()
    inner = 0.15 * span <= i <= 0.85 * span
    if inner and rise >= cfg.pass_db and fall >= cfg.pass_db:
        p = _sigmoid((min(rise, fall) - cfg.pass_db) / 2.0 + 1.0)
        doppler = _doppler_drop(np.asarray(x, np.float64), sample_rate, float(tt[i]))
        if doppler is not None:
            p = min(1.0, p * (1.15 if doppler > 0.005 else 0.85))
        return StateEstimate("passing", round(p, 3), "motion")
    slope, intercept = np.polyfit(tt, ll, 1)
    resid = ll - (slope * tt + intercept)
    se = float(np.sqrt(np.sum(resid**2) / max(1, len(tt) - 2)) / (np.sqrt(np.sum((tt - tt.mean()) ** 2)) + 1e-12))
    if abs(slope) < cfg.slope_db_s:
        return None  # neither coming nor going: no motion state
    name = "approaching" if slope > 0 else "receding"
    p = _sigmoid((abs(slope) - cfg.slope_db_s) / max(se, cfg.slope_db_s / 3.0))
    return StateEstimate(name, round(p, 3), "motion")


def _doppler_drop(x: F64, sr: int, t_peak: float) -> float | None:
    """Octaves the harmonic spectrum drops from before to after `t_peak` (positive: a Doppler pass-by)."""
    tr = speed_track(x, sr)
    if len(tr.rate) == 0 or tr.tonality < SpeedConfig().min_tonality:
        return None
    near = np.abs(tr.t - t_peak) <= 1.0
    if not near.any():
        return None
    return float(-np.average(tr.rate[near], weights=tr.weight[near] + 1e-9) * 2 * SPEED_LAG_S)


# --- lateral: the DOA track ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LateralConfig:
    min_sweep_deg: float = 15.0  # the track must sweep at least this much azimuth
    min_r2: float = 0.5  # and follow a line in y = sin(az) this well

    def __post_init__(self) -> None:
        if not 0.0 < self.min_sweep_deg <= 180.0 or not 0.0 <= self.min_r2 <= 1.0:
            raise ConfigError(
                f"lateral min_sweep_deg={self.min_sweep_deg!r}, min_r2={self.min_r2!r}: need (0, 180] and [0, 1]"
            )


def lateral_state(
    t: npt.ArrayLike, azimuth_deg: npt.ArrayLike, config: LateralConfig | None = None
) -> StateEstimate | None:
    """left-to-right / right-to-left from an azimuth track (degrees, CCW from +x; the listener faces +x,
    so +y is their left). None for fewer than 3 points or a track that does not sweep."""
    cfg = config or LateralConfig()
    tt = np.asarray(t, np.float64)
    az = np.asarray(azimuth_deg, np.float64)
    if tt.shape != az.shape or tt.ndim != 1:
        raise InputError(f"lateral: times {tt.shape} and azimuths {az.shape} must be 1-D of one length")
    ok = np.isfinite(tt) & np.isfinite(az)
    tt, az = tt[ok], az[ok]
    if len(tt) < 3 or np.ptp(tt) <= 0:
        return None
    unwrapped = np.degrees(np.unwrap(np.radians(az)))
    if np.ptp(unwrapped) < cfg.min_sweep_deg:
        return None
    y = np.sin(np.radians(az))
    slope, intercept = np.polyfit(tt, y, 1)
    resid = y - (slope * tt + intercept)
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss if ss > 0 else 0.0
    if r2 < cfg.min_r2 or abs(slope) * np.ptp(tt) < 0.1:
        return None
    name = "left-to-right" if slope < 0 else "right-to-left"
    p = r2 * _sigmoid((np.ptp(unwrapped) - cfg.min_sweep_deg) / 10.0 + 1.0)
    return StateEstimate(name, round(float(p), 3), "lateral")


# --- temporal: envelope --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TemporalConfig:
    crest_db: float = 12.0  # peak above median envelope for impulsive
    max_duty: float = 0.25  # fraction of frames within 10 dB of the peak, at most, for impulsive

    def __post_init__(self) -> None:
        if not 0.0 < self.crest_db <= 80.0 or not 0.0 < self.max_duty < 1.0:
            raise ConfigError(f"temporal crest_db={self.crest_db!r}, max_duty={self.max_duty!r}: need (0, 80], (0, 1)")


def temporal_state(
    x: npt.NDArray[np.floating], sample_rate: int, config: TemporalConfig | None = None
) -> StateEstimate | None:
    """impulsive / continuous from the 10 ms envelope; None for less than 50 ms of audio."""
    cfg = config or TemporalConfig()
    a = _check_audio(x, sample_rate)
    hop = max(1, round(ENV_HOP_S * sample_rate))
    n = len(a) // hop
    if n < 5:
        return None
    env = 10.0 * np.log10(np.mean(a[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    crest = float(env.max() - np.median(env))
    duty = float(np.mean(env >= env.max() - 10.0))
    score = (crest - cfg.crest_db) / 4.0 + (cfg.max_duty - duty) / 0.1
    if crest >= cfg.crest_db and duty <= cfg.max_duty:
        return StateEstimate("impulsive", round(_sigmoid(score), 3), "temporal")
    return StateEstimate("continuous", round(_sigmoid(-score + 1.0), 3), "temporal")


def dsp_states(
    x: npt.NDArray[np.floating],
    sample_rate: int,
    azimuth_track: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
) -> tuple[StateEstimate, ...]:
    """Every DSP-derived state the event's audio (and azimuth track `(t, az)`) supports. An impulsive
    sound gets no motion state: its level follows its bursts, not its range."""
    temporal = temporal_state(x, sample_rate)
    motion = None if temporal is not None and temporal.name == "impulsive" else motion_state(x, sample_rate)
    out = [speed_state(x, sample_rate), motion, temporal]
    if azimuth_track is not None:
        out.append(lateral_state(*azimuth_track))
    return tuple(s for s in out if s is not None)
