"""Threshold floors from signal conditions: what the device must hear as "nothing".

Per-class thresholds picked for F1 on validation clips (`quantize.export.pick_thresholds`) know only the
validation clips. On a stream the detector also meets conditions that carry no sound event at all:
digital silence, stationary noise of any colour and level, a DC offset or a DC step (a microphone's bias;
a click whose frames depend on where it falls, so it is rendered at several positions), and sudden gain
changes. (Clipping is a property of a sound, not a condition of its own: the SED tests
clip real sounds.) A student can give some class a probability above its F1 threshold
there (a stationary hiss reads as "White noise", a rumble as "Water"), and every frame of it would start
an event. So the run renders a fixed set of such conditions (`condition_signals`, seeded), runs the int8
model on them the way the edge pipeline does (its DC blocker, its first window padded with the log-mel silence floor,
`window_frames` at a `hop_frames` hop, only the newest hop's outputs kept), and takes each class's floor:
its largest probability there plus a margin (`condition_floors`), rounded up to the threshold grid.
Each latency mode of the pipeline runs the model its own way (its hop, its look-ahead fill), so each has
its own floors: the default mode's raise the model's thresholds, and every mode's are kept in model.json
(thresholds.floors) for the pipeline to raise its thresholds to in that mode. Classes of stationary
sound (white/pink noise, hum) may end up above any probability the model gives: they remain clip tags,
not stream events. The model card lists every raised class.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from edge.dsp.dcblock import DEFAULT_DC_BLOCK_HZ, dc_block, dc_block_pole, dc_block_state
from edge.dsp.frontend import DEFAULT_FRONTEND, FrontendSpec, fill_lookahead, logmel, silence_floor
from quantize.audio import F32

CONDITION_SECONDS = 6.0
THRESHOLD_GRID = 0.05
THRESHOLD_MAX = 0.95
STEP_POSITIONS = 8  # DC steps per level, spread over STEP_SPAN_S
STEP_SPAN_S = 0.12  # the default model hop (edge.pipeline.PipelineConfig.model_hop_frames x 10 ms)


def coloured_noise(n: int, exponent: float, rng: np.random.Generator, sample_rate: int, f_low: float = 20.0) -> F32:
    """Gaussian noise of unit RMS whose power falls as 1 / f**exponent (0 white, 1 pink, 2 brown), flat
    below `f_low` Hz (no DC), shaped in the frequency domain."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spec *= np.maximum(f, f_low) ** (-exponent / 2.0)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return (x / max(float(np.std(x)), 1e-12)).astype(np.float32)


def _rms(level_dbfs: float) -> float:
    """RMS amplitude of a level in dBFS (a full-scale sine, RMS 1/sqrt(2), is 0 dBFS)."""
    return float(10.0 ** (level_dbfs / 20.0) / math.sqrt(2.0))


