#!/usr/bin/env python3
"""The native DSP backend as Python loads it, on aarch64: every kernel of the NEON build against the numpy
reference.

Meant for an aarch64 CPython (a Raspberry Pi or a Jetson, or qemu-user on x86-64: see
scripts/aarch64_python_check.sh, which builds the sysroot and runs this file in it). It goes through
`edge.dsp.backends` exactly as the pipeline does, so it also checks the loader: the packaged
`_tympan_dsp` module must load as the NEON build (`--variant`). The comparisons and tolerances are those of
tests/test_backends.py (`_check_all`, `TOL["native"]`), tests/test_dsp_refine.py, tests/test_dsp_vote.py
and tests/test_dsp_rings.py. Prints one row per kernel and input; exit status 0 when every row passes,
1 on a mismatch, 2 when the native backend is missing or is not the wanted build.
"""

from __future__ import annotations

import argparse
import itertools
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# tests/test_backends.py TOL["native"] (tests/test_aarch64_python.py checks that they stay equal)
TOL = {"spectra": 1e-5, "logmel": 1e-4, "phat": 1e-5, "gcc": 1e-5, "srp": 1e-5, "power": 1e-5}
LEQ_TOL_DB = 1e-4
REFINE_TOL_DEG = 0.05  # tests/test_dsp_refine.py
VOTE_WEIGHT_TOL = 1e-5  # tests/test_dsp_vote.py
COVER_TOL = 1e-5  # tests/test_dsp_vote.py
BINS = slice(10, 193)

Arr = npt.NDArray[Any]


@dataclass
class Row:
    kernel: str
    case: str
    err: float
    tol: float
    ok: bool
    note: str = ""


ROWS: list[Row] = []


def row(kernel: str, case: str, err: float, tol: float, ok: bool | None = None, note: str = "") -> None:
    ROWS.append(Row(kernel, case, float(err), tol, bool(err <= tol) if ok is None else ok, note))


def rel(a: Arr, b: Arr) -> float:
    """max |a - b| / max |b| (the suite's measure for spectra, GCC and SRP)."""
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def absmax(a: Arr, b: Arr) -> float:
    return float(np.max(np.abs(a - b))) if np.size(a) else 0.0


