"""Clip scores of `tympan tag` (`Model.tag`): pooled as the model directory's model.json says, and equal
to the scores the distillation pipeline's report measured the model with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.dsp.frontend import logmel
from edge.errors import ModelError
from edge.inference import Model, default_model_dir, pool_clip
from edge.sources import read_audio

SCENE = Path(default_model_dir()).parent.parent / "data" / "sample_scene.flac"


def _model_with(tmp_path: Path, pooling: str | None) -> Path:
    d = tmp_path / f"model-{pooling}"
    shutil.copytree(default_model_dir(), d)
    meta = json.loads((d / "model.json").read_text())
    if pooling is None:
        meta.pop("pooling", None)
    else:
        meta["pooling"] = pooling
    (d / "model.json").write_text(json.dumps(meta))
    return d


@pytest.fixture(scope="module")
def scene_logmel() -> np.ndarray:
    return logmel(read_audio(str(SCENE))[:, : 16000 * 3])  # 3 s: 4 windows, the last padded


def test_mean_pooling_averages_the_frames_covering_the_recording(tmp_path: Path, scene_logmel: np.ndarray) -> None:
    m = Model(str(_model_with(tmp_path, "mean")), runtime="litert")
    n = len(scene_logmel)
    frames = m.recording_frames(scene_logmel)
    assert frames.shape == (-(-n // m.output_hop_frames), len(m.labels))
    # the covered frames are those of windows laid side by side from the start
    first = m.predict(scene_logmel[: m.window_frames])
    np.testing.assert_array_equal(frames[: len(first)], first)
    np.testing.assert_allclose(m.tag(scene_logmel), frames.mean(axis=0), rtol=1e-6)
    # a recording shorter than a window still gives one frame per output hop it covers
    assert m.recording_frames(scene_logmel[:10]).shape[0] == 3
    assert m.recording_frames(scene_logmel[:1]).shape[0] == 1


@pytest.mark.parametrize("pooling", ["linear_softmax", None])
def test_older_model_directories_keep_linear_softmax(
    tmp_path: Path, scene_logmel: np.ndarray, pooling: str | None
) -> None:
    m = Model(str(_model_with(tmp_path, pooling)), runtime="litert")
    assert m.pooling == "linear_softmax"
    np.testing.assert_array_equal(m.tag(scene_logmel), m.peak(scene_logmel))
    w = m.window_frames
    half = [pool_clip(m.predict(scene_logmel[s : s + w])) for s in range(0, len(scene_logmel) - w + 1, w // 2)]
    assert np.all(m.peak(scene_logmel) >= np.max(half, axis=0) - 1e-7)


def test_an_unknown_pooling_is_refused_naming_the_file(tmp_path: Path) -> None:
    d = _model_with(tmp_path, "max")
    with pytest.raises(ModelError, match=r"model\.json: pooling 'max' unknown"):
        Model(str(d), runtime="litert")


def test_tag_is_what_the_report_measured(tmp_path: Path) -> None:
    """The shipped model's `tag` equals the clip score `quantize.evaluate.score_clips` computes from the
    same audio through the same int8 file (the report's accuracy rows), up to the last covered frame,
    whose window the evaluation cuts from the audio and the edge pads with silence log-mel."""
    pytest.importorskip("torch")
    from quantize.evaluate import score_clips
    from quantize.infer import TfliteRunner
    from quantize.transfer import Clip

    class _NoTeacher:  # the teacher's columns are not looked at here
        def logits(self, path: object, starts: np.ndarray, x: object = None) -> np.ndarray:
            return np.zeros((len(starts), 2), np.float32)

    m = Model(default_model_dir(), runtime="litert")
    assert m.pooling == "mean"
    clip = tmp_path / "clip.flac"
    x = read_audio(str(SCENE))[0, : int(16000 * 2.7)]
    sf.write(clip, x, 16000)
    runner = TfliteRunner(Path(m.file))
    k = len(m.labels)
    cs = score_clips([Clip(clip, "esc50", "dog", "val")], _NoTeacher(), np.array([0]), {}, k,  # type: ignore[arg-type]
                     {"int8": lambda w: runner(w)[..., :k]}, m.window_frames, 48)  # fmt: skip
    edge = m.tag(logmel(read_audio(str(clip))))
    np.testing.assert_allclose(cs.scores["int8"][0], edge, atol=0.02)
    assert int(np.argmax(cs.scores["int8"][0])) == int(np.argmax(edge))
