"""Localisation from physics: sources at known directions must be found there."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from boards.profiles import ArrayProfile, array_from_dict, list_profiles, load_array
from edge.dsp.frontend import stft
from edge.errors import ConfigError
from edge.localise import Localiser, LocaliserConfig, active_frames
from tests.scenes import FS, ang_err, noise_burst, plane_wave

ARRAYS = [name for kind, name, _ in list_profiles() if kind == "array"]


def locate(x: np.ndarray, array: object, **cfg: object) -> tuple:
    loc = Localiser(array, config=LocaliserConfig(**cfg))  # type: ignore[arg-type]
    s = stft(x)
    mask = active_frames(s)
    return loc.bearings(loc.frame_cross(s[:, :, mask]).sum(axis=0), n_frames=float(mask.sum()))


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


@pytest.mark.parametrize(
    "bad",
    [
        {"az_step_deg": -1.0},
        {"el_step_deg": 31.0},
        {"upsample": 0},
        {"max_sources": 0},
        {"min_rel_power": 2.0},
        {"vote_magnitude_power": -1.0},
        {"vote_magnitude_power": 5.0},
        {"reassign_rounds": 11},
        {"reassign_window_deg": 0.0},
    ],
)
def test_bad_config_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        LocaliserConfig(**bad)


def test_the_grid_defaults_to_the_methods_and_a_given_one_is_kept() -> None:
    assert (LocaliserConfig().az_step_deg, LocaliserConfig().el_step_deg) == (3.0, 20.0)
    for method in ("music", "normmusic"):
        cfg = LocaliserConfig(method=method)
        assert (cfg.az_step_deg, cfg.el_step_deg) == (2.0, 10.0)
    cfg = LocaliserConfig(az_step_deg=1.5, el_step_deg=5.0)
    assert (cfg.az_step_deg, cfg.el_step_deg) == (1.5, 5.0)
    assert dataclasses.replace(cfg, backend="numpy").az_step_deg == 1.5
    loc = Localiser(load_array("respeaker-4mic-hat"))
    assert len(loc._az_vals) == 120 and loc._srp_grid.lag_index.shape[0] == 120 * 5  # 0, 20, ..., 80 deg


# --- MUSIC / NormMUSIC, image-source rooms, several sources, linear ambiguity (issue 6) ---------------------
@pytest.mark.parametrize("name", ARRAYS)
@pytest.mark.parametrize(("method", "az"), [("music", -121.0), ("normmusic", 64.0)])
def test_music_finds_a_plane_wave_at_its_azimuth(name: str, method: str, az: float) -> None:
    array = load_array(name)
    b = locate(scene(array.mics, az, seed=3), array, method=method)
    assert b, "no source found"
    err = ang_err(b[0].azimuth, az)
    if array.geometry == "linear":
        assert b[0].ambiguous and b[0].mirror is not None
        err = min(err, ang_err(b[0].mirror, az))
    assert err <= 2.0, f"{name} {method}: {b[0].azimuth} vs {az}"


def room_render(
    mics: np.ndarray, sources: list[tuple[float, float, float, np.ndarray]], rt60: float
) -> np.ndarray:
    """Image-source room (5 x 4.2 x 2.8 m, the array at its centre): each source (azimuth, elevation,
    distance, signal) rendered at the mics."""
    pra = pytest.importorskip("pyroomacoustics")
    room_dim = [5.0, 4.2, 2.8]
    e_abs, order = pra.inverse_sabine(rt60, room_dim)
    room = pra.ShoeBox(room_dim, fs=FS, materials=pra.Material(e_abs), max_order=min(order, 8))
    centre = np.array([2.6, 2.0, 1.2])
    for az, el, dist, signal in sources:
        a, e = np.radians(az), np.radians(el)
        src = centre + dist * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
        room.add_source(src.tolist(), signal=signal)
    room.add_microphone_array(pra.MicrophoneArray(np.asarray(mics).T + centre[:, None], FS))
    room.simulate()
    return np.asarray(room.mic_array.signals)


def room_scene(mics: np.ndarray, az: float, el: float, rt60: float = 0.2, dist: float = 1.5) -> np.ndarray:
    return room_render(mics, [(az, el, dist, noise_burst(FS // 2, 5))], rt60)


@pytest.mark.parametrize("name", ARRAYS)
def test_image_source_room_source_found_for_each_board_array(name: str) -> None:
    """Image-source room (RT60 0.2 s, 1.5 m, 20 deg above the array plane); tolerance 5 degrees. A line
    array hears cones: the source is put in its plane, and floor and ceiling reflections, on wider
    cones, pull its estimate towards broadside (measured 9 degrees here): tolerance 10 degrees."""
    array = load_array(name)
    az = -47.0
    b = locate(room_scene(array.mics, az, 0.0 if array.geometry == "linear" else 20.0), array)
    err = ang_err(b[0].azimuth, az)
    if b[0].mirror is not None:
        err = min(err, ang_err(b[0].mirror, az))
    assert err <= (10.0 if array.geometry == "linear" else 5.0), f"{name}: {b[0].azimuth} vs {az}"


def test_linear_array_reports_its_mirror_instead_of_guessing() -> None:
    array = load_array("ps3-eye")  # mics along x: a source at +60 and one at -60 give the same delays
    for az in (60.0, -60.0):
        b = locate(scene(array.mics, az), array)[0]
        assert b.ambiguous and b.mirror is not None
        assert sorted([round(b.azimuth), round(b.mirror)]) == [-60, 60]
    planar = locate(scene(load_array("respeaker-4mic-hat").mics, 60.0), load_array("respeaker-4mic-hat"))[0]
    assert not planar.ambiguous and planar.mirror is None


@pytest.mark.parametrize("method", ["srp-phat", "music"])
def test_rotating_array_and_source_together_changes_nothing_for_each_method(method: str) -> None:
    array = load_array("respeaker-6mic-hat")
    base = locate(scene(array.mics, -20.0), array, method=method)[0].azimuth
    for rot in (45.0, 170.0):
        c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
        rmat = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        rotated = array_from_dict({"name": "rot", "mics": (array.mics @ rmat.T).tolist()}, "test")
        got = locate(scene(rotated.mics, -20.0 + rot), rotated, method=method)[0].azimuth
        assert ang_err(got - rot, base) <= 1.0


@pytest.mark.parametrize(
    ("name", "azs"), [("respeaker-6mic-hat", (-100.0, 20.0)), ("matrix-voice", (30.0, 80.0))]
)
def test_simultaneous_sources_are_both_found_by_their_votes(name: str, azs: tuple[float, float]) -> None:
    """Two white-noise plane waves at once (they share every time-frequency cell: the hard case for
    the votes; the 4-mic hat's second estimate is 7 degrees off here, see benchmarks/results/doa.md)."""
    from edge.localise import _blocks

    array = load_array(name)
    x = plane_wave(noise_burst(FS, 10), array.mics, azs[0]) + plane_wave(noise_burst(FS, 11), array.mics, azs[1])
    loc = Localiser(array, config=LocaliserConfig(max_sources=2))
    s = stft(x)
    found = loc.bearings_blocks(_blocks(loc.frame_cross(s)), n_frames=s.shape[2])
    assert len(found) == 2
    for az in azs:
        assert min(ang_err(f.azimuth, az) for f in found) <= 5.0, (found, azs)
    assert max(f.power for f in found) == 1.0


def two_source_room(mics: np.ndarray, azs: tuple[float, float], rt60: float) -> np.ndarray:
    """Two white-noise sources at once (1.5 and 2 m, 15 degrees above the array plane, equal power at
    the array) in a reverberant image-source room."""
    dists = (1.5, 2.0)
    sources = [(az, 15.0, d, noise_burst(FS, 5 + i) * d) for i, (az, d) in enumerate(zip(azs, dists, strict=True))]
    return room_render(mics, sources, rt60)[:, :FS].astype(np.float32)


@pytest.mark.parametrize(
    ("name", "azs"), [("respeaker-usb-4mic-v2", (-100.0, 20.0)), ("respeaker-4mic-hat", (30.0, 80.0))]
)
def test_simultaneous_sources_in_a_reverberant_room_are_located_from_their_own_cells(
    name: str, azs: tuple[float, float]
) -> None:
    """RT60 0.6 s, a 4-mic array, two white-noise sources 50-120 degrees apart (they share every cell:
    the hard case). The vote histogram alone puts one of them 12 and 24 degrees off here (reverberation
    and the other source pull it); giving each cell to the nearest source and locating each source from
    its own cells brings both within 10 degrees, the benchmark's "found", in two rounds (measured: 5.8
    and 0.8, 1.4 and 8.4; one round, the default, leaves the second case's 12.3)."""
    from edge.localise import _blocks

    array = load_array(name)
    s = stft(two_source_room(array.mics, azs, 0.6))
    loc = Localiser(array, config=LocaliserConfig(max_sources=2, reassign_rounds=2))
    cross, w = loc.weighted_cross(s, active_frames(s))
    found = loc.bearings_blocks(_blocks(cross), n_frames=float(w.sum()))
    assert len(found) == 2
    for az in azs:
        assert min(ang_err(f.azimuth, az) for f in found) <= 10.0, (found, azs)


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_block_cross_sums_the_weighted_cross_spectra_of_the_selected_frames(backend: str) -> None:
    """`block_cross` (one kernel call, no per-frame array) = the selected rows of `weighted_cross`
    summed: all of them (what `bearings` takes), and per block of BLOCK_FRAMES (`bearings_blocks`)."""
    from edge.dsp import backends
    from edge.localise import BLOCK_FRAMES, _blocks

    if backend not in backends.backends():
        pytest.skip(f"{backend} backend unavailable")
    array = load_array("respeaker-6mic-hat")
    s = stft(plane_wave(noise_burst(FS, 30), array.mics, 75.0) * np.linspace(0.01, 1.0, FS, dtype=np.float32))
    loc = Localiser(array, config=LocaliserConfig(max_sources=2, backend=backend))
    mask = active_frames(s)
    assert 10 < mask.sum() < len(mask)  # the quiet start is left out
    cross, w = loc.weighted_cross(s, mask)
    total, n = loc.block_cross(s, mask)
    assert total.shape == (1, *cross.shape[1:])
    assert np.max(np.abs(total[0] - cross.sum(axis=0))) <= 1e-5 * len(cross)
    assert n[0] == pytest.approx(w.sum(), rel=1e-6)
    assert loc.bearings(total[0], n[0])[0].azimuth == pytest.approx(
        loc.bearings(cross.sum(axis=0), float(w.sum()))[0].azimuth, abs=0.05
    )
    blocks, nb = loc.block_cross(s, mask, BLOCK_FRAMES)
    assert np.max(np.abs(blocks - _blocks(cross))) <= 1e-5 * BLOCK_FRAMES
    assert nb.sum() == pytest.approx(w.sum(), rel=1e-6)
    everything, n_all = loc.block_cross(s)  # no selection: every frame
    all_cross, all_w = loc.weighted_cross(s)
    assert np.max(np.abs(everything[0] - all_cross.sum(axis=0))) <= 1e-5 * s.shape[2]
    assert n_all[0] == pytest.approx(all_w.sum(), rel=1e-6)
    assert loc.block_cross(s, np.zeros(s.shape[2], bool))[0].shape == (0, *cross.shape[1:])


def test_locate_recording_reports_simultaneous_sources() -> None:
    from edge.localise import locate_recording

    array = load_array("respeaker-6mic-hat")
    x = plane_wave(noise_burst(2 * FS, 20), array.mics, 150.0) + plane_wave(noise_burst(2 * FS, 21), array.mics, -100.0)
    found = locate_recording(stft(x), Localiser(array, config=LocaliserConfig(max_sources=3)))
    assert len(found) >= 2
    got = sorted(found[:2], key=lambda b: b.azimuth)
    assert ang_err(got[0].azimuth, -100.0) <= 5.0 and ang_err(got[1].azimuth, 150.0) <= 5.0


def test_tetrahedron_music_finds_elevation() -> None:
    r = 0.05
    tetra = r * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    array = array_from_dict({"name": "tetra", "mics": tetra.tolist()}, "test")
    b = locate(scene(array.mics, -70.0, -30.0), array, method="music", el_step_deg=5.0)
    assert ang_err(b[0].azimuth, -70.0) <= 3.0
    assert b[0].elevation is not None and abs(b[0].elevation + 30.0) <= 4.0


@pytest.mark.parametrize(
    "bad", [{"method": "beamscan"}, {"hist_min_rel": 0.0}, {"onset_frames": -1}, {"onset_floor": 1.5}]
)
def test_bad_method_config_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        LocaliserConfig(**bad)


def test_locate_cli_reports_the_mirror_of_a_linear_array(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import soundfile as sf

    from edge.main import main

    array = load_array("ps3-eye")
    x = scene(array.mics, 70.0)
    path = tmp_path / "line.wav"
    sf.write(path, (0.5 * x / np.abs(x).max()).T, FS)
    assert main(["locate", "--json", "--board", "ps3-eye", "--method", "normmusic", str(path)]) == 0
    row = json.loads(capsys.readouterr().out)
    src = row["sources"][0]
    pair = sorted([src["azimuth_deg"], src["mirror_azimuth_deg"]])
    assert row["ambiguous"] and np.allclose(pair, [-70.0, 70.0], atol=1.0), pair


def test_scalar_wrap_is_wrap_deg() -> None:
    from edge.localise import _wrap1, wrap_deg

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1000.0, 1000.0, 5000), np.arange(-1080.0, 1081.0, 0.5), [-0.0, 1e-300, -1e-300]])
    got = np.array([_wrap1(float(a)) for a in x])
    assert np.array_equal(got, wrap_deg(x)) and np.array_equal(np.signbit(got), np.signbit(wrap_deg(x)))


