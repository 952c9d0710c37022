"""Data folders + teacher -> transfer set: 0.96 s log-mel windows with frame-level soft targets.

Each training example is an event window (with `reverb_fraction`, some heard through a synthetic room)
mixed into a background window at a random SNR:
  x          log-mel [96, 64] of the mixture (the shared frontend)
  ev_logits  teacher logits of the clean event window, restricted to the student's classes [K]
  ev_mask    which of the 96 frames hold the event (from the event clip's energy envelope) [96]
  bg_logits  teacher logits of the clean background window [K]; bg_weight says whether they count
  gt         ground-truth classes of the event clip, mapped to AudioSet (dataset_to_audioset.csv) [K]
  mix_logits (optional, for `distill.mixture_kd`) teacher logits of the mixture x itself [K]
The frame target is max(sigmoid(ev_logits / T) * mask, gt * mask, bg_weight * sigmoid(bg_logits / T)),
computed by the trainer (so T stays a training knob). Everything is seeded and reproducible.

Splits: ESC-50 folds 1-4 train / fold 5 val; UrbanSound8K (only fold 3 is present) split by recording
(fsID, hashed) so slices of one recording stay together; vehicles by its reference/test split;
DCASE 2016 isolated events and backgrounds train only.
"""

from __future__ import annotations

import csv
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.dsp.frontend import DEFAULT_FRONTEND, FrontendSpec, logmel
from edge.errors import ConfigError, InputError
from quantize.audio import F32, activity_mask, read_audio, reverberate, segment, synthetic_rir, window_samples
from quantize.config import TransferConfig
from quantize.labels import LabelSet
from quantize.teacher import TeacherCache, save_npz


@dataclass(frozen=True)
class Clip:
    """One labelled recording of a dataset."""

    path: Path
    dataset: str
    label: str
    split: str  # "train" | "val"


def _rows(meta: Path) -> list[dict[str, str]]:
    try:
        with meta.open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError as e:
        raise InputError(f"{meta}: cannot read dataset metadata: {e.strerror}") from None


def _need(row: dict[str, str], key: str, meta: Path) -> str:
    if key not in row:
        raise InputError(f"{meta}: missing column {key!r}; columns are {sorted(row)}")
    return row[key]


