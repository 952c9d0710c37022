"""The quantize pipeline's mechanics on tiny generated data with a tiny generated teacher, the inputs
it must reject, and the shipped default model's consistency."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from edge.dsp.frontend import logmel
from edge.errors import ConfigError, InputError, ModelError
from quantize.audio import read_audio, window_samples
from quantize.config import PipelineConfig, from_dict, load_config
from quantize.export import check_model_dir
from quantize.infer import OnnxRunner, TfliteRunner, linear_softmax_np
from quantize.labels import load_dataset_mapping, load_labels
from quantize.pipeline import DEFAULT_MODEL_DIR
from quantize.teacher import OnnxTeacher, TeacherCache, load_teacher

SR = 16000
N_TEACHER = 521
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the checkout


# --- fixtures: a tiny teacher, class map, labels and a tiny dataset tree -----------------------


def make_teacher_onnx(path: Path, frames: int = 96, mels: int = 64, seed: int = 0, sigmoid_out: bool = False) -> Path:
    """uint8 log-mel [1, 1, frames, mels] -> dequantise -> mean over time -> linear -> logits [1, 521]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((mels, N_TEACHER)) * 0.5).astype(np.float32)
    b = (rng.standard_normal(N_TEACHER) - 2.0).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array(0.0479, np.float32), "audio_scale"),
        numpy_helper.from_array(np.array(144, np.uint8), "audio_zero_point"),
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(b, "B"),
        numpy_helper.from_array(np.array([1, mels], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["audio", "audio_scale", "audio_zero_point"], ["x"]),
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2], keepdims=0),
        helper.make_node("Reshape", ["m", "shape"], ["r"]),
        helper.make_node("MatMul", ["r", "W"], ["z"]),
        helper.make_node("Add", ["z", "B"], ["y" if sigmoid_out else "class_scores"]),
    ]
    if sigmoid_out:
        nodes.append(helper.make_node("Sigmoid", ["y"], ["class_scores"]))
    graph = helper.make_graph(
        nodes,
        "tiny_teacher",
        [helper.make_tensor_value_info("audio", TensorProto.UINT8, [1, 1, frames, mels])],
        [helper.make_tensor_value_info("class_scores", TensorProto.FLOAT, [1, N_TEACHER])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def tone(freq: float, seconds: float, rng: np.random.Generator, burst: bool = True) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    if burst:
        env = np.zeros_like(t)
        on = rng.integers(0, max(1, t.size - SR // 2))
        env[on : on + SR // 2] = 1.0
        x = x * env
    return x.astype(np.float32)


@pytest.fixture()
def tiny_world(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    class_map = write_csv(
        tmp_path / "class_map.csv",
        ["index", "mid", "display_name"],
        [[i, f"/m/t{i}", f"Class {i}"] for i in range(N_TEACHER)],
    )
    labels = write_csv(
        tmp_path / "labels.csv",
        ["index", "mid", "display_name"],
        [[i, f"/m/t{i}", f"Class {i}"] for i in range(6)],
    )
    mapping = write_csv(
        tmp_path / "mapping.csv",
        ["dataset", "label", "mid", "display_name"],
        [
            ["esc50", "low", "/m/t0", "Class 0"],
            ["esc50", "high", "/m/t1", "Class 1"],
            ["urbansound8k", "low", "/m/t0", "Class 0"],
            ["urbansound8k", "high", "/m/t1", "Class 1"],
        ],
    )
    root = tmp_path / "data"
    (root / "esc50" / "audio").mkdir(parents=True)
    (root / "urbansound8k_fold3" / "audio").mkdir(parents=True)
    (root / "backgrounds" / "audio").mkdir(parents=True)
    esc_rows, us_rows, bg_rows = [], [], []
    for i in range(6):
        lab, f = ("low", 300.0) if i % 2 == 0 else ("high", 3000.0)
        name = f"{i % 5 + 1}-{i}-A-{i % 2}.flac"
        sf.write(root / "esc50" / "audio" / name, tone(f, 2.0, rng), SR)
        esc_rows.append([name, i % 5 + 1, i % 2, lab, False, i, "A", 2 * SR])
        us_name = f"{100 + i}-0-0-0.flac"
        sf.write(root / "urbansound8k_fold3" / "audio" / us_name, tone(f, 1.5, rng), SR)
        us_rows.append([us_name, 100 + i, 0.0, 1.5, 1, 3, i % 2, lab, SR, int(1.5 * SR)])
    for i in range(3):
        sf.write(
            root / "backgrounds" / "audio" / f"bg{i}.flac",
            (0.01 * rng.standard_normal(SR)).astype(np.float32),
            SR,
        )
        bg_rows.append([f"noise/bg{i}.flac", "noise", "white", SR])  # flat file, meta with a folder
    write_csv(
        root / "esc50" / "esc50_meta.csv",
        ["filename", "fold", "target", "category", "esc10", "src_file", "take", "n_samples"],
        esc_rows,
    )
    write_csv(
        root / "urbansound8k_fold3" / "meta.csv",
        ["path", "fsID", "start", "end", "salience", "fold", "classID", "class", "orig_sr", "n_samples_16k"],
        us_rows,
    )
    write_csv(root / "backgrounds" / "meta.csv", ["path", "label", "detail", "n_samples"], bg_rows)
    teacher = make_teacher_onnx(tmp_path / "teacher.onnx")
    return {
        "root": root,
        "class_map": class_map,
        "labels": labels,
        "mapping": mapping,
        "teacher": teacher,
        "tmp": tmp_path,
    }


def tiny_config(w: dict[str, Path]) -> PipelineConfig:
    return from_dict(
        PipelineConfig,
        {
            "model_id": "tiny",
            "paths": {
                "data_root": str(w["root"]),
                "teacher": str(w["teacher"]),
                "teacher_class_map": str(w["class_map"]),
                "labels": str(w["labels"]),
                "dataset_mapping": str(w["mapping"]),
                "cache_dir": str(w["tmp"] / "cache"),
            },
            "transfer": {
                "datasets": ["esc50", "urbansound8k"],
                "us8k_val_fraction": 0.5,
                "us8k_folds": 0,
                "windows_per_second": 2.0,
                "dataset_window_scale": {},
            },
            "student": {"channels": [8, 8, 8], "dropout": 0.0},
            "distill": {"epochs": 2, "batch_size": 8, "threads": 1, "ema_decay": 0.0},
            "quant": {"calibration_windows": 16},
            "eval": {"latency_repeats": 2},
        },
    )


# --- the teacher ----------------------------------------------------------------------------


def test_tiny_teacher_logits_match_a_numpy_reference(tiny_world: dict[str, Path]) -> None:
    """The ONNX teacher quantises the shared log-mel with the graph's own scale / zero point."""
    import onnx
    from onnx import numpy_helper

    t = OnnxTeacher(tiny_world["teacher"], 96)
    x = tone(440.0, 1.0, np.random.default_rng(1), burst=False)[: window_samples(96)]
    got = t.logits(x[None])[0]
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tiny_world["teacher"])).graph.initializer}
    q = np.clip(np.round(logmel(x) / 0.0479 + 144), 0, 255)
    ref = ((q - 144) * np.float32(0.0479)).mean(axis=0) @ inits["W"] + inits["B"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_teacher_ending_in_sigmoid_is_turned_into_logits(tiny_world: dict[str, Path]) -> None:
    """The same graph with a final sigmoid yields the same logits (probabilities are detected)."""
    x = tone(440.0, 1.0, np.random.default_rng(1), burst=False)[None, : window_samples(96)]
    plain = OnnxTeacher(tiny_world["teacher"], 96).logits(x)
    with_sigmoid = OnnxTeacher(make_teacher_onnx(tiny_world["tmp"] / "sig.onnx", sigmoid_out=True), 96).logits(x)
    np.testing.assert_allclose(with_sigmoid, np.clip(plain, -13.8, 13.8), rtol=0.01, atol=2e-3)


def test_teacher_cache_reuses_logits(tiny_world: dict[str, Path]) -> None:
    t = load_teacher(tiny_world["teacher"], tiny_world["tmp"] / "c", 96)
    cache = TeacherCache(t, tiny_world["tmp"] / "c")
    wav = next((tiny_world["root"] / "esc50" / "audio").glob("*.flac"))
    starts = np.array([0, 4800, -1600], np.int64)
    a = cache.logits(wav, starts)
    b = cache.logits(wav, starts[::-1])
    np.testing.assert_array_equal(a[::-1], b)
    assert (cache.misses, cache.hits) == (3, 3)


def test_clip_scores_are_means_over_the_frames_covering_the_clip(tiny_world: dict[str, Path]) -> None:
    """A student's clip score is the mean over the output frames that start inside the clip (the
    silence padding the last window is not counted); its peak score is the linear-softmax over all
    frames; the teacher's clip score is the mean over its patches and its peak the max."""
    from quantize.evaluate import score_clips
    from quantize.transfer import Clip

    t = load_teacher(tiny_world["teacher"], tiny_world["tmp"] / "c", 96)
    cache = TeacherCache(t, tiny_world["tmp"] / "c")
    wav = tiny_world["tmp"] / "short.flac"
    sf.write(wav, tone(300.0, 1.3, np.random.default_rng(3), burst=False), SR)  # 128 frames: 2 windows
    floor = float(np.log(1e-3))

    def padding_detector(w: np.ndarray) -> np.ndarray:  # 1 where an output frame sees only padding
        blocks = w.reshape(w.shape[0], 24, 4, w.shape[2])
        pad = (blocks <= floor + 1e-3).all(axis=(2, 3)).astype(np.float32)
        return np.repeat(pad[..., None], 2, axis=2)  # [N, 24, K=2]

    cs = score_clips(
        [Clip(wav, "esc50", "low", "val")], cache, np.array([0, 1]), {}, 2, {"pad": padding_detector}, 96, 48
    )
    frames = cs.frames["pad"][0]
    assert frames.shape == (48, 2) and frames.sum() > 0  # the second window runs past the clip
    np.testing.assert_array_equal(cs.scores["pad"][0], 0.0)
    np.testing.assert_allclose(cs.peak["pad"][0], linear_softmax_np(frames, 0))
    assert cs.peak["pad"][0][0] > 0.5
    assert np.all(cs.scores["teacher"][0] <= cs.peak["teacher"][0] + 1e-7)


def test_teacher_with_other_input_shape_is_refused(tmp_path: Path) -> None:
    bad = make_teacher_onnx(tmp_path / "t50.onnx", frames=50)
    with pytest.raises(ModelError, match=r"does not match Tympan's frontend"):
        load_teacher(bad, tmp_path, 96)


def test_teacher_unknown_format_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "t.pb").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown teacher format"):
        load_teacher(tmp_path / "t.pb", tmp_path, 96)
    with pytest.raises(ModelError, match="not found"):
        load_teacher(tmp_path / "none.onnx", tmp_path, 96)


# --- inputs that must be rejected ---------------------------------------------------------------


def test_label_file_missing_column(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "l.csv", ["index", "display_name"], [[0, "Dog"]])
    with pytest.raises(ConfigError, match=r"l\.csv: line 1: missing column\(s\) \['mid'\]"):
        load_labels(p)


def test_label_file_unknown_mid(tiny_world: dict[str, Path]) -> None:
    teacher_map = load_labels(tiny_world["class_map"])
    p = write_csv(
        tiny_world["tmp"] / "l.csv",
        ["index", "mid", "display_name"],
        [[0, "/m/t0", "Class 0"], [1, "/m/nope", "Nope"]],
    )
    with pytest.raises(ConfigError, match=r"l\.csv: line 3: MID '/m/nope' \('Nope'\) is not a teacher class"):
        load_labels(p, teacher_map)


def test_label_file_bad_index_and_duplicate(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "l.csv", ["index", "mid", "display_name"], [[0, "/m/a", "A"], [2, "/m/b", "B"]])
    with pytest.raises(ConfigError, match="line 3: index '2', expected 1"):
        load_labels(p)
    p = write_csv(tmp_path / "d.csv", ["index", "mid", "display_name"], [[0, "/m/a", "A"], [1, "/m/a", "B"]])
    with pytest.raises(ConfigError, match="duplicate MID"):
        load_labels(p)


def test_mapping_to_class_outside_label_set(tiny_world: dict[str, Path]) -> None:
    labels = load_labels(tiny_world["labels"])
    p = write_csv(
        tiny_world["tmp"] / "m.csv",
        ["dataset", "label", "mid", "display_name"],
        [["esc50", "dog", "/m/t99", "Class 99"]],
    )
    with pytest.raises(ConfigError, match="line 2: MID '/m/t99'"):
        load_dataset_mapping(p, labels)


def test_unreadable_audio(tmp_path: Path) -> None:
    p = tmp_path / "x.flac"
    p.write_text("not audio")
    with pytest.raises(InputError, match=r"x\.flac: not an audio file"):
        read_audio(p)


def test_any_rate_and_channel_count_is_read_as_16k_mono(tmp_path: Path) -> None:
    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    sf.write(tmp_path / "y.wav", stereo.astype(np.float32), 8000)
    x = read_audio(tmp_path / "y.wav")
    assert x.dtype == np.float32 and x.shape == (16000,)
    assert np.argmax(np.abs(np.fft.rfft(x))) == 440  # 1 Hz bins over 1 s


def test_config_rejects_unknown_keys_and_bounds(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"distill": {"epoch": 3}}))
    with pytest.raises(ConfigError, match=r"distill: unknown key\(s\) \['epoch'\]"):
        load_config(p)
    p.write_text(json.dumps({"distill": {"alpha": 1.5}}))
    with pytest.raises(ConfigError, match=r"distill\.alpha: 1\.5 is above the maximum 1\.0"):
        load_config(p)
    p.write_text(json.dumps({"distill": {"epochs": "3"}}))
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(p)
    # a (low, high) range given high first is refused by name, not left to the sampler's own error
    p.write_text(json.dumps({"transfer": {"snr_db": [30, 0]}}))
    with pytest.raises(ConfigError, match=r"transfer\.snr_db: \[30, 0\] is not a range"):
        load_config(p)
    p.write_text(json.dumps({"transfer": {"gain_db": [-3.0, -3.0]}}))  # one value: a range of width 0
    assert load_config(p).transfer.gain_db == (-3.0, -3.0)


def test_packaged_config_and_labels_load() -> None:
    cfg = load_config(Path(__file__).resolve().parent.parent / "quantize" / "configs" / "default.json")
    assert cfg == PipelineConfig()  # the file states the defaults; they are written once, in config.py
    from quantize.labels import packaged_data

    labels = load_labels(packaged_data("labels_default.csv"))
    assert 100 <= len(labels) <= 130
    mapping = load_dataset_mapping(packaged_data("dataset_to_audioset.csv"), labels)
    assert labels.mids[mapping[("esc50", "dog")][0]] == "/m/0bt9lr"


def test_cli_module_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, quantize.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


# --- the pipeline end to end ----------------------------------------------------------------


@pytest.mark.quantize
def test_pipeline_end_to_end_on_tiny_data(tiny_world: dict[str, Path]) -> None:
    """Teacher -> transfer set -> student -> int8 tflite + onnx -> report -> model dir; the int8
    models agree with the fp32 student."""
    pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    import torch

    from quantize.pipeline import run
    from quantize.student import Student

    heads_csv = write_csv(
        tiny_world["tmp"] / "heads.csv",
        ["group", "class", "dataset", "label"],
        [["fuel", "petrol", ds, "low"] for ds in ("esc50", "urbansound8k")]
        + [["fuel", "diesel", ds, "high"] for ds in ("esc50", "urbansound8k")],
    )
    cfg = tiny_config(tiny_world)
    cfg = dataclasses.replace(cfg, heads=dataclasses.replace(cfg.heads, file=str(heads_csv), augment=1))
    out = tiny_world["tmp"] / "run"
    model_dir = run(cfg, out, seed=0, command="pytest", install_default=False)

    meta = check_model_dir(model_dir)
    assert meta["num_classes"] == 6 and meta["window_frames"] == 96 and meta["output_hop_frames"] == 4
    assert set(meta["thresholds"]["per_class"]) == {f"Class {i}" for i in range(6)}
    for name, r in meta["thresholds"]["raised_by_conditions"].items():  # quantize.conditions
        assert meta["thresholds"]["per_class"][name] == r["to"] > r["from"] and r["to"] >= r["peak"]
    # every latency mode's floors are kept; the default mode's are the thresholds' lower bound, another
    # mode's raised classes are those its floors put above them
    th = meta["thresholds"]
    floors = th["floors"]
    assert set(floors) == {"balanced", "low"} and set(floors["low"]) == set(th["per_class"])
    for name, thr in th["per_class"].items():
        assert thr >= floors["balanced"][name] - 1e-9
        assert (name in th["raised_in_modes"]["low"]) == (floors["low"][name] > thr + 1e-9)
    from edge.inference import Model

    tiny = Model(str(model_dir))
    assert np.array_equal(tiny.thresholds_for("low"), np.maximum(tiny.thresholds, tiny.floors_for("low")))
    want = np.array([floors["balanced"][lb.name] for lb in tiny.labels], np.float32)
    assert np.array_equal(tiny.floors_for("balanced"), want)
    report = (out / "report.md").read_text()
    assert report.count("student_int8_tflite") >= 2
    for section in ("## Targets", "## Per-class change caused by quantisation", "## Classes the transfer data"):
        assert section in report
    for png in ("accuracy.png", "latency.png", "quantisation_ap_scatter.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in report
    assert not list(model_dir.glob("*.png"))  # plots stay in the run directory
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "non-commercial" in card and "\n## Targets" not in card and "\n### Targets" in card
    assert "- Condition floors (`quantize.conditions`)" in card
    assert "](accuracy.png)" not in card  # the card names the plots but does not link files it lacks
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["teacher"]["macs"] == 64 * N_TEACHER  # the tiny teacher: one [1,64]x[64,521] MatMul
    assert metrics["models"]["teacher"]["params"] == 64 * N_TEACHER  # W; its bias feeds an Add, not a MAC op
    assert {r["status"] for r in metrics["targets"]} <= {"PASS", "FAIL", "n/a"}
    # per-recording counts (for `quantize cv`) stay in the run's metrics.json, not in the shipped model.json
    models = ("teacher", "student_fp32", "student_int8_tflite", "student_int8_onnx")
    assert all("correct_per_recording" in v[m] for v in metrics["validation"].values() for m in models)
    assert "correct_per_recording" not in json.dumps(meta["metrics"]["validation"])

    student = Student(cfg.student, 6, 64, 4)
    student.load_state_dict(torch.load(out / "student_fp32.pt"))
    student.eval()
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 96, 64)) * 1.5 - 4.0).astype(np.float32)
    with torch.no_grad():
        ref = student(torch.from_numpy(x)).numpy()
    for runner in (TfliteRunner(model_dir / "model_int8.tflite"), OnnxRunner(model_dir / "model_int8.onnx")):
        got = runner(x)
        assert got.shape == (4, 24, 6 + 2)  # the event classes, then the fuel head's petrol, diesel
        assert np.max(np.abs(got[..., :6] - ref)) < 0.1, type(runner).__name__

    # the learned head: a 300 Hz tone clip is "petrol", a 3 kHz one "diesel" in the tiny world
    heads = json.loads((out / "heads.json").read_text())
    # tiny labels ("Class 0") belong to no ontology source: the head applies to any source it fits
    assert heads["heads"] == [{"group": "fuel", "classes": ["petrol", "diesel"], "sources": []}]
    fuel = heads["validation"]["student_int8_tflite"]["fuel"]
    assert fuel["clips"] >= 2 and fuel["accuracy"] == 1.0, fuel
    # the heads are a separate branch joined after the sigmoid: the int8 event columns do not move at all
    assert heads["event_columns_vs_without_heads"]["max_abs_prob_diff"] == 0.0
    assert meta["heads"] == heads["heads"] and "## Learned state/trait heads" in report
    from edge.inference import Model

    edge_model = Model(str(model_dir))
    assert [h.columns for h in edge_model.heads] == [(6, 7)] and edge_model.n_outputs == 8
    # the streaming model: a shorter window whose newest outputs are the full window's, bit for bit
    ws = meta["stream"]["window_frames"]
    assert edge_model.stream_window_for(12) == ws < 96 and (model_dir / meta["files"]["tflite_stream"]).is_file()
    for xi in x:
        assert np.array_equal(edge_model.predict_stream(xi[-ws:])[-3:], edge_model.predict(xi)[-3:])
    assert Model(str(model_dir), stream=False).stream_window_for(12) is None
    assert Model(str(model_dir), runtime="onnxruntime").stream_window_for(12) is None  # LiteRT only
    assert edge_model.predict(x[0]).shape == (24, 6) and edge_model.predict_all(x[0]).shape == (24, 8)
    bad = json.loads((model_dir / "model.json").read_text())
    good_stream = dict(bad["stream"])
    for stream_value, msg in (
        ({"window_frames": 200, "newest_frames": 12}, "need multiples"),
        ({"window_frames": 48}, "malformed 'stream'"),
    ):
        bad["stream"] = stream_value
        (model_dir / "model.json").write_text(json.dumps(bad))
        with pytest.raises(ModelError, match=msg):
            Model(str(model_dir))
    bad["stream"] = good_stream
    for heads_value, msg in (
        ({"group": "fuel"}, "must be a list"),
        ([{"group": "fuel", "classes": ["petrol"]}], "at least two"),
        ([{"group": "fuel", "classes": ["petrol", "diesel", "lpg"]}], "output shape"),
    ):
        bad["heads"] = heads_value
        (model_dir / "model.json").write_text(json.dumps(bad))
        with pytest.raises(ModelError, match=msg):
            Model(str(model_dir))
    # the rerun finds every teacher window in the cache
    from quantize.pipeline import setup, transfer_sets

    s = setup(cfg)
    transfer_sets(s, 0)
    assert s.cache.misses == 0


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["fuel", "petrol", "vehicles", "petrol_car"]], "has one class"),
        ([["fuel", "petrol", "vehicles", "a"], ["fuel", "turbo", "vehicles", "b"]], "neither a state nor a trait"),
        ([["fuel", "petrol", "vehicles", "a"], ["fuel", "heavy", "vehicles", "b"]], "belongs to group 'weight'"),
        ([["fuel", "petrol", "vehicles", "a"], ["fuel", "diesel", "vehicles", "a"]], "another class of group"),
        ([["colour", "red", "vehicles", "a"], ["colour", "blue", "vehicles", "b"]], "unknown ontology group"),
        ([["fuel", "petrol", "", "a"], ["fuel", "diesel", "vehicles", "b"]], "needs a value"),
    ],
)
def test_head_file_is_validated_against_the_ontology(tmp_path: Path, rows: list[list[object]], message: str) -> None:
    from quantize.heads import load_head_spec

    f = write_csv(tmp_path / "heads.csv", ["group", "class", "dataset", "label"], rows)
    with pytest.raises(InputError, match=message):
        load_head_spec(f)
    g = write_csv(tmp_path / "cols.csv", ["group", "trait", "dataset", "label"], rows)
    with pytest.raises(InputError, match="expected the columns"):
        load_head_spec(g)


