"""Validation clips + teacher + student (fp32, int8 tflite, int8 onnx) -> metrics dict + report.md.

Clip scores (`CLIP_POOLING`): each model's mean over the clip, the rule YAMNet documents for its own
clip predictions (the TF Hub model page's example takes the class "with the top score when
mean-aggregated across frames"): the teacher's mean over its 0.96 s patches (hop `teacher_hop_frames`)
of its probabilities restricted to the student's classes; a student's mean of its frame probabilities
over the frames covering the clip (non-overlapping windows from the clip's start), as the edge runtime's
`Model.tag` does for a model whose model.json says `"pooling": "mean"`. Accuracy and mAP use them.
Peak scores stand beside them: the teacher's max over its patches, a student's linear-softmax pooling of
its frames (sum p^2 / sum p, the clip term it is trained with); the teacher's positives (probability
>= 0.5) and the per-class thresholds use those, the scale of the sound event detector's frames.

Metrics per dataset: accuracy restricted to the dataset labels that map to AudioSet classes (a label
scores the max of its classes), mAP against the mapped dataset labels, mAP against the teacher's
positives (teacher probability >= 0.5), and int8-vs-fp32 agreement (clip top-1 over all K classes,
mean absolute frame-probability difference).

Also here, the measurements the report is built from: MAC and parameter counts of an ONNX graph
(`onnx_graph_count`), the issue's targets with PASS/FAIL (`target_rows`), per-class AP per model
(`per_class_ap`), which classes the training transfer set can teach (`class_coverage`), and a small
stderr progress bar (`Progress`).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edge.dsp.frontend import DEFAULT_FRONTEND, FrontendSpec
from edge.errors import ConfigError, ModelError
from quantize.audio import F32, read_audio
from quantize.infer import linear_softmax_np
from quantize.teacher import TeacherCache, sigmoid
from quantize.transfer import Clip, clip_windows, gt_vector, windows_logmel

FrameModel = Callable[[F32], F32]  # windows [N, F, M] -> frame probabilities [N, F/hop, K]
TEACHER = "teacher"
CLIP_POOLING = "mean"  # model.json `pooling` of the models this module evaluates (edge.inference.POOLINGS)


@dataclass(frozen=True)
class ClipScores:
    """Per validation clip: clip scores [N, K] per model name, frame probabilities per student."""

    clips: list[Clip]
    scores: dict[str, F32]  # clip scores (means) [N, K]
    frames: dict[str, list[F32]]
    gt: F32  # [N, K]
    peak: dict[str, F32]  # peak scores [N, K] (module doc)


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
    from edge.dsp.frontend import n_frames
    from edge.inference import covered_frames

    scores: dict[str, list[F32]] = {name: [] for name in [TEACHER, *models]}
    peak: dict[str, list[F32]] = {name: [] for name in [TEACHER, *models]}
    frames: dict[str, list[F32]] = {name: [] for name in models}
    bar = Progress("evaluate: clips", len(clips))
    for clip in clips:
        x = read_audio(clip.path, spec)
        t_starts = clip_windows(x, teacher_hop_frames, window_frames, spec)
        tp = sigmoid(cache.logits(clip.path, t_starts, x)[:, teacher_cols])
        scores[TEACHER].append(tp.mean(axis=0))
        peak[TEACHER].append(tp.max(axis=0))
        w = windows_logmel(x, clip_windows(x, window_frames, window_frames, spec), window_frames, spec)
        covered = None
        for name, fn in models.items():
            fr = fn(w).reshape(-1, k)
            if covered is None:  # the output frames covering the clip, as the edge's `Model.tag` keeps them
                covered = covered_frames(n_frames(x.shape[0], spec), window_frames // (len(fr) // len(w)))
            frames[name].append(fr)
            scores[name].append(fr[:covered].mean(axis=0))
            peak[name].append(linear_softmax_np(fr, 0))
        bar.update()
    bar.close()
    gt = np.stack([gt_vector(c, mapping, k) for c in clips]) if clips else np.zeros((0, k), np.float32)
    stack = lambda d: {n: np.stack(v) if v else np.zeros((0, k), np.float32) for n, v in d.items()}  # noqa: E731
    return ClipScores(clips, stack(scores), frames, gt, stack(peak))


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


def recording_of(clip: Clip) -> str:
    """The source recording a clip was cut from: UrbanSound8K's fsID and ESC-50's source file (the
    first and the second field of their file names), else the file itself. Clips of one recording are
    near-duplicates, so uncertainty is estimated by resampling recordings, not clips (`quantize.cv`)."""
    parts = clip.path.stem.split("-")
    if len(parts) == 4 and clip.dataset == "urbansound8k":
        return parts[0]
    if len(parts) == 4 and clip.dataset == "esc50":
        return parts[1]
    return clip.path.stem


RESAMPLES = 10_000  # recording-bootstrap resamples


def recording_bootstrap(
    student: dict[str, list[int]], teacher: dict[str, list[int]], resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Pooled accuracy of a student minus the teacher's, in points, with its uncertainty.

    `student` and `teacher`: {recording: [clips right, clips]} over the same clips. The clips of one
    recording are near-duplicates, so the recordings, not the clips, are the independent samples: they
    are resampled with replacement (a cluster bootstrap, `resamples` times) and the difference is
    recomputed on each resample. Returns the difference, its 2.5-97.5 percentile interval and the share
    of resamples in which the student is at or above the teacher.
    """
    recs = sorted(teacher)
    if sorted(student) != recs or any(student[r][1] != teacher[r][1] for r in recs):
        raise ConfigError("recording bootstrap: the student and the teacher were scored on different clips")
    if not recs:
        raise ConfigError("recording bootstrap: no recordings")
    n = np.array([teacher[r][1] for r in recs], np.int64)
    d = np.array([student[r][0] - teacher[r][0] for r in recs], np.int64)
    idx = np.random.default_rng(seed).integers(0, len(recs), size=(resamples, len(recs)))
    diff = 100.0 * d[idx].sum(axis=1) / n[idx].sum(axis=1)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return {
        "recordings": len(recs),
        "clips": int(n.sum()),
        "difference_points": round(100.0 * float(d.sum()) / float(n.sum()), 2),
        "ci95_points": [round(float(lo), 2), round(float(hi), 2)],
        "share_at_or_above_teacher": round(float(np.mean(diff >= 0.0)), 4),
        "resamples": resamples,
        "seed": seed,
    }


