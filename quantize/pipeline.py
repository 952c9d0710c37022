"""Config + data + teacher -> run directory (student, int8 models, report) -> model directory.

The one wiring module of the workstation pipeline: it calls the stages in order and owns the files
of a run directory:
  transfer stats, student_fp32.pt, student_fp32.onnx, model_int8.tflite, model_int8.onnx,
  metrics.json, report.md, accuracy.png, latency.png, quantisation_ap_scatter.png,
  model/ (the installable model directory, see quantize.export; the PNGs stay in the run directory).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.dsp.frontend import DEFAULT_FRONTEND
from edge.errors import ConfigError, ModelError
from quantize.audio import F32, read_audio
from quantize.config import PipelineConfig
from quantize.labels import LabelSet, load_dataset_mapping, load_labels, packaged_data
from quantize.teacher import OnnxTeacher, Teacher, TeacherCache, load_teacher, save_npz
from quantize.transfer import Clip, TransferSet, _hash_fraction, build_transfer, list_backgrounds, list_clips

STUDENT_PT = "student_fp32.pt"
STUDENT_QAT_PT = "student_qat_folded.pt"
"""State dict of the BatchNorm-folded student after quantisation-aware fine-tuning (when QAT won)."""
RUN_JSON = "run.json"
LATENCY_ROUNDS = 9  # the report's latency rows: rounds of `eval.latency_repeats` calls, every model in turn
FP32 = "student_fp32"
INT8 = ("student_int8_tflite", "student_int8_onnx")
COVERAGE_ARRAYS = ("gt", "ev_logits", "ev_mask", "bg_logits", "bg_weight")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "edge" / "models" / "default"
LICENCES = {
    "esc50": "ESC-50: CC BY-NC 3.0 (ESC-10 subset CC BY 3.0)",
    "urbansound8k": "UrbanSound8K: CC BY-NC 3.0",
    "vehicles": "vehicles: licence not stated by its source",
    "dcase2016": "DCASE 2016 task 2 isolated events: DCASE challenge data terms",
    "backgrounds": "backgrounds: licence not stated by its source",
}


@dataclass(frozen=True)
class Setup:
    """Everything the stages share: labels, teacher, its cache and the clip lists."""

    cfg: PipelineConfig
    labels: LabelSet
    teacher_map: LabelSet
    teacher_cols: np.ndarray
    mapping: dict[tuple[str, str], tuple[int, ...]]
    teacher: Teacher
    cache: TeacherCache
    clips: list[Clip]
    backgrounds: list[Path]
    cache_dir: Path


def _subset(clips: list[Clip], n: int) -> list[Clip]:
    """The first n clips of each (dataset, split), in a stable hashed order (all if n == 0)."""
    if n == 0:
        return clips
    out: list[Clip] = []
    for key in sorted({(c.dataset, c.split) for c in clips}):
        group = sorted((c for c in clips if (c.dataset, c.split) == key), key=lambda c: _hash_fraction(str(c.path)))
        out += group[:n]
    return out


def setup(cfg: PipelineConfig) -> Setup:
    p = cfg.paths
    cache_dir = Path(os.path.expanduser(p.cache_dir))
    teacher_map = load_labels(Path(p.teacher_class_map))
    labels = load_labels(Path(p.labels) if p.labels else packaged_data("labels_default.csv"), teacher_map)
    mapping = load_dataset_mapping(
        Path(p.dataset_mapping) if p.dataset_mapping else packaged_data("dataset_to_audioset.csv"), labels
    )
    teacher = load_teacher(Path(p.teacher), cache_dir / "teacher", cfg.window_frames, DEFAULT_FRONTEND)
    if teacher.n_classes != len(teacher_map):
        raise ModelError(
            f"{p.teacher}: teacher has {teacher.n_classes} outputs, its class map "
            f"{p.teacher_class_map} has {len(teacher_map)} rows"
        )
    root = Path(p.data_root)
    clips = _subset(list_clips(root, cfg.transfer), cfg.transfer.max_clips_per_dataset)
    backgrounds = list_backgrounds(root)
    return Setup(
        cfg,
        labels,
        teacher_map,
        labels.columns_in(teacher_map),
        mapping,
        teacher,
        TeacherCache(teacher, cache_dir),
        clips,
        backgrounds,
        cache_dir,
    )


class _ProgressCache(TeacherCache):
    """`inner`'s cache (same teacher, same files) that ticks a progress bar per audio file scored."""

    def __init__(self, inner: TeacherCache, label: str, total: int) -> None:
        from quantize.evaluate import Progress

        self.teacher, self.dir, self.hits, self.misses = inner.teacher, inner.dir, inner.hits, inner.misses
        self.progress = Progress(label, total)

    def logits(self, audio_path: Path, starts: np.ndarray, wave: F32 | None = None) -> F32:
        out = super().logits(audio_path, starts, wave)
        self.progress.update()
        return out


def transfer_file(s: Setup, seed: int, split: str) -> Path:
    """The cache file of a transfer set, named by everything that determines it."""
    transfer = s.cfg.to_dict()["transfer"]
    if not transfer["dataset_window_scale"]:
        del transfer["dataset_window_scale"]  # added later: runs without it keep their cache files
    if not transfer["dataset_label_weight"] or split != "train":
        del transfer["dataset_label_weight"]  # likewise; validation windows keep full labels (transfer_sets)
    if not transfer["us8k_folds"]:
        del transfer["us8k_folds"], transfer["us8k_val_fold"]  # likewise
    if not transfer["reverb_fraction"]:
        del transfer["reverb_fraction"], transfer["reverb_rt60_s"], transfer["reverb_drr_db"]  # likewise
    key_src = json.dumps(
        {
            "transfer": transfer,
            "labels": s.labels.mids,
            "teacher": s.teacher.cache_key,
            "seed": seed,
            "clips": [str(c.path) for c in s.clips],
            "bg": [str(b) for b in s.backgrounds],
            "window": s.cfg.window_frames,
            "version": 1,
        },
        sort_keys=True,
    )
    key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
    return s.cache_dir / f"transfer-{key}-{split}.npz"


