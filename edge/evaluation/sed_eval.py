"""`tympan evaluate sed`: the streaming pipeline on strongly labelled soundscapes, DCASE metrics.

Development and evaluation scenes are synthesised from disjoint clips and background files by
`edge.evaluation.soundscape`: by default the two halves of ESC-50 fold 5 (split by source recording),
the fold the student never trained on, so that thresholds are not tuned on clips the model has learnt
(`--dev-events esc50:1,2,3,4` tunes on the training folds instead: their scores are optimistic).
They are rendered for the board's array in random rooms and streamed through the whole edge pipeline
(`EdgePipeline`: STFT, log-mel, int8 model, SED, SRP-PHAT) in 100 ms blocks.

Scored with sed_scores_eval (Ebbers et al., ICASSP 2022), on the evaluation classes only (the AudioSet
classes the clips map to; a class's aliases count as it, see `soundscape`):
- PSDS1 (DCASE 2021-23 task 4 scenario 1: DTC = GTC = 0.7, no cross-trigger term, alpha_st = 1,
  max eFPR 100/h) on the frame scores, threshold-independent;
- collar-based event F1 (onset collar 200 ms, offset collar max(200 ms, 20% of the event), as
  DCASE) and segment F1 (1 s segments) of the events the pipeline emitted; those events enter the
  metrics as a 0/1 score track at threshold 0.5, so what is scored is exactly what a user receives;
- detection latency: the emission time of the `on` phase minus the true onset, for every truth event
  whose onset a detection found within the collar (and the events' own `lat`).

Per-class thresholds are tuned on the development scenes only: the recorded frame scores are replayed
through the SED stage at each candidate threshold, and each class keeps the one that maximises its
event F1 there (classes with fewer than `--min-dev-events` development events, or F1 0 at every
candidate, keep the model's). No candidate goes below the model's condition floor of the latency mode
(model.json thresholds.floors: where the int8 model, run as that mode runs it, would start events on
noise, DC or level steps). The result is written as a thresholds file that `tympan listen --thresholds
FILE` loads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

import edge
from edge.errors import ConfigError, InputError
from edge.evaluation.soundscape import LabelledClip, Scene, SynthConfig
from edge.inference import Model
from edge.messages import Block, Event, Scores
from edge.sed import SedConfig, SedStage

if TYPE_CHECKING:
    from edge.pipeline import PipelineConfig

ONSET_COLLAR_S = 0.2
OFFSET_COLLAR_S = 0.2
OFFSET_COLLAR_RATE = 0.2
SEGMENT_S = 1.0
PSDS1 = {"dtc_threshold": 0.7, "gtc_threshold": 0.7, "cttc_threshold": None, "alpha_ct": 0.0, "alpha_st": 1.0}
PSDS_MAX_EFPR = 100.0
CANDIDATES = (0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BLOCK_S = 0.1
MIN_DEV_EVENTS = 3  # development events a class needs before its threshold is tuned
DEFAULT_DATA = "../shared/data"
DEV_EVENTS = "esc50:5:dev"  # ESC-50 fold 5 (the student's validation fold), halved by source recording
EVAL_EVENTS = "esc50:5:eval"


def sed_scores_eval() -> Any:
    """Import sed_scores_eval (its sed_eval -> dcase_util chain imports the deprecated pkg_resources)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import sed_scores_eval as sse
    except ImportError as e:
        raise ConfigError(
            f"sed_scores_eval is not usable ({e}): install the eval extra (pip install -e '.[eval]')"
        ) from None
    return sse


