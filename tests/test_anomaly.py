"""The per-device model of normal (edge.anomaly): injected faults score higher than normal audio; stored
models round-trip and malformed ones are rejected naming the file and key; the CLI fits and scores."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.anomaly import JSON_NAME, NPZ_NAME, AnomalyModel, fit
from edge.errors import InputError, ModelError
from edge.evaluation.anomaly_eval import FAULT_FNS, auc
from edge.main import main

SR = 16000


def machine(seed: int, dur: float = 4.0) -> np.ndarray:
    """A running machine: a 50 Hz motor hum with harmonics, a fan's broadband noise, slight drift."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(dur * SR)) / SR
    f0 = 50.0 * (1.0 + 0.002 * rng.standard_normal())
    hum = sum(np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3)) / h for h in range(1, 9))
    noise = np.convolve(rng.standard_normal(len(t)), np.ones(8) / 8, mode="same")
    return (0.05 * hum + 0.05 * noise).astype(np.float64)


@pytest.fixture(scope="module")
def model() -> AnomalyModel:
    return fit([machine(s) for s in range(4)], source="machine")


@pytest.mark.parametrize("fault", sorted(FAULT_FNS))
def test_injected_fault_scores_higher_than_normal(model: AnomalyModel, fault: str) -> None:
    rng = np.random.default_rng(1)
    normal = np.array([model.score(machine(100 + s, 2.0)) for s in range(4)])
    faulty = np.array([model.score(FAULT_FNS[fault](machine(200 + s, 2.0), rng)) for s in range(4)])
    assert auc(normal, faulty) == 1.0
    assert model.state(FAULT_FNS[fault](machine(300, 2.0), rng)).name == "abnormal"


def test_normal_audio_is_normal(model: AnomalyModel) -> None:
    st = model.state(machine(400, 2.0))
    assert st.name == "normal" and st.group == "condition"


def test_save_and_load_round_trip(model: AnomalyModel, tmp_path: Path) -> None:
    model.save(str(tmp_path))
    back = AnomalyModel.load(str(tmp_path))
    x = machine(500, 2.0)
    assert back.source == "machine" and back.score(x) == pytest.approx(model.score(x))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("format", "nope", "key 'format'"),
        ("version", 7, "key 'version': unsupported 7"),
        ("source", "", "key 'source'"),
        ("threshold", "high", "key 'threshold'"),
        ("dim", 3, "key 'dim'"),
    ],
)
def test_malformed_model_is_rejected(
    model: AnomalyModel, tmp_path: Path, key: str, value: object, message: str
) -> None:
    model.save(str(tmp_path))
    meta = json.loads((tmp_path / JSON_NAME).read_text())
    meta[key] = value
    (tmp_path / JSON_NAME).write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=re.escape(str(tmp_path / JSON_NAME)) + ".*" + re.escape(message)):
        AnomalyModel.load(str(tmp_path))


def test_missing_or_corrupt_arrays_are_rejected(model: AnomalyModel, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such anomaly model directory"):
        AnomalyModel.load(str(tmp_path / "none"))
    model.save(str(tmp_path))
    (tmp_path / NPZ_NAME).write_bytes(b"not an npz")
    with pytest.raises(ModelError, match="not a readable anomaly model array file"):
        AnomalyModel.load(str(tmp_path))


def test_too_little_or_bad_normal_audio_is_rejected() -> None:
    with pytest.raises(InputError, match="window"):
        fit([machine(0, 1.0)], source="machine")
    with pytest.raises(InputError, match="too short"):
        fit([machine(0, 0.1)], source="machine")
    with pytest.raises(InputError, match="NaN"):
        fit([np.full(SR * 3, np.nan)], source="machine")
    with pytest.raises(InputError, match="source name"):
        fit([machine(0)], source=" ")


def test_cli_fit_then_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = []
    for s in range(3):
        files.append(str(tmp_path / f"n{s}.wav"))
        sf.write(files[-1], machine(s), SR)
    bad = str(tmp_path / "bad.wav")
    sf.write(bad, FAULT_FNS["rattle"](machine(9, 2.0), np.random.default_rng(0)), SR)
    good = str(tmp_path / "good.wav")
    sf.write(good, machine(10, 2.0), SR)
    out = str(tmp_path / "model")
    assert main(["anomaly", "fit", "--source", "machine", "--out", out, *files]) == 0
    capsys.readouterr()
    assert main(["anomaly", "score", "--model", out, "--json", good, bad]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["state"] for r in rows] == ["normal", "abnormal"]
    assert main(["anomaly", "score", "--model", str(tmp_path / "nothing"), good]) == 1
    assert "no such anomaly model directory" in capsys.readouterr().err


def test_listen_annotation_reports_condition_for_the_models_source_only(model: AnomalyModel) -> None:
    from edge.annotate import AnnotatedPipeline
    from edge.inference import Model
    from edge.messages import Block, Event
    from edge.pipeline import EdgePipeline

    pipe = AnnotatedPipeline(EdgePipeline(Model(), None), anomaly=model, states=False)
    x = FAULT_FNS["rattle"](machine(600, 3.0), np.random.default_rng(2)).astype(np.float32)
    for i in range(0, len(x), 1600):
        pipe.process(Block(x[None, i : i + 1600], i / SR, i // 1600, SR))
    ev = Event(id=0, phase="off", label="Air conditioning", mid="/m/025wky1", code=99, p=0.9, onset=0.0,
               offset=3.0, emitted=3.0, seq=0, level_dbfs=-20.0)  # fmt: skip
    states = {s.group: s.name for s in pipe.annotate(ev).states}
    assert states["condition"] == "abnormal"  # "Air conditioning" belongs to source "machine"
    speech = {s.group for s in pipe.annotate(dataclasses.replace(ev, label="Speech")).states}
    assert "condition" not in speech
