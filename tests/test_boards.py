"""Board and array profiles: every bundled file loads, its geometry matches the published figures, and
every malformed input is rejected with a message naming the file, the key and the bad value."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boards import profiles
from boards.cli import add_boards
from boards.profiles import (
    DEFAULT_DOA_BAND_HZ,
    DEFAULT_SAMPLE_RATE,
    SPEED_OF_SOUND_M_S,
    ArrayProfile,
    array_from_dict,
    board_from_dict,
    derive_geometry,
    kind_of,
    list_profiles,
    load_array,
    load_board,
    resolve,
)
from edge.errors import ProfileError, TympanError

REQUIRED_ARRAYS = {
    "respeaker-4mic-hat",
    "respeaker-6mic-hat",
    "respeaker-usb-4mic-v2",
    "minidsp-uma8",
    "matrix-voice",
    "ps3-eye",
}
REQUIRED_BOARDS = {"raspberry-pi-4", "raspberry-pi-5", "jetson-orin-nano"}
MM = 1e-3
TOL_M = 0.2 * MM


def _arrays() -> list[str]:
    return [name for kind, name, _ in list_profiles() if kind == "array"]


def _boards() -> list[str]:
    return [name for kind, name, _ in list_profiles() if kind == "board"]


# ---------------------------------------------------------------------------------------------------
# Every bundled profile loads


def test_bundled_set_is_complete_and_names_are_unique() -> None:
    rows = list_profiles()
    names = [name for _, name, _ in rows]
    assert len(names) == len(set(names))
    assert REQUIRED_ARRAYS <= set(_arrays())
    assert REQUIRED_BOARDS <= set(_boards())
    assert len(rows) >= 9
    assert all(kind in ("board", "array") and description for kind, _, description in rows)


@pytest.mark.parametrize("name", sorted(REQUIRED_ARRAYS | {"matrix-creator"}))
def test_every_array_loads(name: str) -> None:
    array = load_array(name)
    assert array.name == name
    assert array.path is not None and Path(array.path).name == f"{name}.json"
    assert array.mics.dtype == np.float64 and array.mics.shape == (array.n_mics, 3)
    assert array.source and array.description and array.device_match
    assert array.geometry == derive_geometry(array.mics)
    lo, hi = array.doa_band_hz
    assert 0 < lo < hi <= array.sample_rate / 2


@pytest.mark.parametrize("name", sorted(REQUIRED_BOARDS))
def test_every_board_loads_and_its_default_array_exists(name: str) -> None:
    board = load_board(name)
    assert board.name == name
    assert board.arch == "aarch64" and board.cores > 0 and board.memory_gb > 0
    assert board.source
    assert kind_of(board.default_array) == "array"
    assert load_array(board.default_array).name == board.default_array


def test_jetson_uses_onnxruntime_and_pis_use_litert() -> None:
    assert load_board("jetson-orin-nano").model_runtime == "onnxruntime"
    assert load_board("jetson-orin-nano").accelerator is not None
    assert load_board("raspberry-pi-4").model_runtime == "litert"
    assert load_board("raspberry-pi-5").model_runtime == "litert"


# ---------------------------------------------------------------------------------------------------
# Geometry matches the published figures


def _ring(array: ArrayProfile) -> tuple[np.ndarray, np.ndarray]:
    """Radii and azimuths (sorted, radians) of the mics off the centre."""
    xy = array.mics[:, :2]
    radius = np.hypot(xy[:, 0], xy[:, 1])
    off = radius > 1 * MM
    return radius[off], np.sort(np.arctan2(xy[off, 1], xy[off, 0]))


def _assert_regular_ring(array: ArrayProfile, n: int, radius_m: float, centre_mics: int) -> None:
    radii, azimuths = _ring(array)
    assert len(radii) == n
    assert array.n_mics - n == centre_mics
    np.testing.assert_allclose(radii, radius_m, atol=TOL_M)
    gaps = np.diff(np.concatenate([azimuths, azimuths[:1] + 2 * np.pi]))
    np.testing.assert_allclose(np.degrees(gaps), 360.0 / n, atol=0.5)
    np.testing.assert_allclose(array.mics[:, 2], 0.0)
    np.testing.assert_allclose(array.mics.mean(axis=0), 0.0, atol=TOL_M)


def test_respeaker_4mic_hat_is_a_square_with_81_27_mm_diagonals() -> None:
    array = load_array("respeaker-4mic-hat")
    _assert_regular_ring(array, 4, 0.08127 / 2, centre_mics=0)
    d = array.distances_m
    # Seeed's mic_array.py pairs (0, 2) and (1, 3) as the opposite mics.
    assert d[0, 2] == pytest.approx(0.08127, abs=TOL_M) and d[1, 3] == pytest.approx(0.08127, abs=TOL_M)
    for i, j in ((0, 1), (1, 2), (2, 3), (3, 0)):
        assert d[i, j] == pytest.approx(0.08127 / math.sqrt(2), abs=TOL_M)


def test_respeaker_6mic_hat_is_a_hexagon_of_radius_46_3_mm() -> None:
    array = load_array("respeaker-6mic-hat")
    _assert_regular_ring(array, 6, 0.0463, centre_mics=0)
    assert array.min_spacing_m == pytest.approx(0.0463, abs=TOL_M)
    assert array.channels == 8  # 6 mics + 2 playback-loopback channels


def test_respeaker_usb_v2_is_a_32_mm_square_on_channels_1_to_4() -> None:
    array = load_array("respeaker-usb-4mic-v2")
    _assert_regular_ring(array, 4, 0.032, centre_mics=0)
    assert array.aperture_m == pytest.approx(0.064, abs=TOL_M)
    assert array.aperture_m < 0.070  # fits the 70 mm board
    assert array.channels == 6 and array.channel_map == (1, 2, 3, 4)


def test_uma8_is_six_mics_on_43_mm_plus_centre() -> None:
    array = load_array("minidsp-uma8")
    _assert_regular_ring(array, 6, 0.043, centre_mics=1)
    assert np.linalg.norm(array.mics[0]) == 0.0  # ch0 is the centre mic
    assert array.channels == 8 and array.channel_map == tuple(range(7))


def test_matrix_voice_is_seven_mics_on_38_3_mm_plus_centre() -> None:
    array = load_array("matrix-voice")
    _assert_regular_ring(array, 7, 0.0383, centre_mics=1)
    assert array.n_mics == 8


def test_matrix_creator_is_eight_mics_on_52_5_mm() -> None:
    _assert_regular_ring(load_array("matrix-creator"), 8, 0.0525, centre_mics=0)


def test_ps3_eye_is_linear_with_20_mm_pitch_and_swapped_middle_channels() -> None:
    array = load_array("ps3-eye")
    assert array.geometry == "linear"
    x = array.mics[:, 0]
    np.testing.assert_allclose(np.diff(x), 0.020, atol=TOL_M)
    np.testing.assert_allclose(array.mics[:, 1:], 0.0)
    assert array.aperture_m == pytest.approx(0.060, abs=TOL_M)
    assert array.channel_map == (0, 2, 1, 3)


@pytest.mark.parametrize("name", sorted(REQUIRED_ARRAYS | {"matrix-creator"}))
def test_channel_maps_are_valid(name: str) -> None:
    array = load_array(name)
    assert len(array.channel_map) == array.n_mics
    assert len(set(array.channel_map)) == array.n_mics
    assert all(0 <= c < array.channels for c in array.channel_map)


@pytest.mark.parametrize("name", sorted(REQUIRED_ARRAYS | {"matrix-creator"}))
def test_spatial_alias_is_c_over_twice_the_smallest_spacing(name: str) -> None:
    array = load_array(name)
    pairs = itertools.combinations(array.mics, 2)
    d_min = min(float(np.linalg.norm(a - b)) for a, b in pairs)
    assert array.min_spacing_m == pytest.approx(d_min)
    assert array.spatial_alias_hz == pytest.approx(SPEED_OF_SOUND_M_S / (2 * d_min))


def test_profile_is_immutable() -> None:
    array = load_array("respeaker-4mic-hat")
    with pytest.raises(ValueError, match="read-only"):
        array.mics[0, 0] = 1.0
    with pytest.raises(AttributeError):
        array.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(REQUIRED_ARRAYS | {"matrix-creator"}))
def test_to_dict_round_trips(name: str) -> None:
    array = load_array(name)
    again = array_from_dict(json.loads(json.dumps(array.to_dict())), "<round trip>")
    assert again.to_dict() == array.to_dict()
    np.testing.assert_array_equal(again.mics, array.mics)


# ---------------------------------------------------------------------------------------------------
# Defaults and the derived geometry


def test_minimal_file_gets_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "pair.json"
    path.write_text(json.dumps({"name": "pair", "mics": [[-0.05, 0, 0], [0.05, 0, 0]]}))
    array = load_array(str(path))
    assert array.sample_rate == DEFAULT_SAMPLE_RATE == 16000
    assert array.channels == 2 and array.channel_map == (0, 1)
    assert array.doa_band_hz == DEFAULT_DOA_BAND_HZ
    assert array.geometry == "linear"
    assert array.device_match is None and array.description == "" and array.source == ""
    assert array.path == str(path)


@pytest.mark.parametrize(
    ("mics", "geometry"),
    [
        ([[0, 0, 0], [0.01, 0.01, 0.01], [0.03, 0.03, 0.03]], "linear"),
        ([[0, 0, 0], [0.02, 0, 0], [0.04, 0.0005, 0]], "linear"),  # 0.5 mm off the line: within 1 mm
        ([[0, 0, 0], [0.02, 0, 0], [0.04, 0.004, 0]], "planar"),  # 2 mm off the best line
        ([[0, 0, 0], [0.02, 0, 0], [0, 0.02, 0], [0.02, 0.02, 0.0005]], "planar"),
        ([[0, 0, 0], [0.02, 0, 0], [0, 0.02, 0], [0, 0, 0.02]], "3d"),
    ],
)
def test_geometry_is_derived_from_the_rank_of_the_positions(mics: list[list[float]], geometry: str) -> None:
    assert derive_geometry(np.array(mics, dtype=np.float64)) == geometry
    assert array_from_dict({"name": "x", "mics": mics}, "<dict>").geometry == geometry


# ---------------------------------------------------------------------------------------------------
# Bad inputs: each rejected with the file, the key and the value in the message

GOOD: dict[str, Any] = {"name": "good", "mics": [[-0.03, 0.0, 0.0], [0.03, 0.0, 0.0], [0.0, 0.03, 0.0]]}
_DROP = object()


def _with(**changes: Any) -> dict[str, Any]:
    d = dict(GOOD)
    for key, value in changes.items():
        if value is _DROP:
            del d[key]
        else:
            d[key] = value
    return d


BAD_ARRAYS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown key", _with(mic=[[0, 0, 0]]), ["unknown key 'mic'", "did you mean 'mics'"]),
    ("typo sample rate", _with(samplerate=16000), ["'samplerate'", "'sample_rate'"]),
    ("missing name", _with(name=_DROP), ["missing required key 'name'"]),
    ("missing mics", _with(mics=_DROP), ["missing required key 'mics'"]),
    ("empty name", _with(name=""), ["'name'", "''"]),
    ("mics not a list", _with(mics="ring"), ["'mics'", "'ring'"]),
    ("mic of 2 numbers", _with(mics=[[0, 0, 0], [0.03, 0]]), ["'mics'[1]", "[0.03, 0]"]),
    ("mic with a string", _with(mics=[[0, 0, 0], [0.03, "0", 0]]), ["'mics'[1]", "'0'"]),
    ("mic with a bool", _with(mics=[[0, 0, 0], [0.03, True, 0]]), ["'mics'[1]", "True"]),
    ("one mic", _with(mics=[[0, 0, 0]]), ["'mics'", "1 mic", "at least 2"]),
    ("no mics", _with(mics=[]), ["'mics'", "0 mic"]),
    ("coincident mics", _with(mics=[[0, 0, 0], [0.03, 0, 0], [0.03, 0.0005, 0]]), ["mics[1]", "mics[2]"]),
    (
        "millimetres",
        _with(mics=[[-40.6, 0, 0], [40.6, 0, 0]]),
        ["'mics'", "81.2 m", "millimetres or centimetres"],
    ),
    ("map too short", _with(channel_map=[0, 1]), ["'channel_map'", "[0, 1]", "2 entries for 3 mics"]),
    ("map out of range", _with(channel_map=[0, 1, 3]), ["'channel_map'[2]", "3", "channels = 3"]),
    ("map negative", _with(channels=4, channel_map=[0, -1, 2]), ["'channel_map'[1]", "-1"]),
    ("map duplicate", _with(channels=4, channel_map=[0, 1, 1]), ["'channel_map'", "[0, 1, 1]", "[1]"]),
    ("map not ints", _with(channel_map=[0, 1, 2.0]), ["'channel_map'", "2.0"]),
    ("sample rate zero", _with(sample_rate=0), ["'sample_rate'", "got 0"]),
    ("sample rate negative", _with(sample_rate=-16000), ["'sample_rate'", "-16000"]),
    ("sample rate float", _with(sample_rate=16000.5), ["'sample_rate'", "16000.5"]),
    ("sample rate string", _with(sample_rate="16k"), ["'sample_rate'", "'16k'"]),
    ("sample rate bool", _with(sample_rate=True), ["'sample_rate'", "True"]),
    ("channels fewer than mics", _with(channels=2), ["'channels'", "2", "3 mics"]),
    ("channels zero", _with(channels=0), ["'channels'", "got 0"]),
    ("geometry unknown", _with(geometry="circle"), ["'geometry'", "'circle'"]),
    ("geometry wrong", _with(geometry="linear"), ["'geometry'", "'linear'", "'planar'"]),
    ("band reversed", _with(doa_band_hz=[6000, 300]), ["'doa_band_hz'", "[6000, 300]"]),
    ("band above nyquist", _with(doa_band_hz=[300, 9000]), ["'doa_band_hz'", "8000", "[300, 9000]"]),
    ("band one number", _with(doa_band_hz=[300]), ["'doa_band_hz'", "[300]"]),
    ("device match empty", _with(device_match=""), ["'device_match'", "''"]),
    ("description not text", _with(description=3), ["'description'", "3"]),
]


@pytest.mark.parametrize(("case", "content", "expected"), BAD_ARRAYS, ids=[c for c, _, _ in BAD_ARRAYS])
def test_bad_array_file_is_rejected(tmp_path: Path, case: str, content: dict[str, Any], expected: list[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ProfileError) as info:
        load_array(str(path))
    message = str(info.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, f"{case}: {fragment!r} not in {message!r}"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_coordinates_are_rejected(tmp_path: Path, literal: str) -> None:
    path = tmp_path / "nan.json"
    path.write_text(f'{{"name": "n", "mics": [[0, 0, 0], [0.03, {literal}, 0]]}}')
    with pytest.raises(ProfileError, match=r"'mics'\[1\] has y = (nan|inf|-inf)") as info:
        load_array(str(path))
    assert str(path) in str(info.value)


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": "b",\n  "mics": [[0, 0, 0], [0.03, 0, 0]],,\n}\n')
    with pytest.raises(ProfileError, match=r"invalid JSON at line 3, column \d+") as info:
        load_array(str(path))
    assert str(path) in str(info.value)


def test_duplicate_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text('{"name": "d", "mics": [[0, 0, 0], [0.03, 0, 0]], "mics": [[0, 0, 0], [0.05, 0, 0]]}')
    with pytest.raises(ProfileError, match="key 'mics' appears twice"):
        load_array(str(path))


def test_top_level_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[[0, 0, 0], [0.03, 0, 0]]")
    with pytest.raises(ProfileError, match="expected a JSON object") as info:
        load_array(str(path))
    assert str(path) in str(info.value)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ProfileError, match="not found") as info:
        load_array(str(path))
    assert str(path) in str(info.value)


def test_unknown_array_name_lists_the_known_ones() -> None:
    with pytest.raises(ProfileError) as info:
        load_array("respeaker-4mic")
    message = str(info.value)
    assert "'respeaker-4mic'" in message
    assert "did you mean 'respeaker-4mic-hat'" in message
    for name in REQUIRED_ARRAYS:
        assert name in message


def test_load_array_on_a_board_name_points_to_the_board_flag() -> None:
    with pytest.raises(ProfileError, match=r"'raspberry-pi-4' is a board.*'respeaker-4mic-hat'"):
        load_array("raspberry-pi-4")


def test_unknown_board_name_lists_the_known_ones() -> None:
    with pytest.raises(ProfileError) as info:
        load_board("raspberry-pi-3")
    for name in REQUIRED_BOARDS:
        assert name in str(info.value)
    with pytest.raises(ProfileError, match="'ps3-eye' is an array, not a board"):
        load_board("ps3-eye")


GOOD_BOARD: dict[str, Any] = {
    "name": "b",
    "description": "a board",
    "cpu": "4x Cortex-A53",
    "arch": "aarch64",
    "cores": 4,
    "memory_gb": 1,
    "accelerator": None,
    "dsp_backend": "numpy",
    "model_runtime": "litert",
    "default_array": "ps3-eye",
    "source": "a datasheet",
}

BAD_BOARDS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("unknown key", {**GOOD_BOARD, "core": 4}, ["unknown key 'core'", "did you mean 'cores'"]),
    ("missing key", {k: v for k, v in GOOD_BOARD.items() if k != "cpu"}, ["missing required key 'cpu'"]),
    ("cores zero", {**GOOD_BOARD, "cores": 0}, ["'cores'", "got 0"]),
    ("memory text", {**GOOD_BOARD, "memory_gb": "4GB"}, ["'memory_gb'", "'4GB'"]),
    ("arch", {**GOOD_BOARD, "arch": "arm64"}, ["'arch'", "'arm64'", "aarch64"]),
    ("backend", {**GOOD_BOARD, "dsp_backend": "cuda"}, ["'dsp_backend'", "'cuda'"]),
    ("runtime", {**GOOD_BOARD, "model_runtime": "tflite"}, ["'model_runtime'", "'tflite'"]),
    ("default array", {**GOOD_BOARD, "default_array": "uma8"}, ["'default_array'", "'uma8'", "minidsp-uma8"]),
]


@pytest.mark.parametrize(("case", "content", "expected"), BAD_BOARDS, ids=[c for c, _, _ in BAD_BOARDS])
def test_bad_board_file_is_rejected(tmp_path: Path, case: str, content: dict[str, Any], expected: list[str]) -> None:
    path = tmp_path / "board.json"
    path.write_text(json.dumps(content))
    assert board_from_dict(GOOD_BOARD, "<good>").default_array == "ps3-eye"
    with pytest.raises(ProfileError) as info:
        load_board(str(path))
    message = str(info.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, f"{case}: {fragment!r} not in {message!r}"


def test_bundled_file_name_must_match_its_name_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pair.json"
    path.write_text(json.dumps({**GOOD, "name": "other"}))
    monkeypatch.setattr(profiles, "_index", lambda: {"pair": ("array", path)})
    with pytest.raises(ProfileError, match=r"key 'name' is 'other'.*'pair'") as info:
        load_array("pair")
    assert str(path) in str(info.value)


def test_profile_error_is_a_tympan_error() -> None:
    assert issubclass(ProfileError, TympanError)


# ---------------------------------------------------------------------------------------------------
# resolve: --board takes a board or an array name, --array a name or a file


def test_resolve_board_gives_its_default_array() -> None:
    for board in REQUIRED_BOARDS:
        assert resolve(board, None).name == load_board(board).default_array


def test_resolve_board_flag_accepts_an_array_name() -> None:
    assert resolve("ps3-eye", None).name == "ps3-eye"


def test_resolve_array_flag_accepts_a_name_or_a_file(tmp_path: Path) -> None:
    assert resolve(None, "minidsp-uma8").name == "minidsp-uma8"
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(GOOD))
    array = resolve(None, str(path))
    assert array.name == "good" and array.path == str(path)


def test_resolve_rejects_both_or_neither_flag() -> None:
    with pytest.raises(ProfileError, match="not both"):
        resolve("raspberry-pi-4", "ps3-eye")
    with pytest.raises(ProfileError, match="--board NAME or --array FILE"):
        resolve(None, None)


def test_resolve_unknown_board_lists_boards_and_arrays() -> None:
    with pytest.raises(ProfileError) as info:
        resolve("raspberry-pi-9", None)
    message = str(info.value)
    assert "'raspberry-pi-9'" in message
    assert "known boards" in message and "known arrays" in message
    assert "raspberry-pi-4" in message and "ps3-eye" in message


# ---------------------------------------------------------------------------------------------------
# CLI: called through argparse, as the `tympan` dispatcher does


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tympan")
    add_boards(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.mark.parametrize("argv", [["boards", "list"], ["boards"]])
def test_cli_list(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(list_profiles()) >= 9
    listed = {line.split()[1]: line.split()[0] for line in lines}
    assert {name: "array" for name in REQUIRED_ARRAYS}.items() <= listed.items()
    assert {name: "board" for name in REQUIRED_BOARDS}.items() <= listed.items()


def test_cli_show_array(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["boards", "show", "respeaker-6mic-hat"]) == 0
    out = capsys.readouterr().out
    array = load_array("respeaker-6mic-hat")
    for fragment in (
        "respeaker-6mic-hat",
        "seeed-8mic-voicecard",
        "planar",
        "aperture",
        "92.6 mm",
        "min spacing",
        "46.3 mm",
        f"above {array.spatial_alias_hz:.0f} Hz",
        "ODAS",
        "[0, 1, 2, 3, 4, 5]",
    ):
        assert fragment in out
    table = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(table) == array.n_mics


def test_cli_show_board_shows_its_default_array(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["boards", "show", "jetson-orin-nano"]) == 0
    out = capsys.readouterr().out
    assert "(board)" in out and "onnxruntime" in out and "Cortex-A78AE" in out
    assert "minidsp-uma8  (array)" in out


def test_cli_show_json_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["boards", "show", "ps3-eye", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    again = array_from_dict(json.loads(out), "<stdout>")
    assert again.to_dict() == load_array("ps3-eye").to_dict()


def test_cli_show_board_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["boards", "show", "raspberry-pi-4", "--json"]) == 0
    board = board_from_dict(json.loads(capsys.readouterr().out), "<stdout>")
    assert board == load_board("raspberry-pi-4")


def test_cli_show_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(GOOD))
    assert _run(["boards", "show", str(path)]) == 0
    assert "good  (array)" in capsys.readouterr().out


def test_cli_show_unknown_raises_a_profile_error() -> None:
    with pytest.raises(ProfileError, match="unknown profile 'nope'"):
        _run(["boards", "show", "nope"])