def _hash_fraction(key: str) -> float:
    """A stable number in [0, 1) from a string (deterministic split by group)."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 2**32


def recording_folds(rows: list[dict[str, str]], k: int, meta: Path) -> dict[str, int]:
    """UrbanSound8K rows -> {fsID: fold in 0..k-1}: recordings (all their slices) dealt into k folds,
    stratified by class: each recording (by its majority class; rarest classes first, larger
    recordings first) goes to the fold holding the fewest clips of that class so far, ties to the
    fold with the fewest clips overall, then the lowest index. Deterministic (ties between
    recordings broken by a hash of the fsID)."""
    if k < 2:
        raise ConfigError(f"us8k_folds must be 0 or at least 2, got {k}")
    by_rec: dict[str, list[str]] = {}
    for r in rows:
        by_rec.setdefault(_need(r, "fsID", meta), []).append(_need(r, "class", meta))
    if len(by_rec) < k:
        raise ConfigError(f"{meta}: {len(by_rec)} recordings cannot be dealt into {k} folds")
    major = {f: max(sorted(set(c)), key=c.count) for f, c in by_rec.items()}
    n_recs = {c: sum(1 for m in major.values() if m == c) for c in set(major.values())}
    order = sorted(by_rec, key=lambda f: (n_recs[major[f]], major[f], -len(by_rec[f]), _hash_fraction("fsid:" + f)))
    per_class = {c: [0] * k for c in n_recs}
    total = [0] * k
    out: dict[str, int] = {}
    for f in order:
        cls = major[f]
        i = min(range(k), key=lambda j: (per_class[cls][j], total[j], j))
        out[f] = i
        per_class[cls][i] += len(by_rec[f])
        total[i] += len(by_rec[f])
    return out


def list_clips(root: Path, cfg: TransferConfig) -> list[Clip]:
    """All clips of the datasets named in cfg.datasets, with their split."""
    clips: list[Clip] = []
    for ds in cfg.datasets:
        if ds == "esc50":
            meta = root / "esc50" / "esc50_meta.csv"
            for r in _rows(meta):
                fold = int(_need(r, "fold", meta))
                split = "val" if fold in cfg.esc50_val_folds else "train"
                clips.append(Clip(root / "esc50" / "audio" / r["filename"], ds, r["category"], split))
        elif ds == "urbansound8k":
            meta = root / "urbansound8k_fold3" / "meta.csv"
            rows = _rows(meta)
            if cfg.us8k_folds and not cfg.us8k_val_fold < cfg.us8k_folds:
                raise ConfigError(
                    f"transfer.us8k_val_fold={cfg.us8k_val_fold} names no fold of us8k_folds={cfg.us8k_folds} "
                    f"(0..{cfg.us8k_folds - 1})"
                )
            folds = recording_folds(rows, cfg.us8k_folds, meta) if cfg.us8k_folds else {}
            for r in rows:
                fsid = _need(r, "fsID", meta)
                if cfg.us8k_folds:
                    held = folds[fsid] == cfg.us8k_val_fold
                else:
                    held = _hash_fraction("fsid:" + fsid) < cfg.us8k_val_fraction
                clips.append(
                    Clip(root / "urbansound8k_fold3" / "audio" / r["path"], ds, r["class"], "val" if held else "train")
                )
        elif ds == "vehicles":
            meta = root / "vehicles" / "meta.csv"
            for r in _rows(meta):
                split_col = next((k for k in r if k.startswith("split")), None)
                if split_col is None:
                    raise InputError(f"{meta}: no split column; columns are {sorted(r)}")
                split = "val" if r[split_col] == "test" else "train"
                clips.append(Clip(root / "vehicles" / "audio" / r["path"], ds, _need(r, "class_en", meta), split))
        elif ds == "dcase2016":
            meta = root / "dcase2016_events" / "meta.csv"
            for r in _rows(meta):
                clips.append(
                    Clip(root / "dcase2016_events" / "audio" / r["path"], ds, _need(r, "class", meta), "train")
                )
        else:
            raise ConfigError(f"unknown dataset {ds!r}; known: esc50, urbansound8k, vehicles, dcase2016")
    return clips


def list_backgrounds(root: Path) -> list[Path]:
    """Background clips. The meta paths carry a label folder (`no_drone/...`) the audio folder may
    not have; a flat file of the same name is used then."""
    meta = root / "backgrounds" / "meta.csv"
    out = []
    for r in _rows(meta):
        p = root / "backgrounds" / "audio" / _need(r, "path", meta)
        flat = p.parent.parent / p.name
        out.append(p if p.exists() or not flat.exists() else flat)
    return out


@dataclass(frozen=True)
class TransferSet:
    """Arrays of N training windows (shapes in the module docstring)."""

    x: F32  # [N, F, M]
    ev_logits: F32  # [N, K]
    ev_mask: F32  # [N, F]
    bg_logits: F32  # [N, K]
    bg_weight: F32  # [N]
    gt: F32  # [N, K]
    # teacher logits of the mixture window x itself [N, K] (`pipeline.mixture_logits`; only for
    # `distill.mixture_kd`): the teacher's function on exactly the student's input
    mix_logits: F32 | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def save(self, path: Path) -> None:
        save_npz(path, **{k: getattr(self, k) for k in self.__dataclass_fields__ if getattr(self, k) is not None})

    @classmethod
    def load(cls, path: Path) -> TransferSet:
        with np.load(path) as z:
            return cls(**{k: z[k] for k in cls.__dataclass_fields__ if k in z.files})


def gt_vector(clip: Clip, mapping: dict[tuple[str, str], tuple[int, ...]], k: int) -> F32:
    v = np.zeros(k, np.float32)
    v[list(mapping.get((clip.dataset, clip.label), ()))] = 1.0
    return v


def _window_mask(clip_mask: F32, start_frame: int, frames: int) -> F32:
    """The clip's frame activity seen by a window starting at `start_frame` (outside the clip: 0)."""
    return segment(clip_mask, start_frame, frames)


