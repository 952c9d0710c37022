"""The coarse-to-fine SRP-PHAT peak search (`srp_refine`, the localiser's refinement in one call):
every native SIMD build against the numpy reference, and the localiser's bearings with each backend."""

from __future__ import annotations

import numpy as np
import pytest

from boards.profiles import array_from_dict, load_array
from edge.dsp import backends, native
from edge.localise import Localiser, LocaliserConfig, wrap_deg


def _tetra() -> object:
    r = 0.05
    tetra = r * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    return array_from_dict({"name": "tetra", "mics": tetra.tolist()}, "test")


def _kernels(variant: str) -> native.Kernels:
    try:
        return native.Kernels(native.load_variant(variant))
    except native.NativeUnavailable as e:
        pytest.skip(f"native build unavailable: {e}")


def _array(name: str) -> object:
    return _tetra() if name == "tetra" else load_array(name)


def _cases(array: object, seed: int) -> tuple[Localiser, list[tuple[np.ndarray, float, float]]]:
    loc = Localiser(array)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    p, b = len(loc.pairs), loc.bins.stop - loc.bins.start
    out = []
    for _ in range(12):
        cross = (rng.standard_normal((p, b)) + 1j * rng.standard_normal((p, b))).astype(np.complex64)
        cc = loc._gcc_window(cross)
        g = int(rng.integers(len(loc.grid_az)))
        out.append((cc, float(loc.grid_az[g]), float(loc.grid_el[g])))
    return loc, out


def _args(loc: Localiser, cc: np.ndarray, az: float, el: float) -> tuple:
    el_min = -90.0 if loc.geometry == "3d" else 0.0
    return (cc, loc._diff_t, loc._lag_scale, loc._lvl_daz, loc._lvl_del, loc._lvl_sizes, az, el, el_min)


@pytest.mark.parametrize("name", ["respeaker-4mic-hat", "respeaker-6mic-hat", "minidsp-uma8", "tetra"])
def test_reference_is_the_level_by_level_search(name: str) -> None:
    """The reference does what the localiser's generic refinement does with the SRP score."""
    array = _tetra() if name == "tetra" else load_array(name)
    loc, cases = _cases(array, seed=1)
    srp = backends.get("srp_map")
    for cc, az, el in cases:
        want = loc._refine(lambda a, e, cc=cc: srp(cc, loc._lag_index(a, e)), az, el)
        assert backends.get("srp_refine")(*_args(loc, cc, az, el)) == want


@pytest.mark.parametrize("variant", native.machine_variants())
@pytest.mark.parametrize("name", ["respeaker-4mic-hat", "minidsp-uma8", "tetra"])
def test_native_srp_refine_equals_reference(variant: str, name: str) -> None:
    kern = _kernels(variant)
    array = _array(name)
    loc, cases = _cases(array, seed=2)
    ref = backends.get("srp_refine")
    for cc, az, el in cases:
        a_ref, e_ref = ref(*_args(loc, cc, az, el))
        a, e = kern.srp_refine(*_args(loc, cc, az, el))
        # the same search; the lags' products may round differently from the BLAS product (without FMA
        # hardware), which can move a near-tie to a neighbouring candidate: well within 0.05 degrees
        assert abs(float(wrap_deg(a - a_ref))) <= 0.05 and abs(e - e_ref) <= 0.05, (a, a_ref, e, e_ref)


def test_native_srp_refine_rejects_mismatched_inputs() -> None:
    if "native" not in backends.backends():
        pytest.skip("native backend unavailable")
    loc, cases = _cases(load_array("respeaker-4mic-hat"), seed=3)
    cc, az, el = cases[0]
    kern = backends.get("srp_refine", "native")
    args = list(_args(loc, cc, az, el))
    with pytest.raises(Exception, match="do not match"):
        kern(cc[:-1], *args[1:])
    with pytest.raises(Exception, match="do not add up"):
        kern(*args[:5], args[5] + 1, *args[6:])


