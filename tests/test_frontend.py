"""The shared frontend: causal STFT, HTK log-mel, streaming equivalence, backend registry."""

from __future__ import annotations

import numpy as np
import pytest

from edge.dsp import backends
from edge.dsp.frontend import DEFAULT_FRONTEND, FrontendSpec, hz_to_mel, logmel, mel_matrix, n_frames, stft
from edge.errors import ConfigError, ModelError
from edge.messages import Block
from edge.stft import StftStage

SPEC = DEFAULT_FRONTEND


def test_frame_count_and_causality() -> None:
    assert n_frames(399) == 0 and n_frames(400) == 1 and n_frames(16000) == 98
    x = np.random.default_rng(0).normal(size=(1, 4000)).astype(np.float32)
    y = x.copy()
    y[:, 2000:] = 0  # changing the future must not change frames that end before it
    a, b = stft(x), stft(y)
    last_clean = (2000 - SPEC.win) // SPEC.hop
    np.testing.assert_array_equal(a[:, :, : last_clean + 1], b[:, :, : last_clean + 1])


def test_tone_lands_in_its_mel_band() -> None:
    t = np.arange(SPEC.sample_rate) / SPEC.sample_rate
    f0 = 1000.0
    lm = logmel(np.sin(2 * np.pi * f0 * t).astype(np.float32))
    edges = np.linspace(hz_to_mel(SPEC.fmin_hz), hz_to_mel(SPEC.fmax_hz), SPEC.n_mels + 2)
    expected = int(np.argmin(np.abs(edges[1:-1] - hz_to_mel(f0))))
    assert abs(int(np.argmax(lm.mean(axis=0))) - expected) <= 1


def test_mel_matrix_shape_and_band_limits() -> None:
    w = mel_matrix(SPEC)
    assert w.shape == (SPEC.n_bins, SPEC.n_mels)
    freqs = np.linspace(0, SPEC.sample_rate / 2, SPEC.n_bins)
    assert np.all(w[freqs < SPEC.fmin_hz] == 0) and np.all(w[freqs > SPEC.fmax_hz] == 0)
    assert np.all(w.max(axis=0) > 0.5)  # every band catches at least one bin well


def test_multichannel_logmel_equals_downmix() -> None:
    x = np.random.default_rng(1).normal(size=(4, 8000)).astype(np.float32)
    np.testing.assert_allclose(logmel(x), logmel(x.mean(axis=0)), atol=1e-4)


@pytest.mark.parametrize("block", [1, 160, 333, 1600, 16000])
def test_streaming_stft_equals_whole(block: int) -> None:
    x = np.random.default_rng(2).normal(size=(2, 12345)).astype(np.float32)
    st = StftStage()
    parts, index = [], 0
    for i in range(0, x.shape[1], block):
        s = st.process(Block(x[:, i : i + block], i / SPEC.sample_rate, i // block, SPEC.sample_rate))
        assert s.index == index
        index += s.frames.shape[2]
        parts.append(s.frames)
    np.testing.assert_allclose(np.concatenate(parts, axis=2), stft(x), atol=1e-5)


def test_frontend_mismatch_is_named() -> None:
    other = FrontendSpec(n_mels=40, hop=320)
    with pytest.raises(ModelError, match=r"n_mels=40 \(expected 64\).*|hop=320"):
        SPEC.check_matches(other, "m.json")
    with pytest.raises(ModelError, match="unknown frontend key"):
        FrontendSpec.from_dict({"nmels": 64}, "m.json")


def test_backend_registry_falls_back_to_reference() -> None:
    assert "numpy" in backends.backends()
    assert backends.get("stft") is stft
    with pytest.raises(ConfigError, match="unknown DSP backend 'nope'"):
        backends.get("stft", "nope")
    with pytest.raises(ValueError, match="unknown DSP kernel"):
        backends.register("numpy", "fft3d")