def test_dataset_window_scale_and_label_weight_are_checked(tmp_path: Path) -> None:
    base = json.loads(Path("quantize/configs/default.json").read_text())
    for scale, message in (
        ({"audioset": 2.0}, "not in transfer.datasets"),
        ({"vehicles": 0.0}, "below the minimum"),
        ({"vehicles": "x"}, "expected a number"),
        ([2.0], "expected an object"),
    ):
        base["transfer"]["dataset_window_scale"] = scale
        f = tmp_path / "c.json"
        f.write_text(json.dumps(base))
        with pytest.raises(ConfigError, match=message):
            load_config(f)
    base["transfer"]["dataset_window_scale"] = {"vehicles": 4.0}
    f.write_text(json.dumps(base))
    assert load_config(f).transfer.dataset_window_scale == {"vehicles": 4.0}
    for weight, message in (
        ({"audioset": 0.5}, "not in transfer.datasets"),
        ({"urbansound8k": 1.5}, "above the maximum"),
        ({"urbansound8k": -0.1}, "below the minimum"),
    ):
        base["transfer"]["dataset_label_weight"] = weight
        f.write_text(json.dumps(base))
        with pytest.raises(ConfigError, match=message):
            load_config(f)


def test_heads_need_a_run_directory(tmp_path: Path) -> None:
    from quantize.heads import train_heads

    with pytest.raises(ModelError, match="not a run directory"):
        train_heads(tmp_path / "nowhere")


