"""Validation clips + teacher + student (fp32, int8 tflite, int8 onnx) -> metrics dict + report.md.

Clip scores: the teacher's are the max over its 0.96 s patches (hop `teacher_hop_frames`) of its
probabilities restricted to the student's classes; a student's are the linear-softmax pooling of
its frame probabilities over the whole clip (non-overlapping windows), as the edge runtime does.

Metrics per dataset: accuracy restricted to the dataset labels that map to AudioSet classes (a label
scores the max of its classes), mAP against the mapped dataset labels, mAP against the teacher's
positives (teacher probability >= 0.5), and int8-vs-fp32 agreement (clip top-1 over all K classes,
mean absolute frame-probability difference).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.dsp.frontend import DEFAULT_FRONTEND, FrontendSpec
from quantize.audio import F32, read_audio
from quantize.infer import linear_softmax_np
from quantize.teacher import TeacherCache, sigmoid
from quantize.transfer import Clip, clip_windows, gt_vector, windows_logmel

FrameModel = Callable[[F32], F32]  # windows [N, F, M] -> frame probabilities [N, F/hop, K]
TEACHER = "teacher"


@dataclass(frozen=True)
class ClipScores:
    """Per validation clip: clip scores [N, K] per model name, frame probabilities per student."""

    clips: list[Clip]
    scores: dict[str, F32]
    frames: dict[str, list[F32]]
    gt: F32  # [N, K]


def score_clips(
    clips: list[Clip],
    cache: TeacherCache,
    teacher_cols: np.ndarray,
    mapping: dict[tuple[str, str], tuple[int, ...]],
    k: int,
    models: dict[str, FrameModel],
    window_frames: int,
    teacher_hop_frames: int,
    spec: FrontendSpec = DEFAULT_FRONTEND,
) -> ClipScores:
    scores: dict[str, list[F32]] = {name: [] for name in [TEACHER, *models]}
    frames: dict[str, list[F32]] = {name: [] for name in models}
    t0 = time.monotonic()
    for i, clip in enumerate(clips):
        x = read_audio(clip.path, spec)
        t_starts = clip_windows(x, teacher_hop_frames, window_frames, spec)
        scores[TEACHER].append(sigmoid(cache.logits(clip.path, t_starts, x)[:, teacher_cols]).max(axis=0))
        w = windows_logmel(x, clip_windows(x, window_frames, window_frames, spec), window_frames, spec)
        for name, fn in models.items():
            fr = fn(w).reshape(-1, k)
            frames[name].append(fr)
            scores[name].append(linear_softmax_np(fr, 0))
        if i % 100 == 0:
            print(f"  evaluate: clip {i}/{len(clips)} ({time.monotonic() - t0:.0f} s)", flush=True)
    gt = np.stack([gt_vector(c, mapping, k) for c in clips]) if clips else np.zeros((0, k), np.float32)
    return ClipScores(clips, {n: np.stack(v) for n, v in scores.items()}, frames, gt)


def average_precision(scores: F32, positive: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    if hits.sum() == 0:
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(np.sum(precision * hits) / hits.sum())


def mean_ap(scores: F32, targets: np.ndarray) -> float:
    aps = [average_precision(scores[:, k], targets[:, k]) for k in range(scores.shape[1]) if targets[:, k].any()]
    return float(np.mean(aps)) if aps else float("nan")


def mapped_accuracy(
    scores: F32, clips: list[Clip], mapping: dict[tuple[str, str], tuple[int, ...]]
) -> tuple[float, int]:
    """Top-1 accuracy among a dataset's mapped labels; returns (accuracy, clips counted)."""
    if not clips:
        return float("nan"), 0
    ds = clips[0].dataset
    labels = sorted(lab for (d, lab) in mapping if d == ds)
    correct, n = 0, 0
    for s, c in zip(scores, clips, strict=True):
        if (ds, c.label) not in mapping:
            continue
        per_label = [float(s[list(mapping[(ds, lab)])].max()) for lab in labels]
        correct += int(labels[int(np.argmax(per_label))] == c.label)
        n += 1
    return (correct / n if n else float("nan")), n


def compute_metrics(
    cs: ClipScores, mapping: dict[tuple[str, str], tuple[int, ...]], fp32_name: str, int8_names: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    teacher_pos = cs.scores[TEACHER] >= 0.5
    for ds in sorted({c.dataset for c in cs.clips}):
        sel = np.array([c.dataset == ds for c in cs.clips])
        clips = [c for c in cs.clips if c.dataset == ds]
        res: dict[str, Any] = {"clips": len(clips)}
        for name, sc in cs.scores.items():
            acc, n = mapped_accuracy(sc[sel], clips, mapping)
            res[name] = {
                "accuracy_mapped": round(acc, 4),
                "map_dataset_labels": round(mean_ap(sc[sel], cs.gt[sel] > 0.5), 4),
                "map_teacher_positives": (None if name == TEACHER else round(mean_ap(sc[sel], teacher_pos[sel]), 4)),
            }
            res["clips_mapped"] = n
        for name in int8_names:
            top_q = cs.scores[name][sel].argmax(1)
            top_f = cs.scores[fp32_name][sel].argmax(1)
            fr_q = np.concatenate([f for f, s in zip(cs.frames[name], sel, strict=True) if s])
            fr_f = np.concatenate([f for f, s in zip(cs.frames[fp32_name], sel, strict=True) if s])
            res[name]["top1_agreement_with_fp32"] = round(float(np.mean(top_q == top_f)), 4)
            res[name]["mean_abs_frame_diff_vs_fp32"] = round(float(np.mean(np.abs(fr_q - fr_f))), 5)
        out[ds] = res
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if np.isnan(v) else f"{v:.3f}"
    return str(v)


def report_markdown(metrics: dict[str, Any], model_info: dict[str, Any], title: str, command: str) -> str:
    """The run report: per-dataset table of every model, then size / compute / latency."""
    lines = [f"# {title}", "", f"Command: `{command}`", ""]
    for ds, res in metrics.items():
        lines += [
            f"## {ds} validation ({res['clips']} clips, {res['clips_mapped']} with mapped labels)",
            "",
            "| model | accuracy (mapped labels) | mAP (dataset labels) | mAP (teacher positives) "
            "| top-1 agreement vs fp32 | mean abs frame diff vs fp32 |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in res.items():
            if not isinstance(r, dict):
                continue
            lines.append(
                f"| {name} | {_fmt(r['accuracy_mapped'])} | {_fmt(r['map_dataset_labels'])} | "
                f"{_fmt(r['map_teacher_positives'])} | {_fmt(r.get('top1_agreement_with_fp32'))} | "
                f"{_fmt(r.get('mean_abs_frame_diff_vs_fp32'))} |"
            )
        lines.append("")
    lines += [
        "## Size, compute, latency",
        "",
        "| model | file bytes | params | MACs / window | ms per audio second (1 thread) |",
        "|---|---|---|---|---|",
    ]
    for name, r in model_info.items():
        lines.append(
            f"| {name} | {_fmt(r.get('bytes'))} | {_fmt(r.get('params'))} | {_fmt(r.get('macs'))} | "
            f"{_fmt(r.get('ms_per_audio_second'))} |"
        )
    lines.append("")
    return "\n".join(lines)
