"""Run metrics -> report markdown sections (targets, quantisation per class, class coverage) + PNG plots.

Plots are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend state); matplotlib
is imported only when a plot is written. File names are fixed so a report can link them:
`ACCURACY_PNG`, `LATENCY_PNG`, `QUANT_SCATTER_PNG`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantize.evaluate import DATASET_NAMES, TEACHER

ACCURACY_PNG = "accuracy.png"
LATENCY_PNG = "latency.png"
QUANT_SCATTER_PNG = "quantisation_ap_scatter.png"
PLOT_TITLES = {
    ACCURACY_PNG: "accuracy (mapped labels) per model per dataset",
    LATENCY_PNG: "ms per audio second per runtime (1 thread)",
    QUANT_SCATTER_PNG: "per-class AP, fp32 vs int8",
}


def targets_markdown(rows: list[dict[str, Any]]) -> str:
    passed = sum(r["status"] == "PASS" for r in rows)
    lines = [
        "## Targets",
        "",
        f"{passed} of {len(rows)} rows pass. Teacher and student measured in the same run on the same "
        "validation clips; latencies in interleaved rounds (every model in turn, the median over rounds), "
        "so that the host's drift hits them alike.",
        "",
        "| target | measured | goal | status | note |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['target']} | {r['value']} | {r['goal']} | **{r['status']}** | {r['note']} |" for r in rows]
    return "\n".join([*lines, ""])


def qat_markdown(qat: dict[str, Any] | None) -> str:
    """What post-training quantisation cost on the validation windows, and whether QAT was run and kept."""
    if not qat:
        return ""
    lines = [
        "## Quantisation-aware fine-tuning",
        "",
        f"Measured on {qat['measure']}: fp32 {qat['fp32_window_accuracy']:.4f}, int8 TFLite after PTQ "
        f"{qat['ptq_int8_tflite_window_accuracy']:.4f} ({qat['ptq_drop_points']:+.2f} points lost; QAT runs "
        f"when more than {qat['when_drop_points_over']} points are lost).",
    ]
    if "epochs" in qat:
        lines.append(
            f"QAT: {qat['epochs']} epochs at lr {qat['lr']} ({qat['seconds']} s) -> fp32 "
            f"{qat['qat_fp32_window_accuracy']:.4f}, int8 TFLite {qat['qat_int8_tflite_window_accuracy']:.4f}."
        )
    lines.append("The int8 files come from the QAT weights." if qat["used"] else f"Not used: {qat.get('skipped', '')}.")
    return "\n".join(lines) + "\n"


def quantisation_markdown(
    per_class: list[dict[str, Any]],
    drops: list[dict[str, Any]],
    fp32: str,
    int8: tuple[str, ...],
    min_positives: int,
    targets_doc: str,
) -> str:
    lines = [
        "## Per-class change caused by quantisation",
        "",
        f"Average precision per class over all validation clips ({targets_doc}), on the {len(per_class)} "
        f"classes with positives. Largest int8 losses among the classes with >= {min_positives} positives:",
        "",
        "| class | positives | "
        + " | ".join(["AP " + fp32, *("AP " + m for m in int8)])
        + " | "
        + " | ".join(f"change {m}" for m in int8)
        + " |",
        "|---|---|" + "---|" * (2 * len(int8) + 1),
    ]
    for r in drops:
        ap = r["ap"]
        lines.append(
            f"| {r['class']} | {r['positives']} | "
            + " | ".join(f"{ap[m]:.3f}" for m in (fp32, *int8))
            + " | "
            + " | ".join(f"{ap[m] - ap[fp32]:+.3f}" for m in int8)
            + " |"
        )
    if per_class:
        lines.append("")
        for m in int8:
            d = [r["ap"][m] - r["ap"][fp32] for r in per_class]
            worse = sum(x < -1e-9 for x in d)
            lines.append(
                f"- {m}: mean AP change {sum(d) / len(d):+.4f}; {worse} of {len(d)} classes lower, "
                f"worst {min(d):+.3f}, best {max(d):+.3f}."
            )
    return "\n".join([*lines, ""])


def coverage_markdown(cov: dict[str, Any]) -> str:
    few = cov["few_teacher_positives"]
    n = len(cov["per_class"])
    lines = [
        "## Classes the transfer data cannot teach",
        "",
        f"Over the {cov['windows']:,} training windows of the transfer set: {cov['with_ground_truth']} of {n} "
        "classes have ground-truth positives (a mapped dataset label with the event active); "
        f"{len(cov['teacher_only_taught'])} have none but at least {few} windows where the teacher's soft "
        "target exceeds 0.5 (taught by the teacher alone); "
        f"{len(cov['teacher_only_few'])} have none and 1-{few - 1} teacher windows; "
        f"{len(cov['untaught'])} have neither.",
        "",
        f"- **Not taught by the transfer data (teacher soft targets only, < {few} windows)** "
        f"({len(cov['teacher_only_few'])}): " + (", ".join(_with_counts(cov, cov["teacher_only_few"])) or "none"),
        f"- **Untaught** (no ground-truth and no teacher positive) ({len(cov['untaught'])}): "
        + (", ".join(cov["untaught"]) or "none"),
        "",
        "Per-class window counts (ground truth / teacher > 0.5) are in `metrics.json` (`transfer_coverage`)"
        + (f"; source: {cov['source']}." if cov.get("source") else "."),
    ]
    return "\n".join([*lines, ""])


def _with_counts(cov: dict[str, Any], names: list[str]) -> list[str]:
    by = {r["class"]: r["teacher_windows"] for r in cov["per_class"]}
    return [f"{c} ({by[c]})" for c in names]


def plots_markdown(files: list[str], linked: bool, where: str) -> str:
    lines = ["## Plots", ""]
    if linked:
        lines += [f"![{PLOT_TITLES.get(f, f)}]({f})" for f in files]
    else:
        lines.append(f"PNG plots are kept in the run directory `{where}` (not shipped with the model):")
        lines += [f"- `{f}`: {PLOT_TITLES.get(f, f)}" for f in files]
    return "\n".join([*lines, ""])


def _figure(w: float, h: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_accuracy(metrics: dict[str, Any], path: Path) -> None:
    """Grouped bars: accuracy on mapped labels, one group per dataset, one bar per model."""
    datasets = list(metrics)
    models = [m for m in next(iter(metrics.values()), {}) if isinstance(metrics[datasets[0]][m], dict)]
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    width = 0.8 / max(len(models), 1)
    for i, m in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(datasets))]
        ys = [metrics[d].get(m, {}).get("accuracy_mapped", float("nan")) for d in datasets]
        bars = ax.bar(xs, ys, width, label=m)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(datasets)))
    ax.set_xticklabels([f"{DATASET_NAMES.get(d, d)}\n({metrics[d]['clips_mapped']} clips)" for d in datasets])
    ax.set_ylabel("top-1 accuracy (mapped labels)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Validation accuracy per model")
    fig.tight_layout()
    fig.savefig(path)


def plot_latency(models: dict[str, dict[str, Any]], path: Path) -> None:
    names = [n for n, r in models.items() if r.get("ms_per_audio_second")]
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    runtime = {TEACHER: "teacher\n(YAMNet ONNX)", "student_fp32": "student_fp32\n(PyTorch)"}
    bars = ax.bar(
        [runtime.get(n, n) for n in names], [models[n]["ms_per_audio_second"] for n in names], color="tab:blue"
    )
    if TEACHER in names:
        bars[names.index(TEACHER)].set_color("tab:gray")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_ylabel("ms per audio second (1 thread)")
    ax.set_title("Latency per runtime")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path)


def plot_quant_scatter(per_class: list[dict[str, Any]], fp32: str, int8: tuple[str, ...], path: Path) -> None:
    fig = _figure(5.5, 5.5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="gray", linewidth=0.8, linestyle="--", label="no change")
    for m, marker in zip(int8, ("o", "x", "s", "^"), strict=False):
        ax.scatter([r["ap"][fp32] for r in per_class], [r["ap"][m] for r in per_class], s=14, marker=marker, label=m)
    ax.set_xlabel(f"AP {fp32}")
    ax.set_ylabel("AP int8")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Per-class AP, {len(per_class)} classes with positives")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def write_plots(
    out_dir: Path,
    metrics: dict[str, Any],
    models: dict[str, dict[str, Any]],
    per_class: list[dict[str, Any]],
    fp32: str,
    int8: tuple[str, ...],
) -> list[str]:
    """The three PNGs into out_dir; returns their file names."""
    plot_accuracy(metrics, out_dir / ACCURACY_PNG)
    plot_latency(models, out_dir / LATENCY_PNG)
    plot_quant_scatter(per_class, fp32, int8, out_dir / QUANT_SCATTER_PNG)
    return [ACCURACY_PNG, LATENCY_PNG, QUANT_SCATTER_PNG]