def transfer_sets(s: Setup, seed: int) -> tuple[TransferSet, TransferSet]:
    """Train and validation mixture sets, cached by everything that determines them (with
    `distill.mixture_kd`, the teacher's logits of their windows too)."""
    out = []
    for split, split_seed in (("train", seed), ("val", seed + 1)):
        f = transfer_file(s, seed, split)
        if f.exists():
            print(f"transfer set ({split}): cached {f}", flush=True)
            ts = TransferSet.load(f)
        else:
            ts = _build_transfer_set(s, split, split_seed)
            ts.save(f)
        if s.cfg.distill.mixture_kd > 0:
            ts = mixture_logits(s, ts, mixture_file(f))
        out.append(ts)
    return out[0], out[1]


def _build_transfer_set(s: Setup, split: str, split_seed: int) -> TransferSet:
    print(f"transfer set ({split}): building", flush=True)
    split_clips = [c for c in s.clips if c.split == split]
    # one cache call per event clip and per background used: the total is an upper bound
    cache = _ProgressCache(s.cache, f"teacher ({split}): files", len(split_clips) + len(s.backgrounds))
    ts = build_transfer(
        split_clips,
        s.backgrounds,
        cache,
        s.teacher_cols,
        s.mapping,
        s.labels,
        # validation windows keep full labels: QAT's window accuracy scores against them
        s.cfg.transfer if split == "train" else replace(s.cfg.transfer, dataset_label_weight={}),
        split_seed,
        s.cfg.window_frames,
    )
    cache.progress.close()
    s.cache.hits, s.cache.misses = cache.hits, cache.misses
    return ts


def mixture_file(transfer: Path) -> Path:
    """Where the teacher's logits of a transfer set's windows are cached: beside its file (whose name
    holds the teacher's key)."""
    return transfer.with_name(transfer.name.replace(".npz", "-mix.npz"))


def mixture_logits(s: Setup, ts: TransferSet, mf: Path) -> TransferSet:
    """`ts` with the teacher's logits of each of its mixture windows (`TransferSet.mix_logits`, for
    `distill.mixture_kd`), read from or cached in `mf` (`mixture_file`)."""
    if mf.exists():
        with np.load(mf) as z:
            mix = z["mix_logits"]
        if mix.shape == (len(ts), len(s.labels)):
            print(f"teacher on the mixtures: cached {mf}", flush=True)
            return replace(ts, mix_logits=mix)
    from quantize.evaluate import Progress

    progress = Progress(f"teacher on the mixtures ({len(ts)} windows)", len(ts))
    mix = np.empty((len(ts), len(s.labels)), np.float32)
    for i in range(0, len(ts), 256):
        j = min(i + 256, len(ts))
        mix[i:j] = s.teacher.logits_logmel(ts.x[i:j])[:, s.teacher_cols]
        progress.update(j - i)
    progress.close()
    save_npz(mf, mix_logits=mix)
    return replace(ts, mix_logits=mix)


def run(cfg: PipelineConfig, out: Path, seed: int, command: str, install_default: bool) -> Path:
    """The whole pipeline; returns the model directory (out/model)."""
    train_and_quantize(cfg, out, seed, command)
    if cfg.heads.enabled:
        from quantize.heads import train_heads

        train_heads(out, seed=seed, strict=False)
    return evaluate_and_package(out, install_default)


def train_and_quantize(cfg: PipelineConfig, out: Path, seed: int, command: str) -> None:
    """Teacher -> transfer sets -> student -> int8 files, written into run directory `out`."""
    import torch

    from quantize.distill import train_student
    from quantize.export import export_onnx_fp32
    from quantize.ptq import quantize_onnx, quantize_tflite

    t_start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    s = setup(cfg)
    n_train = sum(c.split == "train" for c in s.clips)
    print(
        f"{len(s.labels)} classes, {n_train} train / {len(s.clips) - n_train} val clips, "
        f"{len(s.backgrounds)} backgrounds, teacher {s.teacher.path}",
        flush=True,
    )
    train, val = transfer_sets(s, seed)

    print(f"distilling: {len(train)} train / {len(val)} val windows", flush=True)
    model, trained = train_student(train, val, len(s.labels), cfg.student, cfg.distill, cfg.output_hop_frames, seed)
    train_info: dict[str, Any] = dict(trained)
    torch.save(model.state_dict(), out / STUDENT_PT)
    probe = torch.from_numpy(val.x[:8] if len(val) else train.x[:8])
    before = model(probe).detach()
    model.fold_batchnorm()
    fold_err = float((model(probe).detach() - before).abs().max())
    if fold_err > 1e-4:
        raise ModelError(f"BatchNorm folding changed the outputs by {fold_err:.2g}")

    print("quantising (int8 PTQ)", flush=True)
    calib = calibration_draw(cfg, train, seed)
    export_onnx_fp32(model, cfg.window_frames, DEFAULT_FRONTEND.n_mels, out / "student_fp32.onnx")
    quantize_tflite(model, calib, out / "model_int8.tflite", cfg.quant.per_channel)
    quantize_onnx(
        out / "student_fp32.onnx", calib, out / "model_int8.onnx", cfg.quant.per_channel, cfg.quant.onnx_reduce_range
    )
    train_info["bn_fold_max_abs_err"] = fold_err
    if cfg.quant.qat_epochs > 0:
        train_info["qat"] = _maybe_qat(cfg, model, train, val, calib, out, seed)
    train_info["seconds_to_quantised"] = round(time.monotonic() - t_start, 1)
    run_info = {"seed": seed, "command": command, "training": train_info}
    (out / RUN_JSON).write_text(json.dumps(run_info, indent=2) + "\n")