@pytest.mark.parametrize(("el", "azs"), [(60.0, (0.0, 180.0)), (45.0, (10.0, 130.0, 250.0))])
def test_sources_around_a_planar_array_still_give_a_bearing(el: float, azs: tuple[float, ...]) -> None:
    """Equal sources around a planar array, above its plane, sum to a map whose maximum is overhead,
    where every azimuth meets. A grid point at the pole then set every azimuth's profile to the same
    value: a flat profile and no bearing at all (a reverberant two-source scene did this). Now the
    dominant bearing points at one of the sources."""
    array = load_array("respeaker-4mic-hat")
    x = sum(plane_wave(noise_burst(FS, 20 + i), array.mics, az, el) for i, az in enumerate(azs))
    loc = Localiser(array, config=LocaliserConfig(max_sources=1))
    assert not np.any(np.isclose(np.abs(loc.grid_el), 90.0))  # no pole on the grid
    s = stft(x)
    found = loc.bearings(loc.frame_cross(s).sum(axis=0), float(s.shape[2]))
    assert len(found) == 1
    assert min(ang_err(found[0].azimuth, az) for az in azs) <= 10.0, found


# --- onset weighting (precedence) ------------------------------------------------------------------
def test_onset_weights_do_not_depend_on_how_the_stream_is_cut() -> None:
    from edge.dsp.gcc_phat import onset_weights_of_power as onset_weights

    power = np.random.default_rng(0).exponential(size=(50, 17)).astype(np.float32)
    whole, hist_whole = onset_weights(power, np.zeros((3, 17), np.float32))
    hist, parts = np.zeros((3, 17), np.float32), []
    for a, b in [(0, 7), (7, 8), (8, 8), (8, 31), (31, 50)]:
        w, hist = onset_weights(power[a:b], hist)
        parts.append(w)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(hist, hist_whole)
    np.testing.assert_array_equal(hist, power[-3:])


