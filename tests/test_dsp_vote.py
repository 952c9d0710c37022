"""The narrowband vote kernel (`nb_vote`, the localiser's multi-source histogram): every native SIMD
build against the numpy reference, and the reference against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest

from boards.profiles import load_array
from edge.dsp import backends, native
from edge.localise import Localiser, LocaliserConfig


def _inputs(k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # a 2-degree grid (180 directions: the candidate indices below go up to 179)
    loc = Localiser(load_array("respeaker-4mic-hat"), config=LocaliserConfig(az_step_deg=2.0))
    rng = np.random.default_rng(seed)
    p, b = len(loc.pairs), loc.bins.stop - loc.bins.start
    blocks = (rng.standard_normal((k, p, b)) + 1j * rng.standard_normal((k, p, b))).astype(np.complex64)
    blocks[0, :, :3] = 0.0  # silent cells: unit cross-spectra of zero
    return blocks, loc._nb_re, loc._nb_im


def test_reference_is_the_steered_response_argmax() -> None:
    blocks, sr, si = _inputs(3)
    vote, weight = backends.get("nb_vote")(blocks, sr, si)
    unit = blocks / (np.abs(blocks) + 1e-12)
    resp = np.einsum("kpb,bpg->bkg", unit.astype(np.complex128), sr + 1j * si.astype(np.float64)).real
    assert vote.shape == weight.shape == (blocks.shape[2], blocks.shape[0])
    assert vote.dtype == np.int64 and weight.dtype == np.float32
    top2 = np.sort(resp, axis=2)[:, :, -2:]
    clear = top2[:, :, 1] - top2[:, :, 0] > 1e-4
    assert np.array_equal(vote[clear], np.argmax(resp, axis=2)[clear])
    np.testing.assert_allclose(weight, (resp.max(axis=2) - resp.mean(axis=2)) / blocks.shape[1], atol=1e-5)
    assert np.all(vote[:3, 0] == 0) and np.all(weight[:3, 0] == 0.0)  # all-zero cells: first direction


def test_localiser_steering_of_a_full_circle_is_mirrored() -> None:
    """A full circle of azimuths: directions g + G/2 are g turned by 180 degrees, whose narrowband
    steering is exactly the conjugate (what the kernel's `mirror` relies on); a half circle (a linear
    array's azimuths) is not mirrored."""
    loc = Localiser(load_array("respeaker-4mic-hat"))
    g = loc._nb_re.shape[2]
    assert loc._nb_mirror and g % 2 == 0
    np.testing.assert_allclose(loc._az_vals[g // 2 :] - loc._az_vals[: g // 2], 180.0)
    assert np.array_equal(loc._nb_re[:, :, g // 2 :], loc._nb_re[:, :, : g // 2])
    assert np.array_equal(loc._nb_im[:, :, g // 2 :], -loc._nb_im[:, :, : g // 2])
    # and it is the plane-wave steering of those azimuths (to float32 rounding)
    direct = loc._nb_steer(loc._az_vals)
    assert np.max(np.abs(loc._nb_re + 1j * loc._nb_im - direct)) < 1e-5
    assert not Localiser(load_array("ps3-eye"))._nb_mirror


@pytest.mark.parametrize("variant", native.machine_variants())
@pytest.mark.parametrize("k", [1, 5, 34])
@pytest.mark.parametrize("mirror", [False, True])
def test_native_nb_vote_equals_reference(variant: str, k: int, mirror: bool) -> None:
    try:
        kern = native.Kernels(native.load_variant(variant))
    except native.NativeUnavailable as e:
        pytest.skip(f"native build unavailable: {e}")
    blocks, sr, si = _inputs(k, seed=k)
    if not mirror:  # a steering without the symmetry: every column is computed
        sr, si = np.ascontiguousarray(sr[:, :, :-3]), np.ascontiguousarray(si[:, :, :-3])
    vote_ref, weight_ref = backends.get("nb_vote")(blocks, sr, si, mirror)
    vote, weight = kern.nb_vote(blocks, sr, si, mirror)
    assert vote.dtype == np.int64 and weight.dtype == np.float32 and vote.shape == vote_ref.shape
    np.testing.assert_allclose(weight, weight_ref, atol=1e-5)
    # a cell may flip only between near-equal directions (rounding of the sums)
    unit = blocks / (np.abs(blocks) + 1e-12)
    resp = np.einsum("kpb,bpg->bkg", unit.astype(np.complex128), sr + 1j * si.astype(np.float64)).real
    b, kk = np.nonzero(vote != vote_ref)
    assert len(b) <= max(1, vote.size // 200)
    assert np.all(np.abs(resp[b, kk, vote[b, kk]] - resp[b, kk, vote_ref[b, kk]]) < 1e-4)


def test_native_nb_vote_rejects_mismatched_steering() -> None:
    if "native" not in backends.backends():
        pytest.skip("native backend unavailable")
    blocks, sr, si = _inputs(2)
    with pytest.raises(Exception, match="does not match"):
        backends.get("nb_vote", "native")(blocks, sr[:, :-1], si[:, :-1])
    with pytest.raises(Exception, match="even"):
        backends.get("nb_vote", "native")(blocks, sr[:, :, :-1], si[:, :, :-1], True)
    vote, _ = backends.get("nb_vote", "native")(blocks[:0], sr, si)
    assert vote.shape == (blocks.shape[2], 0)


# --- vote_hist: the cells' histogram, smoothed, and its peaks ------------------------------------------


def _votes(seed: int, n_dirs: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vote = rng.integers(0, n_dirs, (cells // 5, 5))
    weight = rng.random(vote.shape).astype(np.float32)
    if seed % 3 == 0:
        weight[:] = 1.0  # integer counts: plateaus and ties between peaks
    return vote, weight


def test_vote_hist_reference_is_a_wrapped_smoothing_of_the_weighted_counts() -> None:
    from edge.dsp.srp_phat import gauss_taps

    vote, weight = _votes(1, 180, 400)
    taps = gauss_taps(2.0)
    hist, peaks = backends.get("vote_hist")(vote, weight, 180, taps, True)
    counts = np.zeros(180)
    np.add.at(counts, vote.ravel(), weight.ravel().astype(np.float64))
    half = len(taps) // 2
    direct = np.array([sum(counts[(i + j) % 180] * taps[j + half] for j in range(-half, half + 1)) for i in range(180)])
    np.testing.assert_allclose(hist, direct, rtol=1e-12, atol=1e-12)
    left, right = np.roll(hist, 1), np.roll(hist, -1)
    assert sorted(peaks) == np.flatnonzero((hist >= left) & (hist > right)).tolist()
    assert [hist[k] for k in peaks] == sorted((hist[k] for k in peaks), reverse=True)


@pytest.mark.parametrize("variant", native.machine_variants())
def test_native_vote_hist_equals_reference(variant: str) -> None:
    """Within 1e-12 (numpy's dot may sum the taps in another order: on x86-64 here the localiser's 13 taps
    come out bit for bit, on aarch64 within 1e-15); the same peaks with the localiser's taps."""
    from edge.dsp.srp_phat import gauss_taps

    try:
        kern = native.Kernels(native.load_variant(variant))
    except native.NativeUnavailable as e:
        pytest.skip(f"native build unavailable: {e}")
    ref = backends.get("vote_hist")
    for seed in range(30):
        n_dirs = (180, 90, 13, 400)[seed % 4]
        vote, weight = _votes(seed, n_dirs, 5 * (seed * 37 % 300))
        taps = gauss_taps((2.0, 0.7, 4.0)[seed % 3])
        if len(taps) > n_dirs:
            continue
        for circular in (True, False):
            h_ref, p_ref = ref(vote, weight, n_dirs, taps, circular)
            h, p = kern.vote_hist(vote, weight, n_dirs, taps, circular)
            np.testing.assert_allclose(h, h_ref, rtol=1e-12, atol=1e-12)
            if len(taps) <= 13:  # the localiser's taps (sigma 2 bins): the same peaks in the same order
                assert p == p_ref, (seed, circular)


def test_vote_hist_rejects_votes_and_taps_that_do_not_fit() -> None:
    from edge.dsp.srp_phat import gauss_taps
    from edge.errors import InputError

    vote, weight = _votes(2, 180, 100)
    for backend in sorted({"numpy", *backends.backends()} & {"numpy", "native"}):
        kern = backends.get("vote_hist", backend)
        with pytest.raises(InputError, match=r"outside 0\.\.179"):
            kern(vote + 200, weight, 180, gauss_taps(2.0), True)
        with pytest.raises(InputError, match="odd number"):
            kern(vote, weight, 180, np.ones(4) / 4, True)


COVER_TOL = 1e-5  # scripts/aarch64_python_check.py: the same tolerance on the NEON build


def test_cover_scores_reference_is_the_best_member_of_each_pair_summed() -> None:
    """`cover_scores`: each cell's match to a candidate is its vote weight times exp(s (r - 1)), r its
    steered response there over the pairs; a pair scores each cell by its better member."""
    blocks, sr, si = _inputs(4)
    rng = np.random.default_rng(1)
    weight = rng.random((blocks.shape[2], blocks.shape[0])).astype(np.float32)
    cand = [0, 30, 95, 150]
    pair, m = backends.get("cover_scores")(blocks, sr, si, cand, weight, 5.0)
    unit = blocks / (np.abs(blocks) + 1e-12)
    resp = np.einsum("kpb,bpg->bkg", unit.astype(np.complex128), sr + 1j * si.astype(np.float64)).real
    r = resp[:, :, cand] / blocks.shape[1]  # [B, K, N]
    want = (weight[:, :, None] * np.exp(5.0 * (r - 1.0))).reshape(-1, len(cand)).T
    np.testing.assert_allclose(m, want, rtol=1e-4, atol=1e-7)
    for i in range(len(cand)):
        for j in range(len(cand)):
            assert pair[i, j] == pytest.approx(float(np.maximum(want[i], want[j]).sum()), rel=1e-4)
    k = blocks.shape[0]
    silent = m[:, [0, k, 2 * k]]  # cells (bin b, block k) at b K + k: block 0's first three bins are silent
    np.testing.assert_allclose(silent, np.broadcast_to(weight[:3, 0] * np.exp(-5.0), silent.shape), rtol=1e-5)


@pytest.mark.parametrize("variant", native.machine_variants())
@pytest.mark.parametrize(("k", "cand"), [(1, [0, 45]), (5, [3, 50, 90, 140]), (34, list(range(0, 180, 20)))])
def test_native_cover_scores_equal_reference(variant: str, k: int, cand: list[int]) -> None:
    try:
        kern = native.Kernels(native.load_variant(variant))
    except native.NativeUnavailable as e:
        pytest.skip(f"native build unavailable: {e}")
    blocks, sr, si = _inputs(k, seed=k)
    weight = np.random.default_rng(k).random((blocks.shape[2], k)).astype(np.float32)
    pair_ref, m_ref = backends.get("cover_scores")(blocks, sr, si, cand, weight, 5.0)
    pair, m = kern.cover_scores(blocks, sr, si, cand, weight, 5.0)
    assert pair.dtype == np.float64 and m.dtype == np.float32
    assert np.max(np.abs(pair - pair_ref)) <= COVER_TOL * np.max(np.abs(pair_ref))
    assert np.max(np.abs(m - m_ref)) <= COVER_TOL * np.max(np.abs(m_ref))


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_cover_scores_refuse_inputs_that_do_not_fit(backend: str) -> None:
    from edge.errors import InputError

    if backend not in backends.backends():
        pytest.skip(f"{backend} backend not built")
    f = backends.get("cover_scores", backend)
    blocks, sr, si = _inputs(3)
    w = np.ones((blocks.shape[2], 3), np.float32)
    with pytest.raises(InputError, match="candidates span"):
        f(blocks, sr, si, [0, sr.shape[2]], w, 5.0)
    with pytest.raises(InputError, match="weights of shape"):
        f(blocks, sr, si, [0, 1], w[:, :2], 5.0)
    with pytest.raises(InputError, match="steering of shapes"):
        f(blocks, sr[:, :2], si[:, :2], [0, 1], w, 5.0)
    pair, m = f(blocks, sr, si, [], w, 5.0)  # no candidates: nothing to score
    assert pair.shape == (0, 0) and m.shape == (0, blocks.shape[2] * 3)
