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
    try:
        kern = native.Kernels(native.load_variant(variant))
    except native.NativeUnavailable as e:
        pytest.skip(f"native build unavailable: {e}")
    array = _tetra() if name == "tetra" else load_array(name)
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