def _maybe_qat(
    cfg: PipelineConfig, model: Any, train: TransferSet, val: TransferSet, calib: F32, out: Path, seed: int
) -> dict[str, Any]:
    """Measure what PTQ cost on the validation windows; if more than `qat_when_drop_points`, fine-tune
    a copy of the folded student with fake quantisation (quantize.qat), re-export both int8 files and
    keep them only if the int8 TFLite model then scores better than the PTQ one."""
    import copy

    import torch

    from quantize.distill import predict_frames
    from quantize.export import export_onnx_fp32
    from quantize.infer import TfliteRunner
    from quantize.ptq import quantize_onnx, quantize_tflite
    from quantize.qat import qat_finetune, window_accuracy

    hop = cfg.output_hop_frames
    fp32_acc = window_accuracy(lambda w: predict_frames(model, w), val, hop)
    ptq_acc = window_accuracy(TfliteRunner(out / "model_int8.tflite"), val, hop)
    drop = 100.0 * (fp32_acc - ptq_acc)
    info: dict[str, Any] = {
        "measure": "validation windows with ground truth whose top pooled class is a ground-truth class",
        "fp32_window_accuracy": round(fp32_acc, 4),
        "ptq_int8_tflite_window_accuracy": round(ptq_acc, 4),
        "ptq_drop_points": round(drop, 2),
        "when_drop_points_over": cfg.quant.qat_when_drop_points,
        "used": False,
    }
    print(f"PTQ cost {drop:+.2f} points on the validation windows (fp32 {fp32_acc:.4f}, int8 {ptq_acc:.4f})")
    if drop <= cfg.quant.qat_when_drop_points:
        info["skipped"] = "PTQ loss within the limit"
        return info
    print(f"quantisation-aware fine-tuning ({cfg.quant.qat_epochs} epochs)", flush=True)
    qmodel = copy.deepcopy(model)
    res = qat_finetune(qmodel, train, calib, cfg.distill, cfg.quant, hop, seed)
    tmp = out / "qat"
    tmp.mkdir(exist_ok=True)
    quantize_tflite(qmodel, calib, tmp / "model_int8.tflite", cfg.quant.per_channel)
    qat_fp32 = window_accuracy(lambda w: predict_frames(qmodel, w), val, hop)
    qat_acc = window_accuracy(TfliteRunner(tmp / "model_int8.tflite"), val, hop)
    info |= {
        "epochs": res.epochs,
        "lr": cfg.quant.qat_lr,
        "seconds": res.seconds,
        "loss_history": [round(v, 5) for v in res.loss_history],
        "qat_fp32_window_accuracy": round(qat_fp32, 4),
        "qat_int8_tflite_window_accuracy": round(qat_acc, 4),
    }
    print(f"QAT int8 {qat_acc:.4f} vs PTQ int8 {ptq_acc:.4f} on the validation windows", flush=True)
    if qat_acc <= ptq_acc:
        info["skipped"] = "QAT did not beat PTQ on the validation windows"
        return info
    export_onnx_fp32(qmodel, cfg.window_frames, DEFAULT_FRONTEND.n_mels, tmp / "student_fp32.onnx")
    quantize_onnx(
        tmp / "student_fp32.onnx", calib, tmp / "model_int8.onnx", cfg.quant.per_channel, cfg.quant.onnx_reduce_range
    )
    for name in ("model_int8.tflite", "model_int8.onnx", "student_fp32.onnx"):
        (tmp / name).replace(out / name)
    tmp.rmdir()
    torch.save(qmodel.state_dict(), out / STUDENT_QAT_PT)
    info["used"] = True
    return info