def test_onset_weights_count_new_power_only() -> None:
    from edge.dsp.gcc_phat import onset_weights_of_power as onset_weights

    power = np.zeros((12, 2), np.float32)
    power[4:, 0] = 1.0  # a step out of silence, then steady
    power[:, 1] = 2.0 ** np.arange(12)  # rising 3 dB a frame: half of each frame's power is new
    w, _ = onset_weights(power, np.zeros((3, 2), np.float32))
    assert w[4, 0] == 1.0 and not w[5:, 0].any() and not w[:4, 0].any()
    np.testing.assert_allclose(w[1:, 1], 0.25)
    assert w[0, 1] == 1.0  # the first frame of a stream rises out of silence
    floored, _ = onset_weights(power, np.zeros((3, 2), np.float32), 0.05)
    np.testing.assert_allclose(floored, 0.05 + 0.95 * w, rtol=1e-6)


def _burst_train(seed: int) -> np.ndarray:
    """Ten decaying 50 ms noise bursts, about 150 ms apart (footsteps, knocks): 1.5 s."""
    rng = np.random.default_rng(seed)
    x = np.zeros(FS * 3 // 2)
    for i in range(10):
        n0 = i * 2400 + int(rng.integers(0, 400))
        x[n0 : n0 + 800] = noise_burst(800, seed + i) * np.exp(-np.arange(800) / 300.0)
    return x


ROOM_AZIMUTHS = (-150.0, -40.0, 25.0, 110.0)


def _four_mic_room(az: float, signal: np.ndarray) -> list[tuple[ArrayProfile, np.ndarray]]:
    """(array, STFT) of both 4-mic arrays at the same spot of a 6 x 4.5 x 3 m room, RT60 0.6 s (full
    image order), recording `signal` from 2 m away at azimuth `az`, 15 degrees up."""
    pra = pytest.importorskip("pyroomacoustics")
    arrays = [load_array(n) for n in ("respeaker-4mic-hat", "respeaker-usb-4mic-v2")]
    dim = [6.0, 4.5, 3.0]
    e_abs, order = pra.inverse_sabine(0.6, dim)
    room = pra.ShoeBox(dim, fs=FS, materials=pra.Material(e_abs), max_order=order)
    centre = np.array([3.1, 2.2, 1.2])
    a, e = np.radians(az), np.radians(15.0)
    room.add_source((centre + 2.0 * np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])).tolist(),
                    signal=signal)  # fmt: skip
    mics = np.concatenate([arr.mics for arr in arrays])
    room.add_microphone_array(pra.MicrophoneArray(mics.T + centre[:, None], FS))
    room.simulate()
    y = np.asarray(room.mic_array.signals, np.float32)
    return [(arr, stft(y[4 * j : 4 * j + 4])) for j, arr in enumerate(arrays)]


