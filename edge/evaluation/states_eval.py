"""`tympan evaluate states`: per-state accuracy and confusion matrices of the DSP-derived states.

Truth is made, not guessed, wherever it can be:

- speed (accelerating / decelerating / steady): real engine recordings of stationary engines (ESC-50
  `engine`, UrbanSound8K `engine_idling`) played back at a speed that varies in a
  known way: time-varying resampling by a rate r(t) that moves exponentially from 1 to `1 + change`
  (accelerating), to `1 / (1 + change)` (decelerating) or stays 1 (steady). Every partial of the engine
  moves with r(t), as it would if the engine itself sped up.
- motion (approaching / receding / passing): the same recordings moved past a listener on a straight
  line at `PASS_SPEED_M_S`, closest distance `PASS_DISTANCE_M`: each output sample reads the source at
  the emission time t - r(t)/c (Doppler) and is scaled by 1/r(t) (spherical spreading). The first half
  of the pass is "approaching", the second "receding", the whole "passing".
- temporal (impulsive / continuous): ESC-50 classes whose sound is impulsive (knocks, clicks, ticks)
  or continuous (engines, vacuum cleaners, washing machines, rain).
- real clips annotated by hand (`benchmarks/states_annotations.json`: file, state, how it was judged).
- learned traits (fuel: petrol / diesel, weight: heavy / light): the vehicles test split (clips the
  heads were not trained on; truth: what the head file, quantize/data/heads.csv, says the clip's class
  is), scored by the device's own code (`edge.annotate.head_states` with the shipped model, as for an
  event labelled "Vehicle" spanning the whole clip).

The report goes to `--out` (default benchmarks/results/states.md and .json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.errors import InputError

SAMPLE_RATE = 16000
SPEED_CHANGES = (0.2, 0.4)  # relative speed change over a clip (0.05-0.12 octaves/s on 4-5 s clips)
PASS_SPEED_M_S = 15.0
PASS_DISTANCE_M = 5.0
SOUND_SPEED_M_S = 343.0
IMPULSIVE_CLASSES = ("door_wood_knock", "mouse_click", "clock_tick", "footsteps")
CONTINUOUS_CLASSES = ("engine", "vacuum_cleaner", "washing_machine", "rain")
GROUP_STATES = {
    "speed": ("accelerating", "decelerating", "steady"),
    "motion": ("approaching", "receding", "passing"),
    "temporal": ("impulsive", "continuous"),
}
NONE = "(none)"

F64 = npt.NDArray[np.float64]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="../shared/data", metavar="DIR", help="data root (default ../shared/data)")
    p.add_argument("--out", default="benchmarks/results/states", metavar="PREFIX", help="writes PREFIX.md/.json")
    p.add_argument(
        "--annotations", default="benchmarks/states_annotations.json", metavar="FILE",
        help="hand-annotated real clips (default benchmarks/states_annotations.json)",
    )  # fmt: skip
    p.add_argument("--max-clips", type=int, default=40, metavar="N", help="clips per source set (default 40)")


# --- signal transforms with known truth -------------------------------------------------------------------
def vary_speed(x: F64, change: float, sr: int = SAMPLE_RATE) -> F64:
    """Play `x` back at rate r(t) = (1 + change) ** (t / T) (exponential: a constant rate in octaves/s).

    The output is as long as the input allows (a faster playback reads past the end sooner). Reading
    is by linear interpolation after a low-pass at the lowest rate's Nyquist where the rate exceeds 1."""
    n = len(x)
    ratio = 1.0 + change
    # output duration T such that the read position reaches the end: int_0^T r(t) dt = n / sr
    dur_in = n / sr
    if abs(change) < 1e-9:
        return x.copy()
    k = math.log(ratio)
    # int_0^T exp(k t / T) dt = T (ratio - 1) / k  =>  T = dur_in * k / (ratio - 1)
    dur = dur_in * k / (ratio - 1.0)
    t = np.arange(int(dur * sr)) / sr
    pos = (dur / k) * (np.exp(k * t / dur) - 1.0) * sr
    return np.interp(pos, np.arange(n), x)