def head_count(out: Path) -> int:
    """How many learned head columns a run's int8 files carry after its event classes (heads.json)."""
    from quantize.heads import HEADS_JSON

    f = out / HEADS_JSON
    if not f.exists():
        return 0
    try:
        return sum(len(h["classes"]) for h in json.loads(f.read_text())["heads"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"{f}: unreadable heads record ({e})") from None


def load_student(cfg: PipelineConfig, out: Path, n_classes: int, heads: bool = True) -> Any:
    """The fp32 student a run's int8 files were made from, BatchNorm folded: with the learned heads when
    the run has them (and `heads`), else the QAT weights when quantisation-aware fine-tuning was used,
    else the trained weights."""
    import torch

    from quantize.heads import STUDENT_HEADS_PT
    from quantize.student import Student

    def load(model: Any, f: Path) -> None:
        try:
            model.load_state_dict(torch.load(f))
        except RuntimeError as e:  # the weights of another network than the config describes
            first = str(e).strip().splitlines()[-1].strip()
            raise ModelError(
                f"{f}: these weights do not fit the student that {out / 'config.json'} describes ({first}); "
                "was the config edited after the run (student.arch, channels, stem, causal)?"
            ) from None

    n_heads = head_count(out) if heads else 0
    if n_heads:
        model = Student(cfg.student, n_classes, DEFAULT_FRONTEND.n_mels, cfg.output_hop_frames)
        model.fold_batchnorm()
        model.add_aux_head(n_heads)
        load(model, out / STUDENT_HEADS_PT)
        model.eval()
        return model
    model = Student(cfg.student, n_classes, DEFAULT_FRONTEND.n_mels, cfg.output_hop_frames)
    if (out / STUDENT_QAT_PT).exists():
        model.fold_batchnorm()
        load(model, out / STUDENT_QAT_PT)
    else:
        load(model, out / STUDENT_PT)
        model.fold_batchnorm()
    model.eval()
    return model


def _run_info(out: Path) -> dict[str, Any]:
    """run.json of a run directory (older runs: rebuilt from metrics.json and model/model.json)."""
    if (out / RUN_JSON).exists():
        info: dict[str, Any] = json.loads((out / RUN_JSON).read_text())
        return info
    try:
        old = json.loads((out / "model" / "model.json").read_text())["training"]
        metrics = json.loads((out / "metrics.json").read_text())
    except (OSError, KeyError, json.JSONDecodeError):
        raise ModelError(f"{out}: not a run directory (no {RUN_JSON})") from None
    training = dict(metrics["training"])
    training["bn_fold_max_abs_err"] = metrics.get("bn_fold_max_abs_err")
    return {"seed": old["seed"], "command": old["command"], "training": training}


def evaluate_and_package(out: Path, install_default: bool, reexport: bool = False) -> Path:
    """Run directory -> metrics.json, report.md and the model directory out/model (see module doc).

    `reexport`: first write the run's model_int8.tflite again with the current exporter
    (`quantize.ptq.quantize_tflite`: the run's fp32 student and its calibration windows), printing the
    largest output difference from the file it replaces on those windows (0 when the int8 arithmetic
    is the same, as with the space-to-depth stem)."""
    import torch

    from quantize import report as rp
    from quantize.config import from_dict
    from quantize.distill import predict_frames
    from quantize.evaluate import (
        CLIP_POOLING,
        TEACHER,
        FrameModel,
        biggest_drops,
        class_coverage,
        compute_metrics,
        onnx_graph_count,
        per_class_ap,
        report_markdown,
        score_clips,
        target_rows,
    )
    from quantize.export import STREAM_NAME, check_model_dir, install_model_dir, pick_thresholds, write_model_dir
    from quantize.heads import HEADS_JSON, heads_markdown
    from quantize.infer import OnnxRunner, TfliteRunner
    from quantize.student import count_macs, count_params
    from quantize.transfer import clip_windows, windows_logmel

    t_start = time.monotonic()
    try:
        cfg = from_dict(PipelineConfig, json.loads((out / "config.json").read_text()), str(out / "config.json"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{out}: no readable config.json ({e})") from None
    info = _run_info(out)
    s = setup(cfg)
    n_mels = DEFAULT_FRONTEND.n_mels
    model = load_student(cfg, out, len(s.labels))
    # the run's calibration windows (its training transfer set loaded once, only when needed)
    calib = functools.cache(lambda: _calibration_windows(cfg, s, int(info["seed"])))
    if reexport:
        _reexport_tflite(cfg, model, calib(), out)
    params = count_params(model)
    macs = count_macs(model, cfg.window_frames, n_mels)
    k = len(s.labels)
    heads_res = json.loads((out / HEADS_JSON).read_text()) if (out / HEADS_JSON).exists() else None

    print("evaluating", flush=True)
    torch.set_num_threads(1)
    tfl, onx = TfliteRunner(out / "model_int8.tflite"), OnnxRunner(out / "model_int8.onnx")
    models: dict[str, FrameModel] = {  # event columns only (learned heads, if any, follow them)
        FP32: lambda w: predict_frames(model, w)[..., :k],
        INT8[0]: lambda w: tfl(w)[..., :k],
        INT8[1]: lambda w: onx(w)[..., :k],
    }
    val_clips = _subset([c for c in s.clips if c.split == "val"], cfg.eval.max_val_clips)
    if not val_clips:
        raise ConfigError("no validation clips: check the datasets and their splits in the config")
    cs = score_clips(
        val_clips,
        s.cache,
        s.teacher_cols,
        s.mapping,
        len(s.labels),
        models,
        cfg.window_frames,
        cfg.eval.teacher_hop_frames,
    )
    metrics = compute_metrics(cs, s.mapping, FP32, list(INT8))
    window_s = cfg.window_frames * DEFAULT_FRONTEND.hop_s
    x0 = read_audio(val_clips[0].path)
    w1 = windows_logmel(x0, clip_windows(x0, cfg.window_frames, cfg.window_frames)[:1], cfg.window_frames)
    reps = cfg.eval.latency_repeats

    def ms_per_s(sec_per_window: float, seconds_per_window: float) -> float:
        return round(1000.0 * sec_per_window / seconds_per_window, 3)

    print("measuring latency (1 thread)", flush=True)
    teacher_hop_s = cfg.eval.teacher_hop_frames * DEFAULT_FRONTEND.hop_s
    teacher_info: dict[str, Any] = {"bytes": Path(cfg.paths.teacher).stat().st_size}
    calls: dict[str, Any] = {
        FP32: lambda: predict_frames(model, w1),
        INT8[0]: lambda: tfl.runtime.run(w1),
        INT8[1]: lambda: onx.runtime.run(w1),
    }
    if isinstance(s.teacher, OnnxTeacher):
        gc = onnx_graph_count(s.teacher.path)
        calls[TEACHER] = _onnx_graph_call(s.teacher.path)
        teacher_info |= {
            "params": gc.params,
            "macs": gc.macs,
            "macs_by_op": gc.macs_by_op,
            "convs": gc.convs,
            "depthwise_convs": gc.depthwise_convs,
            "counted_from": f"ONNX graph {s.teacher.path.name} (initialiser + inferred shapes)",
            "latency_of": "ONNX graph only (quantised log-mel in), onnxruntime 1 thread",
        }
    else:  # a .tflite teacher: no graph count here; its latency includes its own frontend
        window = np.zeros((1, s.teacher.n_samples), np.float32)
        calls[TEACHER] = lambda: s.teacher.logits(window)
        teacher_info |= {"params": None, "macs": None, "latency_of": "TFLite teacher including its frontend, 1 thread"}
    lat = _interleaved_median_s(calls, reps)
    teacher_info["ms_per_audio_second"] = ms_per_s(lat[TEACHER], teacher_hop_s)
    teacher_info["hop_s"] = round(teacher_hop_s, 3)
    files = {FP32: "student_fp32.onnx", INT8[0]: "model_int8.tflite", INT8[1]: "model_int8.onnx"}
    model_info: dict[str, dict[str, Any]] = {TEACHER: teacher_info}
    for name, file in files.items():
        model_info[name] = {
            "bytes": (out / file).stat().st_size,
            "params": params,
            "macs": macs,
            "ms_per_audio_second": ms_per_s(lat[name], window_s),
        }
    targets = np.maximum(cs.gt, (cs.peak[TEACHER] >= 0.5).astype(np.float32))
    default_threshold = 0.5
    per_class = pick_thresholds(  # on the peak scores: the scale of the detector's frames
        cs.peak[INT8[0]],
        targets,
        s.labels.names,
        default_threshold,
        cfg.eval.threshold_min_positives,
        cfg.eval.threshold_floor,
    )
    seed, command, train_info = info["seed"], info["command"], info["training"]
    floor_doc: dict[str, Any] = {"raised_by_conditions": {}}
    if cfg.eval.condition_margin > 0:
        per_class, floor_doc = _condition_floors(lambda w: tfl(w)[..., :k], s.labels.names, cfg, seed, per_class)
    targets_table = target_rows(metrics, model_info, FP32, INT8)
    ap_rows = per_class_ap({m: cs.scores[m] for m in (FP32, *INT8)}, targets, s.labels.names)
    min_pos = cfg.eval.threshold_min_positives
    drops = biggest_drops(ap_rows, FP32, INT8, min_pos, top=12)
    print("class coverage of the training transfer set", flush=True)
    arr, coverage_source = _train_coverage_arrays(s, seed, train_info.get("train_windows"))
    coverage = class_coverage(
        arr["gt"], arr["ev_logits"], arr["ev_mask"], arr["bg_logits"], arr["bg_weight"], s.labels.names
    )
    coverage["source"] = coverage_source
    all_metrics = {
        "validation": metrics,
        "models": model_info,
        "targets": targets_table,
        "per_class_ap": ap_rows,
        "transfer_coverage": coverage,
        "training": train_info,
        "host": platform.processor() or platform.machine(),
    }
    (out / "metrics.json").write_text(json.dumps(all_metrics, indent=2) + "\n")
    print("plots", flush=True)
    plots = rp.write_plots(out, metrics, model_info, ap_rows, FP32, INT8)
    targets_doc = "positives: the clip's mapped dataset labels or teacher probability >= 0.5"
    sections = [
        rp.targets_markdown(targets_table),
        report_markdown(metrics, model_info, "", command).split("\n", 4)[4],
        rp.quantisation_markdown(ap_rows, drops, FP32, INT8, min_pos, targets_doc),
        rp.qat_markdown(train_info.get("qat")),
        rp.coverage_markdown(coverage),
        heads_markdown(heads_res),
    ]
    head = f"# Tympan distillation run: {out}\n\nCommand: `{command}`\n\n"
    report = head + "\n".join([*sections, rp.plots_markdown(plots, True, str(out))])
    (out / "report.md").write_text(report)
    card_report = head + "\n".join([*sections, rp.plots_markdown(plots, False, str(out))])

    date = datetime.date.today().strftime("%Y%m%d")
    model_id = f"{cfg.model_id}-{date}"
    datasets = [*sorted({c.dataset for c in s.clips}), "backgrounds"]
    meta: dict[str, Any] = {
        "id": model_id,
        "frontend": DEFAULT_FRONTEND.to_dict(),
        "window_frames": cfg.window_frames,
        "output_hop_frames": cfg.output_hop_frames,
        "thresholds": {"default": default_threshold, "per_class": per_class, **floor_doc},
        "pooling": CLIP_POOLING,
        "teacher": {
            "model": "YAMNet",
            "file": Path(cfg.paths.teacher).name,
            "format": type(s.teacher).__name__,
            "sha256_16": s.teacher.fingerprint,
            "execution": s.teacher.execution or "default",
            "outputs": "logits (soft targets: sigmoid(logit / T))",
            "class_map": Path(cfg.paths.teacher_class_map).name,
            "licence": "Apache-2.0",
        },
        "training": {
            "config": cfg.to_dict(),
            "seed": seed,
            "command": command,
            "data": {d: LICENCES[d] for d in datasets},
            **train_info,
        },
        "metrics": {"validation": _without_recordings(metrics), "models": model_info, "targets": targets_table},
    }
    if heads_res:
        meta["heads"] = heads_res["heads"]
        meta["metrics"]["heads"] = {
            g: {key: r[key] for key in ("classes", "clips", "accuracy", "majority_rate", "confusion")}
            for g, r in heads_res["validation"]["student_int8_tflite"].items()
        }
    card = model_card(model_id, s, meta, card_report, command, coverage)
    model_dir = out / "model"
    stream = _stream_model(cfg, model, calib, out)
    if stream is not None:
        meta["stream"] = stream
    write_model_dir(
        model_dir,
        out / "model_int8.tflite",
        out / "model_int8.onnx",
        s.labels,
        meta,
        card,
        out / STREAM_NAME if stream is not None else None,
    )
    check_model_dir(model_dir)
    if install_default:
        install_model_dir(model_dir, DEFAULT_MODEL_DIR)
        print(f"installed {model_dir} -> {DEFAULT_MODEL_DIR}", flush=True)
    print(f"done in {time.monotonic() - t_start:.0f} s: {model_dir}", flush=True)
    return model_dir


def calibration_draw(cfg: PipelineConfig, train: Any, seed: int) -> np.ndarray:
    """The run's int8 calibration windows: `quant.calibration_windows` drawn from its training transfer set."""
    rng = np.random.default_rng(seed + 2)
    idx = rng.choice(len(train), size=min(cfg.quant.calibration_windows, len(train)), replace=False)
    return np.asarray(train.x[idx])


def _calibration_windows(cfg: PipelineConfig, s: Setup, seed: int) -> np.ndarray:
    """The run's calibration windows, its training transfer set loaded (or built) from the cache."""
    train, _ = transfer_sets(s, seed)
    return calibration_draw(cfg, train, seed)


def _reexport_tflite(cfg: PipelineConfig, model: Any, calib: np.ndarray, out: Path) -> None:
    """out/model_int8.tflite written again from `model` with the run's calibration windows `calib`."""
    from quantize.infer import TfliteRunner
    from quantize.ptq import quantize_tflite

    old = out / "model_int8.tflite"
    new = out / "model_int8.reexport.tflite"
    print("re-exporting model_int8.tflite", flush=True)
    quantize_tflite(model, calib, new, cfg.quant.per_channel)
    if old.exists():
        diff = float(np.max(np.abs(TfliteRunner(old)(calib) - TfliteRunner(new)(calib))))
        same = "identical outputs" if diff == 0.0 else f"outputs differ by up to {diff:.4g}"
        print(f"re-exported: {same} on the {len(calib)} calibration windows", flush=True)
    new.replace(old)


def _stream_model(
    cfg: PipelineConfig, model: Any, calibration: Callable[[], np.ndarray], out: Path
) -> dict[str, Any] | None:
    """The streaming TFLite model (quantize.stream) for the edge pipeline's default model hop, written to
    out/model_int8_stream.tflite; its model.json entry, or None when no shorter window gives the same
    outputs or the int8 files disagree."""
    from edge.pipeline import PipelineConfig as EdgeConfig
    from quantize.export import STREAM_NAME
    from quantize.ptq import quantize_tflite
    from quantize.stream import check_stream, stream_window
    from quantize.student import count_macs

    newest = EdgeConfig().model_hop_frames
    frames = stream_window(model, cfg.window_frames, newest, cfg.output_hop_frames)
    if frames >= cfg.window_frames:
        print("stream model: none (the newest outputs need the whole window)", flush=True)
        return None
    print(f"stream model: {frames} of {cfg.window_frames} frames", flush=True)
    calib = calibration()  # the run's calibration windows
    quantize_tflite(model, calib, out / STREAM_NAME, cfg.quant.per_channel, frames=frames)
    diff = check_stream(out / "model_int8.tflite", out / STREAM_NAME, calib[:64], frames, newest)
    if diff != 0.0:
        print(f"stream model: dropped (newest outputs differ from the full model's by up to {diff:.4g})", flush=True)
        (out / STREAM_NAME).unlink()
        return None
    return {
        "window_frames": frames,
        "newest_frames": newest,
        "file_key": "tflite_stream",
        "macs": count_macs(model, frames, DEFAULT_FRONTEND.n_mels),
        "checked": f"newest outputs identical to the full model's on {min(64, len(calib))} calibration windows",
    }


def _without_recordings(metrics: Any) -> Any:
    """The validation metrics without the per-recording counts (`correct_per_recording`: the run's
    metrics.json keeps them for `quantize cv`; the targets' notes hold their intervals), so the model
    directory's model.json stays small on the device."""
    if isinstance(metrics, dict):
        return {k: _without_recordings(v) for k, v in metrics.items() if k != "correct_per_recording"}
    return metrics


def _interleaved_median_s(calls: dict[str, Any], repeats: int, rounds: int = LATENCY_ROUNDS) -> dict[str, float]:
    """Seconds per call of each of `calls` (name -> function): the median over `rounds` rounds of the median of
    `repeats` calls, every function once per round in turn (after one warm-up call each), so that the
    shared host's drift during the measurement hits every model alike and their ratios hold."""
    for fn in calls.values():
        fn()
    per_round: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            per_round[name].append(float(np.median(times)))
    return {name: float(np.median(v)) for name, v in per_round.items()}


def _onnx_graph_latency_s(path: Path, repeats: int) -> float:
    """Median seconds of one run of an ONNX graph on a zero input, onnxruntime on one thread."""
    return _interleaved_median_s({"graph": _onnx_graph_call(path)}, repeats, rounds=1)["graph"]


def _onnx_graph_call(path: Path) -> Any:
    """One run of an ONNX graph on a zero input (onnxruntime on one thread), as a function of no arguments."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    dtype = {"tensor(uint8)": np.uint8, "tensor(int8)": np.int8}.get(inp.type, np.float32)
    feed = {inp.name: np.zeros(shape, dtype)}
    return lambda: sess.run(None, feed)


def _train_coverage_arrays(s: Setup, seed: int, train_windows: int | None) -> tuple[dict[str, np.ndarray], str]:
    """The label arrays of the run's training transfer set (x is not read) and where they came from.

    The cache file named by the current key if it exists; else (a run trained before a change of
    the key's ingredients) the newest cached training set with the run's window and class counts;
    else the set is built now."""
    f = transfer_file(s, seed, "train")
    how = f"cached training transfer set {f.name}"
    if not f.exists() and train_windows:
        for cand in sorted(s.cache_dir.glob("transfer-*-train.npz"), key=lambda p: -p.stat().st_mtime):
            with np.load(cand) as z:
                if z["gt"].shape == (train_windows, len(s.labels)):
                    f = cand
                    how = (
                        f"cached training transfer set {f.name}, matched by its window and class counts "
                        f"({train_windows} x {len(s.labels)}); its cache key predates the current code"
                    )
                    break
    if not f.exists():
        transfer_sets(s, seed)
        how = f"training transfer set rebuilt now ({f.name})"
    with np.load(f) as z:
        return {k: z[k] for k in COVERAGE_ARRAYS}, how


def _condition_floors(
    predict: Any, names: tuple[str, ...], cfg: PipelineConfig, seed: int, per_class: dict[str, float]
) -> tuple[dict[str, float], dict[str, Any]]:
    """`per_class` raised to the default latency mode's condition floors (quantize.conditions) of the int8
    TFLite model, run as the edge pipeline runs it, and the floors document for model.json's thresholds:
    {"raised_by_conditions": {class: old threshold, new, peak, condition} (default mode),
     "floors": {mode: {class: floor}} (every latency mode), "raised_in_modes": {mode: {class: ...}} (the
     classes another mode raises further)}."""
    from edge.pipeline import LATENCY_MODES, latency_config
    from quantize.conditions import apply_floors, condition_floors, grid_floor

    margin = cfg.eval.condition_margin
    print("condition floors (silence, stationary noise, DC, level steps), per latency mode", flush=True)
    floors: dict[str, dict[str, float]] = {}
    raised: dict[str, dict[str, Any]] = {}
    new = dict(per_class)
    for i, mode in enumerate(LATENCY_MODES):
        # each mode runs the model its own way: its hop (the newest outputs of a short hop see less of
        # their future) and its look-ahead fill
        pc = latency_config(mode, cfg.output_hop_frames)
        how = ((pc.model_hop_frames, pc.lookahead_fill_frames, pc.lookahead_decay_db),)
        floor_of, where = condition_floors(predict, names, cfg.window_frames, how, seed + 1000, margin)
        for name in pc.sed.ignore:  # never an event: its threshold only serves clip tags
            floor_of.pop(name, None)
        floors[mode] = {name: grid_floor(v) for name, v in floor_of.items()}
        base = new if i else per_class
        mode_new, mode_raised = apply_floors(base, floor_of)
        raised[mode] = {
            name: {"from": base[name], "to": mode_new[name], "peak": round(floor_of[name] - margin, 3),
                   "condition": f"{where[name]} ({mode})"}
            for name in mode_raised
        }  # fmt: skip
        if not i:
            new = mode_new
    default = LATENCY_MODES[0]
    doc = {
        "raised_by_conditions": raised[default],
        "floors": floors,
        "raised_in_modes": {m: r for m, r in raised.items() if m != default},
    }
    return new, doc


def _raised_lines(meta: dict[str, Any], margin: float) -> str:
    th = meta["thresholds"]
    raised = th.get("raised_by_conditions") or {}
    if not margin:
        return ""
    head = (
        "- Condition floors (`quantize.conditions`): the int8 model ran, as the edge pipeline runs it in "
        "each latency mode, on silence, white/pink/brown noise at -70 to -40 dBFS, DC offsets, DC steps "
        "at 8 positions within a model hop and 25 dB level "
        f"steps; in each mode every threshold is at least its class's highest probability there plus {margin:g} "
        "(0.05 steps, at most 0.95), so that none of these starts an event. The default mode's floors "
        "raise the thresholds below; every mode's are in model.json (`thresholds.floors`), and the "
        "pipeline raises its thresholds to them in that mode."
    )
    out = head + (" Raised:\n" + _raised_rows(raised) if raised else " No threshold needed raising.\n")
    for mode, r in sorted((th.get("raised_in_modes") or {}).items()):
        if r:
            out += f"- Raised further in `--latency {mode}`:\n" + _raised_rows(r)
    return out


def _raised_rows(raised: dict[str, dict[str, Any]]) -> str:
    return "".join(
        f"  - {name}: {r['from']:g} -> {r['to']:g} (peak {r['peak']:.3f} on {r['condition']})\n"
        for name, r in sorted(raised.items())
    )


def model_card(
    model_id: str, s: Setup, meta: dict[str, Any], report: str, command: str, coverage: dict[str, Any] | None = None
) -> str:
    tr = meta["training"]
    ev = s.cfg.eval
    tr_default = meta["thresholds"]["default"]
    data_lines = "\n".join(f"- {v}" for v in tr["data"].values())
    t = s.cfg.transfer
    us8k_split = (
        f"UrbanSound8K fold-3 recordings of fold {t.us8k_val_fold} of {t.us8k_folds} class-stratified "
        "recording folds (slices of one recording stay together)"
        if t.us8k_folds
        else f"a held-out {t.us8k_val_fraction:.0%} of the UrbanSound8K fold-3 recordings (split by fsID)"
    )
    d = s.cfg.distill
    qat = tr.get("qat") or {}
    how_quantised = (
        f"quantisation-aware fine-tuning ({qat.get('epochs')} epochs) then int8 export, per-channel weights"
        if qat.get("used")
        else "post-training, per-channel weights"
    )
    arch = "depthwise-separable CNN" if s.cfg.student.arch == "dsconv" else "CNN"
    if s.cfg.student.causal:
        arch = "causal " + arch + " (no look-ahead: each output row sees only its own and earlier frames)"
    augment = ["one random mel band of up to 8 bands masked per window" if d.spec_augment else ""]
    if d.spec_augment and d.time_mask_frames:
        augment.append(f"one run of up to {d.time_mask_frames} frames masked")
    if d.mixup:
        augment.append(
            f"{d.mixup:.0%} of each batch mixed with another window (mel powers added, the other "
            f"attenuated 0-{d.mixup_gain_db:g} dB; targets: the maximum of both)"
        )
    augment_line = "; ".join(a for a in augment if a) or "none"
    if d.ema_decay:
        augment_line += f". Weights: exponential moving average over steps (decay {d.ema_decay:g})"
    if qat:
        qat_line = f"- Quantisation: PTQ cost {qat['ptq_drop_points']:+.2f} points of validation-window accuracy; " + (
            f"QAT ({qat['epochs']} epochs) gave int8 {qat['qat_int8_tflite_window_accuracy']:.4f} vs PTQ "
            f"{qat['ptq_int8_tflite_window_accuracy']:.4f}: "
            + ("the shipped int8 files come from the QAT weights." if qat["used"] else "PTQ kept.")
            if "epochs" in qat
            else "QAT not needed."
        )
    else:
        qat_line = "- Quantisation: int8 post-training quantisation (no QAT configured)."
    return f"""# Model card: {model_id}

Tympan's on-device sound event detector: a {meta["metrics"]["models"]["student_fp32"]["params"]:,}-parameter
{arch} distilled from YAMNet, int8-quantised ({how_quantised}), shipped as
`model_int8.tflite` (LiteRT) and `model_int8.onnx` (ONNX Runtime, QDQ).

## Interface
- Input: one window of 96 frames x 64 log-mel bands ([1, 96, 64] float32, raw log-mel of
  `edge.dsp.frontend`: 16 kHz, 25 ms Hann, 10 ms hop, 64 HTK mels 125-7500 Hz, log(mel + 0.001)).
  Normalisation is inside the model.
- Output: [1, 24, {len(s.labels)}] sigmoid probabilities, one row per 40 ms (4 input frames).
- Clip score (`tympan tag`, the accuracy rows below): the mean of the frame probabilities over the
  frames covering the recording (`"pooling": "mean"`); the teacher's accuracy rows use its own
  documented rule, the mean over its patches.
- Thresholds per class in `model.json`, on the peak scale: the linear-softmax pooling of frames
  (sum p^2 / sum p), which follows a frame's peak as the event detector sees it (chosen to maximise F1
  on the validation clips where a class has at least
  {ev.threshold_min_positives} positives, never below {ev.threshold_floor}; {tr_default} elsewhere).
  They were picked on the same validation clips the metrics below use, so treat them as a
  starting point.
{_raised_lines(meta, ev.condition_margin)}- Classes: {len(s.labels)} AudioSet classes (`labels.csv`) for home, street,
  industrial and nature monitoring.

## Training
- Teacher: YAMNet (Apache-2.0), `{Path(s.cfg.paths.teacher).name}` ({type(s.teacher).__name__}); its
  outputs are logits, soft targets are sigmoid(logit / T) with T = {s.cfg.distill.temperature}.
- Transfer set: event windows of the training clips mixed into background clips at random SNR
  ({s.cfg.transfer.snr_db[0]:g}-{s.cfg.transfer.snr_db[1]:g} dB); frame targets = teacher soft target of the
  event x its activity mask (energy envelope), max-combined with the dataset's labels mapped to
  AudioSet and the background's teacher target.
- Loss: KD (weight alpha = {d.alpha}) + ground truth, frame and clip (pooled) terms.
- Augmentation: {augment_line}.
- Seed {tr["seed"]}; best epoch {tr["best_epoch"]} of {d.epochs}; {tr["train_windows"]} windows.
{qat_line}
- Selection: the best epoch (lowest validation loss) and whether QAT is kept are decided on validation
  windows mixed from the same validation clips the accuracy rows below use (never trained on).
- Command: `{command}`

## Data and licences
{data_lines}

Because ESC-50 and UrbanSound8K are CC BY-NC 3.0, **this model inherits non-commercial terms**: do not
use it commercially without retraining on suitably licensed data. Validation: ESC-50 fold 5 and
{us8k_split}; these are development validation numbers, not a held-out benchmark.

## Measured metrics
{_demote_headings(report.split(chr(10), 3)[3] if report.count(chr(10)) >= 3 else report)}

## Limitations
- Only 0.96 s of context per window; classes the training data never shows (many of the {len(s.labels)})
  are learnt from the teacher's soft targets alone and are weaker than the teacher.{_coverage_line(coverage)}
- Trained on a few thousand clips on a 2-core CPU in minutes: a first model, not a tuned one.
"""


def _coverage_line(cov: dict[str, Any] | None) -> str:
    if cov is None:
        return ""
    return (
        f"\n- Of the {len(cov['per_class'])} classes, {len(cov['per_class']) - cov['with_ground_truth']} have no "
        f"ground-truth training window; {len(cov['teacher_only_few'])} of those have fewer than "
        f"{cov['few_teacher_positives']} teacher-positive windows and {len(cov['untaught'])} have none "
        '(see "Classes the transfer data cannot teach").'
    )


def _demote_headings(md: str) -> str:
    """Nest a report's `## ` sections under a model card section."""
    return "\n".join("#" + line if line.startswith("## ") else line for line in md.split("\n"))