def test_onset_weighting_finds_the_direct_sound_in_a_reverberant_room() -> None:
    """RT60 0.6 s (full image order), source 2 m away and 15 degrees up: the reflections, summed over
    all frames, pull SRP-PHAT off by up to 12 degrees (measured); weighting each cell by its new power
    keeps every estimate within 3 degrees."""
    errs: dict[int, list[float]] = {0: [], 3: []}
    for i, az in enumerate(ROOM_AZIMUTHS):
        for arr, s in _four_mic_room(az, _burst_train(i)):
            mask = active_frames(s)
            for k in errs:
                loc = Localiser(arr, config=LocaliserConfig(onset_frames=k))
                cross, frame_w = loc.weighted_cross(s, mask)
                errs[k].append(ang_err(loc.bearings(cross.sum(axis=0), float(frame_w.sum()))[0].azimuth, az))
    assert max(errs[3]) <= 3.0, errs
    assert np.mean(errs[0]) > 2.0 * np.mean(errs[3]), errs


def test_vote_weights_scale_with_the_cells_magnitude() -> None:
    """block_votes = nb_vote's votes, its weights times the cell's |cross-spectrum| summed over the pairs,
    to vote_magnitude_power (0: nb_vote's weights as they are)."""
    from edge.dsp import backends

    array = load_array("respeaker-4mic-hat")
    rng = np.random.default_rng(4)
    plain = Localiser(array, config=LocaliserConfig(vote_magnitude_power=0.0))
    n_bins = plain._nb_re.shape[0]  # the DOA band's bins
    blocks = (rng.standard_normal((5, 6, n_bins)) + 1j * rng.standard_normal((5, 6, n_bins))).astype(np.complex64)
    v0, w0 = plain.block_votes(blocks)
    v_ref, w_ref = backends.get("nb_vote")(blocks, plain._nb_re, plain._nb_im)
    assert np.array_equal(v0, v_ref) and np.array_equal(w0, w_ref)
    mag = np.abs(blocks).sum(axis=1).T
    for g in (1.0, 2.0):
        v, w = Localiser(array, config=LocaliserConfig(vote_magnitude_power=g)).block_votes(blocks)
        assert np.array_equal(v, v0) and w.dtype == np.float32
        np.testing.assert_allclose(w, w0 * mag**g, rtol=1e-5)