def test_packaged_head_file_names_vehicle_traits() -> None:
    from quantize.heads import load_head_spec

    spec = load_head_spec()
    assert dict(spec.groups) == {"fuel": ("petrol", "diesel"), "weight": ("heavy", "light")}
    assert spec.examples[("vehicles", "diesel_car")] == (("fuel", "diesel"), ("weight", "light"))


def test_quantisation_aware_finetuning_is_measured_and_consistent(tiny_world: dict[str, Path]) -> None:
    """Forced QAT: the run records what PTQ cost and what QAT gave; whichever int8 files are kept agree
    with the fp32 student the evaluation loads as their reference."""
    pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    import dataclasses

    import torch

    from quantize.pipeline import STUDENT_QAT_PT, load_student, train_and_quantize

    base = tiny_config(tiny_world)
    cfg = dataclasses.replace(base, quant=dataclasses.replace(base.quant, qat_epochs=1, qat_when_drop_points=-1.0))
    out = tiny_world["tmp"] / "qat-run"
    train_and_quantize(cfg, out, seed=0, command="pytest")
    qat = json.loads((out / "run.json").read_text())["training"]["qat"]
    assert qat["epochs"] == 1 and len(qat["loss_history"]) == 1
    for key in ("fp32_window_accuracy", "ptq_int8_tflite_window_accuracy", "qat_int8_tflite_window_accuracy"):
        assert 0.0 <= qat[key] <= 1.0
    assert qat["used"] == (qat["qat_int8_tflite_window_accuracy"] > qat["ptq_int8_tflite_window_accuracy"])
    assert (out / STUDENT_QAT_PT).exists() == qat["used"]
    assert not (out / "qat").exists() or not qat["used"]
    reference = load_student(cfg, out, 6)
    x = (np.random.default_rng(4).standard_normal((3, 96, 64)) * 1.5 - 4.0).astype(np.float32)
    with torch.no_grad():
        ref = reference(torch.from_numpy(x)).numpy()
    for runner in (TfliteRunner(out / "model_int8.tflite"), OnnxRunner(out / "model_int8.onnx")):
        assert np.max(np.abs(runner(x) - ref)) < 0.1, type(runner).__name__


def test_fake_quantisation_rounds_weights_and_keeps_float_weights_after() -> None:
    """While fine-tuning, conv weights take at most 255 int8 levels per output channel and gradients
    pass straight through; afterwards the module holds plain float weights again."""
    torch = pytest.importorskip("torch")
    from quantize.config import StudentConfig
    from quantize.qat import FakeQuantised
    from quantize.student import Student

    model = Student(StudentConfig(arch="dsconv", channels=[8, 8, 16]), 5, 64, 4)
    model.eval()
    model.fold_batchnorm()
    keys = set(model.state_dict())
    fq = FakeQuantised(model)
    x = torch.randn(2, 96, 64) - 4.0
    with torch.no_grad():
        model(x)
    fq.start()
    conv = fq.convs[1]
    w = conv.weight
    for row in w.detach().reshape(w.shape[0], -1):
        levels = torch.round(row / (row.abs().max() / 127.0))
        assert torch.allclose(row, levels * (row.abs().max() / 127.0), atol=1e-6)
        assert levels.abs().max() <= 127
    model(x).sum().backward()
    assert conv.parametrizations.weight.original.grad is not None
    assert float(conv.parametrizations.weight.original.grad.abs().sum()) > 0
    fq.remove()
    assert set(model.state_dict()) == keys
    assert not any(hasattr(c, "parametrizations") for c in fq.convs)


# --- the shipped model ------------------------------------------------------------------------


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").exists(), reason="no model installed in edge/models/default")
def test_shipped_default_model_is_consistent() -> None:
    meta = check_model_dir(DEFAULT_MODEL_DIR)
    labels = load_labels(DEFAULT_MODEL_DIR / "labels.csv")
    assert meta["num_classes"] == len(labels) >= 100
    assert meta["format_version"] == 1 and meta["pooling"] == "mean"
    assert set(meta["thresholds"]["per_class"]) == set(labels.names)
    x = np.full((1, meta["window_frames"], meta["frontend"]["n_mels"]), np.log(1e-3), np.float32)
    for runner in (
        TfliteRunner(DEFAULT_MODEL_DIR / "model_int8.tflite"),
        OnnxRunner(DEFAULT_MODEL_DIR / "model_int8.onnx"),
    ):
        y = runner(x)
        n_heads = sum(len(h["classes"]) for h in meta.get("heads", []))  # learned heads follow the labels
        assert y.shape == (1, meta["window_frames"] // meta["output_hop_frames"], len(labels) + n_heads)
        assert np.all((y >= 0) & (y <= 1))


@pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / "model.json").exists()
    or not (SHARED_DATA / "esc50").is_dir()
    or os.environ.get("TYMPAN_SKIP_SHARED_DATA") == "1",
    reason="needs the installed model and the shared ESC-50 data",
)
def test_shipped_model_ranks_dog_high_on_validation_dog_clips() -> None:
    """Real-data check on ESC-50 fold 5 (validation) dog clips: Dog or Bark in the top 5."""
    from quantize.transfer import clip_windows, windows_logmel

    labels = load_labels(DEFAULT_MODEL_DIR / "labels.csv")
    dog = {labels.mids.index("/m/0bt9lr"), labels.mids.index("/m/05tny_")}
    runner = TfliteRunner(DEFAULT_MODEL_DIR / "model_int8.tflite")
    with (SHARED_DATA / "esc50" / "esc50_meta.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["category"] == "dog" and r["fold"] == "5"][:5]
    hits = 0
    for r in rows:
        x = read_audio(SHARED_DATA / "esc50" / "audio" / r["filename"])
        w = windows_logmel(x, clip_windows(x, 96, 96), 96)
        score = linear_softmax_np(runner(w)[..., : len(labels)].reshape(-1, len(labels)), 0)  # heads follow
        hits += bool(dog & set(np.argsort(-score)[:5].tolist()))
    assert hits >= 3, f"dog in the top 5 for only {hits} of {len(rows)} fold-5 dog clips"


def _tiny_yamnet_tflite(path: Path, frames: int) -> Path:
    """A float TFLite with YAMNet's hub I/O: waveform [15600] -> scores [1, 521] (sigmoid),
    embeddings [1, 1024], log-mel [frames, 64]."""
    import litert_torch
    import torch

    from quantize.export import quiet

    class TinyYamnet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(64, N_TEACHER)
            self.emb = torch.nn.Linear(64, 1024)

        def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            spec = wave[: frames * 64].reshape(frames, 64) * 10.0
            m = spec.mean(0, keepdim=True)
            return torch.sigmoid(self.fc(m)), self.emb(m), spec

    torch.manual_seed(0)
    with quiet():
        litert_torch.convert(TinyYamnet().eval(), (torch.zeros(window_samples(96)),)).export(str(path))
    return path


@pytest.mark.quantize
def test_tflite_teacher_gives_logits_and_checks_its_frontend(tmp_path: Path) -> None:
    pytest.importorskip("litert_torch")
    from quantize.teacher import TfliteTeacher, probs_to_logits, sigmoid

    t = load_teacher(_tiny_yamnet_tflite(tmp_path / "yamnet.tflite", 96), tmp_path, 96)
    assert isinstance(t, TfliteTeacher) and t.n_classes == N_TEACHER
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((2, window_samples(96)))).astype(np.float32)
    z = t.logits(x)
    assert z.shape == (2, N_TEACHER) and np.all(np.isfinite(z))
    np.testing.assert_allclose(probs_to_logits(sigmoid(z)), z, atol=1e-3)
    with pytest.raises(ModelError, match="teacher frontend gives 50 frames"):
        load_teacher(_tiny_yamnet_tflite(tmp_path / "bad.tflite", 50), tmp_path, 96)


# --- stage invariants ---------------------------------------------------------------------------


def test_mix_puts_the_event_at_the_requested_snr() -> None:
    from edge.dsp.frontend import DEFAULT_FRONTEND
    from quantize.transfer import _mix

    rng = np.random.default_rng(0)
    n = window_samples(96)
    ev = np.zeros(n, np.float32)
    ev[4000:9000] = 0.2 * rng.standard_normal(5000)
    mask = np.zeros(96, np.float32)
    mask[(4000 // 160) : (9000 - 400) // 160 + 1] = 1.0
    bg = (0.05 * rng.standard_normal(n)).astype(np.float32)
    for snr in (0.0, 10.0, 25.0):
        mix = _mix(ev, mask, bg, snr, DEFAULT_FRONTEND)
        bg_part = mix - ev
        lo, hi = int(np.flatnonzero(mask)[0]) * 160, int(np.flatnonzero(mask)[-1]) * 160 + 400
        measured = 10 * np.log10(np.mean(ev[lo:hi] ** 2) / np.mean(bg_part**2))
        assert abs(measured - snr) < 0.01


def test_clip_windows_cover_the_whole_clip() -> None:
    from edge.dsp.frontend import n_frames
    from quantize.transfer import clip_windows

    for seconds in (0.3, 0.96, 1.0, 4.0, 5.0):
        x = np.zeros(int(seconds * SR), np.float32)
        starts = clip_windows(x, 96, 96)
        assert starts[0] == 0 and np.all(np.diff(starts) == 96 * 160)
        assert starts[-1] // 160 + 96 >= n_frames(x.size)


def test_thresholds_separate_a_separable_class() -> None:
    from quantize.export import pick_thresholds

    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.3], [0.2, 0.9]], np.float32)
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 1]], np.float32)
    th = pick_thresholds(scores, targets, ("a", "b"), 0.5, min_positives=2, floor=0.05)
    assert 0.3 < th["a"] <= 0.8 and th["b"] == 0.5  # "b" has one positive: default
    low = np.array([[0.09, 0.1], [0.08, 0.2], [0.03, 0.3], [0.02, 0.9]], np.float32)
    assert pick_thresholds(low, targets, ("a", "b"), 0.5, min_positives=2, floor=0.05)["a"] < 0.1
    assert pick_thresholds(low, targets, ("a", "b"), 0.5, min_positives=2, floor=0.2)["a"] >= 0.2


