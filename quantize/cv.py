"""Cross-validation over UrbanSound8K recordings: K runs of one config, each holding out one
class-stratified recording fold (`transfer.us8k_folds` / `us8k_val_fold`), and a report that pools
their held-out clips.

Why: the UrbanSound8K part of the data is 387 clips from 64 recordings, and slices of one recording
are near-duplicates. A single 30 % hold-out is about 70 clips from a handful of recordings (one
air-conditioner recording made 28 of the default run's 69), and may miss whole classes. With K folds
every clip is scored exactly once by a student that never trained on its recording, next to the
teacher on the same clip, so the accuracy row is measured on all 387 clips. Those are still only 64
independent samples: the report adds a cluster bootstrap over the recordings (`recording_bootstrap`),
the interval of each student's margin over the teacher.

Layout of `out`: `fold-<i>.json` (the config of fold i), `fold-<i>/` (its run directory, as
`tympan quantize run` writes it), `fold-<i>.log`, and `cv.json` + `cv.md` (the pooled report).
Finished folds (a run directory with metrics.json from the same config) are not run again, so an
interrupted cross-validation resumes; `--jobs` runs folds side by side (one training thread each).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, ModelError
from quantize.config import PipelineConfig, from_dict, read_config_dict
from quantize.evaluate import DATASET_NAMES, TEACHER, recording_bootstrap
from quantize.pipeline import FP32, INT8

CV_JSON, CV_MD = "cv.json", "cv.md"
MODELS = (TEACHER, FP32, *INT8)
POOLED = "urbansound8k"  # the dataset whose validation clips differ between folds


def fold_config(base: dict[str, Any], folds: int, fold: int) -> dict[str, Any]:
    """The config dict of one fold: `base` with the UrbanSound8K recording folds set."""
    cfg = json.loads(json.dumps(base))
    transfer = cfg.setdefault("transfer", {})
    if not isinstance(transfer, dict):
        raise ConfigError("config: 'transfer' must be an object")
    transfer["us8k_folds"], transfer["us8k_val_fold"] = folds, fold
    return cfg


def _load_base(config: Path, folds: int) -> dict[str, Any]:
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    base = read_config_dict(config)
    from_dict(PipelineConfig, fold_config(base, folds, 0), str(config))  # every check of `run`, up front
    datasets = base.get("transfer", {}).get("datasets", PipelineConfig().transfer.datasets)
    if POOLED not in datasets:
        raise ConfigError(f"{config}: cross-validation splits UrbanSound8K, but transfer.datasets is {datasets}")
    return base


def _finished(run_dir: Path, cfg: dict[str, Any]) -> bool:
    if not (run_dir / "metrics.json").exists():
        return False
    try:
        done = json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    want = from_dict(PipelineConfig, cfg, "fold config")
    if from_dict(PipelineConfig, done, str(run_dir / "config.json")) != want:
        raise ConfigError(f"{run_dir}: holds a finished run of a different config; use another --out or remove it")
    return True


def run_cv(config: Path, out: Path, folds: int, seed: int, jobs: int) -> Path:
    """Run the folds not finished yet (up to `jobs` at once), then write cv.json and cv.md."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    base = _load_base(config, folds)
    out.mkdir(parents=True, exist_ok=True)
    pending: list[int] = []
    for i in range(folds):
        cfg = fold_config(base, folds, i)
        (out / f"fold-{i}.json").write_text(json.dumps(cfg, indent=2) + "\n")
        if _finished(out / f"fold-{i}", cfg):
            print(f"fold {i}: finished earlier ({out / f'fold-{i}'})", flush=True)
        else:
            pending.append(i)
    running: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < jobs:
            i = pending.pop(0)
            cmd = [sys.executable, "-m", "quantize.cli", "quantize", "run", "--config", str(out / f"fold-{i}.json")]
            cmd += ["--out", str(out / f"fold-{i}"), "--seed", str(seed)]
            with (out / f"fold-{i}.log").open("wb") as log:
                running[i] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), time.monotonic())
            print(f"fold {i}: training (log {out / f'fold-{i}.log'})", flush=True)
        time.sleep(2.0)
        for i, (proc, t0) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del running[i]
            minutes = (time.monotonic() - t0) / 60
            if rc == 0:
                print(f"fold {i}: done in {minutes:.1f} min", flush=True)
            else:
                failed.append(f"fold {i} (exit {rc}, log {out / f'fold-{i}.log'})")
    if failed:
        raise ModelError("cross-validation runs failed: " + "; ".join(failed))
    return write_cv_report(
        out, command=f"tympan quantize cv --config {config} --out {out} --folds {folds} --seed {seed}"
    )