def test_magnitude_weighted_votes_add_no_ghost_source_in_a_reverberant_room() -> None:
    """One white-noise source 2 m away, 15 degrees up, RT60 0.6 s (full image order), both 4-mic arrays, 4
    directions, the device's defaults (up to 3 sources): with plain votes the reflections make a second
    source in 5 of the 8 (measured); weighing each cell's vote by its magnitude (phase agreement over
    the block's frames) leaves none, and the source itself stays within 5 degrees."""
    from edge.localise import _blocks

    found: dict[float, list[tuple[int, float]]] = {0.0: [], 1.0: []}
    for i, az in enumerate(ROOM_AZIMUTHS):
        for arr, s in _four_mic_room(az, noise_burst(FS, i)):
            mask = active_frames(s)
            for g in found:
                loc = Localiser(arr, config=LocaliserConfig(vote_magnitude_power=g))
                cross, frame_w = loc.weighted_cross(s, mask)
                b = loc.bearings_blocks(_blocks(cross), float(frame_w.sum()))
                found[g].append((len(b), ang_err(b[0].azimuth, az)))
    assert all(n == 1 and err <= 5.0 for n, err in found[1.0]), found[1.0]
    assert sum(n > 1 for n, _ in found[0.0]) >= 3, found[0.0]  # the case the weighting is for


