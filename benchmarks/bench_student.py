#!/usr/bin/env python3
"""Student vs teacher latency per audio second on one thread, interleaved, for one or more model dirs.

The issue-4 latency row (`quantize run`'s report) times the teacher and one student once each; on a
shared host whose speed drifts, two students measured in different runs cannot be compared. This
benchmark times the YAMNet teacher (its ONNX graph on ONNX Runtime, one 0.96 s patch per 0.48 s hop,
as the report does) and every given model directory's int8 files (TFLite and ONNX on 0.96 s windows;
the streaming TFLite model on its window every 0.12 s, as the edge pipeline runs it) round by round,
so that the host's drift hits all of them alike; each figure is the median over rounds of the median
of `--repeats` calls.

    .venv/bin/python benchmarks/bench_student.py [--models DIR ...] [--rounds 9] [--repeats 100]

Writes benchmarks/results/student_latency.md and .json.
"""

from __future__ import annotations

import os

# one thread for numpy's BLAS too (set before numpy loads)
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TEACHER_HOP_S = 0.48
WINDOW_S = 0.96
PIPELINE_HOP_S = 0.12  # edge.pipeline.PipelineConfig().model_hop_frames x 10 ms


def main() -> int:
    from edge.bench import host_cpu
    from edge.errors import TympanError
    from quantize.infer import OnnxRunner, TfliteRunner
    from quantize.pipeline import DEFAULT_MODEL_DIR, _onnx_graph_latency_s
    from quantize.teacher import load_teacher

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[str(DEFAULT_MODEL_DIR)], help="model directories")
    ap.add_argument("--teacher", default=str(REPO.parent / "shared" / "models" / "yamnet" / "YamNet_w8a8.onnx.zip"))
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--out", default=str(HERE / "results" / "student_latency"), help="results path without extension")
    args = ap.parse_args()
    if args.rounds < 1 or args.repeats < 1:
        print("bench_student: --rounds and --repeats must be at least 1", file=sys.stderr)
        return 2
    try:
        teacher = load_teacher(Path(args.teacher), Path.home() / ".cache" / "tympan", 96)
        timers: dict[str, tuple[Callable[[], float], float]] = {
            "teacher ONNX (0.96 s patch every 0.48 s)": (
                lambda: _onnx_graph_latency_s(teacher.path, args.repeats // 2),
                TEACHER_HOP_S,
            )
        }
        ids = []
        for d in map(Path, args.models):
            meta = json.loads((d / "model.json").read_text())
            mid = str(meta["id"])
            ids.append(mid)
            w = np.full((1, int(meta["window_frames"]), 64), -5.0, np.float32)
            tfl, onx = TfliteRunner(d / meta["files"]["tflite"]), OnnxRunner(d / meta["files"]["onnx"])
            timers[f"{mid} int8 TFLite (0.96 s windows)"] = (lambda r=tfl, w=w: r.latency_s(w, args.repeats), WINDOW_S)
            timers[f"{mid} int8 ONNX (0.96 s windows)"] = (lambda r=onx, w=w: r.latency_s(w, args.repeats), WINDOW_S)
            stream = meta.get("stream")
            if stream:
                st = TfliteRunner(d / meta["files"][stream["file_key"]])
                ws = np.full((1, int(stream["window_frames"]), 64), -5.0, np.float32)
                timers[f"{mid} streaming TFLite ({stream['window_frames']} frames every 0.12 s)"] = (
                    lambda r=st, w=ws: r.latency_s(w, args.repeats),
                    PIPELINE_HOP_S,
                )
    except (OSError, KeyError, ValueError, TympanError) as e:
        print(f"bench_student: {e}", file=sys.stderr)
        return 2
    per: dict[str, list[float]] = {k: [] for k in timers}
    for r in range(args.rounds):
        for name, (fn, hop_s) in timers.items():
            per[name].append(fn() / hop_s)
        print(f"round {r + 1}/{args.rounds}", flush=True)
    ms = {k: 1000.0 * statistics.median(v) for k, v in per.items()}
    teacher_ms = next(iter(ms.values()))
    rows = [{"model": k, "ms_per_audio_s": round(v, 4), "teacher_over_this": round(teacher_ms / v, 2)}
            for k, v in ms.items()]  # fmt: skip
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {host_cpu()}",
        "python": platform.python_version(),
        "rounds": args.rounds,
        "repeats": args.repeats,
        "models": ids,
        "timer": "wall time per call (perf_counter) on one thread, median of repeats; median over interleaved rounds",
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Student vs teacher latency per audio second (one thread, interleaved)",
        "",
        f"`benchmarks/bench_student.py`, {result['machine']}; python {result['python']}; {result['timer']}; "
        f"{args.rounds} rounds of {args.repeats} calls. The issue-4 row: teacher / student >= 10x.",
        "",
        "| model | ms per audio s | teacher / this |",
        "|---|---:|---:|",
    ]
    lines += [f"| {r['model']} | {r['ms_per_audio_s']:.3f} | {r['teacher_over_this']:.2f}x |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
