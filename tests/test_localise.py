"""Localisation from physics: sources at known directions must be found there."""

from __future__ import annotations

import numpy as np
import pytest

from boards.profiles import array_from_dict, list_profiles, load_array
from edge.dsp.frontend import stft
from edge.errors import ConfigError
from edge.localise import Localiser, LocaliserConfig, active_frames
from tests.scenes import FS, ang_err, noise_burst, plane_wave

ARRAYS = [name for kind, name, _ in list_profiles() if kind == "array"]


def locate(x: np.ndarray, array: object, **cfg: object) -> tuple:
    loc = Localiser(array, config=LocaliserConfig(**cfg))  # type: ignore[arg-type]
    s = stft(x)
    return loc.bearings(loc.frame_cross(s[:, :, active_frames(s)]).sum(axis=0))


def scene(mics: np.ndarray, az: float, el: float = 0.0, seed: int = 0, snr_db: float = 30.0) -> np.ndarray:
    sig = np.concatenate([np.zeros(1600), noise_burst(FS // 2, seed), np.zeros(1600)])
    x = plane_wave(sig, mics, az, el)
    rng = np.random.default_rng(seed + 100)
    return x + rng.normal(0, 0.1 * 10 ** (-snr_db / 20), x.shape)


@pytest.mark.parametrize("name", ARRAYS)
@pytest.mark.parametrize("az", [-150.0, -60.0, 0.0, 37.0, 95.0, 179.0])
def test_plane_wave_found_at_its_azimuth(name: str, az: float) -> None:
    array = load_array(name)
    b = locate(scene(array.mics, az, seed=int(az) % 7), array)
    assert b, "no source found"
    if array.geometry == "linear":
        # a line array cannot tell a direction from its mirror image across the array axis
        axis = array.mics[-1] - array.mics[0]
        axis_az = float(np.degrees(np.arctan2(axis[1], axis[0])))
        mirror = 2 * axis_az - az
        assert min(ang_err(b[0].azimuth, az), ang_err(b[0].azimuth, mirror)) <= 2.0
        assert b[0].ambiguous
    else:
        assert ang_err(b[0].azimuth, az) <= 2.0, f"{name}: {b[0].azimuth} vs {az}"
        assert not b[0].ambiguous


def test_elevated_source_keeps_its_azimuth_on_a_planar_array() -> None:
    array = load_array("respeaker-6mic-hat")
    b = locate(scene(array.mics, 120.0, el=45.0), array)
    assert ang_err(b[0].azimuth, 120.0) <= 2.0
    assert b[0].elevation is None  # a planar array cannot tell up from down: not reported


@pytest.mark.parametrize(("az", "el"), [(30.0, 40.0), (-100.0, -25.0), (170.0, 10.0)])
def test_3d_array_finds_azimuth_and_elevation(az: float, el: float) -> None:
    r = 0.05
    tetra = r * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    array = array_from_dict({"name": "tetra", "mics": tetra.tolist()}, "test")
    b = locate(scene(array.mics, az, el), array, el_step_deg=5.0)
    assert ang_err(b[0].azimuth, az) <= 3.0
    assert b[0].elevation is not None and abs(b[0].elevation - el) <= 4.0


def test_rotating_array_and_source_together_changes_nothing() -> None:
    array = load_array("respeaker-4mic-hat")
    base = locate(scene(array.mics, 50.0), array)[0].azimuth
    for rot in (30.0, 117.0, -80.0):
        c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
        rmat = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        rotated = array_from_dict({"name": "rot", "mics": (array.mics @ rmat.T).tolist()}, "test")
        # the scene rotates with the array: the source is at 50 + rot in room coordinates
        got = locate(scene(rotated.mics, 50.0 + rot), rotated)[0].azimuth
        assert ang_err(got - rot, base) <= 1.0


def test_two_sources_are_both_found() -> None:
    array = load_array("respeaker-6mic-hat")
    n = FS
    a = plane_wave(noise_burst(n, 1), array.mics, -40.0)
    b = plane_wave(noise_burst(n, 2), array.mics, 80.0)
    found = locate(a + b, array, max_sources=2)
    assert len(found) == 2
    got = sorted(f.azimuth for f in found)
    assert ang_err(got[0], -40.0) <= 5.0 and ang_err(got[1], 80.0) <= 5.0


def test_reverberant_room_source_found() -> None:
    pra = pytest.importorskip("pyroomacoustics")
    array = load_array("respeaker-4mic-hat")
    room_dim = [5.0, 4.0, 2.7]
    e_abs, order = pra.inverse_sabine(0.3, room_dim)
    room = pra.ShoeBox(room_dim, fs=FS, materials=pra.Material(e_abs), max_order=order)
    centre = np.array([2.3, 1.9, 1.0])
    az = 130.0
    src = centre + 1.5 * np.array([np.cos(np.radians(az)), np.sin(np.radians(az)), 0.0])
    room.add_source(src.tolist(), signal=noise_burst(FS, 3))
    room.add_microphone_array(pra.MicrophoneArray(array.mics.T + centre[:, None], FS))
    room.simulate()
    b = locate(room.mic_array.signals, array)
    assert ang_err(b[0].azimuth, az) <= 5.0


def test_silence_gives_no_bearing() -> None:
    array = load_array("respeaker-4mic-hat")
    assert locate(np.zeros((4, FS)), array) == ()


@pytest.mark.parametrize("bad", [{"az_step_deg": 0.0}, {"upsample": 0}, {"max_sources": 0}, {"min_rel_power": 2.0}])
def test_bad_config_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        LocaliserConfig(**bad)
