"""Few-shot enrolment: build, list, export, import, remove; the enrolled class detected in a stream;
malformed enrolment files rejected with clear messages."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.annotate import ENROLLED_ID_BASE, AnnotatedPipeline
from edge.enroll import ENROLLED_MID, EnrolledClassifier, Enrolment, EnrolmentStore, build, embed
from edge.errors import InputError
from edge.inference import Model
from edge.main import main
from edge.messages import Block
from edge.pipeline import EdgePipeline, run

SR = 16000


@pytest.fixture(scope="module")
def model() -> Model:
    return Model()


def warble(seed: int, dur: float = 1.5) -> np.ndarray:
    """A two-tone electronic warble (800/1200 Hz alternating at 8 Hz): the class to enrol."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(dur * SR)) / SR
    f = np.where(np.sin(2 * np.pi * 8.0 * t) > 0, 800.0, 1200.0) * rng.uniform(0.97, 1.03)
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.01 * rng.standard_normal(len(t))
    return x.astype(np.float32)


def rumble(seed: int, dur: float = 1.5) -> np.ndarray:
    """Low-passed noise: something else."""
    rng = np.random.default_rng(seed)
    x = np.convolve(rng.standard_normal(int(dur * SR)), np.ones(64) / 8, mode="same")
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def write(tmp: Path, name: str, x: np.ndarray) -> str:
    p = tmp / name
    sf.write(p, x, SR)
    return str(p)


def test_embedding_tells_the_enrolled_class_from_another(model: Model) -> None:
    en = build(model, "warble", [warble(s) for s in range(5)])
    assert en.prototype.shape == (len(model.labels),) and abs(float(np.linalg.norm(en.prototype)) - 1) < 1e-5
    same = float(embed(model, warble(99)) @ en.prototype)
    other = float(embed(model, rumble(99)) @ en.prototype)
    assert same > en.threshold > other