def pass_by(x: F64, sr: int = SAMPLE_RATE) -> tuple[F64, float]:
    """`x` moved past the listener on a line (Doppler + 1/r); returns the signal and the closest-approach time."""
    dur = len(x) / sr
    t = np.arange(len(x)) / sr
    t_c = dur / 2.0
    # emission time tau for reception time t: t = tau + r(tau)/c, solved by fixed-point iteration
    tau = t.copy()
    for _ in range(5):
        r = np.hypot(PASS_DISTANCE_M, PASS_SPEED_M_S * (tau - t_c))
        tau = t - r / SOUND_SPEED_M_S
    r = np.hypot(PASS_DISTANCE_M, PASS_SPEED_M_S * (tau - t_c))
    pos = np.clip(tau - tau[0], 0, None) * sr
    y = np.interp(pos, np.arange(len(x)), x) * (PASS_DISTANCE_M / r)
    t_closest = float(t[np.argmin(r)])
    return y, t_closest


# --- data ---------------------------------------------------------------------------------------------------
def _read(path: Path) -> F64:
    from edge.sources import read_audio

    x = read_audio(str(path))
    a = np.asarray(x, np.float64)
    return a.mean(axis=0) if a.ndim == 2 else a


def _engine_clips(root: Path, max_clips: int) -> Iterator[tuple[str, Path]]:
    import csv

    esc = root / "esc50"
    with (esc / "esc50_meta.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["category"] == "engine"]
    for r in rows[:max_clips]:
        yield "esc50/engine", esc / "audio" / r["filename"]
    us = root / "urbansound8k_fold3"
    with (us / "meta.csv").open() as f:
        urows = [r for r in csv.DictReader(f) if r["class"] == "engine_idling"]
    per_rec: dict[str, int] = {}
    kept = []
    for r in urows:  # at most 8 slices of one recording: slices of one recording are near-copies
        if per_rec.get(r["fsID"], 0) < 8:
            per_rec[r["fsID"]] = per_rec.get(r["fsID"], 0) + 1
            kept.append(r)
    for r in kept[:max_clips]:
        yield "urbansound8k/engine_idling", us / "audio" / r["path"]


def _esc_classes(root: Path, classes: tuple[str, ...], max_clips: int) -> Iterator[tuple[str, Path]]:
    import csv

    esc = root / "esc50"
    with (esc / "esc50_meta.csv").open() as f:
        rows = list(csv.DictReader(f))
    for c in classes:
        for r in [r for r in rows if r["category"] == c][: max(1, max_clips // len(classes))]:
            yield c, esc / "audio" / r["filename"]


# --- scoring ------------------------------------------------------------------------------------------------
class Tally:
    def __init__(self, states: tuple[str, ...]) -> None:
        self.states = states
        self.cols = (*states, NONE)
        self.m = np.zeros((len(states), len(self.cols)), np.int64)

    def add(self, truth: str, pred: str | None) -> None:
        self.m[self.states.index(truth), self.cols.index(pred if pred in self.cols else NONE)] += 1

    def summary(self) -> dict[str, Any]:
        per = {
            s: (float(self.m[i, i] / self.m[i].sum()) if self.m[i].sum() else None) for i, s in enumerate(self.states)
        }
        total = int(self.m.sum())
        return {
            "accuracy": float(np.trace(self.m[:, : len(self.states)]) / total) if total else None,
            "n": total,
            "per_state": per,
            "confusion": {
                "rows_truth": list(self.states),
                "cols_predicted": list(self.cols),
                "counts": self.m.tolist(),
            },
        }


def _pred(est: Any) -> str | None:
    return None if est is None else str(est.name)


def evaluate(root: Path, annotations: Path | None, max_clips: int) -> dict[str, Any]:
    from edge.states import motion_state, speed_state, temporal_state

    for sub in ("esc50", "urbansound8k_fold3"):
        if not (root / sub).is_dir():
            raise InputError(f"{root / sub}: missing (the states evaluation reads ESC-50 and UrbanSound8K)")
    report: dict[str, Any] = {"sample_rate": SAMPLE_RATE, "speed_changes": list(SPEED_CHANGES)}
    speed = Tally(GROUP_STATES["speed"])
    speed_by_set: dict[str, Tally] = {}
    motion = Tally(GROUP_STATES["motion"])
    n_clips = 0
    for name, path in _engine_clips(root, max_clips):
        x = _read(path)
        n_clips += 1
        per = speed_by_set.setdefault(name.split("/")[0], Tally(GROUP_STATES["speed"]))
        cases = [("steady", x)]
        for c in SPEED_CHANGES:
            cases += [("accelerating", vary_speed(x, c)), ("decelerating", vary_speed(x, 1.0 / (1.0 + c) - 1.0))]
        for truth, y in cases:
            p = _pred(speed_state(y.astype(np.float32), SAMPLE_RATE))
            speed.add(truth, p)
            per.add(truth, p)
        y, tc = pass_by(x)
        i = int(tc * SAMPLE_RATE)
        motion.add("passing", _pred(motion_state(y, SAMPLE_RATE)))
        motion.add("approaching", _pred(motion_state(y[:i], SAMPLE_RATE)))
        motion.add("receding", _pred(motion_state(y[i:], SAMPLE_RATE)))
    report["speed"] = speed.summary()
    report["speed"]["by_set"] = {k: v.summary()["accuracy"] for k, v in speed_by_set.items()}
    report["speed"]["clips"] = n_clips
    report["motion"] = motion.summary()
    report["motion"]["pass_by"] = {"speed_m_s": PASS_SPEED_M_S, "closest_m": PASS_DISTANCE_M}
    temporal = Tally(GROUP_STATES["temporal"])
    for _cls, path in _esc_classes(root, IMPULSIVE_CLASSES, max_clips):
        temporal.add("impulsive", _pred(temporal_state(_read(path), SAMPLE_RATE)))
    for _cls, path in _esc_classes(root, CONTINUOUS_CLASSES, max_clips):
        temporal.add("continuous", _pred(temporal_state(_read(path), SAMPLE_RATE)))
    report["temporal"] = temporal.summary()
    if annotations is not None and annotations.is_file():
        report["annotated"] = _annotated(root, annotations)
    if (root / "vehicles" / "meta.csv").is_file():
        report["learned"] = _learned_traits(root / "vehicles")
    return report


def _head_truth(dataset: str) -> dict[str, dict[str, str]]:
    """Per label of `dataset`, the (group -> class) it is an example of in the distillation pipeline's
    head file (quantize/data/heads.csv, found beside the `quantize` package, not imported)."""
    import csv
    import importlib.util

    spec = importlib.util.find_spec("quantize")
    for loc in list(spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(loc) / "data" / "heads.csv"
        if path.is_file():
            out: dict[str, dict[str, str]] = {}
            with open(path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    if row["dataset"] == dataset:
                        out.setdefault(row["label"], {})[row["group"]] = row["class"]
            return out
    raise InputError("no head file (quantize/data/heads.csv) to take the learned traits' truth from")


def _learned_traits(root: Path) -> dict[str, Any]:
    import csv

    from edge.annotate import AnnotateConfig, head_states
    from edge.inference import Model
    from edge.ontology import load_ontology

    model, onto, min_p = Model(), load_ontology(), AnnotateConfig().min_p
    if not model.heads:
        return {"model": model.id, "skipped": "the model has no learned heads"}
    truth_of = _head_truth("vehicles")
    with open(root / "meta.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]  # path, split, class (hr), class (en), ...
    tallies = {h.group: Tally(h.classes) for h in model.heads}
    clips = []
    for r in rows:
        if r[1] != "test" or r[3] not in truth_of:
            continue
        x = _read(root / "audio" / r[0]).astype(np.float32)
        got = {e.group: e for e in head_states(model, onto, x, "Vehicle")}
        for g, truth in truth_of[r[3]].items():
            if g not in tallies:
                continue
            e = got.get(g)
            pred = e.name if e is not None and e.p >= min_p else None
            tallies[g].add(truth, pred)
            clips.append({"file": r[0], "class": r[3], "group": g, "truth": truth, "predicted": pred,
                          "p": None if e is None else e.p})  # fmt: skip
    return {"model": model.id, "min_p": min_p, "by_group": {g: t.summary() for g, t in tallies.items()},
            "clips": clips}  # fmt: skip


def _annotated(root: Path, path: Path) -> dict[str, Any]:
    from edge.states import motion_state, speed_state, temporal_state

    fns: dict[str, Callable[[F64, int], Any]] = {
        "speed": speed_state,
        "motion": motion_state,
        "temporal": temporal_state,
    }
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        clips = doc["clips"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a states annotation file ({e})") from None
    tallies = {g: Tally(s) for g, s in GROUP_STATES.items()}
    rows = []
    for i, c in enumerate(clips):
        try:
            f, group, truth = c["file"], c["group"], c["state"]
        except (KeyError, TypeError):
            raise InputError(f"{path}: clips[{i}]: expected file, group, state") from None
        if group not in GROUP_STATES or truth not in GROUP_STATES[group]:
            raise InputError(f"{path}: clips[{i}]: unknown group/state {group!r}/{truth!r}")
        x = _read(root / f)
        if "span_s" in c:
            a, b = c["span_s"]
            x = x[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)]
        pred = _pred(fns[group](x, SAMPLE_RATE))
        tallies[group].add(truth, pred)
        rows.append({"file": f, "group": group, "truth": truth, "predicted": pred})
    correct = sum(r["truth"] == r["predicted"] for r in rows)
    return {
        "accuracy": correct / len(rows) if rows else None,
        "n": len(rows),
        "clips": rows,
        "by_group": {g: t.summary() for g, t in tallies.items() if t.m.sum()},
    }


def _md_table(s: dict[str, Any]) -> list[str]:
    c = s["confusion"]
    lines = ["| truth \\ predicted | " + " | ".join(c["cols_predicted"]) + " | accuracy |",
             "|---|" + "---|" * (len(c["cols_predicted"]) + 1)]  # fmt: skip
    for name, row in zip(c["rows_truth"], c["counts"], strict=True):
        acc = s["per_state"][name]
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + f" | {'-' if acc is None else f'{acc:.1%}'} |")
    return lines


def render(report: dict[str, Any]) -> str:
    out = ["# DSP-derived states: evaluation", "",
           "Written by `tympan evaluate states` (edge/evaluation/states_eval.py); method in its docstring and",
           "docs/ARCHITECTURE.md. Whole clips are analysed (in `listen`, the event's span is).", ""]  # fmt: skip
    sp = report["speed"]
    out += [f"## Speed: {sp['clips']} real engine clips x 5 known speed profiles",
            f"(steady; +/-{', +/-'.join(f'{c:.0%}' for c in report['speed_changes'])} over the clip, exponential "
            "ramps by time-varying resampling)", "",
            f"Accuracy **{sp['accuracy']:.1%}** (n = {sp['n']}); by source set: "
            + ", ".join(f"{k} {v:.1%}" for k, v in sp["by_set"].items()), ""]  # fmt: skip
    out += [*_md_table(sp), ""]
    mo = report["motion"]
    out += [f"## Motion: the same clips driven past at {mo['pass_by']['speed_m_s']} m/s, closest "
            f"{mo['pass_by']['closest_m']} m (Doppler + 1/r)", "",
            f"Accuracy **{mo['accuracy']:.1%}** (n = {mo['n']})", ""]  # fmt: skip
    out += [*_md_table(mo), ""]
    te = report["temporal"]
    out += ["## Temporal: ESC-50 classes (impulsive: " + ", ".join(IMPULSIVE_CLASSES) + "; continuous: "
            + ", ".join(CONTINUOUS_CLASSES) + ")", "",
            f"Accuracy **{te['accuracy']:.1%}** (n = {te['n']})", ""]  # fmt: skip
    out += [*_md_table(te), ""]
    an = report.get("annotated")
    if an:
        out += ["## Real clips annotated by hand (benchmarks/states_annotations.json)", "",
                f"Accuracy **{an['accuracy']:.1%}** (n = {an['n']})", "",
                "| file | group | truth | predicted |", "|---|---|---|---|"]  # fmt: skip
        out += [f"| {r['file']} | {r['group']} | {r['truth']} | {r['predicted'] or NONE} |" for r in an["clips"]]
        out.append("")
    le = report.get("learned")
    if le and "by_group" in le:
        out += ["## Learned traits: the student's heads on the vehicles test split", "",
                f"Model {le['model']}; the device's code (`edge.annotate.head_states`, an event labelled "
                f"\"Vehicle\" over the whole clip); a trait below p {le['min_p']} is not reported "
                f"({NONE}).", ""]  # fmt: skip
        for g, sm in le["by_group"].items():
            out += [f"### {g}: accuracy **{sm['accuracy']:.1%}** (n = {sm['n']})", "", *_md_table(sm), ""]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    if args.max_clips < 1:
        raise InputError(f"--max-clips {args.max_clips}: must be >= 1")
    root = Path(args.data)
    report = evaluate(root, Path(args.annotations) if args.annotations else None, args.max_clips)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(render(report))
    print(render(report))
    return 0
