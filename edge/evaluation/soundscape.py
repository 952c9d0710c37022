"""Labelled clips + backgrounds -> strongly labelled soundscapes (mono, or a board's array in a room).

Events are cut from clips whose label is known (ESC-50 and UrbanSound8K layouts under the data root,
or any folder laid out as `DIR/<label>/*.wav|flac|ogg`), mixed into a background at a chosen SNR with
at most `max_polyphony` events sounding at once and never two events of one class overlapping. The
truth of each event is where its clip is active and audible: 20 ms frames within `activity_rel_db`
of the clip's loudest frame (and above `activity_floor_db` dBFS) where, once mixed, the event is at
least `audible_snr_db` above the background around it (200 ms average); runs closer than
`merge_gap_s` are joined. So the silence that pads many ESC-50 clips, and the quiet stretches between
a dog's barks, are not labelled as sound.

Dataset labels become AudioSet labels through a mapping CSV (`dataset,label,mid,display_name`, the
one the distillation pipeline uses, `quantize/data/dataset_to_audioset.csv`, read here without
importing `quantize`): a dataset label's evaluation class is the display name of its first row; all
the AudioSet labels mapped from the dataset labels of one class count as that class (aliases:
ESC-50 `dog` is "Dog" and "Bark").

With an array profile the scene is rendered in a random shoebox room by pyroomacoustics (image
source method; RT60 and size drawn per scene), every event and the background at their own
positions; truth times then include the direct-path delay to the array centre. SNRs are set on the dry
signals. Every scene is drawn from its own seed: the same arguments give the same scenes.
"""

from __future__ import annotations

import csv
import importlib.util
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from boards.profiles import ArrayProfile
from edge.dsp.frontend import SAMPLE_RATE
from edge.errors import ConfigError, InputError
from edge.sources import read_audio

F32 = npt.NDArray[np.float32]
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
MAPPING_COLUMNS = ("dataset", "label", "mid", "display_name")
ACTIVITY_FRAME_S = 0.02
SPEED_OF_SOUND = 343.0


