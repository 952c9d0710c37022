"""The edge pipeline on scenes with an exactly known onset and direction (fractional-delay plane waves)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from boards.profiles import load_array
from edge.inference import Model
from edge.messages import Block, Event
from edge.pipeline import EdgePipeline, run
from tests.scenes import FS, ang_err, plane_wave

SCENE = str(resources.files("edge").joinpath("data", "sample_scene.flac"))
DOG_LABELS = {"Dog", "Bark", "Animal", "Domestic animals, pets", "Bow-wow", "Growling"}


@pytest.fixture(scope="module")
def model() -> Model:
    return Model(None)


def dog_scene(mics: np.ndarray, az: float, onset_s: float, seconds: float = 5.0) -> np.ndarray:
    """The sample scene's dog (mic 0, 1.0-3.0 s, CC BY) as a plane wave from `az`, starting at `onset_s`."""
    x, _ = sf.read(SCENE, dtype="float64")
    dog = x[FS : 3 * FS, 0]
    start = int(np.argmax(np.abs(dog) > 0.05 * np.abs(dog).max()))  # first sample of the bark
    sig = np.zeros(int(seconds * FS))
    n = min(len(dog) - start, len(sig) - int(onset_s * FS))
    sig[int(onset_s * FS) : int(onset_s * FS) + n] = dog[start : start + n]
    y = plane_wave(sig, mics, az)
    rng = np.random.default_rng(1)
    return (y + rng.normal(0, 1e-3, y.shape)).astype(np.float32)


def blocks(x: np.ndarray, size: int) -> list[Block]:
    return [Block(x[:, i : i + size], i / FS, k, FS) for k, i in enumerate(range(0, x.shape[1], size))]


@pytest.mark.parametrize(("array_name", "az"), [("respeaker-4mic-hat", -75.0), ("respeaker-6mic-hat", 140.0)])
def test_known_onset_and_direction_are_found(model: Model, array_name: str, az: float) -> None:
    """Tolerances: onset within 0.15 s of the first bark sample, azimuth within 5 degrees."""
    array = load_array(array_name)
    onset = 1.5
    events = list(run(blocks(dog_scene(array.mics, az, onset), 1600), EdgePipeline(model, array)))
    dog = [e for e in events if e.label in DOG_LABELS and e.phase == "off"]
    assert dog, f"no dog event: {[(e.label, e.onset) for e in events]}"
    first = min(dog, key=lambda e: e.onset)
    assert abs(first.onset - onset) <= 0.15, first
    assert first.bearings and ang_err(first.bearings[0].azimuth, az) <= 5.0, first
    assert all(e.onset >= onset - 0.15 for e in events), "an event before the sound started"


def signature(events: list[Event]) -> list[tuple]:
    return [
        (e.phase, e.id, e.label, e.onset, e.offset, e.p, e.level_dbfs, tuple(b.azimuth for b in e.bearings))
        for e in events
    ]


@pytest.mark.parametrize("mode", ["balanced", "low"])
def test_block_size_does_not_change_events(model: Model, mode: str) -> None:
    from edge.pipeline import latency_config

    array = load_array("respeaker-4mic-hat")
    x = dog_scene(array.mics, 30.0, 0.7, seconds=4.0)
    cfg = latency_config(mode, model.output_hop_frames)
    ref = signature(list(run(blocks(x, x.shape[1]), EdgePipeline(model, array, cfg))))
    assert ref
    for size in (160, 333, 16000):
        assert signature(list(run(blocks(x, size), EdgePipeline(model, array, cfg)))) == ref


def test_latency_modes_set_the_model_hop_and_the_on_rule(model: Model) -> None:
    """"low" runs the model every output frame and turns a class on at once on a frame 1.25 times its
    threshold; "balanced" is the default config; an unknown mode is refused by name."""
    from edge.errors import ConfigError
    from edge.pipeline import PipelineConfig, latency_config

    assert latency_config("balanced", 4) == PipelineConfig()
    low = latency_config("low", model.output_hop_frames, PipelineConfig(ring_s=5.0))
    assert (low.model_hop_frames, low.sed.min_on_frames, low.ring_s) == (model.output_hop_frames, 2, 5.0)
    assert low.sed.instant_on_ratio == 1.25 and low.latency == "low"
    assert (low.lookahead_fill_frames, low.lookahead_decay_db) == (8, 4.0)
    assert EdgePipeline(model, None, low).config.model_hop_frames == 4
    with pytest.raises(ConfigError, match=r"latency mode 'fast': choose from balanced, low"):
        latency_config("fast", 4)
    with pytest.raises(ConfigError, match=r"latency mode 'fast': choose from balanced, low"):
        PipelineConfig(latency="fast")
    for fill, hop in ((6, 4), (4, 96), (-4, 4)):  # not a multiple of the output hop; past the window; negative
        with pytest.raises(ConfigError, match=r"lookahead_fill_frames="):
            EdgePipeline(model, None, PipelineConfig(model_hop_frames=hop, lookahead_fill_frames=fill))
    with pytest.raises(ConfigError, match=r"lookahead_decay_db=-1"):
        PipelineConfig(lookahead_decay_db=-1)