def test_simultaneous_sources_are_the_peaks_that_explain_the_cells_not_the_highest_ones() -> None:
    """Cells made as plane waves: a source at 0 degrees in every bin of 20 blocks, a weaker one at 120
    degrees in the upper half of the band in 6 blocks, and 20 blocks of strong low-frequency cells from
    35 degrees (a reflection of the first, say: a small array's low bins point only roughly, so the 0
    degree direction explains them fairly well). Their histogram peak is higher than the second
    source's: the highest peaks give 0 and 35 degrees; the set of peaks that best explains the cells
    (`cover_sharpness`, on by default) gives 0 and 120."""
    array = load_array("respeaker-6mic-hat")

    def cells(loc: Localiser, az: float, bins: np.ndarray, k: int, mag: float = 1.0) -> np.ndarray:
        steer = loc._nb_steer(np.array([az]))[:, :, 0]  # [B, P]
        out = np.zeros((k, len(loc.pairs), len(loc.freqs_hz)), np.complex64)
        out[:, :, bins] = mag * np.conj(steer.T[:, bins])
        return out

    found = {}
    for sharp in (0.0, LocaliserConfig().cover_sharpness):
        loc = Localiser(array, config=LocaliserConfig(max_sources=2, cover_sharpness=sharp, reassign_rounds=0,
                                                      hist_min_rel=0.05))  # fmt: skip
        n_bins = len(loc.freqs_hz)
        blocks = np.concatenate([
            cells(loc, 0.0, np.arange(n_bins), 20),
            cells(loc, 35.0, np.arange(n_bins // 4), 20, mag=3.0),
            cells(loc, 120.0, np.arange(n_bins // 2, n_bins), 6),
        ])  # fmt: skip
        found[sharp] = sorted(round(b.azimuth) for b in loc.bearings_blocks(blocks))
    # the dominant estimate from all cells, pulled 2 degrees by the 35-degree ones; the histogram peak of
    # the 35-degree cells within a degree (35 lies between two directions of the 3-degree vote grid)
    assert found[0.0][0] == 2 and abs(found[0.0][1] - 35) <= 1, found[0.0]
    assert found[LocaliserConfig().cover_sharpness] == [2, 120]


def test_cover_settings_out_of_range_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="cover_sharpness"):
        LocaliserConfig(cover_sharpness=-1.0)
    with pytest.raises(ConfigError, match="cover_candidates"):
        LocaliserConfig(cover_candidates=1)


@pytest.mark.parametrize("name", ["matrix-creator", "respeaker-6mic-hat"])
def test_three_sources_taking_turns_are_all_found(name: str) -> None:
    """Three white-noise plane waves, each on for 1 s of 2 s and overlapping in pairs: the count (three
    histogram peaks) and the cover choice among the candidates (the best pair, then the third; with
    further sources down to 0.005 of the highest peak, 6-7 candidates here, among them stray peaks at
    1 % of the highest) give all three within 2 degrees."""
    array = load_array(name)
    azs = (-120.0, 0.0, 110.0)
    x = np.zeros((array.n_mics, 2 * FS))
    for i, az in enumerate(azs):
        env = np.zeros(2 * FS)
        env[i * FS // 2 : i * FS // 2 + FS] = 1.0
        x += plane_wave(noise_burst(2 * FS, 20 + i) * env, array.mics, az)
    loc = Localiser(array, config=LocaliserConfig(max_sources=3, hist_min_rel=0.005))
    s = stft(x.astype(np.float32))
    cross, w = loc.block_cross(s, active_frames(s), 4)
    found = loc.bearings_blocks(cross, float(w.sum()))
    assert len(found) == 3
    for az in azs:
        assert min(ang_err(f.azimuth, az) for f in found) <= 2.0, (found, azs)