def random_audio(seed: int, channels: int = 4, n: int = 8000) -> Arr:
    """tests/test_backends.py `_audio`: noise, a loud stretch and digital silence."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((channels, n)).astype(np.float32) * 0.1
    x[:, n // 3 : n // 2] *= 20
    x[:, -600:] = 0.0
    return x


def structured_audio(noise_floor: float, fs: int = 16000) -> Arr:
    """Structured input: a chirp, harmonics and clicks over a noise floor of `noise_floor` RMS, four channels
    at delays of 0, 3, 7 and 12 samples (as the suite's real-audio case), then digital silence.

    Without a noise floor the bands above the chirp hold only float32 round-off, and the log-mel of loud
    frames there differs by up to ~1.5e-3 from the reference in every build (x86 AVX2, SSE2 and portable
    alike: two float32 FFTs, log(m + 1e-3) of m ~ 1e-5): beyond the suite's 1e-4, which assumes spectra
    without near-empty bands. -50 dBFS (a quiet room through a MEMS microphone) keeps it within."""
    t = np.arange(2 * fs) / fs
    mono = 0.3 * np.sin(2 * np.pi * (200.0 * t + 1400.0 * t**2))  # 200 Hz -> 5.8 kHz chirp
    mono += 0.2 * sum(np.sin(2 * np.pi * 440.0 * k * t) / k for k in range(1, 6))
    mono[:: fs // 7] += 0.9  # clicks
    x = np.stack([np.roll(mono, d) for d in (0, 3, 7, 12)])
    x += noise_floor * np.random.default_rng(5).standard_normal(x.shape)
    x[:, -2000:] = 0.0
    return x.astype(np.float32)


def check_all(kern: dict[str, Callable[..., Any]], ref: dict[str, Callable[..., Any]], x: Arr, case: str) -> None:
    """tests/test_backends.py `_check_all`, reporting each error."""
    from edge.dsp import frontend
    from edge.dsp.gcc_phat import mic_pairs
    from edge.dsp.level import parseval_weights
    from edge.errors import InputError

    spec = frontend.DEFAULT_FRONTEND
    s_ref = ref["stft"](x, spec)
    s = kern["stft"](x, spec)
    shape_ok = s.shape == s_ref.shape and s.dtype == np.complex64
    e = rel(s, s_ref)
    row("stft", case, e, TOL["spectra"], shape_ok and e <= TOL["spectra"])
    lm_ref = ref["logmel_from_spectra"](s_ref, spec)
    lm = kern["logmel_from_spectra"](s_ref, spec)
    e = absmax(lm, lm_ref)
    ok = lm.shape == lm_ref.shape and lm.dtype == np.float32 and e <= TOL["logmel"]
    row("logmel_from_spectra", case, e, TOL["logmel"], ok)
    pairs = mic_pairs(x.shape[0])
    c_ref = ref["phat_cross_spectra"](s_ref, pairs, BINS)
    c = kern["phat_cross_spectra"](s_ref, pairs, BINS)
    e = absmax(c, c_ref)
    row(
        "phat_cross_spectra",
        case,
        e,
        TOL["phat"],
        c.shape == c_ref.shape and c.dtype == np.complex64 and e <= TOL["phat"],
    )
    hist = np.random.default_rng(2).exponential(size=(3, BINS.stop - BINS.start)).astype(np.float32)
    ow_ref, h_ref = ref["onset_weights"](s_ref, BINS, hist, 0.05)
    ow, h = kern["onset_weights"](s_ref, BINS, hist, 0.05)
    e = max(absmax(ow, ow_ref), absmax(h, h_ref) / max(float(np.max(h_ref)), 1e-30))
    row("onset_weights", case, e, 1e-5, ow.shape == ow_ref.shape and e <= 1e-5)
    cw = kern["phat_cross_spectra"](s_ref, pairs, BINS, ow_ref)
    e = absmax(cw, ref["phat_cross_spectra"](s_ref, pairs, BINS, ow_ref))
    row("phat_cross_spectra", case + ", weighted", e, TOL["phat"], e <= TOL["phat"])
    t = s_ref.shape[2]
    sel = np.flatnonzero(np.arange(t) % 5 != 2)[:-1]  # frames with gaps
    for block, onset in ((4, 3), (t, 3), (4, 0)):
        b_ref, w_ref = ref["cross_blocks"](s_ref, pairs, BINS, sel, block, onset, 0.05)
        b, wb = kern["cross_blocks"](s_ref, pairs, BINS, sel, block, onset, 0.05)
        e = absmax(b, b_ref) / min(block, len(sel))  # sums of up to `block` unit cells, in another order
        ok = b.shape == b_ref.shape and b.dtype == np.complex64 and e <= TOL["phat"]
        ok = ok and bool(np.allclose(wb, w_ref, rtol=1e-5))
        row("cross_blocks", f"{case}, {'all' if block == t else block}/{onset}"[:22], e, TOL["phat"], ok)
    cc_ref = ref["gcc"](c_ref.sum(axis=0), BINS, spec.n_fft, 16)
    cc = kern["gcc"](c_ref.sum(axis=0), BINS, spec.n_fft, 16)
    row("gcc", case, rel(cc, cc_ref), TOL["gcc"])
    lag = np.random.default_rng(1).uniform(-10.0, cc_ref.shape[1] + 10.0, (500, len(pairs)))  # some clipped
    p_ref = ref["srp_map"](cc_ref, lag)
    p = kern["srp_map"](cc_ref, lag)
    e = rel(p, p_ref)
    row("srp_map", case, e, TOL["srp"], p.shape == p_ref.shape and p.dtype == np.float32 and e <= TOL["srp"])
    w = parseval_weights(spec)
    fp_ref = ref["frame_power"](s_ref, w)
    fp = kern["frame_power"](s_ref, w)
    atol = 1e-12 * float(fp_ref.max())  # np.testing.assert_allclose(rtol=TOL["power"], atol=...) as the suite
    within = bool(np.all(np.abs(fp - fp_ref) <= atol + TOL["power"] * np.abs(fp_ref)))
    nz = np.abs(fp_ref) > atol
    e = float(np.max(np.abs(fp - fp_ref)[nz] / np.abs(fp_ref[nz]))) if nz.any() else 0.0
    row("frame_power", case, e, TOL["power"], within and fp.dtype == np.float64, "relative")
    row("leq_dbfs", case, abs(kern["leq_dbfs"](x) - ref["leq_dbfs"](x)), LEQ_TOL_DB, note="dB")
    xb = np.stack([x, 0.5 * x[::-1], np.zeros_like(x)])  # three recordings, one silent
    lb_ref, lb = ref["logmel_batch"](xb, spec), kern["logmel_batch"](xb, spec)
    ok = lb.shape == lb_ref.shape == (3, *lm_ref.shape) and lb.dtype == np.float32 and np.array_equal(lb_ref[0], lm_ref)
    e = absmax(lb, lb_ref)
    for odd in (xb[:, :, : spec.win - 1], xb[:, :, : spec.win + 7]):  # no frame; one frame and a ragged tail
        a, b = kern["logmel_batch"](odd, spec), ref["logmel_batch"](odd, spec)
        ok = ok and a.shape == b.shape
        e = max(e, absmax(a, b))
    try:
        kern["logmel_batch"](x, spec)
        ok = False  # a 2-D input must be rejected
    except InputError as err:
        ok = ok and "recordings, channels, samples" in str(err)
    row("logmel_batch", case, e, TOL["logmel"], ok and e <= TOL["logmel"], "3 recordings + short ones")
    # mono recordings: the fused STFT + log-mel call, bit for bit the backend's own STFT then log-mel; against
    # the reference on the random inputs (one channel of the structured input has near-empty bands, where
    # float32 round-off alone moves the log by ~1e-4: see structured_audio; its 4-channel mean is scored above)
    e, ok = 0.0, True
    for mono in (xb[:, :1], xb[:, :1, : spec.win - 1], xb[:, :1, : spec.win + 7]):
        a, b = kern["logmel_batch"](mono, spec), ref["logmel_batch"](mono, spec)
        own = np.stack([kern["logmel_from_spectra"](kern["stft"](r, spec), spec) for r in mono])
        ok = ok and a.shape == b.shape and np.array_equal(a, own.reshape(a.shape))
        e = max(e, absmax(a, b))
    scored = case.startswith("random")
    row("logmel_batch", "mono, " + case, e, TOL["logmel"], ok and (e <= TOL["logmel"] or not scored),
        "fused = own STFT + log-mel" + ("" if scored else "; not scored against the reference"))
    pcm = np.clip(np.round(x.T * 32767 / 4), -32768, 32767).astype(np.int16)
    si_ref = ref["stft_int16"](pcm, spec)
    row("stft_int16", case, rel(kern["stft_int16"](pcm, spec), si_ref), TOL["spectra"])


def check_block_cuts(kern: dict[str, Callable[..., Any]]) -> None:
    """tests/test_backends.py: a frame's value does not depend on where a block cuts the stream (lanes vs
    scalar tails), bit for bit."""
    from edge.dsp import frontend
    from edge.dsp.gcc_phat import mic_pairs
    from edge.dsp.level import parseval_weights

    spec = frontend.DEFAULT_FRONTEND
    w = parseval_weights(spec)
    whole = kern["stft"](random_audio(3, n=12000), spec)
    lm, pw = kern["logmel_from_spectra"](whole, spec), kern["frame_power"](whole, w)
    pairs = mic_pairs(4)
    cross = kern["phat_cross_spectra"](whole, pairs, BINS)
    ok = True
    for cut in (1, 5, 13, 33):
        parts = [whole[:, :, i : i + cut] for i in range(0, whole.shape[2], cut)]
        ok = ok and np.array_equal(np.concatenate([kern["logmel_from_spectra"](p, spec) for p in parts]), lm)
        ok = ok and np.array_equal(np.concatenate([kern["frame_power"](p, w) for p in parts]), pw)
        ok = ok and np.array_equal(np.concatenate([kern["phat_cross_spectra"](p, pairs, BINS) for p in parts]), cross)
    row("block cuts", "random 12000", 0.0 if ok else math.inf, 0.0, ok, "logmel/power/phat bit-identical")


def check_srp_refine(native: Callable[..., Any], ref: Callable[..., Any]) -> None:
    """tests/test_dsp_refine.py: the coarse-to-fine peak search, within 0.05 degree."""
    from boards.profiles import array_from_dict, load_array
    from edge.localise import Localiser, wrap_deg

    r = 0.05
    tetra = r * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    arrays = {name: load_array(name) for name in ("respeaker-4mic-hat", "minidsp-uma8")}
    arrays["tetra"] = array_from_dict({"name": "tetra", "mics": tetra.tolist()}, "check")
    for name, array in arrays.items():
        loc = Localiser(array)
        rng = np.random.default_rng(2)
        p, b = len(loc.pairs), loc.bins.stop - loc.bins.start
        el_min = -90.0 if loc.geometry == "3d" else 0.0
        worst = 0.0
        for _ in range(4):
            cross = (rng.standard_normal((p, b)) + 1j * rng.standard_normal((p, b))).astype(np.complex64)
            cc = loc._gcc_window(cross)
            g = int(rng.integers(len(loc.grid_az)))
            args = (cc, loc._diff_t, loc._lag_scale, loc._lvl_daz, loc._lvl_del, loc._lvl_sizes)
            az, el = float(loc.grid_az[g]), float(loc.grid_el[g])
            a_ref, e_ref = ref(*args, az, el, el_min)
            a, e = native(*args, az, el, el_min)
            worst = max(worst, abs(float(wrap_deg(a - a_ref))), abs(e - e_ref))
        row("srp_refine", name, worst, REFINE_TOL_DEG, note="degrees, 4 searches")


def check_srp_peaks(native: Callable[..., Any], ref: Callable[..., Any]) -> None:
    """tests/test_dsp_refine.py: the whole single-map search, the same sources; refined within 0.05 degree."""
    from boards.profiles import load_array
    from edge.localise import Localiser, wrap_deg

    for name in ("respeaker-4mic-hat", "minidsp-uma8"):
        loc = Localiser(load_array(name))
        rng = np.random.default_rng(5)
        p, b = len(loc.pairs), loc.bins.stop - loc.bins.start
        worst, same, found = 0.0, True, 0
        for _ in range(6):
            cross = (rng.standard_normal((p, b)) + 1j * rng.standard_normal((p, b))).astype(np.complex64)
            cc = loc._gcc_window(cross)
            want, got = ref(cc, loc._srp_grid, 0.3, 3, 25.0), native(cc, loc._srp_grid, 0.3, 3, 25.0)
            same = same and got.shape == want.shape
            if got.shape == want.shape and len(want):
                found += len(want)
                worst = max(worst, float(np.max(np.abs(wrap_deg(got[:, 0] - want[:, 0])))))
                worst = max(worst, float(np.max(np.abs(got[:, 1] - want[:, 1]))))
                same = same and bool(np.allclose(got[:, 2:], want[:, 2:], rtol=1e-5, atol=1e-6))
        ok = same and found > 0 and worst <= REFINE_TOL_DEG
        row("srp_peaks", name, worst, REFINE_TOL_DEG, ok, f"degrees; {found} sources in 6 maps, same choices")


def check_vote_hist(native: Callable[..., Any], ref: Callable[..., Any]) -> None:
    """tests/test_dsp_vote.py: within 1e-12 of the reference (numpy may sum the taps in another order), the
    same peaks."""
    from edge.dsp.srp_phat import gauss_taps

    worst, same = 0.0, True
    for seed in range(8):
        rng = np.random.default_rng(seed)
        vote = rng.integers(0, 180, (83, 5))
        weight = rng.random(vote.shape).astype(np.float32)
        for circular in (True, False):
            h_ref, p_ref = ref(vote, weight, 180, gauss_taps(2.0), circular)
            h, p = native(vote, weight, 180, gauss_taps(2.0), circular)
            worst = max(worst, rel(h, h_ref))
            same = same and p == p_ref
    row("vote_hist", "random 83 x 5 cells", worst, 1e-12, same and worst <= 1e-12, "16 histograms, the same peaks")


def check_cover_scores(native: Callable[..., Any], ref: Callable[..., Any]) -> None:
    """tests/test_dsp_vote.py: pair scores and matches within COVER_TOL of the largest, relatively."""
    from boards.profiles import load_array
    from edge.localise import Localiser, LocaliserConfig

    loc = Localiser(load_array("respeaker-4mic-hat"), config=LocaliserConfig(az_step_deg=2.0))  # 180 directions
    sr, si = loc._nb_re, loc._nb_im
    for k, cand in ((1, [0, 45]), (5, [3, 50, 90, 140]), (34, [0, 20, 40, 60, 80, 100, 120, 140, 179])):
        rng = np.random.default_rng(k)
        p, b = len(loc.pairs), loc.bins.stop - loc.bins.start
        blocks = (rng.standard_normal((k, p, b)) + 1j * rng.standard_normal((k, p, b))).astype(np.complex64)
        blocks[0, :, :3] = 0.0  # silent cells
        weight = rng.random((b, k)).astype(np.float32)
        pair_ref, m_ref = ref(blocks, sr, si, cand, weight, 5.0)
        pair, m = native(blocks, sr, si, cand, weight, 5.0)
        ok = pair.shape == pair_ref.shape and m.shape == m_ref.shape and m.dtype == np.float32
        e = max(rel(pair, pair_ref), rel(m, m_ref))
        row("cover_scores", f"random K={k}, N={len(cand)}", e, COVER_TOL, ok and e <= COVER_TOL)


def check_nb_vote(native: Callable[..., Any], ref: Callable[..., Any]) -> None:
    """tests/test_dsp_vote.py: weights within 1e-5; a vote may differ only between near-equal directions."""
    from boards.profiles import load_array
    from edge.localise import Localiser

    loc = Localiser(load_array("respeaker-4mic-hat"))
    sr, si = loc._nb_re, loc._nb_im
    for k in (1, 5, 34):
        rng = np.random.default_rng(k)
        p, b = len(loc.pairs), loc.bins.stop - loc.bins.start
        blocks = (rng.standard_normal((k, p, b)) + 1j * rng.standard_normal((k, p, b))).astype(np.complex64)
        blocks[0, :, :3] = 0.0  # silent cells
        vote_ref, weight_ref = ref(blocks, sr, si)
        vote, weight = native(blocks, sr, si, loc._nb_mirror)  # the full circle's mirrored steering
        ok = loc._nb_mirror and vote.dtype == np.int64 and weight.dtype == np.float32 and vote.shape == vote_ref.shape
        unit = blocks / (np.abs(blocks) + 1e-12)
        resp = np.einsum("kpb,bpg->bkg", unit.astype(np.complex128), sr + 1j * si.astype(np.float64)).real
        bb, kk = np.nonzero(vote != vote_ref)
        ok = ok and len(bb) <= max(1, vote.size // 200)
        ok = ok and bool(np.all(np.abs(resp[bb, kk, vote[bb, kk]] - resp[bb, kk, vote_ref[bb, kk]]) < 1e-4))
        e = absmax(weight, weight_ref)
        row("nb_vote", f"random K={k}", e, VOTE_WEIGHT_TOL, ok and e <= VOTE_WEIGHT_TOL, f"{len(bb)} votes differ")


def check_ring_accumulate(native: Callable[..., Any], ref: Callable[..., Any]) -> None:
    """tests/test_dsp_rings.py: the same sums bit for bit, whatever the chunking."""
    ring_n, sub, shape, n = 9, 4, (3, 5), 317
    rng = np.random.default_rng(2)
    power = rng.uniform(0.0, 1.0, n) ** 3
    cross = (rng.standard_normal((n, *shape)) + 1j * rng.standard_normal((n, *shape))).astype(np.complex64)

    def feed(kernel: Callable[..., Any], c: Arr | None, cuts: list[int]) -> list[Arr]:
        psum, pcount = np.zeros(ring_n), np.zeros(ring_n, np.int64)
        pframe, ring = np.full(ring_n, -1, np.int64), np.zeros((ring_n, *shape), np.complex64)
        for a, b in itertools.pairwise([0, *cuts, n]):
            kernel(a, sub, power[a:b], None if c is None else c[a:b], psum, pcount, pframe, None if c is None else ring)
        return [psum, pcount, pframe, ring]

    worst, ok = 0.0, True
    for seed in range(4):
        cuts, at, crng = [], 0, np.random.default_rng(seed)
        while (at := at + int(crng.integers(0, (ring_n - 1) * sub + 1))) < n:
            cuts.append(at)
        for c in (cross, None):
            for w, g in zip(feed(ref, c, cuts), feed(native, c, cuts), strict=True):
                worst = max(worst, absmax(g, w))
                ok = ok and np.array_equal(g, w)
    row("ring_accumulate", "random, 8 chunkings", worst, 0.0, ok, "bit-identical")


def check_dc_block(native: Callable[..., Any], ref: Callable[..., Any]) -> None:
    """tests/test_dsp_dcblock.py: the same doubles as the reference's lfilter, whatever the cut into blocks."""
    from edge.dsp.dcblock import dc_block_pole, dc_block_state

    r = dc_block_pole(10.0, 16000)
    worst, ok = 0.0, True
    for channels in (1, 4, 6):
        rng = np.random.default_rng(channels)
        x = (0.05 * rng.standard_normal((channels, 3001)) + 0.3).astype(np.float32)
        want = ref(x, r, dc_block_state(x[:, 0]))
        state = dc_block_state(x[:, 0])
        parts = np.split(x, [7, 1500, 1501], axis=1)
        got = np.concatenate([native(np.ascontiguousarray(p), r, state) for p in parts], axis=1)
        worst = max(worst, absmax(got, want))
        ok = ok and np.array_equal(got, want)
    row("dc_block", "1/4/6 ch, 4 blocks", worst, 0.0, ok, "bit-identical")