@pytest.mark.quantize
def test_student_shapes_and_frame_alignment() -> None:
    """Output frame j depends on input frames around 4j..4j+3: a click at frame 50 peaks the change
    in output row 12."""
    torch = pytest.importorskip("torch")
    from quantize.config import StudentConfig
    from quantize.infer import linear_softmax_np
    from quantize.student import Student, count_macs, count_params, linear_softmax

    torch.manual_seed(0)
    m = Student(StudentConfig(), 10, 64, 4).eval()
    assert 50_000 <= count_params(m) <= 250_000 and count_macs(m, 96, 64) > 0
    x = torch.zeros(1, 96, 64)
    y0 = m(x)
    assert y0.shape == (1, 24, 10)
    x[0, 50] = 5.0
    change = (m(x) - y0).abs().sum(2)[0]
    assert int(change.argmax()) in (11, 12, 13)
    p = torch.rand(3, 24, 10)
    np.testing.assert_allclose(linear_softmax(p, 1).numpy(), linear_softmax_np(p.numpy(), 1), rtol=1e-5)


# --- report measurements ------------------------------------------------------------------------


def _count_graph(path: Path) -> Path:
    """[1,3,8,8] -> Conv 3->4 (3x3, pad 1) -> depthwise Conv (group 4, 3x3, stride 2, pad 1, weight
    through Quantize/DequantizeLinear) -> Reshape [1,64] -> Gemm (transB) -> [1,10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, a: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(a, name)

    inits = [
        init("W1", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
        init("B1", np.zeros(4, np.float32)),
        init("W2", rng.standard_normal((4, 1, 3, 3)).astype(np.float32)),
        init("W2_scale", np.full(4, 0.01, np.float32)),
        init("W2_zp", np.zeros(4, np.int8)),
        init("shape", np.array([1, 64], np.int64)),
        init("W3", rng.standard_normal((10, 64)).astype(np.float32)),
        init("B3", np.zeros(10, np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["W2", "W2_scale", "W2_zp"], ["W2_q"], axis=0),
        helper.make_node("DequantizeLinear", ["W2_q", "W2_scale", "W2_zp"], ["W2_dq"], axis=0),
        helper.make_node(
            "Conv", ["c1", "W2_dq"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=4
        ),
        helper.make_node("Reshape", ["c2", "shape"], ["r"]),
        helper.make_node("Gemm", ["r", "W3", "B3"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "count",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_graph_count_on_a_known_graph(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from quantize.evaluate import onnx_graph_count

    gc = onnx_graph_count(_count_graph(tmp_path / "g.onnx"))
    conv = 4 * 8 * 8 * (3 * 3 * 3)  # out elements x (in channels / group) x kernel
    depthwise = 4 * 4 * 4 * (1 * 3 * 3)  # one input channel per output channel
    gemm = 10 * 64
    assert gc.macs_by_op == {"Conv": conv + depthwise, "Gemm": gemm, "MatMul": 0}
    assert gc.macs == conv + depthwise + gemm == 8128
    assert (gc.convs, gc.depthwise_convs) == (2, 1)
    assert gc.params == (108 + 4) + 36 + (640 + 10)  # scales, zero points and the shape are not parameters


def test_onnx_graph_count_rejects_a_non_onnx_file(tmp_path: Path) -> None:
    from quantize.evaluate import onnx_graph_count

    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cannot read or shape-infer"):
        onnx_graph_count(tmp_path / "bad.onnx")


def _val_metrics(int8_acc: tuple[float, float], fp32_acc: float, teacher_acc: float) -> dict[str, object]:
    res: dict[str, object] = {"clips": 100, "clips_mapped": 100}
    res["teacher"] = {"accuracy_mapped": teacher_acc}
    res["student_fp32"] = {"accuracy_mapped": fp32_acc}
    res["student_int8_tflite"] = {"accuracy_mapped": int8_acc[0]}
    res["student_int8_onnx"] = {"accuracy_mapped": int8_acc[1]}
    return res


def test_target_rows_pass_and_fail() -> None:
    from quantize.evaluate import target_rows

    metrics = {
        "esc50": _val_metrics((0.60, 0.595), 0.61, 0.60),  # int8 >= teacher (tflite) / below (onnx); drops 1.0 / 1.5
        "urbansound8k": _val_metrics((0.50, 0.52), 0.50, 0.55),
    }
    models: dict[str, dict[str, Any]] = {
        "teacher": {"macs": 25_000_000, "ms_per_audio_second": 10.0, "hop_s": 0.48},
        "student_fp32": {"macs": 1_000_000, "ms_per_audio_second": 5.0},
        "student_int8_tflite": {"bytes": 250_000, "ms_per_audio_second": 1.0},
        "student_int8_onnx": {"bytes": 250_000, "ms_per_audio_second": 2.0},
    }
    rows = {r["target"]: r for r in target_rows(metrics, models)}
    assert len(rows) == 1 + 1 + 2 + 4 + 4
    st = {k: v["status"] for k, v in rows.items()}
    assert st["int8 .tflite size"] == "PASS"  # exactly 250 KB
    assert st["MACs: teacher / student, per 0.96 s window"] == "PASS"  # 25x
    assert rows["MACs: teacher / student, per 0.96 s window"]["value"].startswith("25.00x")
    assert st["latency per audio second: teacher ONNX / student_int8_tflite (1 thread)"] == "PASS"  # 10x
    assert st["latency per audio second: teacher ONNX / student_int8_onnx (1 thread)"] == "FAIL"  # 5x
    assert st["accuracy ESC-50 fold 5: student_int8_tflite vs teacher zero-shot"] == "PASS"
    assert st["accuracy ESC-50 fold 5: student_int8_onnx vs teacher zero-shot"] == "FAIL"
    assert st["accuracy UrbanSound8K fold 3 held-out: student_int8_tflite vs teacher zero-shot"] == "FAIL"
    assert st["accuracy drop int8 vs fp32, ESC-50 fold 5: student_int8_tflite"] == "PASS"  # 1.0 point
    assert st["accuracy drop int8 vs fp32, ESC-50 fold 5: student_int8_onnx"] == "FAIL"  # 1.5 points
    assert st["accuracy drop int8 vs fp32, UrbanSound8K fold 3 held-out: student_int8_onnx"] == "PASS"  # a gain

    note = rows["accuracy ESC-50 fold 5: student_int8_tflite vs teacher zero-shot"]["note"]
    assert "interval" not in note  # no per-recording counts in these metrics: no interval

    # with per-recording counts the note gives the margin's interval over recordings: 20 recordings of
    # 5 clips, the student right on one more clip than the teacher in 10 of them (+10 points)
    esc = metrics["esc50"]
    assert isinstance(esc, dict)
    esc["teacher"]["correct_per_recording"] = {f"r{i}": [2, 5] for i in range(20)}
    esc["student_int8_tflite"]["correct_per_recording"] = {f"r{i}": [3 if i < 10 else 2, 5] for i in range(20)}
    rows = {r["target"]: r for r in target_rows(metrics, models)}
    note = rows["accuracy ESC-50 fold 5: student_int8_tflite vs teacher zero-shot"]["note"]
    lo, hi = (float(v) for v in note.split("95 % interval ")[1].split(" points")[0].split(" to "))
    assert "from 20 recordings" in note and 0.0 < lo < 10.0 < hi < 20.0, note

    models["student_int8_tflite"]["bytes"] = 250_001
    models["teacher"]["macs"] = None
    rows = {r["target"]: r for r in target_rows(metrics, models)}
    assert rows["int8 .tflite size"]["status"] == "FAIL"
    assert rows["MACs: teacher / student, per 0.96 s window"]["status"] == "n/a"


def test_class_coverage_finds_untaught_classes() -> None:
    """Classes: 0 ground truth; 1 teacher-only on many windows; 2 teacher-only on one window (through
    the background); 3 nothing (its only positive logit is on a window whose event is never active)."""
    from quantize.evaluate import class_coverage

    n, k, f = 6, 4, 8
    gt = np.zeros((n, k), np.float32)
    gt[:3, 0] = 1.0
    gt[5, 3] = 1.0  # but window 5's event is inactive: not a ground-truth window
    ev = np.full((n, k), -3.0, np.float32)
    ev[:5, 1] = 2.0
    ev[5, 3] = 4.0  # inactive event: not a teacher window either
    mask = np.ones((n, f), np.float32)
    mask[5] = 0.0
    bg = np.full((n, k), -3.0, np.float32)
    bg[0, 2] = 1.0  # counted: bg_weight 1
    bg[1, 3] = 1.0  # not counted: bg_weight 0
    bgw = np.array([1, 0, 1, 1, 1, 1], np.float32)
    cov = class_coverage(gt, ev, mask, bg, bgw, ["a", "b", "c", "d"], few=3)
    counts = {r["class"]: (r["gt_windows"], r["teacher_windows"]) for r in cov["per_class"]}
    assert counts == {"a": (3, 0), "b": (0, 5), "c": (0, 1), "d": (0, 0)}
    assert cov["with_ground_truth"] == 1
    assert cov["teacher_only_taught"] == ["b"]
    assert cov["teacher_only_few"] == ["c"]
    assert cov["untaught"] == ["d"]


def test_per_class_ap_and_biggest_drops() -> None:
    from quantize.evaluate import biggest_drops, per_class_ap

    targets = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]], np.float32)
    fp32 = np.array([[0.9, 0.1, 0], [0.8, 0.2, 0], [0.1, 0.9, 0], [0.2, 0.8, 0]], np.float32)
    q = fp32.copy()
    q[2, 0] = 0.95  # class a: a negative now outranks both positives
    rows = per_class_ap({"fp32": fp32, "q": q}, targets, ["a", "b", "c"])
    assert [r["class"] for r in rows] == ["a", "b"]  # "c" has no positives
    assert rows[0]["ap"]["fp32"] == 1.0 and rows[0]["ap"]["q"] < 1.0 and rows[1]["ap"]["q"] == 1.0
    assert [r["class"] for r in biggest_drops(rows, "fp32", ("q",), min_positives=2, top=1)] == ["a"]
    assert biggest_drops(rows, "fp32", ("q",), min_positives=3, top=5) == []


def test_progress_bar_lines_in_a_log() -> None:
    import io

    from quantize.evaluate import Progress

    buf = io.StringIO()
    bar = Progress("work", 20, stream=buf)
    for _ in range(20):
        bar.update()
    bar.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("  work [") and "20/20" in lines[-1]  # one per 10%


def test_report_plots_are_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from quantize.report import coverage_markdown, quantisation_markdown, targets_markdown, write_plots

    metrics = {"esc50": _val_metrics((0.6, 0.59), 0.61, 0.63), "urbansound8k": _val_metrics((0.5, 0.5), 0.5, 0.55)}
    models = {
        "teacher": {"ms_per_audio_second": 9.0},
        "student_fp32": {"ms_per_audio_second": 7.0},
        "student_int8_tflite": {"ms_per_audio_second": 3.0},
        "student_int8_onnx": {"ms_per_audio_second": 2.5},
    }
    per_class = [
        {"class": c, "positives": 5, "ap": {"student_fp32": a, "student_int8_tflite": b, "student_int8_onnx": b}}
        for c, a, b in (("x", 0.5, 0.45), ("y", 0.9, 0.92))
    ]
    int8 = ("student_int8_tflite", "student_int8_onnx")
    files = write_plots(tmp_path, metrics, models, per_class, "student_fp32", int8)
    assert len(files) == 3
    for f in files:
        data = (tmp_path / f).read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    md = quantisation_markdown(per_class, per_class, "student_fp32", int8, 5, "test")
    assert "| x | 5 | 0.500 | 0.450 | 0.450 | -0.050 | -0.050 |" in md
    rows = [{"target": "t", "value": "1", "goal": "2", "status": "FAIL", "note": ""}]
    assert "0 of 1 rows pass" in targets_markdown(rows) and "**FAIL**" in targets_markdown(rows)
    cov = {
        "windows": 3,
        "few_teacher_positives": 3,
        "per_class": [{"class": "c", "gt_windows": 0, "teacher_windows": 1}],
        "with_ground_truth": 0,
        "teacher_only_taught": [],
        "teacher_only_few": ["c"],
        "untaught": [],
    }
    assert "c (1)" in coverage_markdown(cov)


# --- the depthwise-separable student ------------------------------------------------------------

CONFIG_DIR = Path(__file__).resolve().parent.parent / "quantize" / "configs"
DSCONV_CONFIG = CONFIG_DIR / "s2-dsconv.json"
YAMNET_MACS = 69_165_056  # the shipped teacher, counted from its ONNX graph (edge/models/default/MODEL_CARD.md)


DSCONV_CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.json") if '"dsconv"' in p.read_text())


def test_the_default_recipe_is_a_dsconv_student() -> None:
    assert "default.json" in DSCONV_CONFIGS and len(DSCONV_CONFIGS) >= 2


@pytest.mark.quantize
@pytest.mark.parametrize("config", DSCONV_CONFIGS)
def test_dsconv_student_shapes_alignment_and_mac_budget(config: str) -> None:
    """Each packaged dsconv config: [B, 96, 64] -> [B, 24, K]; >= 20x fewer MACs than YAMNet; a click
    at frame 50 changes the output rows centred on row 12 (rows centred on 4j..4j+3; a causal student:
    row 12 and later rows only) and leaves rows beyond the receptive field untouched; folding BatchNorm
    keeps the outputs."""
    torch = pytest.importorskip("torch")
    from quantize.student import Student, count_macs, count_params

    cfg = load_config(CONFIG_DIR / config)
    assert cfg.student.arch == "dsconv"
    torch.manual_seed(0)
    m = Student(cfg.student, 124, 64, 4)
    m.train()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None
    with torch.no_grad():  # non-trivial BatchNorm statistics
        m(torch.randn(8, 96, 64))
    m.eval()
    macs = count_macs(m, 96, 64)
    assert macs * 20 <= YAMNET_MACS and count_params(m) <= 250_000
    x = torch.zeros(2, 96, 64)
    y0 = m(x).detach()
    assert y0.shape == (2, 24, 124)
    x[0, 50] = 5.0
    change = (m(x).detach() - y0).abs().sum(2)
    touched = torch.nonzero(change[0] > 0).flatten()
    assert int(touched[-1]) < 23  # rows beyond the receptive field are untouched
    if cfg.student.causal:  # frame 50 is in row 12 (frames 48-51): no earlier row sees it
        assert int(touched[0]) == 12
    else:
        # the touched rows are centred on row 12: a patch stem's frame pair (50-51) sits half a pair later
        # than the conv stem's overlapping rows 24-25, so its spread leans up to one row later (and the
        # largest change of a randomly initialised one may fall anywhere on the plateau around it)
        patch = cfg.student.stem == "patch"
        assert int(change[0].argmax()) in (range(11, 16) if patch else (11, 12, 13))
        assert 0 < int(touched[0])
        assert int(touched[0]) + int(touched[-1]) in ((24, 25) if patch else (24,))
    assert float(change[1].max()) == 0.0  # windows in a batch are independent
    xr = torch.randn(4, 96, 64)
    before = m(xr).detach()
    m.fold_batchnorm()
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    assert float((m(xr).detach() - before).abs().max()) < 1e-5
    assert count_macs(m, 96, 64) == macs


def test_student_arch_is_checked(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"student": {"arch": "transformer"}}))
    with pytest.raises(ConfigError, match=r"student\.arch 'transformer' is not one of"):
        load_config(p)
    p.write_text(json.dumps({"student": {"arch": "dsconv", "kernel_time": 4}}))
    with pytest.raises(ConfigError, match="must be odd"):
        load_config(p)
    p.write_text(json.dumps({"student": {"arch": "cnn", "causal": True}}))
    with pytest.raises(ConfigError, match=r"student\.causal needs arch 'dsconv', not 'cnn'"):
        load_config(p)
    p.write_text(json.dumps({"student": {"arch": "dsconv", "stem": "fft"}}))
    with pytest.raises(ConfigError, match=r"student\.stem 'fft' is not one of \['conv', 'patch'\]"):
        load_config(p)
    p.write_text(json.dumps({"student": {"arch": "cnn", "stem": "patch"}}))
    with pytest.raises(ConfigError, match=r"student\.stem 'patch' needs arch 'dsconv', not 'cnn'"):
        load_config(p)
    p.write_text(json.dumps({"output_hop_frames": 1, "student": {"arch": "dsconv", "stem": "patch"}}))
    with pytest.raises(ConfigError, match=r"stem 'patch' halves time and mels: needs output_hop_frames >= 2"):
        load_config(p)
    assert load_config(DSCONV_CONFIG).student.arch == "dsconv"


@pytest.mark.quantize
def test_weights_of_another_stem_are_refused_clearly(tmp_path: Path) -> None:
    """A run directory whose config was edited after the run (here: a conv-stem student's weights, a
    config that now says patch stem): loading names the file and the likely cause, no torch traceback."""
    torch = pytest.importorskip("torch")
    from quantize.config import StudentConfig
    from quantize.pipeline import STUDENT_PT, load_student
    from quantize.student import Student

    small = {"arch": "dsconv", "channels": [8, 16, 24], "kernel_time": 3}
    torch.save(Student(StudentConfig(arch="dsconv", channels=(8, 16, 24), kernel_time=3), 6, 64, 4).state_dict(),
               tmp_path / STUDENT_PT)  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps({"student": {**small, "stem": "patch"}}))
    with pytest.raises(ModelError, match=r"student_fp32\.pt: these weights do not fit .*size mismatch.*stem"):
        load_student(load_config(tmp_path / "config.json"), tmp_path, 6, heads=False)
    (tmp_path / "config.json").write_text(json.dumps({"student": small}))  # the default stem: conv
    assert load_student(load_config(tmp_path / "config.json"), tmp_path, 6, heads=False) is not None


@pytest.mark.quantize
@pytest.mark.parametrize(("causal", "stem"), [(False, "conv"), (True, "conv"), (False, "patch")])
def test_dsconv_student_exports_to_int8_tflite_and_onnx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, causal: bool, stem: str
) -> None:
    """A small dsconv student (BatchNorm folded) -> PT2E int8 .tflite and QDQ int8 .onnx; both agree with
    the fp32 model on random windows. The causal one (its time padding a separate pad op) also gives the
    streaming model: the shortest window whose newest outputs equal the full window's, bit for bit.
    Neither stem leaves a DEPTHWISE_CONV_2D on one input channel in the TFLite graph: the conv stem is
    exported as a `SpaceToDepthStem` (a CONV_2D on 4 channels) with the int8 outputs of the plain export
    bit for bit, the patch stem is a 1x1 CONV_2D."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    from quantize.config import StudentConfig
    from quantize.export import export_onnx_fp32
    from quantize.ptq import quantize_onnx, quantize_tflite
    from quantize.student import Student

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((40, 96, 64)) * 1.5 - 4.0).astype(np.float32)
    for w in x:  # one loud time-frequency patch per window, so frames differ
        t0, f0 = rng.integers(0, 80), rng.integers(0, 48)
        w[t0 : t0 + 16, f0 : f0 + 16] += rng.uniform(3.0, 8.0)
    cfg = StudentConfig(arch="dsconv", channels=(8, 16, 24, 32), kernel_time=3, causal=causal, stem=stem)
    m = Student(cfg, 6, 64, 4)
    m.set_normalisation(x.mean((0, 1)), x.std((0, 1)))
    m.train()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None  # one pass: exact batch statistics, so activations are not tiny
    with torch.no_grad():
        m(torch.from_numpy(x))
        m.head.weight.mul_(3.0)  # spread the logits so agreement is not trivially at p = 0.5
    m.eval()
    m.fold_batchnorm()
    export_onnx_fp32(m, 96, 64, tmp_path / "fp32.onnx")
    quantize_tflite(m, x[:32], tmp_path / "m.tflite", per_channel=True)
    quantize_onnx(tmp_path / "fp32.onnx", x[:32], tmp_path / "m.onnx", per_channel=True, reduce_range=True)
    with torch.no_grad():
        ref = m(torch.from_numpy(x[32:])).numpy()
    assert ref.std(axis=1).mean() > 0.02  # the outputs change along time
    for runner in (TfliteRunner(tmp_path / "m.tflite"), OnnxRunner(tmp_path / "m.onnx")):
        got = runner(x[32:])
        name = type(runner).__name__
        assert got.shape == (8, 24, 6), name
        assert np.max(np.abs(got - ref)) < 0.1, name
        assert np.mean(got.argmax(2) == ref.argmax(2)) >= 0.9, name
    ops = _tflite_ops(tmp_path / "m.tflite")
    assert not [op for op in ops if op[0] == "DEPTHWISE_CONV_2D" and op[1][-1] == 1]
    assert next(op[1][-1] for op in ops if op[0] == "CONV_2D") == 4  # the stem: 2x2 blocks as 4 channels
    if stem == "conv":
        # the view keeps the plain export's int8 arithmetic: the same outputs, bit for bit
        with monkeypatch.context() as mp:
            mp.setattr(Student, "tflite_view", lambda self: self)
            quantize_tflite(m, x[:32], tmp_path / "plain.tflite", per_channel=True)
        plain_ops = _tflite_ops(tmp_path / "plain.tflite")
        assert [op for op in plain_ops if op[0] == "DEPTHWISE_CONV_2D" and op[1][-1] == 1]
        assert np.array_equal(TfliteRunner(tmp_path / "m.tflite")(x), TfliteRunner(tmp_path / "plain.tflite")(x))
    if causal:
        from quantize.stream import check_stream, stream_window

        # output j sees input frames 4j - 6 - 2 * 8 .. 4j + 3 (strided stem and block, two 3-tap blocks at
        # the output hop): the oldest of the 3 newest outputs starts 12 + 22 frames back, 36 at the hop
        frames = stream_window(m, 96, 12, 4)
        assert frames == 36
        quantize_tflite(m, x[:32], tmp_path / "stream.tflite", per_channel=True, frames=frames)
        assert check_stream(tmp_path / "m.tflite", tmp_path / "stream.tflite", x[32:], frames, 12) == 0.0