@dataclass(frozen=True)
class LabelMap:
    """(dataset, dataset label) -> AudioSet display names (first = the evaluation class)."""

    rows: dict[tuple[str, str], tuple[str, ...]]

    @classmethod
    def read(cls, path: str | Path) -> LabelMap:
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = [c for c in MAPPING_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise ConfigError(f"{path}: label map lacks column(s) {missing}")
                table: dict[tuple[str, str], list[str]] = {}
                for r in reader:
                    key = ((r["dataset"] or "").strip(), (r["label"] or "").strip())
                    name = (r["display_name"] or "").strip()
                    if not all(key) or not name:
                        raise ConfigError(f"{path}: line {reader.line_num}: empty dataset, label or display_name")
                    table.setdefault(key, []).append(name)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the label map ({e.strerror})") from None
        return cls({k: tuple(v) for k, v in table.items()})

    @classmethod
    def default(cls) -> LabelMap:
        """The distillation pipeline's mapping, found beside the `quantize` package (not imported)."""
        spec = importlib.util.find_spec("quantize")
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        for loc in locations:
            path = Path(loc) / "data" / "dataset_to_audioset.csv"
            if path.is_file():
                return cls.read(path)
        raise ConfigError("no default label map (quantize/data/dataset_to_audioset.csv): pass --label-map FILE")

    def names(self, dataset: str, label: str) -> tuple[str, ...] | None:
        return self.rows.get((dataset, label))

    def any_dataset(self, label: str) -> tuple[str, ...] | None:
        """The names of `label` under whichever dataset maps it (folder layouts name no dataset)."""
        for (_, lab), names in sorted(self.rows.items()):
            if lab == label:
                return names
        return None


@dataclass(frozen=True)
class LabelledClip:
    path: Path
    label: str  # the evaluation class (an AudioSet display name)
    aliases: tuple[str, ...]  # every AudioSet label that counts as this class (label first)


@dataclass(frozen=True)
class TruthEvent:
    onset: float
    offset: float
    label: str


@dataclass(frozen=True)
class Scene:
    """One soundscape: `audio` float32 [channels, n] at 16 kHz and its strong labels."""

    name: str
    audio: F32
    events: tuple[TruthEvent, ...]
    sources: tuple[str, ...]

    @property
    def duration_s(self) -> float:
        return self.audio.shape[1] / SAMPLE_RATE


@dataclass(frozen=True)
class SynthConfig:
    duration_s: float = 15.0
    events_per_scene: int = 4
    max_polyphony: int = 2
    snr_db: tuple[float, float] = (6.0, 30.0)  # DESED's foreground range
    background_dbfs: tuple[float, float] = (-45.0, -30.0)
    max_event_s: float = 5.0
    activity_rel_db: float = 30.0
    activity_floor_db: float = -65.0
    audible_snr_db: float = 0.0
    merge_gap_s: float = 0.25
    min_event_s: float = 0.05
    margin_s: float = 0.5  # no event in the first and last margin_s of a scene
    rt60_s: tuple[float, float] = (0.2, 0.6)
    room_m: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] = ((4.0, 8.0), (3.0, 6.0), (2.5, 3.2))
    max_image_order: int = 10

    def __post_init__(self) -> None:
        if not 2.0 <= self.duration_s <= 600.0:
            raise ConfigError(f"scene duration {self.duration_s!r} s: must be in [2, 600]")
        if self.events_per_scene < 1 or self.max_polyphony < 1:
            raise ConfigError(
                f"events per scene {self.events_per_scene!r}, polyphony {self.max_polyphony!r}: both must be >= 1"
            )
        lo, hi = self.snr_db
        if not -30.0 <= lo <= hi <= 60.0:
            raise ConfigError(f"SNR range {self.snr_db!r} dB: need -30 <= low <= high <= 60")
        if not 0.0 <= self.margin_s < self.duration_s / 2 - 0.5:
            raise ConfigError(f"scene margin {self.margin_s!r} s: must leave >= 1 s of a {self.duration_s} s scene")
        if self.max_event_s < 0.1:
            raise ConfigError(f"max event length {self.max_event_s!r} s: must be >= 0.1 (longer clips are cut)")


# --- clip lists --------------------------------------------------------------------------------
def _split_of(key: str) -> str:
    """A stable dev/eval half for sources without folds (by a hash of `key`)."""
    return "dev" if zlib.crc32(key.encode()) % 2 == 0 else "eval"


def _clip(path: Path, names: tuple[str, ...]) -> LabelledClip:
    return LabelledClip(path, names[0], tuple(dict.fromkeys(names)))


