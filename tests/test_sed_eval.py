"""`tympan evaluate sed`: soundscape truth, DCASE metrics on hand-made cases, thresholds files, the
command end to end on tiny scenes, and the inputs it must reject."""

from __future__ import annotations

import itertools
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from boards.profiles import load_array
from edge.errors import ConfigError, InputError
from edge.evaluation.soundscape import (
    LabelMap,
    Scene,
    SynthConfig,
    TruthEvent,
    backgrounds_from_spec,
    clips_from_spec,
    synthesize,
)
from edge.inference import Label
from edge.main import main
from edge.sed import SedConfig, SedStage, load_thresholds

pytest.importorskip("pyroomacoustics")
se = pytest.importorskip("edge.evaluation.sed_eval")
se.sed_scores_eval()  # the eval extra

FS = 16000
BURST_S = (0.3, 0.9)  # where each test clip is loud


def write_clip(path: Path, seed: int, seconds: float = 1.5) -> None:
    """Silence, a 0.6 s noise burst (0.3-0.9 s), silence: the truth must be the burst only."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * FS), np.float32)
    a, b = (int(t * FS) for t in BURST_S)
    x[a:b] = rng.normal(0, 0.2, b - a)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, FS)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    events = tmp_path / "events"
    for i in range(3):
        write_clip(events / "dog" / f"d{i}.wav", i)  # an ESC-50 label: mapped to Dog (+ Bark)
        write_clip(events / "Speech" / f"s{i}.wav", 10 + i)  # a model label as it is
    bgs = tmp_path / "bg"
    bgs.mkdir()
    rng = np.random.default_rng(99)
    for i in range(2):
        sf.write(bgs / f"b{i}.wav", rng.normal(0, 0.01, 2 * FS).astype(np.float32), FS)
    return events, bgs


def level_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20))


def test_folder_labels_are_mapped(folders: tuple[Path, Path]) -> None:
    clips = clips_from_spec(str(folders[0]), Path("unused"), LabelMap.default())
    by_label = {c.label: c.aliases for c in clips}
    assert set(by_label) == {"Dog", "Speech"}
    assert "Bark" in by_label["Dog"]


def test_soundscape_puts_events_where_the_truth_says(folders: tuple[Path, Path]) -> None:
    events, bgs = folders
    clips = clips_from_spec(str(events), Path("unused"), LabelMap.default())
    cfg = SynthConfig(duration_s=8.0, events_per_scene=3, max_polyphony=1, snr_db=(20.0, 20.0))
    scene = synthesize("s", clips, backgrounds_from_spec(str(bgs), Path("unused"), "eval"), cfg, seed=3)
    assert scene.audio.shape == (1, 8 * FS)
    assert len(scene.events) == 3
    x = scene.audio[0]
    burst = BURST_S[1] - BURST_S[0]
    spans = sorted((e.onset, e.offset) for e in scene.events)
    for (_, b), (c, _) in itertools.pairwise(spans):
        assert b <= c, "polyphony 1: events must not overlap"
    for e in scene.events:
        assert e.offset - e.onset == pytest.approx(burst, abs=0.021)  # the burst, not the clip's silence
        inside = x[int(e.onset * FS) : int(e.offset * FS)]
        before = x[int((e.onset - 0.2) * FS) : int((e.onset - 0.02) * FS)]
        assert level_db(inside) > level_db(before) + 15.0
    # outside every event there is only background
    mask = np.ones(len(x), bool)
    for a, b in spans:
        mask[int(a * FS) : int(b * FS)] = False
    assert level_db(x[mask]) < min(level_db(x[int(a * FS) : int(b * FS)]) for a, b in spans) - 15.0


def test_soundscape_in_a_room_for_an_array(folders: tuple[Path, Path]) -> None:
    events, bgs = folders
    clips = clips_from_spec(str(events), Path("unused"), LabelMap.default())
    array = load_array("respeaker-4mic-hat")
    cfg = SynthConfig(duration_s=4.0, events_per_scene=1, snr_db=(25.0, 25.0), rt60_s=(0.2, 0.25))
    scene = synthesize("r", clips, backgrounds_from_spec(str(bgs), Path("unused"), "eval"), cfg, 7, array=array)
    assert scene.audio.shape == (4, 4 * FS)
    (e,) = scene.events
    for ch in scene.audio:
        onset = int(e.onset * FS)
        # the direct sound reaches every mic within a few ms of the truth onset (array 8 cm across)
        assert level_db(ch[onset : onset + 800]) > level_db(ch[onset - 3200 : onset - 320]) + 15.0


def test_same_seed_same_scene(folders: tuple[Path, Path]) -> None:
    events, bgs = folders
    clips = clips_from_spec(str(events), Path("unused"), LabelMap.default())
    cfg = SynthConfig(duration_s=5.0, events_per_scene=2)
    bg = backgrounds_from_spec(str(bgs), Path("unused"), "eval")
    a, b = synthesize("a", clips, bg, cfg, 11), synthesize("b", clips, bg, cfg, 11)
    assert a.events == b.events and np.array_equal(a.audio, b.audio)


# --- metrics on a hand-made case ------------------------------------------------------------------
SCENE = Scene(
    "a",
    np.zeros((1, 10 * FS), np.float32),
    (TruthEvent(1.0, 2.0, "Dog"), TruthEvent(5.0, 6.0, "Dog"), TruthEvent(3.0, 4.0, "Speech")),
    (),
)


def test_event_and_segment_f1_known_values() -> None:
    """Dog (1.1-2.1) matches (onset and offset within 200 ms); Dog (5.3-6.0) starts 300 ms late: a
    false alarm and a miss; Speech (8.0-8.5) is a false alarm; Speech 3-4 is missed.
    Events: TP 1, FP 2, FN 2 -> micro F1 1/3; Dog F1 1/2, Speech 0 -> macro 1/4.
    1 s segments: Dog TP {1, 5}, FP {2}; Speech FP {8}, FN {3} -> P 2/4, R 2/3, F1 4/7; macro (0.8 + 0) / 2."""
    spans = {"a": [(1.1, 2.1, "Dog"), (5.3, 6.0, "Dog"), (8.0, 8.5, "Speech")]}
    m = se.event_metrics(spans, [SCENE], ["Dog", "Speech"])
    assert m["event_f1"]["micro"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["event_f1"]["macro"] == pytest.approx(0.25, abs=1e-4)
    assert m["segment_f1"]["micro"] == pytest.approx(4 / 7, abs=1e-4)
    assert m["segment_f1"]["macro"] == pytest.approx(0.4, abs=1e-4)
    assert m["per_class_n_ref"] == {"Dog": 2, "Speech": 1}


def test_offset_collar_grows_with_the_event() -> None:
    """Offset collar max(200 ms, 20%): a 5 s event may end 0.9 s late, not 1.1 s."""
    scene = Scene("b", np.zeros((1, 10 * FS), np.float32), (TruthEvent(1.0, 6.0, "Dog"),), ())
    assert se.event_metrics({"b": [(1.0, 6.9, "Dog")]}, [scene], ["Dog"])["event_f1"]["micro"] == 1.0
    assert se.event_metrics({"b": [(1.0, 7.1, "Dog")]}, [scene], ["Dog"])["event_f1"]["micro"] == 0.0


def test_onset_only_event_f1_ignores_offsets_but_not_onsets() -> None:
    """The issue's target names a 200 ms onset collar: any offset counts, an onset 0.25 s late does not."""
    scene = Scene("b", np.zeros((1, 10 * FS), np.float32), (TruthEvent(1.0, 6.0, "Dog"),), ())
    late_end = se.event_metrics({"b": [(1.1, 9.5, "Dog")]}, [scene], ["Dog"])
    assert late_end["event_f1"]["micro"] == 0.0 and late_end["event_f1_onset_only"]["micro"] == 1.0
    late_start = se.event_metrics({"b": [(1.25, 6.0, "Dog")]}, [scene], ["Dog"])
    assert late_start["event_f1_onset_only"]["micro"] == 0.0