def check_block_post(kern: dict[str, Callable[..., Any]]) -> None:
    """tests/test_backends.py (fused block kernel): native.BlockPost leaves the rings, the onset history and
    the features exactly as the separate native kernels do, whatever the cut into blocks."""
    from edge.dsp import frontend, native
    from edge.dsp.gcc_phat import mic_pairs
    from edge.dsp.level import parseval_weights

    spec, k = frontend.DEFAULT_FRONTEND, native.kernels()
    spectra = kern["stft"](random_audio(3, n=32000), spec)
    pairs, sub, slots, w, b = mic_pairs(4), 4, 16, parseval_weights(spec), BINS.stop - BINS.start

    def rings() -> list[Arr]:
        return [np.zeros(slots), np.zeros(slots, np.int64), np.full(slots, -1, np.int64),
                np.zeros((slots, len(pairs), b), np.complex64)]  # fmt: skip

    ok, n = True, spectra.shape[2]
    for onset in (0, 3):
        ref, hist, feats = rings(), np.zeros((onset, b), np.float32), []
        for a in range(0, n, 41):
            s = spectra[:, :, a : a + 41]
            weights = None
            if onset:
                weights, hist = kern["onset_weights"](s, BINS, hist, 0.05)
            cross = kern["phat_cross_spectra"](s, pairs, BINS, weights)
            kern["ring_accumulate"](a, sub, kern["frame_power"](s, w), cross, *ref)
            feats.append(kern["logmel_from_spectra"](s, spec))
        got = rings()
        post = native.BlockPost(k, spec, w, sub, *got, pairs, BINS, onset, 0.05)
        out = [post(spectra[:, :, a : a + 13], a) for a in range(0, n, 13)]
        ok = ok and all(np.array_equal(g, r) for g, r in zip(got, ref, strict=True))
        ok = ok and np.array_equal(post.history, hist) and np.array_equal(np.concatenate(out), np.concatenate(feats))
    row("block_post", "2 onset settings", 0.0, 0.0, ok, "bit-identical to the separate kernels")