def _read_meta(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(f"{path}: metadata file not found")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def clips_from_spec(spec: str, root: Path, label_map: LabelMap) -> list[LabelledClip]:
    """Clips named by `spec`: `esc50:FOLDS` (e.g. `esc50:1,2,3,4`), `esc50:FOLDS:dev|eval` (halves of
    those folds by source recording), `urbansound8k:dev|eval` (halves by recording), or a folder `DIR`
    laid out as `DIR/<label>/*.wav`. Dataset labels without a mapping
    are skipped (they have no AudioSet class to score); a folder's labels must all be known."""
    kind, _, arg = spec.partition(":")
    if kind == "esc50" and arg:
        fold_list, _, half = arg.partition(":")
        try:
            folds = {int(f) for f in fold_list.split(",")}
        except ValueError:
            raise ConfigError(f"events {spec!r}: ESC-50 folds must be integers, e.g. esc50:1,2,3,4") from None
        if half not in ("", "dev", "eval"):
            raise ConfigError(f"events {spec!r}: a fold's half is :dev or :eval, e.g. esc50:5:dev")
        out = []
        for r in _read_meta(root / "esc50" / "esc50_meta.csv"):
            names = label_map.names("esc50", r["category"])
            if int(r["fold"]) in folds and names and (not half or _split_of(r["src_file"]) == half):
                out.append(_clip(root / "esc50" / "audio" / r["filename"], names))
    elif kind == "urbansound8k" and arg in ("dev", "eval"):
        out = []
        for r in _read_meta(root / "urbansound8k_fold3" / "meta.csv"):
            names = label_map.names("urbansound8k", r["class"])
            if names and _split_of(r["fsID"]) == arg:
                out.append(_clip(root / "urbansound8k_fold3" / "audio" / r["path"], names))
    else:
        folder = Path(spec)
        if not folder.is_dir():
            raise InputError(
                f"events {spec!r}: not a folder, nor esc50:FOLDS or urbansound8k:dev|eval"
            )
        out = []
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            files = sorted(p for p in sub.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
            names = label_map.any_dataset(sub.name) or (sub.name,)
            out += [_clip(p, names) for p in files]
    if not out:
        raise InputError(f"events {spec!r}: no labelled clips found (with a mapped label)")
    return out


def backgrounds_from_spec(spec: str, root: Path, split: str) -> list[Path]:
    """Background files: `backgrounds` (the data root's, halved dev/eval by file) or a folder of audio."""
    if spec == "backgrounds":
        rows = _read_meta(root / "backgrounds" / "meta.csv")
        audio = root / "backgrounds" / "audio"
        # the meta paths carry a label folder (`no_drone/...`) that the audio folder may not have
        paths = [audio / r["path"] if (audio / r["path"]).exists() else audio / Path(r["path"]).name for r in rows]
        files = [p for p in paths if _split_of(p.name) == split]
    else:
        folder = Path(spec)
        if not folder.is_dir():
            raise InputError(f"backgrounds {spec!r}: not a folder (nor `backgrounds`)")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise InputError(f"backgrounds {spec!r}: no audio files found")
    return files


# --- activity and excerpts ---------------------------------------------------------------------
def frame_db(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Level (dBFS, a full-scale sine = 0) of each whole 20 ms frame of a mono signal."""
    hop = round(ACTIVITY_FRAME_S * SAMPLE_RATE)
    n = len(x) // hop
    frames = np.asarray(x[: n * hop], np.float64).reshape(n, hop)
    return np.asarray(10.0 * np.log10(np.mean(frames**2, axis=1) * 2.0 + 1e-20))


def active_runs(
    x: npt.NDArray[np.floating], cfg: SynthConfig, floor_db: npt.NDArray[np.float64] | None = None
) -> list[tuple[int, int]]:
    """Sample ranges [a, b) where a mono signal is active (see the module docstring); with `floor_db`
    (per 20 ms frame), only where it is also `audible_snr_db` above that floor."""
    hop = round(ACTIVITY_FRAME_S * SAMPLE_RATE)
    db = frame_db(x)
    n = len(db)
    if n == 0:
        return []
    active = db >= max(float(db.max()) - cfg.activity_rel_db, cfg.activity_floor_db)
    if floor_db is not None:
        active &= db >= floor_db[:n] + cfg.audible_snr_db
    runs: list[list[int]] = []
    gap = round(cfg.merge_gap_s / ACTIVITY_FRAME_S)
    for i in np.flatnonzero(active):
        if runs and i - runs[-1][1] <= gap:
            runs[-1][1] = int(i) + 1
        else:
            runs.append([int(i), int(i) + 1])
    min_frames = cfg.min_event_s / ACTIVITY_FRAME_S
    return [(a * hop, b * hop) for a, b in runs if b - a >= min_frames]


@dataclass
class _Placed:
    clip: LabelledClip
    dry: F32  # the excerpt, gain applied
    start: int  # sample of the scene where the excerpt starts
    runs: list[tuple[int, int]] = field(default_factory=list)  # active ranges within the excerpt


def _excerpt(
    x: F32, cfg: SynthConfig, rng: np.random.Generator
) -> tuple[F32, list[tuple[int, int]]] | None:
    runs = active_runs(x, cfg)
    if not runs:
        return None
    a, b = runs[0][0], runs[-1][1]
    longest = round(min(cfg.max_event_s, cfg.duration_s - 2 * cfg.margin_s) * SAMPLE_RATE)
    if b - a > longest:
        starts = [r[0] for r in runs if r[0] < b - round(0.2 * SAMPLE_RATE)]
        a = int(rng.choice(starts))
        b = min(b, a + longest)
    inner = [(max(r0, a) - a, min(r1, b) - a) for r0, r1 in runs if r1 > a and r0 < b]
    inner = [(r0, r1) for r0, r1 in inner if r1 - r0 >= cfg.min_event_s * SAMPLE_RATE]
    if not inner:
        return None
    return x[a:b].astype(np.float32), inner


def _background(files: Sequence[Path], n: int, rng: np.random.Generator, cache: dict[Path, F32]) -> F32:
    """`n` samples of background: random files end to end with 10 ms cross-fades."""
    fade = round(0.01 * SAMPLE_RATE)
    out = np.zeros(n + fade, np.float32)
    pos = 0
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    while pos < n:
        f = files[int(rng.integers(len(files)))]
        if f not in cache:
            cache[f] = read_audio(f).mean(axis=0).astype(np.float32)
        seg = cache[f].copy()
        if len(seg) <= 2 * fade:
            continue
        seg[:fade] *= ramp
        seg[-fade:] *= ramp[::-1]
        end = min(pos + len(seg), len(out))
        out[pos:end] += seg[: end - pos]
        pos = end - fade
    return out[:n]


def _rms(x: npt.NDArray[np.floating]) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20))


def synthesize(
    name: str,
    clips: Sequence[LabelledClip],
    backgrounds: Sequence[Path],
    cfg: SynthConfig,
    seed: int,
    array: ArrayProfile | None = None,
    cache: dict[Path, F32] | None = None,
) -> Scene:
    """One scene drawn from `seed`: see the module docstring."""
    if not clips:
        raise InputError(f"scene {name}: no event clips to draw from")
    if not backgrounds:
        raise InputError(f"scene {name}: no background files to draw from")
    rng = np.random.default_rng(seed)
    cache = {} if cache is None else cache
    n = round(cfg.duration_s * SAMPLE_RATE)
    margin = round(cfg.margin_s * SAMPLE_RATE)
    bg = _background(backgrounds, n, rng, cache)
    bg *= 10.0 ** (rng.uniform(*cfg.background_dbfs) / 20.0) / (_rms(bg) * np.sqrt(2.0))
    placed: list[_Placed] = []
    tries = 0
    while len(placed) < cfg.events_per_scene and tries < 50 * cfg.events_per_scene:
        tries += 1
        clip = clips[int(rng.integers(len(clips)))]
        if clip.path not in cache:
            cache[clip.path] = read_audio(clip.path).mean(axis=0).astype(np.float32)
        cut = _excerpt(cache[clip.path], cfg, rng)
        if cut is None:
            continue
        dry, runs = cut
        if len(dry) > n - 2 * margin:
            continue
        start = int(rng.integers(margin, n - margin - len(dry) + 1))
        span = (start + runs[0][0], start + runs[-1][1])
        if not _fits(span, clip.label, placed, cfg.max_polyphony):
            continue
        active = np.concatenate([dry[a:b] for a, b in runs])
        bg_rms = _rms(bg[span[0] : span[1]])
        gain = bg_rms * 10.0 ** (rng.uniform(*cfg.snr_db) / 20.0) / _rms(active)
        peak = float(np.max(np.abs(dry))) * gain
        if peak > 0.9:  # keep the mixture clear of clipping: the SNR draw gives way
            gain *= 0.9 / peak
        wet = (dry * gain).astype(np.float32)
        audible = active_runs(wet, cfg, _smoothed_db(bg[start : start + len(dry)]))
        if not audible:
            continue
        placed.append(_Placed(clip, wet, start, audible))
    placed.sort(key=lambda p: p.start)
    if array is None:
        audio = bg.copy()
        for p in placed:
            audio[p.start : p.start + len(p.dry)] += p.dry
        mixture = audio[None, :]
        delays = [0.0] * len(placed)
    else:
        mixture, delays = _render_room(bg, placed, n, array, cfg, rng)
    events = tuple(
        TruthEvent(round((p.start + a) / SAMPLE_RATE + d, 4), round((p.start + b) / SAMPLE_RATE + d, 4), p.clip.label)
        for p, d in zip(placed, delays, strict=True)
        for a, b in p.runs
    )
    events = tuple(sorted(events, key=lambda e: (e.onset, e.label)))
    return Scene(name, np.clip(mixture, -1.0, 1.0).astype(np.float32), events, tuple(str(p.clip.path) for p in placed))


def _smoothed_db(bg: F32) -> npt.NDArray[np.float64]:
    """The background's level per 20 ms frame, power-averaged over 200 ms (10 frames)."""
    p = 10.0 ** (frame_db(bg) / 10.0)
    k = np.ones(10) / 10.0
    return np.asarray(10.0 * np.log10(np.convolve(p, k, mode="same") + 1e-20))


def _fits(span: tuple[int, int], label: str, placed: Sequence[_Placed], max_polyphony: int) -> bool:
    """Whether an event spanning `span` keeps polyphony <= max and overlaps no event of its class."""
    guard = round(0.1 * SAMPLE_RATE)  # two events of a class at least 100 ms apart
    spans = [(p.start + p.runs[0][0], p.start + p.runs[-1][1], p.clip.label) for p in placed]
    for a, b, lab in spans:
        if lab == label and a < span[1] + guard and span[0] < b + guard:
            return False
    points = sorted({span[0]} | {a for a, _, _ in spans if span[0] <= a < span[1]})
    for t in points:
        if 1 + sum(a <= t < b for a, b, _ in spans) > max_polyphony:
            return False
    return True


def _render_room(
    bg: F32, placed: Sequence[_Placed], n: int, array: ArrayProfile, cfg: SynthConfig, rng: np.random.Generator
) -> tuple[F32, list[float]]:
    """[n_mics, n] mixture of a random shoebox room; the direct-path delay of each event (s)."""
    import pyroomacoustics as pra
    from scipy.signal import oaconvolve

    dims = np.array([rng.uniform(*r) for r in cfg.room_m])
    rt60 = float(rng.uniform(*cfg.rt60_s))
    absorption, order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(
        dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(order, cfg.max_image_order)
    )
    centre = np.array([dims[0] / 2 + rng.uniform(-0.5, 0.5), dims[1] / 2 + rng.uniform(-0.5, 0.5), 1.0])
    room.add_microphone_array((array.mics + centre).T)
    positions = [_position(dims, centre, rng) for _ in placed]
    for pos in positions:
        room.add_source(pos)
    corner = np.array([0.5, 0.5, min(2.0, dims[2] - 0.3)])  # the background: a far source
    room.add_source(corner)
    room.compute_rir()
    lead = pra.constants.get("frac_delay_length") // 2  # the fractional-delay filter's own delay
    out = np.zeros((array.n_mics, n + lead), np.float64)
    signals: list[tuple[Any, int]] = [(p.dry, p.start) for p in placed] + [(bg, 0)]
    for s, (sig, start) in enumerate(signals):
        for m in range(array.n_mics):
            y = oaconvolve(sig, room.rir[m][s])[: n + lead - start]
            out[m, start : start + len(y)] += y
    delays = [float(np.linalg.norm(pos - centre)) / SPEED_OF_SOUND for pos in positions]
    return out[:, lead : lead + n].astype(np.float32), delays


def _position(dims: npt.NDArray[np.float64], centre: npt.NDArray[np.float64], rng: np.random.Generator) -> Any:
    """A source position at least 1 m from the array and 0.4 m from the walls."""
    for _ in range(100):
        pos = np.array([rng.uniform(0.4, d - 0.4) for d in dims])
        if np.linalg.norm(pos - centre) >= 1.0:
            return pos
    return np.array([0.4, 0.4, 1.0])