def condition_signals(seed: int, sample_rate: int = 16000, seconds: float = CONDITION_SECONDS) -> dict[str, F32]:
    """Named mono recordings of conditions without a sound event (6 s each, deterministic in `seed`)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    half = n // 2
    colours = {"white": 0.0, "pink": 1.0, "brown": 2.0}
    out: dict[str, F32] = {"silence": np.zeros(n, np.float32)}
    out["dither -90 dBFS"] = (_rms(-90.0) * rng.standard_normal(n)).astype(np.float32)
    for name, exponent in colours.items():
        for level in (-70.0, -55.0, -40.0):
            out[f"{name} noise {level:.0f} dBFS"] = _rms(level) * coloured_noise(n, exponent, rng, sample_rate)
    for name, exponent, dc in (("white", 0.0, 0.3), ("brown", 2.0, -0.5), ("pink", 1.0, 0.1)):
        for level in (-75.0, -55.0):
            x = _rms(level) * coloured_noise(n, exponent, rng, sample_rate) + dc
            out[f"{name} noise {level:.0f} dBFS, DC {dc:+.1f}"] = x
    for name, exponent in colours.items():
        x = _rms(-65.0) * coloured_noise(n, exponent, rng, sample_rate)
        x[half:] *= 10.0 ** (25.0 / 20.0)
        out[f"{name} noise -65 -> -40 dBFS step"] = x
        y = _rms(-40.0) * coloured_noise(n, exponent, rng, sample_rate)
        y[half:] *= 10.0 ** (-25.0 / 20.0)
        out[f"{name} noise -40 -> -65 dBFS step"] = y
    # A DC step is a click whose spectrum depends on where it falls in the STFT frames and the model's
    # windows: at one position the stream model may read it as nothing, 15 ms later as "Explosion". So it
    # is rendered at STEP_POSITIONS offsets spread over one default model hop (0.12 s).
    for level in (-65.0, -55.0):
        base = _rms(level) * coloured_noise(n, 0.0, rng, sample_rate)
        for i in range(STEP_POSITIONS):
            off = round(i * STEP_SPAN_S * sample_rate / STEP_POSITIONS)
            x = base.copy()
            x[half + off :] += 0.3
            out[f"DC step +0.3 on white noise {level:.0f} dBFS at +{1000 * off / sample_rate:.0f} ms"] = x
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def stream_probs(
    predict: Callable[[F32], F32],
    x: F32,
    window_frames: int,
    hop_frames: int,
    spec: FrontendSpec = DEFAULT_FRONTEND,
    fill_frames: int = 0,
    fill_decay_db: float = 0.0,
) -> F32:
    """Frame probabilities [T_out, K] of mono audio as the edge pipeline computes them: through its DC
    blocker, the feature stream starts with `window_frames - hop_frames` frames of the silence floor,
    each `window_frames` window at a `hop_frames` hop gives its newest `hop_frames` worth of outputs;
    with `fill_frames` (the pipeline's look-ahead fill) each window first moves on by that many frames,
    its newest fading by `fill_decay_db` per frame (`edge.dsp.frontend.fill_lookahead`), and the
    outputs before them are kept.
    `predict`: windows [N, W, M] -> frame probabilities [N, W / output hop, K]."""
    mono = np.asarray(x, np.float32)[None]
    mono = dc_block(mono, dc_block_pole(DEFAULT_DC_BLOCK_HZ, spec.sample_rate), dc_block_state(mono[:, 0]))
    feats = logmel(mono, spec)
    pad = np.full((window_frames - hop_frames, spec.n_mels), silence_floor(spec), np.float32)
    stream = np.concatenate([pad, feats])
    n_win = (len(stream) - window_frames) // hop_frames + 1
    if n_win <= 0:
        raise ValueError(f"{len(x)} samples are too short for a {window_frames}-frame window")
    starts = np.arange(n_win) * hop_frames
    windows = np.stack([stream[s : s + window_frames] for s in starts])
    windows = fill_lookahead(windows, fill_frames, fill_decay_db, spec)
    probs = predict(windows)
    newest = probs.shape[1] * hop_frames // window_frames
    skip = probs.shape[1] * fill_frames // window_frames  # the rows of the filled frames
    rows = probs[:, probs.shape[1] - skip - newest : probs.shape[1] - skip]
    return np.ascontiguousarray(rows.reshape(-1, probs.shape[2]))


def condition_floors(
    predict: Callable[[F32], F32],
    names: tuple[str, ...],
    window_frames: int,
    hop_frames: int | Sequence[tuple[int, int, float]],
    seed: int,
    margin: float,
) -> tuple[dict[str, float], dict[str, str]]:
    """Per class: (largest probability over every condition + `margin`, the condition that gave it).

    `hop_frames`: the model hop, or (model hop, look-ahead fill frames, fill decay dB per frame) for each
    way the pipeline runs the model (the newest rows of a window see less of the future at a short hop,
    or a filled one, so a click can read differently); the floor covers all."""
    hops = ((hop_frames, 0, 0.0),) if isinstance(hop_frames, int) else tuple(hop_frames)
    peak = np.zeros(len(names), np.float64)
    where = [""] * len(names)
    for cond, x in condition_signals(seed).items():
        for hop, fill, decay in hops:
            p = stream_probs(predict, x, window_frames, hop, fill_frames=fill, fill_decay_db=decay).max(axis=0)
            higher = p > peak
            peak[higher] = p[higher]
            mode = f"model hop {hop} frames" + (f", look-ahead {fill} frames at -{decay:g} dB" if fill else "")
            for k in np.flatnonzero(higher):
                where[k] = cond if len(hops) == 1 else f"{cond} ({mode})"
    floors = {name: float(peak[k]) + margin for k, name in enumerate(names)}
    return floors, {name: where[k] for k, name in enumerate(names)}


def grid_floor(peak: float) -> float:
    """A floor (peak probability + margin) rounded up to the 0.05 threshold grid, at most 0.95."""
    return round(min(THRESHOLD_MAX, math.ceil(round(peak / THRESHOLD_GRID, 6)) * THRESHOLD_GRID), 2)


def apply_floors(thresholds: dict[str, float], floors: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """Each threshold raised to its floor rounded up to the 0.05 grid (at most 0.95); the raised names."""
    out = dict(thresholds)
    raised = []
    for name, thr in thresholds.items():
        floor = grid_floor(floors.get(name, 0.0))
        if floor > thr + 1e-9:
            out[name] = floor
            raised.append(name)
    return out, raised
