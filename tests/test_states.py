"""DSP-derived states on synthetic signals with known trajectories (edge.states), and their tokens."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ConfigError, InputError, TokenError
from edge.messages import Event, StateEstimate
from edge.states import (
    SpeedConfig,
    dsp_states,
    lateral_state,
    motion_state,
    speed_state,
    speed_track,
    temporal_state,
)
from edge.token_codec import decode_json, encode_json, validate_token
from edge.tokens import TokenBuilder

SR = 16000


def engine(f0_start: float, f0_end: float, dur: float = 3.0, seed: int = 0, harmonics: int = 12) -> np.ndarray:
    """A harmonic engine whose fundamental moves exponentially from f0_start to f0_end, in noise."""
    t = np.arange(int(dur * SR)) / SR
    f0 = f0_start * (f0_end / f0_start) ** (t / dur)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(h * phase + h) / h**0.7 for h in range(1, harmonics + 1))
    rng = np.random.default_rng(seed)
    return (0.1 * x / np.abs(x).max() + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize(
    ("f0a", "f0b", "want"),
    [(60.0, 90.0, "accelerating"), (90.0, 60.0, "decelerating"), (70.0, 70.0, "steady"), (40.0, 48.0, "accelerating")],
)
def test_speed_state_follows_the_harmonic_trajectory(f0a: float, f0b: float, want: str) -> None:
    st = speed_state(engine(f0a, f0b), SR)
    assert st is not None and st.name == want and st.group == "speed"
    assert st.p > 0.5


def test_speed_trend_measures_the_known_rate_in_octaves_per_second() -> None:
    tr = speed_track(engine(60.0, 90.0, dur=3.0), SR)
    assert tr.trend == pytest.approx(np.log2(90 / 60) / 3.0, rel=0.05)


def test_speed_has_no_octave_errors_when_the_fundamental_is_missing() -> None:
    # harmonics 2..12 only: a pitch tracker may jump an octave; the spectral shift does not care
    t = np.arange(3 * SR) / SR
    f0 = 50.0 * (75.0 / 50.0) ** (t / 3.0)
    ph = 2 * np.pi * np.cumsum(f0) / SR
    x = (0.01 * np.sum([np.sin(h * ph) for h in range(2, 13)], axis=0)).astype(np.float32)
    tr = speed_track(x, SR)
    assert tr.trend == pytest.approx(np.log2(1.5) / 3.0, rel=0.05)


def test_noise_has_no_speed_state() -> None:
    x = (0.1 * np.random.default_rng(1).standard_normal(3 * SR)).astype(np.float32)
    assert speed_state(x, SR) is None


def test_short_audio_has_no_speed_or_motion_state() -> None:
    x = engine(60, 90, dur=0.5)
    assert speed_state(x, SR) is None
    assert motion_state(x, SR) is None


def test_level_ramp_is_approaching_then_receding() -> None:
    x = engine(70, 70, dur=3.0)
    ramp = np.geomspace(0.1, 1.0, len(x)).astype(np.float32)  # +20 dB over 3 s
    up, down = motion_state(x * ramp, SR), motion_state(x * ramp[::-1], SR)
    assert up is not None and up.name == "approaching"
    assert down is not None and down.name == "receding"
    assert motion_state(x, SR) is None  # constant level: neither


def test_pass_by_with_doppler_is_passing() -> None:
    # a source at 20 m/s, 5 m from the listener: level 1/r and Doppler f c / (c - v cos)
    dur, c, v, d = 4.0, 343.0, 20.0, 5.0
    t = np.arange(int(dur * SR)) / SR
    along = v * (t - dur / 2)
    r = np.hypot(d, along)
    doppler = c / (c + v * along / r)
    f0 = 80.0 * doppler
    ph = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(h * ph) / h for h in range(1, 10)) * (d / r)
    st = motion_state(x.astype(np.float32), SR)
    assert st is not None and st.name == "passing"


def test_azimuth_track_gives_the_direction_of_travel() -> None:
    t = np.linspace(0.0, 3.0, 13)
    ltr = lateral_state(t, np.linspace(70.0, -70.0, 13))  # +y (left) to -y (right), in front
    rtl = lateral_state(t, np.linspace(-70.0, 70.0, 13))
    behind = lateral_state(t, np.linspace(120.0, 240.0, 13))  # behind, left to right: az increases
    assert ltr is not None and ltr.name == "left-to-right"
    assert rtl is not None and rtl.name == "right-to-left"
    assert behind is not None and behind.name == "left-to-right"
    assert lateral_state(t, np.full(13, 30.0)) is None  # a still source
    assert lateral_state(t[:2], np.array([0.0, 50.0])) is None  # too few points


def test_impulses_are_impulsive_and_an_engine_is_continuous() -> None:
    x = np.zeros(2 * SR, np.float32)
    rng = np.random.default_rng(3)
    for k in range(4):
        x[k * 8000 + 100 : k * 8000 + 260] = rng.standard_normal(160) * np.exp(-np.arange(160) / 30)
    x += 1e-4 * rng.standard_normal(len(x)).astype(np.float32)
    imp, cont = temporal_state(x, SR), temporal_state(engine(60, 60), SR)
    assert imp is not None and imp.name == "impulsive"
    assert cont is not None and cont.name == "continuous"


def test_impulsive_sound_gets_no_motion_state() -> None:
    x = np.zeros(3 * SR, np.float32)
    for k in range(3):
        x[k * SR : k * SR + 200] = np.hanning(200) * (0.2 + 0.3 * k)
    names = {s.name for s in dsp_states(x, SR)}
    assert "impulsive" in names and not names & {"approaching", "receding", "passing"}


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 100), np.float32), np.array([0.0, np.nan] * 800, np.float32)],
)
def test_bad_audio_is_rejected(bad: np.ndarray) -> None:
    with pytest.raises(InputError):
        speed_state(bad, SR)


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ConfigError, match="rate_oct_s"):
        SpeedConfig(rate_oct_s=0.0)
    with pytest.raises(InputError, match="one length"):
        lateral_state([0.0, 1.0], [0.0])


def _event(states: tuple[StateEstimate, ...], traits: tuple[StateEstimate, ...] = ()) -> Event:
    return Event(id=1, phase="on", label="Truck", mid="/m/07r04", code=57, p=0.8, onset=0.0, offset=None,
                 emitted=0.5, seq=0, level_dbfs=-20.0, states=states, traits=traits)  # fmt: skip


def test_states_travel_in_json_tokens() -> None:
    ev = _event(
        (StateEstimate("accelerating", 0.93, "speed"), StateEstimate("approaching", 0.71, "motion")),
        (StateEstimate("heavy", 1.0, "weight"),),
    )
    tok = TokenBuilder("dev", "m", wall_start=1000.0).build(ev)
    assert tok["st"] == "accelerating" and tok["sp"] == 0.93
    assert tok["sx"] == [["approaching", 0.71]] and tok["tr"] == ["heavy"]
    back = decode_json(encode_json(tok))
    assert back["st"] == "accelerating" and back["sx"] == [["approaching", 0.71]] and back["tr"] == ["heavy"]


def test_malformed_state_keys_are_rejected() -> None:
    tok = TokenBuilder("dev", "m", wall_start=1000.0).build(_event((StateEstimate("steady", 0.9, "speed"),)))
    for key, value, msg in [
        ("sp", 1.5, "'sp'"),
        ("st", "", "'st'"),
        ("sx", [["approaching"]], "sx"),
        ("tr", "heavy", "'tr'"),
    ]:
        with pytest.raises(TokenError, match=msg):
            validate_token({**tok, key: value})
    with pytest.raises(TokenError, match="without a state"):
        validate_token({k: v for k, v in tok.items() if k != "st"})


def test_captions_say_the_states_and_traits() -> None:
    from cloud.backends.template import describe
    from cloud.prompt import build_messages
    from cloud.scene import SceneWindow

    w = SceneWindow("dev", window_s=30.0)
    base = {"v": 1, "dev": "dev", "id": 3, "lat": 200, "lbl": "Truck", "mid": "/m/07r04", "c": 57, "p": 0.8,
            "m": "m", "az": 90.0, "lvl": -20.0, "st": "accelerating", "sp": 0.9, "sx": [["approaching", 0.7]],
            "tr": ["heavy"]}  # fmt: skip
    w.feed({**base, "seq": 0, "ph": "on", "t0": 1000.0, "t1": None})
    w.feed({**base, "seq": 1, "ph": "off", "t0": 1000.0, "t1": 1004.0})
    scene = w.snapshot(1010.0)
    text = describe(scene)
    assert "truck (heavy)" in text and "to the left" in text and "accelerating" in text
    user = build_messages(scene)[-1]["content"]
    assert "state=accelerating(0.90)" in user and "traits=heavy" in user


def _moving_source(array_mics: np.ndarray, az_from: float, az_to: float, dur: float = 3.0) -> np.ndarray:
    """A broadband source (noise + harmonics) moving in azimuth at constant rate, far field, as the
    array's microphones hear it: each 50 ms slice delayed per microphone by the plane-wave delay."""
    rng = np.random.default_rng(11)
    n = int(dur * SR)
    s = rng.standard_normal(n) * 0.05
    step = int(0.05 * SR)
    out = np.zeros((len(array_mics), n))
    for i in range(0, n, step):
        az = np.radians(az_from + (az_to - az_from) * (i + step / 2) / n)
        u = np.array([np.cos(az), np.sin(az), 0.0])
        seg = s[i : i + step]
        f = np.fft.rfftfreq(2 * step, 1 / SR)
        spec = np.fft.rfft(seg, 2 * step)
        for m, pos in enumerate(array_mics):
            delay = -(pos @ u) / 343.0  # nearer the source: earlier
            y = np.fft.irfft(spec * np.exp(-2j * np.pi * f * delay), 2 * step)[: len(seg)]
            out[m, i : i + len(seg)] += y
    return out.astype(np.float32)