@pytest.mark.parametrize("name", ["respeaker-4mic-hat", "respeaker-6mic-hat", "tetra"])
def test_localiser_bearings_agree_across_backends(name: str) -> None:
    if "native" not in backends.backends():
        pytest.skip("native backend unavailable")
    array = _tetra() if name == "tetra" else load_array(name)
    ref = Localiser(array, config=LocaliserConfig(backend="numpy"))  # type: ignore[arg-type]
    nat = Localiser(array, config=LocaliserConfig(backend="native"))  # type: ignore[arg-type]
    rng = np.random.default_rng(4)
    p, b = len(ref.pairs), ref.bins.stop - ref.bins.start
    for _ in range(6):
        cross = (rng.standard_normal((p, b)) + 1j * rng.standard_normal((p, b))).astype(np.complex64)
        br, bn = ref.bearings(cross), nat.bearings(cross)
        assert len(br) == len(bn)
        for x, y in zip(br, bn, strict=True):
            assert abs(float(wrap_deg(x.azimuth - y.azimuth))) <= 0.05
            assert x.power == pytest.approx(y.power, abs=2e-3) and x.spread == pytest.approx(y.spread, abs=0.05)


# --- srp_peaks: the localiser's whole single-map search in one call ------------------------------------


def _peaks_cases(loc: Localiser, seed: int) -> list[np.ndarray]:
    """GCC windows of random cross-spectra and of a plane wave with a second, weaker one (real peaks)."""
    rng = np.random.default_rng(seed)
    p, b = len(loc.pairs), loc.bins.stop - loc.bins.start
    out = []
    for _ in range(8):
        cross = (rng.standard_normal((p, b)) + 1j * rng.standard_normal((p, b))).astype(np.complex64)
        out.append(loc._gcc_window(cross))
    for az1, az2 in ((30.0, 150.0), (-100.0, 10.0)):
        out.append(_plane_waves(loc, [(az1, 1.0), (az2, 0.7)]))
    return out


def _grid(loc: Localiser, circular: bool | None = None) -> object:
    from edge.dsp.srp_phat import SrpGrid

    g = loc._srp_grid
    if circular is None:
        return g
    return SrpGrid(g.lag_index, g.az_start, g.az_vals, g.grid_az, g.grid_el, circular, g.diff_t, g.scale,
                   g.daz, g.del_, g.sizes, g.el_min)  # fmt: skip


@pytest.mark.parametrize("variant", native.machine_variants())
@pytest.mark.parametrize("name", ["respeaker-4mic-hat", "minidsp-uma8", "tetra"])
def test_native_srp_peaks_equals_reference(variant: str, name: str) -> None:
    kern = _kernels(variant)
    array = _array(name)
    loc = Localiser(array, config=LocaliserConfig(backend="numpy"))  # type: ignore[arg-type]
    ref = backends.get("srp_peaks")
    found = 0
    for circular in (None, False):
        grid = _grid(loc, circular)
        for cc in _peaks_cases(loc, seed=5):
            for max_src, min_rel, sep in ((1, 0.5, 25.0), (3, 0.3, 25.0), (3, 0.0, 60.0)):
                want = ref(cc, grid, min_rel, max_src, sep)
                got = kern.srp_peaks(cc, grid, min_rel, max_src, sep)
                assert got.shape == want.shape, (got, want)
                found += len(want)
                # the same choices; the refinement within its tolerance (see srp_refine above)
                assert np.all(np.abs(wrap_deg(got[:, 0] - want[:, 0])) <= 0.05), (got, want)
                assert np.allclose(got[:, 1], want[:, 1], atol=0.05)
                np.testing.assert_allclose(got[:, 2:], want[:, 2:], rtol=1e-5, atol=1e-6)
    assert found > 20  # the cases do have sources, several of them