@pytest.mark.quantize
@pytest.mark.parametrize("heads", [0, 2])
def test_onnx_export_is_the_students_function_in_fused_int8_form(tmp_path: Path, heads: int) -> None:
    """The ONNX export (`Student.onnx_view`) computes the student's outputs bit for bit in fp32, with one
    head conv (event and learned-head columns stacked), one sigmoid, no Concat and, with one mel left
    after the trunk, no pooling. Quantised, everything from the sigmoid on stays float (the
    probabilities are off the int8 grid, step 1/255), and ONNX Runtime fuses every conv into an int8
    kernel: a float Conv left in its optimised graph dequantises its weights on every call."""
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from quantize.config import StudentConfig
    from quantize.export import export_onnx_fp32
    from quantize.ptq import float_tail, quantize_onnx
    from quantize.student import Student

    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((24, 96, 64)) * 1.5 - 4.0).astype(np.float32)
    m = Student(StudentConfig(arch="dsconv", channels=(8, 8, 16, 16, 24, 32), kernel_time=3), 6, 64, 4)
    m.set_normalisation(x.mean((0, 1)), x.std((0, 1)))
    m.train()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None  # one pass: real statistics, so no two folded biases are alike (all zero)
    with torch.no_grad():
        m(torch.from_numpy(x))
    m.eval()
    m.fold_batchnorm()
    if heads:
        with torch.no_grad():
            m.add_aux_head(heads).weight.normal_(0.0, 0.1)  # logits of the event head's range
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
        assert np.array_equal(m.onnx_view()(torch.from_numpy(x)).numpy(), ref)
    export_onnx_fp32(m, 96, 64, tmp_path / "fp32.onnx")
    graph = onnx.load(str(tmp_path / "fp32.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert "Concat" not in ops and "AveragePool" not in ops and ops.count("Sigmoid") == 1
    assert [n.op_type for n in graph.node if n.name in float_tail(graph)] == ["Sigmoid"]
    quantize_onnx(tmp_path / "fp32.onnx", x[:16], tmp_path / "m.onnx", per_channel=True, reduce_range=True)
    q = onnx.load(str(tmp_path / "m.onnx")).graph
    producer = {o: n.op_type for n in q.node for o in n.output}
    assert producer[q.output[0].name] == "Sigmoid"
    got = OnnxRunner(tmp_path / "m.onnx")(x[16:])
    assert got.shape == ref[16:].shape == (8, 24, 6 + heads)
    on_grid = np.abs(got * 255.0 - np.round(got * 255.0)) < 1e-3
    assert on_grid.mean() < 0.05  # about 0.2 % by chance; 100 % with int8 probabilities
    err = np.abs(got - ref[16:])
    assert float(err.max()) < 0.1 and float(err.mean()) < 0.02, (float(err.max()), float(err.mean()))
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(tmp_path / "m.onnx"), so, providers=["CPUExecutionProvider"])
    optimised = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert "Conv" not in optimised and optimised.count("QLinearConv") == 12, optimised


def test_float_tail_refuses_an_unnamed_node_after_the_sigmoid() -> None:
    """quantize_onnx excludes nodes by name: an unnamed one after the sigmoid is refused by name of its
    op type rather than silently quantised."""
    from onnx import TensorProto, helper

    from edge.errors import ModelError
    from quantize.ptq import float_tail

    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Sigmoid", ["r"], ["s"], name="sig"),
        helper.make_node("Identity", ["s"], ["y"]),
    ]
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4])  # noqa: E731
    graph = helper.make_graph(nodes, "g", [vi("x")], [vi("y")])
    with pytest.raises(ModelError, match=r"\['Identity'\].*no name"):
        float_tail(graph)
    graph.node[2].name = "id"
    assert float_tail(graph) == ["sig", "id"]