def test_psds1_of_perfect_and_inverted_scores() -> None:
    hop = 0.04
    t = np.arange(250) * hop + hop / 2
    perfect = np.stack([((t >= 1) & (t < 2)) | ((t >= 5) & (t < 6)), (t >= 3) & (t < 4)], 1).astype(np.float32)
    ok, _ = se.psds1({"a": se.score_frames(perfect, hop, 10.0, ["Dog", "Speech"])}, [SCENE])
    bad, _ = se.psds1({"a": se.score_frames(1 - perfect, hop, 10.0, ["Dog", "Speech"])}, [SCENE])
    assert ok == pytest.approx(1.0) and bad == pytest.approx(0.0)


def test_latency_is_emission_minus_true_onset_of_found_onsets() -> None:
    dets = {"a": [(1.1, 2.1, "Dog", 1.25), (5.3, 6.0, "Dog", 5.5), (3.05, 3.9, "Dog", 3.2)]}
    assert se.latencies(dets, [SCENE]) == [pytest.approx(250.0)]  # 5.3 is outside the collar, 3.05 the wrong class


# --- thresholds files -----------------------------------------------------------------------------
LABELS = (Label(0, "/m/0bt9lr", "Dog"), Label(1, "/m/09x0r", "Speech"))


def test_thresholds_file_round_trip(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"thresholds": {"Dog": 0.3}, "model": "x"}))
    stage = SedStage(LABELS, np.full(2, 0.5, np.float32), SedConfig(thresholds=load_thresholds(f)))
    assert stage.on_thr.tolist() == pytest.approx([0.3, 0.5])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[0.3]", "expected a JSON object"),
        ('{"thresholds": {}}', "expected a JSON object"),
        ('{"thresholds": {"Dog": 1.5}}', "'Dog'"),
        ('{"thresholds": {"Dog": "high"}}', "'Dog'"),
        ('{"thresholds": {"Dog": true}}', "'Dog'"),
        ('{"thresholds": {"Dog": NaN}}', "'Dog'"),
    ],
)
def test_malformed_thresholds_file_rejected(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "t.json"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_thresholds(f)


def test_thresholds_for_unknown_labels_rejected() -> None:
    with pytest.raises(ConfigError, match="Unicorn"):
        SedStage(LABELS, np.full(2, 0.5, np.float32), SedConfig(thresholds=(("Unicorn", 0.3),)))


def test_missing_thresholds_file_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros(FS, np.float32), FS)
    assert main(["listen", "--input", str(wav), "--thresholds", str(tmp_path / "nope.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tympan: error:") and "nope.json" in err and "\n" not in err


# --- bad inputs ---------------------------------------------------------------------------------
def test_empty_event_folder_rejected(tmp_path: Path) -> None:
    (tmp_path / "dog").mkdir()
    with pytest.raises(InputError, match="no labelled clips"):
        clips_from_spec(str(tmp_path), Path("unused"), LabelMap.default())


def test_missing_event_folder_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        clips_from_spec(str(tmp_path / "nowhere"), Path("unused"), LabelMap.default())


def test_empty_background_folder_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no audio files"):
        backgrounds_from_spec(str(tmp_path), Path("unused"), "dev")


def test_unknown_label_rejected(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    write_clip(tmp_path / "ev" / "Unicorn" / "u.wav", 0)
    clips = clips_from_spec(str(tmp_path / "ev"), Path("unused"), LabelMap.default())
    with pytest.raises(ConfigError, match=r"'Unicorn'.*unknown to the model"):
        se.ClassTable.build(clips, ("Dog", "Bark", "Speech"))


@pytest.mark.parametrize("bad", [{"snr_db": (20.0, 10.0)}, {"events_per_scene": 0}, {"duration_s": 1.0}])
def test_bad_synthesis_settings_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError):
        SynthConfig(**bad)


# --- the command end to end -------------------------------------------------------------------
def dog_folder(root: Path) -> Path:
    """`root/dog/*.wav`: the bundled sample scene's dog (mic 0, 1-3 s; ESC-10, CC BY), at three gains."""
    x, fs = sf.read(str(resources.files("edge").joinpath("data", "sample_scene.flac")), dtype="float32")
    assert fs == FS
    for i, gain in enumerate((1.0, 0.7, 0.5)):
        write = root / "dog" / f"dog{i}.wav"
        write.parent.mkdir(parents=True, exist_ok=True)
        sf.write(write, gain * x[FS : 3 * FS, 0], FS)
    return root


@pytest.mark.parametrize(("mode", "hop", "instant"), [("balanced", 12, 0.0), ("low", 4, 1.25)])
def test_evaluate_sed_end_to_end(
    tmp_path: Path, folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str], mode: str, hop: int, instant: float
) -> None:
    events = dog_folder(tmp_path / "dogs")
    bgs = folders[1]
    out = tmp_path / "report"
    rc = main([
        "evaluate", "sed", "--mono", "--dev-events", str(events), "--eval-events", str(events),
        "--backgrounds", str(bgs), "--dev-scenes", "1", "--eval-scenes", "1", "--duration", "5",
        "--events-per-scene", "2", "--snr", "20", "30", "--min-dev-events", "1", "--out", str(out), "--json",
        "--latency", mode,
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sed = report["sed"]
    assert (sed["latency"], sed["model_hop_frames"], sed["instant_on_ratio"]) == (mode, hop, instant)
    assert sed["lookahead_fill_frames"] == (8 if mode == "low" else 0)
    ev = report["eval"]
    for key in ("event_f1", "segment_f1"):
        assert 0.0 <= ev[key]["micro"] <= 1.0
    assert 0.0 <= ev["psds1"] <= 1.0
    assert ev["n_truth_events"] >= 2
    assert (out / "scores_over_threshold.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "sed_eval.json").read_text())["eval"] == ev
    # the tuned thresholds load, and name only labels of the evaluated classes' aliases
    tuned = dict(load_thresholds(out / "thresholds.json"))
    assert set(tuned) == {"Dog", "Bark"}
    # never below the model's condition floors of the mode (tuning tries no candidate under them)
    from edge.inference import Model

    m = Model(None)
    floors = dict(zip(m.label_names, m.floors_for(mode).tolist(), strict=True))
    assert all(t >= round(floors[name], 4) for name, t in tuned.items())
    # and `tympan listen` takes them
    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros(FS, np.float32), FS)
    listen = ["listen", "--input", str(wav), "--thresholds", str(out / "thresholds.json"), "--json"]
    assert main([*listen, "--latency", mode]) == 0


def test_evaluate_sed_rejects_unknown_folder_label(
    tmp_path: Path, folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    write_clip(tmp_path / "ev" / "Unicorn" / "u.wav", 0)
    rc = main(["evaluate", "sed", "--mono", "--eval-events", str(tmp_path / "ev"), "--backgrounds",
               str(folders[1]), "--dev-scenes", "0", "--eval-scenes", "1", "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 1
    assert "Unicorn" in capsys.readouterr().err


def test_esc50_fold_halves_are_disjoint_by_source_recording(tmp_path: Path) -> None:
    """`esc50:5:dev` and `esc50:5:eval` split fold 5 by source recording (takes of one recording together)."""
    (tmp_path / "esc50" / "audio").mkdir(parents=True)
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i in range(40):
        for take in "AB":
            rows.append(f"5-{i}-{take}-0.flac,5,0,dog,True,{i},{take}")
    rows.append("1-0-A-0.flac,1,0,dog,True,999,A")
    (tmp_path / "esc50" / "esc50_meta.csv").write_text("\n".join(rows) + "\n")
    lm = LabelMap.default()
    dev = {c.path.name for c in clips_from_spec("esc50:5:dev", tmp_path, lm)}
    ev = {c.path.name for c in clips_from_spec("esc50:5:eval", tmp_path, lm)}
    assert dev and ev and not dev & ev
    assert dev | ev == {c.path.name for c in clips_from_spec("esc50:5", tmp_path, lm)}
    assert {n.split("-")[1] for n in dev}.isdisjoint({n.split("-")[1] for n in ev})
    with pytest.raises(ConfigError, match="half"):
        clips_from_spec("esc50:5:test", tmp_path, lm)


def test_overrides_are_floored_label_by_label() -> None:
    """`ClassTable.overrides(per_class, floors)`: each alias of a class takes the class's threshold, raised
    to that label's own floor; without floors, the thresholds as given."""
    from edge.evaluation.sed_eval import ClassTable

    table = ClassTable(("dog", "glass"), ((0, 1), (2,)), ("Dog", "Bark", "Glass"))
    floors = np.array([0.1, 0.45, 0.95], np.float32)
    assert dict(table.overrides({"dog": 0.3, "glass": 0.5}, floors)) == {"Dog": 0.3, "Bark": 0.45, "Glass": 0.95}
    assert dict(table.overrides({"dog": 0.3})) == {"Dog": 0.3, "Bark": 0.3}
