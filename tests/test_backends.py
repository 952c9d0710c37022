"""DSP backends against the numpy reference (the oracle), on random and real inputs.

Tolerances (stated once, here):
- native: the same float32 arithmetic as the reference in another order, with FMA on AVX2/NEON:
  spectra max |diff| <= 1e-5 x max |ref|; log-mel <= 1e-4 (natural log units); unit-magnitude PHAT
  cross-spectra <= 1e-5; SRP map <= 1e-5 x max |ref|; frame power relative <= 1e-5; Leq <= 1e-4 dB.
- tinygrad: DFTs as float32 matrix products (sums of 400 / 183 terms): spectra and GCC
  <= 2e-5 x max |ref|, log-mel <= 1e-3; the rest as native.
The NEON build is checked under qemu-aarch64 (cross-compiled C harness), skipped without the toolchain.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boards.profiles import load_array
from edge.dsp import backends, frontend, native
from edge.dsp.gcc_phat import mic_pairs
from edge.dsp.level import parseval_weights
from edge.errors import ConfigError, InputError
from edge.localise import Localiser, LocaliserConfig, active_frames
from edge.messages import Block
from edge.stft import StftStage
from tests.scenes import FS, ang_err, noise_burst, plane_wave

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"  # ../shared/data beside the checkout
ESC50 = SHARED_DATA / "esc50" / "audio"
SPEC = frontend.DEFAULT_FRONTEND
BINS = slice(10, 193)  # 300-6000 Hz at 31.25 Hz per bin
TOL = {
    "native": {"spectra": 1e-5, "logmel": 1e-4, "phat": 1e-5, "gcc": 1e-5, "srp": 1e-5, "power": 1e-5},
    "tinygrad": {"spectra": 2e-5, "logmel": 1e-3, "phat": 1e-5, "gcc": 2e-5, "srp": 1e-5, "power": 1e-5},
}

Kernel = Callable[..., Any]


def _native_variants() -> list[Any]:
    return [pytest.param(f"native-{v}", id=f"native-{v}") for v in native.machine_variants()]


def _kernels(backend: str) -> dict[str, Kernel]:
    """The kernels of `backend` ('native-<variant>' picks one SIMD build), skipping if unavailable."""
    if backend.startswith("native-"):
        try:
            return native.Kernels(native.load_variant(backend.split("-", 1)[1])).as_dict()
        except native.NativeUnavailable as e:
            pytest.skip(f"native build unavailable: {e}")
    if backend not in backends.backends():
        pytest.skip(f"{backend} unavailable: {backends.unavailable().get(backend)}")
    return {k: backends.get(k, backend) for k in backends.KERNELS}


def _tol(backend: str) -> dict[str, float]:
    return TOL["tinygrad" if backend == "tinygrad" else "native"]


def _audio(seed: int, channels: int = 4, n: int = 8000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((channels, n)).astype(np.float32) * 0.1
    x[:, n // 3 : n // 2] *= 20  # a loud stretch, so frames span a wide dynamic range
    x[:, -600:] = 0.0  # and digital silence (zero spectra: PHAT must give 0, log-mel the floor)
    return x


def _real_audio() -> np.ndarray:
    """The loudest 2 s of a real ESC-50 clip (the first one present) as 4 channels with different delays
    (its first 2 s are digital silence)."""
    from edge.sources import read_audio

    if not ESC50.is_dir():
        pytest.skip("../shared/data/esc50 not present")
    clip = sorted(ESC50.glob("*.flac"))[0]
    full = read_audio(str(clip))[0]
    energy = np.convolve(full.astype(np.float64) ** 2, np.ones(2 * FS), mode="valid")[:: FS // 10]
    start = int(np.argmax(energy)) * (FS // 10)
    mono = full[start : start + 2 * FS]
    assert np.sqrt(np.mean(mono**2)) > 1e-3, f"{clip.name}: nearly silent"
    return np.stack([np.roll(mono, d) for d in (0, 3, 7, 12)]).astype(np.float32)


def _check_all(kern: dict[str, Kernel], x: np.ndarray, tol: dict[str, float]) -> None:
    ref = {k: backends.get(k) for k in backends.KERNELS}
    s_ref = ref["stft"](x, SPEC)
    s = kern["stft"](x, SPEC)
    assert s.shape == s_ref.shape and s.dtype == np.complex64
    assert np.max(np.abs(s - s_ref)) <= tol["spectra"] * np.max(np.abs(s_ref))
    lm_ref = ref["logmel_from_spectra"](s_ref, SPEC)
    lm = kern["logmel_from_spectra"](s_ref, SPEC)
    assert lm.shape == lm_ref.shape and lm.dtype == np.float32
    assert np.max(np.abs(lm - lm_ref)) <= tol["logmel"]
    pairs = mic_pairs(x.shape[0])
    c_ref = ref["phat_cross_spectra"](s_ref, pairs, BINS)
    c = kern["phat_cross_spectra"](s_ref, pairs, BINS)
    assert c.shape == c_ref.shape and c.dtype == np.complex64
    assert np.max(np.abs(c - c_ref)) <= tol["phat"]
    hist = np.random.default_rng(2).exponential(size=(3, BINS.stop - BINS.start)).astype(np.float32)
    ow_ref, h_ref = ref["onset_weights"](s_ref, BINS, hist, 0.05)
    ow, h = kern["onset_weights"](s_ref, BINS, hist, 0.05)
    assert ow.shape == ow_ref.shape and ow.dtype == np.float32 and 0.05 <= ow_ref.min() and ow_ref.mean() < 1.0
    np.testing.assert_allclose(ow, ow_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=1e-6)
    assert np.array_equal(hist, np.random.default_rng(2).exponential(size=hist.shape).astype(np.float32))  # not mutated
    cw = kern["phat_cross_spectra"](s_ref, pairs, BINS, ow_ref)
    assert np.max(np.abs(cw - ref["phat_cross_spectra"](s_ref, pairs, BINS, ow_ref))) <= tol["phat"]
    # a recording's DOA input summed per block of selected frames: frames with gaps, blocks of 4 (a
    # shorter last one) and one block of all; with and without onset weights
    t = s_ref.shape[2]
    sel = np.flatnonzero(np.arange(t) % 5 != 2)[:-1]
    for block in (4, t):
        for onset, floor in ((0, 0.0), (3, 0.05)):
            blk_ref, fw_ref = ref["cross_blocks"](s_ref, pairs, BINS, sel, block, onset, floor)
            blk, fw = kern["cross_blocks"](s_ref, pairs, BINS, sel, block, onset, floor)
            assert blk.shape == blk_ref.shape == (-(-len(sel) // block), len(pairs), BINS.stop - BINS.start)
            assert blk.dtype == np.complex64 and fw.dtype == np.float64
            # sums of up to T unit-magnitude cells, in another order
            assert np.max(np.abs(blk - blk_ref)) <= tol["phat"] * block
            np.testing.assert_allclose(fw, fw_ref, rtol=1e-5)
    # each selected frame's block given (segments of 7 frames in blocks of 3: 3, 3, 1 per segment)
    pos = np.arange(len(sel))
    ids = (pos // 7) * 3 + (pos % 7) // 3
    blk_ref, fw_ref = ref["cross_blocks"](s_ref, pairs, BINS, sel, ids, 3, 0.05)
    blk, fw = kern["cross_blocks"](s_ref, pairs, BINS, sel, ids, 3, 0.05)
    weighted = ref["phat_cross_spectra"](s_ref, pairs, BINS, ref["onset_weights"](
        s_ref, BINS, np.zeros((3, BINS.stop - BINS.start), np.float32), 0.05)[0])[sel]
    want = np.stack([weighted[ids == k].sum(axis=0) for k in range(int(ids[-1]) + 1)])
    assert blk.shape == blk_ref.shape == want.shape
    assert np.max(np.abs(blk_ref - want)) <= tol["phat"] * 3 and np.max(np.abs(blk - want)) <= tol["phat"] * 3
    np.testing.assert_allclose(fw, fw_ref, rtol=1e-5)
    cc_ref = ref["gcc"](c_ref.sum(axis=0), BINS, SPEC.n_fft, 16)
    cc = kern["gcc"](c_ref.sum(axis=0), BINS, SPEC.n_fft, 16)
    assert np.max(np.abs(cc - cc_ref)) <= tol["gcc"] * np.max(np.abs(cc_ref))
    lag = np.random.default_rng(1).uniform(-10.0, cc_ref.shape[1] + 10.0, (500, len(pairs)))  # some clipped
    p_ref = ref["srp_map"](cc_ref, lag)
    p = kern["srp_map"](cc_ref, lag)
    assert p.shape == p_ref.shape and p.dtype == np.float32
    assert np.max(np.abs(p - p_ref)) <= tol["srp"] * np.max(np.abs(p_ref))
    w = parseval_weights(SPEC)
    fp_ref = ref["frame_power"](s_ref, w)
    fp = kern["frame_power"](s_ref, w)
    assert fp.dtype == np.float64
    np.testing.assert_allclose(fp, fp_ref, rtol=tol["power"], atol=1e-12 * fp_ref.max())
    if "leq_dbfs" in kern:
        assert abs(kern["leq_dbfs"](x) - ref["leq_dbfs"](x)) <= 1e-4
    xb = np.stack([x, 0.5 * x[::-1], np.zeros_like(x)])  # a batch: three recordings, one silent
    lb_ref, lb = ref["logmel_batch"](xb, SPEC), kern["logmel_batch"](xb, SPEC)
    assert lb.shape == lb_ref.shape == (3, *lm_ref.shape) and lb.dtype == np.float32
    assert np.max(np.abs(lb - lb_ref)) <= tol["logmel"] and np.array_equal(lb_ref[0], lm_ref)
    for odd in (xb[:, :, : SPEC.win - 1], xb[:, :, : SPEC.win + 7]):  # no frame; one frame and a ragged tail
        assert kern["logmel_batch"](odd, SPEC).shape == ref["logmel_batch"](odd, SPEC).shape
    assert (
        np.max(
            np.abs(
                kern["logmel_batch"](xb[:, :, : SPEC.win + 7], SPEC)
                - ref["logmel_batch"](xb[:, :, : SPEC.win + 7], SPEC)
            )
        )
        <= tol["logmel"]
    )
    with pytest.raises(InputError, match="recordings, channels, samples"):
        kern["logmel_batch"](x, SPEC)
    # mono recordings (the native backend's fused STFT + log-mel call), also as views with a row stride
    wide = np.concatenate([xb, xb], axis=2)
    for mono in (xb[:, :1], wide[:, 1:2, 5 : 5 + x.shape[1]], xb[:, :1, : SPEC.win - 1], xb[:, :1, : SPEC.win + 7]):
        got, want = kern["logmel_batch"](mono, SPEC), ref["logmel_batch"](mono, SPEC)
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.max(np.abs(got - want), initial=0.0) <= tol["logmel"]
        own = [kern["logmel_from_spectra"](kern["stft"](r, SPEC), SPEC) for r in mono]
        assert all(np.array_equal(g, o) for g, o in zip(got, own, strict=True))  # the backend's own STFT + log-mel
    pcm = np.clip(np.round(x.T * 32767 / 4), -32768, 32767).astype(np.int16)
    si_ref = ref["stft_int16"](pcm, SPEC)
    si = kern["stft_int16"](pcm, SPEC)
    assert np.max(np.abs(si - si_ref)) <= tol["spectra"] * np.max(np.abs(si_ref))


@pytest.mark.parametrize("variant", _native_variants())
@pytest.mark.parametrize("seed", [0, 1])
def test_native_equals_reference_on_random_input(variant: str, seed: int) -> None:
    # 8000 samples: 48 frames, so every kernel runs full vector lanes and scalar tails
    _check_all(_kernels(variant), _audio(seed), _tol(variant))


@pytest.mark.parametrize("variant", _native_variants())
def test_native_equals_reference_on_real_audio(variant: str) -> None:
    _check_all(_kernels(variant), _real_audio(), _tol(variant))


@pytest.mark.slow
def test_tinygrad_equals_reference() -> None:
    # one small shape: tinygrad compiles kernels per shape (seconds each with clang)
    kern = _kernels("tinygrad")
    _check_all(kern, _audio(2, n=4000), _tol("tinygrad"))


@pytest.mark.slow
def test_pipeline_on_tinygrad_gives_the_native_events() -> None:
    # the Jetson configuration (TYMPAN_DSP_BACKEND=tinygrad): tinygrad's STFT, log-mel, PHAT and level,
    # the DOA votes it lacks from the native backend; the same events, directions within 2 degrees
    from importlib import resources

    from edge.inference import Model
    from edge.pipeline import EdgePipeline, PipelineConfig, run
    from edge.sources import read_audio
    from edge.sources.blocks import BlockCutter

    for b in ("native", "tinygrad"):
        if b not in backends.backends():
            pytest.skip(f"{b} unavailable: {backends.unavailable().get(b)}")
    assert backends.get("nb_vote", "tinygrad") is backends.get("nb_vote", "native")
    x = read_audio(str(resources.files("edge").joinpath("data", "sample_scene.flac")))[:, : 3 * FS]  # two barks
    cutter = BlockCutter(4, 1600)
    blocks = cutter.push(x) + cutter.flush()
    model, array = Model(None, threads=1), load_array("respeaker-4mic-hat")
    got = {
        b: list(run(iter(blocks), EdgePipeline(model, array, PipelineConfig(dsp_backend=b))))
        for b in ("native", "tinygrad")
    }
    key = [[(e.phase, e.label, e.onset, e.offset) for e in got[b]] for b in ("native", "tinygrad")]
    assert key[0] and key[0] == key[1]
    for a, t in zip(got["native"], got["tinygrad"], strict=True):
        assert ang_err(a.bearings[0].azimuth, t.bearings[0].azimuth) <= 2.0


@pytest.mark.parametrize("variant", _native_variants())
def test_native_frames_do_not_depend_on_the_block_size(variant: str) -> None:
    """A frame lands in a vector lane or a scalar tail depending on where a block cuts the stream;
    its value must be bit-identical either way (the pipeline's 10 ms vs 1 s invariant)."""
    kern = _kernels(variant)
    x = _audio(3, n=12000)
    whole = kern["stft"](x, SPEC)
    lm_whole = kern["logmel_from_spectra"](whole, SPEC)
    pw_whole = kern["frame_power"](whole, parseval_weights(SPEC))
    for cut in (1, 5, 13, 33):
        parts = [whole[:, :, i : i + cut] for i in range(0, whole.shape[2], cut)]
        assert np.array_equal(np.concatenate([kern["logmel_from_spectra"](p, SPEC) for p in parts]), lm_whole)
        assert np.array_equal(np.concatenate([kern["frame_power"](p, parseval_weights(SPEC)) for p in parts]), pw_whole)
        cross = np.concatenate([kern["phat_cross_spectra"](p, mic_pairs(4), BINS) for p in parts])
        assert np.array_equal(cross, kern["phat_cross_spectra"](whole, mic_pairs(4), BINS))


@pytest.mark.parametrize("variant", _native_variants())
def test_native_stft_packs_frames_of_all_channels_and_reads_views_in_place(variant: str) -> None:
    """The fused STFT fills its SIMD lanes with the frames of every channel together: each frame's spectrum
    is bit-identical to that frame alone; a column slice of a wider buffer (read in place, with its row
    stride) gives the spectra of its copy."""
    kern = _kernels(variant)
    x = _audio(5, n=6000)
    for n in (400, 560, 1840, 6000):  # 1, 2, 10 and 36 frames per channel
        both = kern["stft"](x[:, :n], SPEC)
        assert np.array_equal(both, kern["stft"](np.ascontiguousarray(x[:, :n]), SPEC))
        for c in range(x.shape[0]):
            alone = kern["stft"](np.ascontiguousarray(x[c : c + 1, :n]), SPEC)
            assert np.array_equal(both[c : c + 1], alone)
            one = kern["stft"](np.ascontiguousarray(x[c : c + 1, 160 : 160 + 400]), SPEC)  # frame 1 only
            if n >= 560:
                assert np.array_equal(both[c, :, 1], one[0, :, 0])
    view = x[::2, 100:2500]  # every other row: a row stride of two rows
    assert np.array_equal(kern["stft"](view, SPEC), kern["stft"](np.ascontiguousarray(view), SPEC))


def test_streaming_stft_with_native_backend_matches_whole_stream() -> None:
    if "native" not in backends.backends():
        pytest.skip("native backend unavailable")
    x = _audio(4, n=9000)
    whole = backends.get("stft", "native")(x, SPEC)
    stage = StftStage(SPEC, backend="native")
    got = [stage.process(Block(x[:, i : i + 160], i / FS, k, FS)).frames for k, i in enumerate(range(0, 9000, 160))]
    assert np.array_equal(np.concatenate(got, axis=2), whole)


def _stage_spectra(stage: StftStage, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """The stage's spectra of x fed in blocks of the given sizes, in turn (then the rest in one block)."""
    out, i, k = [], 0, 0
    for n in [*sizes, x.shape[1]]:
        out.append(stage.process(Block(x[:, i : i + n], i / FS, k, FS)).frames)
        i, k = min(i + n, x.shape[1]), k + 1
    return np.concatenate(out, axis=2)


@pytest.mark.parametrize("channels", [1, 3, 4, 6])
@pytest.mark.parametrize("hz", [0.0, 20.0])
def test_native_stream_front_equals_its_kernels_one_by_one(channels: int, hz: float) -> None:
    """The native stage's one call per block (DC blocker, joining, fused STFT) gives the spectra of the
    native DC blocker and STFT called one by one, bit for bit, and the numpy stage's within float32
    rounding, whatever the blocks' sizes (empty ones and ones shorter than a hop included)."""
    if "native" not in backends.backends() or not native.kernels().fused_fft:
        pytest.skip("native fused STFT unavailable")
    x = _audio(channels, channels, n=9000) + np.float32(0.2)  # an offset for the blocker to remove
    sizes = [1600, 0, 37, 400, 1, 1000, 160, 3000]
    fused = StftStage(SPEC, backend="native", dc_block_hz=hz)
    assert fused._front is not None
    apart = StftStage(SPEC, backend="native", dc_block_hz=hz)
    apart._front = None  # the kernels one by one
    got = _stage_spectra(fused, x, sizes)
    assert got.shape == (channels, SPEC.n_bins, frontend.n_frames(9000, SPEC))
    assert np.array_equal(got, _stage_spectra(apart, x, sizes))
    ref = _stage_spectra(StftStage(SPEC, backend="numpy", dc_block_hz=hz), x, [1600])
    assert np.abs(got - ref).max() <= 2e-4 * np.abs(ref).max()
    view = np.repeat(x, 2, axis=0)[::2]  # rows two apart: read in place, the same spectra
    assert np.array_equal(_stage_spectra(StftStage(SPEC, backend="native", dc_block_hz=hz), view, sizes), got)


def test_native_stream_front_rejects_nan_and_a_changed_channel_count() -> None:
    if "native" not in backends.backends() or not native.kernels().fused_fft:
        pytest.skip("native fused STFT unavailable")
    x = _audio(2, 4, n=4800)
    bad = x[:, 1600:3200].copy()
    bad[1, 5] = np.inf
    stage = StftStage(SPEC, backend="native", dc_block_hz=20.0)
    first = stage.process(Block(x[:, :1600], 0.0, 0, FS)).frames
    with pytest.raises(InputError, match=r"block 1 \(t=0.100 s\) holds NaN or infinite samples"):
        stage.process(Block(bad, 0.1, 1, FS))
    after = stage.process(Block(x[:, 1600:3200], 0.2, 2, FS)).frames  # the stream goes on, the blocker restarted
    assert np.isfinite(after).all() and after.shape[2] == frontend.n_frames(3200, SPEC) - first.shape[2]
    with pytest.raises(InputError, match="channel count changed mid-stream: 4 -> 3"):
        stage.process(Block(x[:3, 3200:], 0.3, 3, FS))


@pytest.mark.parametrize("az", [-120.0, 33.0, 150.0])
def test_native_localiser_finds_the_source_where_numpy_does(az: float) -> None:
    """Physics: a plane wave from a known azimuth is found there, and at the same place as numpy."""
    if "native" not in backends.backends():
        pytest.skip("native backend unavailable")
    array = load_array("respeaker-4mic-hat")
    sig = np.concatenate([np.zeros(1600), noise_burst(FS // 2, 5), np.zeros(1600)])
    x = plane_wave(sig, array.mics, az, 0.0).astype(np.float32)
    found = {}
    for b in ("numpy", "native"):
        loc = Localiser(array, SPEC, LocaliserConfig(backend=b))
        s = backends.get("stft", b)(x, SPEC)
        found[b] = loc.bearings(loc.frame_cross(s[:, :, active_frames(s)]).sum(axis=0))
    assert found["native"] and found["numpy"]
    assert ang_err(found["native"][0].azimuth, az) <= 2.0
    assert ang_err(found["native"][0].azimuth, found["numpy"][0].azimuth) <= 0.1


def test_level_kernels_measure_a_full_scale_sine_at_0_dbfs() -> None:
    t = np.arange(FS) / FS
    x = np.sin(2 * np.pi * 1000.0 * t)[None].astype(np.float32)
    for b in [b for b in ("numpy", "native") if b in backends.backends()]:
        assert abs(backends.get("leq_dbfs", b)(x)) < 0.01
        s = backends.get("stft", b)(x, SPEC)
        power = backends.get("frame_power", b)(s, parseval_weights(SPEC))
        assert np.allclose(10 * np.log10(2 * power), 0.0, atol=0.1)  # Parseval: the same level per frame


# --- aarch64 NEON under qemu-user ---------------------------------------------------------------
def test_neon_build_equals_reference_under_qemu(tmp_path: Path) -> None:
    gcc = shutil.which("aarch64-linux-gnu-gcc")
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if gcc is None or qemu is None:
        pytest.skip("needs gcc-aarch64-linux-gnu and qemu-user-static")
    exe = tmp_path / "harness"
    build = [gcc, "-O3", "-ffp-contract=off", "-fno-math-errno", "-static", str(native.SOURCE)]
    subprocess.run([*build, str(ROOT / "tests" / "native" / "harness.c"), "-o", str(exe), "-lm"], check=True)
    x = _audio(6, n=6000)
    c, n = x.shape
    t = frontend.n_frames(n, SPEC)
    s = frontend.stft(x, SPEC)
    pairs = mic_pairs(c).astype(np.int64)
    cc = backends.get("gcc")(backends.get("phat_cross_spectra")(s, pairs, BINS).sum(axis=0), BINS, SPEC.n_fft, 16)
    lag = np.random.default_rng(7).uniform(-10.0, cc.shape[1] + 10.0, (300, len(pairs)))
    pcm = np.clip(np.round(x.T * 8000), -32768, 32767).astype(np.int16)
    mel = native.sparse_mel(SPEC)
    w = parseval_weights(SPEC)
    hist = np.random.default_rng(8).exponential(size=(3, BINS.stop - BINS.start)).astype(np.float32)
    tables = native.fft_tables(SPEC.n_fft)
    assert tables is not None
    d = tmp_path
    dims = (c, n, t, SPEC.n_bins, SPEC.n_mels, len(pairs), BINS.start, BINS.stop, len(lag), cc.shape[1])
    (d / "dims").write_text(" ".join(map(str, (*dims, SPEC.n_fft, SPEC.win, SPEC.hop))))
    for name, arr in {
        "x.f32": x, "pcm.i16": pcm, "win.f32": frontend.periodic_hann(SPEC.win), "spec.c64": s,
        "bstart.i32": mel.start, "blen.i32": mel.length, "wofs.i32": mel.offset, "wts.f32": mel.weights,
        "pairs.i64": pairs, "cc.f32": cc, "lag.f64": lag, "w.f64": w,
        "tw.c64": tables.tw, "rot.c64": tables.rot, "rev.i32": tables.rev, "hist.f32": hist,
    }.items():  # fmt: skip
        np.ascontiguousarray(arr).tofile(d / name)
    out = subprocess.run([qemu, str(exe), str(d)], check=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["neon", str(native.ABI_VERSION), "4"]

    def read(name: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.fromfile(d / name, dtype=dtype).reshape(shape)

    frames = np.lib.stride_tricks.sliding_window_view(x, SPEC.win, axis=-1)[:, :: SPEC.hop][:, :t]
    want = np.zeros((c, t, SPEC.n_fft), np.float32)
    want[:, :, : SPEC.win] = frames * frontend.periodic_hann(SPEC.win)
    stft = read("stft.out", np.complex64, s.shape)  # the fused STFT with its own FFT, 4 frames per lane set
    assert np.max(np.abs(stft - s)) <= 1e-5 * np.max(np.abs(s))
    sample_major = (c, SPEC.n_fft, t)  # the FFT runs along axis 1 and yields the [C, F, T] layout
    assert np.array_equal(read("frame_f32.out", np.float32, sample_major), want.transpose(0, 2, 1))
    fi = read("frame_i16.out", np.float32, sample_major).transpose(0, 2, 1)
    want_i = np.zeros_like(want)
    xi = pcm.T.astype(np.float32) / 32768.0
    want_i[:, :, : SPEC.win] = np.lib.stride_tricks.sliding_window_view(xi, SPEC.win, axis=-1)[:, :: SPEC.hop][:, :t]
    want_i[:, :, : SPEC.win] *= frontend.periodic_hann(SPEC.win)
    assert np.max(np.abs(fi - want_i)) <= 1e-7
    assert np.array_equal(read("transpose.out", np.complex64, (c, t, SPEC.n_bins)), s.transpose(0, 2, 1))
    lm = read("logmel.out", np.float32, (t, SPEC.n_mels))
    assert np.max(np.abs(lm - frontend.logmel_from_spectra(s, SPEC))) <= 1e-4
    cross = read("phat.out", np.complex64, (t, len(pairs), BINS.stop - BINS.start))
    assert np.max(np.abs(cross - backends.get("phat_cross_spectra")(s, pairs, BINS))) <= 1e-5
    ow_ref, hist_ref = backends.get("onset_weights")(s, BINS, hist, 0.05)
    onset_bt = read("onset.out", np.float32, ow_ref.shape[::-1])  # the kernel writes [B, T]
    np.testing.assert_allclose(onset_bt.T, ow_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(read("hist.out", np.float32, hist_ref.shape), hist_ref, rtol=1e-6)
    cross_w = read("phat_w.out", np.complex64, (t, len(pairs), BINS.stop - BINS.start))
    assert np.max(np.abs(cross_w - backends.get("phat_cross_spectra")(s, pairs, BINS, ow_ref))) <= 1e-5
    sel = np.flatnonzero(np.arange(t) % 5 != 2)
    want_blocks, want_w = backends.get("cross_blocks")(s, pairs, BINS, sel, 4, 3, 0.05)
    got_blocks = read("blocks.out", np.complex64, want_blocks.shape)
    assert np.max(np.abs(got_blocks - want_blocks)) <= 4e-5
    got_fw = read("blocks_fw.out", np.float64, (t,))
    np.testing.assert_allclose(np.add.reduceat(got_fw[sel], np.arange(0, len(sel), 4)), want_w, rtol=1e-6)
    assert np.all(got_fw[np.arange(t) % 5 == 2] == 0.0)
    want_one, _ = backends.get("cross_blocks")(s, pairs, BINS, sel, len(sel), 3, 0.05)
    got_one = read("block1.out", np.complex64, want_one.shape[1:])
    assert np.max(np.abs(got_one - want_one[0])) <= 1e-5 * len(sel)
    srp_ref = backends.get("srp_map")(cc, lag)
    assert np.max(np.abs(read("srp.out", np.float32, (len(lag),)) - srp_ref)) <= 1e-5 * np.max(np.abs(srp_ref))
    np.testing.assert_allclose(read("power.out", np.float64, (t,)), backends.get("frame_power")(s, w), rtol=1e-5)
    assert abs(float(read("leq.out", np.float64, (1,))[0]) - backends.get("leq_dbfs")(x)) <= 1e-4


# --- choice of backend and inputs that must be rejected ------------------------------------------
def test_resolve_order_cli_then_env_then_board(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert backends.resolve("numpy") == "numpy"
    assert backends.resolve(None, board_preference="numpy") == "numpy"
    auto = "native" if "native" in backends.backends() else "numpy"
    assert backends.resolve(None) == auto
    monkeypatch.setenv(backends.ENV_VAR, "numpy")
    assert backends.resolve(None, board_preference="native") == "numpy"  # env beats the board
    if "native" in backends.backends():
        assert backends.resolve("native") == "native"  # the CLI beats env


@pytest.mark.parametrize("bad", ["cuda", "NumPy", ""])
def test_unknown_backend_names_are_rejected(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    if bad:
        with pytest.raises(ConfigError, match=repr(bad)):
            backends.resolve(bad)
        monkeypatch.setenv(backends.ENV_VAR, bad)
        with pytest.raises(ConfigError, match=backends.ENV_VAR):
            backends.resolve(None)
        monkeypatch.delenv(backends.ENV_VAR)
    with pytest.raises(ConfigError, match="board profile"):
        backends.resolve(None, board_preference=bad or "gpu")


def test_unavailable_board_preference_warns_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    monkeypatch.setitem(backends._unavailable, "tinygrad", "not installed (test)")
    monkeypatch.setattr(backends, "_registry", {k: v for k, v in backends._registry.items() if k != "tinygrad"})
    with caplog.at_level(logging.WARNING):
        got = backends.resolve(None, board_preference="tinygrad")
    assert got in ("native", "numpy") and "not installed (test)" in caplog.text
    with pytest.raises(ConfigError, match="not available"):
        backends.resolve("tinygrad")  # an explicit choice is an error, not a silent fallback


def test_kernel_missing_from_a_backend_runs_native_else_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # tinygrad has the batch kernels only; the streaming ones (nb_vote, ...) must run on the fast CPU path
    backends.backends()  # load the registry before replacing it
    reg = {k: dict(v) for k, v in backends._registry.items()}
    own = reg["numpy"]["stft"]
    reg["tinygrad"] = {"stft": own}
    monkeypatch.setattr(backends, "_registry", reg)
    assert backends.get("stft", "tinygrad") is own
    if "native" in reg:
        assert backends.get("nb_vote", "tinygrad") is reg["native"]["nb_vote"]
        assert backends.get("nb_vote", "tinygrad") is not reg["numpy"]["nb_vote"]
    reg.pop("native", None)
    assert backends.get("nb_vote", "tinygrad") is reg["numpy"]["nb_vote"]


def test_no_compiler_means_numpy_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TYMPAN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "_packaged", lambda variant: None)
    monkeypatch.setattr(native, "find_compiler", lambda: None)
    with pytest.raises(native.NativeUnavailable, match="no C compiler"):
        native.load_variant(native.machine_variants()[-1])
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(native, "find_compiler", lambda: "/nonexistent/cc")
    with pytest.raises(native.NativeUnavailable):
        native.load_variant("portable")


def test_bad_simd_variant_is_rejected() -> None:
    with pytest.raises(ConfigError, match="'sse9'"):
        native.load_variant("sse9")


def test_native_kernels_reject_bad_inputs() -> None:
    kern = _kernels("native-portable")
    s = backends.get("stft")(_audio(8, n=2000), SPEC)
    with pytest.raises(InputError, match="int16"):
        kern["stft_int16"](np.zeros((100, 2), np.float32), SPEC)
    with pytest.raises(InputError, match="pairs"):
        kern["phat_cross_spectra"](s, np.array([[0, 9]]), BINS)
    with pytest.raises(InputError, match="pairs"):
        kern["cross_blocks"](s, np.array([[0, 9]]), BINS, np.arange(5), 4)
    for bad in (np.array([3, 2]), np.array([0, s.shape[2]]), np.array([-1, 0])):
        with pytest.raises(InputError, match="ascending"):
            kern["cross_blocks"](s, mic_pairs(4), BINS, bad, 4)
    with pytest.raises(InputError, match="block"):
        kern["cross_blocks"](s, mic_pairs(4), BINS, np.arange(5), 0)
    for bad_ids in (np.array([0, 0, 2, 2, 3]), np.array([1, 1, 1, 2, 2]), np.array([0, 1, 0, 1, 1]), np.zeros(4, int),
                    np.zeros(5)):  # fmt: skip
        with pytest.raises(InputError, match="block indices"):
            kern["cross_blocks"](s, mic_pairs(4), BINS, np.arange(5), bad_ids)
    with pytest.raises(InputError, match="mask"):
        kern["cross_blocks"](s, mic_pairs(4), BINS, np.ones(3, bool), 4)
    for k in (kern, backends.get):
        fn = k["cross_blocks"] if isinstance(k, dict) else k("cross_blocks")
        with pytest.raises(InputError, match="onset_frames"):
            fn(s, mic_pairs(4), BINS, np.arange(5), 4, -1)
    with pytest.raises(InputError, match="lag_index"):
        kern["srp_map"](np.zeros((6, 64), np.float32), np.zeros((10, 5)))
    with pytest.raises(InputError, match="weights"):
        kern["frame_power"](s, np.ones(100))
    with pytest.raises(InputError, match="no samples"):
        kern["leq_dbfs"](np.zeros((2, 0), np.float32))
    with pytest.raises(InputError, match="no samples"):
        backends.get("leq_dbfs")(np.zeros(0, np.float32))


def _native(variant: str) -> native.Kernels:
    try:
        return native.Kernels(native.load_variant(variant.split("-", 1)[1]))
    except native.NativeUnavailable as e:
        pytest.skip(f"native build unavailable: {e}")


def _rings(slots: int, pairs: int, bins: int) -> tuple[np.ndarray, ...]:
    return (np.zeros(slots), np.zeros(slots, np.int64), np.full(slots, -1, np.int64),
            np.zeros((slots, pairs, bins), np.complex64))  # fmt: skip


@pytest.mark.parametrize("variant", _native_variants())
@pytest.mark.parametrize("onset_frames", [0, 3])
def test_fused_block_kernel_equals_the_separate_kernels(variant: str, onset_frames: int) -> None:
    """`native.BlockPost` (one C call per block) leaves the rings, the onset history and the log-mel
    features exactly as frame_power, onset_weights, phat_cross_spectra, ring_accumulate and
    logmel_from_spectra called one by one, whatever the cut of the stream into blocks."""
    k = _native(variant)
    spectra = k.stft(_audio(3, n=2 * FS), SPEC)  # 198 frames: the 16-slot rings wrap several times
    pairs, sub, slots, w = mic_pairs(4), 4, 16, parseval_weights(SPEC)
    b = BINS.stop - BINS.start
    ref = _rings(slots, len(pairs), b)
    hist = np.zeros((onset_frames, b), np.float32)
    feats, first = [], 0
    for t in (7, 1, 60, 33, 10, 43, 44):
        s = spectra[:, :, first : first + t]
        weights = None
        if onset_frames:
            weights, hist = k.onset_weights(s, BINS, hist, 0.05)
        cross = k.phat_cross_spectra(s, pairs, BINS, weights)
        k.ring_accumulate(first, sub, k.frame_power(s, w), cross, *ref)
        feats.append(k.logmel_from_spectra(s, SPEC))
        first += t
    assert first == spectra.shape[2]
    for cuts in ((60, 60, 60, 18), (1,) * 18 + (30, 50, 50, 50)):
        got = _rings(slots, len(pairs), b)
        post = native.BlockPost(k, SPEC, w, sub, *got[:3], got[3], pairs, BINS, onset_frames, 0.05)
        out, first = [], 0
        for t in cuts:
            out.append(post(spectra[:, :, first : first + t], first))
            first += t
        assert first == spectra.shape[2]
        for name, a, r in zip(("psum", "pcount", "pframe", "cross"), got, ref, strict=True):
            assert np.array_equal(a, r), name
        assert np.array_equal(post.history, hist)
        assert np.array_equal(np.concatenate(out), np.concatenate(feats))
    # levels only (no array): the power rings and the features
    got = _rings(slots, 0, 0)
    post = native.BlockPost(k, SPEC, w, sub, *got[:3])
    feats_only = np.concatenate([post(spectra[:, :, a : a + 50], a) for a in range(0, spectra.shape[2], 50)])
    assert np.array_equal(feats_only, np.concatenate(feats))
    for a, r in zip(got[:3], ref[:3], strict=True):
        assert np.array_equal(a, r)


def test_fused_block_kernel_rejects_bad_inputs() -> None:
    k = _native("native-portable")
    spectra = k.stft(_audio(4, n=4000), SPEC)
    w, b = parseval_weights(SPEC), BINS.stop - BINS.start
    psum, pcount, pframe, ring = _rings(16, 6, b)
    with pytest.raises(InputError, match="pairs"):
        native.BlockPost(k, SPEC, w, 4, psum, pcount, pframe, ring, np.array([[0, 9]] * 6), BINS)(spectra, 0)
    with pytest.raises(InputError, match="complex64"):
        native.BlockPost(k, SPEC, w, 4, psum, pcount, pframe, ring.astype(np.complex128), mic_pairs(4), BINS)
    with pytest.raises(InputError, match="int64"):
        native.BlockPost(k, SPEC, w, 4, psum, pcount.astype(np.int32), pframe)
    with pytest.raises(InputError, match="Parseval"):
        native.BlockPost(k, SPEC, w[:10], 4, psum, pcount, pframe)
    post = native.BlockPost(k, SPEC, w, 4, psum, pcount, pframe, ring, mic_pairs(4), BINS, 3, 0.05)
    with pytest.raises(InputError, match="overrun"):
        post(k.stft(_audio(4, n=16000), SPEC), 0)  # 98 frames > 15 slots of 4
    with pytest.raises(InputError, match="expected"):
        post(spectra[:, :100], 0)


def test_every_registered_backend_has_only_known_kernels() -> None:
    for b in backends.backends():
        assert b in backends.KNOWN_BACKENDS
    with pytest.raises(ValueError, match="unknown DSP kernel"):
        backends.get("fft3d")


def test_the_build_does_not_ship_a_stale_library() -> None:
    lib = native.library() if "native" in backends.backends() else None
    if lib is None:
        pytest.skip("native backend unavailable")
    assert lib.lib.tp_abi_version() == native.ABI_VERSION
    assert lib.variant in native.machine_variants()
    assert os.path.exists(lib.path)
