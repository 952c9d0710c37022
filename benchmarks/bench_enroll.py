"""5-shot enrolment accuracy on ESC-50 classes the student was not trained on (edge.enroll).

The student's training mapping (quantize/data/dataset_to_audioset.csv) maps 47 of ESC-50's 50 classes
to its labels; `can_opening`, `drinking_sipping` and `washing_machine` are unmapped: the student never
saw them as targets. Episodes: for each class, 5 random clips are enrolled (the prototype and its own
threshold are built exactly as `tympan enroll` does) and the class's other 35 clips are queries.

Reported, median over episodes:
- 3-way: queries of the 3 untrained classes, nearest prototype among those 3;
- 10-way: the 3 untrained plus 7 trained classes all enrolled from 5 clips, queries of the
  untrained classes, nearest prototype among the 10;
- open set: the share of untrained-class queries that pass their class's own threshold (hits) and the
  share of clips of the 40 other ESC-50 classes that pass any untrained class's threshold (false accepts).
Side by side, the same episodes with a peer representation: log-mel mean and standard deviation
(the usual few-shot baseline without a learned embedding).

    python benchmarks/bench_enroll.py [--data ../shared/data] [--episodes 20]
Writes benchmarks/results/enroll.md and .json.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.dsp.frontend import logmel
from edge.enroll import embed, threshold_from
from edge.inference import Model
from edge.sources import read_audio

UNTRAINED = ("can_opening", "drinking_sipping", "washing_machine")
TRAINED = ("dog", "rain", "engine", "clock_tick", "door_wood_knock", "keyboard_typing", "pouring_water")
SHOTS = 5


def logmel_stats(x: np.ndarray) -> np.ndarray:
    lm = logmel(x.astype(np.float32))
    v = np.concatenate([lm.mean(axis=0), lm.std(axis=0)])
    v = v - v.mean()
    return (v / (np.linalg.norm(v) + 1e-12)).astype(np.float32)


def episodes(emb: dict[str, np.ndarray], others: np.ndarray, n: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    r3, r10, hits, fa = [], [], [], []
    for _ in range(n):
        protos, thr, queries = {}, {}, {}
        for c in (*UNTRAINED, *TRAINED):
            idx = rng.permutation(len(emb[c]))
            sup = emb[c][idx[:SHOTS]]
            p = sup.mean(axis=0)
            protos[c] = p / (np.linalg.norm(p) + 1e-12)
            thr[c] = threshold_from(sup)
            queries[c] = emb[c][idx[SHOTS:]]
        p3 = np.stack([protos[c] for c in UNTRAINED])
        p10 = np.stack([protos[c] for c in (*UNTRAINED, *TRAINED)])
        ok3 = ok10 = total = hit = 0
        for i, c in enumerate(UNTRAINED):
            q = queries[c]
            ok3 += int(np.sum(np.argmax(q @ p3.T, axis=1) == i))
            ok10 += int(np.sum(np.argmax(q @ p10.T, axis=1) == i))
            hit += int(np.sum(q @ protos[c] >= thr[c]))
            total += len(q)
        r3.append(ok3 / total)
        r10.append(ok10 / total)
        hits.append(hit / total)
        t = np.array([thr[c] for c in UNTRAINED])
        fa.append(float(np.mean(np.any(others @ p3.T >= t, axis=1))))
    return {"3_way": float(np.median(r3)), "10_way": float(np.median(r10)),
            "open_set_hits": float(np.median(hits)), "open_set_false_accepts": float(np.median(fa))}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/enroll")
    args = ap.parse_args()
    esc = Path(args.data) / "esc50"
    with (esc / "esc50_meta.csv").open() as f:
        rows = list(csv.DictReader(f))
    model = Model()
    reps: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "student log-probabilities (shipped)": lambda x: embed(model, x),
        "log-mel mean+std (peer baseline)": logmel_stats,
    }
    rng = np.random.default_rng(0)
    other_rows = [r for r in rows if r["category"] not in (*UNTRAINED, *TRAINED)]
    other_rows = [other_rows[i] for i in rng.permutation(len(other_rows))[:200]]
    report: dict[str, Any] = {"model": model.id, "shots": SHOTS, "episodes": args.episodes,
                              "untrained": list(UNTRAINED), "trained_distractors": list(TRAINED),
                              "results": {}}  # fmt: skip
    audio = {r["filename"]: read_audio(str(esc / "audio" / r["filename"])) for r in rows
             if r["category"] in (*UNTRAINED, *TRAINED)}  # fmt: skip
    audio.update({r["filename"]: read_audio(str(esc / "audio" / r["filename"])) for r in other_rows})
    for name, fn in reps.items():
        t0 = time.process_time()
        emb = {c: np.stack([fn(audio[r["filename"]]) for r in rows if r["category"] == c])
               for c in (*UNTRAINED, *TRAINED)}  # fmt: skip
        others = np.stack([fn(audio[r["filename"]]) for r in other_rows])
        cpu = (time.process_time() - t0) / (sum(len(v) for v in emb.values()) + len(others))
        res = episodes(emb, others, args.episodes, seed=1)
        res["cpu_ms_per_5s_clip"] = round(cpu * 1000, 1)
        report["results"][name] = res
    lines = ["# 5-shot enrolment on ESC-50 classes the student was not trained on", "",
             "Written by `benchmarks/bench_enroll.py` (method in its docstring). Untrained classes: "
             + ", ".join(UNTRAINED) + f"; model `{model.id}`; {args.episodes} episodes, medians. "
             "CPU time per 5 s clip on the shared "
             "development machine (2 cores shared with other jobs: indicative only).", "",
             "| representation | 3-way | 10-way | open-set hits | open-set false accepts | CPU ms / clip |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['3_way']:.1%} | {r['10_way']:.1%} | {r['open_set_hits']:.1%} | "
                     f"{r['open_set_false_accepts']:.1%} | {r['cpu_ms_per_5s_clip']} |")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    Path(args.out + ".json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
