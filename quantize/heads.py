"""Learned state/trait heads: more output columns of the student, trained on its trunk's frame features.

Some states and traits have labelled recordings but no AudioSet class for the teacher to teach: the
petrol/diesel trait and heavy/light vehicles (`../shared/data/vehicles`). A head file
(`quantize/data/heads.csv`: `group,class,dataset,label`) names, per ontology group, its classes (ontology
state or trait names, in column order) and the dataset labels that are examples of each. A dataset label
may be an example in several groups (a petrol car is "petrol" and "light").

The heads are linear, on the 1x1-conv input the event classes use (the trunk's frame features after the
mel pooling), trained with the trunk frozen so the event outputs stay exactly as distilled: one sigmoid
per head class, binary cross-entropy on the frames of the training clips of that class's group (a
"petrol" column learns nothing from a bus), L2-regularised, on standardised features (the
standardisation is folded into the weights). Training windows cover each clip at a 0.24 s hop, clean and
mixed into random backgrounds (`augment` copies at `snr_db`). The heads become a second 1x1 conv
beside the event head (`Student.aux_head`), its sigmoid joined after the event columns, so their int8
ranges stay apart from the event logits'; the int8 files are exported again with the run's calibration
windows (their event columns are compared with the files without heads: recorded), and `heads.json`
in the run directory records the
heads and their evaluation: per group, clip accuracy and confusion on the validation clips (the
vehicles test split), fp32 and int8 TFLite, next to the majority-class rate. A clip's head score is the
mean over its frames, as the device pools an event's frames (`edge.annotate`).

    tympan quantize heads RUN_DIR [--heads FILE]   (the `quantize run` pipeline runs it too)
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.dsp.frontend import DEFAULT_FRONTEND
from edge.errors import ConfigError, InputError, ModelError
from quantize.audio import F32, activity_mask, read_audio, segment
from quantize.labels import packaged_data
from quantize.transfer import Clip, _mix, clip_windows, windows_logmel

HEADS_JSON = "heads.json"
STUDENT_HEADS_PT = "student_heads_folded.pt"
HEAD_COLUMNS = ("group", "class", "dataset", "label")


@dataclass(frozen=True)
class HeadSpec:
    """Head groups in column order, and which dataset labels are examples of which (group, class)."""

    groups: tuple[tuple[str, tuple[str, ...]], ...]
    examples: dict[tuple[str, str], tuple[tuple[str, str], ...]]  # (dataset, label) -> ((group, class), ...)

    @property
    def columns(self) -> list[tuple[str, str]]:
        return [(g, c) for g, classes in self.groups for c in classes]

    def restricted(self, have: set[tuple[str, str]]) -> HeadSpec:
        """The groups whose every class has an example label in `have` (only those examples kept)."""
        examples = {k: v for k, v in self.examples.items() if k in have}
        present = {gc for v in examples.values() for gc in v}
        groups = tuple((g, c) for g, c in self.groups if all((g, x) in present for x in c))
        keep = {g for g, _ in groups}
        ex = {k: tuple(gc for gc in v if gc[0] in keep) for k, v in examples.items()}
        return HeadSpec(groups, {k: v for k, v in ex.items() if v})

    def to_json(self) -> list[dict[str, Any]]:
        return [{"group": g, "classes": list(c)} for g, c in self.groups]


def load_head_spec(path: Path | None = None) -> HeadSpec:
    """Read and validate a head file against the edge ontology (every class a state or trait of its group,
    at least two classes per group, no duplicate rows)."""
    from edge.ontology import load_ontology

    path = path or packaged_data("heads.csv")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != HEAD_COLUMNS:
                raise InputError(f"{path}: expected the columns {','.join(HEAD_COLUMNS)}, got {reader.fieldnames}")
            rows = list(reader)
    except OSError as e:
        raise InputError(f"{path}: cannot read the head file ({e.strerror})") from None
    onto = load_ontology()
    groups: dict[str, list[str]] = {}
    examples: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for i, r in enumerate(rows):
        where = f"{path}: line {i + 2}"
        g, c, ds, lab = (str(r.get(k) or "").strip() for k in HEAD_COLUMNS)
        if not all((g, c, ds, lab)):
            raise InputError(f"{where}: every column needs a value, got {r!r}")
        if g not in onto.groups:
            raise InputError(f"{where}: unknown ontology group {g!r} (groups: {', '.join(onto.groups)})")
        try:
            cg = onto.group_of(c)
        except ConfigError:
            raise InputError(f"{where}: {c!r} is neither a state nor a trait of the ontology") from None
        if cg != g:
            raise InputError(f"{where}: {c!r} belongs to group {cg!r}, not {g!r}")
        if (g, c) in examples.get((ds, lab), []):
            raise InputError(f"{where}: {ds}/{lab} -> {g}/{c} is listed twice")
        if any(gg == g for gg, _ in examples.get((ds, lab), [])):
            raise InputError(f"{where}: {ds}/{lab} is already an example of another class of group {g!r}")
        groups.setdefault(g, [])
        if c not in groups[g]:
            groups[g].append(c)
        examples.setdefault((ds, lab), []).append((g, c))
    if not groups:
        raise InputError(f"{path}: no heads defined")
    for g, classes in groups.items():
        if len(classes) < 2:
            raise InputError(f"{path}: group {g!r} has one class ({classes[0]!r}); a head needs at least two")
    return HeadSpec(tuple((g, tuple(c)) for g, c in groups.items()), {k: tuple(v) for k, v in examples.items()})


def head_sources(
    spec: HeadSpec, mapping: dict[tuple[str, str], tuple[int, ...]], label_names: tuple[str, ...]
) -> dict[str, list[str]]:
    """Per group, the ontology sources of its training examples (through their AudioSet labels): the
    device applies a head to events of those sources only (a head taught on vehicles says nothing
    about a dog's weight)."""
    from edge.ontology import load_ontology

    onto = load_ontology()
    out: dict[str, set[str]] = {g: set() for g, _ in spec.groups}
    for key, gcs in spec.examples.items():
        for col in mapping.get(key, ()):
            src = onto.source_of(label_names[col])
            for g, _ in gcs:
                if src is not None and g in out:
                    out[g].add(src.name)
    return {g: sorted(v) for g, v in out.items()}


def clip_targets(spec: HeadSpec, clip: Clip) -> tuple[F32, F32] | None:
    """(target, mask) over the head columns for a clip, None if it is no head's example."""
    ex = spec.examples.get((clip.dataset, clip.label))
    if not ex:
        return None
    cols = spec.columns
    y, m = np.zeros(len(cols), np.float32), np.zeros(len(cols), np.float32)
    for g, c in ex:
        for j, (gj, cj) in enumerate(cols):
            if gj == g:
                m[j] = 1.0
                y[j] = float(cj == c)
    return y, m


def trunk_features(model: Any, windows: F32, batch: int = 128) -> F32:
    """Log-mel windows [N, F, M] -> the frame features the 1x1 heads see [N, F / hop, C]."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(windows), batch):
            x = torch.from_numpy(np.ascontiguousarray(windows[s : s + batch]))
            out.append(model.features(x).squeeze(3).transpose(1, 2).numpy())
    return np.concatenate(out).astype(np.float32)


def _frame_active(x: F32, starts: npt.NDArray[np.int64], window_frames: int, hop: int) -> npt.NDArray[np.bool_]:
    """[N, window_frames / hop]: output frames that hold any active frame of the clip."""
    m = activity_mask(x, 30.0, -65.0)
    out = []
    for s in starts:
        w = segment(m, int(s) // DEFAULT_FRONTEND.hop, window_frames)
        out.append(w.reshape(-1, hop).max(axis=1) > 0)
    return np.stack(out)


def head_examples(
    model: Any,
    spec: HeadSpec,
    clips: list[Clip],
    backgrounds: list[Path],
    window_frames: int,
    hop: int,
    augment: int,
    snr_db: tuple[float, float],
    seed: int,
) -> tuple[F32, F32, F32]:
    """Training frames of the head examples among `clips`: features [n, C], targets and masks [n, H]."""
    rng = np.random.default_rng(seed)
    bg_waves = [read_audio(p) for p in backgrounds]
    xs, ys, ms = [], [], []
    for clip in clips:
        tm = clip_targets(spec, clip)
        if tm is None:
            continue
        x = read_audio(clip.path)
        starts = clip_windows(x, 24, window_frames)
        active = _frame_active(x, starts, window_frames, hop)
        waves = [x]
        for _ in range(augment):
            if not bg_waves:
                break
            bg = bg_waves[int(rng.integers(len(bg_waves)))]
            reps = -(-len(x) // max(1, len(bg)))
            bgx = np.tile(bg, reps)[: len(x)]
            mask = np.ones(len(x) // DEFAULT_FRONTEND.hop + 1, np.float32)
            gain = np.float32(10.0 ** (rng.uniform(-20.0, 0.0) / 20.0))
            mixed = _mix(x, mask, bgx, float(rng.uniform(*snr_db)), DEFAULT_FRONTEND) * gain
            waves.append(mixed / max(1.0, float(np.max(np.abs(mixed)))))
        for w in waves:
            feats = trunk_features(model, windows_logmel(np.asarray(w, np.float32), starts, window_frames))
            sel = feats[active]
            xs.append(sel)
            ys.append(np.repeat(tm[0][None], len(sel), 0))
            ms.append(np.repeat(tm[1][None], len(sel), 0))
    if not xs:
        raise InputError(
            "no clip of the transfer data is an example of any head (check the head file's datasets/labels)"
        )
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ms)


def fit_heads(x: F32, y: F32, m: F32, l2: float, steps: int, seed: int) -> tuple[F32, F32]:
    """Masked logistic regression per head column on standardised features; returns (W [H, C], b [H])
    for the raw features (standardisation folded in)."""
    import torch

    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-4
    xt = torch.from_numpy((x - mu) / sd)
    yt, mt = torch.from_numpy(y), torch.from_numpy(m)
    # balance the classes within each column: positives and negatives weigh the same in total
    pos = (yt * mt).sum(0).clamp_min(1.0)
    neg = ((1 - yt) * mt).sum(0).clamp_min(1.0)
    wt = mt * (yt / pos + (1 - yt) / neg)
    lin = torch.nn.Linear(x.shape[1], y.shape[1])
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = lin(xt)
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(z, yt, reduction="none") * wt).sum()
        loss = loss / y.shape[1] + l2 * (lin.weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w = lin.weight.detach().numpy() / sd[None, :]
    b = lin.bias.detach().numpy() - (w * mu[None, :]).sum(1)
    return w.astype(np.float32), b.astype(np.float32)


def attach_heads(model: Any, w: F32, b: F32) -> None:
    """Give the student its learned heads: a separate 1x1 conv of the head rows on the event head's
    features (`Student.aux_head`), its sigmoid joined after the event columns."""
    import torch

    conv = model.add_aux_head(w.shape[0])
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w)[:, :, None, None])
        conv.bias.copy_(torch.from_numpy(b))


def evaluate_heads(
    frames_of: Any, spec: HeadSpec, clips: list[Clip], k: int, window_frames: int, hop: int
) -> dict[str, Any]:
    """Per group: clip accuracy, confusion (rows truth, columns predicted) and the majority-class rate,
    over the clips that are examples of the group. `frames_of(windows)` -> outputs [N, T, K + H]."""
    cols = spec.columns
    out: dict[str, Any] = {}
    scores: list[tuple[Clip, F32]] = []
    for clip in clips:
        if clip_targets(spec, clip) is None:
            continue
        x = read_audio(clip.path)
        starts = clip_windows(x, window_frames // 2, window_frames)
        fr = np.asarray(frames_of(windows_logmel(x, starts, window_frames)))[:, :, k:]
        act = _frame_active(x, starts, window_frames, hop)
        sel = fr[act] if act.any() else fr.reshape(-1, fr.shape[-1])
        scores.append((clip, sel.mean(axis=0)))
    for g, classes in spec.groups:
        idx = [j for j, (gj, _) in enumerate(cols) if gj == g]
        conf = np.zeros((len(classes), len(classes)), np.int64)
        per_clip = []
        for clip, s in scores:
            truth = [c for gg, c in spec.examples[(clip.dataset, clip.label)] if gg == g]
            if not truth:
                continue
            ti, pi = classes.index(truth[0]), int(np.argmax(s[idx]))
            conf[ti, pi] += 1
            per_clip.append({"clip": clip.path.name, "label": clip.label, "truth": truth[0], "predicted": classes[pi]})
        n = int(conf.sum())
        out[g] = {
            "classes": list(classes),
            "clips": n,
            "accuracy": round(float(np.trace(conf)) / n, 4) if n else None,
            "majority_rate": round(float(conf.sum(1).max()) / n, 4) if n else None,
            "confusion": conf.tolist(),
            "per_clip": per_clip,
        }
    return out


def train_heads(
    run_dir: Path, head_file: Path | None = None, seed: int | None = None, strict: bool = True
) -> dict[str, Any] | None:
    """Train the heads of `head_file` on a run's student and re-export its int8 files with them.
    `strict`: every example label of the head file must have training clips (else InputError); without
    it, groups lacking examples are dropped, and nothing is done (None) when none are left."""
    import torch

    from quantize.config import PipelineConfig, from_dict
    from quantize.distill import predict_frames
    from quantize.export import export_onnx_fp32
    from quantize.infer import TfliteRunner
    from quantize.pipeline import RUN_JSON, calibration_draw, load_student, setup, transfer_sets
    from quantize.ptq import quantize_onnx, quantize_tflite

    t0 = time.monotonic()
    try:
        cfg = from_dict(PipelineConfig, json.loads((run_dir / "config.json").read_text()), str(run_dir / "config.json"))
        info = json.loads((run_dir / RUN_JSON).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{run_dir}: not a run directory with config.json and {RUN_JSON} ({e})") from None
    seed = int(info["seed"]) if seed is None else seed
    hc = cfg.heads
    spec = load_head_spec(head_file if head_file is not None else (Path(hc.file) if hc.file else None))
    s = setup(cfg)
    k = len(s.labels)
    hop = cfg.output_hop_frames
    torch.set_num_threads(cfg.distill.threads)
    model = load_student(cfg, run_dir, k, heads=False)
    train_clips = [c for c in s.clips if c.split == "train"]
    val_clips = [c for c in s.clips if c.split == "val"]
    if not val_clips:
        raise ConfigError("no validation clips to evaluate the heads on: check the datasets and splits in the config")
    have = {(c.dataset, c.label) for c in train_clips}
    missing = sorted(set(spec.examples) - have)
    if missing and strict:
        raise InputError(
            f"head examples with no training clips: {missing} (datasets in the config: {list(cfg.transfer.datasets)})"
        )
    if missing:  # the pipeline's own step: train the groups the run's data has examples of
        spec = spec.restricted(have)
        if not spec.groups:
            print("heads: skipped (no head's examples are among the run's training clips)", flush=True)
            return None
    names = ", ".join(g + " (" + "/".join(c) + ")" for g, c in spec.groups)
    print(f"heads: {names}", flush=True)
    sources = head_sources(spec, s.mapping, s.labels.names)
    x, y, m = head_examples(
        model, spec, train_clips, s.backgrounds, cfg.window_frames, hop, hc.augment, hc.snr_db, seed + 3
    )
    print(f"heads: {len(x)} training frames; fitting", flush=True)
    w, b = fit_heads(x, y, m, hc.l2, hc.steps, seed)
    train_set, _ = transfer_sets(s, seed)
    calib = calibration_draw(cfg, train_set, seed)  # the run's calibration windows
    x0 = read_audio(val_clips[0].path)
    probe_windows = windows_logmel(x0, clip_windows(x0, 48, cfg.window_frames), cfg.window_frames)
    before = predict_frames(model, probe_windows)
    attach_heads(model, w, b)
    after = predict_frames(model, probe_windows)
    if float(np.max(np.abs(after[..., :k] - before))) > 1e-5:
        raise ModelError("attaching the heads changed the event outputs")
    fp32_eval = evaluate_heads(lambda win: predict_frames(model, win), spec, val_clips, k, cfg.window_frames, hop)

    print("heads: exporting int8 with the run's calibration windows", flush=True)
    old = TfliteRunner(run_dir / "model_int8.tflite")
    tmp = run_dir / "heads_tmp"
    tmp.mkdir(exist_ok=True)
    export_onnx_fp32(model, cfg.window_frames, DEFAULT_FRONTEND.n_mels, tmp / "student_fp32.onnx")
    quantize_tflite(model, calib, tmp / "model_int8.tflite", cfg.quant.per_channel)
    quantize_onnx(
        tmp / "student_fp32.onnx", calib, tmp / "model_int8.onnx", cfg.quant.per_channel, cfg.quant.onnx_reduce_range
    )
    new = TfliteRunner(tmp / "model_int8.tflite")
    check = calib[:64]
    o, nw = old(check)[..., :k], new(check)  # the old files may carry earlier heads: compare events only
    agree = float(np.mean(o.reshape(-1, k).argmax(1) == nw[..., :k].reshape(-1, k).argmax(1)))
    max_diff = float(np.max(np.abs(o - nw[..., :k])))
    int8_eval = evaluate_heads(new, spec, val_clips, k, cfg.window_frames, hop)
    for name in ("model_int8.tflite", "model_int8.onnx", "student_fp32.onnx"):
        (tmp / name).replace(run_dir / name)
    tmp.rmdir()
    torch.save(model.state_dict(), run_dir / STUDENT_HEADS_PT)
    result = {
        "heads": [dict(h, sources=sources[h["group"]]) for h in spec.to_json()],
        "file": str(head_file or hc.file or "quantize/data/heads.csv"),
        "training_frames": len(x),
        "training_clips": sorted({c.path.name for c in train_clips if clip_targets(spec, c) is not None}),
        "features": int(x.shape[1]),
        "l2": hc.l2,
        "augment": hc.augment,
        "event_columns_vs_without_heads": {
            "calibration_windows": len(check),
            "frame_top1_agreement": round(agree, 4),
            "max_abs_prob_diff": round(max_diff, 5),
        },
        "validation": {"student_fp32": fp32_eval, "student_int8_tflite": int8_eval},
        "seconds": round(time.monotonic() - t0, 1),
    }
    (run_dir / HEADS_JSON).write_text(json.dumps(result, indent=2) + "\n")
    for g, r in int8_eval.items():
        print(
            f"heads: {g}: int8 accuracy {r['accuracy']} on {r['clips']} validation clips "
            f"(majority {r['majority_rate']})"
        )
    return result


def _sources_text(heads: list[dict[str, Any]]) -> str:
    return "; ".join(f"{h['group']}: {', '.join(h.get('sources') or ['any'])}" for h in heads)


def heads_markdown(res: dict[str, Any] | None) -> str:
    """The report/card section for a run's heads.json."""
    if not res:
        return ""
    lines = [
        "## Learned state/trait heads",
        "",
        f"Linear heads on the student's frame features (trunk frozen), trained on {len(res['training_clips'])} "
        f"clips ({res['training_frames']} frames, clean + {res['augment']} background mixtures each); "
        "a clip's score is the mean over its active frames. Measured on the validation clips of the head "
        "examples' datasets (vehicles: its test split, never trained on); `sources`: the ontology sources "
        f"the device applies each head to ({_sources_text(res['heads'])}).",
        "",
        "| group | classes | clips | accuracy fp32 | accuracy int8 TFLite | majority-class rate |",
        "|---|---|---:|---:|---:|---:|",
    ]
    val = res["validation"]
    for g, r in val["student_int8_tflite"].items():
        f = val["student_fp32"][g]
        lines.append(
            f"| {g} | {' / '.join(r['classes'])} | {r['clips']} | {f['accuracy']} | {r['accuracy']} "
            f"| {r['majority_rate']} |"
        )
    lines.append("")
    for g, r in val["student_int8_tflite"].items():
        head = " | ".join(r["classes"])
        lines += [f"Confusion, {g} (int8; rows truth, columns predicted):", "", f"| truth \\ predicted | {head} |",
                  "|---|" + "---:|" * len(r["classes"])]  # fmt: skip
        for c, row in zip(r["classes"], r["confusion"], strict=True):
            lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
        lines.append("")
    ev = res["event_columns_vs_without_heads"]
    lines.append(
        f"Event columns with vs without the heads (int8, {ev['calibration_windows']} calibration windows): "
        f"frame top-1 agreement {ev['frame_top1_agreement']}, max |prob diff| {ev['max_abs_prob_diff']}."
    )
    return "\n".join(lines) + "\n"