def build_transfer(
    clips: list[Clip],
    backgrounds: list[Path],
    cache: TeacherCache,
    teacher_cols: npt.NDArray[np.int64],
    mapping: dict[tuple[str, str], tuple[int, ...]],
    labels: LabelSet,
    cfg: TransferConfig,
    seed: int,
    window_frames: int,
    spec: FrontendSpec = DEFAULT_FRONTEND,
) -> TransferSet:
    """Mix every training clip's event windows into backgrounds (see module docstring)."""
    rng = np.random.default_rng(seed)
    n = window_samples(window_frames, spec)
    k = len(labels)
    if not backgrounds:
        raise InputError("no background clips: the transfer set needs at least one")
    bg_waves = [read_audio(p, spec) for p in backgrounds]
    # Plan first (all randomness), then run the teacher grouped by file.
    plan: list[tuple[int, int, int, int, float, float]] = []  # clip, start, bg, bg start, snr, gain
    waves: list[F32] = []
    masks: list[F32] = []
    for ci, clip in enumerate(clips):
        x = read_audio(clip.path, spec)
        m = activity_mask(x, cfg.activity_rel_db, cfg.activity_floor_db, spec)
        waves.append(x)
        masks.append(m)
        active = np.flatnonzero(m)
        if active.size == 0:
            continue
        per_s = cfg.windows_per_second * cfg.dataset_window_scale.get(clip.dataset, 1.0)
        n_ex = max(1, round(x.shape[0] / spec.sample_rate * per_s))
        for _ in range(n_ex):
            anchor = int(rng.choice(active))
            start_frame = anchor - int(rng.integers(0, window_frames))
            plan.append(_draw_mix(rng, ci, start_frame * spec.hop, bg_waves, n, cfg))
    n_bg_only = round(len(plan) * cfg.background_only_fraction)
    for _ in range(n_bg_only):
        plan.append(_draw_mix(rng, -1, 0, bg_waves, n, cfg))

    t0 = time.monotonic()
    ev_logits = np.zeros((len(plan), k), np.float32)
    bg_logits = np.zeros((len(plan), k), np.float32)
    by_clip: dict[int, list[int]] = {}
    by_bg: dict[int, list[int]] = {}
    for i, (ci, _, bi, _, _, _) in enumerate(plan):
        if ci >= 0:
            by_clip.setdefault(ci, []).append(i)
        by_bg.setdefault(bi, []).append(i)
    for done, (ci, rows) in enumerate(by_clip.items()):
        starts = np.array([plan[i][1] for i in rows], np.int64)
        ev_logits[rows] = cache.logits(clips[ci].path, starts, waves[ci])[:, teacher_cols]
        if done % 200 == 0:
            print(f"  teacher: clip {done}/{len(by_clip)} ({time.monotonic() - t0:.0f} s)", flush=True)
    for bi, rows in by_bg.items():
        starts = np.array([plan[i][3] for i in rows], np.int64)
        bg_logits[rows] = cache.logits(backgrounds[bi], starts, bg_waves[bi])[:, teacher_cols]

    # rooms drawn from their own stream: the plan above (and the teacher logits cached for it) stays the same
    room_rng = np.random.default_rng([seed, 1])
    x_out = np.zeros((len(plan), window_frames, spec.n_mels), np.float32)
    ev_mask = np.zeros((len(plan), window_frames), np.float32)
    bg_weight = np.zeros(len(plan), np.float32)
    gt = np.zeros((len(plan), k), np.float32)
    for i, (ci, start, bi, bstart, snr_db, gain_db) in enumerate(plan):
        bg = segment(bg_waves[bi], bstart, n)
        if ci >= 0:
            if cfg.reverb_fraction > 0 and room_rng.random() < cfg.reverb_fraction:
                rir = synthetic_rir(
                    room_rng, float(room_rng.uniform(*cfg.reverb_rt60_s)), float(room_rng.uniform(*cfg.reverb_drr_db)),
                    spec.sample_rate,
                )  # fmt: skip
                ev = reverberate(waves[ci], start, n, rir)
            else:
                ev = segment(waves[ci], start, n)
            mask = _window_mask(masks[ci], start // spec.hop, window_frames)
            mix = _mix(ev, mask, bg, snr_db, spec)
            ev_mask[i] = mask
            gt[i] = gt_vector(clips[ci], mapping, k) * np.float32(cfg.dataset_label_weight.get(clips[ci].dataset, 1.0))
            bg_weight[i] = 1.0 if snr_db <= cfg.bg_label_max_snr_db else 0.0
        else:
            mix = bg.copy()
            bg_weight[i] = 1.0
        mix *= np.float32(10.0 ** (gain_db / 20.0))
        peak = float(np.max(np.abs(mix)))
        if peak > 1.0:
            mix /= np.float32(peak)
        x_out[i] = logmel(mix, spec)[:window_frames]
    print(
        f"  transfer set: {len(plan)} windows ({n_bg_only} background only), "
        f"teacher cache hits {cache.hits} misses {cache.misses}, {time.monotonic() - t0:.0f} s",
        flush=True,
    )
    return TransferSet(x_out, ev_logits, ev_mask, bg_logits, bg_weight, gt)


def _draw_mix(
    rng: np.random.Generator, ci: int, start: int, bg_waves: list[F32], n: int, cfg: TransferConfig
) -> tuple[int, int, int, int, float, float]:
    bi = int(rng.integers(0, len(bg_waves)))
    room = max(0, bg_waves[bi].shape[0] - n)
    bstart = int(rng.integers(0, room // DEFAULT_FRONTEND.hop + 1)) * DEFAULT_FRONTEND.hop
    snr = float(rng.uniform(*cfg.snr_db))
    gain = float(rng.uniform(*cfg.gain_db))
    return ci, start, bi, bstart, snr, gain


def _mix(ev: F32, mask: F32, bg: F32, snr_db: float, spec: FrontendSpec) -> F32:
    """Event + background scaled so the event's active frames sit `snr_db` above the background."""
    active = np.flatnonzero(mask)
    if active.size:
        lo = int(active[0]) * spec.hop
        hi = int(active[-1]) * spec.hop + spec.win
        p_ev = float(np.mean(ev[lo:hi].astype(np.float64) ** 2))
    else:
        p_ev = float(np.mean(ev.astype(np.float64) ** 2))
    p_bg = float(np.mean(bg.astype(np.float64) ** 2))
    if p_bg < 1e-12 or p_ev < 1e-12:
        return (ev + bg).astype(np.float32)
    g = np.sqrt(p_ev / (p_bg * 10.0 ** (snr_db / 10.0)))
    return (ev + np.float32(g) * bg).astype(np.float32)


def clip_windows(
    x: F32, hop_frames: int, window_frames: int, spec: FrontendSpec = DEFAULT_FRONTEND
) -> npt.NDArray[np.int64]:
    """Window start samples covering a whole clip at `hop_frames` (at least one window)."""
    from edge.dsp.frontend import n_frames

    total = n_frames(x.shape[0], spec)
    last = max(0, total - window_frames)
    starts = list(range(0, last + 1, hop_frames))
    if starts[-1] < last:
        starts.append(starts[-1] + hop_frames)
    return np.array(starts, np.int64) * spec.hop


def windows_logmel(
    x: F32, starts: npt.NDArray[np.int64], window_frames: int, spec: FrontendSpec = DEFAULT_FRONTEND
) -> F32:
    """Log-mel windows [len(starts), window_frames, n_mels] of waveform x."""
    n = window_samples(window_frames, spec)
    return np.stack([logmel(segment(x, int(s), n), spec)[:window_frames] for s in starts])