def test_annotated_pipeline_adds_lateral_and_speed_states_to_an_event() -> None:
    from boards.profiles import resolve
    from edge.annotate import AnnotatedPipeline
    from edge.inference import Model
    from edge.messages import Block
    from edge.pipeline import EdgePipeline

    array = resolve("respeaker-4mic-hat", None)
    pipe = AnnotatedPipeline(EdgePipeline(Model(), array))
    x = _moving_source(np.asarray(array.mics), 60.0, -60.0)
    x += engine(60, 90, dur=3.0)[None, :] * 0.5  # the same engine sound on every channel, accelerating
    for i in range(0, x.shape[1], 1600):
        pipe.process(Block(x[:, i : i + 1600], i / SR, i // 1600, SR))
    ev = Event(id=0, phase="off", label="Car", mid="/m/0k4j", code=53, p=0.9, onset=0.0, offset=3.0,
               emitted=3.0, seq=0, level_dbfs=-20.0)  # fmt: skip
    out = pipe.annotate(ev)
    names = {s.name: s.group for s in out.states}
    assert names.get("left-to-right") == "lateral"
    assert names.get("accelerating") == "speed"
    traits = {t.group: t for t in out.traits}
    assert traits["weight"].name == "light" and traits["weight"].p == 1.0  # "Car" implies it (label_traits)
    # the shipped model's learned fuel head gives the fuel trait when it is confident
    mono = x.mean(axis=0)
    heads = {s.group: s for s in pipe._head_states(mono, "Car")}
    assert set(heads) == {"fuel", "weight"} and heads["fuel"].name in ("petrol", "diesel")
    assert 0.0 < heads["fuel"].p <= 1.0
    assert ("fuel" in traits) == (heads["fuel"].p >= 0.5)
    dog = pipe.annotate(dataclasses.replace(ev, label="Dog", mid="/m/0bt9lr", code=18))
    assert "accelerating" not in {s.name for s in dog.states}  # the ontology: dogs do not accelerate
    assert not dog.traits and pipe._head_states(mono, "Dog") == []  # no fuel or weight for a dog
    truck = pipe.annotate(dataclasses.replace(ev, label="Truck", mid="/m/07r04", code=57))
    assert {t.group: t.name for t in truck.traits}["weight"] == "heavy"  # the label's own trait beats the head


def test_states_do_not_depend_on_the_block_size() -> None:
    """Invariant: the annotated events of the sample scene are the same for 10 ms and 1 s blocks."""
    from boards.profiles import resolve
    from edge.annotate import AnnotatedPipeline
    from edge.inference import Model
    from edge.pipeline import EdgePipeline, run
    from edge.sources import FileSource

    scene = str(Path(__file__).resolve().parents[1] / "edge" / "data" / "sample_scene.flac")
    array = resolve("respeaker-4mic-hat", None)
    model = Model()
    out = []
    for block in (160, 16000):
        pipe = AnnotatedPipeline(EdgePipeline(model, array))
        evs = run(FileSource(scene, block_size=block, expected_channels=4, array=array), pipe)  # type: ignore[arg-type]
        out.append([(e.id, e.phase, e.label, e.states, e.traits) for e in evs])
    assert out[0] == out[1]
    assert any(states for *_, states, _ in out[0])  # the scene's events do carry states


def test_learned_traits_evaluation_scores_the_test_split_only(tmp_path: Path) -> None:
    """`tympan evaluate states` scores the heads on the vehicles test split through the device code."""
    import soundfile as sf

    from edge.evaluation.states_eval import _learned_traits

    (tmp_path / "audio").mkdir()
    rng = np.random.default_rng(0)
    rows = [("ref.flac", "referentni", "petrol_car"), ("a.flac", "test", "petrol_car"),
            ("b.flac", "test", "bus"), ("c.flac", "test", "chainsaw")]  # fmt: skip
    for name, *_ in rows:
        sf.write(tmp_path / "audio" / name, engine(40 + 10 * rng.random(), 50, dur=2.0) * 0.3, SR)
    with open(tmp_path / "meta.csv", "w") as f:
        f.write("path,split,class_hr,class_en,orig_sr,n_samples\n")
        f.writelines(f"{n},{s},x,{c},16000,32000\n" for n, s, c in rows)
    r = _learned_traits(tmp_path)
    assert r["by_group"]["fuel"]["n"] == 1 and r["by_group"]["weight"]["n"] == 2  # chainsaw: no trait truth
    assert {c["file"] for c in r["clips"]} == {"a.flac", "b.flac"}
    for c in r["clips"]:
        assert c["predicted"] in (*{"fuel": ("petrol", "diesel"), "weight": ("heavy", "light")}[c["group"]], None)