def test_lookahead_fill_fades_the_newest_frame_to_the_silence_floor() -> None:
    """`fill_lookahead`: the oldest frames dropped, the newest one repeated and fading by the given dB (of
    magnitude) per frame, never below the log-mel of silence; on one window and on a batch alike."""
    from edge.dsp.frontend import fill_lookahead, silence_floor

    rng = np.random.default_rng(0)
    w = rng.normal(-3.0, 2.0, (96, 64)).astype(np.float32)
    out = fill_lookahead(w, 8, 4.0)
    assert out.shape == w.shape and np.array_equal(out[:88], w[8:])
    step = 4.0 * np.log(10) / 20
    want = np.maximum(w[-1] - step * np.arange(1, 9)[:, None], silence_floor())
    assert np.allclose(out[88:], want, atol=1e-5) and out[88:].min() >= silence_floor()
    assert np.array_equal(fill_lookahead(np.stack([w, w]), 8, 4.0)[1], out)
    assert fill_lookahead(w, 0, 4.0) is w


@pytest.mark.parametrize("stream", [True, False])
def test_lookahead_fill_scores_each_frame_with_its_newest_frame_fading_out(stream: bool) -> None:
    """In "low" the newest output frame of each model call is the model's output for that frame when the
    window goes on with its newest log-mel frame fading out (`fill_lookahead`): checked row by row against
    the model called directly on such windows, with the streaming model (48 frames) and the full window."""
    from dataclasses import replace

    from edge.dsp import frontend
    from edge.dsp.frontend import fill_lookahead
    from edge.evaluation.sed_eval import RecordingSed
    from edge.pipeline import latency_config

    m = Model(runtime="litert", stream=stream)
    array = load_array("respeaker-4mic-hat")
    x = dog_scene(array.mics, 30.0, 0.7, seconds=2.0)
    cfg = latency_config("low", m.output_hop_frames)
    pipe = EdgePipeline(m, array, cfg)
    rec = RecordingSed(m.labels, m.thresholds, cfg.sed)
    pipe.sed = rec
    list(run(blocks(x, 1600), pipe))
    got = np.concatenate([s.probs for s in rec.seen])
    # the features as the pipeline made them: the same pipeline without the model, frames kept
    feats = np.concatenate([p for p in _features(m, array, x)])
    w, fill, hop = m.window_frames, cfg.lookahead_fill_frames, cfg.model_hop_frames
    stream_feats = np.concatenate([np.full((w - hop, 64), frontend.silence_floor(m.frontend), np.float32), feats])
    rows = []
    for j in range(len(feats) // hop):
        win = stream_feats[j * hop : j * hop + w]
        filled = fill_lookahead(win, fill, cfg.lookahead_decay_db)
        p = m.predict_stream(filled[-48:]) if stream else m.predict(filled)
        rows.append(p[len(p) - 1 - fill // 4])
    want = np.stack(rows)
    assert len(got) >= len(want) > 40
    assert np.array_equal(got[: len(want)], want)
    # and the fill changes them: without it the same frames read differently
    plain = EdgePipeline(m, array, replace(cfg, lookahead_fill_frames=0))
    rec0 = RecordingSed(m.labels, m.thresholds, cfg.sed)
    plain.sed = rec0
    list(run(blocks(x, 1600), plain))
    assert not np.array_equal(np.concatenate([s.probs for s in rec0.seen])[: len(want)], want)


def _features(m: Model, array: object, x: np.ndarray) -> list[np.ndarray]:
    """The log-mel frames the pipeline feeds its model, block by block."""
    pipe = EdgePipeline(m, array)  # type: ignore[arg-type]
    out = []
    for b in blocks(x, 1600):
        spectra = pipe.stft.process(b)
        out.append(pipe._store_frames(spectra.frames))
    return out


def test_silence_and_steady_noise_give_no_events(model: Model) -> None:
    array = load_array("respeaker-4mic-hat")
    rng = np.random.default_rng(5)
    for x in (np.zeros((4, 5 * FS), np.float32), rng.normal(0, 1e-3, (4, 5 * FS)).astype(np.float32)):
        assert list(run(blocks(x, 1600), EdgePipeline(model, array))) == []


def test_event_level_is_dbfs(model: Model) -> None:
    array = load_array("respeaker-4mic-hat")
    x = dog_scene(array.mics, 0.0, 0.5, seconds=3.0)
    x *= 0.5 / np.abs(x).max()
    ev = [e for e in run(blocks(x, 1600), EdgePipeline(model, array)) if e.phase == "off"]
    assert ev
    peak_dbfs = 20 * np.log10(0.5)  # no 40 ms frame can be louder than a full-length sine at the peak amplitude
    assert all(-60.0 < e.level_dbfs <= peak_dbfs + 3.01 for e in ev)


def test_rings_shorter_than_a_block_never_mix_in_newer_frames(model: Model) -> None:
    """Regression: with 2 s blocks and a 1 s ring, an event's frames may be overwritten before it is
    placed; it must then use only its own frames still in the ring (or none), never newer ones."""
    from edge.pipeline import PipelineConfig

    array = load_array("respeaker-4mic-hat")
    x = dog_scene(array.mics, 100.0, 0.3, seconds=4.0)
    # from 1.0 s on, a loud second source from -100 degrees: newer frames that must not leak in
    noise = plane_wave(np.random.default_rng(4).normal(0, 0.3, x.shape[1]), array.mics, -100.0)
    x[:, FS:] = noise[:, FS:].astype(np.float32)
    events = list(run(blocks(x, 2 * FS), EdgePipeline(model, array, PipelineConfig(ring_s=1.0))))
    first = [e for e in events if e.phase == "off" and e.offset is not None and e.offset <= 1.0]
    assert first, [(e.label, e.onset, e.offset) for e in events]
    for e in first:
        assert not e.bearings or ang_err(e.bearings[0].azimuth, 100.0) <= 10.0, e


def test_level_of_a_sine_is_its_dbfs(model: Model) -> None:
    array = load_array("respeaker-4mic-hat")
    t = np.arange(2 * FS) / FS
    amp = 0.1  # -20 dBFS (a full-scale sine is 0 dBFS)
    x = np.tile(amp * np.sin(2 * np.pi * 1000 * t), (4, 1)).astype(np.float32)
    pipe = EdgePipeline(model, array)
    assert pipe.level_dbfs() is None
    for b in blocks(x, 1600):
        pipe.process(b)
    assert pipe.stream_time == pytest.approx(2.0, abs=0.03)
    assert pipe.level_dbfs(1.0) == pytest.approx(-20.0, abs=0.2)


def test_noise_floor_percentile_is_numpys_bit_for_bit() -> None:
    from edge.pipeline import _percentile10

    rng = np.random.default_rng(0)
    for n in [*range(1, 40), 100, 749, 750]:
        for _ in range(20):
            v = 10.0 * np.log10(rng.uniform(0.0, 1.0, n) ** rng.uniform(0.1, 5.0) + 1e-20)
            if rng.random() < 0.3:
                v = np.round(v, 1)  # ties
            assert _percentile10(v) == float(np.percentile(v, 10))


def test_streaming_model_gives_the_same_events_as_the_full_window() -> None:
    """The shipped model's streaming file (48 of 96 frames) serves the pipeline: every event of the
    sample scene, probabilities included, is the one the full window gives."""
    from edge.sources import FileSource

    stream, full = Model(runtime="litert"), Model(runtime="litert", stream=False)
    assert stream.stream_window_for(12) == 48 and full.stream_window_for(12) is None
    assert stream.stream_window_for(24) is None  # a longer hop needs more than the verified newest frames
    array = load_array("respeaker-4mic-hat")
    got = [list(run(FileSource(SCENE, block_size=1600, expected_channels=4), EdgePipeline(m, array)))
           for m in (stream, full)]  # fmt: skip
    assert got[0] == got[1] and len(got[0]) >= 10
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((96, 64)) * 2.0 - 5.0).astype(np.float32)
    assert np.array_equal(stream.predict_stream(w[-48:])[-3:], stream.predict(w)[-3:])


def test_tracking_off_keeps_the_events_and_their_bearings() -> None:
    """`PipelineConfig(tracking=False)`: no tracker and no tracks, the same events with the same bearings
    (the tracker only adds `track` and a moving source's end azimuth)."""
    from edge.pipeline import PipelineConfig
    from edge.sources import FileSource

    array = load_array("respeaker-4mic-hat")
    model = Model()
    on, off = EdgePipeline(model, array), EdgePipeline(model, array, PipelineConfig(tracking=False))
    a = list(run(FileSource(SCENE, block_size=1600, expected_channels=4), on))
    b = list(run(FileSource(SCENE, block_size=1600, expected_channels=4), off))
    assert off.tracker is None and off.tracks == () and all(e.track is None for e in b)
    assert any(e.track is not None for e in a)
    strip = [(e.id, e.phase, e.label, e.onset, e.offset, e.p) for e in a]
    assert strip == [(e.id, e.phase, e.label, e.onset, e.offset, e.p) for e in b]
    for ea, eb in zip(a, b, strict=True):
        if ea.azimuth_end is None:  # a source that did not move: the same dominant bearing
            assert [x.azimuth for x in ea.bearings] == [x.azimuth for x in eb.bearings]


def test_fused_native_block_kernel_gives_the_events_of_the_separate_kernels(model: Model) -> None:
    """With the native backend the pipeline does its per-block work after the STFT in one C call
    (`native.BlockPost`); the events, their bearings and the rings are those of the separate kernels,
    also with blocks longer than the rings (2 s blocks, 1 s rings: several calls per block)."""
    from edge.pipeline import PipelineConfig

    array = load_array("respeaker-4mic-hat")
    x = dog_scene(array.mics, -40.0, 0.6, seconds=4.0)
    for cfg, size in (
        (PipelineConfig(dsp_backend="native"), 1600),
        (PipelineConfig(dsp_backend="native", ring_s=1.0), 2 * FS),
    ):
        fused, separate = EdgePipeline(model, array, cfg), EdgePipeline(model, array, cfg)
        if fused._post is None:
            pytest.skip("native backend unavailable")
        separate._post = None
        got = [repr(signature(list(run(blocks(x, size), p)))) for p in (fused, separate)]  # repr: NaN levels
        assert got[0] == got[1] and got[0] != "[]"
        for name in ("_psum", "_pcount", "_pframe", "_cross", "_feat"):
            assert np.array_equal(getattr(fused, name), getattr(separate, name)), name


def test_each_latency_mode_takes_the_models_condition_floors_of_that_mode(
    model: Model, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The shipped model.json holds condition floors for both modes; the low mode's SED thresholds are the
    model's raised to its floors (some classes higher than in the default mode, none lower). A model
    without floors for the mode keeps its thresholds and says so; malformed floors are refused by name."""
    import json
    import logging
    import shutil

    from edge.errors import ModelError
    from edge.inference import default_model_dir
    from edge.pipeline import latency_config

    assert set(model.floors) == {"balanced", "low"}
    assert np.all(model.thresholds >= model.floors_for("balanced") - 1e-6)  # the default mode's are applied
    low = EdgePipeline(model, None, latency_config("low", model.output_hop_frames)).sed.on_thr
    balanced = EdgePipeline(model, None).sed.on_thr
    assert np.array_equal(low, np.maximum(model.thresholds, model.floors_for("low")))
    assert np.all(low >= balanced) and np.any(low > balanced)

    d = tmp_path / "model"
    shutil.copytree(default_model_dir(), d)
    meta = json.loads((d / "model.json").read_text())
    meta["thresholds"].pop("floors")
    (d / "model.json").write_text(json.dumps(meta))
    bare = Model(str(d))
    with caplog.at_level(logging.WARNING, logger="edge.pipeline"):
        pipe = EdgePipeline(bare, None, latency_config("low", bare.output_hop_frames))
    assert np.array_equal(pipe.sed.on_thr, balanced)
    assert "no condition floors for latency mode 'low'" in caplog.text
    for bad, msg in (([0.5], "must be an object"), ({"low": {"Not a label": 0.3}}, "'Not a label', not a label"),
                     ({"low": {"Speech": 1.5}}, r"thresholds.floors.low.Speech is 1.5")):  # fmt: skip
        meta["thresholds"]["floors"] = bad
        (d / "model.json").write_text(json.dumps(meta))
        with pytest.raises(ModelError, match=msg):
            Model(str(d))