def check_stream_front() -> None:
    """tests/test_backends.py (fused front end): edge.stft.StftStage's one native call per block (DC blocker,
    joining, fused STFT) gives the spectra of the native DC blocker and STFT called one by one, bit for bit,
    whatever the cut into blocks."""
    from edge.dsp import frontend
    from edge.messages import Block
    from edge.stft import StftStage

    spec, ok = frontend.DEFAULT_FRONTEND, True
    for channels in (1, 4, 6):
        x = random_audio(channels, channels=channels, n=9000) + np.float32(0.2)
        for hz in (0.0, 20.0):
            fused, apart = StftStage(spec, "native", hz), StftStage(spec, "native", hz)
            ok = ok and fused._front is not None
            apart._front = None
            got: list[list[Arr]] = [[], []]
            i = 0
            for k, n in enumerate((1600, 0, 37, 400, 1, 1000, 160, 9000)):
                for st, out in zip((fused, apart), got, strict=True):
                    out.append(st.process(Block(x[:, i : i + n], i / 16000, k, 16000)).frames)
                i = min(i + n, x.shape[1])
            ok = ok and np.array_equal(np.concatenate(got[0], axis=2), np.concatenate(got[1], axis=2))
    row("stream front", "1/4/6 ch, 8 blocks", 0.0, 0.0, ok, "bit-identical to dc_block + stft")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="neon", help="the build the loader must pick (default %(default)s)")
    ap.add_argument("--noise-floor", type=float, default=3e-3, help="RMS of the structured input's noise floor "
                    "(default %(default)s, -50 dBFS; see structured_audio)")  # fmt: skip
    args = ap.parse_args()
    t0 = time.perf_counter()
    from edge.dsp import backends, native

    print(f"python {platform.python_version()} on {platform.machine()}, numpy {np.__version__}")
    if "native" not in backends.backends():
        print(f"FAIL: native backend not loaded: {backends.unavailable().get('native')}")
        return 2
    lib = native.library()
    width = int(lib.lib.tp_simd_width())
    print(f"native backend: {lib.variant} build (tp_simd {lib.lib.tp_simd().decode()}, {width} lanes, "
          f"ABI {lib.lib.tp_abi_version()}) from {lib.path}")  # fmt: skip
    if lib.variant != args.variant or lib.lib.tp_simd().decode() != args.variant:
        print(f"FAIL: wanted the {args.variant} build")
        return 2
    if args.variant == "neon" and (width != 4 or not native.kernels().fused_fft):
        print(f"FAIL: the NEON build should have 4 float lanes and the fused STFT, got {width}")
        return 2
    ref = {k: backends.get(k) for k in backends.KERNELS}
    kern = {k: backends.get(k, "native") for k in backends.KERNELS}
    if any(getattr(f, "__self__", None) is not native.kernels() for f in kern.values()):
        print("FAIL: the registry's native kernels are not the loaded build's")
        return 2
    for seed in (0, 1):
        check_all(kern, ref, random_audio(seed), f"random seed {seed}")
    floor = f"{20 * math.log10(args.noise_floor):.0f} dB" if args.noise_floor > 0 else "no noise"
    check_all(kern, ref, structured_audio(args.noise_floor), f"chirp+tones, {floor}")
    sine = np.sin(2 * np.pi * 1000.0 * np.arange(16000) / 16000)[None].astype(np.float32)
    row("leq_dbfs", "full-scale sine", abs(kern["leq_dbfs"](sine)), 0.01, note="dBFS, want 0")
    check_block_cuts(kern)
    check_srp_refine(kern["srp_refine"], ref["srp_refine"])
    check_srp_peaks(kern["srp_peaks"], ref["srp_peaks"])
    check_nb_vote(kern["nb_vote"], ref["nb_vote"])
    check_cover_scores(kern["cover_scores"], ref["cover_scores"])
    check_vote_hist(kern["vote_hist"], ref["vote_hist"])
    check_ring_accumulate(kern["ring_accumulate"], ref["ring_accumulate"])
    check_dc_block(kern["dc_block"], ref["dc_block"])
    check_block_post(kern)
    check_stream_front()

    print(f"\n{'kernel':<20} {'input':<22} {'max error':>10} {'tolerance':>10}  result")
    for r in ROWS:
        print(f"{r.kernel:<20} {r.case:<22} {r.err:>10.3g} {r.tol:>10.3g}  {'ok' if r.ok else 'MISMATCH'}  {r.note}")
    checked = {r.kernel for r in ROWS}
    missing = [k for k in backends.KERNELS if k not in checked]
    bad = [r for r in ROWS if not r.ok]
    print(f"\n{len(ROWS)} checks of {len(checked & set(backends.KERNELS))}/{len(backends.KERNELS)} kernels "
          f"in {time.perf_counter() - t0:.1f} s: {'all match' if not bad and not missing else 'FAILED'}")  # fmt: skip
    if missing:
        print(f"FAIL: kernels not checked: {', '.join(missing)}")
    return 1 if bad or missing else 0


if __name__ == "__main__":
    sys.exit(main())