def _top_label_hits(
    scores: F32, clips: list[Clip], mapping: dict[tuple[str, str], tuple[int, ...]]
) -> list[tuple[Clip, bool]]:
    """(clip, whether its top mapped label is its own) for the clips with a mapped label (a label
    scores the max of its AudioSet classes)."""
    if not clips:
        return []
    ds = clips[0].dataset
    labels = sorted(lab for (d, lab) in mapping if d == ds)
    cols = [list(mapping[(ds, lab)]) for lab in labels]
    out = []
    for s, c in zip(scores, clips, strict=True):
        if (ds, c.label) in mapping:
            out.append((c, labels[int(np.argmax([float(s[k].max()) for k in cols]))] == c.label))
    return out


def correct_counts(hits: list[tuple[Clip, bool]], key: Callable[[Clip], str]) -> dict[str, list[int]]:
    """`_top_label_hits` grouped by `key` (the clip's label, or `recording_of`): {key: [right, clips]}."""
    out: dict[str, list[int]] = {}
    for c, ok in hits:
        hit = out.setdefault(key(c), [0, 0])
        hit[0] += int(ok)
        hit[1] += 1
    return dict(sorted(out.items()))


def compute_metrics(
    cs: ClipScores, mapping: dict[tuple[str, str], tuple[int, ...]], fp32_name: str, int8_names: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    teacher_pos = cs.peak[TEACHER] >= 0.5
    for ds in sorted({c.dataset for c in cs.clips}):
        sel = np.array([c.dataset == ds for c in cs.clips])
        clips = [c for c in cs.clips if c.dataset == ds]
        res: dict[str, Any] = {"clips": len(clips)}
        for name, sc in cs.scores.items():
            hits = _top_label_hits(sc[sel], clips, mapping)
            per_label = correct_counts(hits, lambda c: c.label)
            n = sum(v[1] for v in per_label.values())
            acc = sum(v[0] for v in per_label.values()) / n if n else float("nan")
            res[name] = {
                "accuracy_mapped": round(acc, 4),
                "correct_per_label": per_label,
                "correct_per_recording": correct_counts(hits, recording_of),
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


# --- progress --------------------------------------------------------------------------------


class Progress:
    """A tiny progress bar on stderr: redrawn in place (`\\r`) on a terminal, one line per 10% in a log."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, width: int = 24) -> None:
        self.label, self.total, self.width = label, max(int(total), 0), width
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.t0 = time.monotonic()
        self._last_draw = -1.0
        self._last_decile = -1
        self._last_written = -1
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        if self.total:
            frac = min(self.done / self.total, 1.0)
            filled = round(frac * self.width)
            eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
            eta_s = "?" if math.isnan(eta) else f"{eta:.0f} s"
            bar = "#" * filled + "." * (self.width - filled)
            return f"  {self.label} [{bar}] {self.done}/{self.total} {elapsed:.0f} s, eta {eta_s}"
        return f"  {self.label}: {self.done} {elapsed:.0f} s"

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self._tty:
            if now - self._last_draw >= 0.2 or self.done >= self.total:
                self.stream.write("\r" + self.line())
                self.stream.flush()
                self._last_draw = now
            return
        decile = int(10 * self.done / self.total) if self.total else self.done // 100
        if decile > self._last_decile:
            self._last_decile = decile
            self._last_written = self.done
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\r" + self.line() + "\n")
        elif self._last_written != self.done:
            self.stream.write(self.line() + "\n")
        self.stream.flush()


# --- compute and parameters of an ONNX graph -----------------------------------------------------

MAC_OPS = ("Conv", "Gemm", "MatMul")
# Ops a weight passes through unchanged in count on its way from an initialiser to a MAC op.
_WEIGHT_PATH_OPS = ("QuantizeLinear", "DequantizeLinear", "Identity", "Cast", "Transpose", "Reshape")


@dataclass(frozen=True)
class GraphCount:
    """Multiply-accumulates of one forward pass and the parameters the MAC ops use."""

    macs: int
    params: int
    macs_by_op: dict[str, int]
    convs: int
    depthwise_convs: int


def onnx_graph_count(path: Path) -> GraphCount:
    """MACs of Conv (grouped and depthwise included), Gemm and MatMul from the graph's initialiser
    shapes and `onnx.shape_inference`'s tensor shapes (symbolic dims count as 1); parameters are the
    elements of the initialisers that feed those ops' weight and bias inputs, traced back through
    (de)quantisation, casts and reshapes (quantisation scales and zero points are not counted)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as e:  # onnx raises several kinds for a bad file
        raise ModelError(f"{path}: cannot read or shape-infer the ONNX graph ({e})") from None
    g = model.graph
    shapes: dict[str, list[int]] = {i.name: [int(d) for d in i.dims] for i in g.initializer}
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            shapes.setdefault(vi.name, [d.dim_value if d.dim_value > 0 else 1 for d in vi.type.tensor_type.shape.dim])
    inits = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}

    def shape(name: str, node: Any) -> list[int]:
        if name not in shapes:
            raise ModelError(f"{path}: cannot infer the shape of {name!r} ({node.op_type} {node.name!r})")
        return shapes[name]

    def source_init(name: str) -> str | None:
        seen = 0
        while name not in inits:
            node = producer.get(name)
            if node is None or node.op_type not in _WEIGHT_PATH_OPS or seen > 16:
                return None
            name, seen = node.input[0], seen + 1
        return name

    macs_by_op = dict.fromkeys(MAC_OPS, 0)
    params: set[str] = set()
    convs = depthwise = 0
    for node in g.node:
        if node.op_type not in MAC_OPS:
            continue
        out = shape(node.output[0], node)
        if node.op_type == "Conv":
            w = shape(node.input[1], node)
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            convs += 1
            depthwise += int(group > 1 and w[1] == 1)
            macs = math.prod(out) * math.prod(w[1:])  # w[1] is in_channels / group
        elif node.op_type == "Gemm":
            a = shape(node.input[0], node)
            trans_a = next((a_.i for a_ in node.attribute if a_.name == "transA"), 0)
            macs = math.prod(out) * (a[0] if trans_a else a[-1])
        else:
            macs = math.prod(out) * shape(node.input[0], node)[-1]
        macs_by_op[node.op_type] += int(macs)
        for inp in node.input[1:]:
            src = source_init(inp) if inp else None
            if src is not None:
                params.add(src)
    n_params = sum(math.prod(shapes[p]) for p in params)
    return GraphCount(sum(macs_by_op.values()), int(n_params), macs_by_op, convs, depthwise)


# --- targets -----------------------------------------------------------------------------------

DATASET_NAMES = {
    "esc50": "ESC-50 fold 5",
    "urbansound8k": "UrbanSound8K fold 3 held-out",
    "vehicles": "vehicles test split",
}


@dataclass(frozen=True)
class TargetSpec:
    """The issue's targets for the default model."""

    tflite_max_bytes: int = 250_000  # 250 KB, KB = 1000 bytes
    min_mac_ratio: float = 20.0
    min_speed_ratio: float = 10.0
    max_int8_drop_points: float = 1.0
    accuracy_datasets: tuple[str, ...] = ("esc50", "urbansound8k")


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _row(target: str, value: str, goal: str, passed: bool | None, note: str = "") -> dict[str, Any]:
    status = "n/a" if passed is None else ("PASS" if passed else "FAIL")
    return {"target": target, "value": value, "goal": goal, "status": status, "note": note}


def target_rows(
    metrics: dict[str, Any],
    models: dict[str, dict[str, Any]],
    fp32: str = "student_fp32",
    int8: tuple[str, ...] = ("student_int8_tflite", "student_int8_onnx"),
    spec: TargetSpec = TargetSpec(),
) -> list[dict[str, Any]]:
    """One row per target (and per runtime / dataset where it applies): measured value, goal and
    PASS / FAIL ("n/a" where the measurement is missing). `metrics` is `compute_metrics`' output,
    `models` the per-model size / compute / latency dict (keys bytes, macs, ms_per_audio_second)."""
    rows: list[dict[str, Any]] = []
    tfl = models.get("student_int8_tflite", {})
    size = tfl.get("bytes")
    rows.append(
        _row(
            "int8 .tflite size",
            "-" if size is None else f"{size / 1000:.1f} KB ({size:,} bytes)",
            f"<= {spec.tflite_max_bytes / 1000:g} KB",
            None if size is None else size <= spec.tflite_max_bytes,
            "KB = 1000 bytes",
        )
    )
    t_macs, s_macs = _num(models.get(TEACHER, {}).get("macs")), _num(models.get(fp32, {}).get("macs"))
    if t_macs and s_macs:
        value = f"{t_macs / s_macs:.2f}x ({t_macs / 1e6:.1f} M / {s_macs / 1e6:.1f} M)"
        passed = t_macs / s_macs >= spec.min_mac_ratio
    else:
        value, passed = "-", None
    rows.append(
        _row(
            "MACs: teacher / student, per 0.96 s window",
            value,
            f">= {spec.min_mac_ratio:g}x",
            passed,
            "teacher counted from its ONNX graph, student from the PyTorch model",
        )
    )
    t_lat = _num(models.get(TEACHER, {}).get("ms_per_audio_second"))
    hop = models.get(TEACHER, {}).get("hop_s")
    for name in int8:
        s_lat = _num(models.get(name, {}).get("ms_per_audio_second"))
        if t_lat and s_lat:
            value = f"{t_lat / s_lat:.2f}x ({t_lat:.2f} ms / {s_lat:.2f} ms)"
            passed = t_lat / s_lat >= spec.min_speed_ratio
        else:
            value, passed = "-", None
        rows.append(
            _row(
                f"latency per audio second: teacher ONNX / {name} (1 thread)",
                value,
                f">= {spec.min_speed_ratio:g}x",
                passed,
                "" if hop is None else f"teacher at its {hop:g} s hop, student 0.96 s windows (as evaluated)",
            )
        )
    for ds in spec.accuracy_datasets:
        res = metrics.get(ds)
        for name in int8:
            if res is None or name not in res:
                rows.append(_row(f"accuracy {DATASET_NAMES.get(ds, ds)}: {name} vs teacher", "-", ">= teacher", None))
                continue
            a, t = res[name]["accuracy_mapped"], res[TEACHER]["accuracy_mapped"]
            note = f"{res['clips_mapped']} clips, labels mapped to AudioSet"
            recs, trecs = res[name].get("correct_per_recording"), res[TEACHER].get("correct_per_recording")
            if recs and trecs:
                b = recording_bootstrap(recs, trecs)
                lo, hi = b["ci95_points"]
                note += f"; from {b['recordings']} recordings: the margin's 95 % interval {lo:+.1f} to {hi:+.1f} points"
            rows.append(
                _row(
                    f"accuracy {DATASET_NAMES.get(ds, ds)}: {name} vs teacher zero-shot",
                    f"{a:.3f} vs {t:.3f} ({100 * (a - t):+.1f} points)",
                    ">= teacher",
                    bool(a >= t),
                    note,
                )
            )
    for ds, res in metrics.items():
        for name in int8:
            if name not in res or fp32 not in res:
                continue
            drop = 100.0 * (res[fp32]["accuracy_mapped"] - res[name]["accuracy_mapped"])
            rows.append(
                _row(
                    f"accuracy drop int8 vs fp32, {DATASET_NAMES.get(ds, ds)}: {name}",
                    f"{drop:+.2f} points",
                    f"<= {spec.max_int8_drop_points:g} point",
                    bool(drop <= spec.max_int8_drop_points + 1e-9),
                    f"{res['clips_mapped']} clips: one clip = {100.0 / max(res['clips_mapped'], 1):.2f} points",
                )
            )
    return rows


# --- per-class change caused by quantisation ------------------------------------------------------


def per_class_ap(
    scores: dict[str, F32], targets: np.ndarray, names: tuple[str, ...] | list[str]
) -> list[dict[str, Any]]:
    """Per class with at least one positive in `targets` [N, K]: positives and AP of each model."""
    out: list[dict[str, Any]] = []
    for k, name in enumerate(names):
        pos = targets[:, k] > 0.5
        if not pos.any():
            continue
        aps = {m: round(average_precision(sc[:, k], pos), 4) for m, sc in scores.items()}
        out.append({"class": name, "positives": int(pos.sum()), "ap": aps})
    return out


def biggest_drops(
    rows: list[dict[str, Any]], fp32: str, int8: tuple[str, ...], min_positives: int, top: int
) -> list[dict[str, Any]]:
    """Classes with >= min_positives positives, by their worst int8-minus-fp32 AP change, worst first."""

    def worst(r: dict[str, Any]) -> float:
        return min(r["ap"][m] - r["ap"][fp32] for m in int8)

    kept = [r for r in rows if r["positives"] >= min_positives]
    return sorted(kept, key=lambda r: (worst(r), r["class"]))[:top]


# --- what the transfer data can teach ------------------------------------------------------------

FEW_TEACHER_POSITIVES = 20  # windows; fewer (with no ground truth) = not taught by the transfer data


def class_coverage(
    gt: F32,
    ev_logits: F32,
    ev_mask: F32,
    bg_logits: F32,
    bg_weight: F32,
    names: tuple[str, ...] | list[str],
    few: int = FEW_TEACHER_POSITIVES,
) -> dict[str, Any]:
    """Per class, over the training windows of a transfer set (arrays as in `TransferSet`): windows
    where it is a ground-truth positive (mapped dataset label, event active in the window) and
    windows where the teacher's soft target exceeds 0.5 on some frame (event logit > 0 with the
    event active, or background logit > 0 with the background counted; sigmoid(z / T) > 0.5 iff
    z > 0, whatever T). Classes with no ground truth: `teacher_only_few` (1..few-1 teacher
    positives: not taught by the transfer data, teacher soft targets only) and `untaught` (none)."""
    active = ev_mask.max(axis=1) > 0
    gt_pos = ((gt > 0.5) & active[:, None]).sum(axis=0)
    t_pos = (((ev_logits > 0) & active[:, None]) | ((bg_logits > 0) & (bg_weight > 0)[:, None])).sum(axis=0)
    per_class: list[dict[str, Any]] = [
        {"class": n, "gt_windows": int(g), "teacher_windows": int(t)}
        for n, g, t in zip(names, gt_pos, t_pos, strict=True)
    ]
    no_gt = [r for r in per_class if r["gt_windows"] == 0]
    return {
        "windows": int(gt.shape[0]),
        "few_teacher_positives": few,
        "per_class": per_class,
        "with_ground_truth": sum(r["gt_windows"] > 0 for r in per_class),
        "teacher_only_taught": [r["class"] for r in no_gt if r["teacher_windows"] >= few],
        "teacher_only_few": [r["class"] for r in no_gt if 0 < r["teacher_windows"] < few],
        "untaught": [r["class"] for r in no_gt if r["teacher_windows"] == 0],
    }