@pytest.mark.quantize
def test_tflite_view_of_a_one_mel_trunk_keeps_the_int8_arithmetic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A student whose trunk ends at one mel (6 blocks, as the shipped one): its TFLite view has neither
    the one-channel depthwise stem nor the pooling over the single mel (a 1x1 AVERAGE_POOL_2D, which
    XNNPACK does not take: the graph ran in two delegate partitions), with learned heads attached too,
    and its int8 file gives the plain export's outputs bit for bit: the view's observers take the
    calibrated states of the student's observers of the same values, even where the view drops or adds
    value-preserving ops."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    from quantize.config import StudentConfig
    from quantize.ptq import quantize_tflite
    from quantize.student import Student

    torch.manual_seed(2)
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((24, 96, 64)) * 1.5 - 4.0).astype(np.float32)
    for w in x:
        t0, f0 = rng.integers(0, 80), rng.integers(0, 48)
        w[t0 : t0 + 16, f0 : f0 + 16] += rng.uniform(3.0, 8.0)
    m = Student(StudentConfig(arch="dsconv", channels=(8, 8, 16, 16, 24, 24), kernel_time=3), 5, 64, 4)
    m.set_normalisation(x.mean((0, 1)), x.std((0, 1)))
    m.eval()
    m.fold_batchnorm()
    with torch.no_grad():
        m.add_aux_head(2).weight.normal_(0.0, 0.5)
    quantize_tflite(m, x[:16], tmp_path / "view.tflite", per_channel=True)
    with monkeypatch.context() as mp:
        mp.setattr(Student, "tflite_view", lambda self: self)
        quantize_tflite(m, x[:16], tmp_path / "plain.tflite", per_channel=True)
    view_ops = [op[0] for op in _tflite_ops(tmp_path / "view.tflite")]
    plain_ops = [op[0] for op in _tflite_ops(tmp_path / "plain.tflite")]
    assert "AVERAGE_POOL_2D" in plain_ops and "AVERAGE_POOL_2D" not in view_ops
    assert plain_ops.count("DEPTHWISE_CONV_2D") == 6 and view_ops.count("DEPTHWISE_CONV_2D") == 5
    # with its default XNNPACK delegate, LiteRT runs the view as one delegate partition and the plain
    # graph as two (the pool is left to LiteRT's own kernels, splitting the graph)
    assert (_delegate_partitions(tmp_path / "view.tflite"), _delegate_partitions(tmp_path / "plain.tflite")) == (1, 2)
    got, plain = TfliteRunner(tmp_path / "view.tflite")(x), TfliteRunner(tmp_path / "plain.tflite")(x)
    assert got.shape == (24, 24, 7)
    assert got.std() > 0.01  # not a constant output
    assert np.array_equal(got, plain)


@pytest.mark.quantize
@pytest.mark.parametrize("causal", [False, True])
def test_space_to_depth_stem_computes_the_conv_stem(causal: bool) -> None:
    """`Student.tflite_view` rewrites a folded (4, 3) stride-2 conv stem as a `SpaceToDepthStem`: the same
    outputs within float rounding at every window length the model takes (the streaming model's too),
    for the centred and the causal padding; other stems, and a stem whose BatchNorm is not folded, are
    left as they are."""
    torch = pytest.importorskip("torch")
    from quantize.config import StudentConfig
    from quantize.student import SpaceToDepthStem, Student

    torch.manual_seed(1)
    cfg = StudentConfig(arch="dsconv", channels=(8, 16, 24), kernel_time=3, causal=causal)
    m = Student(cfg, 5, 64, 4).eval()
    assert m.tflite_view() is m  # BatchNorm not folded yet: no rewrite
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):  # non-trivial folded biases and scales
            mod.running_mean.uniform_(-1.0, 1.0)
            mod.running_var.uniform_(0.5, 2.0)
    m.fold_batchnorm()
    view = m.tflite_view()
    assert isinstance(view.blocks[0], SpaceToDepthStem) and view is not m
    assert not isinstance(m.blocks[0], SpaceToDepthStem)  # the model itself is untouched
    for frames in (4, 12, 48, 96):
        x = torch.randn(3, frames, 64) * 2.0 - 4.0
        with torch.no_grad():
            ref, got = m(x), view(x)
            stem_ref = m.blocks[0]((x - m.mean).unsqueeze(1))
            stem_got = view.blocks[0]((x - m.mean).unsqueeze(1))
        assert stem_got.shape == stem_ref.shape
        assert float((stem_got - stem_ref).abs().max()) < 1e-5
        assert float((got - ref).abs().max()) < 1e-5
    # a wrong tap map shows: the stem's output moved by one frame is not the same
    assert float((stem_got[:, :, 1:] - stem_ref[:, :, :-1]).abs().max()) > 0.1
    patch = Student(StudentConfig(arch="dsconv", channels=(8, 16, 24), kernel_time=3, stem="patch"), 5, 64, 4)
    patch.fold_batchnorm()
    assert patch.tflite_view() is patch
    odd = Student(StudentConfig(arch="dsconv", channels=(8, 16, 24), kernel_time=3), 5, 63, 4)
    odd.fold_batchnorm()
    assert odd.tflite_view() is odd  # 2x2 blocks need an even mel count


def _delegate_partitions(path: Path) -> int:
    """How many delegate nodes LiteRT's execution plan has for a TFLite file with its default delegates."""
    from ai_edge_litert import interpreter

    it = interpreter.Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in it._get_ops_details())