def _plane_waves(loc: Localiser, waves: list[tuple[float, float]]) -> np.ndarray:
    """GCC window of the summed pair cross-spectra of plane waves [(azimuth, amplitude)] in the array plane."""
    i, j = loc.pairs[:, 0], loc.pairs[:, 1]
    cross = np.zeros((len(loc.pairs), loc.bins.stop - loc.bins.start), np.complex128)
    for az, amp in waves:
        s = loc._steering(np.array([az]), np.array([0.0]), precise=True)[:, :, 0]  # [B, M]
        cross += amp * (s[:, i] * np.conj(s[:, j])).T
    return loc._gcc_window(cross.astype(np.complex64))


@pytest.mark.parametrize("name", ["respeaker-4mic-hat", "respeaker-6mic-hat", "minidsp-uma8"])
def test_srp_peaks_finds_plane_waves_where_they_are(name: str) -> None:
    """Physics through the kernel, with every backend: one plane wave is found within 0.5 degrees; of two
    (30 and 150 degrees, the second at 0.7) the louder comes first and both are found (within 10 degrees:
    on the summed map of a small array their peaks pull at each other, why bearings_blocks also votes)."""
    loc = Localiser(load_array(name), config=LocaliserConfig(backend="numpy"))
    one, two = _plane_waves(loc, [(-70.0, 1.0)]), _plane_waves(loc, [(30.0, 1.0), (150.0, 0.7)])
    for backend in sorted({"numpy", *backends.backends()} & {"numpy", "native"}):
        kern = backends.get("srp_peaks", backend)
        got = kern(one, loc._srp_grid, 0.5, 3, 25.0)
        assert len(got) == 1 and abs(float(wrap_deg(got[0, 0] + 70.0))) <= 0.5, got
        got = kern(two, loc._srp_grid, 0.3, 3, 25.0)
        assert len(got) >= 2, got
        assert abs(float(wrap_deg(got[0, 0] - 30.0))) <= 10.0 and abs(float(wrap_deg(got[1, 0] - 150.0))) <= 10.0
        assert got[0, 3] == 1.0 and 0.0 < got[1, 3] < 1.0


def test_srp_peaks_of_silence_is_no_source() -> None:
    loc = Localiser(load_array("respeaker-4mic-hat"), config=LocaliserConfig(backend="numpy"))
    cc = np.zeros((len(loc.pairs), loc._srp_grid.lag_index.max().astype(int) + 4), np.float32)
    for backend in sorted({"numpy", *backends.backends()} & {"numpy", "native"}):
        assert backends.get("srp_peaks", backend)(cc, loc._srp_grid, 0.5, 3, 25.0).shape == (0, 4)


def test_srp_grid_and_srp_peaks_reject_what_does_not_fit() -> None:
    from edge.dsp.srp_phat import SrpGrid
    from edge.errors import InputError

    loc = Localiser(load_array("respeaker-4mic-hat"), config=LocaliserConfig(backend="numpy"))
    g = loc._srp_grid
    parts = [g.lag_index, g.az_start, g.az_vals, g.grid_az, g.grid_el, True, g.diff_t, g.scale,
             g.daz, g.del_, g.sizes, g.el_min]  # fmt: skip
    bad_start = list(parts)
    bad_start[1] = g.az_start + 1
    with pytest.raises(InputError, match="must start at 0"):
        SrpGrid(*bad_start)
    bad_sizes = list(parts)
    bad_sizes[10] = g.sizes + 1
    with pytest.raises(InputError, match="do not add up"):
        SrpGrid(*bad_sizes)
    bad_grid = list(parts)
    bad_grid[3] = g.grid_az[:-1]
    with pytest.raises(InputError, match="does not match"):
        SrpGrid(*bad_grid)
    assert not g.lag_index.flags.writeable  # the checked tables cannot change under the kernel
    cc = loc._gcc_window(np.ones((len(loc.pairs), loc.bins.stop - loc.bins.start), np.complex64))
    for backend in sorted({"numpy", *backends.backends()} & {"numpy", "native"}):
        with pytest.raises(InputError, match="does not fit"):
            backends.get("srp_peaks", backend)(cc[:-1], g, 0.5, 3, 25.0)
