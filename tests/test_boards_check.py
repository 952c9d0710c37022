"""Calibration check: a recording at a known direction exposes swapped channels and geometry errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from boards.check import check_recordings
from boards.profiles import array_from_dict, list_profiles, load_array
from edge.errors import InputError
from edge.main import main
from tests.scenes import FS, noise_burst, plane_wave

ARRAYS = [name for kind, name, _ in list_profiles() if kind == "array"]
AZ = 37.0  # no two mics of a bundled array are at the same distance from this direction


def scene(mics: np.ndarray, az: float, el: float = 0.0, seed: int = 0) -> np.ndarray:
    sig = np.concatenate([np.zeros(800), noise_burst(FS // 2, seed), np.zeros(800)])
    x = plane_wave(sig, mics, az, el)
    return x + np.random.default_rng(seed + 1).normal(0, 1e-3, x.shape)


@pytest.mark.parametrize("name", ARRAYS)
def test_correct_profile_is_ok_and_every_swapped_pair_is_caught(name: str) -> None:
    array = load_array(name)
    x = scene(array.mics, AZ)
    ok = check_recordings([x], [(AZ, 0.0)], array)
    assert ok.verdict == "ok", ok.message
    for a, b in [(0, 1), (0, array.n_mics - 1), (1, 2)]:
        y = x.copy()
        y[[a, b]] = y[[b, a]]
        r = check_recordings([y], [(AZ, 0.0)], array)
        assert r.verdict == "swapped", f"{name} ({a}, {b}): {r.message}"
        assert sorted(r.hypotheses[0].params["channels"]) == [a, b]
        assert not r.ok


def test_swap_seen_in_a_reverberant_room() -> None:
    pra = pytest.importorskip("pyroomacoustics")
    array = load_array("respeaker-4mic-hat")
    room_dim = [5.0, 4.0, 2.7]
    e_abs, order = pra.inverse_sabine(0.25, room_dim)
    room = pra.ShoeBox(room_dim, fs=FS, materials=pra.Material(e_abs), max_order=min(order, 8))
    centre = np.array([2.4, 1.8, 1.0])
    src = centre + 1.2 * np.array([np.cos(np.radians(AZ)), np.sin(np.radians(AZ)), 0.0])
    room.add_source(src.tolist(), signal=noise_burst(FS // 2, 4))
    room.add_microphone_array(pra.MicrophoneArray(array.mics.T + centre[:, None], FS))
    room.simulate()
    x = room.mic_array.signals
    assert check_recordings([x], [(AZ, 0.0)], array).verdict == "ok"
    y = x[[0, 2, 1, 3]]
    r = check_recordings([y], [(AZ, 0.0)], array)
    assert r.verdict == "swapped" and sorted(r.hypotheses[0].params["channels"]) == [1, 2], r.message


def test_rotated_mirrored_and_scaled_geometry_are_named() -> None:
    array = load_array("respeaker-6mic-hat")
    # the board is mounted turned by +50 degrees: a source at AZ in the room is at AZ - 50 on the board
    r = check_recordings([scene(array.mics, AZ - 50.0)], [(AZ, 0.0)], array)
    assert r.verdict == "rotated" and r.hypotheses[0].params["rotation_deg"] == pytest.approx(50.0, abs=1.5)
    # the profile is the mirror image of the real array (y flipped)
    flipped = array.mics * np.array([1.0, -1.0, 1.0])
    r = check_recordings([scene(flipped, AZ), scene(flipped, AZ + 100.0, seed=3)], [(AZ, 0.0), (AZ + 100, 0.0)], array)
    assert r.verdict in ("mirrored", "permuted"), r.message  # a flipped ring is also a channel relabelling
    assert any(h.kind == "mirrored" for h in r.hypotheses)
    # the real radius is 25 % larger than the profile's
    r = check_recordings([scene(array.mics * 1.25, AZ)], [(AZ, 0.0)], array)
    assert r.verdict == "scaled" and r.hypotheses[0].params["scale"] == pytest.approx(1.25, abs=0.05)


def test_wrong_direction_is_a_mismatch_not_ok() -> None:
    array = load_array("matrix-voice")
    r = check_recordings([scene(array.mics, AZ, el=60.0)], [(AZ, 0.0)], array)
    assert not r.ok


def test_symmetric_blind_spot_is_named() -> None:
    array = load_array("respeaker-6mic-hat")
    az = float(np.degrees(np.arctan2(*(array.mics[0, :2] + array.mics[1, :2])[::-1])))  # between mics 0 and 1
    r = check_recordings([scene(array.mics, az)], [(az, 0.0)], array)
    assert r.ok and "0 and 1" in r.message


def test_rejects_bad_input() -> None:
    array = load_array("respeaker-4mic-hat")
    x = scene(array.mics, AZ)
    with pytest.raises(InputError, match="one --az per file"):
        check_recordings([x], [(AZ, 0.0), (10.0, 0.0)], array)
    with pytest.raises(InputError, match="channels"):
        check_recordings([x[:3]], [(AZ, 0.0)], array)
    with pytest.raises(InputError, match="silent"):
        check_recordings([np.zeros_like(x)], [(AZ, 0.0)], array)
    with pytest.raises(InputError, match="elevation"):
        check_recordings([x], [(AZ, 95.0)], array)


def test_cli_reports_a_swap_as_json_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    array = load_array("respeaker-4mic-hat")
    x = scene(array.mics, AZ)
    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    sf.write(good, (0.5 * x / np.abs(x).max()).T, FS)
    sf.write(bad, (0.5 * x[[1, 0, 2, 3]] / np.abs(x).max()).T, FS)
    assert main(["boards", "check", "--board", array.name, "--az", str(AZ), str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["boards", "check", "--board", array.name, "--az", str(AZ), "--json", str(bad)]) == 1
    row = json.loads(capsys.readouterr().out)
    assert row["verdict"] == "swapped" and sorted(row["consistent"][0]["channels"]) == [0, 1]
    assert main(["boards", "check", "--board", array.name, "--az", "10", "--az", "20", str(good)]) == 1
    assert "one --az per file" in capsys.readouterr().err


def test_custom_array_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tri = array_from_dict({"name": "tri", "mics": [[0.03, 0, 0], [-0.015, 0.026, 0], [-0.015, -0.026, 0]]}, "t")
    path = tmp_path / "tri.json"
    path.write_text(json.dumps({"name": "tri", "mics": tri.mics.tolist()}))
    x = scene(tri.mics, AZ)[[0, 2, 1]]
    wav = tmp_path / "tri.wav"
    sf.write(wav, (0.5 * x / np.abs(x).max()).T, FS)
    assert main(["boards", "check", "--array", str(path), "--az", str(AZ), str(wav)]) == 1
    assert "channels 1 and 2 are exchanged" in capsys.readouterr().out