def _tflite_ops(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """(op name, shape of its first input) of each op of a TFLite graph, without delegates."""
    from ai_edge_litert import interpreter

    it = interpreter.Interpreter(
        model_path=str(path), experimental_op_resolver_type=interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    shapes = {t["index"]: tuple(int(v) for v in t["shape"]) for t in it.get_tensor_details()}
    return [(op["op_name"], shapes.get(int(op["inputs"][0]), ())) for op in it._get_ops_details()]


# --- cross-validation over UrbanSound8K recordings -------------------------------------------


def _us8k_rows(recordings: list[tuple[str, str, int]]) -> list[dict[str, str]]:
    return [{"fsID": fsid, "class": cls, "path": f"{fsid}-{j}.flac"} for fsid, cls, n in recordings for j in range(n)]


def test_recording_folds_keep_recordings_together_and_stratify_classes() -> None:
    from quantize.transfer import recording_folds

    rng = np.random.default_rng(0)
    recs = [
        (f"{c}{i}", c, int(rng.integers(1, 9))) for c, n in (("dog", 7), ("siren", 3), ("drill", 4)) for i in range(n)
    ]
    recs.append(("jack0", "jackhammer", 29))  # one recording: all its slices in one fold
    rows = _us8k_rows(recs)
    folds = recording_folds(rows, 3, Path("meta.csv"))
    assert set(folds) == {r[0] for r in recs} and set(folds.values()) == {0, 1, 2}
    for cls in ("dog", "siren", "drill"):
        held = [folds[f] for f, c, _ in recs if c == cls]
        assert set(held) == {0, 1, 2}, cls  # a class with >= K recordings is in every fold
        # balanced in clips: the folds' clip counts of a class differ by at most its largest recording
        clips = [sum(n for f, c, n in recs if c == cls and folds[f] == i) for i in range(3)]
        assert max(clips) - min(clips) <= max(n for _, c, n in recs if c == cls), (cls, clips)
    # deterministic and independent of the row order
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    assert recording_folds(shuffled, 3, Path("meta.csv")) == folds
    with pytest.raises(ConfigError, match="at least 2"):
        recording_folds(rows, 1, Path("meta.csv"))
    with pytest.raises(ConfigError, match="2 recordings cannot be dealt into 3 folds"):
        recording_folds(_us8k_rows([("a", "dog", 2), ("b", "dog", 1)]), 3, Path("meta.csv"))


def test_us8k_folds_hold_out_every_clip_exactly_once(tiny_world: dict[str, Path]) -> None:
    from quantize.transfer import list_clips

    cfg = tiny_config(tiny_world)
    held: list[set[Path]] = []
    for fold in range(3):
        t = dataclasses.replace(cfg.transfer, us8k_folds=3, us8k_val_fold=fold)
        clips = list_clips(tiny_world["root"], t)
        held.append({c.path for c in clips if c.dataset == "urbansound8k" and c.split == "val"})
        esc = [(c.path, c.split) for c in clips if c.dataset == "esc50"]
        assert esc == [(c.path, c.split) for c in list_clips(tiny_world["root"], cfg.transfer) if c.dataset == "esc50"]
    with pytest.raises(ConfigError, match="names no fold of us8k_folds=3"):
        list_clips(tiny_world["root"], dataclasses.replace(cfg.transfer, us8k_folds=3, us8k_val_fold=3))
    us8k = {c.path for c in list_clips(tiny_world["root"], cfg.transfer) if c.dataset == "urbansound8k"}
    assert all(h for h in held) and set.union(*held) == us8k and sum(len(h) for h in held) == len(us8k)


def test_recording_of_names_the_source_recording() -> None:
    from quantize.evaluate import recording_of
    from quantize.transfer import Clip

    assert recording_of(Clip(Path("a/102105-3-0-0.flac"), "urbansound8k", "dog_bark", "val")) == "102105"
    assert recording_of(Clip(Path("a/1-100038-A-14.flac"), "esc50", "chirping_birds", "val")) == "100038"
    assert recording_of(Clip(Path("a/bus_03.flac"), "vehicles", "bus", "val")) == "bus_03"
    assert recording_of(Clip(Path("a/odd-name.flac"), "urbansound8k", "siren", "val")) == "odd-name"


def test_recording_bootstrap_resamples_recordings_not_clips() -> None:
    """Two recordings of 10 clips: the student beats the teacher on all of A and ties on B. Resampling
    recordings gives only A+A (+100 points), A+B (+50) and B+B (0): the interval spans 0 to 100 and no
    resample has the student below. A clip-level resample would put the interval near +50."""
    from quantize.evaluate import recording_bootstrap

    student = {"A": [10, 10], "B": [3, 10]}
    teacher = {"A": [0, 10], "B": [3, 10]}
    b = recording_bootstrap(student, teacher, resamples=4000, seed=1)
    assert b["recordings"] == 2 and b["clips"] == 20 and b["difference_points"] == 50.0
    assert b["ci95_points"] == [0.0, 100.0] and b["share_at_or_above_teacher"] == 1.0
    worse = recording_bootstrap({"A": [0, 10], "B": [3, 10]}, {"A": [10, 10], "B": [3, 10]}, resamples=4000)
    assert worse["difference_points"] == -50.0 and 0.2 < worse["share_at_or_above_teacher"] < 0.3  # B+B only
    same = recording_bootstrap(teacher, teacher, resamples=100)
    assert same["ci95_points"] == [0.0, 0.0] and same["share_at_or_above_teacher"] == 1.0
    with pytest.raises(ConfigError, match="different clips"):
        recording_bootstrap({"A": [1, 9]}, {"A": [1, 10]})
    with pytest.raises(ConfigError, match="different clips"):
        recording_bootstrap({"A": [1, 10]}, {"C": [1, 10]})


def _tiny_cv_config(w: dict[str, Path]) -> Path:
    d = tiny_config(w).to_dict()
    d["heads"]["enabled"] = False
    f = w["tmp"] / "cv.json"
    f.write_text(json.dumps(d))
    return f


def test_cross_validation_end_to_end_on_tiny_data(tiny_world: dict[str, Path], capsys: Any) -> None:
    """Two folds trained side by side; the report pools all six UrbanSound8K clips, each held out
    once; a second call resumes (trains nothing); a finished fold of another config is refused."""
    pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    from quantize.cv import run_cv, write_cv_report

    config, out = _tiny_cv_config(tiny_world), tiny_world["tmp"] / "cv"
    md = run_cv(config, out, folds=2, seed=0, jobs=2)
    summary = json.loads((out / "cv.json").read_text())
    us = summary["datasets"]["urbansound8k"]
    assert sum(us["clips_per_fold"]) == 6 and all(n > 0 for n in us["clips_per_fold"])
    for m in ("teacher", "student_fp32", "student_int8_tflite", "student_int8_onnx"):
        per_label = us["models"][m]["correct_per_label"]
        assert sum(n for _, n in per_label.values()) == 6 and set(per_label) == {"low", "high"}
        assert sum(us["models"][m]["correct_per_fold"]) == sum(c for c, _ in per_label.values())
        per_rec = us["models"][m]["correct_per_recording"]  # one recording per clip here (fsIDs 100-105)
        assert set(per_rec) == {str(100 + i) for i in range(6)} and all(n == 1 for _, n in per_rec.values())
        assert sum(c for c, _ in per_rec.values()) == sum(us["models"][m]["correct_per_fold"])
    boot = summary["recording_bootstrap"]
    assert set(boot) == {"student_fp32", "student_int8_tflite", "student_int8_onnx"}
    for b in boot.values():
        assert b["recordings"] == 6 and b["clips"] == 6
        assert b["ci95_points"][0] <= b["difference_points"] <= b["ci95_points"][1]
    assert summary["datasets"]["esc50"]["clips_per_fold"][0] > 0  # same clips in both folds: spread only
    esc_boot = summary["datasets"]["esc50"]["recording_bootstrap_per_fold"]["student_int8_tflite"]
    assert len(esc_boot) == 2 and all(b["clips"] == summary["datasets"]["esc50"]["clips_per_fold"][0] for b in esc_boot)
    text = md.read_text()
    assert "all 2 folds pooled" in text and "(6 clips)" in text and "| low |" in text
    assert "come from 6 recordings" in text and "95 % interval" in text
    assert "Each fold's student minus the teacher on these clips" in text
    for i in (0, 1):
        card = (out / f"fold-{i}" / "model" / "MODEL_CARD.md").read_text()
        assert f"fold {i} of 2 class-stratified recording folds" in card
    stamp = (out / "fold-0" / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    run_cv(config, out, folds=2, seed=0, jobs=1)
    assert "fold 0: finished earlier" in capsys.readouterr().out
    assert (out / "fold-0" / "metrics.json").stat().st_mtime_ns == stamp
    again = write_cv_report(out).read_text()  # --report-only: same figures (no command line)
    assert again.split("## Targets")[1] == text.split("## Targets")[1] and "Command:" not in again
    other = json.loads(config.read_text())
    other["distill"]["epochs"] = 3
    config.write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="different config"):
        run_cv(config, out, folds=2, seed=0, jobs=1)
    (out / "fold-1" / "metrics.json").unlink()
    with pytest.raises(ConfigError, match=r"hold out folds \[0\] of us8k_folds=2"):
        write_cv_report(out)


def test_cross_validation_rejects_bad_requests(tiny_world: dict[str, Path]) -> None:
    from quantize.cv import run_cv, write_cv_report

    config, out = _tiny_cv_config(tiny_world), tiny_world["tmp"] / "cv"
    with pytest.raises(ConfigError, match="--folds must be at least 2"):
        run_cv(config, out, folds=1, seed=0, jobs=1)
    with pytest.raises(ConfigError, match="--jobs must be at least 1"):
        run_cv(config, out, folds=2, seed=0, jobs=0)
    with pytest.raises(ConfigError, match="cannot read config"):
        run_cv(tiny_world["tmp"] / "missing.json", out, folds=2, seed=0, jobs=1)
    no_us = json.loads(config.read_text())
    no_us["transfer"]["datasets"] = ["esc50"]
    config.write_text(json.dumps(no_us))
    with pytest.raises(ConfigError, match="splits UrbanSound8K"):
        run_cv(config, out, folds=2, seed=0, jobs=1)
    with pytest.raises(ConfigError, match="no finished fold runs"):
        write_cv_report(out)


def test_condition_signals_are_seeded_and_at_their_levels() -> None:
    from quantize.conditions import condition_signals

    a, b = condition_signals(3), condition_signals(3)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["white noise -40 dBFS"], condition_signals(4)["white noise -40 dBFS"])
    assert not np.any(a["silence"])
    for name in ("white noise -40 dBFS", "pink noise -55 dBFS", "brown noise -70 dBFS"):
        level = float(name.split()[2])
        rms_dbfs = 20 * np.log10(np.std(a[name]) * np.sqrt(2.0))  # a full-scale sine is 0 dBFS
        assert rms_dbfs == pytest.approx(level, abs=0.01)
    step = a["pink noise -65 -> -40 dBFS step"]
    half = len(step) // 2
    assert 20 * np.log10(np.std(step[half:]) / np.std(step[:half])) == pytest.approx(25.0, abs=0.3)
    assert np.mean(a["white noise -55 dBFS, DC +0.3"]) == pytest.approx(0.3, abs=1e-3)
    # DC steps at 8 positions over one 0.12 s model hop, on two noise levels: where the step lands
    steps = {k: v for k, v in a.items() if k.startswith("DC step")}
    assert len(steps) == 16
    at = sorted({int(np.argmax(np.diff(v) > 0.2)) + 1 for v in steps.values()})
    assert at == [len(step) // 2 + round(i * 0.015 * 16000) for i in range(8)]


def test_stream_probs_follow_the_pipeline_windows() -> None:
    """Windows at the pipeline's hop, the first padded with the silence floor, newest outputs kept: a model
    that outputs each output frame's mean log-mel shows the padding, then the signal's level."""
    from edge.dsp.frontend import silence_floor
    from quantize.conditions import stream_probs

    def model(w: np.ndarray) -> np.ndarray:  # [N, 96, 64] -> [N, 24, 1]: each 4-frame group's mean
        return w.reshape(w.shape[0], 24, 4 * 64).mean(axis=2, keepdims=True)

    x = np.full(16000, 0.0, np.float32)  # 1 s of digital silence: 98 frames
    p = stream_probs(model, x, 96, 12)
    assert p.shape == ((84 + 98 - 96) // 12 * 3 + 3, 1)
    assert np.allclose(p, silence_floor())
    loud = stream_probs(model, (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32), 96, 12)
    assert loud[-1, 0] > silence_floor() + 5.0


def test_condition_floors_raise_only_classes_that_fire_on_conditions() -> None:
    from quantize.conditions import apply_floors, condition_floors

    def model(w: np.ndarray) -> np.ndarray:  # class 0: loudness of the lowest mel bands; class 1: a constant
        low = 1.0 / (1.0 + np.exp(-(w[:, :, :8].mean(axis=2) + 4.0)))
        out = np.stack([low, np.full_like(low, 0.1)], axis=2)
        return out.reshape(w.shape[0], 24, 4, 2).max(axis=2)

    floors, where = condition_floors(model, ("rumble", "flat"), 96, 12, seed=0, margin=0.05)
    assert floors["flat"] == pytest.approx(0.15)
    assert floors["rumble"] > 0.5 and "noise" in where["rumble"]
    raised, names = apply_floors({"rumble": 0.2, "flat": 0.3}, floors)
    assert names == ["rumble"] and raised["flat"] == 0.3  # never lowered
    assert raised["rumble"] == min(0.95, np.ceil(round(floors["rumble"] / 0.05, 6)) * 0.05)
    assert apply_floors({"a": 0.2}, {"a": 0.99})[0]["a"] == 0.95
    assert apply_floors({"a": 0.2}, {"a": 0.3001})[0]["a"] == 0.35


def test_condition_floors_cover_every_model_hop() -> None:
    """With the hops of both latency modes the floor is the larger of each hop's: a class that reads a
    condition higher when each window's newest outputs see less of the future is covered."""
    from quantize.conditions import condition_floors

    def model(w: np.ndarray) -> np.ndarray:  # class 0: the level of the window's newest 4 frames
        newest = 1.0 / (1.0 + np.exp(-(w[:, -4:, :].mean(axis=(1, 2)) + 6.0)))
        return np.broadcast_to(newest[:, None, None], (w.shape[0], 24, 1)).copy()

    f12, _ = condition_floors(model, ("x",), 96, 12, seed=0, margin=0.0)
    f4, _ = condition_floors(model, ("x",), 96, 4, seed=0, margin=0.0)
    both, where = condition_floors(model, ("x",), 96, ((12, 0, 0.0), (4, 0, 0.0)), seed=0, margin=0.0)
    assert f4["x"] > f12["x"]  # this model's floor is set at the short hop, so dropping that hop would show
    assert both["x"] == f4["x"]
    assert where["x"].endswith("(model hop 4 frames)")
    filled, where = condition_floors(model, ("x",), 96, ((4, 8, 4.0),), seed=0, margin=0.0)
    assert filled["x"] != f4["x"] and where["x"] != ""


def test_stream_probs_with_a_lookahead_fill_keep_the_rows_before_it() -> None:
    """`fill_frames`: each window moves on by that many frames, its newest one fading out over them
    (no fading here: 0 dB), and the rows before them are kept: a model that reads each row's own frames
    gives what it gives without the fill; one that reads the window's newest frames sees only the newest
    real frame."""
    from quantize.conditions import stream_probs

    def own(w: np.ndarray) -> np.ndarray:  # each 4-frame group's mean
        return w.reshape(w.shape[0], 24, 4 * 64).mean(axis=2, keepdims=True)

    def future(w: np.ndarray) -> np.ndarray:  # every row: the mean of the window's last 8 frames
        m = w[:, -8:, :].mean(axis=(1, 2))
        return np.broadcast_to(m[:, None, None], (w.shape[0], 24, 1)).copy()

    x = (0.1 * np.random.default_rng(0).standard_normal(24000) * np.linspace(0, 1, 24000)).astype(np.float32)
    assert np.array_equal(stream_probs(own, x, 96, 4, fill_frames=8), stream_probs(own, x, 96, 4))
    held = stream_probs(future, x, 96, 4, fill_frames=8, fill_decay_db=0.0)
    newest = stream_probs(lambda w: np.broadcast_to(w[:, -1:, :].mean(axis=2)[:, :, None], (w.shape[0], 24, 1)),
                          x, 96, 4)  # fmt: skip
    assert held.shape == newest.shape and np.allclose(held, newest, atol=1e-5)
    assert not np.allclose(held, stream_probs(future, x, 96, 4), atol=1e-3)


def test_dataset_label_weight_scales_only_that_datasets_training_labels(tiny_world: dict[str, Path]) -> None:
    """`transfer.dataset_label_weight`: the training windows of a weighted dataset carry their ground-truth
    label at that value (the teacher's targets untouched); other datasets' labels and every validation
    window keep 1, and the weighted sets are cached apart from the unweighted ones."""
    from dataclasses import replace

    from quantize.pipeline import setup, transfer_file, transfer_sets

    cfg = tiny_config(tiny_world)
    s = setup(cfg)
    plain_train, plain_val = transfer_sets(s, 0)
    weighted_cfg = replace(cfg, transfer=replace(cfg.transfer, dataset_label_weight={"urbansound8k": 0.25}))
    ws = setup(weighted_cfg)
    assert transfer_file(ws, 0, "train") != transfer_file(s, 0, "train")
    train, val = transfer_sets(ws, 0)
    assert np.array_equal(train.x, plain_train.x) and np.array_equal(train.ev_logits, plain_train.ev_logits)
    scaled = plain_train.gt * 0.25
    changed = np.flatnonzero(np.any(train.gt != plain_train.gt, axis=1))
    assert changed.size, "no UrbanSound8K training window"
    assert np.array_equal(train.gt[changed], scaled[changed])
    assert set(np.unique(train.gt)) == {0.0, 0.25, 1.0}  # ESC-50 windows keep 1
    assert np.array_equal(val.gt, plain_val.gt)


def test_teacher_scores_log_mel_patches_as_their_waveforms(tiny_world: dict[str, Path], tmp_path: Path) -> None:
    """`logits_logmel` (the teacher on a transfer set's mixtures) equals the teacher on the waveform the
    patch came from; a patch of the wrong shape is refused, and so is a teacher that computes its own
    frontend (TFLite YAMNet takes waveforms)."""
    t = OnnxTeacher(tiny_world["teacher"], 96)
    rng = np.random.default_rng(3)
    waves = np.stack([tone(f, 1.0, rng)[: window_samples(96)] for f in (300.0, 1200.0, 3000.0)])
    patches = np.stack([logmel(w)[:96] for w in waves])
    np.testing.assert_array_equal(t.logits_logmel(patches), t.logits(waves))
    with pytest.raises(ModelError, match=r"log-mel patches \[N, 96, 64\]"):
        t.logits_logmel(patches[:, :48])
    pytest.importorskip("litert_torch")
    tfl = load_teacher(_tiny_yamnet_tflite(tmp_path / "yamnet.tflite", 96), tmp_path, 96)
    with pytest.raises(ModelError, match="cannot score log-mel patches"):
        tfl.logits_logmel(patches)


def test_mixture_kd_runs_the_teacher_on_every_transfer_window_once(tiny_world: dict[str, Path]) -> None:
    """With `distill.mixture_kd`, each transfer set carries the teacher's logits of its own windows (the
    student's classes), cached beside the set; without it, none."""
    from dataclasses import replace

    from quantize.pipeline import mixture_file, setup, transfer_file, transfer_sets

    cfg = tiny_config(tiny_world)
    plain_train, _ = transfer_sets(setup(cfg), 0)
    assert plain_train.mix_logits is None
    mcfg = replace(cfg, distill=replace(cfg.distill, mixture_kd=0.5))
    s = setup(mcfg)
    train, val = transfer_sets(s, 0)
    for ts in (train, val):
        assert ts.mix_logits is not None
        np.testing.assert_array_equal(ts.mix_logits, s.teacher.logits_logmel(ts.x)[:, s.teacher_cols])
    assert np.array_equal(train.x, plain_train.x)
    mix_file = mixture_file(transfer_file(s, 0, "train"))
    assert mix_file.parent == transfer_file(s, 0, "train").parent and mix_file.name.endswith("-mix.npz")
    assert mix_file.exists()
    before = mix_file.stat().st_mtime_ns
    again, _ = transfer_sets(setup(mcfg), 0)
    assert mix_file.stat().st_mtime_ns == before
    assert again.mix_logits is not None and np.array_equal(again.mix_logits, train.mix_logits)


@pytest.mark.parametrize(("rt60", "drr"), [(0.3, 6.0), (0.9, -3.0)])
def test_synthetic_room_decays_at_its_rt60_with_its_direct_to_reverberant_ratio(rt60: float, drr: float) -> None:
    """The impulse response's tail falls 60 dB in `rt60` (Schroeder backward integration, fitted from -5 to
    -35 dB as T30) and carries `drr` dB less energy than its direct path; `reverberate` is the window of
    the full convolution, the tails of the samples before it included."""
    from quantize.audio import reverberate, synthetic_rir

    rng = np.random.default_rng(1)
    h = synthetic_rir(rng, rt60, drr, 16000).astype(np.float64)
    assert abs(10 * np.log10(h[0] ** 2 / np.sum(h[1:] ** 2)) - drr) < 0.01
    energy = np.cumsum(h[1:][::-1] ** 2)[::-1]
    decay = 10 * np.log10(energy / energy[0])
    t30 = 2.0 * (np.argmax(decay < -35.0) - np.argmax(decay < -5.0)) / 16000
    assert abs(t30 - rt60) < 0.05 * rt60, t30
    x = rng.standard_normal(40000).astype(np.float32)
    for start in (-3000, 0, 20000, 35000):  # windows reaching outside the signal: zeros there
        got = reverberate(x, start, 15600, h.astype(np.float32))
        padded = np.concatenate([np.zeros(20000), x, np.zeros(20000)])
        ref = np.convolve(padded, h)[20000 + start : 20000 + start + 15600]
        np.testing.assert_allclose(got, ref, atol=2e-5)


def test_reverb_changes_only_the_audio_of_the_windows_it_picks(tiny_world: dict[str, Path]) -> None:
    """`transfer.reverb_fraction`: the same windows (event, position, background, SNR and so the cached
    teacher targets) with some events heard through a room; 0 keeps the cache files' names of the runs
    made before the option existed."""
    from dataclasses import replace

    from quantize.pipeline import setup, transfer_file, transfer_sets

    cfg = tiny_config(tiny_world)
    s = setup(cfg)
    plain, _ = transfer_sets(s, 0)
    assert transfer_file(setup(replace(cfg, transfer=replace(cfg.transfer, reverb_rt60_s=(0.3, 0.4)))), 0, "train") == (
        transfer_file(s, 0, "train")
    )  # an unused room setting does not rename the cache
    rs = setup(replace(cfg, transfer=replace(cfg.transfer, reverb_fraction=0.5)))
    assert transfer_file(rs, 0, "train") != transfer_file(s, 0, "train")
    rev, _ = transfer_sets(rs, 0)
    for f in ("ev_logits", "ev_mask", "bg_logits", "bg_weight", "gt"):
        assert np.array_equal(getattr(rev, f), getattr(plain, f)), f
    changed = np.any(rev.x != plain.x, axis=(1, 2))
    events = np.any(plain.ev_mask > 0, axis=1)
    assert not changed[~events].any()  # background-only windows hold no event to reverberate
    share = changed[events].mean()
    assert 0.3 < share < 0.7, share
