"""The stream's DC blocker (`dc_block`): its physics (no DC out, the audio band untouched), every native
SIMD build against the numpy reference (bit for bit: the same double recursion), the same samples for
any cut of the stream into blocks, and misuse rejected."""

from __future__ import annotations

import numpy as np
import pytest

from edge.dsp import backends, native
from edge.dsp.dcblock import DEFAULT_DC_BLOCK_HZ, dc_block_pole, dc_block_state
from edge.errors import ConfigError, InputError
from edge.stft import StftStage

FS = 16000
R = dc_block_pole(DEFAULT_DC_BLOCK_HZ, FS)


def _audio(channels: int, n: int, seed: int = 0, dc: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.05 * rng.standard_normal((channels, n)) + dc + 0.1 * np.arange(channels)[:, None]).astype(np.float32)


def _kernels() -> list[object]:
    out: list[object] = [backends.get("dc_block")]
    for variant in native.machine_variants():
        try:
            out.append(native.Kernels(native.load_variant(variant)).dc_block)
        except native.NativeUnavailable:
            continue
    return out


@pytest.mark.parametrize("k", range(len(native.machine_variants()) + 1))
def test_dc_is_removed_and_the_audio_band_kept(k: int) -> None:
    kernels = _kernels()
    if k >= len(kernels):
        pytest.skip("native build unavailable")
    kern = kernels[k]
    t = np.arange(2 * FS) / FS
    tone = 0.5 * np.sin(2 * np.pi * 200.0 * t)  # the lowest mel band starts at 125 Hz
    x = np.stack([tone + 0.3, tone - 0.5, 0.0 * tone + 0.2]).astype(np.float32)
    y = kern(x, R, dc_block_state(x[:, 0]))  # type: ignore[operator]
    assert np.abs(y[:, 0]).max() == 0.0  # a stream that starts on an offset starts without a step
    settled = y[:, FS:]  # after 1 s (time constant 16 ms)
    assert np.abs(settled.mean(axis=1)).max() < 1e-4
    gain_db = 20 * np.log10(np.std(settled[:2], axis=1) / np.std(tone[FS:]))
    assert np.abs(gain_db).max() < 0.05  # 200 Hz passes (-3 dB at 10 Hz)
    assert np.abs(settled[2]).max() < 1e-6  # a constant channel gives nothing


@pytest.mark.parametrize("variant", native.machine_variants())
def test_native_dc_block_equals_reference(variant: str) -> None:
    try:
        kern = native.Kernels(native.load_variant(variant))
    except native.NativeUnavailable as e:
        pytest.skip(f"native build unavailable: {e}")
    for channels in (1, 3, 4, 6):  # the 4-channel unrolled loop and the single-channel tail
        x = _audio(channels, 3001, seed=channels)
        s_ref, s_nat = dc_block_state(x[:, 0]), dc_block_state(x[:, 0])
        want = backends.get("dc_block")(x, R, s_ref)
        got = kern.dc_block(x, R, s_nat)
        assert got.dtype == np.float32 and np.array_equal(want, got) and np.array_equal(s_ref, s_nat)


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_any_cut_into_blocks_gives_the_same_samples(backend: str) -> None:
    if backend not in backends.backends():
        pytest.skip(f"{backend} backend unavailable")
    kern = backends.get("dc_block", backend)
    x = _audio(4, 5000, seed=7)
    whole = kern(x, R, dc_block_state(x[:, 0]))
    for seed in range(3):
        cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, 5000), 9, replace=False))
        state = dc_block_state(x[:, 0])
        parts = [kern(np.ascontiguousarray(p), R, state) for p in np.split(x, cuts, axis=1)]
        assert np.array_equal(np.concatenate(parts, axis=1), whole)


def test_stft_stage_with_the_blocker_ignores_an_offset() -> None:
    """The pipeline's STFT stage: the spectra of audio plus a 0.3 offset equal those of the audio (above
    the lowest bins), block by block; without the blocker the offset leaks into the low bins."""
    from edge.messages import Block

    x = _audio(4, 16000, seed=3, dc=0.0)

    def spectra(sig: np.ndarray, hz: float) -> np.ndarray:
        st = StftStage(dc_block_hz=hz)
        out = [st.process(Block(np.ascontiguousarray(sig[:, i : i + 1600]), i / FS, k, FS)).frames
               for k, i in enumerate(range(0, sig.shape[1], 1600))]  # fmt: skip
        return np.concatenate(out, axis=2)

    clean, offset = spectra(x, DEFAULT_DC_BLOCK_HZ), spectra(x + 0.3, DEFAULT_DC_BLOCK_HZ)
    band = slice(4, None)  # 125 Hz and up: the mel range
    rel = np.abs(offset[:, band] - clean[:, band]).max() / np.abs(clean[:, band]).max()
    assert rel < 1e-3
    raw_clean, raw_offset = spectra(x, 0.0), spectra(x + 0.3, 0.0)
    assert np.abs(raw_offset[:, 4] - raw_clean[:, 4]).mean() > 10 * np.abs(offset[:, 4] - clean[:, 4]).mean()


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_dc_block_rejects_misuse(backend: str) -> None:
    if backend not in backends.backends():
        pytest.skip(f"{backend} backend unavailable")
    kern = backends.get("dc_block", backend)
    x = _audio(2, 100)
    with pytest.raises(InputError, match=r"state must be float64 \[2\]"):
        kern(x, R, np.zeros(3))
    with pytest.raises(InputError, match="state must be float64"):
        kern(x, R, np.zeros(2, np.float32))
    with pytest.raises(InputError, match=r"\[channels, samples\]"):
        kern(x[0], R, np.zeros(1))
    with pytest.raises(InputError, match="pole"):
        kern(x, 1.0, np.zeros(2))


def test_bad_cutoffs_are_rejected() -> None:
    from edge.pipeline import PipelineConfig

    with pytest.raises(InputError, match="cutoff"):
        dc_block_pole(900.0, FS)
    with pytest.raises(ConfigError, match="dc_block_hz"):
        PipelineConfig(dc_block_hz=0.5)
    assert PipelineConfig(dc_block_hz=0.0).dc_block_hz == 0.0


def test_a_block_with_nan_is_rejected_and_the_stream_goes_on() -> None:
    from edge.messages import Block

    st = StftStage(dc_block_hz=DEFAULT_DC_BLOCK_HZ)
    x = _audio(4, 1600)
    bad = x.copy()
    bad[2, 100] = np.nan
    st.process(Block(x, 0.0, 0, FS))
    with pytest.raises(InputError, match=r"block 1 \(t=0.100 s\) holds NaN"):
        st.process(Block(bad, 0.1, 1, FS))
    assert np.isfinite(st.process(Block(x, 0.2, 2, FS)).frames).all()