def _pct(c: int, n: int) -> str:
    return f"{c / n:.3f} ({c}/{n})" if n else "-"


def _pooling(run_dir: Path) -> str:
    """How a fold run's evaluation made clip scores: its model.json `pooling` (runs evaluated before it
    was recorded used the linear-softmax pooling)."""
    try:
        return str(json.loads((run_dir / "model" / "model.json").read_text()).get("pooling", "linear_softmax"))
    except (OSError, ValueError):
        return "linear_softmax"


def cv_summary(out: Path) -> dict[str, Any]:
    """fold-*/metrics.json of a cross-validation directory -> pooled and per-fold accuracy."""
    runs = sorted(out.glob("fold-*/metrics.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not runs:
        raise ConfigError(f"{out}: no finished fold runs (fold-<i>/metrics.json)")
    raw = [json.loads((p.parent / "config.json").read_text()) for p in runs]
    cfgs = [from_dict(PipelineConfig, r, str(p.parent)) for r, p in zip(raw, runs, strict=True)]
    k = cfgs[0].transfer.us8k_folds
    got = sorted(c.transfer.us8k_val_fold for c in cfgs)
    if k < 2 or got != list(range(k)):
        raise ConfigError(f"{out}: fold runs hold out folds {got} of us8k_folds={k}; all of 0..{k - 1} are needed")
    same = [from_dict(PipelineConfig, fold_config(r, k, 0), "") for r in raw]
    if any(c != same[0] for c in same):
        raise ConfigError(f"{out}: the fold runs differ in more than the held-out fold")
    metrics = [json.loads(p.read_text()) for p in runs]
    seeds = sorted({json.loads((p.parent / "run.json").read_text()).get("seed") for p in runs})
    poolings = sorted({_pooling(p.parent) for p in runs})
    summary: dict[str, Any] = {
        "folds": k,
        "seeds": seeds,
        "model_id": cfgs[0].model_id,
        "clip_pooling": poolings[0] if len(poolings) == 1 else "mixed: " + ", ".join(poolings),
        "datasets": {},
    }
    for ds in metrics[0]["validation"]:
        per_fold = [m["validation"].get(ds) for m in metrics]
        if any(v is None for v in per_fold):
            continue
        entry: dict[str, Any] = {"clips_per_fold": [v["clips_mapped"] for v in per_fold], "models": {}}
        for name in MODELS:
            if any("correct_per_label" not in v[name] for v in per_fold):
                raise ConfigError(
                    f"{out}: a fold's metrics.json predates per-label counts; re-run `tympan quantize evaluate` on it"
                )
            labels: dict[str, list[int]] = {}
            for v in per_fold:
                for lab, (c, n) in v[name]["correct_per_label"].items():
                    t = labels.setdefault(lab, [0, 0])
                    t[0], t[1] = t[0] + c, t[1] + n
            entry["models"][name] = {
                "accuracy_per_fold": [v[name]["accuracy_mapped"] for v in per_fold],
                "correct_per_fold": [sum(c for c, _ in v[name]["correct_per_label"].values()) for v in per_fold],
                "correct_per_label": dict(sorted(labels.items())),
            }
            if ds == POOLED and all("correct_per_recording" in v[name] for v in per_fold):
                recs: dict[str, list[int]] = {}
                for v in per_fold:
                    for rec, (c, n) in v[name]["correct_per_recording"].items():
                        t = recs.setdefault(rec, [0, 0])
                        t[0], t[1] = t[0] + c, t[1] + n
                entry["models"][name]["correct_per_recording"] = dict(sorted(recs.items()))
        if ds != POOLED and all("correct_per_recording" in v[m] for v in per_fold for m in MODELS):
            # the same clips in every fold: each fold's student against the teacher, recordings resampled
            entry["recording_bootstrap_per_fold"] = {
                m: [
                    recording_bootstrap(
                        v[m]["correct_per_recording"], v[TEACHER]["correct_per_recording"], seed=seeds[0] or 0
                    )
                    for v in per_fold
                ]
                for m in (FP32, *INT8)
            }
        summary["datasets"][ds] = entry
    if POOLED not in summary["datasets"]:
        raise ConfigError(f"{out}: the fold runs have no UrbanSound8K validation clips")
    pooled = summary["datasets"][POOLED]["models"]
    if all("correct_per_recording" in pooled[m] for m in MODELS):
        teacher = pooled[TEACHER]["correct_per_recording"]
        summary["recording_bootstrap"] = {
            m: recording_bootstrap(pooled[m]["correct_per_recording"], teacher, seed=seeds[0] or 0)
            for m in (FP32, *INT8)
        }
    return summary


def _target_rows(summary: dict[str, Any]) -> list[list[str]]:
    e = summary["datasets"][POOLED]
    n = sum(e["clips_per_fold"])
    tot = {m: sum(e["models"][m]["correct_per_fold"]) for m in MODELS}
    rows = []
    for m in INT8:
        ok = tot[m] >= tot[TEACHER]
        rows.append(
            [
                f"accuracy UrbanSound8K fold 3, all {summary['folds']} folds pooled: {m} vs teacher zero-shot",
                f"{tot[m] / n:.3f} vs {tot[TEACHER] / n:.3f} ({tot[m] - tot[TEACHER]:+d} clips)",
                ">= teacher",
                "**PASS**" if ok else "**FAIL**",
            ]
        )
    for m in INT8:
        drop = 100.0 * (tot[FP32] - tot[m]) / n
        rows.append(
            [
                f"accuracy drop int8 vs fp32, UrbanSound8K pooled: {m}",
                f"{drop:+.2f} points",
                "<= 1 point",
                "**PASS**" if drop <= 1.0 else "**FAIL**",
            ]
        )
    return rows


def _pooling_sentence(pooling: str) -> str:
    if pooling == "mean":
        return (
            "Clip scores: each model's mean over the clip (the teacher's over its 0.96 s patches, a "
            "student's over its frames; `quantize.evaluate`)."
        )
    if pooling == "linear_softmax":
        return (
            "Clip scores: the teacher's max over its patches, a student's linear-softmax pooling of its "
            "frames (runs evaluated before the mean became the rule)."
        )
    return f"Clip scores: the folds were evaluated with different rules ({pooling}); re-evaluate them."


def cv_markdown(summary: dict[str, Any], command: str = "") -> str:
    k = summary["folds"]
    e = summary["datasets"][POOLED]
    n = sum(e["clips_per_fold"])
    lines = [
        f"# Cross-validation over UrbanSound8K recordings: {summary['model_id']}, {k} folds, seed "
        f"{', '.join(str(s) for s in summary['seeds'])}",
        "",
        f"Each of the {k} students trained on the same recipe with one class-stratified fold of the UrbanSound8K "
        "fold-3 recordings held out (slices of a recording stay together); each UrbanSound8K clip below is "
        "scored once, by the student that never trained on its recording, and by the teacher (zero-shot). "
        + _pooling_sentence(summary.get("clip_pooling", "linear_softmax")),
        *([f"Command: `{command}`"] if command else []),
        "",
        "## Targets",
        "",
        "| target | measured | goal | status |",
        "|---|---|---|---|",
        *("| " + " | ".join(r) + " |" for r in _target_rows(summary)),
        "",
        f"## UrbanSound8K fold 3, every clip held out once ({n} clips)",
        "",
        "| model | pooled accuracy | "
        + " | ".join(f"fold {i} ({c} clips)" for i, c in enumerate(e["clips_per_fold"]))
        + " |",
        "|---|---|" + "---|" * k,
    ]
    for m in MODELS:
        r = e["models"][m]
        lines.append(
            f"| {m} | {_pct(sum(r['correct_per_fold']), n)} | "
            + " | ".join(f"{a:.3f}" for a in r["accuracy_per_fold"])
            + " |"
        )
    boot = summary.get("recording_bootstrap")
    if boot:
        b0 = next(iter(boot.values()))
        lines += [
            "",
            f"How sure: these {b0['clips']} clips come from {b0['recordings']} recordings, and the clips of one "
            "recording are near-duplicates, so the recordings are the independent samples. Resampling them with "
            f"replacement ({b0['resamples']:,} times, seed {b0['seed']}; a recording's clips stay together) gives "
            "the uncertainty of each student's margin over the teacher:",
            "",
            "| model | student - teacher (points) | 95 % interval | resamples with student >= teacher |",
            "|---|---:|---:|---:|",
        ]
        for m, b in boot.items():
            lo, hi = b["ci95_points"]
            share = b["share_at_or_above_teacher"]
            lines.append(f"| {m} | {b['difference_points']:+.1f} | {lo:+.1f} to {hi:+.1f} | {share:.2f} |")
    else:
        lines += ["", "(No recording bootstrap: the folds' metrics.json predate per-recording counts; "
                  "re-run `tympan quantize evaluate` on each fold.)"]  # fmt: skip
    labels = sorted({lab for m in MODELS for lab in e["models"][m]["correct_per_label"]})
    if labels:
        lines += [
            "",
            "Per label (pooled; correct / clips):",
            "",
            "| label | " + " | ".join(MODELS) + " |",
            "|---|" + "---|" * len(MODELS),
        ]
        for lab in labels:
            cells = []
            for m in MODELS:
                c, t = e["models"][m]["correct_per_label"].get(lab, [0, 0])
                cells.append(f"{c}/{t}")
            lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    same = [ds for ds in summary["datasets"] if ds != POOLED]
    if same:
        lines += [
            "",
            "## The same validation clips in every fold: spread between the students",
            "",
            "Differences here come from the training data (one UrbanSound8K fold fewer each) and training noise.",
            "",
            "| dataset | clips | model | mean | min | max |",
            "|---|---|---|---|---|---|",
        ]
        for ds in same:
            d = summary["datasets"][ds]
            for m in MODELS:
                a = d["models"][m]["accuracy_per_fold"]
                lines.append(
                    f"| {DATASET_NAMES.get(ds, ds)} | {d['clips_per_fold'][0]} | {m} | "
                    f"{sum(a) / len(a):.3f} | {min(a):.3f} | {max(a):.3f} |"
                )
        boot = {ds: summary["datasets"][ds]["recording_bootstrap_per_fold"] for ds in same
                if "recording_bootstrap_per_fold" in summary["datasets"][ds]}  # fmt: skip
        if boot:
            lines += [
                "",
                "Each fold's student minus the teacher on these clips, in points, with the 95 % interval when "
                "their recordings are resampled (as above):",
                "",
                "| dataset | recordings | model | " + " | ".join(f"fold {i}" for i in range(k)) + " |",
                "|---|---|---|" + "---|" * k,
            ]
            for ds, per_model in boot.items():
                for m, folds in per_model.items():
                    cells = [
                        f"{b['difference_points']:+.1f} ({b['ci95_points'][0]:+.1f} to {b['ci95_points'][1]:+.1f})"
                        for b in folds
                    ]
                    name = DATASET_NAMES.get(ds, ds)
                    lines.append(f"| {name} | {folds[0]['recordings']} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_cv_report(out: Path, command: str = "") -> Path:
    summary = cv_summary(out)
    summary["targets"] = _target_rows(summary)
    (out / CV_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    (out / CV_MD).write_text(cv_markdown(summary, command))
    print(f"cross-validation report: {out / CV_MD}", flush=True)
    return out / CV_MD
