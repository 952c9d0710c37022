"""Model directory + known clip -> pass/fail: the check a device runs on a new model before using it.

The default clip is the bundled sample scene (`edge/data/sample_scene.flac`) with its truth
(`sample_scene.json`): each true event's interval is cut from the scene and tagged, and one of the
AudioSet labels its ESC-50 class stands for must be among the model's top `TOP_K` clip scores
(`Model.tag`) with its peak score (`Model.peak`, the scale the thresholds are calibrated on) at or
above that label's threshold. A bundle may carry its own clip and labels instead (the whole clip is
tagged, the same rule applies). A model that does not load, whose labels are shuffled, or that hears
something else fails.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from edge.errors import TympanError

TOP_K = 5
# The sample scene's ESC-50 classes -> the AudioSet labels that count as hearing them.
SAMPLE_SCENE_LABELS: dict[str, tuple[str, ...]] = {
    "dog": ("Dog", "Bark"),
    "rooster": ("Chicken, rooster", "Crowing, cock-a-doodle-doo"),
    "crying_baby": ("Baby cry, infant cry", "Crying, sobbing"),
}


@dataclass(frozen=True)
class SelfTestResult:
    passed: bool
    detail: str  # one line: what was checked, or what failed


@dataclass(frozen=True)
class _Case:
    name: str
    start_s: float
    end_s: float | None
    labels: tuple[str, ...]


def _sample_cases() -> tuple[str, list[_Case]]:
    data = resources.files("edge").joinpath("data")
    truth = json.loads(data.joinpath("sample_scene.json").read_text(encoding="utf-8"))
    cases = [
        _Case(ev["label"], float(ev["onset"]), float(ev["offset"]), SAMPLE_SCENE_LABELS[ev["label"]])
        for ev in truth["events"]
        if ev["label"] in SAMPLE_SCENE_LABELS
    ]
    return str(data.joinpath("sample_scene.flac")), cases


def run_selftest(
    model_dir: str, clip: str | None = None, labels: Sequence[str] = (), runtime: str = "auto"
) -> SelfTestResult:
    """Load the model in `model_dir` and check it hears what the clip holds (see the module docstring)."""
    from edge.dsp.frontend import logmel
    from edge.inference import Model
    from edge.sources import read_audio

    try:
        model = Model(model_dir, runtime=runtime)
    except TympanError as e:
        return SelfTestResult(False, f"model does not load: {e}")
    if clip is None:
        path, cases = _sample_cases()
    else:
        path, cases = clip, [_Case("clip", 0.0, None, tuple(labels))]
    try:
        x = read_audio(path)
    except TympanError as e:
        return SelfTestResult(False, f"self-test clip unreadable: {e}")
    sr = model.frontend.sample_rate
    names = model.label_names
    done = []
    for c in cases:
        seg = x[:, int(c.start_s * sr) : None if c.end_s is None else int(c.end_s * sr)]
        scores, peak = model.tag_and_peak(logmel(seg, model.frontend))
        top = [int(i) for i in np.argsort(-scores)[:TOP_K]]
        hit = [i for i in top if names[i] in c.labels and peak[i] >= model.thresholds[i]]
        if not hit:
            heard = ", ".join(f"{names[i]} {scores[i]:.2f}" for i in top)
            return SelfTestResult(
                False, f"model {model.id}: {c.name} not detected (want one of {', '.join(c.labels)}; top: {heard})"
            )
        done.append(f"{c.name}: {names[hit[0]]} {scores[hit[0]]:.2f}")
    return SelfTestResult(True, f"model {model.id}: " + "; ".join(done))