def test_cli_round_trip_enrol_list_export_remove_import(
    model: Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    files = [write(tmp_path, f"w{i}.wav", warble(i)) for i in range(5)]
    assert main(["enroll", "warble", *files, "--store", store]) == 0
    assert os.path.isfile(os.path.join(store, "warble.json"))
    assert main(["enroll", "warble", *files, "--store", store]) == 1  # exists: refused, not overwritten
    assert "already exists" in capsys.readouterr().err
    assert main(["enroll", "--list", "--json", "--store", store]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == ["warble"] and rows[0]["n_examples"] == 5
    export = str(tmp_path / "export.json")
    assert main(["enroll", "--export", export, "--store", store]) == 0
    assert main(["enroll", "--remove", "warble", "--store", store]) == 0
    assert EnrolmentStore(store).names() == []
    assert main(["enroll", "--remove", "warble", "--store", store]) == 1
    assert "no enrolment 'warble'" in capsys.readouterr().err
    assert main(["enroll", "--import", export, "--store", store]) == 0
    back = EnrolmentStore(store).load("warble")
    assert back.n_examples == 5 and back.model_id == model.id


def test_enrolled_class_appears_in_the_event_stream(model: Model, tmp_path: Path) -> None:
    en = build(model, "warble", [warble(s) for s in range(5)])
    quiet = (0.001 * np.random.default_rng(7).standard_normal(2 * SR)).astype(np.float32)
    scene = np.concatenate([quiet, warble(42, dur=2.0), quiet])
    pipe = AnnotatedPipeline(EdgePipeline(model, None), enrolled=EnrolledClassifier([en], model), states=False)
    blocks = [Block(scene[None, i : i + 1600], i / SR, i // 1600, SR) for i in range(0, len(scene), 1600)]
    events = [e for e in run(blocks, pipe) if e.label == "warble"]  # type: ignore[arg-type]
    assert events, "the enrolled class was not detected"
    on = next(e for e in events if e.phase == "on")
    off = next(e for e in events if e.phase == "off")
    assert on.mid == ENROLLED_MID and on.id >= ENROLLED_ID_BASE and on.code == len(model.labels)
    assert 1.4 <= on.onset <= 2.6 and off.offset is not None and 3.5 <= off.offset <= 4.7  # truth: 2.0-4.0 s
    # and not in a stream without it
    other = np.concatenate([quiet, rumble(5, dur=2.0), quiet])
    pipe2 = AnnotatedPipeline(EdgePipeline(model, None), enrolled=EnrolledClassifier([en], model), states=False)
    blocks2 = [Block(other[None, i : i + 1600], i / SR, i // 1600, SR) for i in range(0, len(other), 1600)]
    assert not [e for e in run(blocks2, pipe2) if e.label == "warble"]  # type: ignore[arg-type]


def _valid(model: Model) -> dict[str, object]:
    proto = np.zeros(len(model.labels), np.float32)
    proto[0] = 1.0
    return Enrolment("warble", proto, 0.6, 5, model.id).to_dict()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("format", "something-else", "key 'format': expected 'tympan-enrolment'"),
        ("version", 9, "key 'version': unsupported 9"),
        ("threshold", 1.5, "key 'threshold': expected a cosine similarity"),
        ("prototype", [1.0, "x"], "key 'prototype': expected a non-empty list of finite numbers"),
        ("prototype", [3.0, 0.0], "key 'prototype': expected a unit vector"),
        ("n_examples", 0, "key 'n_examples': expected a positive integer"),
        ("name", "../evil", "key 'name'"),
        ("model", None, "key 'model'"),
    ],
)
def test_malformed_enrolment_files_are_rejected(
    model: Model, tmp_path: Path, key: str, value: object, message: str
) -> None:
    store = EnrolmentStore(str(tmp_path))
    d = _valid(model)
    d[key] = value
    (tmp_path / "warble.json").write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "warble.json")) + ".*" + re.escape(message)):
        store.load("warble")


def test_bad_stores_exports_and_names_are_rejected(model: Model, tmp_path: Path) -> None:
    store = EnrolmentStore(str(tmp_path))
    (tmp_path / "broken.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(InputError, match=r"broken\.json: not valid JSON"):
        store.load("broken")
    exp = tmp_path / "exp.json"
    exp.write_text(json.dumps({"format": "tympan-enrolments", "version": 1, "enrolments": [_valid(model)] * 2}))
    with pytest.raises(InputError, match="'warble' appears twice"):
        store.import_file(str(exp))
    assert "warble" not in store.names()  # nothing half-imported
    exp.write_text(json.dumps([1, 2]))
    with pytest.raises(InputError, match="key 'format'"):
        store.import_file(str(exp))
    with pytest.raises(InputError, match="enrolment name"):
        build(model, "a/b", [warble(0)])
    with pytest.raises(InputError, match="no example recordings"):
        build(model, "empty", [])
    small = Enrolment("tiny", np.array([1.0], np.float32), 0.6, 1, model.id)
    with pytest.raises(InputError, match="enrol it again with this model"):
        EnrolledClassifier([small], model)


def test_listen_reports_enrolled_classes_from_the_store(
    model: Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = EnrolmentStore(str(tmp_path / "store"))
    store.save(build(model, "warble", [warble(s) for s in range(5)]))
    quiet = (0.001 * np.random.default_rng(8).standard_normal(SR)).astype(np.float32)
    scene = write(tmp_path, "scene.wav", np.concatenate([quiet, warble(77, dur=2.0), quiet]))
    assert main(["listen", "--input", scene, "--json", "--enrolled", store.dir, "--no-states"]) == 0
    toks = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    mine = [t for t in toks if t["lbl"] == "warble"]
    assert {t["ph"] for t in mine} >= {"on", "off"} and all(t["mid"] == ENROLLED_MID for t in mine)
    assert main(["listen", "--input", scene, "--json", "--enrolled", store.dir, "--no-enrolled"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if '"warble"' in line]
    assert main(["listen", "--input", scene, "--enrolled", str(tmp_path / "empty")]) == 1
    assert "no enrolments there" in capsys.readouterr().err


def test_a_name_of_a_model_label_is_refused(model: Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an enrolled "dog" and the model's "Dog" would give events no subscriber can tell apart
    label = model.labels[0].name
    for name in (label, label.upper(), label.lower()):
        pattern = rf"enrol {re.escape(repr(name))}: .*already has the label {re.escape(repr(label))}"
        with pytest.raises(InputError, match=pattern):
            build(model, name, [warble(0)])
    # a store written by hand (or with a model that lacked the label) is refused where it is used
    proto = np.zeros(len(model.labels), np.float32)
    proto[0] = 1.0
    clash = Enrolment(label.lower(), proto, 0.6, 1, model.id)
    with pytest.raises(InputError, match=rf"enrolment {re.escape(repr(label.lower()))} has the name of the label"):
        EnrolledClassifier([clash], model)
    src = write(tmp_path, "w.wav", warble(1))
    assert main(["enroll", "--store", str(tmp_path / "s"), label, src]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tympan: error: ") and "choose another name" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()  # nothing written


def test_unwritable_export_and_os_errors_are_one_line(
    model: Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = EnrolmentStore(str(tmp_path / "store"))
    store.save(build(model, "warble", [warble(s) for s in range(3)]))
    target = tmp_path / "missing" / "exp.json"
    with pytest.raises(InputError, match=re.escape(str(target)) + r": cannot write the export"):
        store.export(str(target))
    assert main(["enroll", "--store", store.dir, "--export", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and str(target) in err and "Traceback" not in err
    # any other file the command cannot use: the CLI names it in one line instead of a traceback
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["enroll", "--store", str(blocker / "sub"), "warble2", write(tmp_path, "w.wav", warble(2))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tympan: error: ") and str(blocker / "sub") in err and "Traceback" not in err


@pytest.mark.parametrize("ratio", [0.3, 1.2])
def test_enrolled_off_ratio_is_checked(ratio: float) -> None:
    from edge.annotate import AnnotateConfig
    from edge.errors import ConfigError

    with pytest.raises(ConfigError, match="enrolled_off_ratio"):
        AnnotateConfig(enrolled_off_ratio=ratio)