# --- classes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassTable:
    """The evaluation classes and, for each, the model label columns that count as it."""

    names: tuple[str, ...]
    columns: tuple[tuple[int, ...], ...]
    model_labels: tuple[str, ...]

    @classmethod
    def build(cls, clips: Sequence[LabelledClip], model_labels: Sequence[str]) -> ClassTable:
        index = {name: i for i, name in enumerate(model_labels)}
        aliases: dict[str, list[str]] = {}
        for c in clips:
            if c.label not in index:
                raise ConfigError(f"label {c.label!r} of {c.path}: unknown to the model (not in its label table)")
            known = aliases.setdefault(c.label, [])
            known += [a for a in c.aliases if a in index and a not in known]
        names = tuple(sorted(aliases))
        return cls(names, tuple(tuple(index[a] for a in aliases[n]) for n in names), tuple(model_labels))

    def frame_scores(self, probs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Model frame probabilities [T, K] -> class scores [T, len(names)] (max over a class's aliases)."""
        return np.stack([probs[:, list(cols)].max(axis=1) for cols in self.columns], axis=1)

    def classes_of(self, model_label: str) -> list[str]:
        k = self.model_labels.index(model_label)
        return [n for n, cols in zip(self.names, self.columns, strict=True) if k in cols]

    def overrides(
        self, per_class: dict[str, float], floors: npt.NDArray[np.float32] | None = None
    ) -> tuple[tuple[str, float], ...]:
        """(model label, threshold) for every alias of every class in `per_class`; with `floors` [K] (the
        model's condition floors of a latency mode, `Model.floors_for`) none below its label's floor."""
        out: dict[str, float] = {}
        for name, cols in zip(self.names, self.columns, strict=True):
            if name in per_class:
                for k in cols:
                    thr = per_class[name]
                    out[self.model_labels[k]] = thr if floors is None else max(thr, round(float(floors[k]), 4))
        return tuple(sorted(out.items()))


# --- running the pipeline -----------------------------------------------------------------------
@dataclass(frozen=True)
class Detection:
    onset: float
    offset: float
    label: str  # model label
    emitted: float  # stream time of the `on` phase
    lat_ms: float


@dataclass
class SceneRun:
    scene: Scene
    scores: list[Scores]  # what the SED stage saw, in order
    detections: list[Detection]
    cpu_s: float = 0.0
    latency: str = "balanced"  # the pipeline's latency mode (its thresholds: `Model.thresholds_for`)

    @property
    def probs(self) -> npt.NDArray[np.float32]:
        return np.concatenate([s.probs for s in self.scores]) if self.scores else np.zeros((0, 0), np.float32)

    @property
    def hop_s(self) -> float:
        return self.scores[0].hop_s if self.scores else 0.04


class RecordingSed(SedStage):
    """The SED stage, keeping every `Scores` it is given (the frame scores of the run)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.seen: list[Scores] = []

    def process(self, scores: Scores) -> list[Event]:
        self.seen.append(scores)
        return super().process(scores)


def detections_of(events: Sequence[Event]) -> list[Detection]:
    """Closed events (an `on` and its `off`) as detections."""
    ons = {e.id: e for e in events if e.phase == "on"}
    out = []
    for e in events:
        if e.phase == "off" and e.id in ons and e.offset is not None:
            on = ons[e.id]
            out.append(Detection(on.onset, e.offset, e.label, on.emitted, round((on.emitted - on.onset) * 1000.0, 1)))
    return sorted(out, key=lambda d: (d.onset, d.label))


def run_scene(
    scene: Scene, model: Model, array: Any, sed: SedConfig, pipeline: PipelineConfig | None = None
) -> SceneRun:
    """Stream one scene through the edge pipeline in 100 ms blocks; CPU time is the process's.
    `pipeline`: its config (default: PipelineConfig's; `latency_pipeline` gives a latency mode's) with `sed`."""
    from edge.pipeline import EdgePipeline, PipelineConfig

    cfg = replace(pipeline or PipelineConfig(), sed=sed)
    pipe = EdgePipeline(model, array, cfg)
    recorder = RecordingSed(model.labels, model.thresholds_for(cfg.latency), sed)
    pipe.sed = recorder
    block = round(BLOCK_S * model.frontend.sample_rate)
    audio = scene.audio if array is not None else scene.audio.mean(axis=0, keepdims=True)
    events: list[Event] = []
    t0 = time.process_time()
    for seq, a in enumerate(range(0, audio.shape[1], block)):
        chunk = np.ascontiguousarray(audio[:, a : a + block])
        events += pipe.process(Block(chunk, a / model.frontend.sample_rate, seq, model.frontend.sample_rate))
    events += pipe.flush()
    cpu = time.process_time() - t0
    return SceneRun(scene, recorder.seen, detections_of(events), cpu, cfg.latency)


def latency_pipeline(mode: str, model: Model, sed: SedConfig) -> PipelineConfig:
    """The pipeline config of a latency mode (`edge.pipeline.latency_config`) built on `sed`; its `sed` is
    the mode's SED config."""
    from edge.pipeline import PipelineConfig, latency_config

    return latency_config(mode, model.output_hop_frames, PipelineConfig(sed=sed))


def replay(run: SceneRun, model: Model, sed: SedConfig) -> list[Detection]:
    """The detections the SED stage makes with `sed` on a run's recorded scores (same stream times)."""
    stage = SedStage(model.labels, model.thresholds_for(run.latency), sed)
    events: list[Event] = []
    for s in run.scores:
        events += stage.process(s)
    return detections_of(events + stage.flush())


# --- metrics -----------------------------------------------------------------------------------
def truth_dict(scenes: Sequence[Scene]) -> dict[str, list[tuple[float, float, str]]]:
    return {s.name: [(e.onset, e.offset, e.label) for e in s.events] for s in scenes}


def durations(scenes: Sequence[Scene]) -> dict[str, float]:
    return {s.name: s.duration_s for s in scenes}


def binary_track(
    spans: Sequence[tuple[float, float, str]], duration: float, classes: Sequence[str]
) -> Any:
    """Detected spans as a sed_scores_eval score frame: 1 inside a class's detections, 0 elsewhere."""
    sse = sed_scores_eval()
    inner = {round(min(max(t, 0.0), duration), 6) for a, b, _ in spans for t in (a, b)}
    cuts = sorted({0.0, round(duration, 6)} | inner)
    cuts = [c for c in cuts if c <= duration]
    mids = (np.array(cuts[:-1]) + np.array(cuts[1:])) / 2.0
    col = {c: i for i, c in enumerate(classes)}
    track = np.zeros((len(mids), len(classes)), np.float64)
    for a, b, label in spans:
        if label in col:
            track[(mids >= a) & (mids < b), col[label]] = 1.0
    return sse.base_modules.scores.create_score_dataframe(track, np.array(cuts), list(classes))


def score_frames(run_scores: npt.NDArray[np.float32], hop_s: float, duration: float, classes: Sequence[str]) -> Any:
    """Frame scores [T, C] at hop_s -> a sed_scores_eval score frame, cut at the scene's end."""
    sse = sed_scores_eval()
    n = min(len(run_scores), int(np.ceil(duration / hop_s - 1e-9)))
    stamps = np.minimum(np.arange(n + 1) * hop_s, duration)
    stamps[-1] = duration
    return sse.base_modules.scores.create_score_dataframe(run_scores[:n].astype(np.float64), stamps, list(classes))


def class_spans(dets: Sequence[Detection], table: ClassTable) -> list[tuple[float, float, str]]:
    return [(d.onset, d.offset, c) for d in dets for c in table.classes_of(d.label)]


def event_metrics(
    spans: dict[str, list[tuple[float, float, str]]], scenes: Sequence[Scene], classes: Sequence[str]
) -> dict[str, Any]:
    """Collar-based event F1 and 1 s segment F1 of detected spans (per class, micro and macro).

    Scored on the classes of `classes` that the scenes' truth holds (sed_scores_eval needs truth for
    every class it scores); detections of the other classes are counted in `absent_class_detections`.
    """
    sse = sed_scores_eval()
    truth_classes = {e.label for s in scenes for e in s.events}
    absent = sum(1 for v in spans.values() for _, _, c in v if c not in truth_classes)
    classes = [c for c in classes if c in truth_classes]
    tracks = {s.name: binary_track(spans.get(s.name, []), s.duration_s, classes) for s in scenes}
    truth = truth_dict(scenes)
    f, p, r, stats = sse.collar_based.fscore(
        tracks, truth, 0.5,
        onset_collar=ONSET_COLLAR_S, offset_collar=OFFSET_COLLAR_S, offset_collar_rate=OFFSET_COLLAR_RATE,
    )  # fmt: skip
    # onset-only: the offset condition made vacuous (the target names a 200 ms onset collar)
    fo, _, _, stats_o = sse.collar_based.fscore(
        tracks, truth, 0.5, onset_collar=ONSET_COLLAR_S, offset_collar=1e6, offset_collar_rate=0.0
    )
    sf, sp, sr, _ = sse.segment_based.fscore(tracks, truth, durations(scenes), 0.5, segment_length=SEGMENT_S)
    n_ref = {c: int(stats[c]["n_ref"]) for c in classes}
    present = [c for c in classes if n_ref[c] > 0]
    return {
        "event_f1": _avg(f, present), "event_precision": _avg(p, present), "event_recall": _avg(r, present),
        "segment_f1": _avg(sf, present), "segment_precision": _avg(sp, present), "segment_recall": _avg(sr, present),
        "per_class_event_f1": {c: round(float(f[c]), 4) for c in classes},
        "per_class_n_ref": n_ref,
        "absent_class_detections": absent,
        "event_true_positives": int(sum(int(stats[c]["tps"]) for c in classes)),
        "event_f1_onset_only": _avg(fo, present),
        "event_true_positives_onset_only": int(sum(int(stats_o[c]["tps"]) for c in classes)),
    }  # fmt: skip


def _avg(d: dict[str, Any], present: Sequence[str]) -> dict[str, float]:
    """Micro average (all events pooled) and macro average over the classes with truth events (a class
    absent from the truth still counts its false detections in the micro average)."""
    macro = float(np.mean([d[c] for c in present])) if present else 0.0
    return {"micro": round(float(d["micro_average"]), 4), "macro": round(macro, 4)}


def psds1(frame_scores: dict[str, Any], scenes: Sequence[Scene], alpha_st: float = 1.0) -> tuple[float, Any]:
    """PSDS1 of frame score frames (restricted to the classes in the truth) and its PSD-ROC.

    `alpha_st` 1 is DCASE's PSDS1 (the mean per-class TPR minus its standard deviation: with many
    classes of few events it falls to 0 easily); 0 gives the plain mean, reported beside it."""
    sse = sed_scores_eval()
    present = sorted({e.label for s in scenes for e in s.events})
    frames = {k: v[["onset", "offset", *present]] for k, v in frame_scores.items()}
    value, _, roc, _ = sse.intersection_based.psds(
        frames, truth_dict(scenes), durations(scenes), max_efpr=PSDS_MAX_EFPR, **{**PSDS1, "alpha_st": alpha_st}
    )
    return round(float(value), 4), roc


def latencies(
    spans_with_emit: dict[str, list[tuple[float, float, str, float]]], scenes: Sequence[Scene]
) -> list[float]:
    """Emission minus true onset (ms) of the first detection of each truth event whose onset it found
    within the onset collar (same class)."""
    out = []
    for s in scenes:
        dets = spans_with_emit.get(s.name, [])
        for ev in s.events:
            hits = [em for a, _, c, em in dets if c == ev.label and abs(a - ev.onset) <= ONSET_COLLAR_S]
            if hits:
                out.append((min(hits) - ev.onset) * 1000.0)
    return out


def summarise_latency(ms: Sequence[float]) -> dict[str, float | int | None]:
    if not ms:
        return {"n": 0, "median_ms": None, "p90_ms": None}
    return {"n": len(ms), "median_ms": round(float(np.median(ms)), 1), "p90_ms": round(float(np.percentile(ms, 90)), 1)}


# --- tuning ------------------------------------------------------------------------------------
def tune_thresholds(
    runs: Sequence[SceneRun], model: Model, table: ClassTable, sed: SedConfig, min_events: int
) -> tuple[dict[str, float], dict[str, Any]]:
    """Per-class thresholds maximising each class's event F1 on `runs` (see the module docstring).

    Every candidate is floored, label by label, by the model's condition floors of the runs' latency mode
    (`Model.floors_for`): a threshold under which the model starts events on noise or DC steps is never
    tried; apply the chosen ones as `table.overrides(chosen, floors)` with the same floors.
    Returns the chosen thresholds (classes with enough development events only) and the sweep:
    {"candidates", "per_class_f1": {class: [F1 per candidate]}, "micro_f1": [...], "segment_f1": [...]}.
    """
    scenes = [r.scene for r in runs]
    floors = model.floors_for(runs[0].latency) if runs else None
    in_truth = {e.label for s in scenes for e in s.events}
    per_class: dict[str, list[float]] = {c: [] for c in table.names if c in in_truth}
    micro, segment = [], []
    n_ref: dict[str, int] = {}
    for t in CANDIDATES:
        cfg = replace(sed, thresholds=table.overrides(dict.fromkeys(table.names, t), floors))
        spans = {r.scene.name: class_spans(replay(r, model, cfg), table) for r in runs}
        m = event_metrics(spans, scenes, table.names)
        n_ref = m["per_class_n_ref"]
        for c, f1 in m["per_class_event_f1"].items():
            per_class[c].append(f1)
        micro.append(m["event_f1"]["micro"])
        segment.append(m["segment_f1"]["micro"])
    chosen = {}
    for c in per_class:
        f1 = np.array(per_class[c])
        if n_ref.get(c, 0) >= min_events and f1.max() > 0:  # F1 0 everywhere: no evidence, keep the model's
            best = np.flatnonzero(f1 >= f1.max() - 1e-9)
            chosen[c] = float(CANDIDATES[int(best[len(best) // 2])])  # the middle of a plateau
    sweep = {"candidates": list(CANDIDATES), "per_class_f1": per_class, "micro_f1": micro, "segment_f1": segment}
    return chosen, sweep


def thresholds_document(
    model: Model,
    table: ClassTable,
    chosen: dict[str, float],
    provenance: dict[str, Any],
    floors: npt.NDArray[np.float32] | None = None,
) -> dict[str, Any]:
    """The thresholds file: model labels -> threshold (floored as `tune_thresholds` tried them), plus where
    they came from."""
    return {
        "thresholds": dict(table.overrides(chosen, floors)),
        "model": model.id,
        "tuned_by": f"tympan evaluate sed (tympan {edge.__version__})",
        "per_class": chosen,
        **provenance,
    }


# --- scenes ------------------------------------------------------------------------------------
def make_scenes(
    prefix: str,
    clips: Sequence[LabelledClip],
    backgrounds: Sequence[Path],
    cfg: SynthConfig,
    n: int,
    seed: int,
    array: Any,
) -> list[Scene]:
    from edge.evaluation.soundscape import synthesize

    cache: dict[Path, Any] = {}
    return [synthesize(f"{prefix}{i:03d}", clips, backgrounds, cfg, seed * 100003 + i, array, cache) for i in range(n)]


# --- the command -------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", help="model directory, .tflite or .onnx (default: bundled)")
    p.add_argument("--runtime", default="auto", choices=["auto", "litert", "onnxruntime"], help="model runtime")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--board", metavar="NAME", default="respeaker-4mic-hat", help="array profile (default %(default)s)")
    g.add_argument("--array", metavar="FILE", help="array geometry JSON file")
    g.add_argument("--mono", action="store_true", help="mono scenes, no room, no direction finding")
    p.add_argument("--data", metavar="DIR", help=f"data root (default: {DEFAULT_DATA} beside the checkout)")
    p.add_argument("--dev-events", default=DEV_EVENTS, metavar="SPEC",
                   help="development clips: esc50:FOLDS[:dev|eval], urbansound8k:dev|eval or DIR/<label>/*.wav "
                   "(default %(default)s)")
    p.add_argument("--eval-events", default=EVAL_EVENTS, metavar="SPEC",
                   help="evaluation clips, same forms (default %(default)s)")
    p.add_argument("--backgrounds", default="backgrounds", metavar="SPEC",
                   help="`backgrounds` (the data root's, halved dev/eval) or a folder of audio files")
    p.add_argument("--label-map", metavar="FILE", help="dataset label -> AudioSet CSV (default: the distillation's)")
    p.add_argument("--dev-scenes", type=int, default=30, help="development scenes (default 30; 0: no tuning)")
    p.add_argument("--eval-scenes", type=int, default=30, help="evaluation scenes (default 30)")
    p.add_argument("--duration", type=float, default=SynthConfig.duration_s, help="scene length, s")
    p.add_argument("--events-per-scene", type=int, default=SynthConfig.events_per_scene)
    p.add_argument("--polyphony", type=int, default=SynthConfig.max_polyphony, help="most events at once")
    p.add_argument("--snr", type=float, nargs=2, default=SynthConfig.snr_db, metavar=("LO", "HI"), help="dB range")
    p.add_argument("--thresholds", metavar="FILE", help="use this thresholds file instead of tuning")
    p.add_argument("--median-frames", type=int, default=SedConfig.median_frames, help="SED median filter length")
    p.add_argument(
        "--latency", default="balanced", choices=["balanced", "low"],
        help="the pipeline's latency mode, as `tympan listen --latency` (thresholds tuned for that mode)",
    )  # fmt: skip
    p.add_argument(
        "--min-dev-events", type=int, default=MIN_DEV_EVENTS, help="development events a class needs to be tuned"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="DIR", required=True, help="write report, thresholds and PNG here")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def _data_root(arg: str | None) -> Path:
    if arg:
        root = Path(arg)
    else:
        root = Path(edge.__file__).resolve().parent.parent / DEFAULT_DATA
    return root


def run(args: argparse.Namespace) -> int:
    from boards.profiles import resolve
    from edge.evaluation.soundscape import LabelMap, backgrounds_from_spec, clips_from_spec
    from edge.sed import load_thresholds

    if args.dev_scenes < 0 or args.eval_scenes < 1:
        raise InputError(f"--dev-scenes {args.dev_scenes}, --eval-scenes {args.eval_scenes}: need >= 0 and >= 1")
    if args.min_dev_events < 1:
        raise InputError(f"--min-dev-events {args.min_dev_events}: must be >= 1")
    cfg = SynthConfig(
        duration_s=args.duration, events_per_scene=args.events_per_scene,
        max_polyphony=args.polyphony, snr_db=(args.snr[0], args.snr[1]),
    )  # fmt: skip
    sed = SedConfig(median_frames=args.median_frames)
    if args.thresholds:
        sed = replace(sed, thresholds=load_thresholds(args.thresholds))
    sed_scores_eval()  # fail before any work when the extra is missing
    root = _data_root(args.data)
    label_map = LabelMap.read(args.label_map) if args.label_map else LabelMap.default()
    array = None if args.mono else resolve(None if args.array else args.board, args.array)
    model = Model(args.model, runtime=args.runtime, threads=1)
    mode_cfg = latency_pipeline(args.latency, model, sed)
    sed = mode_cfg.sed
    eval_clips = clips_from_spec(args.eval_events, root, label_map)
    dev_clips = clips_from_spec(args.dev_events, root, label_map) if args.dev_scenes else []
    table = ClassTable.build(list(eval_clips) + list(dev_clips), model.label_names)
    eval_table = ClassTable.build(eval_clips, model.label_names)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    report: dict[str, Any] = {
        "model": model.id, "array": None if array is None else array.name,
        "scenes": {"dev": args.dev_scenes, "eval": args.eval_scenes, "duration_s": cfg.duration_s,
                   "events_per_scene": cfg.events_per_scene, "max_polyphony": cfg.max_polyphony,
                   "snr_db": list(cfg.snr_db), "dev_events": args.dev_events, "eval_events": args.eval_events,
                   "backgrounds": args.backgrounds, "seed": args.seed},
        "sed": {"median_frames": sed.median_frames, "thresholds_file": args.thresholds, "latency": args.latency,
                "model_hop_frames": mode_cfg.model_hop_frames,
                "lookahead_fill_frames": mode_cfg.lookahead_fill_frames,
                "lookahead_decay_db": mode_cfg.lookahead_decay_db, "min_on_frames": sed.min_on_frames,
                "instant_on_ratio": sed.instant_on_ratio},
    }  # fmt: skip
    chosen: dict[str, float] = {}
    sweep: dict[str, Any] | None = None
    if args.dev_scenes and not args.thresholds:
        dev_bg = backgrounds_from_spec(args.backgrounds, root, "dev")
        dev = make_scenes("dev", dev_clips, dev_bg, cfg, args.dev_scenes, args.seed, array)
        dev_runs = [run_scene(s, model, array, sed, mode_cfg) for s in dev]
        chosen, sweep = tune_thresholds(dev_runs, model, table, sed, args.min_dev_events)
        floors = model.floors_for(mode_cfg.latency)
        if chosen:
            doc = thresholds_document(model, table, chosen, {"dev_scenes": report["scenes"]}, floors)
            (out / "thresholds.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        else:
            print(f"tympan: warning: no class has {args.min_dev_events} development events: "
                  "nothing tuned, no thresholds.json", file=sys.stderr)  # fmt: skip
        sed = replace(sed, thresholds=table.overrides(chosen, floors))
        report["tuned_thresholds"] = chosen
    eval_bg = backgrounds_from_spec(args.backgrounds, root, "eval")
    scenes = make_scenes("eval", eval_clips, eval_bg, cfg, args.eval_scenes, args.seed + 1, array)
    runs = [run_scene(s, model, array, sed, mode_cfg) for s in scenes]
    report["eval"] = evaluate_runs(runs, eval_table)
    audio_s = sum(s.duration_s for s in scenes)
    report["eval"]["cpu_s_per_audio_s"] = round(sum(r.cpu_s for r in runs) / audio_s, 5)
    eval_sweep = global_sweep(runs, model, eval_table, sed)
    plot(out / "scores_over_threshold.png", sweep, eval_sweep, runs[0], eval_table, model, sed)
    (out / "sed_eval.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "sed_eval.md").write_text(markdown(report), encoding="utf-8")
    if args.json:
        print(json.dumps(report))
    else:
        print(markdown(report), end="")
        print(f"written to {out}/ (sed_eval.md, sed_eval.json, scores_over_threshold.png"
              + (", thresholds.json)" if chosen else ")"))  # fmt: skip
    return 0


def evaluate_runs(runs: Sequence[SceneRun], table: ClassTable) -> dict[str, Any]:
    """All metrics of finished runs on their scenes (event F1, segment F1, PSDS1, latency)."""
    scenes = [r.scene for r in runs]
    spans = {r.scene.name: class_spans(r.detections, table) for r in runs}
    m = event_metrics(spans, scenes, table.names)
    frames = {r.scene.name: score_frames(table.frame_scores(r.probs), r.hop_s, r.scene.duration_s, table.names)
              for r in runs}  # fmt: skip
    m["psds1"], _ = psds1(frames, scenes)
    m["psds1_alpha_st0"], _ = psds1(frames, scenes, alpha_st=0.0)
    with_emit = {
        r.scene.name: [(d.onset, d.offset, c, d.emitted) for d in r.detections for c in table.classes_of(d.label)]
        for r in runs
    }
    m["latency_vs_truth"] = summarise_latency(latencies(with_emit, scenes))
    m["latency_reported"] = summarise_latency(
        [d.lat_ms for r in runs for d in r.detections if table.classes_of(d.label)]
    )
    m["n_truth_events"] = sum(len(s.events) for s in scenes)
    m["n_detections"] = sum(len(v) for v in spans.values())
    return m


def global_sweep(runs: Sequence[SceneRun], model: Model, table: ClassTable, sed: SedConfig) -> dict[str, Any]:
    """Micro event and segment F1 with every class at one threshold, for each candidate (for the plot)."""
    scenes = [r.scene for r in runs]
    floors = model.floors_for(runs[0].latency) if runs else None
    ev, seg = [], []
    for t in CANDIDATES:
        cfg = replace(sed, thresholds=table.overrides(dict.fromkeys(table.names, t), floors))
        spans = {r.scene.name: class_spans(replay(r, model, cfg), table) for r in runs}
        m = event_metrics(spans, scenes, table.names)
        ev.append(m["event_f1"]["micro"])
        seg.append(m["segment_f1"]["micro"])
    return {"candidates": list(CANDIDATES), "micro_f1": ev, "segment_f1": seg}


def plot(
    path: Path,
    dev_sweep: dict[str, Any] | None,
    eval_sweep: dict[str, Any],
    example: SceneRun,
    table: ClassTable,
    model: Model,
    sed: SedConfig,
) -> None:
    """Left: F1 over threshold (dev and eval). Right: one evaluation scene's class scores over time,
    each class's threshold dashed, its truth shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
    a.plot(eval_sweep["candidates"], eval_sweep["micro_f1"], "o-", label="eval: event F1 (micro)")
    a.plot(eval_sweep["candidates"], eval_sweep["segment_f1"], "s--", label="eval: segment F1 (micro)")
    if dev_sweep is not None:
        a.plot(dev_sweep["candidates"], dev_sweep["micro_f1"], "^:", label="dev: event F1 (micro)")
    a.set_xlabel("threshold (all classes)")
    a.set_ylabel("F1")
    a.set_ylim(0, 1)
    a.grid(alpha=0.3)
    a.legend()
    a.set_title("F1 over threshold")
    scores = table.frame_scores(example.probs)
    t = np.arange(len(scores)) * example.hop_s
    present = sorted({e.label for e in example.scene.events})
    thr = SedStage(model.labels, model.thresholds_for(example.latency), sed).on_thr
    for i, name in enumerate(present):
        k = table.names.index(name)
        line = b.plot(t, scores[:, k], label=name)[0]
        b.axhline(float(thr[table.columns[k][0]]), color=line.get_color(), ls="--", lw=0.8)
        for e in example.scene.events:
            if e.label == name:
                b.axvspan(e.onset, e.offset, ymin=i / len(present), ymax=(i + 1) / len(present),
                          color=line.get_color(), alpha=0.15)  # fmt: skip
    b.set_xlabel("stream time (s)")
    b.set_ylabel("class score")
    b.set_ylim(0, 1)
    b.set_title(f"{example.scene.name}: scores, thresholds (dashed), truth (shaded)")
    if present:
        b.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    e = report["eval"]
    lat, rep = e["latency_vs_truth"], e["latency_reported"]
    lines = [
        f"# SED evaluation: {report['model']} on {report['scenes']['eval']} evaluation scenes",
        "",
        f"array: {report['array'] or 'mono'}; scenes {report['scenes']['duration_s']} s, "
        f"{report['scenes']['events_per_scene']} events, polyphony <= {report['scenes']['max_polyphony']}, "
        f"SNR {report['scenes']['snr_db'][0]:g}-{report['scenes']['snr_db'][1]:g} dB; "
        f"events {report['scenes']['eval_events']} (tuned on {report['scenes']['dev_events']}, "
        f"{report['scenes']['dev']} scenes); latency mode {report['sed'].get('latency', 'balanced')} "
        f"(model every {report['sed'].get('model_hop_frames', 12)} frames"
        + (f", look-ahead filled {fill} frames)" if (fill := report["sed"].get("lookahead_fill_frames")) else ")"),
        "",
        "| metric | micro | macro |",
        "|---|---|---|",
        f"| event F1 (collars 200 ms, max(200 ms, 20%)) | {e['event_f1']['micro']:.3f} "
        f"| {e['event_f1']['macro']:.3f} |",
        f"| event precision | {e['event_precision']['micro']:.3f} | {e['event_precision']['macro']:.3f} |",
        f"| event recall | {e['event_recall']['micro']:.3f} | {e['event_recall']['macro']:.3f} |",
        f"| segment F1 (1 s) | {e['segment_f1']['micro']:.3f} | {e['segment_f1']['macro']:.3f} |",
        f"| PSDS1 (alpha_st 1, DCASE) | {e['psds1']:.3f} | |",
        f"| PSDS1 with alpha_st 0 (mean over classes) | {e['psds1_alpha_st0']:.3f} | |",
        "",
        f"- detection latency (emission - true onset, {lat['n']} onsets found): median {lat['median_ms']} ms, "
        f"p90 {lat['p90_ms']} ms; as reported in `lat`: median {rep['median_ms']} ms",
        f"- {e['n_detections']} detections of {e['n_truth_events']} truth events, "
        f"{e['event_true_positives']} matched within the collars; "
        f"pipeline CPU {e['cpu_s_per_audio_s'] * 1000:.1f} ms per audio second "
        f"({1 / max(e['cpu_s_per_audio_s'], 1e-9):.0f}x real time, 1 thread)",
        "",
    ]
    return "\n".join(lines)

